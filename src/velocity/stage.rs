//! The detector's velocity stage. Before a batch is scored, [`Velocity::compute`] gives
//! every transaction its entity features (point in time, recorded once per id) and
//! takes out the ones refused for a missing entity id. Labels, from a file or a topic,
//! go to [`Velocity::apply_labels`]: they feed the fraud counters and are joined with
//! the verdicts served to export online precision and recall.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::config::VelocityConfig;
use super::{BatchReport, Engine, Entity, IdRing, LabelEvent, MemoryStore, StateStore, StoreError};
use crate::metric_names as names;
use crate::model::Verdict;
use crate::stream::source::Incoming;

/// Held rows remembered for their dead letter: more than the engine holds.
const HELD_REMEMBERED: usize = 4_096;

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

/// A transaction for the dead-letter sink: refused for lacking an entity id (taken out
/// of its batch), or scored but counted in no entity for its event time (a copy).
#[derive(Debug)]
pub struct Refused {
    /// The row.
    pub row: Incoming,
    /// The dead letter's reason code: `missing_entity` or `time_out_of_range`.
    pub code: &'static str,
    /// Why.
    pub reason: String,
}

/// What [`Velocity::compute`] set aside.
#[derive(Debug, Default)]
pub struct Computed {
    /// Rows taken out before scoring (a missing entity id under
    /// `velocity.features.missing_entity = "refuse"`).
    pub refused: Vec<Refused>,
    /// Copies of rows scored but counted in no entity for their event time (under
    /// `velocity.out_of_range = "dead_letter"`), this batch's or held earlier.
    pub notices: Vec<Refused>,
}

struct Joined {
    verdicts: IdRing<bool>,
    /// Labels that arrived before their verdict (a replay, or a fast chargeback feed).
    early: IdRing<u8>,
    /// Ids whose label was counted (a repeated label is not counted again).
    labelled: IdRing<()>,
    confusion: Confusion,
}

impl Joined {
    /// Count one labelled verdict.
    fn count(&mut self, fraud_verdict: Option<bool>, fraud: bool) {
        let (slot, outcome) = match (fraud_verdict, fraud) {
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
    /// Rows held ahead of the watermark (`velocity::clock`), for the dead letter should
    /// they be taken back.
    held: Mutex<IdRing<Incoming>>,
    out_of_range: super::config::OutOfRange,
    max_served: usize,
    retry: Duration,
    /// Ends the retries of a failing store (the shutdown deadline).
    abort: std::sync::OnceLock<tokio_util::sync::CancellationToken>,
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
    pub fn from_config(cfg: &VelocityConfig) -> anyhow::Result<Option<Self>> {
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
                };
                let mut store = super::redis::RedisStore::new(
                    settings,
                    cfg.features.horizon_buckets(),
                    cfg.features.bucket.secs(),
                )
                .map_err(|e| anyhow::anyhow!("invalid `velocity.redis.url`: {e}"))?;
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
    pub fn new(cfg: &VelocityConfig, store: Box<dyn StateStore>) -> anyhow::Result<Self> {
        let engine = Engine::with_policy(cfg.features.clone(), store, cfg.event_time())
            .map_err(|e| anyhow::anyhow!("invalid `velocity.features.{}`: {}", e.key, e.message))?;
        Ok(Self {
            engine: Mutex::new(engine),
            joined: Mutex::new(Joined {
                verdicts: IdRing::default(),
                early: IdRing::default(),
                labelled: IdRing::default(),
                confusion: Confusion::default(),
            }),
            held: Mutex::new(IdRing::default()),
            out_of_range: cfg.out_of_range,
            max_served: cfg.max_served,
            retry: Duration::from_millis(200),
            abort: std::sync::OnceLock::new(),
        })
    }

    /// Stop retrying a failing store once `token` is cancelled (the shutdown deadline):
    /// the batch then fails, and its offsets stay uncommitted.
    pub fn abort_on(&self, token: tokio_util::sync::CancellationToken) {
        // Set once per detector run; a second run keeps the first token.
        let _first = self.abort.set(token);
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

    /// Compute the features of `rows` (on this thread: call it off the async runtime).
    /// Rows lacking an entity id under `missing_entity = "refuse"` are taken out and
    /// returned. A store that fails is retried with backoff until it answers: the batch
    /// waits (backpressure), nothing is scored without its features. Past the shutdown
    /// deadline ([`Velocity::abort_on`]) the error is returned and the batch fails.
    pub fn compute(&self, rows: &mut Vec<Incoming>) -> Result<Computed, StoreError> {
        let mut engine = self.lock_engine();
        let mut refused = Vec::new();
        if engine.refuses_missing() {
            let entities: Vec<Entity> = engine.spec().entities.iter().map(|e| e.name).collect();
            let mut kept = Vec::with_capacity(rows.len());
            for row in rows.drain(..) {
                let missing = entities.iter().find(|&&e| {
                    let id = match e {
                        Entity::CardId => row.tx.card_id.as_deref(),
                        Entity::TerminalId => row.tx.terminal_id.as_deref(),
                    };
                    id.is_none_or(str::is_empty)
                });
                match missing {
                    Some(e) => {
                        metrics::counter!(names::VELOCITY_MISSING_ENTITY, "entity" => e.field(), "action" => "refused").increment(1);
                        refused.push(Refused {
                            row,
                            code: "missing_entity",
                            reason: format!("missing entity id `{}` (velocity.features.missing_entity = \"refuse\")", e.field()),
                        });
                    }
                    None => kept.push(row),
                }
            }
            *rows = kept;
        }
        let mut txs: Vec<crate::schema::Transaction> =
            rows.iter_mut().map(|r| std::mem::take(&mut r.tx)).collect();
        let mut backoff = self.retry;
        let report = loop {
            match engine.process(&mut txs) {
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
        for (r, t) in rows.iter_mut().zip(txs) {
            r.tx = t;
        }
        let notices = self.note_event_time(&engine, rows, &report);
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
        Ok(Computed { refused, notices })
    }

    /// Count and log what event time decided for a batch, remember its held rows, and
    /// return the dead-letter copies of the rows that count in no entity.
    fn note_event_time(
        &self,
        engine: &Engine<Box<dyn StateStore>>,
        rows: &[Incoming],
        report: &BatchReport,
    ) -> Vec<Refused> {
        if let Some(w) = engine.watermark() {
            metrics::gauge!(names::VELOCITY_WATERMARK).set(w);
        }
        let (ahead, behind) = engine.labels_refused();
        metrics::counter!(names::VELOCITY_LABELS_REFUSED, "side" => "ahead").absolute(ahead);
        metrics::counter!(names::VELOCITY_LABELS_REFUSED, "side" => "behind").absolute(behind);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &i in &report.held {
            held.insert(&rows[i].tx.id, rows[i].clone(), 0, HELD_REMEMBERED);
        }
        for id in &report.confirmed {
            held.remove(id);
        }
        metrics::gauge!(names::VELOCITY_HELD).set(engine.held() as f64);
        let mut notices = Vec::new();
        for o in &report.out_of_range {
            metrics::counter!(names::VELOCITY_OUT_OF_RANGE, "side" => o.side.label()).increment(1);
            let row = match o.row {
                Some(i) => Some(rows[i].clone()),
                None => held.remove(&o.tx_id),
            };
            let Some(row) = row else { continue };
            let watermark = engine
                .watermark()
                .map_or_else(|| "none yet".to_owned(), |w| w.to_string());
            tracing::warn!(tx_id = %o.tx_id, time = row.tx.time(), watermark, side = o.side.label(), "transaction time out of range: scored, counted in no entity");
            if self.out_of_range == super::config::OutOfRange::DeadLetter {
                notices.push(Refused {
                    reason: format!(
                        "Time {} is {} the event-time range (watermark {watermark}; velocity.max_future_skew, velocity.allowed_lateness): scored, counted in no entity",
                        row.tx.time(),
                        match o.side {
                            super::Side::Ahead => "ahead of",
                            super::Side::Behind => "behind",
                        }
                    ),
                    code: "time_out_of_range",
                    row,
                });
            }
        }
        notices
    }

    /// Remember the verdicts served, to join labels with them (a label that came first
    /// is joined now).
    pub fn record_verdicts(&self, verdicts: &[Verdict]) {
        let mut j = self.lock_joined();
        for v in verdicts {
            if !j.verdicts.insert(&v.tx_id, v.fraud, 0, self.max_served) {
                continue; // a redelivery: its label was joined with the first verdict
            }
            if let Some(label) = j.early.remove(&v.tx_id) {
                j.confusion.unmatched = j.confusion.unmatched.saturating_sub(1);
                j.count(Some(v.fraud), label == 1);
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
        for l in labels {
            if !j.labelled.insert(&l.tx_id, (), 0, self.max_served) {
                continue; // counted already
            }
            let verdict = j.verdicts.get(&l.tx_id).copied();
            if verdict.is_none() {
                j.early.insert(&l.tx_id, l.label, 0, self.max_served);
            }
            j.count(verdict, l.label == 1);
        }
        Ok(j.confusion)
    }

    /// The confusion counts so far.
    #[must_use]
    pub fn confusion(&self) -> Confusion {
        self.lock_joined().confusion
    }
}
