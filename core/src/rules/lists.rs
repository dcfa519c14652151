//! Named value lists (`@blocked_cards`): built once, then read-only and shared.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::compile::Catalog;
use super::lexer::is_list_char;
use super::table::{NumSet, StrSet};

/// Values hashed ahead of their insertion when a list is built.
const BATCH: usize = 16;

/// One list. Membership of a string is one hash lookup. A value that parses as a finite
/// number (Rust's `f64` syntax: `100`, `99.5`, `1e3`) is also matched by numbers, so
/// `Amount in @round_amounts` works; numbers compare exactly as `f64`, with `-0 == 0`.
///
/// Each distinct value is kept once, in insertion order, in one byte arena. Memory is
/// the text plus a length byte and 16 to 32 bytes of hash table per value (the table
/// is kept between a quarter and half full), and as much again for each value that is
/// a number: a million 13-character card ids take 31 MB (`benches/rules.rs`). A list
/// holds at most 1 TiB of text; values past that are dropped.
#[derive(Clone, Default)]
pub struct ValueList {
    hasher: RandomState,
    strings: StrSet,
    numbers: NumSet,
}

impl fmt::Debug for ValueList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueList")
            .field("len", &self.len())
            .field("numbers", &self.numbers.len())
            .finish_non_exhaustive()
    }
}

impl ValueList {
    /// A list of `values` (duplicates kept once).
    pub fn new(values: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut values = values.into_iter();
        let hasher = RandomState::new();
        let mut strings = StrSet::with_capacity(values.size_hint().0, 0);
        let mut numbers = NumSet::default();
        // Hash a batch, then insert it: the batch's table slots are fetched from memory
        // together rather than one cache miss at a time.
        let mut batch = Vec::with_capacity(BATCH);
        let mut hashes = [0u64; BATCH];
        loop {
            batch.clear();
            batch.extend(values.by_ref().take(BATCH));
            if batch.is_empty() {
                break;
            }
            for (h, v) in hashes.iter_mut().zip(&batch) {
                *h = strings.hash_and_touch(&hasher, v.as_ref());
            }
            for (&h, v) in hashes.iter().zip(&batch) {
                let v = v.as_ref();
                if strings.insert_hashed(&hasher, h, v)
                    && let Ok(n) = v.parse::<f64>()
                {
                    numbers.insert(&hasher, n);
                }
            }
        }
        strings.shrink_to_fit();
        Self {
            hasher,
            strings,
            numbers,
        }
    }

    /// Distinct values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when the list holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.strings.len() == 0
    }

    /// Whether `value` is in the list, exactly (case-sensitive, no trimming).
    #[must_use]
    pub fn contains_str(&self, value: &str) -> bool {
        self.strings.contains(&self.hasher, value)
    }

    /// Whether a value of the list parses as a number equal to `value`. Never for NaN
    /// or an infinity.
    #[must_use]
    pub fn contains_num(&self, value: f64) -> bool {
        self.numbers.contains(&self.hasher, value)
    }

    /// The values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.strings.iter()
    }

    /// The values, sorted (for showing a list).
    #[must_use]
    pub fn sorted(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.iter().collect();
        v.sort_unstable();
        v
    }

    /// Heap bytes the list holds (its text, hash tables and number set).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.strings.heap_bytes() + self.numbers.heap_bytes()
    }
}

/// Named value lists, read-only once built and cheap to share behind an `Arc`.
///
/// A [`super::RuleSet`] finds its lists by position among these names, so it must be
/// evaluated with a `Lists` that has the names its [`Catalog`] had: replacing a list's
/// values is fine, but after adding a list, recompile the rules against the new
/// [`Lists::catalog`]. (A mismatch is detected — the names' fingerprint differs — and
/// evaluation falls back to finding each list by name, slower; a list that is gone
/// reads as empty.)
#[derive(Clone)]
pub struct Lists {
    /// Sorted.
    names: Vec<String>,
    lists: Vec<ValueList>,
    fingerprint: u64,
}

impl Default for Lists {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.names.iter().zip(&self.lists))
            .finish()
    }
}

/// Whether `name` can be written `@name` in a rule: `[A-Za-z_][A-Za-z0-9_.-]*`.
#[must_use]
pub fn is_list_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(is_list_char)
}

/// A digest of a sorted, deduplicated set of list names.
pub(crate) fn names_fingerprint<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = DefaultHasher::new();
    for n in names {
        n.hash(&mut h);
    }
    h.finish()
}

impl Lists {
    /// No lists.
    #[must_use]
    pub fn new() -> Self {
        Self {
            names: Vec::new(),
            lists: Vec::new(),
            fingerprint: names_fingerprint([]),
        }
    }

    /// Set the list `name` to `values`, replacing any list of that name. Only a name
    /// that [`is_list_name`] can be named by a rule.
    pub fn insert(&mut self, name: &str, values: impl IntoIterator<Item = impl AsRef<str>>) {
        let list = ValueList::new(values);
        match self.names.binary_search_by(|n| n.as_str().cmp(name)) {
            Ok(i) => self.lists[i] = list,
            Err(i) => {
                self.names.insert(i, name.to_owned());
                self.lists.insert(i, list);
                self.fingerprint = names_fingerprint(self.names.iter().map(String::as_str));
            }
        }
    }

    /// The list names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The list `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ValueList> {
        let i = self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()?;
        self.lists.get(i)
    }

    /// The `i`th list in name order.
    pub(crate) fn by_index(&self, i: usize) -> Option<&ValueList> {
        self.lists.get(i)
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// What a rule set compiled for these lists and the entity features `derived` (in
    /// the order the transactions carry them) may name.
    #[must_use]
    pub fn catalog(&self, derived: Vec<String>) -> Catalog {
        Catalog {
            derived,
            lists: self.names(),
        }
    }
}
