//! Comparing two models on the same rows: the difference of their average precisions,
//! with a paired bootstrap interval.
//!
//! Each resample draws the rows with replacement (the same draw for both models, so the
//! interval reflects how the *difference* varies, not each score's own noise) and
//! recomputes both average precisions with the draw's multiplicities as weights. Each
//! model's rows are sorted by score once; a resample then costs one pass per model.

use serde::{Deserialize, Serialize};

use super::metrics::{UNWEIGHTED, Weights};
use crate::rng::Rng;

/// The difference `a − b` of two models' average precisions on the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApDifference {
    /// Average precision of `a` on every row.
    pub a: f64,
    /// Average precision of `b` on every row.
    pub b: f64,
    /// `a − b`.
    pub difference: f64,
    /// Lower bound of the interval (percentile bootstrap).
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Coverage of the interval, e.g. 0.95.
    pub confidence: f64,
    /// Resamples drawn (those without a fraud are skipped and not counted).
    pub resamples: usize,
}

/// One model's rows ordered by descending score, with the ends of tied groups marked.
struct Ranked {
    order: Vec<u32>,
    /// `true` at the last row of a group of equal scores.
    group_end: Vec<bool>,
}

impl Ranked {
    fn new(scores: &[f32]) -> Self {
        let mut order: Vec<u32> = (0..scores.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
        let group_end = (0..order.len())
            .map(|k| {
                order
                    .get(k + 1)
                    .is_none_or(|&j| scores[j as usize] != scores[order[k] as usize])
            })
            .collect();
        Self { order, group_end }
    }

    /// Average precision (scikit-learn's step definition, ties as one threshold) with row
    /// `i` counted `weights[i]` times, and standing for `base` rows (a sample's
    /// [`Weights`]). `None` without a weighted positive.
    fn average_precision(&self, labels: &[u8], weights: &[u32], base: Weights<'_>) -> Option<f64> {
        let p: f64 = labels
            .iter()
            .zip(weights)
            .enumerate()
            .filter(|&(_, (&l, &w))| l == 1 && w > 0)
            .map(|(i, (&l, &w))| f64::from(w) * base.of(i, l))
            .sum();
        if p <= 0.0 {
            return None;
        }
        let (mut tp, mut fp) = (0.0, 0.0);
        let (mut ap, mut prev_recall) = (0.0, 0.0);
        for (&i, &end) in self.order.iter().zip(&self.group_end) {
            let (i, l) = (i as usize, labels[i as usize]);
            let w = f64::from(weights[i]) * base.of(i, l);
            if l == 1 {
                tp += w;
            } else {
                fp += w;
            }
            if end && tp + fp > 0.0 {
                let recall = tp / p;
                ap += (recall - prev_recall) * (tp / (tp + fp));
                prev_recall = recall;
            }
        }
        Some(ap)
    }
}

/// Average precision of `a` minus that of `b` on the same `labels`, with a paired
/// percentile-bootstrap interval of the given `confidence` from `resamples` draws.
/// `None` when the rows hold no fraud (the difference is undefined).
///
/// # Panics
/// If the three slices differ in length.
#[must_use]
pub fn ap_difference(
    a: &[f32],
    b: &[f32],
    labels: &[u8],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<ApDifference> {
    ap_difference_weighted(a, b, labels, UNWEIGHTED, resamples, confidence, seed)
}

/// [`ap_difference`] on a sample whose rows stand for `class` rows each: both average
/// precisions are the population's.
///
/// # Panics
/// If the three slices (or per-row weights) differ in length.
#[must_use]
pub fn ap_difference_weighted<'a>(
    a: &[f32],
    b: &[f32],
    labels: &[u8],
    class: impl Into<Weights<'a>>,
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<ApDifference> {
    assert!(a.len() == labels.len() && b.len() == labels.len());
    let class = class.into();
    class.check(labels.len());
    let (ra, rb) = (Ranked::new(a), Ranked::new(b));
    let ones = vec![1u32; labels.len()];
    let ap_a = ra.average_precision(labels, &ones, class)?;
    let ap_b = rb.average_precision(labels, &ones, class)?;
    let n = labels.len();
    let mut rng = Rng::derive(seed, 0xb007);
    let mut weights = vec![0u32; n];
    let mut diffs = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        weights.fill(0);
        for _ in 0..n {
            weights[rng.below(n)] += 1;
        }
        if let (Some(x), Some(y)) = (
            ra.average_precision(labels, &weights, class),
            rb.average_precision(labels, &weights, class),
        ) {
            diffs.push(x - y);
        }
    }
    diffs.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| -> f64 {
        if diffs.is_empty() {
            return ap_a - ap_b;
        }
        let k = (q * (diffs.len() - 1) as f64).round() as usize;
        diffs[k.min(diffs.len() - 1)]
    };
    Some(ApDifference {
        a: ap_a,
        b: ap_b,
        difference: ap_a - ap_b,
        low: at(tail),
        high: at(1.0 - tail),
        confidence,
        resamples: diffs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluate;

    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        let mut rng = Rng::new(seed);
        let labels: Vec<u8> = (0..n).map(|_| u8::from(rng.unit() < 0.05)).collect();
        // `good` separates the classes well, `weak` barely.
        let good = labels
            .iter()
            .map(|&l| (f64::from(l) * 0.3 + rng.unit() * 0.5) as f32)
            .collect();
        let weak = labels
            .iter()
            .map(|&l| (f64::from(l) * 0.1 + rng.unit() * 0.9) as f32)
            .collect();
        (good, weak, labels)
    }

    #[test]
    fn unit_weights_give_the_metrics_average_precision() {
        let (good, weak, labels) = data(3000, 1);
        // Round scores so that ties occur.
        let tied: Vec<f32> = weak.iter().map(|s| (s * 20.0).round() / 20.0).collect();
        let d = ap_difference(&good, &tied, &labels, 10, 0.95, 7).unwrap();
        let ap = |s: &[f32]| evaluate(s, &labels, 0.5).auprc.unwrap();
        assert!((d.a - ap(&good)).abs() < 1e-12, "{} vs {}", d.a, ap(&good));
        assert!((d.b - ap(&tied)).abs() < 1e-12, "{} vs {}", d.b, ap(&tied));
    }

    #[test]
    fn class_weights_give_the_weighted_metrics_average_precision() {
        let (good, weak, labels) = data(3000, 4);
        let tied: Vec<f32> = weak.iter().map(|s| (s * 20.0).round() / 20.0).collect();
        // A sample of one legitimate row in 9.5.
        let class = [9.5, 1.0];
        let d = ap_difference_weighted(&good, &tied, &labels, class, 10, 0.95, 7).unwrap();
        let ap = |s: &[f32]| {
            crate::eval::evaluate_weighted(s, &labels, 0.5, class)
                .auprc
                .unwrap()
        };
        assert!((d.a - ap(&good)).abs() < 1e-12, "{} vs {}", d.a, ap(&good));
        assert!((d.b - ap(&tied)).abs() < 1e-12, "{} vs {}", d.b, ap(&tied));
        // Weighting the legitimate rows up lowers precision, so average precision.
        let plain = ap_difference(&good, &tied, &labels, 10, 0.95, 7).unwrap();
        assert!(d.a < plain.a && d.b < plain.b);
    }

    #[test]
    fn row_weights_equal_to_the_class_weights_give_the_same_results() {
        let (good, weak, labels) = data(3000, 5);
        let class = [9.5, 1.0];
        let rows: Vec<f64> = labels.iter().map(|&l| class[usize::from(l)]).collect();
        let rows = Weights::Rows(&rows);
        let by_class = ap_difference_weighted(&good, &weak, &labels, class, 50, 0.95, 7);
        let by_row = ap_difference_weighted(&good, &weak, &labels, rows, 50, 0.95, 7);
        assert_eq!(by_class, by_row);
        let m = |w: Weights<'_>| crate::eval::evaluate_weighted(&good, &labels, 0.6, w);
        let (c, r) = (m(Weights::Class(class)), m(rows));
        assert_eq!((c.tp, c.fp, c.fn_), (r.tp, r.fp, r.fn_));
        for (x, y) in [
            (c.precision, r.precision),
            (c.recall, r.recall),
            (c.f1, r.f1),
            (c.auprc.unwrap(), r.auprc.unwrap()),
            (c.roc_auc.unwrap(), r.roc_auc.unwrap()),
        ] {
            assert!((x - y).abs() < 1e-9, "{c:?} {r:?}");
        }
        let amounts: Vec<f64> = (0..labels.len()).map(|i| (i % 97) as f64).collect();
        for s in [
            crate::eval::ThresholdStrategy::MaxF1,
            crate::eval::ThresholdStrategy::Precision(0.5),
            crate::eval::ThresholdStrategy::Cost {
                fraud: 10.0,
                review: 2.0,
            },
        ] {
            assert_eq!(
                s.choose_weighted(&good, &labels, &amounts, class),
                s.choose_weighted(&good, &labels, &amounts, rows),
                "{s:?}"
            );
        }
    }

    #[test]
    fn row_weights_count_each_row_for_its_own_weight() {
        // Two legitimate rows above the threshold: one stands for 1 row, one for 9.
        let scores = [0.9_f32, 0.8, 0.7, 0.1];
        let labels = [1, 0, 0, 1];
        let rows = [2.0, 1.0, 9.0, 2.0];
        let m = crate::eval::evaluate_weighted(&scores, &labels, 0.5, Weights::Rows(&rows));
        assert!((m.precision - 2.0 / 12.0).abs() < 1e-12, "{m:?}");
        assert!((m.recall - 0.5).abs() < 1e-12, "{m:?}");
        assert_eq!((m.tp, m.fp, m.fn_, m.tn), (1, 2, 1, 0));
    }

    #[test]
    fn the_interval_brackets_the_difference_and_tells_models_apart() {
        let (good, weak, labels) = data(4000, 2);
        let d = ap_difference(&good, &weak, &labels, 400, 0.95, 3).unwrap();
        assert!(d.low <= d.difference && d.difference <= d.high, "{d:?}");
        assert!(d.low > 0.0, "a clearly better model: {d:?}");
        // A model against itself: the difference and its interval are exactly zero.
        let same = ap_difference(&good, &good, &labels, 100, 0.95, 3).unwrap();
        assert_eq!((same.low, same.high, same.difference), (0.0, 0.0, 0.0));
        // Two models of equal quality with independent noise: the interval straddles zero
        // (both are drawn the same way; only the noise differs).
        let mut rng = Rng::new(9);
        let twin: Vec<f32> = labels
            .iter()
            .map(|&l| (f64::from(l) * 0.3 + rng.unit() * 0.5) as f32)
            .collect();
        let close = ap_difference(&good, &twin, &labels, 400, 0.95, 3).unwrap();
        assert!(close.low < 0.0 && close.high > 0.0, "{close:?}");
    }

    #[test]
    fn no_fraud_means_no_comparison() {
        assert!(ap_difference(&[0.1, 0.2], &[0.3, 0.4], &[0, 0], 10, 0.95, 1).is_none());
    }
}
