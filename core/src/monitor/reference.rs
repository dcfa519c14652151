//! A model's reference distributions, recorded at training time: for each feature the
//! deciles of its training values, and for the score the quantiles of the held-out
//! scores. Live values are counted in the same bins ([`super::live`]), and the two
//! distributions compared ([`super::psi`]).

use serde::{Deserialize, Serialize};

/// Bins per feature: deciles.
pub const FEATURE_BINS: usize = 10;
/// Bins for the score: twentieths (most scores sit near 0, so the tail needs more).
pub const SCORE_BINS: usize = 20;
/// A stored reference with more edges than this per variable is refused: counting costs
/// a binary search over them for every transaction.
const MAX_EDGES: usize = 255;
/// At most this many values are sorted to place the edges (evenly spaced rows).
const SAMPLE: usize = 200_000;

/// One variable's reference: bin edges and the share of reference values in each bin.
///
/// A value `v` falls in bin `i` = the number of edges below it (`edges[i-1] < v <=
/// edges[i]`), so a value repeated across several quantiles (a count that is mostly 0)
/// gets a bin of its own. Missing values (NaN) are counted apart, never in a bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// The variable: a feature name, or `score`.
    pub name: String,
    /// Ascending, distinct, finite bin edges (one fewer than the bins).
    pub edges: Vec<f64>,
    /// The share of the reference's non-missing values in each bin (sums to 1).
    pub shares: Vec<f64>,
    /// The smallest and largest reference value: live values outside are out of range.
    pub min: f64,
    /// See `min`.
    pub max: f64,
    /// The share of reference values that were missing (NaN).
    #[serde(default)]
    pub missing: f64,
    /// Reference values counted.
    pub rows: u64,
}

/// A model's reference: one [`Distribution`] per feature, in the model's feature order,
/// and one for the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Per feature, in the model's order.
    pub features: Vec<Distribution>,
    /// The score's distribution on rows the model did not train on, when there were any.
    pub score: Option<Distribution>,
    /// Where the score's reference came from: `holdout` or `oob` (out-of-bag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_source: Option<String>,
}

impl Distribution {
    /// The distribution of `values` in (at most) `bins` quantile bins.
    #[must_use]
    pub fn fit(
        name: &str,
        values: impl ExactSizeIterator<Item = f32> + Clone,
        bins: usize,
    ) -> Self {
        let n = values.len();
        let step = n.div_ceil(SAMPLE).max(1);
        let mut sample: Vec<f32> = values
            .clone()
            .step_by(step)
            .filter(|v| !v.is_nan())
            .collect();
        sample.sort_unstable_by(f32::total_cmp);
        let mut edges: Vec<f64> = Vec::with_capacity(bins);
        if let Some(&hi) = sample.last() {
            for q in 1..bins {
                let at = (q * (sample.len() - 1)) / bins;
                let e = f64::from(sample[at]);
                // An edge at the maximum would leave the last bin empty by construction.
                if e.is_finite() && e < f64::from(hi) && edges.last().is_none_or(|&l| l < e) {
                    edges.push(e);
                }
            }
        }
        let mut counts = vec![0u64; edges.len() + 1];
        let (mut missing, mut min, mut max) = (0u64, f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            if v.is_nan() {
                missing += 1;
                continue;
            }
            let v = f64::from(v);
            counts[bin_of(&edges, v)] += 1;
            min = min.min(v);
            max = max.max(v);
        }
        let present = (n as u64 - missing).max(1);
        let shares = counts.iter().map(|&c| c as f64 / present as f64).collect();
        if min > max {
            (min, max) = (0.0, 0.0);
        }
        Self {
            name: name.to_owned(),
            edges,
            shares,
            min,
            max,
            missing: if n == 0 {
                0.0
            } else {
                missing as f64 / n as f64
            },
            rows: n as u64,
        }
    }

    /// The bin of a (non-missing) value.
    #[inline]
    #[must_use]
    pub fn bin(&self, v: f64) -> usize {
        bin_of(&self.edges, v)
    }

    /// Whether a value lies outside the reference's range.
    #[inline]
    #[must_use]
    pub fn out_of_range(&self, v: f64) -> bool {
        v < self.min || v > self.max
    }

    /// Why this distribution cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        if self.edges.len() > MAX_EDGES {
            return Some(format!(
                "{}: {} bin edges (at most {MAX_EDGES})",
                self.name,
                self.edges.len()
            ));
        }
        if self.shares.len() != self.edges.len() + 1 {
            return Some(format!(
                "{}: {} edges need {} shares, not {}",
                self.name,
                self.edges.len(),
                self.edges.len() + 1,
                self.shares.len()
            ));
        }
        if self.edges.iter().any(|e| !e.is_finite()) || self.edges.windows(2).any(|w| w[0] >= w[1])
        {
            return Some(format!("{}: edges are not finite and ascending", self.name));
        }
        let sum: f64 = self.shares.iter().sum();
        if self.shares.iter().any(|s| !(0.0..=1.0).contains(s)) || (sum - 1.0).abs() > 1e-6 {
            return Some(format!("{}: shares do not sum to 1 ({sum})", self.name));
        }
        if !(self.min.is_finite() && self.max.is_finite() && self.min <= self.max) {
            return Some(format!("{}: bad range", self.name));
        }
        None
    }
}

/// The bin of `v` among ascending `edges`: the number of edges below it.
#[inline]
fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|&e| e < v)
}

impl Reference {
    /// The reference of a training matrix `x` (row-major, `names.len()` columns) and of
    /// the scores of rows not trained on (`score_source`: where they come from).
    #[must_use]
    pub fn fit(names: &[String], x: &[f32], scores: &[f32], score_source: &str) -> Self {
        Self::fit_features(names, x).with_scores(scores, score_source)
    }

    /// The features' part of [`Reference::fit`]: the scores come later
    /// ([`Reference::with_scores`]), so the matrix need not outlive training.
    #[must_use]
    pub fn fit_features(names: &[String], x: &[f32]) -> Self {
        let k = names.len().max(1);
        let rows = x.len() / k;
        let features = names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let column = (0..rows).map(move |i| x[i * k + j]);
                Distribution::fit(name, column, FEATURE_BINS)
            })
            .collect();
        Self {
            features,
            score_source: None,
            score: None,
        }
    }

    /// With the distribution of `scores` (none when empty), of rows not trained on
    /// (`score_source`: where they come from).
    #[must_use]
    pub fn with_scores(self, scores: &[f32], score_source: &str) -> Self {
        let score = (!scores.is_empty())
            .then(|| Distribution::fit("score", scores.iter().copied(), SCORE_BINS));
        Self {
            score_source: score.as_ref().map(|_| score_source.to_owned()),
            score,
            ..self
        }
    }

    /// Check it against the model's features (in order): a reference that does not fit
    /// them is refused with the reason.
    pub fn check(&self, features: &[String]) -> Result<(), String> {
        let names: Vec<&str> = self.features.iter().map(|d| d.name.as_str()).collect();
        if names != features.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!(
                "the reference describes [{}], the model uses [{}]",
                names.join(", "),
                features.join(", ")
            ));
        }
        match self
            .features
            .iter()
            .chain(self.score.as_ref())
            .find_map(Distribution::problem)
        {
            Some(p) => Err(format!("reference {p}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_of_a_spread_and_of_a_mostly_zero_feature() {
        let spread: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let d = Distribution::fit("a", spread.iter().copied(), 10);
        assert_eq!(d.edges.len(), 9);
        assert!(
            d.shares.iter().all(|&s| (s - 0.1).abs() < 0.002),
            "{:?}",
            d.shares
        );
        assert_eq!((d.min, d.max), (0.0, 999.0));

        // 90% zeros: the zero gets a bin of its own, the rest split the remainder.
        let mostly: Vec<f32> = (0..1000)
            .map(|i| if i < 900 { 0.0 } else { i as f32 })
            .collect();
        let d = Distribution::fit("b", mostly.iter().copied(), 10);
        assert_eq!(d.bin(0.0), 0);
        assert!((d.shares[0] - 0.9).abs() < 1e-9, "{:?}", d.shares);
        assert!((d.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);

        // A constant: one bin, everything in it.
        let d = Distribution::fit("c", std::iter::repeat_n(3.0f32, 50), 10);
        assert!(d.edges.is_empty());
        assert_eq!(d.shares, vec![1.0]);
        assert!(d.out_of_range(3.5) && !d.out_of_range(3.0));
    }

    #[test]
    fn missing_values_are_counted_apart() {
        let v = [1.0, f32::NAN, 2.0, 3.0];
        let d = Distribution::fit("a", v.iter().copied(), 10);
        assert!((d.missing - 0.25).abs() < 1e-12);
        assert!((d.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_reference_fits_its_model_or_is_refused() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let x: Vec<f32> = (0..200).map(|i| (i % 37) as f32).collect();
        let scores: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
        let r = Reference::fit(&names, &x, &scores, "holdout");
        assert!(r.check(&names).is_ok());
        assert!(r.check(&["b".to_owned(), "a".to_owned()]).is_err());
        let mut bad = r.clone();
        bad.features[1].shares[0] += 0.5;
        assert!(bad.check(&names).unwrap_err().contains("sum to 1"));
        let mut wide = r.clone();
        wide.features[0].edges = (0..1000).map(f64::from).collect();
        wide.features[0].shares = vec![1.0 / 1001.0; 1001];
        assert!(wide.check(&names).unwrap_err().contains("at most 255"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
    }
}
