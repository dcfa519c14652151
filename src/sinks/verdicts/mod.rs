//! The verdict store: one item per transaction id, so a redelivered transaction overwrites
//! its verdict instead of adding one.
//!
//! - [`item`]: [`VerdictItem`] and [`VerdictError`].
//! - [`local`]: an embedded SQLite file, queried by `fraudstream verdict get`.
//! - [`dynamodb`]: DynamoDB (BatchWriteItem, 25 per call, unprocessed items retried).
//! - [`item_size`]: a verdict's DynamoDB item size and write units.

pub mod config;
pub mod dynamodb;
pub mod item;
pub mod item_size;
pub mod local;

use std::fmt::Debug;

use async_trait::async_trait;

pub use item::{Stamp, VerdictError, VerdictItem, dedupe_last};

/// A store of verdicts keyed by transaction id.
#[async_trait]
pub trait VerdictStore: Send + Sync + Debug {
    /// Where the store points (never includes credentials).
    fn describe(&self) -> String;

    /// Write verdicts; a transaction id already present is overwritten. When the call
    /// returns `Ok`, every item is durable.
    async fn put_batch(&self, items: &[VerdictItem]) -> Result<(), VerdictError>;

    /// The verdict for one transaction, if any.
    async fn get(&self, tx_id: &str) -> Result<Option<VerdictItem>, VerdictError>;

    /// Write each verdict only where its transaction id has none (an expired one counts
    /// as none), atomically per id in the store itself: of concurrent callers with one id,
    /// exactly one is told it wrote. Returns, item for item, whether it was written; the
    /// ids must be distinct.
    async fn put_new(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError>;

    /// Delete the verdict of `tx_id`, if any (to take back a [`VerdictStore::put_new`]
    /// whose alert could not be sent).
    async fn delete(&self, tx_id: &str) -> Result<(), VerdictError>;
}
