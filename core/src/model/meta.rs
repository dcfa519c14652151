//! Model metadata.

use serde::{Deserialize, Serialize};

use crate::eval::{Metrics, SplitKind, ThresholdStrategy};
use crate::forest::TrainParams;

/// How the training data was split, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// The kind of split.
    pub kind: SplitKind,
    /// Fraction held out.
    pub test_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
}

/// The span of `Time` values a model trained on: rows outside it are rows it never saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeWindow {
    /// Earliest `Time` among the training rows.
    pub first: f64,
    /// Latest `Time` among the training rows.
    pub last: f64,
}

impl TimeWindow {
    /// The window of some `Time` values (`None` when there are none, or none is finite).
    #[must_use]
    pub fn of(times: impl IntoIterator<Item = f64>) -> Option<Self> {
        times
            .into_iter()
            .filter(|t| t.is_finite())
            .fold(None, |w: Option<Self>, t| {
                Some(w.map_or(Self { first: t, last: t }, |w| Self {
                    first: w.first.min(t),
                    last: w.last.max(t),
                }))
            })
    }

    /// Whether `t` is inside the window (bounds included).
    #[must_use]
    pub fn contains(&self, t: f64) -> bool {
        (self.first..=self.last).contains(&t)
    }
}

/// Everything a model file says about itself besides the trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// Model version: creation time plus a short digest, unique per training run.
    pub version: String,
    /// The fraudstream version that trained it.
    pub fraudstream_version: String,
    /// RFC 3339 creation time (UTC).
    pub created_at: String,
    /// Input feature names, in the order the forest indexes them.
    pub features: Vec<String>,
    /// Hyper-parameters.
    pub params: TrainParams,
    /// Scores at or above this are fraud.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_strategy: ThresholdStrategy,
    /// Which scores the threshold was chosen on: `oob`, `holdout` or `none`.
    pub threshold_source: String,
    /// Out-of-bag metrics on the training rows (when the forest has out-of-bag rows).
    pub oob_metrics: Option<Metrics>,
    /// Metrics on the held-out rows (when there were any).
    pub holdout_metrics: Option<Metrics>,
    /// The split used.
    pub split: SplitInfo,
    /// SHA-256 over the training features and labels, in training order.
    pub data_fingerprint: String,
    /// The entity-feature spec, when the model uses entity features: a detector must
    /// compute the same ones to serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<crate::velocity::VelocitySpec>,
    /// The `Time` span of the training rows (absent in models trained before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_window: Option<TimeWindow>,
    /// Training rows.
    pub train_rows: usize,
    /// Frauds among the training rows.
    pub train_frauds: usize,
    /// Where the training data came from.
    pub source: String,
    /// Impurity-based importances, one per feature, summing to 1.
    pub feature_importances: Vec<f64>,
    /// Wall-clock seconds spent growing the forest.
    pub train_seconds: f64,
}

impl ModelMeta {
    /// The metrics to report for this model: the holdout's, else out-of-bag.
    #[must_use]
    pub fn headline_metrics(&self) -> Option<(&'static str, &Metrics)> {
        self.holdout_metrics
            .as_ref()
            .map(|m| ("holdout", m))
            .or_else(|| self.oob_metrics.as_ref().map(|m| ("oob", m)))
    }
}
