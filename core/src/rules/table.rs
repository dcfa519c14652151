//! The hash sets behind a [`super::ValueList`], laid out for a million card ids: every
//! string lives in one byte arena (a length prefix, then its bytes) and the table holds
//! 8-byte slots, each the arena offset of an entry plus 24 more bits of its hash, so a
//! probe that meets another entry is usually rejected without touching the arena.
//! Open addressing with linear probing at a load of at most one half. Hashing is std's
//! `RandomState` (SipHash-1-3 with per-list random keys): no dependency, and lookups of
//! attacker-chosen card ids cannot be steered into long probe sequences.

use std::hash::BuildHasher;

/// Bits of a slot that hold the arena offset (1 TiB of text).
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const MIN_SLOTS: usize = 16;

fn slots_for(entries: usize) -> usize {
    entries
        .saturating_mul(2)
        .max(MIN_SLOTS)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX / 2 + 1)
}

/// A set of strings. Slot 0 means empty: the arena starts with one unused byte, so no
/// entry has offset 0.
#[derive(Clone)]
pub(crate) struct StrSet {
    bytes: Vec<u8>,
    slots: Vec<u64>,
    len: usize,
}

impl Default for StrSet {
    fn default() -> Self {
        Self {
            bytes: vec![0],
            slots: Vec::new(),
            len: 0,
        }
    }
}

/// LEB128 length prefix.
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// The entry at `offset` and the offset after it; empty past the end.
fn entry_at(bytes: &[u8], offset: usize) -> (&[u8], usize) {
    let (mut len, mut shift, mut at) = (0usize, 0u32, offset);
    while let Some(&b) = bytes.get(at) {
        at += 1;
        if shift < usize::BITS {
            len |= usize::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let end = at.saturating_add(len);
    (bytes.get(at..end).unwrap_or_default(), end)
}

impl StrSet {
    /// Room for `entries` without rehashing.
    pub(crate) fn with_capacity(entries: usize, text_bytes: usize) -> Self {
        let mut bytes = Vec::with_capacity(text_bytes.saturating_add(1));
        bytes.push(0);
        Self {
            bytes,
            slots: vec![0; slots_for(entries)],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `s`'s hash, having read the table slot it starts probing at, so that a batch of
    /// these brings its slots into the cache together before [`StrSet::insert_hashed`].
    pub(crate) fn hash_and_touch(&self, hasher: &impl BuildHasher, s: &str) -> u64 {
        let h = hasher.hash_one(s.as_bytes());
        if let Some(mask) = self.slots.len().checked_sub(1) {
            std::hint::black_box(self.slots[(h as usize) & mask]);
        }
        h
    }

    /// Add `s`, whose hash by `hasher` is `h`; false when it was already there (or the
    /// arena is full). The table grows past half full.
    pub(crate) fn insert_hashed(&mut self, hasher: &impl BuildHasher, h: u64, s: &str) -> bool {
        if (self.bytes.len() + s.len() + 10) as u64 > OFFSET_MASK {
            return false;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(hasher);
        }
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                let offset = self.bytes.len() as u64;
                put_len(&mut self.bytes, s.len());
                self.bytes.extend_from_slice(s.as_bytes());
                self.slots[i] = (h & !OFFSET_MASK) | offset;
                self.len += 1;
                return true;
            }
            if self.matches(slot, h, s) {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    fn matches(&self, slot: u64, h: u64, s: &str) -> bool {
        slot & !OFFSET_MASK == h & !OFFSET_MASK
            && entry_at(&self.bytes, (slot & OFFSET_MASK) as usize).0 == s.as_bytes()
    }

    fn grow(&mut self, hasher: &impl BuildHasher) {
        let size = slots_for(self.len + 1).max(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        let mask = size - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let (entry, _) = entry_at(&self.bytes, (slot & OFFSET_MASK) as usize);
            let h = hasher.hash_one(entry);
            let mut i = (h as usize) & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    pub(crate) fn contains(&self, hasher: &impl BuildHasher, s: &str) -> bool {
        if self.len == 0 {
            return false;
        }
        let h = hasher.hash_one(s.as_bytes());
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        // The load is at most one half, so an empty slot ends every probe.
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return false;
            }
            if self.matches(slot, h, s) {
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// The entries, in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let mut at = 1;
        std::iter::from_fn(move || {
            if at >= self.bytes.len() {
                return None;
            }
            let (entry, next) = entry_at(&self.bytes, at);
            at = next;
            // Entries are copied from `&str`s, so this never fails.
            Some(std::str::from_utf8(entry).unwrap_or_default())
        })
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.slots.capacity() * size_of::<u64>()
    }
}

/// A set of finite numbers by their bits (`-0` stored as `0`). The empty slot is a NaN
/// pattern, which no finite number has.
#[derive(Clone, Default)]
pub(crate) struct NumSet {
    slots: Vec<u64>,
    len: usize,
}

const EMPTY: u64 = 0x7ff8_0000_0000_0001;

fn key(v: f64) -> u64 {
    // -0.0 == 0.0, so both go in as 0.
    if v == 0.0 { 0 } else { v.to_bits() }
}

impl NumSet {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Add a finite `v`; non-finite values are ignored.
    pub(crate) fn insert(&mut self, hasher: &impl BuildHasher, v: f64) {
        if !v.is_finite() {
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            let size = slots_for(self.len + 1).max(self.slots.len() * 2);
            let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
            for k in old.into_iter().filter(|&k| k != EMPTY) {
                self.place(hasher, k);
            }
        }
        if self.place(hasher, key(v)) {
            self.len += 1;
        }
    }

    /// Put `k` in its slot; false when it was there.
    fn place(&mut self, hasher: &impl BuildHasher, k: u64) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = (hasher.hash_one(k) as usize) & mask;
        loop {
            match self.slots[i] {
                EMPTY => {
                    self.slots[i] = k;
                    return true;
                }
                s if s == k => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn contains(&self, hasher: &impl BuildHasher, v: f64) -> bool {
        if self.len == 0 || !v.is_finite() {
            return false;
        }
        let k = key(v);
        let mask = self.slots.len() - 1;
        let mut i = (hasher.hash_one(k) as usize) & mask;
        loop {
            match self.slots[i] {
                EMPTY => return false,
                s if s == k => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u64>()
    }
}
