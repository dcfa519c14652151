//! `[models]` and `[bootstrap]`: the model store and the first model; and
//! [`ModelStore::open`], which turns them into a store.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ModelStore;
use crate::storage::S3Access;
use crate::storage::url::Location;
use crate::validate::{Invalid, Validate};

/// The model store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// `file://`/plain path or `s3://bucket/prefix`; models go under `models/`.
    pub location: String,
    /// How often a running detector polls `models/LATEST` for a new version (`10s`);
    /// `0s` disables hot reload.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The feature list a new version must have; unset: the serving model's.
    pub features: Option<Vec<String>>,
    /// Public keys (`ed25519:<hex>`, from `fraudstream keygen`) one of which must have
    /// signed a version's manifest before it serves; empty: signatures are not checked.
    pub trusted_keys: Vec<String>,
    /// Secret key file that signs the manifests this process publishes (`retrain`, the
    /// first-model bootstrap).
    pub sign_key: Option<String>,
    /// A second model scored on every batch beside the serving one, into the lake and
    /// metrics only: a version, or `candidate` (the newest candidate `retrain` passed,
    /// followed as it changes).
    pub shadow: Option<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            location: "out/registry".into(),
            poll_interval: Duration::from_secs(10),
            features: None,
            trusted_keys: Vec::new(),
            sign_key: None,
            shadow: None,
        }
    }
}

impl ModelsConfig {
    /// The trusted public keys, parsed.
    pub fn trusted(&self) -> Result<Vec<super::PublicKey>, Invalid> {
        self.trusted_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                super::PublicKey::parse(k)
                    .map_err(|e| Invalid::new(format!("trusted_keys[{i}]"), e.to_string()))
            })
            .collect()
    }
}

impl Validate for ModelsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match Location::parse(&self.location).map_err(|m| Invalid::new("location", m))? {
            Location::Hdfs { .. } => Err(Invalid::new(
                "location",
                "the model store needs conditional writes: use a local path or s3://",
            )),
            Location::Local(_) | Location::S3 { .. } => {
                if self.features.as_ref().is_some_and(Vec::is_empty) {
                    return Err(Invalid::new("features", "must not be empty"));
                }
                self.trusted()?;
                if let Some(path) = &self.sign_key {
                    super::signing::load(Path::new(path))
                        .map_err(|e| Invalid::new("sign_key", e.to_string()))?;
                }
                if self
                    .shadow
                    .as_deref()
                    .is_some_and(|v| v.is_empty() || v.contains('/'))
                {
                    return Err(Invalid::new("shadow", "must be a version or \"candidate\""));
                }
                Ok(())
            }
        }
    }
}

/// The first model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Labelled history to train a first model from when the model store is empty.
    pub history: Option<String>,
}

impl Validate for BootstrapConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match &self.history {
            Some(h) if h.is_empty() => Err(Invalid::new("history", "must not be empty")),
            _ => Ok(()),
        }
    }
}

impl ModelStore {
    /// The model store `models` names (S3 access from `s3`), with its trusted keys and
    /// signing key.
    pub async fn open(
        models: &ModelsConfig,
        s3: &S3Access,
    ) -> Result<Self, crate::storage::StorageError> {
        let blobs = crate::storage::open(&models.location, Some(&s3.settings("", ""))).await?;
        let store = Self::new(blobs).with_trusted_keys(models.trusted().unwrap_or_default());
        match &models.sign_key {
            Some(path) => {
                let key = super::signing::load(Path::new(path)).map_err(|e| {
                    crate::storage::StorageError::Other {
                        store: "models.sign_key".into(),
                        message: e.to_string(),
                        retryable: false,
                    }
                })?;
                Ok(store.with_signer(Some(key)))
            }
            None => Ok(store),
        }
    }
}
