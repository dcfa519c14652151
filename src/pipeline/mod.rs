//! The batch commands' logic, shared by the CLI and the tests.
//!
//! - [`mod@train`]: dataset → split → forest → threshold → metrics → [`crate::model::Model`].
//! - [`retrain`]: periodic retraining with a quality gate.
//! - [`output`]: writing verdicts as CSV, JSON lines or Parquet.
//! - [`rules_backtest`]: a draft rule set replayed on the lake beside the active one.
//! - [`lake_compact`]: one row per transaction id in a lake written twice.

pub mod lake_compact;
pub mod output;
pub mod remote;
pub mod retrain;
pub mod rules_backtest;

pub use fraudstream_core::PipelineError;
pub use fraudstream_core::train;
pub use fraudstream_core::train::{TrainOptions, TrainOutcome, train_model, train_split};
