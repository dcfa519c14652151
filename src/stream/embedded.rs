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

use super::batcher::fill_batch;
use super::process::{AlertSink, Durability, Incoming, LocalAlerts, Processor, Stats};
use crate::eval::Metrics;
use crate::model::Model;
use crate::schema::csv::CsvReader;
use crate::schema::json::JsonLinesReader;
use crate::schema::{Format, ReadError, RecordError, Transaction};
use crate::sinks::lake::LakeWriter;
use crate::sinks::verdicts::VerdictStore;

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
    /// Keep reading a file past its end, as it grows (`tail -f`), until stopped.
    pub follow: bool,
    /// Sinks retried until durable.
    pub durable: Durability,
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

/// A file read past its end: at end of file, wait for more bytes instead of returning 0,
/// until `stop` turns true.
struct Follow<R> {
    inner: R,
    stop: watch::Receiver<bool>,
}

impl<R: Read> Read for Follow<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() || *self.stop.borrow() {
                return Ok(n);
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// How often an idle pipeline checks whether the lake is due for a flush by age.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// How often a followed file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Read rows on a blocking thread into `tx`, stopping early on shutdown.
fn spawn_reader(
    input: Input,
    follow: bool,
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
                let reader: Box<dyn Read + Send> = if follow {
                    Box::new(Follow {
                        inner: f,
                        stop: stop.clone(),
                    })
                } else {
                    Box::new(f)
                };
                (path, format, reader)
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
/// flush the lake and return the summary. `abort` gives up on a sink that is still down.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: EmbeddedSettings,
    model: Arc<ArcSwap<Model>>,
    verdicts: Arc<dyn VerdictStore>,
    extra_alerts: Vec<Box<dyn AlertSink>>,
    lake: Option<LakeWriter>,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    on_progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel(SOURCE_CAPACITY);
    let reader = spawn_reader(settings.input.clone(), settings.follow, tx, stop.clone());
    let mut dlq = open_append(&settings.dlq_file)?;
    let alerts = LocalAlerts {
        file: settings
            .alerts_file
            .as_ref()
            .map(open_append)
            .transpose()?
            .map(std::sync::Mutex::new),
        stdout: settings.alerts_stdout,
    };
    let mut all_alerts: Vec<Box<dyn AlertSink>> = vec![Box::new(alerts)];
    all_alerts.extend(extra_alerts);
    let mut processor = Processor {
        model: model.clone(),
        verdicts,
        alerts: all_alerts,
        lake,
        durable: settings.durable,
        top_k: settings.top_k,
        ttl_seconds: settings.ttl_seconds,
        stats: Stats::default(),
        stop: Some(abort),
    };
    let (mut transactions, mut invalid) = (0u64, 0u64);
    loop {
        // Wait for a first row (cancel-safe), flushing the lake by age while idle.
        let first = match tokio::time::timeout(IDLE_TICK, rx.recv()).await {
            Err(_) => {
                processor.maintain().await?;
                continue;
            }
            Ok(None) => break,
            Ok(Some(r)) => r,
        };
        let batch = fill_batch(first, &mut rx, settings.batch_size, settings.batch_timeout).await;
        transactions += batch.len() as u64;
        metrics::counter!(crate::metric_names::CONSUMED).increment(batch.len() as u64);
        let mut rows = Vec::with_capacity(batch.len());
        for row in batch {
            match row.result {
                Ok(tx) => rows.push(Incoming {
                    tx,
                    read_at: row.read_at,
                    produced_at_ms: None,
                }),
                Err(e) => {
                    invalid += 1;
                    metrics::counter!(crate::metric_names::DEAD_LETTERS, "reason" => e.kind.code())
                        .increment(1);
                    tracing::debug!(line = row.line, reason = %e.kind, "invalid row sent to the dead-letter file");
                    let dead = json!({"line": row.line, "source": e.path, "reason": e.kind.to_string(), "code": e.kind.code()});
                    writeln!(dlq, "{dead}")?;
                }
            }
        }
        processor.process(rows).await?;
        on_progress(transactions);
    }
    reader.await??;
    processor.finish().await?;
    dlq.flush()?;
    let st = &processor.stats;
    Ok(Summary {
        transactions,
        scored: st.scored,
        invalid,
        flagged: st.flagged,
        metrics: st.metrics(model.load().meta().threshold),
        seconds: started.elapsed().as_secs_f64(),
        latency_ms: st.latency_percentiles(),
        model_versions: st.model_versions.clone(),
    })
}
