//! Entity (velocity) features in the detector: the core's spec, engine and stores
//! ([`fraudstream_core::velocity`], re-exported here), plus what needs the service side:
//! - [`config`]: the `[velocity]` section;
//! - [`labels`]: the labels file, read at start-up and followed;
//! - [`stage`]: the stream stage that computes features for every batch before scoring
//!   and applies labels as they arrive.

pub use fraudstream_core::velocity::*;

pub mod config;
pub mod labels;
pub mod labels_topic;
pub mod rebuild;
pub mod redis;
pub mod stage;
