//! Evaluation: metrics, threshold choice, train/test splits, and the visual report.
//!
//! - [`metrics`]: average precision (scikit-learn's definition), ROC-AUC, recall at a
//!   precision floor, confusion matrix, and [`metrics::ThresholdStrategy`].
//! - [`mod@split`]: stratified random and time-ordered splits, both seeded.
//! - [`report`]: PR and ROC curves, score histograms and importances as SVG, and an HTML
//!   page linking them.

pub mod metrics;
pub mod report;
pub mod split;

pub use metrics::{Metrics, ThresholdStrategy, evaluate};
pub use split::{SplitKind, split};
