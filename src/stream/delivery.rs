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

use super::dead_letter::{DeadLetter, DeadLetterSink, Reason, send_durably};
use super::scorer::Scored;
use crate::metric_names as names;
use crate::model::Verdict;
use crate::retry::{RetryPolicy, Retryable};
use crate::sinks::alerts::{AlertError, AlertSink};
use crate::sinks::lake::{LakeWriter, ScoredRecord, ShadowRecord};
use crate::sinks::verdicts::{Stamp, VerdictError, VerdictItem, VerdictStore};

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

/// Delivery guarantees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Sinks that must have a transaction before its offset is committed: any of
    /// `verdicts`, `alerts`, `lake`. Durable sinks are retried while down (the source
    /// pauses); the others are written best-effort and their failures counted.
    pub durable: Vec<Sink>,
    /// Batches queued between the source and the scorer (the bounded channel).
    pub in_flight_batches: usize,
    /// On SIGTERM or ctrl-c, how long to drain before giving up; what is not durable by
    /// then stays uncommitted (and is re-read on restart), and the exit status is 1.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long a rebalance waits for revoked partitions' batches to become durable.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            durable: vec![Sink::Verdicts, Sink::Alerts],
            in_flight_batches: 4,
            shutdown_deadline: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
        }
    }
}

impl crate::validate::Validate for DeliveryConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        crate::validate::in_range("in_flight_batches", self.in_flight_batches, 1..=1024)
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

/// Send `alerts` to a durable sink: waited out while it is unavailable; when it refuses a
/// batch for good, the batch is halved until the refused alerts are found, so one bad
/// alert does not hold back the others. The refused ones join `refused`.
async fn send_alerts_to(
    sink: &dyn AlertSink,
    alerts: &[Verdict],
    abort: &CancellationToken,
    refused: &mut Vec<(String, String)>,
) -> Result<(), DeliveryError> {
    let mut pending: Vec<&[Verdict]> = vec![alerts];
    while let Some(part) = pending.pop() {
        let mut outage = Outage::new(Sink::Alerts.label());
        loop {
            match sink.send(part).await {
                Ok(()) => break,
                Err(e @ AlertError::Unavailable { .. }) => outage.wait(abort, &e).await?,
                Err(e @ AlertError::Refused { .. }) => {
                    if let [one] = part {
                        refused.push((one.tx_id.clone(), e.to_string()));
                    } else {
                        let (a, b) = part.split_at(part.len() / 2);
                        pending.push(b);
                        pending.push(a);
                    }
                    break;
                }
            }
        }
    }
    Ok(())
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
    /// Where records a durable sink can never accept go (the source's dead-letter sink).
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// A lake outside the durable set, once [`Delivery::buffer`] has handed it to a task
    /// of its own (`None` before).
    pub lake_task: Option<LakeTask>,
}

/// Batches queued for a lake outside the durable set: a few, so that the queue absorbs
/// bursts while a file is written, and a lake that hangs (a frozen DataNode) costs only
/// this much memory.
const LAKE_QUEUE: usize = 16;

/// How long a batch waits for room in the queue of a lake that is working (writing a
/// file takes a moment; a fast source fills the queue meanwhile) before it is dropped.
/// A lake whose write has been running longer than this, or whose last write failed, is
/// stuck: batches are dropped at once instead of waiting.
const LAKE_PATIENCE: Duration = Duration::from_secs(2);

/// A lake outside the durable set, written by a task of its own, so that it never holds
/// up scoring or the durable sinks: when its queue is full (its store hangs) batches are
/// dropped, counted in `fraudstream_lake_dropped_rows_total`; when its own buffer is full
/// and a write fails, the buffer is dropped the same way. On shutdown it writes what it
/// holds, retrying until the abort.
pub struct LakeTask {
    tx: tokio::sync::mpsc::Sender<Vec<ScoredRecord>>,
    task: tokio::task::JoinHandle<()>,
    health: Arc<LakeHealth>,
    last_warned: Option<Instant>,
}

/// What the lake task tells the sender about its store.
#[derive(Default)]
struct LakeHealth {
    /// When the write in progress started (ms since `epoch`), or 0.
    writing_since_ms: std::sync::atomic::AtomicU64,
    /// Whether the last write failed.
    failing: std::sync::atomic::AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl LakeHealth {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    fn stuck(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.writing_since_ms.load(Relaxed);
        self.failing.load(Relaxed)
            || (since > 0 && self.now_ms().saturating_sub(since) > LAKE_PATIENCE.as_millis() as u64)
    }
}

impl LakeTask {
    fn start(lake: LakeWriter, abort: CancellationToken) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(LAKE_QUEUE);
        let health = Arc::new(LakeHealth::default());
        Self {
            tx,
            task: tokio::spawn(run_detached_lake(lake, rx, abort, health.clone())),
            health,
            last_warned: None,
        }
    }

    /// Queue records: when the queue is full, wait for room while the lake is working
    /// (up to [`LAKE_PATIENCE`]); drop them (counted) when it is stuck.
    async fn send(&mut self, records: Vec<ScoredRecord>) {
        let rows = records.len();
        let records = match self.tx.try_send(records) {
            Ok(()) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(r)) => r,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                lake_dropped(rows, "the lake task has ended");
                return;
            }
        };
        let sent = !self.health.stuck()
            && matches!(
                tokio::time::timeout(LAKE_PATIENCE, self.tx.send(records)).await,
                Ok(Ok(()))
            );
        if !sent {
            lake_dropped(rows, "its queue is full: the lake store is slow or down");
            // One line per ten seconds at most: an outage drops many batches.
            if self
                .last_warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.last_warned = Some(Instant::now());
                tracing::warn!(
                    rows,
                    "lake: batch dropped (the lake is not in delivery.durable; add it there to pause instead)"
                );
            }
        }
    }

    /// Close the queue and wait for the task to write what it holds.
    async fn finish(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "lake task failed");
        }
    }
}

fn lake_dropped(rows: usize, why: &str) {
    metrics::counter!(names::LAKE_DROPPED_ROWS).increment(rows as u64);
    tracing::debug!(rows, why, "lake rows dropped");
}

/// The task of a lake outside the durable set.
async fn run_detached_lake(
    mut lake: LakeWriter,
    mut rx: tokio::sync::mpsc::Receiver<Vec<ScoredRecord>>,
    abort: CancellationToken,
    health: Arc<LakeHealth>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(records) => lake.push_all(records),
                None => break,
            },
            _ = tick.tick() => {}
        }
        if !lake.is_due() {
            continue;
        }
        let started = Instant::now();
        health.writing_since_ms.store(health.now_ms(), Relaxed);
        let written = lake.flush().await;
        health.writing_since_ms.store(0, Relaxed);
        health.failing.store(written.is_err(), Relaxed);
        if let Err(e) = written {
            best_effort_failed(Sink::Lake, &e);
            if lake.is_full() {
                let rows = lake.discard();
                lake_dropped(rows, "its buffer is full and the store refuses writes");
                tracing::warn!(
                    rows,
                    "lake: buffer dropped after a failed write (the lake is not in delivery.durable)"
                );
            } else {
                lake.postpone();
            }
        }
        stage_time("lake", started);
    }
    let mut outage = Outage::new(Sink::Lake.label());
    while lake.buffered() > 0 {
        if let Err(e) = lake.flush().await
            && outage.wait(&abort, &e).await.is_err()
        {
            lake_dropped(lake.discard(), "stopped while the lake store was down");
            break;
        }
    }
}

impl Delivery {
    /// Sinks with the default durability, no alerts and no lake.
    #[must_use]
    pub fn new(verdicts: Arc<dyn VerdictStore>, dead_letters: Arc<dyn DeadLetterSink>) -> Self {
        Self {
            dead_letters,
            verdicts,
            alerts: Vec::new(),
            lake: None,
            durable: Durability::default(),
            ttl_seconds: None,
            abort: CancellationToken::new(),
            lake_task: None,
        }
    }

    /// Make a scored batch's verdicts and alerts durable (as the policy asks). The
    /// verdict store and the alert sinks are independent, so they are written
    /// concurrently. A record that a durable sink can never accept (the store refuses its
    /// verdict, an alert sink refuses its alert) goes to the dead-letter sink with the
    /// reason; one without a stored verdict also leaves the batch (no lake row), though
    /// its alert, sent at the same time, stands. The rest goes on. Returns how many
    /// records were dead-lettered.
    pub async fn write(&mut self, scored: &mut Scored) -> Result<u64, DeliveryError> {
        let refused = self.dead_letter_refused(scored).await?;
        let stamp = Stamp::now(self.ttl_seconds);
        let items: Vec<VerdictItem> = scored
            .verdicts
            .iter()
            .map(|v| stamp.item(v.clone()))
            .collect();
        let frauds: Vec<&Verdict> = scored.verdicts.iter().filter(|v| v.fraud).collect();
        for v in &frauds {
            tracing::warn!(tx_id = %v.tx_id, score = v.score, model_version = %v.model_version, "fraud alert");
        }
        let frauds: Vec<Verdict> = frauds.into_iter().cloned().collect();
        let this = &*self;
        let verdicts = async {
            let started = Instant::now();
            let refused = this.write_verdicts(&items).await;
            stage_time("verdicts", started);
            refused
        };
        let alerts = async {
            if frauds.is_empty() {
                return Ok(Vec::new());
            }
            let started = Instant::now();
            let refused = this.send_alerts(&frauds).await;
            stage_time("alerts", started);
            refused
        };
        let (verdicts_refused, alerts_refused) = tokio::try_join!(verdicts, alerts)?;
        let mut dead = self
            .dead_letter(scored, "verdict_refused", &verdicts_refused, true)
            .await?;
        // A row already dead-lettered for its verdict has left the batch and is not
        // matched again.
        dead += self
            .dead_letter(scored, "alert_refused", &alerts_refused, false)
            .await?;
        Ok(dead + refused)
    }

    /// Dead-letter the rows taken out before scoring, and the copies of scored rows the
    /// velocity stage set aside (with the transaction as payload).
    async fn dead_letter_refused(&mut self, scored: &mut Scored) -> Result<u64, DeliveryError> {
        if scored.refused.is_empty() && scored.notices.is_empty() {
            return Ok(0);
        }
        let letters: Vec<DeadLetter> = scored
            .refused
            .drain(..)
            .chain(scored.notices.drain(..))
            .map(|r| DeadLetter {
                key: Some(r.row.tx.id.clone().into_bytes()),
                payload: crate::schema::json::encode_transaction(&r.row.tx).into_bytes(),
                origin: r.row.origin,
                reason: Reason {
                    code: r.code,
                    message: r.reason,
                },
            })
            .collect();
        send_durably(self.dead_letters.as_ref(), &letters, &self.abort).await?;
        Ok(letters.len() as u64)
    }

    /// Dead-letter the rows whose transaction id is in `refused` (with its reason); with
    /// `remove`, take them out of the batch.
    async fn dead_letter(
        &mut self,
        scored: &mut Scored,
        code: &'static str,
        refused: &[(String, String)],
        remove: bool,
    ) -> Result<u64, DeliveryError> {
        if refused.is_empty() {
            return Ok(0);
        }
        let reasons: std::collections::HashMap<&str, &str> = refused
            .iter()
            .map(|(id, why)| (id.as_str(), why.as_str()))
            .collect();
        let mut letters = Vec::new();
        let mut keep = Vec::with_capacity(scored.rows.len());
        for (r, v) in scored.rows.iter().zip(&scored.verdicts) {
            match reasons.get(r.tx.id.as_str()) {
                Some(why) => {
                    tracing::error!(tx_id = %r.tx.id, reason = code, error = %why, "a sink refused this record for good; it goes to the dead-letter sink");
                    letters.push(DeadLetter {
                        origin: r.origin.clone(),
                        key: Some(r.tx.id.clone().into_bytes()),
                        payload: serde_json::to_vec(v).unwrap_or_default(),
                        reason: Reason {
                            code,
                            message: (*why).to_owned(),
                        },
                    });
                    keep.push(false);
                }
                None => keep.push(true),
            }
        }
        send_durably(self.dead_letters.as_ref(), &letters, &self.abort).await?;
        if !remove {
            return Ok(letters.len() as u64);
        }
        scored.retain(&keep);
        Ok(letters.len() as u64)
    }

    /// Buffer a delivered batch's rows for the lake, then flush it if a limit is reached.
    /// A lake outside the durable set gets them through its own task ([`LakeTask`]).
    pub async fn buffer(&mut self, scored: Scored) -> Result<(), DeliveryError> {
        if self.lake.is_none() && self.lake_task.is_none() {
            return Ok(());
        }
        let now_ms = crate::clock::now_ms();
        let shadow = scored.shadow;
        let records = scored
            .rows
            .into_iter()
            .zip(scored.verdicts)
            .enumerate()
            .map(|(i, (r, v))| ScoredRecord {
                score: v.score,
                fraud: v.fraud,
                model_version: v.model_version,
                scored_at_ms: now_ms,
                tx: r.tx,
                shadow: shadow.as_ref().map(|s| ShadowRecord {
                    score: s.scores[i],
                    fraud: s.fraud[i],
                    version: s.version.clone(),
                }),
            });
        if !self.durable.lake
            && let Some(lake) = self.lake.take()
        {
            self.lake_task = Some(LakeTask::start(lake, self.abort.clone()));
        }
        match (&mut self.lake_task, &mut self.lake) {
            (Some(task), _) => task.send(records.collect()).await,
            (None, Some(lake)) => lake.push_all(records),
            (None, None) => {}
        }
        self.maintain().await
    }

    /// Write verdicts. A durable store is retried with backoff for as long as it is down
    /// unless aborted; permanent failures are returned at once. A best-effort store gets
    /// the store's own retries, then the failure is logged and counted.
    async fn write_verdicts(
        &self,
        items: &[VerdictItem],
    ) -> Result<Vec<(String, String)>, DeliveryError> {
        let mut outage = Outage::new(Sink::Verdicts.label());
        loop {
            match self.verdicts.put_batch(items).await {
                Ok(()) => return Ok(Vec::new()),
                Err(e) if !self.durable.requires(Sink::Verdicts) => {
                    best_effort_failed(Sink::Verdicts, &e);
                    return Ok(Vec::new());
                }
                Err(VerdictError::Refused { refused, .. }) => return Ok(refused),
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

    /// Deliver alerts to every alert sink, concurrently, retried while down when alerts
    /// are durable.
    /// Returns the alerts a durable sink refused for good, with the reason.
    async fn send_alerts(
        &self,
        frauds: &[Verdict],
    ) -> Result<Vec<(String, String)>, DeliveryError> {
        let sends = self.alerts.iter().map(|sink| async move {
            let mut refused = Vec::new();
            if self.durable.requires(Sink::Alerts) {
                send_alerts_to(sink.as_ref(), frauds, &self.abort, &mut refused).await?;
            } else if let Err(e) = sink.send(frauds).await {
                best_effort_failed(Sink::Alerts, &e);
            }
            Ok::<_, DeliveryError>(refused)
        });
        let refused = futures_util::future::try_join_all(sends).await?;
        Ok(refused.into_iter().flatten().collect())
    }

    /// Flush a durable lake when a limit (rows, bytes, age) is reached, waiting out an
    /// outage (the batch waits, and so does the source). Called between batches too, so
    /// that age-based flushes happen when traffic stops. (A lake outside the durable set
    /// flushes in its own task.)
    pub async fn maintain(&mut self) -> Result<(), DeliveryError> {
        let Some(lake) = self.lake.as_mut().filter(|l| l.is_due()) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut outage = Outage::new(Sink::Lake.label());
        while let Err(e) = lake.flush().await {
            if !self.durable.lake {
                // Not yet handed to its task (no batch delivered): the next batch does.
                best_effort_failed(Sink::Lake, &e);
                lake.postpone();
                break;
            }
            outage.wait(&self.abort, &e).await?;
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
        if let Some(task) = self.lake_task.take() {
            task.finish().await;
        }
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
    use crate::sinks::alerts::AlertError;
    use crate::sinks::verdicts::VerdictError;
    use crate::stream::scorer::Scorer;
    use crate::stream::source::Incoming;

    /// A store that is "down" for its first `fail` calls, and refuses the id `refuse`
    /// for good (a unit-test fake; the real backends have their own suites against real
    /// servers).
    #[derive(Debug, Default)]
    struct Flaky {
        fail: u32,
        refuse: Option<String>,
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
            let mut refused = Vec::new();
            for i in items {
                if Some(&i.tx_id) == self.refuse.as_ref() {
                    refused.push((i.tx_id.clone(), "key too long".to_owned()));
                } else {
                    self.written.lock().unwrap().push(i.tx_id.clone());
                }
            }
            if refused.is_empty() {
                Ok(())
            } else {
                Err(VerdictError::Refused {
                    store: "flaky".into(),
                    refused,
                })
            }
        }
        async fn get(&self, _: &str) -> Result<Option<VerdictItem>, VerdictError> {
            Ok(None)
        }
        async fn put_new(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError> {
            self.put_batch(items)
                .await
                .map(|()| vec![true; items.len()])
        }
        async fn delete(&self, _: &str) -> Result<(), VerdictError> {
            Ok(())
        }
    }

    /// Dead letters kept in memory.
    #[derive(Default)]
    struct Letters(Mutex<Vec<DeadLetter>>);

    #[async_trait::async_trait]
    impl DeadLetterSink for Letters {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn send(
            &self,
            letters: &[DeadLetter],
        ) -> Result<(), crate::stream::dead_letter::DeadLetterError> {
            self.0.lock().unwrap().extend_from_slice(letters);
            Ok(())
        }
    }

    /// An alert sink that refuses any batch holding `refuse`, and sometimes is down.
    #[derive(Default)]
    struct Picky {
        refuse: String,
        down_first: AtomicU32,
        got: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl AlertSink for Picky {
        fn describe(&self) -> String {
            "picky".into()
        }
        async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
            if self
                .down_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(AlertError::Unavailable {
                    sink: "picky".into(),
                    message: "503".into(),
                });
            }
            if alerts.iter().any(|a| a.tx_id == self.refuse) {
                return Err(AlertError::Refused {
                    sink: "picky".into(),
                    message: "HTTP 400".into(),
                });
            }
            self.got
                .lock()
                .unwrap()
                .extend(alerts.iter().map(|a| a.tx_id.clone()));
            Ok(())
        }
    }

    async fn scored(n: usize) -> Scored {
        let d = crate::test_support::dataset(n, 4);
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 3;
        let model: Model = train_model(&d, "t", &opts, &|| {}).unwrap().model;
        let rows = (0..n)
            .map(|i| Incoming::now(d.row(i), i as u64 + 1))
            .collect();
        let mut scorer = Scorer::new(Arc::new(ArcSwap::from_pointee(model)), 3);
        scorer.score(rows).await.unwrap()
    }

    fn delivery(store: Arc<Flaky>) -> (Delivery, Arc<Letters>) {
        let letters = Arc::new(Letters::default());
        (Delivery::new(store, letters.clone()), letters)
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_pauses_then_every_verdict_is_written() {
        let store = Arc::new(Flaky {
            fail: 6,
            ..Flaky::default()
        });
        let (mut d, letters) = delivery(store.clone());
        assert_eq!(d.write(&mut scored(200).await).await.unwrap(), 0);
        assert_eq!(store.calls.load(Ordering::SeqCst), 7);
        assert_eq!(store.written.lock().unwrap().len(), 200);
        assert!(letters.0.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_during_an_outage_fails_the_batch_without_writing() {
        let store = Arc::new(Flaky {
            fail: u32::MAX,
            ..Flaky::default()
        });
        let (mut d, _) = delivery(store.clone());
        let abort = d.abort.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            abort.cancel();
        });
        let e = d.write(&mut scored(50).await).await.unwrap_err();
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
        let (mut d, _) = delivery(store.clone());
        d.durable = Durability::of(&[Sink::Alerts]);
        d.write(&mut scored(20).await).await.unwrap();
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            1,
            "tried once, not retried"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_verdict_is_dead_lettered_and_the_rest_written() {
        let store = Arc::new(Flaky {
            refuse: Some("t7".into()),
            ..Flaky::default()
        });
        let (mut d, letters) = delivery(store.clone());
        let mut batch = scored(30).await;
        assert_eq!(d.write(&mut batch).await.unwrap(), 1);
        assert_eq!(store.written.lock().unwrap().len(), 29);
        assert_eq!(store.calls.load(Ordering::SeqCst), 1, "not retried");
        let letters = letters.0.lock().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason.code, "verdict_refused");
        assert_eq!(letters[0].key.as_deref(), Some(&b"t7"[..]));
        assert_eq!(
            letters[0].origin,
            crate::stream::source::Origin::File {
                path: Arc::from("-"),
                line: 8
            }
        );
        assert_eq!(batch.rows.len(), 29, "the refused row leaves the batch");
        assert!(batch.rows.iter().all(|r| r.tx.id != "t7"));
        assert_eq!(batch.verdicts.len(), 29);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_alert_is_isolated_and_dead_lettered() {
        let store = Arc::new(Flaky::default());
        let (mut d, letters) = delivery(store.clone());
        let mut batch = scored(400).await;
        for v in &mut batch.verdicts {
            v.fraud = true; // every row alerts
        }
        let bad = batch.verdicts[123].tx_id.clone();
        let sink = Arc::new(Picky {
            refuse: bad.clone(),
            down_first: AtomicU32::new(2),
            ..Picky::default()
        });
        d.alerts = vec![sink.clone()];
        assert_eq!(d.write(&mut batch).await.unwrap(), 1);
        let mut got = sink.got.lock().unwrap().clone();
        got.sort();
        assert_eq!(got.len(), 399, "every other alert delivered, once");
        got.dedup();
        assert_eq!(got.len(), 399);
        assert!(!got.contains(&bad));
        let letters = letters.0.lock().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason.code, "alert_refused");
        assert!(letters[0].reason.message.contains("HTTP 400"));
        assert_eq!(
            store.written.lock().unwrap().len(),
            400,
            "its verdict is written"
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
