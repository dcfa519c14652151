//! The error of the batch steps (read, train, score, write), shared by the core and the
//! commands built on it.

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
