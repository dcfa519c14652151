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
