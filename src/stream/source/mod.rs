//! Sources: where transactions come from. Each source reads, decodes and validates,
//! sends what is invalid to its dead-letter sink, gathers the rest into batches with the
//! one [`crate::stream::batcher::Batcher`], and hands them to the scorer task over a
//! bounded channel.
//!
//! - [`file`]: a file (optionally followed as it grows) or stdin, CSV or JSON lines: the
//!   embedded mode.
//! - [`kafka`]: a consumer-group member, with its rebalance handler and acker; and
//!   [`kafka::rebuild`], the start-up count of the input's history into the in-memory
//!   entity store.
//! - [`labels`]: labels for the entity features, from a file or a topic.
//! - [`config`]: the `[source]` section.

pub mod config;
pub mod file;
pub mod kafka;
pub mod labels;

use std::sync::Arc;
use std::time::Instant;

use crate::schema::Transaction;

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Kafka message.
    Kafka {
        /// Topic (shared by the messages of a topic).
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A line (or record) of a file; `-` is stdin.
    File {
        /// The file (shared by its lines).
        path: Arc<str>,
        /// 1-based line number.
        line: u64,
    },
}

/// A transaction read from a source.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The transaction.
    pub tx: Transaction,
    /// Where it came from (for a dead letter, should a sink refuse it).
    pub origin: Origin,
    /// When the source read it.
    pub read_at: Instant,
    /// When its producer sent it (Unix ms), when the source knows: Kafka's message
    /// timestamp. Used for the produce-to-durable latency.
    pub produced_at_ms: Option<i64>,
}

impl Incoming {
    /// A transaction read now from line `line` of an unnamed input, with no producer time.
    #[must_use]
    pub fn now(tx: Transaction, line: u64) -> Self {
        Self {
            tx,
            origin: Origin::File {
                path: Arc::from("-"),
                line,
            },
            read_at: Instant::now(),
            produced_at_ms: None,
        }
    }
}

/// A batch on its way to the scorer: the valid rows, and the source positions the scorer
/// acknowledges once they are durable (every position the batch covers, including those
/// of rows that were dead-lettered after the batch was formed; empty for files).
#[derive(Debug, Default)]
pub struct Batch {
    /// Valid transactions, in source order.
    pub rows: Vec<Incoming>,
    /// Positions to acknowledge when the batch is durable, and the assignment generation
    /// they were tracked in.
    pub offsets: crate::stream::acker::Tracked,
}

/// Batches between a source and the scorer task: a few, so the source reads ahead while
/// one is scored, and a slow sink pauses the source instead of filling memory
/// (`delivery.in_flight_batches`).
pub type BatchSender = tokio::sync::mpsc::Sender<Batch>;
