//! The detector over a file or stdin, with no services: the embedded mode.
//!
//! ```text
//! reader (blocking thread) ──bounded──► batcher ─► scorer (blocking pool, one model load
//!   CSV / JSON lines                    per batch) ─► verdict store ─► alerts ─► lake
//!   invalid rows ───────────────────────────────────► dead-letter file (reason, line)
//! ```
//! A batch's verdicts are durable in the verdict store before its alerts are raised and
//! before the next batch is read: the bounded channel then pauses the reader, so a slow
//! sink slows the source instead of filling memory.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::batcher::next_batch;
use crate::eval::{Metrics, evaluate};
use crate::model::{Model, Verdict};
use crate::retry::{RetryPolicy, retry};
use crate::schema::csv::CsvReader;
use crate::schema::json::JsonLinesReader;
use crate::schema::{Format, ReadError, RecordError, Transaction};
use crate::sinks::lake::{LakeWriter, ScoredRecord};
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

/// Items buffered between the reader and the scorer: a few batches' worth, so the reader
/// stays ahead of scoring without holding more than a few MB.
const SOURCE_CAPACITY: usize = 8192;

/// Where transactions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file: CSV, JSON lines (by extension).
    File(PathBuf),
    /// Standard input, in the given format.
    Stdin(Format),
}

/// How the embedded pipeline runs.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// The input.
    pub input: Input,
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub batch_timeout: Duration,
    /// Contributions kept per verdict.
    pub top_k: usize,
    /// Fraud alerts, one JSON object per line (also logged).
    pub alerts_file: Option<PathBuf>,
    /// Print each alert on stdout.
    pub alerts_stdout: bool,
    /// Dead letters: invalid rows with their reason.
    pub dlq_file: PathBuf,
    /// Verdict expiry for stores with TTL.
    pub ttl_seconds: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Rows read.
    pub transactions: u64,
    /// Rows scored.
    pub scored: u64,
    /// Invalid rows sent to the dead-letter file.
    pub invalid: u64,
    /// Verdicts flagged as fraud.
    pub flagged: u64,
    /// Metrics against labels, when every scored row had one.
    pub metrics: Option<Metrics>,
    /// Wall time.
    pub seconds: f64,
    /// Read-to-durable latency percentiles in milliseconds: p50, p99, p999.
    pub latency_ms: [f64; 3],
    /// Model versions that scored, in order of first use.
    pub model_versions: Vec<String>,
}

struct Row {
    line: u64,
    read_at: Instant,
    result: Result<Transaction, RecordError>,
}

/// Read rows on a blocking thread into `tx`, stopping early on shutdown.
fn spawn_reader(
    input: Input,
    tx: mpsc::Sender<Row>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), ReadError>> {
    tokio::task::spawn_blocking(move || {
        let (path, format, reader): (String, Format, Box<dyn Read + Send>) = match &input {
            Input::File(p) => {
                let path = p.display().to_string();
                let format = Format::from_path(&path)
                    .ok_or_else(|| ReadError::UnknownFormat { path: path.clone() })?;
                let f = File::open(p).map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                (path, format, Box::new(f))
            }
            Input::Stdin(format) => ("-".into(), *format, Box::new(std::io::stdin())),
        };
        let rows: Box<dyn Iterator<Item = Result<Transaction, ReadError>>> = match format {
            Format::Csv => Box::new(CsvReader::new(
                &path,
                BufReader::with_capacity(1 << 16, reader),
            )?),
            Format::JsonLines => Box::new(JsonLinesReader::new(
                &path,
                BufReader::with_capacity(1 << 16, reader),
            )),
            Format::Parquet => {
                return Err(ReadError::UnknownFormat { path });
            }
        };
        for (i, r) in rows.enumerate() {
            if *stop.borrow() {
                break;
            }
            let (line, result) = match r {
                Ok(tx) => (i as u64 + 1, Ok(tx)),
                Err(ReadError::Record(e)) => (e.line, Err(e)),
                Err(other) => return Err(other),
            };
            let row = Row {
                line,
                read_at: Instant::now(),
                result,
            };
            if tx.blocking_send(row).is_err() {
                break; // the pipeline stopped
            }
        }
        Ok(())
    })
}

/// Score one batch on the blocking pool with one model load.
async fn score(
    model: Arc<Model>,
    txs: Vec<Transaction>,
    top_k: usize,
) -> (Vec<Transaction>, Vec<Verdict>) {
    tokio::task::spawn_blocking(move || {
        let nf = model.forest().n_features();
        let mut x = Vec::with_capacity(txs.len() * nf);
        for t in &txs {
            model.features_into(t, &mut x);
        }
        let mut scores = vec![0f32; txs.len()];
        model.forest().predict_into(&x, &mut scores);
        let verdicts = txs
            .iter()
            .zip(scores)
            .enumerate()
            .map(|(i, (t, s))| model.verdict_for(&t.id, &x[i * nf..(i + 1) * nf], s, top_k))
            .collect();
        (txs, verdicts)
    })
    .await
    .expect("scoring task does not panic")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn open_append(path: &PathBuf) -> anyhow::Result<File> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

/// Run the embedded pipeline to the end of the input (or until `stop` turns true), then
/// flush the lake and return the summary.
pub async fn run(
    settings: EmbeddedSettings,
    model: Arc<ArcSwap<Model>>,
    verdicts: Arc<dyn VerdictStore>,
    mut lake: Option<LakeWriter>,
    stop: watch::Receiver<bool>,
    on_progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel(SOURCE_CAPACITY);
    let reader = spawn_reader(settings.input.clone(), tx, stop.clone());
    let mut dlq = open_append(&settings.dlq_file)?;
    let mut alerts = settings.alerts_file.as_ref().map(open_append).transpose()?;
    let mut s = Summary {
        transactions: 0,
        scored: 0,
        invalid: 0,
        flagged: 0,
        metrics: None,
        seconds: 0.0,
        latency_ms: [0.0; 3],
        model_versions: Vec::new(),
    };
    let mut latencies: Vec<f64> = Vec::new();
    let (mut all_scores, mut all_labels, mut unlabelled) = (Vec::new(), Vec::new(), false);
    while let Some(batch) = next_batch(&mut rx, settings.batch_size, settings.batch_timeout).await {
        s.transactions += batch.len() as u64;
        let mut txs = Vec::with_capacity(batch.len());
        let mut read_at = Vec::with_capacity(batch.len());
        for row in batch {
            match row.result {
                Ok(t) => {
                    txs.push(t);
                    read_at.push(row.read_at);
                }
                Err(e) => {
                    s.invalid += 1;
                    tracing::warn!(line = row.line, reason = %e.kind, "invalid row sent to the dead-letter file");
                    let dead = json!({"line": row.line, "source": e.path, "reason": e.kind.to_string(), "code": e.kind.code()});
                    writeln!(dlq, "{dead}")?;
                }
            }
        }
        if txs.is_empty() {
            continue;
        }
        let current = model.load_full();
        if s.model_versions.last().map(String::as_str) != Some(current.version()) {
            s.model_versions.push(current.version().to_owned());
        }
        let (txs, scored) = score(current, txs, settings.top_k).await;
        let items: Vec<VerdictItem> = scored
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), settings.ttl_seconds))
            .collect();
        retry(RetryPolicy::default(), "verdict write", || {
            verdicts.put_batch(&items)
        })
        .await?;
        let now = Instant::now();
        let scored_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for ((t, v), at) in txs.into_iter().zip(scored).zip(read_at) {
            latencies.push(now.duration_since(at).as_secs_f64() * 1e3);
            match t.label {
                Some(l) => {
                    all_scores.push(v.score);
                    all_labels.push(l);
                }
                None => unlabelled = true,
            }
            if v.fraud {
                s.flagged += 1;
                tracing::warn!(tx_id = %v.tx_id, score = v.score, model_version = %v.model_version, "fraud alert");
                let alert = serde_json::to_string(&v)?;
                if let Some(f) = alerts.as_mut() {
                    writeln!(f, "{alert}")?;
                }
                if settings.alerts_stdout {
                    println!("ALERT {alert}");
                }
            }
            if let Some(l) = lake.as_mut() {
                l.push(ScoredRecord {
                    score: v.score,
                    fraud: v.fraud,
                    model_version: v.model_version,
                    scored_at_ms,
                    tx: t,
                });
            }
            s.scored += 1;
        }
        if let Some(l) = lake.as_mut().filter(|l| l.is_due()) {
            l.flush().await?;
        }
        on_progress(s.transactions);
    }
    reader.await??;
    if let Some(l) = lake.as_mut() {
        l.flush().await?;
    }
    dlq.flush()?;
    s.seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    s.latency_ms = [
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
    ];
    if !unlabelled && !all_labels.is_empty() {
        let threshold = model.load().meta().threshold;
        s.metrics = Some(evaluate(&all_scores, &all_labels, threshold));
    }
    Ok(s)
}
