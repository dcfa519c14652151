//! Our random-forest engine: histogram training, flat-array serving, explanations.
//!
//! - [`params`]: hyper-parameters and their validation.
//! - [`binning`]: quantile binning of features into at most 255 `u8` bins.
//! - [`mod@train`]: per-node class histograms with the subtraction trick; rayon over trees.
//! - [`node`]: the serving representation (8-byte nodes in flat arrays) and its checks.
//! - [`quantized`]: a second walk over byte ranks instead of float thresholds, measured
//!   beside the float walk (`benches/walk.rs`).
//! - [`tree`]: the [`Forest`] scorer, with batch and single-row walks, importances and
//!   decision-path contributions.

pub mod binning;
pub mod node;
pub mod params;
pub mod quantized;
pub mod train;
pub mod tree;

pub use binning::Binner;
pub use params::{ClassWeight, Criterion, MaxFeatures, TrainParams};
pub use quantized::Quantized;
pub use train::{TrainError, Trained, train, train_owned};
pub use tree::{Forest, Node, Tree, TreeError};
