//! The rows a model held out from training, as a sorted set of 64-bit id hashes
//! (`holdout.bin`: little-endian `u64`s, ascending). The retrain gate asks it which rows
//! inside a live model's training window the model never saw.
//!
//! Ids hash with FNV-1a (64-bit), fixed here so that every release reads the same set.
//! Two different ids may share a hash (about one pair in 2^64 / n²); such a row would be
//! taken for held out.

/// FNV-1a, 64-bit, over the id's UTF-8 bytes.
#[must_use]
pub fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A set of held-out row ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldoutSet {
    hashes: Vec<u64>,
}

impl HoldoutSet {
    /// The set of `ids`.
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut hashes: Vec<u64> = ids.into_iter().map(id_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        Self { hashes }
    }

    /// The ids of `data`'s rows `rows`.
    #[must_use]
    pub fn of_rows(data: &crate::schema::Dataset, rows: &[usize]) -> Self {
        Self::from_ids(rows.iter().map(|&i| data.ids[i].as_str()))
    }

    /// Whether `id` is in the set.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.hashes.binary_search(&id_hash(id)).is_ok()
    }

    /// Distinct ids.
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
                "{} bytes is not a whole number of ids",
                bytes.len()
            ));
        }
        let hashes: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the ids are not sorted and distinct".into());
        }
        Ok(Self { hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_round_trips_and_answers_membership() {
        let set = HoldoutSet::from_ids(["7", "3", "tx-9", "3"]);
        assert_eq!(set.len(), 3);
        assert!(set.contains("tx-9") && set.contains("3") && !set.contains("4"));
        let again = HoldoutSet::from_bytes(&set.to_bytes()).unwrap();
        assert_eq!(again, set);
        assert!(HoldoutSet::from_bytes(&[1, 2, 3]).is_err());
        let unsorted: Vec<u8> = [2u64, 1].iter().flat_map(|h| h.to_le_bytes()).collect();
        assert!(HoldoutSet::from_bytes(&unsorted).is_err());
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(id_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(id_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
