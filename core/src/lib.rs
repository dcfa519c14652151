//! fraudstream's pure core: everything that turns transactions into scores and models
//! without an async runtime, a network client or a plotting library. The compiler keeps
//! it that way: this crate does not depend on tokio, rdkafka, the AWS SDK, hdfs-native or
//! plotters, so it unit-tests and benchmarks without I/O, and the load generator builds
//! without the service clients.
//!
//! Module map:
//! - [`schema`]: the transaction record (Kaggle layout plus an id), readers for CSV,
//!   JSON lines and (feature `parquet`) Parquet, and the validation errors that name
//!   file, line and field.
//! - [`forest`]: the random-forest engine: quantile binning, histogram training with the
//!   subtraction trick, flat-array serving, importances and decision-path contributions.
//! - [`model`]: the model file format (magic, version, metadata, body, checksum), the
//!   [`model::Model`] that pairs a forest with its feature list and threshold, and the one
//!   scoring function that turns rows into verdicts.
//! - [`eval`]: metrics (AUPRC, ROC-AUC, recall at precision), threshold choice and data
//!   splits.
//! - [`train`]: dataset → split → forest → threshold → metrics → model.
//! - [`velocity`]: entity (per-card, per-terminal) features over time windows, their
//!   state store and the engine that computes them online and offline.
//! - [`monitor`]: drift (each feature's and the score's reference distribution from
//!   training, live counts in its bins, PSI and Jensen-Shannon distance) and the
//!   Page-Hinkley test for a rising error rate.
//! - [`rules`]: the rule language (`rule NAME: block if …`), its compiler with
//!   line-and-column errors, named value lists and the allocation-free evaluator that
//!   turns a score and a transaction into approve, review or block.
//! - [`signing`]: ed25519 manifest signatures and public keys, parsed as bytes.
//! - [`rng`]: a seedable, platform-independent PRNG used wherever training draws.
//! - [`error`]: [`PipelineError`], the batch steps' error.

#![warn(missing_docs)]

pub mod error;
pub mod eval;
pub mod forest;
pub mod model;
pub mod monitor;
pub mod rng;
pub mod rules;
pub mod schema;
pub mod signing;
pub mod train;
pub mod velocity;

pub use error::PipelineError;
