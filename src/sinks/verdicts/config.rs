//! `[verdicts]`: which verdict store, and its settings.

use serde::{Deserialize, Serialize};

use super::dynamodb::DynamoSettings;
use crate::validate::{Invalid, Validate};

/// Which verdict store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictBackend {
    /// The embedded SQLite file at `verdicts.local_path`.
    Local,
    /// The DynamoDB table in `[verdicts.dynamodb]`.
    Dynamodb,
}

/// The verdict store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictsConfig {
    /// `local` or `dynamodb`.
    pub backend: VerdictBackend,
    /// SQLite file for the local backend.
    pub local_path: String,
    /// Expire verdicts this many seconds after scoring (DynamoDB TTL); unset keeps them.
    pub ttl_seconds: Option<u64>,
    /// DynamoDB settings (required when `backend = "dynamodb"`).
    pub dynamodb: Option<DynamoSettings>,
}

impl Default for VerdictsConfig {
    fn default() -> Self {
        Self {
            backend: VerdictBackend::Local,
            local_path: "out/verdicts.db".into(),
            ttl_seconds: None,
            dynamodb: None,
        }
    }
}

impl Validate for VerdictsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.ttl_seconds.is_some()
            && self.backend == VerdictBackend::Dynamodb
            && self
                .dynamodb
                .as_ref()
                .is_some_and(|d| d.ttl_attribute.is_none())
        {
            return Err(Invalid::new(
                "ttl_seconds",
                "DynamoDB expires items by the attribute named in verdicts.dynamodb.ttl_attribute; set it too",
            ));
        }
        if self.ttl_seconds == Some(0) {
            return Err(Invalid::new("ttl_seconds", "must be at least 1"));
        }
        match (&self.backend, &self.dynamodb) {
            (VerdictBackend::Dynamodb, None) => Err(Invalid::new(
                "dynamodb",
                "required when verdicts.backend = \"dynamodb\"",
            )),
            (_, Some(d)) => d.validate().map_err(|e| e.within("dynamodb")),
            (VerdictBackend::Local, None) if self.local_path.is_empty() => {
                Err(Invalid::new("local_path", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}
