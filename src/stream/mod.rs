//! The streaming detector's stages.
//!
//! - [`watermark`]: per-partition commit watermarks (at-least-once with out-of-order acks).
//! - [`batcher`]: micro-batching by count and time.
//! - [`process`]: one batch through the scorer and the sinks, shared by every source.
//! - [`embedded`]: the pipeline over a file or stdin with no services: decode → batch →
//!   process; invalid rows to a dead-letter file; then a summary.

pub mod batcher;
pub mod embedded;
pub mod kafka;
pub mod process;
pub mod watermark;

pub use watermark::Watermarks;
