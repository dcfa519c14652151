//! Delivery: a scored batch into the sinks (verdict store, alert sinks, lake buffer),
//! with the guarantee the configuration asks for.
//!
//! Each sink named in [`Durability`] is retried while it is down ([`Outage`]): the batch
//! waits, so the bounded channel fills and the source pauses, and the wait is exported as
//! blocked time. The other sinks are written best-effort; their failures are logged and
//! counted. The dead-letter path waits out its outages with the same [`Outage`]. A
//! shutdown's abort ends every wait with [`DeliveryError::Aborted`]: the batch then stays
//! unacknowledged, so nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::scorer::Scored;
use crate::metric_names as names;
use crate::model::Verdict;
use crate::retry::{RetryPolicy, Retryable};
use crate::sinks::alerts::AlertSink;
use crate::sinks::lake::{LakeWriter, ScoredRecord};
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

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

    /// Whether `sink` must be durable.
    #[must_use]
    pub fn requires(self, sink: Sink) -> bool {
        match sink {
            Sink::Verdicts => self.verdicts,
            Sink::Alerts => self.alerts,
            Sink::Lake => self.lake,
        }
    }
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A shutdown's deadline passed (or a second signal came) while a durable sink was
    /// still unavailable.
    #[error("stopped while the {sink} sink was unavailable: {message}")]
    Aborted {
        /// The sink's label.
        sink: &'static str,
        /// Its last error.
        message: String,
    },
    /// A durable sink refused the batch for a reason retrying cannot fix.
    #[error("the {sink} sink failed: {message}")]
    Failed {
        /// The sink's label.
        sink: &'static str,
        /// The error.
        message: String,
    },
}

/// Backoff while a durable sink is down: the batch is retried until it is durable (or the
/// process is aborted), so the source pauses instead of losing or buffering. Only the
/// delays are used; attempts are unbounded.
pub const OUTAGE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
};

/// One sink's outage: waits between attempts, counted as retries and blocked time, until
/// an abort.
pub struct Outage {
    sink: &'static str,
    attempt: u32,
    rng: crate::rng::Rng,
}

impl Outage {
    /// An outage of the sink labelled `sink` (`verdicts`, `alerts`, `lake`, `dlq`).
    #[must_use]
    pub fn new(sink: &'static str) -> Self {
        Self {
            sink,
            attempt: 0,
            rng: crate::rng::Rng::new(u64::from(std::process::id())),
        }
    }

    /// Log `error`, then wait before the next attempt; fails once `abort` is cancelled.
    pub async fn wait(
        &mut self,
        abort: &CancellationToken,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), DeliveryError> {
        self.attempt = self.attempt.saturating_add(1);
        let sink = self.sink;
        metrics::counter!(names::SINK_RETRIES, "sink" => sink).increment(1);
        if sink == Sink::Verdicts.label() {
            metrics::counter!(names::VERDICT_RETRIES).increment(1);
        }
        tracing::warn!(sink, error = %error, attempt = self.attempt, "sink unavailable; pausing the source until it returns");
        let delay = OUTAGE_RETRY.delay(self.attempt, &mut self.rng);
        let started = Instant::now();
        let aborted = abort.is_cancelled()
            || tokio::select! {
                () = tokio::time::sleep(delay) => false,
                () = abort.cancelled() => true,
            };
        metrics::histogram!(names::BLOCKED_SECONDS, "stage" => sink)
            .record(started.elapsed().as_secs_f64());
        if aborted {
            return Err(DeliveryError::Aborted {
                sink,
                message: error.to_string(),
            });
        }
        Ok(())
    }
}

/// A best-effort sink failed: log and count; the batch goes on.
fn best_effort_failed(sink: Sink, error: &dyn std::fmt::Display) {
    metrics::counter!(names::SINK_ERRORS, "sink" => sink.label()).increment(1);
    tracing::error!(sink = sink.label(), error = %error, "write to a best-effort sink failed; not retried (add it to delivery.durable to retry)");
}

/// Record one stage's duration for one batch.
pub fn stage_time(stage: &'static str, started: Instant) {
    metrics::histogram!(names::STAGE_SECONDS, "stage" => stage)
        .record(started.elapsed().as_secs_f64());
}

/// The sinks of one detector, and the durability policy over them.
pub struct Delivery {
    /// The verdict store.
    pub verdicts: Arc<dyn VerdictStore>,
    /// Alert sinks besides the log.
    pub alerts: Vec<Arc<dyn AlertSink>>,
    /// The lake, if enabled.
    pub lake: Option<LakeWriter>,
    /// Which sinks are retried until durable.
    pub durable: Durability,
    /// Verdict expiry.
    pub ttl_seconds: Option<u64>,
    /// Ends every outage wait (the shutdown deadline).
    pub abort: CancellationToken,
}

impl Delivery {
    /// Sinks with the default durability, no alerts and no lake.
    #[must_use]
    pub fn new(verdicts: Arc<dyn VerdictStore>) -> Self {
        Self {
            verdicts,
            alerts: Vec::new(),
            lake: None,
            durable: Durability::default(),
            ttl_seconds: None,
            abort: CancellationToken::new(),
        }
    }

    /// Make a scored batch's verdicts and alerts durable (as the policy asks).
    pub async fn write(&mut self, scored: &Scored) -> Result<(), DeliveryError> {
        let started = Instant::now();
        let items: Vec<VerdictItem> = scored
            .verdicts
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), self.ttl_seconds))
            .collect();
        self.write_verdicts(&items).await?;
        stage_time("verdicts", started);

        let frauds: Vec<Verdict> = scored
            .verdicts
            .iter()
            .filter(|v| v.fraud)
            .cloned()
            .collect();
        for v in &frauds {
            tracing::warn!(tx_id = %v.tx_id, score = v.score, model_version = %v.model_version, "fraud alert");
        }
        if !frauds.is_empty() {
            let started = Instant::now();
            self.send_alerts(&frauds).await?;
            stage_time("alerts", started);
        }
        Ok(())
    }

    /// Buffer a delivered batch's rows for the lake, then flush it if a limit is reached.
    pub async fn buffer(&mut self, scored: Scored) -> Result<(), DeliveryError> {
        if let Some(lake) = self.lake.as_mut() {
            let now_ms = crate::clock::now_ms();
            for (r, v) in scored.rows.into_iter().zip(scored.verdicts) {
                lake.push(ScoredRecord {
                    score: v.score,
                    fraud: v.fraud,
                    model_version: v.model_version,
                    scored_at_ms: now_ms,
                    tx: r.tx,
                });
            }
        }
        self.maintain().await
    }

    /// Write verdicts. A durable store is retried with backoff for as long as it is down
    /// unless aborted; permanent failures are returned at once. A best-effort store gets
    /// the store's own retries, then the failure is logged and counted.
    async fn write_verdicts(&mut self, items: &[VerdictItem]) -> Result<(), DeliveryError> {
        let mut outage = Outage::new(Sink::Verdicts.label());
        loop {
            match self.verdicts.put_batch(items).await {
                Ok(()) => return Ok(()),
                Err(e) if !self.durable.requires(Sink::Verdicts) => {
                    best_effort_failed(Sink::Verdicts, &e);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => outage.wait(&self.abort, &e).await?,
                Err(e) => {
                    return Err(DeliveryError::Failed {
                        sink: Sink::Verdicts.label(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Deliver alerts to every alert sink, retried while down when alerts are durable.
    async fn send_alerts(&mut self, frauds: &[Verdict]) -> Result<(), DeliveryError> {
        for sink in &self.alerts {
            let mut outage = Outage::new(Sink::Alerts.label());
            loop {
                match sink.send(frauds).await {
                    Ok(()) => break,
                    Err(e) if !self.durable.requires(Sink::Alerts) => {
                        best_effort_failed(Sink::Alerts, &e);
                        break;
                    }
                    Err(e) => outage.wait(&self.abort, &e).await?,
                }
            }
        }
        Ok(())
    }

    /// Flush the lake when a limit (rows, bytes, age) is reached. A failed write keeps the
    /// rows buffered for the next attempt; only when the buffer is full (or the lake is
    /// durable) does the batch wait for the lake to come back, so memory stays bounded.
    /// Called between batches too, so that age-based flushes happen when traffic stops.
    pub async fn maintain(&mut self) -> Result<(), DeliveryError> {
        let Some(lake) = self.lake.as_mut().filter(|l| l.is_due()) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut outage = Outage::new(Sink::Lake.label());
        loop {
            match lake.flush().await {
                Ok(_) => break,
                Err(e) if self.durable.lake || lake.is_full() => {
                    outage.wait(&self.abort, &e).await?;
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

    /// Whether offsets must wait for the lake: it is durable and holds rows not yet in a
    /// file.
    #[must_use]
    pub fn waits_for_lake(&self) -> bool {
        self.durable.lake && self.lake.as_ref().is_some_and(|l| l.buffered() > 0)
    }

    /// Flush the lake (on shutdown), retrying while it is down until an abort.
    pub async fn finish(&mut self) -> Result<(), DeliveryError> {
        let Some(lake) = self.lake.as_mut() else {
            return Ok(());
        };
        let mut outage = Outage::new(Sink::Lake.label());
        while lake.buffered() > 0 {
            if let Err(e) = lake.flush().await {
                outage.wait(&self.abort, &e).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use arc_swap::ArcSwap;

    use super::*;
    use crate::model::Model;
    use crate::pipeline::{TrainOptions, train_model};
    use crate::sinks::verdicts::VerdictError;
    use crate::stream::scorer::Scorer;
    use crate::stream::source::Incoming;

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

    async fn scored(n: usize) -> Scored {
        let d = crate::test_support::dataset(n, 4);
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 3;
        let model: Model = train_model(&d, "t", &opts, &|| {}).unwrap().model;
        let rows = (0..n).map(|i| Incoming::now(d.row(i))).collect();
        let mut scorer = Scorer::new(Arc::new(ArcSwap::from_pointee(model)), 3);
        scorer.score(rows).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_pauses_then_every_verdict_is_written() {
        let store = Arc::new(Flaky {
            fail: 6,
            ..Flaky::default()
        });
        let mut d = Delivery::new(store.clone());
        d.write(&scored(200).await).await.unwrap();
        assert_eq!(store.calls.load(Ordering::SeqCst), 7);
        assert_eq!(store.written.lock().unwrap().len(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_during_an_outage_fails_the_batch_without_writing() {
        let store = Arc::new(Flaky {
            fail: u32::MAX,
            ..Flaky::default()
        });
        let mut d = Delivery::new(store.clone());
        let abort = d.abort.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            abort.cancel();
        });
        let e = d.write(&scored(50).await).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("stopped while the verdicts sink was unavailable"),
            "{e}"
        );
        assert!(store.written.lock().unwrap().is_empty());
        stopper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_best_effort_store_outage_does_not_block_the_batch() {
        let store = Arc::new(Flaky {
            fail: u32::MAX,
            ..Flaky::default()
        });
        let mut d = Delivery::new(store.clone());
        d.durable = Durability::of(&[Sink::Alerts]);
        d.write(&scored(20).await).await.unwrap();
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            1,
            "tried once, not retried"
        );
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
