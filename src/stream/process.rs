//! One batch through the scorer and the sinks, shared by every source.
//!
//! Order per batch: score (one model load, on the blocking pool) → verdict store (durable,
//! retried while the store is down) → alerts (durable where the sink is) → lake buffer.
//! The caller acknowledges the batch's source offsets only after `process` returns `Ok`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::eval::{Metrics, evaluate};
use crate::metric_names as names;
use crate::model::{Model, Verdict};
use crate::retry::{RetryPolicy, Retryable};
use crate::schema::Transaction;
use crate::sinks::lake::{LakeWriter, ScoredRecord};
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

/// Where fraud alerts go besides the log.
#[async_trait::async_trait]
pub trait AlertSink: Send + Sync {
    /// Deliver alerts; `Ok` means they are durable (or, for best-effort sinks, sent).
    async fn send(&mut self, alerts: &[Verdict]) -> anyhow::Result<()>;
}

/// Alerts as JSON lines in a file and/or on stdout.
pub struct LocalAlerts {
    /// The file, opened for appending.
    pub file: Option<std::fs::File>,
    /// Print `ALERT {json}` lines.
    pub stdout: bool,
}

#[async_trait::async_trait]
impl AlertSink for LocalAlerts {
    async fn send(&mut self, alerts: &[Verdict]) -> anyhow::Result<()> {
        use std::io::Write;
        for v in alerts {
            let line = serde_json::to_string(v)?;
            if let Some(f) = self.file.as_mut() {
                writeln!(f, "{line}")?;
            }
            if self.stdout {
                println!("ALERT {line}");
            }
        }
        if let Some(f) = self.file.as_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

/// Running totals.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Rows scored.
    pub scored: u64,
    /// Verdicts flagged as fraud.
    pub flagged: u64,
    /// Read-to-durable latencies, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Scores of labelled rows.
    pub scores: Vec<f32>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Whether some scored row had no label.
    pub unlabelled: bool,
    /// Model versions that scored, in order of first use.
    pub model_versions: Vec<String>,
}

impl Stats {
    /// Latency percentiles p50, p99, p999 in milliseconds.
    #[must_use]
    pub fn latency_percentiles(&self) -> [f64; 3] {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let p = |q: f64| {
            if l.is_empty() {
                0.0
            } else {
                l[((l.len() - 1) as f64 * q).round() as usize]
            }
        };
        [p(0.5), p(0.99), p(0.999)]
    }

    /// Metrics against labels, when every scored row had one.
    #[must_use]
    pub fn metrics(&self, threshold: f64) -> Option<Metrics> {
        (!self.unlabelled && !self.labels.is_empty())
            .then(|| evaluate(&self.scores, &self.labels, threshold))
    }
}

/// Scores batches and writes them to the sinks.
pub struct Processor {
    /// The serving model (swapped by the watcher; loaded once per batch).
    pub model: Arc<ArcSwap<Model>>,
    /// The verdict store.
    pub verdicts: Arc<dyn VerdictStore>,
    /// Alert sinks besides the log.
    pub alerts: Vec<Box<dyn AlertSink>>,
    /// The lake, if enabled.
    pub lake: Option<LakeWriter>,
    /// Contributions kept per verdict.
    pub top_k: usize,
    /// Verdict expiry.
    pub ttl_seconds: Option<u64>,
    /// Totals.
    pub stats: Stats,
    /// When this turns true, stop retrying an unavailable verdict store and fail the
    /// batch (its offsets are then never committed, so nothing is lost).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Backoff while the verdict store is down: the batch is retried until it is durable
/// (or the process is stopped), so the source pauses instead of losing or buffering.
/// Only the delays are used; attempts are unbounded.
const OUTAGE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
};

impl Processor {
    /// Score `rows` (transaction and read time) and make them durable in the sinks.
    pub async fn process(&mut self, rows: Vec<(Transaction, Instant)>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let model = self.model.load_full();
        if self.stats.model_versions.last().map(String::as_str) != Some(model.version()) {
            if let Some(old) = self.stats.model_versions.last() {
                metrics::gauge!(names::MODEL_INFO, "version" => old.clone()).set(0.0);
            }
            metrics::gauge!(names::MODEL_INFO, "version" => model.version().to_owned()).set(1.0);
            self.stats.model_versions.push(model.version().to_owned());
        }
        let top_k = self.top_k;
        let scoring_started = Instant::now();
        let (rows, verdicts) = tokio::task::spawn_blocking(move || {
            let nf = model.forest().n_features();
            let mut x = Vec::with_capacity(rows.len() * nf);
            for (t, _) in &rows {
                model.features_into(t, &mut x);
            }
            let mut scores = vec![0f32; rows.len()];
            model.forest().predict_into(&x, &mut scores);
            let verdicts: Vec<Verdict> = rows
                .iter()
                .zip(scores)
                .enumerate()
                .map(|(i, ((t, _), s))| {
                    model.verdict_for(&t.id, &x[i * nf..(i + 1) * nf], s, top_k)
                })
                .collect();
            (rows, verdicts)
        })
        .await?;
        metrics::histogram!(names::SCORE_BATCH_SECONDS)
            .record(scoring_started.elapsed().as_secs_f64());

        let items: Vec<VerdictItem> = verdicts
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), self.ttl_seconds))
            .collect();
        self.write_verdicts(&items).await?;

        let frauds: Vec<Verdict> = verdicts.iter().filter(|v| v.fraud).cloned().collect();
        for v in &frauds {
            tracing::warn!(tx_id = %v.tx_id, score = v.score, model_version = %v.model_version, "fraud alert");
        }
        if !frauds.is_empty() {
            for sink in &mut self.alerts {
                sink.send(&frauds).await?;
            }
        }

        let now = Instant::now();
        let scored_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        metrics::counter!(names::SCORED).increment(rows.len() as u64);
        metrics::counter!(names::FRAUD).increment(frauds.len() as u64);
        let latency = metrics::histogram!(names::END_TO_END_SECONDS);
        let scores = metrics::histogram!(names::SCORE);
        for ((t, read_at), v) in rows.into_iter().zip(verdicts) {
            let secs = now.duration_since(read_at).as_secs_f64();
            latency.record(secs);
            scores.record(f64::from(v.score));
            self.stats.latencies_ms.push(secs * 1e3);
            match t.label {
                Some(l) => {
                    self.stats.scores.push(v.score);
                    self.stats.labels.push(l);
                }
                None => self.stats.unlabelled = true,
            }
            self.stats.scored += 1;
            self.stats.flagged += u64::from(v.fraud);
            if let Some(l) = self.lake.as_mut() {
                l.push(ScoredRecord {
                    score: v.score,
                    fraud: v.fraud,
                    model_version: v.model_version,
                    scored_at_ms,
                    tx: t,
                });
            }
        }
        if let Some(l) = self.lake.as_mut().filter(|l| l.is_due()) {
            l.flush().await?;
        }
        Ok(())
    }

    /// Write verdicts until they are durable: transient failures are retried with backoff
    /// for as long as the store is down (the source pauses meanwhile), unless a stop is
    /// requested; permanent failures are returned at once.
    async fn write_verdicts(&mut self, items: &[VerdictItem]) -> anyhow::Result<()> {
        let mut rng = crate::rng::Rng::new(items.len() as u64);
        let mut attempt = 0u32;
        loop {
            let e = match self.verdicts.put_batch(items).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e.into()),
            };
            attempt = attempt.saturating_add(1);
            metrics::counter!(names::VERDICT_RETRIES).increment(1);
            tracing::warn!(error = %e, attempt, "verdict store unavailable; pausing the source until it returns");
            let delay = OUTAGE_RETRY.delay(attempt, &mut rng);
            match self.stop.as_mut() {
                Some(stop) if *stop.borrow() => {
                    anyhow::bail!("stopped while the verdict store was unavailable: {e}")
                }
                Some(stop) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {
                            anyhow::bail!("stopped while the verdict store was unavailable: {e}")
                        }
                    }
                }
                None => tokio::time::sleep(delay).await,
            }
        }
    }

    /// Flush the lake (on shutdown).
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(l) = self.lake.as_mut() {
            l.flush().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::pipeline::{TrainOptions, train_model};
    use crate::schema::{Dataset, NUM_FIELDS};
    use crate::sinks::verdicts::VerdictError;

    /// A store that is "down" for its first `fail` calls (a unit-test fake; the real
    /// backends have their own suites against real servers).
    #[derive(Debug, Default)]
    struct Flaky {
        fail: u32,
        calls: AtomicU32,
        written: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl VerdictStore for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn put_batch(&self, items: &[VerdictItem]) -> Result<(), VerdictError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(VerdictError::Unreachable {
                    endpoint: "flaky".into(),
                    message: "down".into(),
                });
            }
            self.written
                .lock()
                .unwrap()
                .extend(items.iter().map(|i| i.tx_id.clone()));
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Option<VerdictItem>, VerdictError> {
            Ok(None)
        }
    }

    fn rows(n: usize) -> (Model, Vec<(Transaction, Instant)>) {
        let mut rng = crate::rng::Rng::new(4);
        let mut d = Dataset::with_capacity(n);
        for i in 0..n {
            let mut values = [0.0; NUM_FIELDS];
            for v in &mut values {
                *v = rng.unit();
            }
            d.push(Transaction {
                id: format!("t{i}"),
                values,
                label: Some(u8::from(values[3] > 0.8)),
                card_id: None,
                event_time: None,
            });
        }
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 3;
        let model = train_model(&d, "t", &opts, &|| {}).unwrap().model;
        let rows = (0..n).map(|i| (d.row(i), Instant::now())).collect();
        (model, rows)
    }

    fn processor(store: Arc<Flaky>, model: Model) -> Processor {
        Processor {
            model: Arc::new(ArcSwap::from_pointee(model)),
            verdicts: store,
            alerts: Vec::new(),
            lake: None,
            top_k: 1,
            ttl_seconds: None,
            stats: Stats::default(),
            stop: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_pauses_then_every_verdict_is_written() {
        let (model, rows) = rows(200);
        let store = Arc::new(Flaky {
            fail: 6,
            ..Flaky::default()
        });
        let mut p = processor(store.clone(), model);
        p.process(rows).await.unwrap();
        assert_eq!(store.calls.load(Ordering::SeqCst), 7);
        assert_eq!(store.written.lock().unwrap().len(), 200);
        assert_eq!(p.stats.scored, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_an_outage_fails_the_batch_without_writing() {
        let (model, rows) = rows(50);
        let store = Arc::new(Flaky {
            fail: u32::MAX,
            ..Flaky::default()
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut p = processor(store.clone(), model);
        p.stop = Some(stop_rx);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop_tx.send(true).unwrap();
        });
        let e = p.process(rows).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("stopped while the verdict store was unavailable")
        );
        assert!(store.written.lock().unwrap().is_empty());
        assert_eq!(p.stats.scored, 0, "nothing counted as done");
        stopper.await.unwrap();
    }
}
