//! `[source]`: where transactions come from.

use serde::{Deserialize, Serialize};

use crate::validate::{Invalid, Validate};

/// Where transactions come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `file`, `stdin` or `kafka`.
    pub kind: SourceKind,
    /// The file for `kind = "file"`: Kaggle CSV or JSON lines, by extension.
    pub path: String,
    /// Format of stdin: `csv` or `jsonl`.
    pub stdin_format: String,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::File,
            path: "data/creditcard-sample.csv".into(),
            stdin_format: "jsonl".into(),
        }
    }
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A file.
    File,
    /// Standard input.
    Stdin,
    /// Kafka topics (`[kafka]`).
    Kafka,
}

impl Validate for SourceConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if matches!(self.stdin_format.as_str(), "csv" | "jsonl") {
            Ok(())
        } else {
            Err(Invalid::new(
                "stdin_format",
                format!("{:?}: use csv or jsonl", self.stdin_format),
            ))
        }
    }
}
