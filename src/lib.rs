//! fraudstream: streaming credit-card fraud detection.
//!
//! Module map:
//! - [`schema`]: the transaction record (Kaggle layout plus an id), readers for CSV,
//!   JSON lines and Parquet, and the validation errors that name file, line and field.
//! - [`forest`]: our random-forest engine: quantile binning, histogram training with the
//!   subtraction trick, flat-array serving, importances and decision-path contributions.
//! - [`model`]: the model file format (magic, version, metadata, body, checksum) and the
//!   [`model::Model`] that pairs a forest with its feature list and threshold.
//! - [`eval`]: metrics (AUPRC, ROC-AUC, recall at precision), threshold choice, data
//!   splits, and the HTML/SVG evaluation report.
//! - [`pipeline`]: the batch commands' logic (train, evaluate, score) over files, shared by
//!   the CLI and the tests.
//! - [`cli`]: the command-line interface (argument parsing and output formatting).
//! - [`rng`]: a seedable, platform-independent PRNG used wherever training draws.
//! - [`storage`]: the `BlobStore` trait with local, S3 and HDFS backends.
//! - [`sinks`]: the verdict store (SQLite, DynamoDB) and the Parquet lake writer.
//! - [`registry`]: the model store: versions, manifests and the `LATEST` pointer.
//! - [`config`]: the storage configuration; [`retry`]: bounded backoff; [`aws`]: shared
//!   AWS SDK set-up;
//!   [`metric_names`]: every exported metric name.
//!
//! The core (schema, forest, model, eval) does no network I/O and needs no async runtime.

pub mod aws;
pub mod cli;
pub mod config;
pub mod eval;
pub mod forest;
pub mod metric_names;
pub mod model;
pub mod pipeline;
pub mod registry;
pub mod retry;
pub mod rng;
pub mod schema;
pub mod sinks;
pub mod storage;
pub mod stream;
pub mod telemetry;
