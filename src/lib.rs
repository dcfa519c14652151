//! fraudstream: streaming credit-card fraud detection.
//!
//! The pure core (schema, forest, model format, evaluation, training, RNG) is the
//! `fraudstream-core` crate, re-exported here under the same names; this crate adds the
//! service around it.
//!
//! Module map:
//! - [`schema`], [`forest`], [`model`], [`eval`], [`rng`] (from the core): transactions
//!   and their readers, the random-forest engine, the model file and the one scoring
//!   function, metrics and splits, the seeded PRNG.
//! - [`detector`]: the detector as a library: [`detector::Detector::build`] from a
//!   [`config::Config`], `run` until a [`shutdown::Shutdown`], and handles to its state.
//! - [`stream`]: the detector's stages: sources (file/stdin, Kafka), batcher, scorer,
//!   delivery, dead letters, acker, stats.
//! - [`sinks`]: the verdict store (SQLite, DynamoDB), the alert sinks (file/stdout,
//!   Kafka topic, webhook, recent-alert ring) and the Parquet lake writer.
//! - [`storage`]: the `BlobStore` trait with local, S3 and HDFS backends.
//! - [`registry`]: the model store (versions, manifests, `LATEST`) and the hot-reload
//!   watcher.
//! - [`pipeline`]: the batch commands' logic: retraining with a quality gate, remote
//!   inputs, verdict output files (training itself is the core's).
//! - [`kafka`]: Kafka client settings and the self-replacing producer.
//! - [`config`]: the configuration file: assembles the sections (each beside its code),
//!   layers defaults, file and environment, carries deprecated keys over.
//! - [`validate`]: the checking types every section uses (a leaf).
//! - [`aws`]: the one AWS connection type; [`secret`]: the one secret type.
//! - [`tasks`]: supervised background tasks (none dies silently).
//! - [`failpoint`]: crash points for the crash tests.
//! - [`shutdown`]: stop, deadline and abort; [`retry`]: bounded backoff; [`clock`]:
//!   wall-clock helpers.
//! - [`api`]: the HTTP API and the dashboard (axum), with `/metrics`, `/healthz`,
//!   `/readyz`; [`telemetry`]: the Prometheus recorder; [`metric_names`]: every metric
//!   name.
//! - [`report`]: the evaluation report (SVG charts, HTML page); [`capacity`]: the sizing
//!   model (`fraudstream capacity`, docs/capacity.md).
//! - [`cli`]: the command-line interface (argument parsing and printing).

#![warn(missing_docs)]

pub use fraudstream_core::{eval, forest, model, monitor, rng, rules, schema, signing};

pub mod api;
pub mod aws;
pub mod capacity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detector;
pub mod failpoint;
pub mod kafka;
pub mod metric_names;
pub mod monitoring;
pub mod pipeline;
pub mod registry;
pub mod report;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod sinks;
pub mod storage;
pub mod stream;
pub mod tasks;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod validate;
pub mod velocity;
