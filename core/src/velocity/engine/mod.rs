//! The engine: computes each transaction's entity features point in time (from events
//! before it only), then counts it. The same code runs online, batch by batch, and
//! offline over a historical file in time order.
//!
//! Which transactions count is event time's business ([`super::clock`]): a transaction
//! far ahead of the watermark counts provisionally and is taken back when the stream
//! does not follow it; one behind the watermark, or beyond the wall clock, counts in no
//! entity. Either way it is scored, from what the store holds.

use std::collections::VecDeque;

use super::clock::{EventClock, EventTimePolicy, Fate, Judgement, Side};
use super::spec::{Aggregate, Entity, MissingEntity, SpecError, VelocitySpec};
use super::store::{Commit, Key, Label, StateStore, StoreError, StoreStats};
use crate::schema::Transaction;

mod batch;
mod offline;

use batch::entity_id;
pub use batch::time_flags;
pub use offline::{OfflineFeatures, compute_offline, offline_engine};

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Transactions whose features were computed now (counted, held or out of range).
    pub computed: usize,
    /// Transactions seen before: their recorded features were reused, nothing counted.
    pub replayed: usize,
    /// Rows (indices into the batch) lacking an id of an entity the spec uses, with the
    /// entity: scored without that entity's features under [`MissingEntity::Score`].
    pub missing: Vec<(usize, Entity)>,
    /// Rows counted provisionally: ahead of the watermark, kept only if the stream
    /// follows them (see [`super::clock`]).
    pub held: Vec<usize>,
    /// Transactions held earlier that the stream followed: they count for good now.
    pub confirmed: Vec<String>,
    /// Transactions that count in no entity: rows of this batch (`row`), or held ones
    /// taken back now (`row: None`).
    pub out_of_range: Vec<OutOfRange>,
}

/// A transaction that counts in no entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange {
    /// The transaction.
    pub tx_id: String,
    /// Its row in this batch, or `None` for one held in an earlier batch.
    pub row: Option<usize>,
    /// Which side of the accepted range.
    pub side: Side,
}

/// A labelled transaction, as a labels source delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEvent {
    /// The transaction.
    pub tx_id: String,
    /// Its event time (`Time`, Unix seconds).
    pub time: f64,
    /// 1 for fraud.
    pub label: u8,
    /// Its card.
    pub card_id: Option<String>,
    /// Its terminal.
    pub terminal_id: Option<String>,
}

/// A transaction counted provisionally, with what it takes to take it back.
#[derive(Debug, Clone)]
struct Held {
    tx_id: String,
    time: f64,
    bucket: i64,
    amount: f64,
    keys: Vec<(Entity, Box<str>)>,
    /// Records near the front that have followed it so far.
    followers: u8,
}

impl Held {
    fn of(t: &Transaction, bucket: i64, plan: &[EntityPlan]) -> Self {
        Self {
            tx_id: t.id.clone(),
            time: t.time(),
            bucket,
            amount: t.amount(),
            keys: plan
                .iter()
                .filter_map(|p| entity_id(t, p.entity).map(|id| (p.entity, id.into())))
                .collect(),
            followers: 0,
        }
    }

    fn keys(&self) -> Vec<Key<'_>> {
        self.keys.iter().map(|(e, id)| (*e, &**id)).collect()
    }
}

/// Most transactions held at once; past it the oldest is no longer judged.
const MAX_HELD: usize = 1_024;

/// Records seen before the first watermark is set, at their median time.
const WARM_UP: usize = 5;

/// Records near the front that must follow a held one before it counts for good: two, so
/// that two wrong times close together cannot confirm each other (one that contradicts
/// it is enough to take it back).
const FOLLOWERS: u8 = 2;

/// Computes entity features against a [`StateStore`].
pub struct Engine<S> {
    spec: VelocitySpec,
    store: S,
    width: usize,
    bucket_secs: f64,
    delay: i64,
    since: i64,
    plan: Vec<EntityPlan>,
    clock: EventClock,
    /// Lateness in whole buckets (kept beyond the horizon).
    lateness: i64,
    held: VecDeque<Held>,
    labels_refused: [u64; 2],
}

struct EntityPlan {
    entity: Entity,
    aggregates: Vec<Aggregate>,
    /// Window lengths in buckets.
    windows: Vec<i64>,
}

/// Per-row settings the feature computation needs, apart from the store.
#[derive(Clone, Copy)]
struct RowRules {
    delay: i64,
    include_current: bool,
    time_flags: bool,
}

impl<S: StateStore> Engine<S> {
    /// An engine computing `spec` against `store`, with the online event-time policy.
    pub fn new(spec: VelocitySpec, store: S) -> Result<Self, SpecError> {
        Self::with_policy(spec, store, EventTimePolicy::ONLINE)
    }

    /// An engine computing `spec` against `store` under `policy`.
    pub fn with_policy(
        spec: VelocitySpec,
        store: S,
        policy: EventTimePolicy,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let b = spec.bucket.secs();
        let plan = spec
            .entities
            .iter()
            .map(|e| EntityPlan {
                entity: e.name,
                aggregates: e.aggregates.clone(),
                windows: e.windows.iter().map(|w| (w.secs() / b) as i64).collect(),
            })
            .collect();
        let horizon = spec.horizon_buckets();
        let lateness = if policy.allowed_lateness.is_finite() {
            (policy.allowed_lateness / b as f64).ceil() as i64
        } else {
            i64::MAX
        };
        Ok(Self {
            width: spec.names().len(),
            bucket_secs: b as f64,
            delay: (spec.label_delay.secs() / b) as i64,
            since: horizon,
            plan,
            clock: EventClock::new(policy, (horizon as f64) * b as f64),
            lateness,
            held: VecDeque::new(),
            labels_refused: [0; 2],
            spec,
            store,
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &VelocitySpec {
        &self.spec
    }

    /// Features per transaction.
    #[must_use]
    pub fn width(&self) -> usize {
        self.width
    }

    /// The store's sizes.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The event-time watermark (the newest time counted for good), once there is one.
    #[must_use]
    pub fn watermark(&self) -> Option<f64> {
        self.clock.watermark()
    }

    /// Transactions held now (counted provisionally, not yet judged).
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Labels not applied since the start, ahead (beyond the wall clock) and behind.
    #[must_use]
    pub fn labels_refused(&self) -> (u64, u64) {
        (self.labels_refused[0], self.labels_refused[1])
    }

    fn rules(&self) -> RowRules {
        RowRules {
            delay: self.delay,
            include_current: self.spec.include_current,
            time_flags: self.spec.time_flags,
        }
    }

    /// Compute and record the features of `txs`, in order, into each transaction's
    /// `derived` (replacing what was there). A transaction id recorded before gets its
    /// recorded features back and counts nothing. On a store error nothing of the batch
    /// is recorded and the batch may be retried whole.
    pub fn process(&mut self, txs: &mut [Transaction]) -> Result<BatchReport, StoreError> {
        let now = self.clock.now();
        if self.store.as_memory().is_some() {
            return Ok(self.process_in_memory(txs, now));
        }
        let (clock, held) = (self.clock.clone(), self.held.clone());
        let r = self.process_remote(txs, now);
        if r.is_err() {
            // Nothing of the batch is recorded: the clock and the held ones are as before.
            self.clock = clock;
            self.held = held;
        }
        r
    }

    /// Before a row at `time` is computed, judge the held transactions (see
    /// [`super::clock`]). Before any watermark, once [`WARM_UP`] records are in (the held
    /// ones and this one), the watermark starts at the median of their times, so a few
    /// wrong times among the first records cannot set it. Then: held ones inside the
    /// range count for good, oldest first (the watermark moves to them); when `time` is
    /// near the front, those it follows count for good and those it contradicts are
    /// taken back; held ones the watermark has left behind are taken back. Returns the
    /// ones to take back.
    fn judge_held(&mut self, time: f64, now: Option<f64>, report: &mut BatchReport) -> Vec<Held> {
        let mut release = Vec::new();
        if self.held.is_empty() {
            return release;
        }
        let mut warmed = false;
        if self.clock.watermark().is_none() {
            if self.held.len() + 1 < WARM_UP || !self.clock.near_front(time, now) {
                return release;
            }
            let mut times: Vec<f64> = self.held.iter().map(|h| h.time).collect();
            times.push(time);
            times.sort_by(f64::total_cmp);
            self.clock.counted(times[times.len() / 2]);
            warmed = true;
        }
        let mut held: Vec<Held> = std::mem::take(&mut self.held).into();
        held.sort_by(|a, b| a.time.total_cmp(&b.time));
        // The record that completed the warm-up is one of its votes, not a judge.
        let front = !warmed && self.clock.near_front(time, now);
        for mut h in held {
            let verdict = match self.clock.fate(h.time, now) {
                Fate::Count => Some(None),
                Fate::Refuse(side) => Some(Some(side)),
                Fate::Hold if !front => None,
                Fate::Hold => match self.clock.judge(h.time, time) {
                    Judgement::Follows if h.followers + 1 >= FOLLOWERS => Some(None),
                    Judgement::Follows => {
                        h.followers += 1;
                        None
                    }
                    Judgement::Contradicts => Some(Some(Side::Ahead)),
                    Judgement::Undecided => None,
                },
            };
            match verdict {
                Some(None) => {
                    self.clock.counted(h.time);
                    report.confirmed.push(h.tx_id);
                }
                Some(Some(side)) => {
                    report.out_of_range.push(OutOfRange {
                        tx_id: h.tx_id.clone(),
                        row: None,
                        side,
                    });
                    release.push(h);
                }
                None => self.held.push_back(h),
            }
        }
        release
    }

    /// Hold `h`; past [`MAX_HELD`] the oldest is no longer judged, and stays counted
    /// (nothing contradicted it).
    fn hold(&mut self, h: Held) {
        self.held.push_back(h);
        if self.held.len() > MAX_HELD {
            self.held.pop_front();
        }
    }

    /// The bucket the stores may drop everything before (none before a watermark).
    fn keep_from(&self) -> Option<i64> {
        let w = self.clock.watermark()?;
        Some(
            self.bucket_of(w)
                .saturating_sub(self.since)
                .saturating_sub(self.lateness),
        )
    }

    fn bucket_of(&self, time: f64) -> i64 {
        (time / self.bucket_secs).floor() as i64
    }

    /// Count fraud labels in their transactions' buckets (labels of legitimate
    /// transactions change no counter). A label older than the watermark allows, or
    /// beyond the wall clock, is not applied (see [`Engine::labels_refused`]). Returns how
    /// many were new.
    pub fn label(&mut self, labels: &[LabelEvent]) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut frauds: Vec<&LabelEvent> = Vec::new();
        for l in labels.iter().filter(|l| l.label == 1) {
            match self.clock.label_fate(l.time, now) {
                None => frauds.push(l),
                Some(Side::Ahead) => self.labels_refused[0] += 1,
                Some(Side::Behind) => self.labels_refused[1] += 1,
            }
        }
        let keys: Vec<Vec<Key<'_>>> = frauds
            .iter()
            .map(|l| {
                self.plan
                    .iter()
                    .filter(|p| p.aggregates.iter().any(|a| a.delayed()))
                    .filter_map(|p| {
                        let id = match p.entity {
                            Entity::CardId => l.card_id.as_deref(),
                            Entity::TerminalId => l.terminal_id.as_deref(),
                        };
                        id.filter(|s| !s.is_empty()).map(|id| (p.entity, id))
                    })
                    .collect()
            })
            .collect();
        let updates: Vec<Label<'_>> = frauds
            .iter()
            .zip(&keys)
            .map(|(l, k)| Label {
                tx_id: &l.tx_id,
                keys: k,
                bucket: self.bucket_of(l.time),
            })
            .collect();
        self.store.label(&updates)
    }

    /// Whether a missing entity id refuses the transaction.
    #[must_use]
    pub fn refuses_missing(&self) -> bool {
        self.spec.missing_entity == MissingEntity::Refuse
    }
}

impl Held {
    /// The commit that counted it (for taking it back: features are not needed).
    fn commit<'a>(&'a self, keys: &'a [Key<'a>]) -> Commit<'a> {
        Commit {
            tx_id: &self.tx_id,
            features: &[],
            keys,
            bucket: self.bucket,
            amount: self.amount,
        }
    }
}

#[cfg(test)]
mod tests;
