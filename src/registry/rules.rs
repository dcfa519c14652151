//! Rule sets and value lists, stored beside the models on the same [`BlobStore`], signed
//! and checked the same way.
//!
//! ```text
//! rules/<version>/rules.txt        the rule set's source (written once, never replaced)
//! rules/<version>/manifest.json    sha256 and size of the source, when, mode, rules, lists
//! rules/<version>/manifest.sig     ed25519 signature of the manifest (optional)
//! rules/ACTIVE                     the active version, moved by conditional writes
//! lists/<name>/<version>.txt       one value per line, sorted (written once)
//! lists/<name>/<version>.sig       ed25519 signature of the list's bytes (optional)
//! lists/<name>/LATEST              the list's current version, moved by conditional writes
//! ```
//! A rule-set version is a draft until `rules/ACTIVE` names it. Versions are named
//! `<UTC time>-<first 8 hex of the SHA-256>`, so they sort by age. A list changes by
//! writing a new version and moving its pointer with a conditional write: two admins
//! adding values at once both land (the second reads the first's version and retries).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Latest, ManifestSignature, ModelStore, PublicKey, SigningKey};
use crate::model::format::sha256_hex;
use crate::rules::{Catalog, Lists, RuleError, RuleSet, compile};

use crate::storage::{BlobStore, Condition, StorageError};

/// Key of the pointer to the active rule set.
pub const ACTIVE_KEY: &str = "rules/ACTIVE";

/// Longest list value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// Conditional moves tried before a list change gives up on a busy list.
const LIST_ATTEMPTS: usize = 8;

/// Rule-set and list store errors.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An object that does not parse or does not match its manifest.
    #[error("{key}: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The rule-set version is not in the store.
    #[error("rule set {0} is not in the store")]
    UnknownVersion(String),
    /// The list is not in the store.
    #[error("list @{0} does not exist")]
    UnknownList(String),
    /// Trusted keys are configured and the signature is missing or wrong.
    #[error("{what}: signature: {message}")]
    Signature {
        /// The rule-set version or list version.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The rule set does not compile (against the serving model's features and the
    /// lists as they are now).
    #[error("rule set {version}: {source}")]
    Compile {
        /// The version (`draft` before it is stored).
        version: String,
        /// Where and why.
        #[source]
        source: RuleError,
    },
    /// A list name or value that cannot be stored.
    #[error("{0}")]
    Invalid(String),
    /// The store trusts signed versions only, and this process has no signing key.
    #[error(
        "the store trusts signed versions only (models.trusted_keys) and no signing key is configured (models.sign_key)"
    )]
    Unsigned,
    /// Someone else moved the pointer meanwhile; nothing changed.
    #[error("{0} moved while this ran; nothing changed, try again")]
    Concurrent(String),
}

/// One rule as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleSummary {
    /// Its name.
    pub name: String,
    /// `allow`, `review` or `block`.
    pub action: String,
    /// Its source text.
    pub text: String,
}

/// What a rule-set manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleManifest {
    /// The version.
    pub version: String,
    /// SHA-256 of `rules.txt`, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// When it was published (RFC 3339).
    pub created_at: String,
    /// `priority`, `first_matched` or `all_matched`.
    pub mode: String,
    /// The rules, in file order.
    pub rules: Vec<RuleSummary>,
    /// The lists it names.
    pub lists: Vec<String>,
    /// The entity features it names.
    pub derived: Vec<String>,
}

/// A rule-set version: its manifest and source.
#[derive(Debug, Clone)]
pub struct RuleVersion {
    /// The manifest.
    pub manifest: RuleManifest,
    /// The source text.
    pub text: String,
}

/// A move of `rules/ACTIVE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Activated {
    /// The version active before (none at first).
    pub from: Option<String>,
    /// The version active now.
    pub to: String,
}

/// One list's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ListVersion {
    /// The list.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Values in it.
    pub size: usize,
    /// Entity tag of its pointer, for cheap polling.
    #[serde(skip)]
    pub etag: String,
}

/// Rule sets and lists on the model store's blobs, with its signer and trusted keys.
#[derive(Debug, Clone)]
pub struct RuleStore {
    blobs: Arc<dyn BlobStore>,
    signer: Option<Arc<SigningKey>>,
    trusted: Arc<[PublicKey]>,
}

impl ModelStore {
    /// The rule sets and lists stored beside these models.
    #[must_use]
    pub fn rules(&self) -> RuleStore {
        RuleStore {
            blobs: self.blobs.clone(),
            signer: self.signer.clone(),
            trusted: self.trusted.clone(),
        }
    }
}

fn text_key(version: &str) -> String {
    format!("rules/{version}/rules.txt")
}

fn manifest_key(version: &str) -> String {
    format!("rules/{version}/manifest.json")
}

fn signature_key(version: &str) -> String {
    format!("rules/{version}/manifest.sig")
}

fn list_pointer(name: &str) -> String {
    format!("lists/{name}/LATEST")
}

/// The values of a list's stored text: one a line, blank lines ignored.
pub fn list_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.is_empty())
}

fn list_key(name: &str, version: &str) -> String {
    format!("lists/{name}/{version}.txt")
}

fn list_signature_key(name: &str, version: &str) -> String {
    format!("lists/{name}/{version}.sig")
}

/// A version name for `bytes` published now: sorts by time, unique by content.
fn version_name(bytes: &[u8]) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{}", &sha256_hex(bytes)[..8])
}

/// Refuse a list name the rule language could not name.
pub fn check_list_name(name: &str) -> Result<(), RulesError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(RulesError::Invalid(format!(
            "list name {name:?}: a letter or `_`, then letters, digits, `_`, `.` or `-` (at most 128)"
        )))
    }
}

/// Refuse a value a list cannot hold (empty, too long, or with a line break).
pub fn check_list_value(value: &str) -> Result<(), RulesError> {
    if value.trim().is_empty() || value.trim() != value {
        return Err(RulesError::Invalid(format!(
            "list value {value:?}: empty, or with spaces around it"
        )));
    }
    if value.len() > MAX_VALUE_BYTES || value.contains(['\n', '\r']) {
        return Err(RulesError::Invalid(format!(
            "list value {:?}: longer than {MAX_VALUE_BYTES} bytes or with a line break",
            value.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

impl RuleStore {
    /// Where the store points.
    #[must_use]
    pub fn describe(&self) -> String {
        self.blobs.describe()
    }

    fn check_publishable(&self) -> Result<(), RulesError> {
        if !self.trusted.is_empty() && self.signer.is_none() {
            return Err(RulesError::Unsigned);
        }
        Ok(())
    }

    /// Sign `bytes` into `key` when this store has a signer.
    async fn sign(&self, key: &str, bytes: &[u8]) -> Result<(), RulesError> {
        if let Some(signer) = &self.signer {
            let sig = serde_json::to_vec_pretty(&signer.sign(bytes)).expect("signature serialises");
            self.blobs.put(key, Bytes::from(sig)).await?;
        }
        Ok(())
    }

    /// Check the signature at `key` over `bytes` against the trusted keys (`Ok` when none
    /// are configured).
    async fn verify(&self, what: &str, key: &str, bytes: &[u8]) -> Result<(), RulesError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let refuse = |message: String| RulesError::Signature {
            what: what.into(),
            message,
        };
        let blob = match self.blobs.get(key).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => return Err(refuse("not signed".into())),
            Err(e) => return Err(e.into()),
        };
        let sig = ManifestSignature::parse(&blob.data).map_err(|e| refuse(e.to_string()))?;
        sig.verify(bytes, &self.trusted).map_err(refuse)
    }

    /// Store `text` as a draft rule set once it compiles against `catalog`. Publishing
    /// the same text again returns the stored version.
    pub async fn publish(&self, text: &str, catalog: &Catalog) -> Result<RuleManifest, RulesError> {
        self.check_publishable()?;
        let set = compile(text, catalog).map_err(|source| RulesError::Compile {
            version: "draft".into(),
            source,
        })?;
        let sha256 = sha256_hex(text.as_bytes());
        if let Some(existing) = self
            .versions()
            .await?
            .into_iter()
            .find(|m| m.sha256 == sha256)
        {
            return Ok(existing);
        }
        let version = version_name(text.as_bytes());
        let manifest = RuleManifest {
            version: version.clone(),
            sha256,
            size_bytes: text.len() as u64,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            mode: set.mode().to_string(),
            rules: (0..set.len())
                .map(|i| RuleSummary {
                    name: set.name(i).to_string(),
                    action: set.action(i).to_string(),
                    text: set.text(i).to_owned(),
                })
                .collect(),
            lists: set.lists_used(),
            derived: set.derived_used(),
        };
        self.blobs
            .put_if(
                &text_key(&version),
                Bytes::from(text.to_owned()),
                Condition::IfAbsent,
            )
            .await?;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        self.sign(&signature_key(&version), &json).await?;
        self.blobs
            .put(&manifest_key(&version), Bytes::from(json))
            .await?;
        Ok(manifest)
    }

    /// A version's manifest and source: the manifest's signature (when trusted keys are
    /// configured), then the source against the manifest's checksum.
    pub async fn get(&self, version: &str) -> Result<RuleVersion, RulesError> {
        if version.is_empty() || version.contains('/') {
            return Err(RulesError::UnknownVersion(version.into()));
        }
        let bytes = match self.blobs.get(&manifest_key(version)).await {
            Ok(b) => b.data,
            Err(StorageError::NotFound { .. }) => {
                return Err(RulesError::UnknownVersion(version.into()));
            }
            Err(e) => return Err(e.into()),
        };
        self.verify(
            &format!("rule set {version}"),
            &signature_key(version),
            &bytes,
        )
        .await?;
        let manifest: RuleManifest =
            serde_json::from_slice(&bytes).map_err(|e| RulesError::Corrupt {
                key: manifest_key(version),
                message: e.to_string(),
            })?;
        let key = text_key(version);
        let blob = self.blobs.get(&key).await?;
        let actual = sha256_hex(&blob.data);
        if actual != manifest.sha256 {
            return Err(RulesError::Corrupt {
                key,
                message: format!(
                    "SHA-256 {actual} does not match the manifest's {}",
                    manifest.sha256
                ),
            });
        }
        let text = String::from_utf8(blob.data.to_vec()).map_err(|_| RulesError::Corrupt {
            key: text_key(version),
            message: "not UTF-8".into(),
        })?;
        Ok(RuleVersion { manifest, text })
    }

    /// A version, compiled against `catalog`: what a detector serves.
    pub async fn get_compiled(
        &self,
        version: &str,
        catalog: &Catalog,
    ) -> Result<(RuleVersion, RuleSet), RulesError> {
        let v = self.get(version).await?;
        let set = compile(&v.text, catalog).map_err(|source| RulesError::Compile {
            version: version.into(),
            source,
        })?;
        Ok((v, set))
    }

    /// Every stored version's manifest, oldest first (signatures not checked).
    pub async fn versions(&self) -> Result<Vec<RuleManifest>, RulesError> {
        let mut out = Vec::new();
        for o in self.blobs.list("rules/").await? {
            let Some(version) = o
                .key
                .strip_prefix("rules/")
                .and_then(|k| k.strip_suffix("/manifest.json"))
            else {
                continue;
            };
            let blob = self.blobs.get(&o.key).await?;
            match serde_json::from_slice::<RuleManifest>(&blob.data) {
                Ok(m) => out.push(m),
                Err(e) => {
                    tracing::warn!(version, error = %e, "rule-set manifest does not parse; skipped");
                }
            }
        }
        Ok(out)
    }

    /// The active version, unless its pointer still has entity tag `etag` (`None` then,
    /// and `None` when nothing is active).
    pub async fn active_if_changed(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<Latest>, RulesError> {
        super::read_pointer(self.blobs.as_ref(), ACTIVE_KEY, etag, |key, message| {
            RulesError::Corrupt { key, message }
        })
        .await
    }

    /// The active version, if any.
    pub async fn active(&self) -> Result<Option<Latest>, RulesError> {
        self.active_if_changed(None).await
    }

    /// Make `version` active once it loads and compiles against `catalog` (the serving
    /// model's entity features, the lists as they are): a conditional move, so two
    /// activations cannot interleave. Every detector picks it up at its next poll.
    pub async fn activate(
        &self,
        version: &str,
        catalog: &Catalog,
    ) -> Result<Activated, RulesError> {
        let current = self.active().await?;
        self.get_compiled(version, catalog).await?;
        let condition = match &current {
            Some(l) => Condition::IfMatch(l.etag.clone()),
            None => Condition::IfAbsent,
        };
        match self
            .blobs
            .put_if(ACTIVE_KEY, Bytes::from(format!("{version}\n")), condition)
            .await
        {
            Ok(_) => Ok(Activated {
                from: current.map(|c| c.version),
                to: version.into(),
            }),
            Err(StorageError::PreconditionFailed { .. }) => {
                Err(RulesError::Concurrent(ACTIVE_KEY.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The names of every stored list, sorted.
    pub async fn list_names(&self) -> Result<Vec<String>, RulesError> {
        Ok(self
            .blobs
            .list("lists/")
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix("lists/")?
                    .strip_suffix("/LATEST")
                    .map(str::to_owned)
            })
            .collect())
    }

    /// A list's pointer unless it still has entity tag `etag`.
    async fn list_pointer(
        &self,
        name: &str,
        etag: Option<&str>,
    ) -> Result<Option<Latest>, RulesError> {
        let key = list_pointer(name);
        match self.blobs.get_if_changed(&key, etag).await {
            Ok(Some(blob)) => {
                let version = std::str::from_utf8(&blob.data)
                    .map(str::trim)
                    .ok()
                    .filter(|v| !v.is_empty() && !v.contains('/'))
                    .ok_or_else(|| RulesError::Corrupt {
                        key,
                        message: "not a version name".into(),
                    })?;
                Ok(Some(Latest {
                    version: version.to_owned(),
                    etag: blob.etag,
                }))
            }
            Ok(None) | Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The values of one list version (signature checked when trusted keys are set).
    /// A list version's stored text (one value a line), verified.
    async fn list_text(&self, name: &str, version: &str) -> Result<String, RulesError> {
        let key = list_key(name, version);
        let blob = self.blobs.get(&key).await?;
        self.verify(
            &format!("list @{name} {version}"),
            &list_signature_key(name, version),
            &blob.data,
        )
        .await?;
        String::from_utf8(blob.data.to_vec()).map_err(|_| RulesError::Corrupt {
            key: key.clone(),
            message: "not UTF-8".into(),
        })
    }

    /// A list's current version and stored text, unless its pointer still has entity
    /// tag `etag` (`Ok(None)`: unchanged, or no such list). [`list_lines`] reads the
    /// values: no string per value is allocated, which matters for a million card ids.
    pub async fn list_text_if_changed(
        &self,
        name: &str,
        etag: Option<&str>,
    ) -> Result<Option<(ListVersion, String)>, RulesError> {
        let Some(pointer) = self.list_pointer(name, etag).await? else {
            return Ok(None);
        };
        let text = self.list_text(name, &pointer.version).await?;
        Ok(Some((
            ListVersion {
                name: name.into(),
                version: pointer.version,
                size: list_lines(&text).count(),
                etag: pointer.etag,
            },
            text,
        )))
    }

    /// A list's current version and values.
    pub async fn list(&self, name: &str) -> Result<(ListVersion, Vec<String>), RulesError> {
        check_list_name(name)?;
        let (version, text) = self
            .list_text_if_changed(name, None)
            .await?
            .ok_or_else(|| RulesError::UnknownList(name.into()))?;
        Ok((version, list_lines(&text).map(str::to_owned).collect()))
    }

    /// Every list, loaded: the lists a rule set evaluates against, and each pointer's
    /// version.
    pub async fn load_lists(&self) -> Result<(Lists, Vec<ListVersion>), RulesError> {
        let mut lists = Lists::new();
        let mut versions = Vec::new();
        for name in self.list_names().await? {
            if let Some((v, text)) = self.list_text_if_changed(&name, None).await? {
                lists.insert(&name, list_lines(&text));
                versions.push(v);
            }
        }
        Ok((lists, versions))
    }

    /// Change a list: add `add`, remove `remove` (a list is created by its first
    /// addition). A new version is written and the pointer moved conditionally; a
    /// concurrent change is read and the change applied again on top of it.
    pub async fn change_list(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<ListVersion, RulesError> {
        self.update_list(
            name,
            |values| {
                values.extend(add.iter().cloned());
                for r in remove {
                    values.remove(r);
                }
            },
            add,
        )
        .await
    }

    /// Replace a list's values with `values`.
    pub async fn replace_list(
        &self,
        name: &str,
        values: &[String],
    ) -> Result<ListVersion, RulesError> {
        self.update_list(
            name,
            |set| {
                set.clear();
                set.extend(values.iter().cloned());
            },
            values,
        )
        .await
    }

    async fn update_list(
        &self,
        name: &str,
        change: impl Fn(&mut BTreeSet<String>),
        new_values: &[String],
    ) -> Result<ListVersion, RulesError> {
        check_list_name(name)?;
        for v in new_values {
            check_list_value(v)?;
        }
        self.check_publishable()?;
        for _ in 0..LIST_ATTEMPTS {
            let current = self.list_pointer(name, None).await?;
            let mut values: BTreeSet<String> = match &current {
                Some(p) => list_lines(&self.list_text(name, &p.version).await?)
                    .map(str::to_owned)
                    .collect(),
                None => BTreeSet::new(),
            };
            change(&mut values);
            let mut text = String::with_capacity(values.iter().map(|v| v.len() + 1).sum());
            for v in &values {
                text.push_str(v);
                text.push('\n');
            }
            let version = version_name(text.as_bytes());
            let bytes = Bytes::from(text);
            self.sign(&list_signature_key(name, &version), &bytes)
                .await?;
            match self
                .blobs
                .put_if(&list_key(name, &version), bytes, Condition::IfAbsent)
                .await
            {
                // The same values written in the same second: the same version.
                Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let condition = match &current {
                Some(p) => Condition::IfMatch(p.etag.clone()),
                None => Condition::IfAbsent,
            };
            match self
                .blobs
                .put_if(
                    &list_pointer(name),
                    Bytes::from(format!("{version}\n")),
                    condition,
                )
                .await
            {
                Ok(etag) => {
                    return Ok(ListVersion {
                        name: name.into(),
                        version,
                        size: values.len(),
                        etag,
                    });
                }
                Err(StorageError::PreconditionFailed { .. }) => {
                    tracing::debug!(
                        list = name,
                        "list changed meanwhile; applying the change again"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RulesError::Concurrent(list_pointer(name)))
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
