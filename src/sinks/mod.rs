//! Where verdicts, alerts and scored records go.
//!
//! - [`verdicts`]: the verdict store (one item per transaction id): local SQLite or DynamoDB.
//! - [`alerts`]: fraud alerts, behind one trait: a local file/stdout, a Kafka topic, a
//!   webhook, and the in-memory ring of recent alerts.
//! - [`lake`]: Parquet micro-batches of scored records on any [`crate::storage::BlobStore`].

pub mod alerts;
pub mod lake;
pub mod verdicts;
