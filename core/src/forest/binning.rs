//! Quantile binning: each feature's values map to at most 255 ordered `u8` bins.
//!
//! Cut points are actual data values, so `bin(x) <= b` holds exactly when `x <= cut[b]`,
//! and a split found on bins becomes the raw threshold `cut[b]` at serving time with no
//! rounding difference between training and scoring.

use rayon::prelude::*;

use crate::rng::Rng;

/// Values sampled per feature to place cut points; quantiles of a sample this large are
/// within a fraction of a bin of the full data's.
const BIN_SAMPLE: usize = 200_000;

/// Per-feature cut points.
#[derive(Debug, Clone, PartialEq)]
pub struct Binner {
    cuts: Vec<Vec<f32>>,
}

impl Binner {
    /// Place cut points for each of `n_features` columns of the row-major matrix `x`,
    /// with at most `max_bins` bins per feature.
    #[must_use]
    pub fn fit(x: &[f32], n_features: usize, max_bins: usize, seed: u64) -> Self {
        let n = x.len().checked_div(n_features).unwrap_or(0);
        let max_bins = max_bins.clamp(2, 255);
        let sample: Option<Vec<usize>> = (n > BIN_SAMPLE).then(|| {
            let mut rng = Rng::derive(seed, 0xB1);
            let mut idx: Vec<usize> = (0..BIN_SAMPLE).map(|_| rng.below(n)).collect();
            idx.sort_unstable();
            idx
        });
        let cuts = (0..n_features)
            .into_par_iter()
            .map(|f| {
                let mut col: Vec<f32> = match &sample {
                    Some(idx) => idx.iter().map(|&i| x[i * n_features + f]).collect(),
                    None => (0..n).map(|i| x[i * n_features + f]).collect(),
                };
                col.sort_unstable_by(f32::total_cmp);
                cut_points(&col, max_bins)
            })
            .collect();
        Self { cuts }
    }

    /// Rebuild from known cut points (each list sorted ascending, at most 254 long).
    #[must_use]
    pub fn from_cuts(cuts: Vec<Vec<f32>>) -> Self {
        Self { cuts }
    }

    /// Number of features.
    #[must_use]
    pub fn n_features(&self) -> usize {
        self.cuts.len()
    }

    /// Number of bins used by feature `f`.
    #[must_use]
    pub fn n_bins(&self, f: usize) -> usize {
        self.cuts[f].len() + 1
    }

    /// The raw threshold equivalent to `bin <= b` for feature `f`.
    #[must_use]
    pub fn threshold(&self, f: usize, b: u8) -> f32 {
        self.cuts[f][usize::from(b)]
    }

    /// The bin of value `v` for feature `f`.
    #[must_use]
    pub fn bin(&self, f: usize, v: f32) -> u8 {
        self.cuts[f].partition_point(|&c| c < v) as u8
    }

    /// Bin a row-major matrix (same feature order as `fit`).
    #[must_use]
    pub fn transform(&self, x: &[f32]) -> Vec<u8> {
        let nf = self.cuts.len();
        let mut out = vec![0u8; x.len()];
        out.par_chunks_mut(nf * 4096)
            .zip(x.par_chunks(nf * 4096))
            .for_each(|(o, xs)| {
                for (i, (ob, &v)) in o.iter_mut().zip(xs).enumerate() {
                    *ob = self.bin(i % nf, v);
                }
            });
        out
    }
}

/// How much finer the tails are cut: bins at the extremes hold `1 − TAIL_WARP` of a
/// uniform quantile bin's rows, those in the middle `1 + TAIL_WARP`.
const TAIL_WARP: f64 = 0.9;

/// The quantile level of cut `u` (in (0, 1), evenly spaced): `u − a·sin(2πu)/2π`, a
/// monotone grid whose spacing is `1 − a·cos(2πu)`, so cuts crowd into both tails. Fraud
/// often lives in a tail (an amount over a limit, a burst of transactions), where equal
/// frequency bins would put one threshold across a whole rare range; the middle of a
/// distribution loses little from slightly wider bins.
fn tail_level(u: f64) -> f64 {
    let turn = 2.0 * std::f64::consts::PI;
    u - TAIL_WARP * (turn * u).sin() / turn
}

/// Cut points for one sorted column: every distinct value gets its own bin when there are
/// few enough; otherwise cuts fall on quantiles of the tail-refined grid
/// ([`tail_level`]), merged where values repeat.
fn cut_points(sorted: &[f32], max_bins: usize) -> Vec<f32> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let mut distinct: Vec<f32> = Vec::new();
    for &v in sorted {
        if distinct.last() != Some(&v) {
            distinct.push(v);
            if distinct.len() > max_bins {
                break;
            }
        }
    }
    if distinct.len() <= max_bins {
        distinct.pop();
        return distinct;
    }
    let max = sorted[n - 1];
    let mut cuts: Vec<f32> = Vec::with_capacity(max_bins - 1);
    for k in 1..max_bins {
        let q = sorted[((tail_level(k as f64 / max_bins as f64) * n as f64) as usize).min(n - 1)];
        if q < max && cuts.last().is_none_or(|&c| q > c) {
            cuts.push(q);
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let x = [3.0, 1.0, 2.0, 1.0, 3.0, 2.0];
        let b = Binner::fit(&x, 1, 255, 0);
        assert_eq!(b.n_bins(0), 3);
        assert_eq!(b.transform(&x), vec![2, 0, 1, 0, 2, 1]);
        assert_eq!(b.threshold(0, 0), 1.0);
        assert_eq!(b.threshold(0, 1), 2.0);
    }

    #[test]
    fn many_values_are_capped_with_finer_tails() {
        let x: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
        let b = Binner::fit(&x, 1, 100, 0);
        assert_eq!(b.n_bins(0), 100);
        let bins = b.transform(&x);
        let mut counts = [0usize; 100];
        for &v in &bins {
            counts[usize::from(v)] += 1;
        }
        // A uniform bin would hold 1,000 rows: the extremes hold about a tenth of that,
        // the middle about 1.9 times, and the grid is symmetric.
        assert!(counts[0] < 200 && counts[99] < 200, "{counts:?}");
        assert!((1_800..=2_000).contains(&counts[50]), "{counts:?}");
        assert!(
            counts.windows(2).take(49).all(|w| w[0] <= w[1] + 1),
            "{counts:?}"
        );
        assert!(counts[0].abs_diff(counts[99]) <= 2, "{counts:?}");
    }

    #[test]
    fn bin_le_b_iff_value_le_threshold() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.37 - 50.0)
            .collect();
        let b = Binner::fit(&x, 1, 32, 0);
        let bins = b.transform(&x);
        for cut in 0..(b.n_bins(0) - 1) as u8 {
            let t = b.threshold(0, cut);
            for (&v, &bv) in x.iter().zip(&bins) {
                assert_eq!(bv <= cut, v <= t);
            }
        }
    }

    #[test]
    fn heavy_repeats_merge_bins_without_empty_ones() {
        let mut x = vec![0.0f32; 9000];
        x.extend((0..1000).map(|i| i as f32));
        let b = Binner::fit(&x, 1, 255, 0);
        let bins = b.transform(&x);
        let mut seen = vec![false; b.n_bins(0)];
        for v in bins {
            seen[usize::from(v)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn constant_feature_has_one_bin() {
        let b = Binner::fit(&[5.0; 100], 1, 255, 0);
        assert_eq!(b.n_bins(0), 1);
    }

    #[test]
    fn multi_feature_row_major() {
        let x = [0.0, 10.0, 1.0, 20.0, 2.0, 30.0];
        let b = Binner::fit(&x, 2, 255, 0);
        assert_eq!(b.transform(&x), vec![0, 0, 1, 1, 2, 2]);
    }
}
