//! `[scoring]` and `[dlq]`: micro-batching and explanations, and the embedded mode's
//! dead-letter file. (`[delivery]` is beside the delivery: `stream::delivery::config`;
//! `[source]` beside the sources.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::{Invalid, Validate};

/// Micro-batching and explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Largest batch scored with one model load.
    pub batch_size: usize,
    /// Longest wait for a batch to fill (`5ms`); bounds latency under light traffic.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Feature contributions stored with each verdict.
    pub top_k: usize,
    /// Which verdicts carry their contributions: `all` (computed in the walk that scores:
    /// on the real model 1.9x the time of scoring alone), `alerts` (fraud verdicts only,
    /// explained together after the batch is scored: 1.04x), or `none`.
    pub explain: crate::model::Explain,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            batch_timeout: Duration::from_millis(5),
            top_k: 3,
            explain: crate::model::Explain::All,
        }
    }
}

impl Validate for ScoringConfig {
    fn validate(&self) -> Result<(), Invalid> {
        crate::validate::in_range("batch_size", self.batch_size, 1..=100_000)?;
        crate::validate::in_range("top_k", self.top_k, 0..=crate::forest::tree::MAX_FEATURES)
    }
}

/// Invalid input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Dead-letter file of the embedded mode: one JSON line per invalid row, with reason.
    pub file: String,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            file: "out/dlq.jsonl".into(),
        }
    }
}

impl Validate for DlqConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.file.is_empty() {
            return Err(Invalid::new("file", "must not be empty"));
        }
        Ok(())
    }
}
