//! The batch commands' logic, shared by the CLI and the tests.
//!
//! - [`mod@train`]: dataset → split → forest → threshold → metrics → [`crate::model::Model`].
//! - [`retrain`]: periodic retraining with a quality gate.
//! - [`output`]: writing verdicts as CSV, JSON lines or Parquet.

pub mod output;
pub mod remote;
pub mod retrain;
pub mod train;

pub use train::{TrainOptions, TrainOutcome, train_model};

use crate::forest::TrainError;
use crate::model::ModelError;
use crate::schema::ReadError;
use crate::schema::record::MissingLabels;

/// Errors of the batch commands.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading input failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A command that needs labels got rows without them.
    #[error("{0}")]
    Labels(#[from] MissingLabels),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A model problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A bad option value, named.
    #[error("invalid option `{name}`: {message}")]
    Option {
        /// The option.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Writing output failed.
    #[error("writing {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// The cause.
        message: String,
    },
}
