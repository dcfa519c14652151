//! Entity (velocity) features in the detector: the core's spec, engine, clock and stores
//! ([`fraudstream_core::velocity`], re-exported here), plus what needs the service side:
//! - [`config`]: the `[velocity]` section;
//! - [`stage`]: the stage the scorer calls for every batch before scoring (features,
//!   event time), which also applies labels and joins them with the verdicts;
//! - [`redis`]: the shared Redis store.
//!
//! It sits below `stream` and imports nothing from it: the readers that feed it labels
//! from a file or a topic, and the start-up rebuild from the input topics, are sources
//! (`crate::stream::source::labels`, `crate::stream::source::kafka::rebuild`).

pub use fraudstream_core::velocity::*;

pub mod config;
pub mod redis;
pub mod stage;
