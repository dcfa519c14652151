//! Where verdicts and scored records go.
//!
//! - [`verdicts`]: the verdict store (one item per transaction id): local SQLite or DynamoDB.
//! - [`lake`]: Parquet micro-batches of scored records on any [`crate::storage::BlobStore`].

pub mod lake;
pub mod verdicts;
