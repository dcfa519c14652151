//! Per-partition commit watermarks for at-least-once delivery.
//!
//! Messages of a partition are tracked from the moment they are read until every durable
//! sink has acknowledged them, in any order. The committable offset of a partition is one
//! past the highest offset below which *everything* has been acknowledged: committing it
//! can never skip an unacknowledged message, so after a crash the broker redelivers
//! everything not yet durable (and verdicts keyed by transaction id make that harmless).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Offsets in flight per partition. `K` names a partition: a partition number, or a
/// (topic, partition) pair when several topics are consumed.
#[derive(Debug)]
pub struct Watermarks<K = i32> {
    partitions: HashMap<K, Partition>,
}

impl<K> Default for Watermarks<K> {
    fn default() -> Self {
        Self {
            partitions: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets read but not yet acknowledged.
    pending: BTreeSet<i64>,
    /// Highest offset read so far.
    highest_read: Option<i64>,
    /// The committable offset (exclusive: the next offset to read); starts at the first
    /// offset read.
    committed: Option<i64>,
}

impl<K: Hash + Eq + Ord + Clone> Watermarks<K> {
    /// An empty tracker.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A message was read.
    pub fn track(&mut self, partition: K, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        // The first offset read is where the partition starts: nothing below it is ours
        // to commit, and committing it again would be a no-op.
        p.committed.get_or_insert(offset);
        p.pending.insert(offset);
        p.highest_read = Some(p.highest_read.map_or(offset, |h| h.max(offset)));
    }

    /// Every durable sink acknowledged this message. Returns the partition's new committable
    /// offset (the next offset to consume) when it advanced.
    pub fn ack(&mut self, partition: &K, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(partition)?;
        if !p.pending.remove(&offset) {
            return None; // unknown or already acknowledged (for example after a revoke)
        }
        let next = match p.pending.first() {
            Some(&lowest) => lowest,
            None => p.highest_read? + 1,
        };
        if p.committed.is_none_or(|c| next > c) {
            p.committed = Some(next);
            Some(next)
        } else {
            None
        }
    }

    /// The partition was revoked (rebalance): forget it. Acknowledgements that arrive for
    /// it later are ignored. Returns its last committable offset, for a final commit.
    pub fn revoke(&mut self, partition: &K) -> Option<i64> {
        self.partitions.remove(partition).and_then(|p| p.committed)
    }

    /// Messages read but not yet acknowledged, over all partitions.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// Messages read but not yet acknowledged on the given partitions.
    #[must_use]
    pub fn in_flight_in(&self, partitions: &[K]) -> usize {
        partitions
            .iter()
            .filter_map(|k| self.partitions.get(k))
            .map(|p| p.pending.len())
            .sum()
    }

    /// The committable offset of every partition that has one.
    #[must_use]
    pub fn committable(&self) -> Vec<(K, i64)> {
        let mut v: Vec<(K, i64)> = self
            .partitions
            .iter()
            .filter_map(|(k, p)| p.committed.map(|c| (k.clone(), c)))
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut w: Watermarks = Watermarks::new();
        for o in 10..13 {
            w.track(0, o);
        }
        assert_eq!(w.ack(&0, 10), Some(11));
        assert_eq!(w.ack(&0, 11), Some(12));
        assert_eq!(w.ack(&0, 12), Some(13));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn out_of_order_acks_never_skip_a_pending_offset() {
        let mut w: Watermarks = Watermarks::new();
        for o in 0..5 {
            w.track(3, o);
        }
        assert_eq!(w.ack(&3, 2), None, "0 and 1 are still pending");
        assert_eq!(w.ack(&3, 4), None);
        assert_eq!(w.ack(&3, 0), Some(1));
        assert_eq!(
            w.ack(&3, 1),
            Some(3),
            "2 was done: jump to the next pending, 3"
        );
        assert_eq!(w.ack(&3, 3), Some(5));
        assert_eq!(w.committable(), vec![(3, 5)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut w: Watermarks = Watermarks::new();
        w.track(0, 0);
        w.track(1, 100);
        w.track(1, 101);
        assert_eq!(w.ack(&1, 101), None);
        assert_eq!(w.ack(&0, 0), Some(1));
        assert_eq!(w.ack(&1, 100), Some(102));
        assert_eq!(w.committable(), vec![(0, 1), (1, 102)]);
    }

    #[test]
    fn duplicate_and_unknown_acks_are_ignored() {
        let mut w: Watermarks = Watermarks::new();
        w.track(0, 7);
        assert_eq!(w.ack(&0, 7), Some(8));
        assert_eq!(w.ack(&0, 7), None);
        assert_eq!(w.ack(&0, 99), None);
        assert_eq!(w.ack(&5, 1), None);
    }

    #[test]
    fn revoke_forgets_the_partition_and_reports_its_last_commit() {
        let mut w: Watermarks = Watermarks::new();
        w.track(2, 0);
        w.track(2, 1);
        assert_eq!(w.ack(&2, 0), Some(1));
        assert_eq!(w.revoke(&2), Some(1));
        assert_eq!(
            w.ack(&2, 1),
            None,
            "acks for a revoked partition are harmless"
        );
        assert_eq!(w.in_flight(), 0);
        // Reassigned later: tracking starts afresh from what the broker redelivers.
        w.track(2, 1);
        assert_eq!(w.ack(&2, 1), Some(2));
    }

    #[test]
    fn a_gap_in_offsets_is_fine() {
        // Compacted topics and transaction markers leave gaps in offsets.
        let mut w: Watermarks = Watermarks::new();
        w.track(0, 5);
        w.track(0, 9);
        assert_eq!(w.ack(&0, 5), Some(9));
        assert_eq!(w.ack(&0, 9), Some(10));
    }
}
