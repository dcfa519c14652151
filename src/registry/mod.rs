//! The model store: versioned model files, their manifests, and a `LATEST` pointer, on
//! any [`BlobStore`] (a local directory or S3).
//!
//! Layout under the store's root:
//! ```text
//! models/<version>/model.fsm       the model file (written once, never replaced)
//! models/<version>/holdout.bin     fingerprints of the rows held out from training (optional)
//! models/<version>/manifest.sig    ed25519 signature of the manifest (optional)
//! models/<version>/manifest.json   sha256, size, features, created_at, metadata
//! models/LATEST                    the serving version, moved by conditional writes
//! models/CANDIDATE                 the newest candidate retrain passed (for shadow scoring)
//! ```
//! Rule sets and value lists live beside them ([`rules`]); [`decisions`] keeps a
//! detector's decider current with them.
//! A version exists once its manifest does: every other object is written first.

pub mod config;
pub mod decisions;
pub mod holdout;
pub mod rules;
pub mod shadow;
pub mod signing;
pub mod watcher;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::model::format::sha256_hex;
use crate::model::{CheckError, Model, ModelError};
use crate::storage::{BlobStore, Condition, StorageError};

pub use holdout::HoldoutSet;

/// A watcher of the model store ([`watcher::Watcher`], [`shadow::ShadowWatcher`]).
pub(crate) trait Polling {
    /// Why a poll failed.
    type Error: std::fmt::Display;
    /// Check the store once, swapping in what changed.
    async fn poll_once(&mut self) -> Result<(), Self::Error>;
    /// What is watched, for the log.
    fn watching(&self) -> String;
}

/// Poll every `interval` until `stop` is cancelled. A failed poll (unreachable storage)
/// is counted and logged; what serves keeps serving, and the next tick tries again. A poll
/// that panics is caught and counted (`fraudstream_task_restarts_total`) the same way.
pub(crate) async fn poll_every(
    mut w: impl Polling,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A panic in one poll is caught and counted; the next poll runs.
        if let Some(Err(e)) = crate::tasks::catch_panic("model_watcher", w.poll_once()).await {
            metrics::counter!(crate::metric_names::MODEL_POLL_ERRORS).increment(1);
            tracing::warn!(error = %e, watching = %w.watching(), "model store poll failed; what serves keeps serving");
        }
    }
}
pub use crate::model::{HoldoutRecord, Manifest};
pub use signing::{ManifestSignature, PublicKey, SigningKey};

/// Key of the pointer to the serving version.
pub const LATEST_KEY: &str = "models/LATEST";
/// Key of the pointer to the newest candidate `retrain` passed (published or approved).
pub const CANDIDATE_KEY: &str = "models/CANDIDATE";

/// Why a stored version may not serve.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// It could not be read, or its bytes do not match the manifest, or it does not load.
    #[error(transparent)]
    Load(#[from] RegistryError),
    /// The manifest and the model file disagree about the features.
    #[error("feature mismatch: {0}")]
    Manifest(String),
    /// It failed a check: features, smoke rows or canaries.
    #[error(transparent)]
    Check(#[from] CheckError),
}

impl Rejection {
    /// Metric label and log field: `signature`, `checksum`, `corrupt`,
    /// `unknown_version`, `unreadable`, `features`, `smoke` or `canary`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Load(RegistryError::Signature { .. }) => "signature",
            Self::Load(RegistryError::Checksum { .. }) => "checksum",
            Self::Load(RegistryError::Model { .. } | RegistryError::Corrupt { .. }) => "corrupt",
            Self::Load(RegistryError::UnknownVersion(_)) => "unknown_version",
            Self::Load(RegistryError::Storage(_)) => "unreadable",
            Self::Manifest(_) => "features",
            Self::Check(e) => e.reason(),
        }
    }
}

/// The `LATEST` pointer as read: the version and the pointer object's entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// The version it names.
    pub version: String,
    /// Entity tag of the pointer object, for conditional moves and cheap polling.
    pub etag: String,
}

/// Model store errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored model does not load.
    #[error("version {version}: {source}")]
    Model {
        /// The version.
        version: String,
        /// Why it does not load.
        source: ModelError,
    },
    /// The stored model's bytes do not hash to the manifest's checksum.
    #[error("version {version}: model checksum {actual} does not match the manifest's {expected}")]
    Checksum {
        /// The version.
        version: String,
        /// From the manifest.
        expected: String,
        /// Of the bytes read.
        actual: String,
    },
    /// A manifest or pointer that does not parse.
    #[error("{key}: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The version is not in the store.
    #[error("model version {0} is not in the store")]
    UnknownVersion(String),
    /// Trusted keys are configured and the manifest's signature is missing or wrong.
    #[error("version {version}: signature: {message}")]
    Signature {
        /// The version.
        version: String,
        /// What is wrong.
        message: String,
    },
}

/// A move of `LATEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Moved {
    /// The version it named before (none in an empty store).
    pub from: Option<String>,
    /// The version it names now.
    pub to: String,
}

/// Why `LATEST` was not moved.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The version is not in the store, does not load, or fails its checks.
    #[error("version {version} cannot serve; LATEST not moved: {reason}")]
    Rejected {
        /// The version.
        version: String,
        /// Why.
        reason: Rejection,
    },
    /// Another writer moved `LATEST` meanwhile; nothing changed.
    #[error("LATEST moved while this ran; nothing changed, try again")]
    Concurrent,
    /// A rollback with no `LATEST`.
    #[error("{0} has no LATEST to roll back")]
    NoLatest(String),
    /// A rollback of a version without a parent.
    #[error("{0} has no parent version")]
    NoParent(String),
    /// The store failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Versioned models on a blob store.
#[derive(Debug, Clone)]
pub struct ModelStore {
    blobs: Arc<dyn BlobStore>,
    /// Signs the manifests this store writes.
    signer: Option<Arc<SigningKey>>,
    /// When not empty, a version loads only with a manifest signed by one of these.
    trusted: Arc<[PublicKey]>,
    /// For a serving detector: the entity features it computes (`Some(None)`: none), and
    /// so the only ones a version may need. `None`: not checked (offline commands
    /// compute a model's own features).
    serving_velocity: Option<Option<Arc<crate::velocity::VelocitySpec>>>,
}

fn model_key(version: &str) -> String {
    format!("models/{version}/model.fsm")
}

fn manifest_key(version: &str) -> String {
    format!("models/{version}/manifest.json")
}

fn signature_key(version: &str) -> String {
    format!("models/{version}/manifest.sig")
}

fn holdout_key(version: &str) -> String {
    format!("models/{version}/holdout.bin")
}

impl ModelStore {
    /// A model store on `blobs`, neither signing nor checking signatures.
    #[must_use]
    pub fn new(blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            blobs,
            signer: None,
            trusted: Arc::from([]),
            serving_velocity: None,
        }
    }

    /// Refuse versions whose entity features differ from what this detector computes
    /// (`None`: velocity disabled).
    #[must_use]
    pub fn serving_velocity(mut self, computed: Option<crate::velocity::VelocitySpec>) -> Self {
        self.serving_velocity = Some(computed.map(Arc::new));
        self
    }

    /// Sign every manifest this store writes with `key`.
    #[must_use]
    pub fn with_signer(mut self, key: Option<SigningKey>) -> Self {
        self.signer = key.map(Arc::new);
        self
    }

    /// Load only versions whose manifest one of `keys` signed (none: no check).
    #[must_use]
    pub fn with_trusted_keys(mut self, keys: Vec<PublicKey>) -> Self {
        self.trusted = keys.into();
        self
    }

    /// Whether what this store publishes will load where its trusted keys are required:
    /// `Err` says why not (trusted keys but no signing key, or a signing key they do not
    /// include).
    pub fn check_publishable(&self) -> Result<(), String> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        match &self.signer {
            None => Err(
                "models.trusted_keys is set but models.sign_key is not: a version published here would be refused"
                    .into(),
            ),
            Some(k) if !self.trusted.contains(&k.public()) => Err(format!(
                "models.sign_key ({}) is not among models.trusted_keys: a version published here would be refused",
                k.public()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Where the store points.
    #[must_use]
    pub fn describe(&self) -> String {
        self.blobs.describe()
    }

    /// Store a model under its version (model file, then manifest). Storing the same
    /// version again with identical bytes is a no-op; different bytes are refused.
    pub async fn put(&self, model: &Model) -> Result<Manifest, RegistryError> {
        self.put_with_holdout(model, None).await
    }

    /// [`ModelStore::put`], recording the rows the model held out from training.
    pub async fn put_with_holdout(
        &self,
        model: &Model,
        holdout: Option<&HoldoutSet>,
    ) -> Result<Manifest, RegistryError> {
        self.put_retrained(model, holdout, None).await
    }

    /// [`ModelStore::put_with_holdout`], recording why `retrain` trained the model.
    pub async fn put_retrained(
        &self,
        model: &Model,
        holdout: Option<&HoldoutSet>,
        trigger: Option<&crate::model::RetrainTrigger>,
    ) -> Result<Manifest, RegistryError> {
        let bytes = Bytes::from(model.to_bytes());
        let meta = model.meta();
        let version = meta.version.clone();
        let manifest = Manifest {
            version: version.clone(),
            sha256: sha256_hex(&bytes),
            size_bytes: bytes.len() as u64,
            features: meta.features.clone(),
            created_at: meta.created_at.clone(),
            parent: self.latest().await?.map(|l| l.version),
            metadata: meta.clone(),
            canaries: model.canaries(),
            holdout: None,
            reference: model.reference().map(|r| r.as_ref().clone()),
            retrain: trigger.cloned(),
        };
        match self
            .blobs
            .put_if(&model_key(&version), bytes, Condition::IfAbsent)
            .await
        {
            Ok(_) => {}
            Err(StorageError::PreconditionFailed { .. }) => {
                let existing = self.blobs.get(&model_key(&version)).await?;
                if sha256_hex(&existing.data) != manifest.sha256 {
                    return Err(RegistryError::Corrupt {
                        key: model_key(&version),
                        message: "a different model is already stored under this version".into(),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        let mut manifest = manifest;
        if let Some(h) = holdout {
            let data = Bytes::from(h.to_bytes());
            manifest.holdout = Some(HoldoutRecord {
                rows: h.len(),
                sha256: sha256_hex(&data),
            });
            self.blobs.put(&holdout_key(&version), data).await?;
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        if let Some(signer) = &self.signer {
            let sig = serde_json::to_vec_pretty(&signer.sign(&json)).expect("signature serialises");
            self.blobs
                .put(&signature_key(&version), Bytes::from(sig))
                .await?;
        }
        self.blobs
            .put(&manifest_key(&version), Bytes::from(json))
            .await?;
        Ok(manifest)
    }

    /// A version's manifest as stored.
    async fn manifest_bytes(&self, version: &str) -> Result<Bytes, RegistryError> {
        let key = manifest_key(version);
        let blob = self.blobs.get(&key).await.map_err(|e| match e {
            StorageError::NotFound { .. } => RegistryError::UnknownVersion(version.into()),
            other => other.into(),
        })?;
        Ok(blob.data)
    }

    fn parse_manifest(version: &str, bytes: &[u8]) -> Result<Manifest, RegistryError> {
        Manifest::parse(bytes).map_err(|message| RegistryError::Corrupt {
            key: manifest_key(version),
            message,
        })
    }

    /// A version's manifest (its signature is not checked: [`ModelStore::get`] does).
    pub async fn manifest(&self, version: &str) -> Result<Manifest, RegistryError> {
        Self::parse_manifest(version, &self.manifest_bytes(version).await?)
    }

    /// A version's manifest, its signature checked as [`ModelStore::get`] checks it,
    /// without reading the model file.
    pub async fn manifest_verified(&self, version: &str) -> Result<Manifest, RegistryError> {
        let bytes = self.manifest_bytes(version).await?;
        self.verify_signature(version, &bytes).await?;
        Self::parse_manifest(version, &bytes)
    }

    /// Check a version's manifest signature against the trusted keys (`Ok` when none
    /// are configured).
    async fn verify_signature(&self, version: &str, manifest: &[u8]) -> Result<(), RegistryError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let refuse = |message: String| RegistryError::Signature {
            version: version.into(),
            message,
        };
        let blob = match self.blobs.get(&signature_key(version)).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(refuse("the version is not signed".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let sig = ManifestSignature::parse(&blob.data).map_err(|e| refuse(e.to_string()))?;
        sig.verify(manifest, &self.trusted).map_err(refuse)
    }

    /// The rows a version held out from training, if its manifest records them (checked
    /// against the manifest's SHA-256).
    pub async fn holdout(&self, manifest: &Manifest) -> Result<Option<HoldoutSet>, RegistryError> {
        let Some(record) = &manifest.holdout else {
            return Ok(None);
        };
        let key = holdout_key(&manifest.version);
        let blob = self.blobs.get(&key).await?;
        let actual = sha256_hex(&blob.data);
        if actual != record.sha256 {
            return Err(RegistryError::Corrupt {
                key,
                message: format!(
                    "SHA-256 {actual} does not match the manifest's {}",
                    record.sha256
                ),
            });
        }
        HoldoutSet::from_bytes(&blob.data)
            .map(Some)
            .map_err(|message| RegistryError::Corrupt { key, message })
    }

    /// Load a version: its manifest signature (when trusted keys are configured), then
    /// its checksum against the manifest, then the model file's own validation.
    pub async fn get(&self, version: &str) -> Result<(Model, Manifest), RegistryError> {
        let manifest = self.manifest_verified(version).await?;
        let blob = self.blobs.get(&model_key(version)).await?;
        let actual = sha256_hex(&blob.data);
        if actual != manifest.sha256 {
            return Err(RegistryError::Checksum {
                version: version.into(),
                expected: manifest.sha256,
                actual,
            });
        }
        let mut model = Model::from_bytes(&blob.data).map_err(|source| RegistryError::Model {
            version: version.into(),
            source,
        })?;
        if let Some(reference) = manifest.reference.clone() {
            model = model
                .with_reference(reference)
                .map_err(|source| RegistryError::Model {
                    version: version.into(),
                    source,
                })?;
        }
        Ok((model, manifest))
    }

    /// Load a version and run the one validation path on it: checksum and structure
    /// ([`ModelStore::get`]), the manifest's features against the model's, then
    /// [`Model::check`] with `expected` features and the manifest's canaries. Used at
    /// start-up, on hot reload, and by the commands that take a stored version.
    pub async fn get_checked(
        &self,
        version: &str,
        expected: Option<&[String]>,
    ) -> Result<(Model, Manifest), Rejection> {
        let (model, manifest) = self.get(version).await?;
        if manifest.features != model.meta().features {
            return Err(Rejection::Manifest(format!(
                "the manifest lists [{}], the model file [{}]",
                manifest.features.join(", "),
                model.meta().features.join(", ")
            )));
        }
        if manifest.canaries.is_empty() {
            tracing::warn!(
                version,
                "the manifest records no canaries (published by an older release); only the smoke rows are checked"
            );
        }
        model.check(expected, &manifest.canaries)?;
        if let Some(computed) = &self.serving_velocity {
            crate::velocity::config::check_serves(&model, computed.as_deref())
                .map_err(|why| Rejection::Check(CheckError::Features(why)))?;
        }
        Ok((model, manifest))
    }

    /// Every stored version (those with a manifest), oldest name first.
    pub async fn list(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self
            .blobs
            .list("models/")
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix("models/")?
                    .strip_suffix("/manifest.json")
                    .map(str::to_owned)
            })
            .collect())
    }

    /// The serving version, if any.
    pub async fn latest(&self) -> Result<Option<Latest>, RegistryError> {
        self.latest_if_changed(None).await
    }

    /// The serving version unless the pointer still has entity tag `etag` (`None` then).
    /// On S3 an unchanged pointer costs one conditional GET with no body.
    pub async fn latest_if_changed(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<Latest>, RegistryError> {
        self.pointer_if_changed(LATEST_KEY, etag).await
    }

    /// The pointer at `key` (`LATEST_KEY` or `CANDIDATE_KEY`) unless it still has entity
    /// tag `etag`.
    pub async fn pointer_if_changed(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<Latest>, RegistryError> {
        read_pointer(self.blobs.as_ref(), key, etag, |key, message| {
            RegistryError::Corrupt { key, message }
        })
        .await
    }

    /// Serve `version`: check that it loads and passes the model checks, then move
    /// `LATEST` to it with a conditional write. Running detectors pick it up.
    pub async fn promote(&self, version: &str) -> Result<Moved, MoveError> {
        let current = self.latest().await?;
        self.get_checked(version, None)
            .await
            .map_err(|reason| MoveError::Rejected {
                version: version.into(),
                reason,
            })?;
        match self.set_latest(version, current.as_ref()).await {
            Ok(_) => Ok(Moved {
                from: current.map(|c| c.version),
                to: version.into(),
            }),
            Err(RegistryError::Storage(StorageError::PreconditionFailed { .. })) => {
                Err(MoveError::Concurrent)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Serve the current version's parent again ([`ModelStore::promote`] of it).
    pub async fn rollback(&self) -> Result<Moved, MoveError> {
        let current = self
            .latest()
            .await?
            .ok_or_else(|| MoveError::NoLatest(self.describe()))?;
        let parent = self
            .manifest(&current.version)
            .await?
            .parent
            .ok_or_else(|| MoveError::NoParent(current.version.clone()))?;
        self.promote(&parent).await
    }

    /// Point `CANDIDATE` at `version` (unconditionally: the newest candidate wins).
    pub async fn set_candidate(&self, version: &str) -> Result<(), RegistryError> {
        self.manifest(version).await?;
        self.blobs
            .put(CANDIDATE_KEY, Bytes::from(format!("{version}\n")))
            .await?;
        Ok(())
    }

    /// Point `LATEST` at `version`, only if the pointer is still `expected` (or absent when
    /// `expected` is `None`): two publishers cannot interleave. Returns the new pointer.
    pub async fn set_latest(
        &self,
        version: &str,
        expected: Option<&Latest>,
    ) -> Result<Latest, RegistryError> {
        self.manifest(version).await?;
        let condition = match expected {
            Some(l) => Condition::IfMatch(l.etag.clone()),
            None => Condition::IfAbsent,
        };
        let etag = self
            .blobs
            .put_if(LATEST_KEY, Bytes::from(format!("{version}\n")), condition)
            .await?;
        Ok(Latest {
            version: version.into(),
            etag,
        })
    }
}
/// A pointer object (`LATEST`, `rules/ACTIVE`): the version it names and its entity tag;
/// `None` when it is absent or its tag is still `etag`. One that holds no version name is
/// `corrupt(key, message)`.
pub(crate) async fn read_pointer<E: From<StorageError>>(
    blobs: &dyn BlobStore,
    key: &str,
    etag: Option<&str>,
    corrupt: impl FnOnce(String, String) -> E,
) -> Result<Option<Latest>, E> {
    match blobs.get_if_changed(key, etag).await {
        Ok(Some(blob)) => {
            let version = std::str::from_utf8(&blob.data)
                .map(str::trim)
                .ok()
                .filter(|v| !v.is_empty() && !v.contains('/'))
                .ok_or_else(|| corrupt(key.into(), "not a version name".into()))?;
            Ok(Some(Latest {
                version: version.to_owned(),
                etag: blob.etag,
            }))
        }
        Ok(None) | Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
