//! Train/test splits.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How to hold out test rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// Random, keeping the fraud rate equal in both parts.
    Stratified,
    /// The earliest rows (by `Time`) train, the latest test: what production looks like.
    Time,
    /// Train on every row (evaluate on a separate file instead).
    None,
}

/// Expanding-window time-series folds, as scikit-learn's `TimeSeriesSplit(k)`: rows
/// ordered by `times` (stable) and cut into `k + 1` consecutive parts of `n / (k + 1)`
/// rows (the first takes the remainder); fold `i` (1..=k) trains on every part before
/// part `i` and tests on part `i`. Each (train, test) is sorted ascending. Empty when
/// `k` is 0 or there are fewer than `k + 1` rows.
#[must_use]
pub fn time_folds(times: &[f64], k: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
    let n = times.len();
    if k == 0 || n < k + 1 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
    let part = n / (k + 1);
    let first = n - k * part;
    (0..k)
        .map(|i| {
            let start = first + i * part;
            let mut train = order[..start].to_vec();
            let mut test = order[start..start + part].to_vec();
            train.sort_unstable();
            test.sort_unstable();
            (train, test)
        })
        .collect()
}

/// Split row indices into (train, test), each sorted ascending.
///
/// - `Stratified`: within each class, a seeded shuffle puts `round(fraction · n_class)`
///   rows in test.
/// - `Time`: rows ordered by `times` (stable, so ties keep file order); the last
///   `round(fraction · n)` rows are the test set.
/// - `None`: everything trains.
#[must_use]
pub fn split(
    kind: SplitKind,
    labels: &[u8],
    times: &[f64],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let n = labels.len();
    let frac = test_fraction.clamp(0.0, 1.0);
    let (mut train, mut test) = match kind {
        SplitKind::None => ((0..n).collect(), Vec::new()),
        SplitKind::Stratified => {
            let mut rng = Rng::derive(seed, 0x5917);
            let mut train = Vec::with_capacity(n);
            let mut test = Vec::with_capacity(n);
            for class in [0u8, 1] {
                let mut idx: Vec<usize> = (0..n).filter(|&i| labels[i] == class).collect();
                rng.shuffle(&mut idx);
                let k = (frac * idx.len() as f64).round() as usize;
                test.extend_from_slice(&idx[..k]);
                train.extend_from_slice(&idx[k..]);
            }
            (train, test)
        }
        SplitKind::Time => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
            let k = (frac * n as f64).round() as usize;
            let test = idx.split_off(n - k);
            (idx, test)
        }
    };
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_keeps_class_ratio_and_is_seeded() {
        let labels: Vec<u8> = (0..1000).map(|i| u8::from(i % 50 == 0)).collect();
        let times = vec![0.0; 1000];
        let (tr, te) = split(SplitKind::Stratified, &labels, &times, 0.2, 42);
        assert_eq!(te.len(), 200);
        assert_eq!(tr.len(), 800);
        assert_eq!(te.iter().filter(|&&i| labels[i] == 1).count(), 4);
        let again = split(SplitKind::Stratified, &labels, &times, 0.2, 42);
        assert_eq!(again.1, te);
        let other = split(SplitKind::Stratified, &labels, &times, 0.2, 43);
        assert_ne!(other.1, te);
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn time_split_takes_the_latest_rows() {
        let labels = vec![0u8; 5];
        let times = [5.0, 1.0, 4.0, 2.0, 3.0];
        let (tr, te) = split(SplitKind::Time, &labels, &times, 0.4, 0);
        assert_eq!(te, vec![0, 2]);
        assert_eq!(tr, vec![1, 3, 4]);
    }

    #[test]
    fn none_trains_on_everything() {
        let (tr, te) = split(SplitKind::None, &[0, 1, 0], &[0.0; 3], 0.5, 0);
        assert_eq!(tr, vec![0, 1, 2]);
        assert!(te.is_empty());
    }

    #[test]
    fn time_folds_expand_in_time_order() {
        // Times out of file order: folds follow time, not position.
        let times: Vec<f64> = (0..23).map(|i| f64::from((i * 7) % 23)).collect();
        let folds = time_folds(&times, 4);
        assert_eq!(folds.len(), 4);
        let by_time = |rows: &[usize]| -> Vec<f64> {
            let mut t: Vec<f64> = rows.iter().map(|&i| times[i]).collect();
            t.sort_by(f64::total_cmp);
            t
        };
        for (i, (train, test)) in folds.iter().enumerate() {
            // 23 rows in 5 parts of 4, the first with the 3 left over: 7, then +4 a fold.
            assert_eq!(train.len(), 7 + 4 * i);
            assert_eq!(test.len(), 4);
            let (tr, te) = (by_time(train), by_time(test));
            assert!(
                tr.last().unwrap() < te.first().unwrap(),
                "fold {i} trains on the future"
            );
            assert!(train.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(time_folds(&times, 0).is_empty());
        assert!(time_folds(&times[..3], 3).is_empty());
    }
}
