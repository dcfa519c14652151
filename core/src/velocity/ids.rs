//! [`IdRing`]: the bounded memory of transaction ids (served features, applied labels)
//! that lets a redelivery count once.

use std::collections::VecDeque;
use std::mem::size_of;
use std::sync::Arc;

use super::hash::FastMap;

/// A bounded first-in-first-out map from ids: the oldest id goes when it is full.
#[derive(Debug)]
pub struct IdRing<V> {
    /// Values with the insertion number that owns them.
    map: FastMap<Arc<str>, (V, u64)>,
    order: VecDeque<(Arc<str>, u64)>,
    next: u64,
    bytes: usize,
}

impl<V> Default for IdRing<V> {
    fn default() -> Self {
        Self {
            map: FastMap::default(),
            order: VecDeque::new(),
            next: 0,
            bytes: 0,
        }
    }
}

impl<V> IdRing<V> {
    /// Add `id` unless present (then `false`), dropping the oldest ids beyond `cap`.
    /// `value_bytes` is what the value holds besides its own size.
    pub fn insert(&mut self, id: &str, value: V, value_bytes: usize, cap: usize) -> bool {
        if self.map.contains_key(id) || cap == 0 {
            return false;
        }
        while self.order.len() >= cap {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.bytes -= Self::slot_bytes(&old) + value_bytes;
            // An id removed and added again since is owned by its newer insertion.
            if self.map.get(&old).is_some_and(|(_, m)| *m == n) {
                self.map.remove(&old);
            }
        }
        let key: Arc<str> = id.into();
        self.bytes += Self::slot_bytes(&key) + value_bytes;
        self.order.push_back((key.clone(), self.next));
        self.map.insert(key, (value, self.next));
        self.next += 1;
        true
    }

    /// The value of `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&V> {
        self.map.get(id).map(|(v, _)| v)
    }

    /// The insertion number of `id` (0 for the first id ever inserted): `number %
    /// cap` is a slot no other held id uses.
    #[must_use]
    pub fn number(&self, id: &str) -> Option<u64> {
        self.map.get(id).map(|(_, n)| *n)
    }

    /// Take `id` out (its place in the order is freed when it comes round).
    pub fn remove(&mut self, id: &str) -> Option<V> {
        self.map.remove(id).map(|(v, _)| v)
    }

    /// Approximate bytes the ids and their values take.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Ids held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn slot_bytes(id: &str) -> usize {
        // One shared key (two counts), two handles, the value and the order slot.
        id.len()
            + 2 * size_of::<usize>()
            + 2 * size_of::<Arc<str>>()
            + size_of::<(V, u64)>()
            + 2 * size_of::<u64>()
    }
}
