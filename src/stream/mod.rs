//! The streaming detector, one file or folder per stage:
//!
//! ```text
//! source ──bounded channel of batches──► scorer task
//!   │  batcher, decode, validate            scorer → delivery (verdicts, alerts, lake)
//!   └─ invalid ──► dead letters              → stats → acker (commit what is durable)
//! ```
//!
//! - [`source`]: where transactions come from ([`source::file`] for files and stdin,
//!   [`source::kafka`] for a consumer group, with its rebalance handler), and the
//!   [`source::Batch`] they hand on.
//! - [`batcher`]: micro-batching by count and time, used by every source.
//! - [`dead_letter`]: invalid records, one type and one trait, to a file or a topic.
//! - [`scorer`]: one model load per batch, scoring off the async runtime.
//! - [`delivery`]: the sinks of a batch and the durability policy: outage retry with
//!   backoff and blocked-time metrics (the dead-letter path waits the same way).
//! - [`acker`]: per-partition positions in flight, acknowledged when durable, committed
//!   when contiguous ([`watermark`]).
//! - [`stages`]: the scorer task that runs a batch through scorer, delivery, stats and
//!   acker.
//! - [`stats`]: running totals in bounded memory.

pub mod acker;
pub mod batcher;
pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod scorer;
pub mod source;
pub mod stages;
pub mod stats;
pub mod watermark;

pub use watermark::Watermarks;
