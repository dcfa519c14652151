//! The streaming detector's stages.
//!
//! - [`watermark`]: per-partition commit watermarks (at-least-once with out-of-order acks).
//! - [`batcher`]: micro-batching by count and time.
//! - [`embedded`]: the pipeline over a file or stdin with no services: decode → batch →
//!   score (one model load per batch, on the blocking pool) → verdict store, alerts, lake,
//!   dead letters; then a summary.

pub mod batcher;
pub mod embedded;
pub mod watermark;

pub use watermark::Watermarks;
