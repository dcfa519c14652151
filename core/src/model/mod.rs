//! Models: a forest plus the metadata needed to serve and audit it.
//!
//! - [`meta`]: [`ModelMeta`], the header every model file carries.
//! - [`mod@format`]: the byte format (magic, version, header, body, checksum) and its errors.
//! - [`scoring`]: [`Model`], feature checks against an input, and scoring helpers.
//! - [`check`]: the one validation path (features, smoke rows, published canaries).
//! - [`manifest`]: the manifest that publishes a version in the model store.

pub mod check;
pub mod format;
pub mod manifest;
pub mod meta;
pub mod scoring;

pub use check::{Canary, CheckError};
pub use format::{FORMAT_VERSION, MAGIC, ModelError};
pub use manifest::{DriftedVariable, Evidence, HoldoutRecord, Manifest, RetrainTrigger};
pub use meta::{ModelMeta, TimeWindow};
pub use scoring::{BY_MODEL, BY_MODEL_ONLY, Explain, Model, Verdict};
