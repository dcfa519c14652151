//! Where verdicts and scored records go.
//!
//! - [`verdicts`]: the verdict store (one item per transaction id): local SQLite or DynamoDB.
//! - [`webhook`]: fraud alerts POSTed to an HTTP endpoint.
//! - [`lake`]: Parquet micro-batches of scored records on any [`crate::storage::BlobStore`].

pub mod lake;
pub mod verdicts;
pub mod webhook;
