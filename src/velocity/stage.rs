//! The detector's velocity stage. Before a batch is scored, [`Velocity::compute`] gives
//! every transaction its entity features (point in time, recorded once per id) and
//! takes out the ones refused for a missing entity id. Labels, from a file or a topic,
//! go to [`Velocity::apply_labels`]: they feed the fraud counters and are joined with
//! the verdicts served to export online precision and recall.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::config::VelocityConfig;
use super::{BatchReport, Engine, Entity, IdRing, LabelEvent, MemoryStore, StateStore, StoreError};
use crate::metric_names as names;
use crate::model::Verdict;
use crate::monitoring::Monitor;
use crate::validate::Invalid;

/// Confusion counts of the served verdicts against the labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Fraud verdicts on frauds.
    pub tp: u64,
    /// Fraud verdicts on legitimate transactions.
    pub fp: u64,
    /// Legitimate verdicts on frauds.
    pub fn_: u64,
    /// Legitimate verdicts on legitimate transactions.
    pub tn: u64,
    /// Labels of transactions with no remembered verdict (yet: a label that comes first
    /// is joined when its verdict is served).
    pub unmatched: u64,
}

impl Confusion {
    /// Precision so far (`None` before any fraud verdict is labelled).
    #[must_use]
    pub fn precision(&self) -> Option<f64> {
        let d = self.tp + self.fp;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }

    /// Recall so far (`None` before any fraud is labelled).
    #[must_use]
    pub fn recall(&self) -> Option<f64> {
        let d = self.tp + self.fn_;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }
}

/// What event time set aside in a batch (see [`Velocity::compute`]).
#[derive(Debug, Default)]
pub struct EventTimeReport {
    /// Rows (indices into the batch) counted provisionally, ahead of the watermark: the
    /// caller keeps them, for the dead letter should they be taken back.
    pub held: Vec<usize>,
    /// Transactions held earlier that now count for good: the caller forgets them.
    pub confirmed: Vec<String>,
    /// Transactions that count in no entity and want a dead-letter copy (under
    /// `velocity.out_of_range = "dead_letter"`), with the reason.
    pub notices: Vec<Notice>,
}

/// A transaction scored but counted in no entity for its event time.
#[derive(Debug)]
pub struct Notice {
    /// Its row in this batch, or `None` for one held in an earlier batch.
    pub row: Option<usize>,
    /// Its id.
    pub tx_id: String,
    /// Why, for the dead letter (code `time_out_of_range`).
    pub reason: String,
}

/// What a verdict served is remembered by, for its label.
#[derive(Debug, Clone)]
struct Served {
    fraud: bool,
    score: f32,
    version: Arc<str>,
}

struct Joined {
    verdicts: IdRing<Served>,
    /// Labels that arrived before their verdict (a replay, or a fast chargeback feed).
    early: IdRing<u8>,
    /// Ids whose label was counted (a repeated label is not counted again).
    labelled: IdRing<()>,
    confusion: Confusion,
}

impl Joined {
    /// Count one labelled verdict (and give it to the quality monitor).
    fn count(&mut self, served: Option<&Served>, fraud: bool, monitor: Option<&Monitor>) {
        if let (Some(v), Some(m)) = (served, monitor) {
            m.labelled(&v.version, v.score, v.fraud, fraud);
        }
        let (slot, outcome) = match (served.map(|v| v.fraud), fraud) {
            (None, _) => (&mut self.confusion.unmatched, "unmatched"),
            (Some(true), true) => (&mut self.confusion.tp, "tp"),
            (Some(true), false) => (&mut self.confusion.fp, "fp"),
            (Some(false), true) => (&mut self.confusion.fn_, "fn"),
            (Some(false), false) => (&mut self.confusion.tn, "tn"),
        };
        *slot += 1;
        metrics::counter!(names::LABELS, "outcome" => outcome).increment(1);
        if let Some(p) = self.confusion.precision() {
            metrics::gauge!(names::ONLINE_PRECISION).set(p);
        }
        if let Some(r) = self.confusion.recall() {
            metrics::gauge!(names::ONLINE_RECALL).set(r);
        }
    }
}

/// Entity features and labels for one detector.
pub struct Velocity {
    engine: Mutex<Engine<Box<dyn StateStore>>>,
    joined: Mutex<Joined>,
    out_of_range: super::config::OutOfRange,
    max_served: usize,
    retry: Duration,
    /// Ends the retries of a failing store (the shutdown deadline).
    abort: std::sync::OnceLock<tokio_util::sync::CancellationToken>,
    /// Where labelled verdicts go for quality monitoring.
    monitor: std::sync::OnceLock<Arc<Monitor>>,
}

impl std::fmt::Debug for Velocity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Velocity").finish_non_exhaustive()
    }
}

/// A label as a labels file or topic carries it.
#[derive(Debug, Deserialize)]
struct LabelMessage {
    id: serde_json::Value,
    #[serde(rename = "Class")]
    class: serde_json::Value,
    #[serde(rename = "Time")]
    time: f64,
    #[serde(default)]
    card_id: Option<String>,
    #[serde(default)]
    terminal_id: Option<String>,
}

/// Decode one label (`id`, `Class`, `Time`, and the entity ids); the error says why not.
pub fn decode_label(bytes: &[u8]) -> Result<LabelEvent, String> {
    let m: LabelMessage = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let id = match m.id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("`id` must be a string or a number, not {other}")),
    };
    let label = match m.class {
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => 0,
        serde_json::Value::Number(n) if n.as_u64() == Some(1) => 1,
        serde_json::Value::String(s) if s == "0" || s == "1" => u8::from(s == "1"),
        other => return Err(format!("`Class` must be 0 or 1, not {other}")),
    };
    if !m.time.is_finite() {
        return Err("`Time` is not finite".into());
    }
    crate::schema::check_ids(&id, m.card_id.as_deref(), m.terminal_id.as_deref())
        .map_err(|e| e.to_string())?;
    Ok(LabelEvent {
        tx_id: id,
        time: m.time,
        label,
        card_id: m.card_id,
        terminal_id: m.terminal_id,
    })
}

impl Velocity {
    /// The stage `cfg` asks for (`None` when disabled).
    pub fn from_config(cfg: &VelocityConfig) -> Result<Option<Self>, Invalid> {
        if !cfg.enabled {
            return Ok(None);
        }
        let store: Box<dyn StateStore> = match cfg.store {
            super::config::StoreKind::Memory => Box::new(MemoryStore::new(cfg.memory_limits())),
            super::config::StoreKind::Redis => {
                let settings = super::redis::RedisSettings {
                    url: cfg.redis.url.expose().to_owned(),
                    prefix: cfg.redis.prefix.clone(),
                    served_ttl: cfg.redis.served_ttl,
                    timeout: cfg.redis.timeout,
                    wait_replicas: cfg.redis.wait_replicas,
                };
                let mut store = super::redis::RedisStore::new(
                    settings,
                    cfg.features.horizon_buckets(),
                    cfg.features.bucket.secs(),
                )
                .map_err(|e| Invalid::new("velocity.redis.url", e.to_string()))?;
                // Unreachable now is an outage like any other: batches wait and retry.
                if let Err(e) = store.ping() {
                    tracing::warn!(error = %e, prefix = %cfg.redis.prefix, "velocity: Redis not reachable yet; batches will wait for it");
                }
                Box::new(store)
            }
        };
        Ok(Some(Self::new(cfg, store)?))
    }

    /// The stage over `store`.
    pub fn new(cfg: &VelocityConfig, store: Box<dyn StateStore>) -> Result<Self, Invalid> {
        let engine = Engine::with_policy(cfg.features.clone(), store, cfg.event_time())
            .map_err(|e| Invalid::new(format!("velocity.features.{}", e.key), e.message))?;
        Ok(Self {
            engine: Mutex::new(engine),
            joined: Mutex::new(Joined {
                verdicts: IdRing::default(),
                early: IdRing::default(),
                labelled: IdRing::default(),
                confusion: Confusion::default(),
            }),
            out_of_range: cfg.out_of_range,
            max_served: cfg.max_served,
            retry: Duration::from_millis(200),
            abort: std::sync::OnceLock::new(),
            monitor: std::sync::OnceLock::new(),
        })
    }

    /// Stop retrying a failing store once `token` is cancelled (the shutdown deadline):
    /// the batch then fails, and its offsets stay uncommitted.
    pub fn abort_on(&self, token: tokio_util::sync::CancellationToken) {
        // Set once per detector run; a second run keeps the first token.
        let _first = self.abort.set(token);
    }

    /// Give every labelled verdict to `monitor` (its quality per version; set once).
    pub fn set_monitor(&self, monitor: Arc<Monitor>) {
        let _first = self.monitor.set(monitor);
    }

    fn aborted(&self) -> bool {
        self.abort
            .get()
            .is_some_and(tokio_util::sync::CancellationToken::is_cancelled)
    }

    /// Wait `backoff` before a retry, in slices, so an abort is noticed at once;
    /// `false` when aborted.
    fn pause(&self, backoff: Duration) -> bool {
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if self.aborted() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50).min(backoff));
        }
        !self.aborted()
    }

    /// The spec computed.
    #[must_use]
    pub fn spec(&self) -> super::VelocitySpec {
        self.lock_engine().spec().clone()
    }

    fn lock_engine(&self) -> std::sync::MutexGuard<'_, Engine<Box<dyn StateStore>>> {
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why `tx` is refused before scoring: it lacks an entity id the spec uses, under
    /// `missing_entity = "refuse"` (the caller dead-letters it with code
    /// `missing_entity`): the entity's field and the reason.
    #[must_use]
    pub fn refusal(&self, tx: &crate::schema::Transaction) -> Option<(&'static str, String)> {
        let engine = self.lock_engine();
        if !engine.refuses_missing() {
            return None;
        }
        let missing = engine.spec().entities.iter().map(|e| e.name).find(|&e| {
            let id = match e {
                Entity::CardId => tx.card_id.as_deref(),
                Entity::TerminalId => tx.terminal_id.as_deref(),
            };
            id.is_none_or(str::is_empty)
        })?;
        Some((
            missing.field(),
            format!(
                "missing entity id `{}` (velocity.features.missing_entity = \"refuse\")",
                missing.field()
            ),
        ))
    }

    /// Compute the features of `txs` into each one's `derived` (on this thread: call it
    /// off the async runtime). A store that fails is retried with backoff until it
    /// answers: the batch waits (backpressure), nothing is scored without its features.
    /// Past the shutdown deadline ([`Velocity::abort_on`]) the error is returned and the
    /// batch fails. Returns what event time set aside.
    pub fn compute(
        &self,
        txs: &mut [crate::schema::Transaction],
    ) -> Result<EventTimeReport, StoreError> {
        let mut engine = self.lock_engine();
        let mut backoff = self.retry;
        let report = loop {
            match engine.process(txs) {
                Ok(r) => break r,
                Err(e) => {
                    metrics::counter!(names::VELOCITY_STORE_ERRORS).increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "velocity state store failed; the batch waits");
                    if !self.pause(backoff) {
                        return Err(StoreError(format!(
                            "{} (given up at the shutdown deadline)",
                            e.0
                        )));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        metrics::counter!(names::VELOCITY_TRANSACTIONS, "outcome" => "computed")
            .increment(report.computed as u64);
        metrics::counter!(names::VELOCITY_TRANSACTIONS, "outcome" => "replayed")
            .increment(report.replayed as u64);
        for (_, e) in &report.missing {
            metrics::counter!(names::VELOCITY_MISSING_ENTITY, "entity" => e.field(), "action" => "scored").increment(1);
        }
        let stats = engine.stats();
        metrics::gauge!(names::VELOCITY_ENTITIES).set(stats.entities as f64);
        metrics::gauge!(names::VELOCITY_ENTITY_BYTES).set(stats.entity_bytes as f64);
        metrics::gauge!(names::VELOCITY_BYTES_PER_ENTITY).set(stats.bytes_per_entity());
        metrics::counter!(names::VELOCITY_EVICTED).absolute(stats.evicted);
        Ok(self.note_event_time(&engine, txs, report))
    }

    /// Count and log what event time decided for a batch.
    fn note_event_time(
        &self,
        engine: &Engine<Box<dyn StateStore>>,
        txs: &[crate::schema::Transaction],
        report: BatchReport,
    ) -> EventTimeReport {
        if let Some(w) = engine.watermark() {
            metrics::gauge!(names::VELOCITY_WATERMARK).set(w);
        }
        let (ahead, behind) = engine.labels_refused();
        metrics::counter!(names::VELOCITY_LABELS_REFUSED, "side" => "ahead").absolute(ahead);
        metrics::counter!(names::VELOCITY_LABELS_REFUSED, "side" => "behind").absolute(behind);
        metrics::gauge!(names::VELOCITY_HELD).set(engine.held() as f64);
        let watermark = engine
            .watermark()
            .map_or_else(|| "none yet".to_owned(), |w| w.to_string());
        let mut notices = Vec::new();
        for o in report.out_of_range {
            metrics::counter!(names::VELOCITY_OUT_OF_RANGE, "side" => o.side.label()).increment(1);
            let time = o.row.map(|i| txs[i].time());
            tracing::warn!(tx_id = %o.tx_id, time, watermark, side = o.side.label(), "transaction time out of range: scored, counted in no entity");
            if self.out_of_range == super::config::OutOfRange::DeadLetter {
                let side = match o.side {
                    super::Side::Ahead => "ahead of",
                    super::Side::Behind => "behind",
                };
                notices.push(Notice {
                    reason: format!(
                        "Time {} is {side} the event-time range (watermark {watermark}; velocity.max_future_skew, velocity.allowed_lateness): scored, counted in no entity",
                        time.map_or_else(|| "(held earlier)".to_owned(), |t| t.to_string()),
                    ),
                    row: o.row,
                    tx_id: o.tx_id,
                });
            }
        }
        EventTimeReport {
            held: report.held,
            confirmed: report.confirmed,
            notices,
        }
    }

    /// Remember the verdicts served, to join labels with them (a label that came first
    /// is joined now).
    pub fn record_verdicts(&self, verdicts: &[Verdict]) {
        let mut j = self.lock_joined();
        let monitor = self.monitor.get().map(Arc::as_ref);
        for v in verdicts {
            let served = Served {
                fraud: v.fraud,
                score: v.score,
                version: v.model_version.clone(),
            };
            if !j
                .verdicts
                .insert(&v.tx_id, served.clone(), 0, self.max_served)
            {
                continue; // a redelivery: its label was joined with the first verdict
            }
            if let Some(label) = j.early.remove(&v.tx_id) {
                j.confusion.unmatched = j.confusion.unmatched.saturating_sub(1);
                j.count(Some(&served), label == 1, monitor);
            }
        }
    }

    fn lock_joined(&self) -> std::sync::MutexGuard<'_, Joined> {
        self.joined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply labels: fraud counters (once per id) and the online confusion counts.
    /// Retries a failing store with backoff; past the shutdown deadline
    /// ([`Velocity::abort_on`]) the labels are not applied and the error is returned (the
    /// caller must not record them as done: they are read again on the next start).
    pub fn apply_labels(&self, labels: &[LabelEvent]) -> Result<Confusion, StoreError> {
        let mut backoff = self.retry;
        loop {
            match self.lock_engine().label(labels) {
                Ok(_) => break,
                Err(StoreError(e)) => {
                    metrics::counter!(names::VELOCITY_STORE_ERRORS).increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "velocity state store failed applying labels; retrying");
                    if !self.pause(backoff) {
                        return Err(StoreError(format!(
                            "{e} (labels not applied: given up at the shutdown deadline)"
                        )));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut j = self.lock_joined();
        let monitor = self.monitor.get().map(Arc::as_ref);
        for l in labels {
            if !j.labelled.insert(&l.tx_id, (), 0, self.max_served) {
                continue; // counted already
            }
            let verdict = j.verdicts.get(&l.tx_id).cloned();
            if verdict.is_none() {
                j.early.insert(&l.tx_id, l.label, 0, self.max_served);
            }
            j.count(verdict.as_ref(), l.label == 1, monitor);
        }
        Ok(j.confusion)
    }

    /// The confusion counts so far.
    #[must_use]
    pub fn confusion(&self) -> Confusion {
        self.lock_joined().confusion
    }
}
