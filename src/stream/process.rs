//! One batch through the scorer and the sinks, shared by every source.
//!
//! Order per batch: score (one model load, on the blocking pool) → verdict store → alerts
//! → lake buffer. Each sink named in [`Durability`] is retried while it is down (the
//! source pauses meanwhile, and the wait is counted as blocked time); the others are
//! written best-effort, and their failures are logged and counted. The caller
//! acknowledges a batch's source offsets once `process` returns `Ok` and, when the lake
//! is durable, once [`Processor::lake_pending`] is false again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::eval::{Metrics, evaluate};
use crate::metric_names as names;
use crate::model::{Model, Verdict};
use crate::retry::RetryPolicy;
use crate::schema::Transaction;
use crate::sinks::lake::{LakeWriter, ScoredRecord};
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

/// A transaction read from a source.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The transaction.
    pub tx: Transaction,
    /// When the source read it.
    pub read_at: Instant,
    /// When its producer sent it (Unix ms), when the source knows: Kafka's message
    /// timestamp. Used for the produce-to-durable latency.
    pub produced_at_ms: Option<i64>,
}

impl Incoming {
    /// A transaction read now, with no producer time.
    #[must_use]
    pub fn now(tx: Transaction) -> Self {
        Self {
            tx,
            read_at: Instant::now(),
            produced_at_ms: None,
        }
    }
}

/// Where fraud alerts go besides the log.
#[async_trait::async_trait]
pub trait AlertSink: Send + Sync {
    /// A short name for logs.
    fn describe(&self) -> String;
    /// Deliver alerts; `Ok` means they are durable (or, for best-effort sinks, sent).
    async fn send(&self, alerts: &[Verdict]) -> anyhow::Result<()>;
}

/// Alerts as JSON lines in a file and/or on stdout.
pub struct LocalAlerts {
    /// The file, opened for appending.
    pub file: Option<Mutex<std::fs::File>>,
    /// Print `ALERT {json}` lines.
    pub stdout: bool,
}

#[async_trait::async_trait]
impl AlertSink for LocalAlerts {
    fn describe(&self) -> String {
        "local alerts".into()
    }

    async fn send(&self, alerts: &[Verdict]) -> anyhow::Result<()> {
        use std::io::Write;
        let mut text = String::new();
        for v in alerts {
            text.push_str(&serde_json::to_string(v)?);
            text.push('\n');
        }
        if let Some(f) = &self.file {
            let mut f = f
                .lock()
                .map_err(|_| anyhow::anyhow!("alerts file lock poisoned"))?;
            f.write_all(text.as_bytes())?;
            f.flush()?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                writeln!(out, "ALERT {line}")?;
            }
        }
        Ok(())
    }
}

/// A sink that can be required to be durable before offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// The verdict store.
    Verdicts,
    /// The alert sinks (Kafka topic, webhook, file).
    Alerts,
    /// The Parquet lake.
    Lake,
}

impl Sink {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Verdicts => "verdicts",
            Self::Alerts => "alerts",
            Self::Lake => "lake",
        }
    }
}

/// Which sinks must be durable before a source offset is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// The verdict store.
    pub verdicts: bool,
    /// The alert sinks.
    pub alerts: bool,
    /// The lake: offsets wait for the Parquet file holding their rows.
    pub lake: bool,
}

impl Default for Durability {
    /// The verdict store and the alerts.
    fn default() -> Self {
        Self::of(&[Sink::Verdicts, Sink::Alerts])
    }
}

impl Durability {
    /// The set naming `sinks`.
    #[must_use]
    pub fn of(sinks: &[Sink]) -> Self {
        Self {
            verdicts: sinks.contains(&Sink::Verdicts),
            alerts: sinks.contains(&Sink::Alerts),
            lake: sinks.contains(&Sink::Lake),
        }
    }

    fn requires(self, sink: Sink) -> bool {
        match sink {
            Sink::Verdicts => self.verdicts,
            Sink::Alerts => self.alerts,
            Sink::Lake => self.lake,
        }
    }
}

/// Latencies in logarithmic buckets (2% wide, 1 µs to ~3 hours): constant memory however
/// long the detector runs, percentiles within 2%.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
}

const HIST_MIN_MS: f64 = 1e-3;
const HIST_GROWTH: f64 = 1.02;
const HIST_BUCKETS: usize = 1200;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; HIST_BUCKETS],
            count: 0,
        }
    }
}

impl LatencyHistogram {
    /// Record one latency in milliseconds.
    pub fn record(&mut self, ms: f64) {
        let i = if ms <= HIST_MIN_MS {
            0
        } else {
            ((ms / HIST_MIN_MS).ln() / HIST_GROWTH.ln()).ceil() as usize
        };
        self.buckets[i.min(HIST_BUCKETS - 1)] += 1;
        self.count += 1;
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in milliseconds: the upper edge of its bucket; 0 when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64 + 1;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return HIST_MIN_MS * HIST_GROWTH.powi(i as i32);
            }
        }
        HIST_MIN_MS * HIST_GROWTH.powi(HIST_BUCKETS as i32 - 1)
    }
}

/// Labelled scores kept for the end-of-run quality summary; beyond this many the summary
/// covers the first ones only (about 10 MB).
pub const LABELLED_CAP: usize = 2_000_000;

/// Running totals, in bounded memory.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Rows scored.
    pub scored: u64,
    /// Verdicts flagged as fraud.
    pub flagged: u64,
    /// Read-to-durable latencies.
    pub latency: LatencyHistogram,
    /// Produce-to-durable latencies (sources that know the send time).
    pub produce_latency: LatencyHistogram,
    /// Scores of labelled rows (the first [`LABELLED_CAP`]).
    pub scores: Vec<f32>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Labelled rows beyond the cap, not in `scores`.
    pub labelled_dropped: u64,
    /// Whether some scored row had no label.
    pub unlabelled: bool,
    /// Model versions that scored, in order of first use.
    pub model_versions: Vec<String>,
}

impl Stats {
    /// Read-to-durable latency percentiles p50, p99, p999 in milliseconds.
    #[must_use]
    pub fn latency_percentiles(&self) -> [f64; 3] {
        percentiles(&self.latency)
    }

    /// Metrics against labels, when every scored row had one.
    #[must_use]
    pub fn metrics(&self, threshold: f64) -> Option<Metrics> {
        (!self.unlabelled && !self.labels.is_empty())
            .then(|| evaluate(&self.scores, &self.labels, threshold))
    }
}

/// p50, p99 and p999 of `h`.
#[must_use]
pub fn percentiles(h: &LatencyHistogram) -> [f64; 3] {
    [h.quantile(0.5), h.quantile(0.99), h.quantile(0.999)]
}

/// Backoff while a durable sink is down: the batch is retried until it is durable (or the
/// process is stopped), so the source pauses instead of losing or buffering. Only the
/// delays are used; attempts are unbounded.
pub(crate) const OUTAGE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
};

/// One sink's outage: waits between attempts, counted as blocked time, until a stop.
struct Outage {
    sink: Sink,
    attempt: u32,
    rng: crate::rng::Rng,
}

impl Outage {
    fn new(sink: Sink) -> Self {
        Self {
            sink,
            attempt: 0,
            rng: crate::rng::Rng::new(u64::from(std::process::id())),
        }
    }

    /// Log `error`, then wait before the next attempt; fails when a stop is requested.
    async fn wait(
        &mut self,
        stop: &mut Option<watch::Receiver<bool>>,
        error: &(dyn std::fmt::Display + Sync),
    ) -> anyhow::Result<()> {
        self.attempt = self.attempt.saturating_add(1);
        let sink = self.sink.label();
        metrics::counter!(names::SINK_RETRIES, "sink" => sink).increment(1);
        if self.sink == Sink::Verdicts {
            metrics::counter!(names::VERDICT_RETRIES).increment(1);
        }
        tracing::warn!(sink, error = %error, attempt = self.attempt, "sink unavailable; pausing the source until it returns");
        let delay = OUTAGE_RETRY.delay(self.attempt, &mut self.rng);
        let started = Instant::now();
        let stopped = match stop.as_mut() {
            Some(stop) if *stop.borrow() => true,
            Some(stop) => tokio::select! {
                () = tokio::time::sleep(delay) => false,
                _ = stop.changed() => true,
            },
            None => {
                tokio::time::sleep(delay).await;
                false
            }
        };
        metrics::histogram!(names::BLOCKED_SECONDS, "stage" => sink)
            .record(started.elapsed().as_secs_f64());
        if stopped {
            anyhow::bail!("stopped while the {sink} sink was unavailable: {error}");
        }
        Ok(())
    }
}

/// A best-effort sink failed: log and count; the batch goes on.
fn best_effort_failed(sink: Sink, error: &dyn std::fmt::Display) {
    metrics::counter!(names::SINK_ERRORS, "sink" => sink.label()).increment(1);
    tracing::error!(sink = sink.label(), error = %error, "write to a best-effort sink failed; not retried (add it to delivery.durable to retry)");
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
    /// Which sinks are retried until durable.
    pub durable: Durability,
    /// Contributions kept per verdict.
    pub top_k: usize,
    /// Verdict expiry.
    pub ttl_seconds: Option<u64>,
    /// Totals.
    pub stats: Stats,
    /// When this turns true, stop retrying an unavailable sink and fail the batch (its
    /// offsets are then never committed, so nothing is lost).
    pub stop: Option<watch::Receiver<bool>>,
}

impl Processor {
    /// A processor with the default durability, no alerts, no lake, top-3 contributions.
    #[must_use]
    pub fn new(model: Arc<ArcSwap<Model>>, verdicts: Arc<dyn VerdictStore>) -> Self {
        Self {
            model,
            verdicts,
            alerts: Vec::new(),
            lake: None,
            durable: Durability::default(),
            top_k: 3,
            ttl_seconds: None,
            stats: Stats::default(),
            stop: None,
        }
    }

    /// Score `rows` and make them durable in the sinks.
    pub async fn process(&mut self, rows: Vec<Incoming>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let model = self.model.load_full();
        self.note_model(&model);
        let top_k = self.top_k;
        let scoring_started = Instant::now();
        let (rows, verdicts) = tokio::task::spawn_blocking(move || {
            let nf = model.forest().n_features();
            let mut x = Vec::with_capacity(rows.len() * nf);
            for r in &rows {
                model.features_into(&r.tx, &mut x);
            }
            let mut scores = vec![0f32; rows.len()];
            model.forest().predict_into(&x, &mut scores);
            // Contributions cost about three scores per row: spread them over the cores.
            let verdicts: Vec<Verdict> = rows
                .par_iter()
                .zip(scores)
                .enumerate()
                .with_min_len(64)
                .map(|(i, (r, s))| model.verdict_for(&r.tx.id, &x[i * nf..(i + 1) * nf], s, top_k))
                .collect();
            (rows, verdicts)
        })
        .await?;
        stage_time("score", scoring_started);

        let started = Instant::now();
        let items: Vec<VerdictItem> = verdicts
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), self.ttl_seconds))
            .collect();
        self.write_verdicts(&items).await?;
        stage_time("verdicts", started);

        let frauds: Vec<Verdict> = verdicts.iter().filter(|v| v.fraud).cloned().collect();
        for v in &frauds {
            tracing::warn!(tx_id = %v.tx_id, score = v.score, model_version = %v.model_version, "fraud alert");
        }
        if !frauds.is_empty() {
            let started = Instant::now();
            self.send_alerts(&frauds).await?;
            stage_time("alerts", started);
        }

        self.record(rows, verdicts);
        self.maintain().await
    }

    /// Export the serving model's version and age; remember versions for the summary.
    fn note_model(&mut self, model: &Model) {
        if self.stats.model_versions.last().map(String::as_str) != Some(model.version()) {
            if let Some(old) = self.stats.model_versions.last() {
                metrics::gauge!(names::MODEL_INFO, "version" => old.clone()).set(0.0);
            }
            metrics::gauge!(names::MODEL_INFO, "version" => model.version().to_owned()).set(1.0);
            self.stats.model_versions.push(model.version().to_owned());
        }
        if let Ok(created) = humantime::parse_rfc3339(&model.meta().created_at)
            && let Ok(age) = std::time::SystemTime::now().duration_since(created)
        {
            metrics::gauge!(names::MODEL_AGE_SECONDS).set(age.as_secs_f64());
        }
    }

    /// Count, time and buffer the durable batch's rows.
    fn record(&mut self, rows: Vec<Incoming>, verdicts: Vec<Verdict>) {
        let now = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        metrics::counter!(names::SCORED).increment(rows.len() as u64);
        metrics::counter!(names::FRAUD)
            .increment(verdicts.iter().filter(|v| v.fraud).count() as u64);
        let latency = metrics::histogram!(names::END_TO_END_SECONDS);
        let produce_latency = metrics::histogram!(names::PRODUCE_TO_DURABLE_SECONDS);
        let scores = metrics::histogram!(names::SCORE);
        for (r, v) in rows.into_iter().zip(verdicts) {
            let secs = now.duration_since(r.read_at).as_secs_f64();
            latency.record(secs);
            self.stats.latency.record(secs * 1e3);
            if let Some(p) = r.produced_at_ms.filter(|&p| p > 0 && p <= now_ms) {
                produce_latency.record((now_ms - p) as f64 / 1e3);
                self.stats.produce_latency.record((now_ms - p) as f64);
            }
            scores.record(f64::from(v.score));
            match r.tx.label {
                Some(_) if self.stats.labels.len() >= LABELLED_CAP => {
                    self.stats.labelled_dropped += 1;
                }
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
                    scored_at_ms: now_ms,
                    tx: r.tx,
                });
            }
        }
    }

    /// Write verdicts. A durable store is retried with backoff for as long as it is down
    /// (the source pauses meanwhile) unless a stop is requested; permanent failures are
    /// returned at once. A best-effort store gets the store's own retries, then the
    /// failure is logged and counted.
    async fn write_verdicts(&mut self, items: &[VerdictItem]) -> anyhow::Result<()> {
        use crate::retry::Retryable;
        let mut outage = Outage::new(Sink::Verdicts);
        loop {
            match self.verdicts.put_batch(items).await {
                Ok(()) => return Ok(()),
                Err(e) if !self.durable.requires(Sink::Verdicts) => {
                    best_effort_failed(Sink::Verdicts, &e);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => outage.wait(&mut self.stop, &e).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deliver alerts to every alert sink, retried while down when alerts are durable.
    async fn send_alerts(&mut self, frauds: &[Verdict]) -> anyhow::Result<()> {
        for sink in &self.alerts {
            let mut outage = Outage::new(Sink::Alerts);
            loop {
                match sink.send(frauds).await {
                    Ok(()) => break,
                    Err(e) if !self.durable.requires(Sink::Alerts) => {
                        best_effort_failed(Sink::Alerts, &format!("{}: {e:#}", sink.describe()));
                        break;
                    }
                    Err(e) => {
                        outage
                            .wait(&mut self.stop, &format!("{}: {e:#}", sink.describe()))
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Flush the lake when a limit (rows, bytes, age) is reached. A failed write keeps the
    /// rows buffered for the next attempt; only when the buffer is full (or the lake is
    /// durable) does the batch wait for the lake to come back, so memory stays bounded.
    /// Call it between batches too, so that age-based flushes happen when traffic stops.
    pub async fn maintain(&mut self) -> anyhow::Result<()> {
        let Some(lake) = self.lake.as_mut().filter(|l| l.is_due()) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut outage = Outage::new(Sink::Lake);
        loop {
            match lake.flush().await {
                Ok(_) => break,
                Err(e) if self.durable.lake || lake.is_full() => {
                    outage.wait(&mut self.stop, &e).await?;
                }
                Err(e) => {
                    best_effort_failed(Sink::Lake, &e);
                    lake.postpone();
                    break;
                }
            }
        }
        stage_time("lake", started);
        Ok(())
    }

    /// Whether scored rows are waiting in the lake buffer (offsets of batches that fed it
    /// must wait when the lake is durable).
    #[must_use]
    pub fn lake_pending(&self) -> bool {
        self.lake.as_ref().is_some_and(|l| l.buffered() > 0)
    }

    /// Flush the lake (on shutdown), retrying while it is down until a stop.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        let Some(lake) = self.lake.as_mut() else {
            return Ok(());
        };
        let mut outage = Outage::new(Sink::Lake);
        while lake.buffered() > 0 {
            if let Err(e) = lake.flush().await {
                outage.wait(&mut self.stop, &e).await?;
            }
        }
        Ok(())
    }
}

/// Record one stage's duration for one batch.
fn stage_time(stage: &'static str, started: Instant) {
    metrics::histogram!(names::STAGE_SECONDS, "stage" => stage)
        .record(started.elapsed().as_secs_f64());
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

    fn rows(n: usize) -> (Model, Vec<Incoming>) {
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
        let rows = (0..n).map(|i| Incoming::now(d.row(i))).collect();
        (model, rows)
    }

    fn processor(store: Arc<Flaky>, model: Model) -> Processor {
        Processor::new(Arc::new(ArcSwap::from_pointee(model)), store)
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut p = processor(store.clone(), model);
        p.stop = Some(stop_rx);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop_tx.send(true).unwrap();
        });
        let e = p.process(rows).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("stopped while the verdicts sink was unavailable")
        );
        assert!(store.written.lock().unwrap().is_empty());
        assert_eq!(p.stats.scored, 0, "nothing counted as done");
        stopper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_best_effort_store_outage_does_not_block_the_batch() {
        let (model, rows) = rows(20);
        let store = Arc::new(Flaky {
            fail: u32::MAX,
            ..Flaky::default()
        });
        let mut p = processor(store.clone(), model);
        p.durable = Durability::of(&[Sink::Alerts]);
        p.process(rows).await.unwrap();
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            1,
            "tried once, not retried"
        );
        assert_eq!(p.stats.scored, 20);
    }

    #[test]
    fn latency_histogram_percentiles_are_within_two_percent() {
        let mut h = LatencyHistogram::default();
        for i in 1..=10_000 {
            h.record(f64::from(i) / 100.0); // 0.01 .. 100 ms
        }
        assert_eq!(h.count(), 10_000);
        for (q, exact) in [(0.5, 50.0), (0.99, 99.0), (0.999, 99.9)] {
            let got = h.quantile(q);
            assert!(
                (got - exact).abs() / exact <= 0.021,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0.0);
        h.record(1e12);
        assert!(h.quantile(1.0).is_finite());
    }

    #[test]
    fn durability_names_its_sinks() {
        let d = Durability::default();
        assert!(d.verdicts && d.alerts && !d.lake);
        let parsed: Vec<Sink> = serde_json::from_str(r#"["lake","verdicts"]"#).unwrap();
        let d = Durability::of(&parsed);
        assert!(d.verdicts && !d.alerts && d.lake);
        assert!(serde_json::from_str::<Vec<Sink>>(r#"["dynamo"]"#).is_err());
    }
}
