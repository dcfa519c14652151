//! Evaluation: metrics, threshold choice and train/test splits.
//!
//! - [`metrics`]: average precision (scikit-learn's definition), ROC-AUC, recall at a
//!   precision floor, confusion matrix, and [`metrics::ThresholdStrategy`].
//! - [`mod@split`]: stratified random and time-ordered splits, both seeded.

pub mod metrics;
pub mod split;

pub use metrics::{Metrics, ThresholdStrategy, evaluate};
pub use split::{SplitKind, split};
