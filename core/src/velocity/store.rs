//! The state behind entity features: time-bucketed counters per entity, the features
//! served per transaction id (so a redelivered transaction is neither counted twice nor
//! scored differently) and the labels already applied. [`StateStore`] is the one
//! interface; [`MemoryStore`] keeps it in this process, bounded.

pub use super::ids::IdRing;

use super::hash::FastMap;
use std::mem::{size_of, size_of_val};

use super::spec::Entity;

/// One bucket of an entity's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Bucket index: event time (Unix seconds) divided by the bucket width.
    pub idx: i64,
    /// Transactions.
    pub count: u32,
    /// Known frauds among them.
    pub frauds: u32,
    /// Sum of their amounts.
    pub sum: f64,
}

/// An entity instance: which entity, and its id.
pub type Key<'a> = (Entity, &'a str);

/// One served transaction to record, once per id.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// Transaction id.
    pub tx_id: &'a str,
    /// The features it was scored with.
    pub features: &'a [f32],
    /// The entities whose counters it increments.
    pub keys: &'a [Key<'a>],
    /// Its bucket.
    pub bucket: i64,
    /// Its amount.
    pub amount: f64,
}

/// One fraud label to apply, once per transaction id.
#[derive(Debug, Clone, Copy)]
pub struct Label<'a> {
    /// The labelled transaction.
    pub tx_id: &'a str,
    /// Its entities.
    pub keys: &'a [Key<'a>],
    /// Its bucket (its event time, not the label's arrival).
    pub bucket: i64,
}

/// A store that could not be reached or answered wrongly; the caller retries.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

/// What a store holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entities with counters.
    pub entities: u64,
    /// Approximate bytes they take (keys, counters, table slots).
    pub entity_bytes: u64,
    /// Transaction ids whose features are remembered.
    pub served: u64,
    /// Approximate bytes those take.
    pub served_bytes: u64,
    /// Entities dropped to stay under the entity bound (not by age).
    pub evicted: u64,
}

impl StoreStats {
    /// Mean bytes per entity.
    #[must_use]
    pub fn bytes_per_entity(&self) -> f64 {
        if self.entities == 0 {
            0.0
        } else {
            self.entity_bytes as f64 / self.entities as f64
        }
    }
}

/// Where entity state lives. Every call is one batch (one round trip for a remote store).
pub trait StateStore: Send {
    /// The features recorded for each of these transaction ids, if any.
    fn served(&mut self, tx_ids: &[&str]) -> Result<Vec<Option<Vec<f32>>>, StoreError>;

    /// The buckets of each entity with index ≥ `since`, ascending.
    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError>;

    /// Record served transactions. A transaction id already recorded changes nothing.
    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError>;

    /// Count fraud labels in their transactions' buckets; a label already applied changes
    /// nothing. Returns how many were new.
    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError>;

    /// Take back transactions counted provisionally (their features and their counts),
    /// each only if it is recorded: a second call changes nothing. A bucket left with
    /// nothing in it is removed, so counting and taking back leave the state as it was.
    /// Returns how many were taken back.
    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError>;

    /// Buckets before `bucket` are no longer read (the watermark moved): the store may
    /// drop them. Called when the watermark moves; never with a smaller value than before.
    fn expire_before(&mut self, bucket: i64);

    /// Sizes, for metrics.
    fn stats(&self) -> StoreStats;

    /// The store, when it keeps its state in this process: the engine then computes and
    /// counts in place, one transaction at a time, without copying buckets.
    fn as_memory(&mut self) -> Option<&mut MemoryStore> {
        None
    }
}

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The spec's horizon in buckets (the engine sets what is dropped: see
    /// [`StateStore::expire_before`]).
    pub horizon: i64,
    /// Most entities kept; beyond it the least recently active are dropped.
    pub max_entities: usize,
    /// Most transaction ids (and, separately, labels) remembered for idempotency.
    pub max_served: usize,
}

#[derive(Debug, Default)]
struct EntityState {
    buckets: Vec<Bucket>,
    /// Newest bucket index touched.
    last: i64,
}

impl EntityState {
    fn bytes(&self, key: &str) -> usize {
        ENTITY_OVERHEAD + key.len() + self.buckets.capacity() * size_of::<Bucket>()
    }

    /// Add to the bucket `idx` (kept sorted), creating it if needed.
    fn add(&mut self, idx: i64, count: u32, frauds: u32, amount: f64) {
        let pos = self.buckets.partition_point(|b| b.idx < idx);
        match self.buckets.get_mut(pos) {
            Some(b) if b.idx == idx => {
                b.count += count;
                b.frauds += frauds;
                b.sum += amount;
            }
            _ => self.buckets.insert(
                pos,
                Bucket {
                    idx,
                    count,
                    frauds,
                    sum: amount,
                },
            ),
        }
        self.last = self.last.max(idx);
    }

    /// Take one transaction out of bucket `idx`; the bucket goes when nothing is left.
    fn subtract(&mut self, idx: i64, amount: f64) {
        let pos = self.buckets.partition_point(|b| b.idx < idx);
        if let Some(b) = self.buckets.get_mut(pos).filter(|b| b.idx == idx) {
            b.count = b.count.saturating_sub(1);
            b.sum -= amount;
            if b.count == 0 && b.frauds == 0 {
                self.buckets.remove(pos);
            }
        }
    }

    /// Drop buckets before `oldest` once a few have gone stale (features skip stale
    /// buckets anyway; dropping them one at a time would shift the vector every time).
    fn expire_some(&mut self, oldest: i64) {
        const SLACK: usize = 16;
        if self.buckets.get(SLACK).is_some_and(|b| b.idx < oldest) {
            self.expire(oldest);
        }
    }

    /// Drop buckets before `oldest`.
    fn expire(&mut self, oldest: i64) {
        let n = self.buckets.partition_point(|b| b.idx < oldest);
        if n > 0 {
            self.buckets.drain(..n);
        }
    }
}

/// Table slot, key box, bucket vector and bookkeeping of one entity, besides its key
/// bytes and buckets.
const ENTITY_OVERHEAD: usize = size_of::<Box<str>>() + size_of::<EntityState>() + size_of::<u64>();

/// Entity state in this process: for one detector (the embedded default), bounded in
/// entities and remembered ids, lost when the process ends.
#[derive(Debug)]
pub struct MemoryStore {
    limits: MemoryLimits,
    maps: [FastMap<Box<str>, EntityState>; 2],
    entity_bytes: usize,
    /// Buckets before this are no longer read (set by the engine's watermark).
    keep_from: i64,
    served: IdRing<()>,
    /// The served features, `width` per slot; a slot is an id's insertion number
    /// modulo `max_served`.
    arena: Vec<f32>,
    width: usize,
    labelled: IdRing<()>,
    evicted: u64,
    commits_since_sweep: usize,
}

fn slot(e: Entity) -> usize {
    match e {
        Entity::CardId => 0,
        Entity::TerminalId => 1,
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            limits,
            maps: [FastMap::default(), FastMap::default()],
            entity_bytes: 0,
            keep_from: i64::MIN,
            served: IdRing::default(),
            arena: Vec::new(),
            width: 0,
            labelled: IdRing::default(),
            evicted: 0,
            commits_since_sweep: 0,
        }
    }

    /// Run `f` on the buckets of `key` (created when new) for a transaction in bucket
    /// `idx`; `f` reads them and counts the transaction. A transaction older than what
    /// the store keeps sees no buckets and counts nothing.
    pub fn with_entity<R>(
        &mut self,
        key: Key<'_>,
        idx: i64,
        f: impl FnOnce(&mut Vec<Bucket>) -> R,
    ) -> R {
        let mut f = Some(f);
        let mut run = |s: &mut EntityState| f.take().map(|f| f(&mut s.buckets));
        match self.touch(key, idx, &mut run) {
            Some(Some(r)) => r,
            // Older than what is kept: no buckets, nothing counted.
            _ => f
                .take()
                .map(|f| f(&mut Vec::new()))
                .expect("f not yet called"),
        }
    }

    /// The buckets of `key` (a copy: for a transaction read, not counted).
    #[must_use]
    pub fn peek(&self, key: Key<'_>) -> Vec<Bucket> {
        self.maps[slot(key.0)]
            .get(key.1)
            .map_or_else(Vec::new, |s| s.buckets.clone())
    }

    /// Run `f` on the state of `key` (created when new) for an event in bucket `idx`,
    /// keeping expiry, the activity mark and the byte count right. `None` when `idx` is
    /// older than what the store keeps.
    fn touch<R>(
        &mut self,
        key: Key<'_>,
        idx: i64,
        f: &mut dyn FnMut(&mut EntityState) -> R,
    ) -> Option<R> {
        if idx < self.keep_from {
            return None;
        }
        let oldest = self.keep_from;
        let map = &mut self.maps[slot(key.0)];
        let state = match map.get_mut(key.1) {
            Some(s) => {
                self.entity_bytes -= s.bytes(key.1);
                s
            }
            None => map.entry(key.1.into()).or_default(),
        };
        state.expire_some(oldest);
        let r = f(state);
        state.last = state.last.max(idx);
        self.entity_bytes += state.bytes(key.1);
        Some(r)
    }

    /// The features recorded for `tx_id`.
    #[must_use]
    pub fn served_features(&self, tx_id: &str) -> Option<Vec<f32>> {
        self.served.number(tx_id).map(|n| {
            let at = self.slot(n) * self.width;
            self.arena[at..at + self.width].to_vec()
        })
    }

    /// Remember `features` for `tx_id`; `false` when it was remembered already.
    pub fn record_served(&mut self, tx_id: &str, features: &[f32]) -> bool {
        if features.len() != self.width {
            // Another spec: features recorded under the old one do not apply.
            self.width = features.len();
            self.served = IdRing::default();
            self.arena.clear();
        }
        if !self
            .served
            .insert(tx_id, (), size_of_val(features), self.limits.max_served)
        {
            return false;
        }
        if let Some(n) = self.served.number(tx_id) {
            let at = self.slot(n) * self.width;
            if self.arena.len() < at + self.width {
                self.arena.resize(at + self.width, 0.0);
            }
            self.arena[at..at + self.width].copy_from_slice(features);
        }
        true
    }

    /// Count one more transaction towards the periodic sweep.
    pub fn note_commits(&mut self, n: usize) {
        self.commits_since_sweep += n;
        if self.entities() > self.limits.max_entities
            || self.commits_since_sweep >= self.limits.max_entities.max(1024)
        {
            self.sweep();
        }
    }

    fn add(&mut self, key: Key<'_>, idx: i64, count: u32, frauds: u32, amount: f64) {
        // Older than anything a feature reads: nothing to count.
        let _counted = self.touch(key, idx, &mut |s| {
            s.add(idx, count, frauds, amount);
        });
    }

    /// Drop entities with nothing inside the horizon, then, above the entity bound, the
    /// least recently active tenth.
    fn sweep(&mut self) {
        self.commits_since_sweep = 0;
        let oldest = self.keep_from;
        let mut bytes = 0;
        for map in &mut self.maps {
            map.retain(|k, s| {
                s.expire(oldest);
                let keep = !s.buckets.is_empty();
                if keep {
                    s.buckets.shrink_to(s.buckets.len() * 2);
                    bytes += s.bytes(k);
                }
                keep
            });
        }
        self.entity_bytes = bytes;
        let total = self.entities();
        if total > self.limits.max_entities {
            let target = self.limits.max_entities - self.limits.max_entities / 10;
            let mut lasts: Vec<i64> = self
                .maps
                .iter()
                .flat_map(|m| m.values().map(|s| s.last))
                .collect();
            let drop = total - target;
            let (_, &mut cutoff, _) = lasts.select_nth_unstable(drop - 1);
            let mut dropped = 0;
            for map in &mut self.maps {
                map.retain(|k, s| {
                    let keep = s.last > cutoff || dropped >= drop;
                    if !keep {
                        dropped += 1;
                        self.entity_bytes -= s.bytes(k);
                    }
                    keep
                });
            }
            self.evicted += dropped as u64;
        }
    }

    fn slot(&self, number: u64) -> usize {
        (number % self.limits.max_served.max(1) as u64) as usize
    }

    fn entities(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }
}

impl StateStore for MemoryStore {
    fn served(&mut self, tx_ids: &[&str]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        Ok(tx_ids.iter().map(|id| self.served_features(id)).collect())
    }

    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError> {
        Ok(keys
            .iter()
            .map(|&(e, id)| {
                self.maps[slot(e)].get(id).map_or_else(Vec::new, |s| {
                    let from = s.buckets.partition_point(|b| b.idx < since);
                    s.buckets[from..].to_vec()
                })
            })
            .collect())
    }

    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        for c in txs {
            if !self.record_served(c.tx_id, c.features) {
                continue;
            }
            for &key in c.keys {
                self.add(key, c.bucket, 1, 0, c.amount);
            }
        }
        self.note_commits(txs.len());
        Ok(())
    }

    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
        let mut applied = 0;
        for l in labels {
            if !self.labelled.insert(l.tx_id, (), 0, self.limits.max_served) {
                continue;
            }
            applied += 1;
            for &key in l.keys {
                self.add(key, l.bucket, 0, 1, 0.0);
            }
        }
        Ok(applied)
    }

    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError> {
        let mut taken = 0;
        for c in txs {
            if self.served.remove(c.tx_id).is_none() {
                continue;
            }
            taken += 1;
            for &(e, id) in c.keys {
                let map = &mut self.maps[slot(e)];
                if let Some(s) = map.get_mut(id) {
                    self.entity_bytes -= s.bytes(id);
                    s.subtract(c.bucket, c.amount);
                    self.entity_bytes += s.bytes(id);
                }
            }
        }
        Ok(taken)
    }

    fn expire_before(&mut self, bucket: i64) {
        self.keep_from = self.keep_from.max(bucket);
    }

    fn as_memory(&mut self) -> Option<&mut MemoryStore> {
        Some(self)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            entities: self.entities() as u64,
            entity_bytes: self.entity_bytes as u64,
            served: self.served.len() as u64,
            served_bytes: (self.served.bytes() + self.labelled.bytes()) as u64,
            evicted: self.evicted,
        }
    }
}

impl<S: StateStore + ?Sized> StateStore for Box<S> {
    fn served(&mut self, tx_ids: &[&str]) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        (**self).served(tx_ids)
    }

    fn buckets(&mut self, keys: &[Key<'_>], since: i64) -> Result<Vec<Vec<Bucket>>, StoreError> {
        (**self).buckets(keys, since)
    }

    fn commit(&mut self, txs: &[Commit<'_>]) -> Result<(), StoreError> {
        (**self).commit(txs)
    }

    fn label(&mut self, labels: &[Label<'_>]) -> Result<usize, StoreError> {
        (**self).label(labels)
    }

    fn uncount(&mut self, txs: &[Commit<'_>]) -> Result<usize, StoreError> {
        (**self).uncount(txs)
    }

    fn expire_before(&mut self, bucket: i64) {
        (**self).expire_before(bucket);
    }

    fn stats(&self) -> StoreStats {
        (**self).stats()
    }

    fn as_memory(&mut self) -> Option<&mut MemoryStore> {
        (**self).as_memory()
    }
}
