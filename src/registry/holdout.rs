//! The rows a model held out from training, as a sorted set of 64-bit row fingerprints
//! (`holdout.bin`: little-endian `u64`s, ascending). The retrain gate asks it which rows
//! inside a live model's training window the model never saw.
//!
//! A row's fingerprint hashes its values (`Time`, `V1`..`V28`, `Amount`), not its id:
//! ids are often row numbers, which differ between a training file and the same
//! transactions read back from the lake or from several history files, while the values
//! do not. A fingerprint that also belongs to a training row (an exact duplicate) is left
//! out of the set, so a duplicate of a training row never counts as unseen. The hash is
//! FNV-1a (64-bit) over the values' IEEE-754 bits, fixed here so that every release reads
//! the same set; two different rows may share one (about one pair in 2^64 / n²), and such
//! a row would be taken for held out.

use crate::schema::{Dataset, NUM_FIELDS};

/// FNV-1a, 64-bit.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fingerprint of row `i` of `data`: FNV-1a over its values' bits (`-0.0` as `0.0`).
#[must_use]
pub fn row_fingerprint(data: &Dataset, i: usize) -> u64 {
    fnv1a((0..NUM_FIELDS).flat_map(|f| {
        let v = data.columns[f][i];
        (if v == 0.0 { 0.0f64 } else { v }).to_bits().to_le_bytes()
    }))
}

/// A set of held-out rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldoutSet {
    hashes: Vec<u64>,
}

impl HoldoutSet {
    /// The rows `held_out` of `data`, less any whose values also occur among its other
    /// rows (which trained).
    #[must_use]
    pub fn of_split(data: &Dataset, held_out: &[usize]) -> Self {
        let mut out = vec![false; data.len()];
        for &i in held_out {
            out[i] = true;
        }
        let mut trained: Vec<u64> = (0..data.len())
            .filter(|&i| !out[i])
            .map(|i| row_fingerprint(data, i))
            .collect();
        trained.sort_unstable();
        let mut hashes: Vec<u64> = held_out
            .iter()
            .map(|&i| row_fingerprint(data, i))
            .filter(|h| trained.binary_search(h).is_err())
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        Self { hashes }
    }

    /// Whether row `i` of `data` is in the set.
    #[must_use]
    pub fn contains_row(&self, data: &Dataset, i: usize) -> bool {
        self.hashes.binary_search(&row_fingerprint(data, i)).is_ok()
    }

    /// Distinct held-out fingerprints.
    #[must_use]
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// `holdout.bin`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.iter().flat_map(|h| h.to_le_bytes()).collect()
    }

    /// Parse `holdout.bin`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(8) {
            return Err(format!(
                "{} bytes is not a whole number of rows",
                bytes.len()
            ));
        }
        let hashes: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the fingerprints are not sorted and distinct".into());
        }
        Ok(Self { hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Transaction;

    fn data(values: &[f64]) -> Dataset {
        let mut d = Dataset::default();
        for (i, &v) in values.iter().enumerate() {
            let mut row = [0.0; NUM_FIELDS];
            row[0] = v;
            row[NUM_FIELDS - 1] = v * 2.0;
            d.push(Transaction {
                id: i.to_string(),
                values: row,
                label: Some(0),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        d
    }

    #[test]
    fn rows_are_known_by_their_values_not_their_ids() {
        let d = data(&[1.0, 2.0, 3.0, 4.0, 2.0]);
        // Rows 1 and 3 held out; row 4 duplicates row 1 and trained, so row 1's values
        // are not counted as unseen.
        let set = HoldoutSet::of_split(&d, &[1, 3]);
        assert_eq!(set.len(), 1);
        assert!(set.contains_row(&d, 3) && !set.contains_row(&d, 1) && !set.contains_row(&d, 0));
        // The same transactions in another order, with other ids.
        let reordered = data(&[4.0, 1.0]);
        assert!(set.contains_row(&reordered, 0) && !set.contains_row(&reordered, 1));
        let again = HoldoutSet::from_bytes(&set.to_bytes()).unwrap();
        assert_eq!(again, set);
        assert!(HoldoutSet::from_bytes(&[1, 2, 3]).is_err());
        let unsorted: Vec<u8> = [2u64, 1].iter().flat_map(|h| h.to_le_bytes()).collect();
        assert!(HoldoutSet::from_bytes(&unsorted).is_err());
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        // -0.0 and 0.0 are the same value.
        assert_eq!(
            row_fingerprint(&data(&[0.0]), 0),
            row_fingerprint(&data(&[-0.0]), 0)
        );
    }
}
