//! Evaluation: metrics, threshold choice and train/test splits.
//!
//! - [`metrics`]: average precision (scikit-learn's definition), ROC-AUC, recall at a
//!   precision floor, confusion matrix, and [`metrics::ThresholdStrategy`].
//! - [`compare`]: two models on the same rows, with a paired bootstrap interval.
//! - [`prequential`]: the handbook's protocol for delayed labels (train, skip the
//!   delay, test; known-compromised cards left out) and card precision@k.
//! - [`mod@split`]: stratified random and time-ordered splits, both seeded.

pub mod compare;
pub mod metrics;
pub mod prequential;
pub mod split;

pub use compare::{ApDifference, ap_difference, ap_difference_weighted};
pub use metrics::{
    ClassWeights, Metrics, ThresholdStrategy, UNWEIGHTED, Weights, evaluate, evaluate_weighted,
};
pub use split::{SplitKind, split, time_folds};
