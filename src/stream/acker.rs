//! The acker: source positions are tracked from the moment they are read until every
//! durable sink has them, and a partition's committed offset only ever moves past
//! positions that are all durable ([`Watermarks`]). The state is shared with the source
//! (which tracks what it reads and pauses) and the Kafka rebalance handler (which commits
//! and forgets revoked partitions), so it lives behind one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::watermark::Watermarks;

/// A partition: topic and number.
pub type PartitionKey = (String, i32);

/// A position in a source: a partition and an offset.
pub type SourceOffset = (PartitionKey, i64);

/// Positions tracked together (one batch), with the assignment generation current when
/// they were tracked ([`PartitionState::generation`]; 0 for sources without
/// assignments). Acknowledging them counts only for partitions not assigned anew since:
/// after a revoke and a re-assignment the consumer reads the same offsets again, and a
/// late acknowledgement of the old copies must not pass for the new ones (their rows
/// are not durable yet).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The generation when they were tracked.
    pub generation: u64,
    /// The positions.
    pub offsets: Vec<SourceOffset>,
}

/// What the source, the scorer task and the rebalance handler share.
#[derive(Debug, Default)]
pub struct Partitions {
    /// Offsets dispatched and not yet durable, per partition.
    pub marks: Watermarks<PartitionKey>,
    /// Partitions currently assigned to this member, each with the assignment
    /// [`PartitionState::generation`] it was assigned in.
    pub assigned: HashMap<PartitionKey, u64>,
    /// Partitions revoked so far.
    pub revoked: u64,
    /// Whether the source has paused its partitions (the scorer is behind).
    pub paused: bool,
    /// Partitions whose lake file is being written (a revoke waits for them).
    pub lake_writing: std::collections::HashSet<PartitionKey>,
}

impl Partitions {
    /// Acknowledge durable positions; returns each partition whose committable offset
    /// advanced, with its new offset. Positions of a partition assigned anew since they
    /// were tracked are ignored.
    pub fn acknowledge(&mut self, durable: &mut Vec<Tracked>) -> Vec<SourceOffset> {
        let mut advanced: BTreeMap<PartitionKey, i64> = BTreeMap::new();
        for batch in durable.drain(..) {
            for (key, offset) in batch.offsets {
                let current = self
                    .assigned
                    .get(&key)
                    .is_none_or(|&assigned| assigned <= batch.generation);
                if current && let Some(next) = self.marks.ack(&key, offset) {
                    advanced.insert(key, next);
                }
            }
        }
        advanced.into_iter().collect()
    }

    /// Forget revoked partitions; returns their last committable offsets.
    pub fn revoke(&mut self, keys: &[PartitionKey]) -> Vec<SourceOffset> {
        let mut last = Vec::new();
        for k in keys {
            self.assigned.remove(k);
            if let Some(next) = self.marks.revoke(k) {
                last.push((k.clone(), next));
            }
        }
        self.revoked += keys.len() as u64;
        last
    }

    /// The committable offsets of the partitions still assigned, for a final commit.
    #[must_use]
    pub fn committable_assigned(&self) -> Vec<SourceOffset> {
        self.marks
            .committable()
            .into_iter()
            .filter(|(k, _)| self.assigned.contains_key(k))
            .collect()
    }

    /// Whether a message of `partition` read in assignment `generation` is still ours: its
    /// partition is assigned, and was not revoked and assigned again since it was read
    /// (the consumer then re-fetches from the last commit, so the old copy must go).
    #[must_use]
    pub fn owns(&self, partition: &PartitionKey, generation: u64) -> bool {
        self.assigned
            .get(partition)
            .is_some_and(|&assigned| generation >= assigned)
    }
}

/// What the source, the scorer task and the rebalance handler share.
#[derive(Default)]
pub struct PartitionState {
    inner: Mutex<Partitions>,
    /// The latest assignment's generation; read without the lock by the source for
    /// every message, so that messages read before a re-assignment of their partition can
    /// be told apart. Generations are unique within the process ([`GENERATIONS`]).
    generation: AtomicU64,
    /// Moves when a revoke waits for the lake (which then flushes at once).
    lake_flushes: AtomicU64,
    /// Whether the group took the assignment away without a revoke (the consumer's
    /// `assignment_lost`): nothing more may be written for it.
    lost: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionState")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Assignment generations, process-wide: a consumer that replaces another starts above
/// the old one's, so the lake tells their assignments apart.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

impl PartitionState {
    /// The current assignment generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Partitions were assigned: they join in a new generation.
    pub fn assign(&self, keys: Vec<PartitionKey>) {
        let mut s = lock_state(self);
        let g = GENERATIONS.fetch_add(1, Ordering::AcqRel) + 1;
        self.generation.store(g, Ordering::Release);
        s.assigned.extend(keys.into_iter().map(|k| (k, g)));
    }

    /// How to tell that the group took the assignment away (set once per consumer).
    pub fn set_lost_check(&self, lost: impl Fn() -> bool + Send + Sync + 'static) {
        if self.lost.set(Box::new(lost)).is_err() {
            tracing::debug!("assignment-lost check already set");
        }
    }

    fn assignment_lost(&self) -> bool {
        self.lost.get().is_some_and(|f| f())
    }

    /// Ask the lake to write what it holds now (a revoke waits for it).
    pub fn request_lake_flush(&self) {
        self.lake_flushes.fetch_add(1, Ordering::AcqRel);
    }
}

/// The partition of a lake stream `<topic>+<partition>`.
fn partition_of(stream: &str) -> Option<PartitionKey> {
    let (topic, partition) = stream.rsplit_once('+')?;
    Some((topic.to_owned(), partition.parse().ok()?))
}

impl crate::sinks::lake::Ownership for PartitionState {
    fn holds(&self, stream: &str) -> Option<u64> {
        let key = partition_of(stream)?;
        lock_state(self).assigned.get(&key).copied()
    }

    fn begin_write(&self, stream: &str) -> bool {
        let Some(key) = partition_of(stream) else {
            return false;
        };
        if self.assignment_lost() {
            return false;
        }
        let mut s = lock_state(self);
        if !s.assigned.contains_key(&key) {
            return false;
        }
        s.lake_writing.insert(key);
        true
    }

    fn end_write(&self, stream: &str) {
        if let Some(key) = partition_of(stream) {
            lock_state(self).lake_writing.remove(&key);
        }
    }

    fn flush_requests(&self) -> u64 {
        self.lake_flushes.load(Ordering::Acquire)
    }
}

/// The shared [`PartitionState`].
pub type SharedPartitions = Arc<PartitionState>;

fn lock_state(state: &PartitionState) -> MutexGuard<'_, Partitions> {
    state
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lock the shared state. A panic while holding the lock leaves consistent data (every
/// update is one call), so a poisoned lock is taken over.
pub fn lock(shared: &SharedPartitions) -> MutexGuard<'_, Partitions> {
    lock_state(shared)
}

/// Where committable offsets go: the consumer group (Kafka), or nowhere (files).
pub trait Commit: Send + Sync {
    /// Commit `offsets` without waiting; a failure is logged, never fatal (the next owner
    /// of a partition re-reads from the last successful commit).
    fn commit_async(&self, offsets: &[SourceOffset]);
}

/// Acknowledges durable positions and commits what advanced.
pub trait Acknowledge: Send + Sync {
    /// Every position in `durable` is now in every durable sink.
    fn acknowledge(&self, durable: &mut Vec<Tracked>);
}

/// Files have no positions to commit: a restarted embedded run reads its input again.
impl Acknowledge for () {
    fn acknowledge(&self, durable: &mut Vec<Tracked>) {
        durable.clear();
    }
}

/// The acker of a partitioned source.
pub struct Acker<C> {
    shared: SharedPartitions,
    commit: C,
}

impl<C: Commit> Acker<C> {
    /// An acker over `shared` that commits through `commit`.
    pub fn new(shared: SharedPartitions, commit: C) -> Self {
        Self { shared, commit }
    }
}

impl<C: Commit> Acknowledge for Acker<C> {
    fn acknowledge(&self, durable: &mut Vec<Tracked>) {
        if durable.is_empty() {
            return;
        }
        let mut s = lock(&self.shared);
        let advanced = s.acknowledge(durable);
        // Committed under the lock, so a rebalance cannot revoke a partition in between.
        if !advanced.is_empty() {
            self.commit.commit_async(&advanced);
        }
        drop(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<SourceOffset>>);

    impl Commit for Arc<Recorded> {
        fn commit_async(&self, offsets: &[SourceOffset]) {
            self.0.lock().unwrap().extend_from_slice(offsets);
        }
    }

    fn key(p: i32) -> PartitionKey {
        ("t".into(), p)
    }

    #[test]
    fn commits_only_what_advanced_and_forgets_revoked_partitions() {
        let shared = SharedPartitions::default();
        let recorded = Arc::new(Recorded::default());
        let acker = Acker::new(shared.clone(), recorded.clone());
        shared.assign(vec![key(0), key(1)]);
        {
            let mut s = lock(&shared);
            for o in 0..3 {
                s.marks.track(key(0), o);
                s.marks.track(key(1), 10 + o);
            }
        }
        let g = shared.generation();
        let tracked = |offsets: Vec<SourceOffset>| {
            vec![Tracked {
                generation: g,
                offsets,
            }]
        };
        acker.acknowledge(&mut tracked(vec![(key(0), 1), (key(1), 10)]));
        assert_eq!(
            *recorded.0.lock().unwrap(),
            vec![(key(1), 11)],
            "0 is pending on p0"
        );
        assert_eq!(lock(&shared).revoke(&[key(1)]), vec![(key(1), 11)]);
        acker.acknowledge(&mut tracked(vec![(key(1), 11), (key(0), 0)]));
        assert_eq!(recorded.0.lock().unwrap().last(), Some(&(key(0), 2)));
        assert_eq!(lock(&shared).committable_assigned(), vec![(key(0), 2)]);
        assert_eq!(lock(&shared).revoked, 1);
    }

    /// A batch read before a revoke is acknowledged after the partition came back and
    /// its offsets were read again: the new copies stay pending, nothing is committed.
    #[test]
    fn a_late_acknowledgement_from_before_a_reassignment_commits_nothing() {
        let shared = SharedPartitions::default();
        let recorded = Arc::new(Recorded::default());
        let acker = Acker::new(shared.clone(), recorded.clone());
        shared.assign(vec![key(0)]);
        let before = shared.generation();
        for o in 0..3 {
            lock(&shared).marks.track(key(0), o);
        }
        lock(&shared).revoke(&[key(0)]);
        shared.assign(vec![key(0)]);
        let after = shared.generation();
        for o in 0..3 {
            lock(&shared).marks.track(key(0), o);
        }
        acker.acknowledge(&mut vec![Tracked {
            generation: before,
            offsets: (0..3).map(|o| (key(0), o)).collect(),
        }]);
        assert!(
            recorded.0.lock().unwrap().is_empty(),
            "the old copies count for nothing"
        );
        acker.acknowledge(&mut vec![Tracked {
            generation: after,
            offsets: (0..3).map(|o| (key(0), o)).collect(),
        }]);
        assert_eq!(*recorded.0.lock().unwrap(), vec![(key(0), 3)]);
    }

    #[test]
    fn messages_read_before_a_reassignment_are_not_ours() {
        let shared = SharedPartitions::default();
        shared.assign(vec![key(0)]);
        let read_then = shared.generation();
        assert!(lock(&shared).owns(&key(0), read_then));
        lock(&shared).revoke(&[key(0)]);
        assert!(!lock(&shared).owns(&key(0), read_then), "revoked");
        shared.assign(vec![key(0)]);
        assert!(
            !lock(&shared).owns(&key(0), read_then),
            "assigned again: the consumer re-fetches it"
        );
        assert!(lock(&shared).owns(&key(0), shared.generation()));
    }
}
