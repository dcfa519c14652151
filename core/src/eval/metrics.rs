//! Ranking and threshold metrics for binary fraud scores.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Metrics of a set of scores against labels. Ranking metrics are `None` when only one
/// class is present (they are undefined then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Frauds among them.
    pub frauds: usize,
    /// Area under the precision-recall curve, as average precision
    /// (scikit-learn's `average_precision_score`).
    pub auprc: Option<f64>,
    /// Area under the ROC curve.
    pub roc_auc: Option<f64>,
    /// Highest recall at any threshold whose precision is at least 0.90.
    pub recall_at_precision_90: Option<f64>,
    /// The decision threshold: scores at or above it (compared in `f32`, the score type) are
    /// flagged.
    pub threshold: f64,
    /// Precision at the threshold (1.0 when nothing is flagged).
    pub precision: f64,
    /// Recall at the threshold (0.0 when there are no frauds).
    pub recall: f64,
    /// F1 at the threshold.
    pub f1: f64,
    /// True positives at the threshold.
    pub tp: usize,
    /// False positives at the threshold.
    pub fp: usize,
    /// True negatives at the threshold.
    pub tn: usize,
    /// False negatives at the threshold.
    pub fn_: usize,
}

/// Weights per class: how many rows each row of a class stands for (`[legitimate,
/// fraud]`). Rows sampled at a rate `r` weigh `1 / r`, so precision, average precision and
/// the thresholds chosen on a sample are those of the rows it was drawn from.
pub type ClassWeights = [f64; 2];

/// Every row counts once.
pub const UNWEIGHTED: ClassWeights = [1.0, 1.0];

/// What each row of a sample stands for: one weight per class (a sample that kept each
/// class at one rate), or one per row (a sample whose rates differ within a class, such
/// as one stratified by time, `retrain.sample_bucket`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weights<'a> {
    /// A row of class `c` stands for `w[c]` rows.
    Class(ClassWeights),
    /// Row `i` stands for `w[i]` rows (one per scored row, in the same order).
    Rows(&'a [f64]),
}

impl<'a> Weights<'a> {
    /// The weight of row `i`, of class `label`.
    #[must_use]
    pub fn of(&self, i: usize, label: u8) -> f64 {
        match self {
            Self::Class(w) => w[usize::from(label == 1)],
            Self::Rows(w) => w[i],
        }
    }

    /// Per-row weights when there are any, else the class weights (`None`: unweighted).
    #[must_use]
    pub fn rows_or(rows: Option<&'a [f64]>, class: Option<ClassWeights>) -> Self {
        rows.map_or(Self::Class(class.unwrap_or(UNWEIGHTED)), Self::Rows)
    }

    /// Check that per-row weights cover the `rows` scored.
    pub(crate) fn check(&self, rows: usize) {
        if let Self::Rows(w) = self {
            assert_eq!(w.len(), rows, "one weight per scored row");
        }
    }
}

impl From<ClassWeights> for Weights<'_> {
    fn from(w: ClassWeights) -> Self {
        Self::Class(w)
    }
}

/// The precision-recall and ROC curve of scores against labels: per distinct score,
/// descending, the weighted true and false positives at that threshold.
struct Curve {
    points: Vec<(f64, f64, f64)>,
    positives: f64,
    negatives: f64,
    /// Frauds, unweighted.
    frauds: usize,
}

impl Curve {
    fn new(scores: &[f32], labels: &[u8]) -> Self {
        Self::weighted(scores, labels, Weights::Class(UNWEIGHTED))
    }

    fn weighted(scores: &[f32], labels: &[u8], w: Weights<'_>) -> Self {
        w.check(scores.len());
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut points = Vec::new();
        let (mut tp, mut fp, mut frauds) = (0.0, 0.0, 0);
        for (k, &i) in order.iter().enumerate() {
            if labels[i] == 1 {
                tp += w.of(i, 1);
                frauds += 1;
            } else {
                fp += w.of(i, 0);
            }
            let last_of_group = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
            if last_of_group {
                points.push((f64::from(scores[i]), tp, fp));
            }
        }
        Self {
            points,
            positives: tp,
            negatives: fp,
            frauds,
        }
    }

    fn average_precision(&self) -> Option<f64> {
        if self.frauds == 0 {
            return None;
        }
        let p = self.positives;
        let mut ap = 0.0;
        let mut prev_recall = 0.0;
        for &(_, tp, fp) in &self.points {
            let recall = tp / p;
            let precision = tp / (tp + fp);
            ap += (recall - prev_recall) * precision;
            prev_recall = recall;
        }
        Some(ap)
    }

    fn roc_auc(&self) -> Option<f64> {
        if self.frauds == 0 || self.negatives == 0.0 {
            return None;
        }
        let (p, n) = (self.positives, self.negatives);
        let mut auc = 0.0;
        let (mut prev_tpr, mut prev_fpr) = (0.0, 0.0);
        for &(_, tp, fp) in &self.points {
            let (tpr, fpr) = (tp / p, fp / n);
            auc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
            (prev_tpr, prev_fpr) = (tpr, fpr);
        }
        Some(auc)
    }

    /// Best recall among thresholds with precision >= `floor`, with that threshold.
    fn recall_at_precision(&self, floor: f64) -> Option<(f64, f64)> {
        if self.frauds == 0 {
            return None;
        }
        let mut best: Option<(f64, f64)> = None;
        for &(s, tp, fp) in &self.points {
            let precision = tp / (tp + fp);
            if tp > 0.0 && precision >= floor {
                let recall = tp / self.positives;
                if best.is_none_or(|(r, _)| recall > r) {
                    best = Some((recall, s));
                }
            }
        }
        Some(best.unwrap_or((0.0, f64::INFINITY)))
    }

    /// The threshold (a score present in the data) with the highest F1.
    fn max_f1(&self) -> Option<f64> {
        let p = self.positives;
        self.points
            .iter()
            .filter(|(_, tp, _)| *tp > 0.0)
            .map(|&(s, tp, fp)| (s, 2.0 * tp / (p + tp + fp)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)))
            .map(|(s, _)| s)
    }

    /// Points for plotting the precision-recall curve: (recall, precision).
    fn pr_points(&self) -> Vec<(f64, f64)> {
        let p = if self.positives > 0.0 {
            self.positives
        } else {
            1.0
        };
        let mut v = vec![(0.0, 1.0)];
        v.extend(
            self.points
                .iter()
                .map(|&(_, tp, fp)| (tp / p, tp / (tp + fp))),
        );
        v
    }

    /// Points for plotting the ROC curve: (false positive rate, true positive rate).
    fn roc_points(&self) -> Vec<(f64, f64)> {
        let p = if self.positives > 0.0 {
            self.positives
        } else {
            1.0
        };
        let n = if self.negatives > 0.0 {
            self.negatives
        } else {
            1.0
        };
        let mut v = vec![(0.0, 0.0)];
        v.extend(self.points.iter().map(|&(_, tp, fp)| (fp / n, tp / p)));
        v
    }
}

/// Average precision, as scikit-learn's `average_precision_score`:
/// Σ (Rₙ − Rₙ₋₁) · Pₙ over distinct score thresholds, highest first. `None` without
/// positives.
#[must_use]
pub fn average_precision(scores: &[f32], labels: &[u8]) -> Option<f64> {
    Curve::new(scores, labels).average_precision()
}

/// Area under the ROC curve (trapezoidal, ties handled as one step). `None` unless both
/// classes are present.
#[must_use]
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Option<f64> {
    Curve::new(scores, labels).roc_auc()
}

/// Highest recall at a threshold whose precision is at least `floor` (0 if none is).
#[must_use]
pub fn recall_at_precision(scores: &[f32], labels: &[u8], floor: f64) -> Option<f64> {
    Curve::new(scores, labels)
        .recall_at_precision(floor)
        .map(|(r, _)| r)
}

/// Precision-recall curve points (recall, precision) for plotting.
#[must_use]
pub fn pr_curve(scores: &[f32], labels: &[u8]) -> Vec<(f64, f64)> {
    Curve::new(scores, labels).pr_points()
}

/// ROC curve points (false positive rate, true positive rate) for plotting.
#[must_use]
pub fn roc_curve(scores: &[f32], labels: &[u8]) -> Vec<(f64, f64)> {
    Curve::new(scores, labels).roc_points()
}

/// How a model's decision threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ThresholdStrategy {
    /// The score that maximises F1.
    MaxF1,
    /// The lowest score whose precision reaches the target (highest recall there).
    Precision(f64),
    /// A fixed threshold.
    Fixed(f64),
    /// The threshold with the least expected cost: every flagged transaction costs
    /// `review` (an analyst's look, a declined good customer), and every fraud missed
    /// costs its `Amount` plus `fraud` (the chargeback fee and handling).
    Cost {
        /// Cost of a missed fraud on top of its amount.
        fraud: f64,
        /// Cost of flagging a transaction.
        review: f64,
    },
}

impl fmt::Display for ThresholdStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxF1 => f.write_str("f1"),
            Self::Precision(p) => write!(f, "precision:{p}"),
            Self::Fixed(t) => write!(f, "fixed:{t}"),
            Self::Cost { fraud, review } => write!(f, "cost:{fraud}:{review}"),
        }
    }
}

impl FromStr for ThresholdStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid threshold strategy {s:?}: use f1, precision:P, fixed:T or cost:FRAUD_COST:REVIEW_COST"
            )
        };
        if let Some(costs) = s.trim().strip_prefix("cost:") {
            let cost = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c >= 0.0)
                    .ok_or_else(bad)
            };
            let (fraud, review) = costs.split_once(':').ok_or_else(bad)?;
            return Ok(Self::Cost {
                fraud: cost(fraud)?,
                review: cost(review)?,
            });
        }
        let in_unit = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(bad)
        };
        match s.trim().split_once(':') {
            None if s.trim() == "f1" => Ok(Self::MaxF1),
            Some(("precision", v)) => in_unit(v).map(Self::Precision),
            Some(("fixed", v)) => in_unit(v).map(Self::Fixed),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for ThresholdStrategy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ThresholdStrategy> for String {
    fn from(t: ThresholdStrategy) -> Self {
        t.to_string()
    }
}

impl ThresholdStrategy {
    /// Choose a threshold on labelled scores. Falls back to 0.5 when the data cannot
    /// support the choice (no frauds, or the precision target is never reached).
    /// [`ThresholdStrategy::Cost`] counts every amount as 0 here: see
    /// [`ThresholdStrategy::choose_with_amounts`].
    #[must_use]
    pub fn choose(self, scores: &[f32], labels: &[u8]) -> f64 {
        self.choose_with_amounts(scores, labels, &[])
    }

    /// [`ThresholdStrategy::choose`], with each row's amount at risk (`amounts` empty:
    /// 0 each).
    #[must_use]
    pub fn choose_with_amounts(self, scores: &[f32], labels: &[u8], amounts: &[f64]) -> f64 {
        self.choose_weighted(scores, labels, amounts, UNWEIGHTED)
    }

    /// [`ThresholdStrategy::choose_with_amounts`] on a sample whose rows stand for
    /// `weights` rows each, so precision and cost are the population's.
    #[must_use]
    pub fn choose_weighted<'a>(
        self,
        scores: &[f32],
        labels: &[u8],
        amounts: &[f64],
        weights: impl Into<Weights<'a>>,
    ) -> f64 {
        let weights = weights.into();
        if let Self::Cost { fraud, review } = self {
            return least_cost_weighted(scores, labels, amounts, fraud, review, weights).0;
        }
        let curve = Curve::weighted(scores, labels, weights);
        match self {
            Self::Cost { .. } => unreachable!("handled above"),
            Self::Fixed(t) => t,
            Self::MaxF1 => curve.max_f1().unwrap_or(0.5),
            Self::Precision(p) => match curve.recall_at_precision(p) {
                Some((r, t)) if r > 0.0 => t,
                _ => 0.5,
            },
        }
    }
}

/// The threshold whose flagging (`score >= threshold`) costs least, and that cost: each
/// flagged row costs `review`, each fraud not flagged its amount plus `fraud`. Ties go
/// to the higher threshold (fewer rows flagged). Flagging nothing is a candidate (the
/// threshold is then just above the highest score).
#[must_use]
pub fn least_cost(
    scores: &[f32],
    labels: &[u8],
    amounts: &[f64],
    fraud: f64,
    review: f64,
) -> (f64, f64) {
    least_cost_weighted(scores, labels, amounts, fraud, review, UNWEIGHTED)
}

/// [`least_cost`] on a sample whose rows stand for `weights` rows each.
#[must_use]
pub fn least_cost_weighted<'a>(
    scores: &[f32],
    labels: &[u8],
    amounts: &[f64],
    fraud: f64,
    review: f64,
    weights: impl Into<Weights<'a>>,
) -> (f64, f64) {
    let weights = weights.into();
    weights.check(scores.len());
    let weight = |i: usize| weights.of(i, labels[i]);
    let loss = |i: usize| {
        if labels[i] == 1 {
            (amounts.get(i).copied().unwrap_or(0.0) + fraud) * weight(i)
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let missed_all: f64 = (0..scores.len()).map(loss).sum();
    let top = order.first().map_or(1.0, |&i| f64::from(scores[i]));
    // Flag nothing: a threshold just above the highest score.
    let mut best = (next_above(top), missed_all);
    let (mut flagged, mut caught) = (0.0, 0.0);
    let mut k = 0;
    while k < order.len() {
        // Every row with this score is flagged together.
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            flagged += weight(order[k]);
            caught += loss(order[k]);
            k += 1;
        }
        let cost = review * flagged + (missed_all - caught);
        if cost < best.1 {
            best = (f64::from(s), cost);
        }
    }
    best
}

/// The next `f32` above the score `x`, at most 1 (a threshold is a probability): a
/// threshold that flags nothing at or below `x` (below 1).
fn next_above(x: f64) -> f64 {
    f64::from(f32::from_bits((x as f32).to_bits() + 1)).min(1.0)
}

/// All metrics of `scores` against `labels`, flagging scores `>= threshold`.
///
/// # Panics
/// If `scores` and `labels` differ in length.
#[must_use]
pub fn evaluate(scores: &[f32], labels: &[u8], threshold: f64) -> Metrics {
    evaluate_weighted(scores, labels, threshold, UNWEIGHTED)
}

/// [`evaluate`] on a sample whose rows stand for `weights` rows each: the counts are the
/// sample's, the rates and curves the population's.
///
/// # Panics
/// If `scores` and `labels` (or per-row `weights`) differ in length.
#[must_use]
pub fn evaluate_weighted<'a>(
    scores: &[f32],
    labels: &[u8],
    threshold: f64,
    weights: impl Into<Weights<'a>>,
) -> Metrics {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let weights = weights.into();
    let curve = Curve::weighted(scores, labels, weights);
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    let (mut wtp, mut wfp, mut wfn) = (0.0, 0.0, 0.0);
    for (i, (&s, &l)) in scores.iter().zip(labels).enumerate() {
        let w = weights.of(i, l);
        match (s >= threshold as f32, l == 1) {
            (true, true) => (tp, wtp) = (tp + 1, wtp + w),
            (true, false) => (fp, wfp) = (fp + 1, wfp + w),
            (false, false) => tn += 1,
            (false, true) => (fn_, wfn) = (fn_ + 1, wfn + w),
        }
    }
    let precision = if tp + fp == 0 { 1.0 } else { wtp / (wtp + wfp) };
    let recall = if tp + fn_ == 0 {
        0.0
    } else {
        wtp / (wtp + wfn)
    };
    let f1 = if tp == 0 {
        0.0
    } else {
        2.0 * wtp / (2.0 * wtp + wfp + wfn)
    };
    Metrics {
        rows: scores.len(),
        frauds: curve.frauds,
        auprc: curve.average_precision(),
        roc_auc: curve.roc_auc(),
        recall_at_precision_90: curve.recall_at_precision(0.9).map(|(r, _)| r),
        threshold,
        precision,
        recall,
        f1,
        tp,
        fp,
        tn,
        fn_,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn average_precision_matches_sklearn_example() {
        // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333…
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap();
        close(ap, 0.833_333_333_333_333_4);
    }

    #[test]
    fn roc_auc_matches_sklearn_example() {
        // sklearn docs: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75
        close(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap(),
            0.75,
        );
    }

    #[test]
    fn ties_are_one_threshold() {
        // Scores: 0.9 (pos), 0.5 (pos), 0.5 (neg), 0.1 (neg).
        // Thresholds: 0.9 -> R=.5,P=1 ; 0.5 -> R=1,P=2/3 ; AP = .5*1 + .5*(2/3) = 0.8333…
        let s = [0.9, 0.5, 0.5, 0.1];
        let l = [1, 1, 0, 0];
        close(average_precision(&s, &l).unwrap(), 0.5 + 0.5 * 2.0 / 3.0);
        // ROC points (0,.5) -> (.5,1) -> (1,1): area = .5*.75 + .5*1 = 0.875
        close(roc_auc(&s, &l).unwrap(), 0.875);
        // All scores tied: AP is the positive rate, AUC 0.5.
        close(average_precision(&[0.3; 4], &l).unwrap(), 0.5);
        close(roc_auc(&[0.3; 4], &l).unwrap(), 0.5);
    }

    #[test]
    fn recall_at_precision_floor() {
        // Ranked: 1 1 0 1 0 0: precision at k=2 is 1 (recall 2/3); at k=4 is 3/4.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let l = [1, 1, 0, 1, 0, 0];
        close(recall_at_precision(&s, &l, 0.9).unwrap(), 2.0 / 3.0);
        close(recall_at_precision(&s, &l, 0.75).unwrap(), 1.0);
        close(recall_at_precision(&[0.9, 0.1], &[0, 1], 0.9).unwrap(), 0.0);
    }

    #[test]
    fn confusion_at_threshold() {
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let l = [1, 1, 0, 1, 0, 0];
        let m = evaluate(&s, &l, 0.7);
        assert_eq!((m.tp, m.fp, m.tn, m.fn_), (2, 1, 2, 1));
        close(m.precision, 2.0 / 3.0);
        close(m.recall, 2.0 / 3.0);
        close(m.f1, 2.0 / 3.0);
        assert_eq!((m.rows, m.frauds), (6, 3));
    }

    #[test]
    fn threshold_strategies() {
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let l = [1, 1, 0, 1, 0, 0];
        // F1 at 0.8: 2*2/(3+2)=0.8 ; at 0.6: 2*3/(3+4)=0.857 -> 0.6
        close(ThresholdStrategy::MaxF1.choose(&s, &l), 0.6000000238418579);
        close(
            ThresholdStrategy::Precision(0.9).choose(&s, &l),
            0.800000011920929,
        );
        close(ThresholdStrategy::Fixed(0.3).choose(&s, &l), 0.3);
        close(ThresholdStrategy::MaxF1.choose(&s, &[0; 6]), 0.5);
    }

    #[test]
    fn single_class_metrics_are_none() {
        let m = evaluate(&[0.1, 0.2], &[0, 0], 0.5);
        assert_eq!(m.auprc, None);
        assert_eq!(m.roc_auc, None);
        let m = evaluate(&[0.1, 0.2], &[1, 1], 0.5);
        assert_eq!(m.roc_auc, None);
        close(m.auprc.unwrap(), 1.0);
    }

    #[test]
    fn strategy_parse_round_trip() {
        for s in ["f1", "precision:0.9", "fixed:0.35"] {
            assert_eq!(s.parse::<ThresholdStrategy>().unwrap().to_string(), s);
        }
        assert!("precision:2".parse::<ThresholdStrategy>().is_err());
        assert!("max".parse::<ThresholdStrategy>().is_err());
    }

    #[test]
    fn the_least_cost_threshold_weighs_amounts_against_reviews() {
        // Scores high to low: a big fraud, a legitimate row, a small fraud, a legitimate row.
        let scores = [0.9, 0.7, 0.6, 0.1];
        let labels = [1, 0, 1, 0];
        let amounts = [500.0, 10.0, 3.0, 10.0];
        let top = f64::from(0.9_f32);
        // Reviews at 5: flagging the big fraud pays; reaching the small one takes three
        // reviews (15) to save 3 + 1.
        assert_eq!(
            least_cost(&scores, &labels, &amounts, 1.0, 5.0),
            (top, 5.0 + 3.0 + 1.0)
        );
        // Reviews cheap: flag down to the small fraud.
        let (t, c) = least_cost(&scores, &labels, &amounts, 10.0, 1.0);
        assert_eq!((t, c), (f64::from(0.6_f32), 3.0));
        // Reviews dear: flagging the big fraud still pays.
        let (t, c) = least_cost(&scores, &labels, &amounts, 0.0, 100.0);
        assert_eq!((t, c), (top, 100.0 + 3.0));
        // Reviews dearer than every loss: flag nothing, just above the top score.
        let (t, c) = least_cost(&scores, &labels, &amounts, 0.0, 1_000.0);
        assert!(t > 0.9 && t < 0.9001, "{t}");
        assert_eq!(c, 503.0);
        // The strategy parses, prints and chooses the same.
        let s: ThresholdStrategy = "cost:1:5".parse().unwrap();
        assert_eq!(
            s,
            ThresholdStrategy::Cost {
                fraud: 1.0,
                review: 5.0
            }
        );
        assert_eq!(s.to_string().parse::<ThresholdStrategy>().unwrap(), s);
        assert_eq!(s.choose_with_amounts(&scores, &labels, &amounts), top);
        assert!("cost:1".parse::<ThresholdStrategy>().is_err());
        assert!("cost:-1:5".parse::<ThresholdStrategy>().is_err());
    }
}
