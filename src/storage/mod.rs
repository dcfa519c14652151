//! Object storage behind one trait: the lake and the model registry are written once
//! against [`BlobStore`] and run on the local filesystem, S3, or HDFS.
//!
//! - [`local`]: a directory; writes go to a temporary file that is renamed into place.
//! - [`s3`]: S3 (aws-sdk-s3); multipart for large objects, ETag-aware reads, conditional
//!   writes (`If-None-Match: *`, `If-Match`).
//! - [`hdfs`]: HDFS (hdfs-native); temporary file, then rename.
//! - [`url`]: `file://`, `s3://` and `hdfs://` locations and opening a store from one.

pub mod config;
pub mod hdfs;
pub mod local;
pub mod s3;
pub mod url;

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::retry::Retryable;

pub use config::S3Access;
pub use url::{Location, S3Settings, open};

/// Why a storage operation failed. Messages name the endpoint or key, never a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StorageError {
    /// No object under this key.
    #[error("{store}: {key}: not found")]
    NotFound {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// The bucket (or root directory) does not exist.
    #[error("{store}: bucket or root does not exist: {message}")]
    NoContainer {
        /// The store.
        store: String,
        /// Details.
        message: String,
    },
    /// The service could not be reached (connection refused, timeout, DNS).
    #[error("{endpoint}: unreachable: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Details.
        message: String,
    },
    /// The credentials were refused.
    #[error("{endpoint}: access denied; check the credentials ({message})")]
    Denied {
        /// The endpoint.
        endpoint: String,
        /// The service's error code.
        message: String,
    },
    /// A conditional write lost: the object changed (or exists) meanwhile.
    #[error("{store}: {key}: precondition failed (written concurrently)")]
    PreconditionFailed {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// The backend cannot do this operation.
    #[error("{store}: {operation} is not supported")]
    Unsupported {
        /// The store.
        store: String,
        /// The operation.
        operation: &'static str,
    },
    /// A key that is not a safe relative path.
    #[error("invalid key {key:?}: {message}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong.
        message: &'static str,
    },
    /// Anything else; `retryable` says whether another attempt may succeed.
    #[error("{store}: {message}")]
    Other {
        /// The store.
        store: String,
        /// Details.
        message: String,
        /// Server errors and throttling are retryable.
        retryable: bool,
    },
}

impl Retryable for StorageError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Other {
                    retryable: true,
                    ..
                }
        )
    }
}

/// An object's bytes and its entity tag (changes whenever the content does).
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// Content.
    pub data: Bytes,
    /// Entity tag.
    pub etag: String,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    /// Key relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A condition on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if no object exists under the key.
    IfAbsent,
    /// Only if the current object has this entity tag.
    IfMatch(String),
}

/// Object storage. Keys are relative `/`-separated paths. A `put` is atomic for readers:
/// they see the old object or the new one, never part of one.
#[async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// Where the store points, for messages (never includes credentials).
    fn describe(&self) -> String;

    /// Write an object, replacing any existing one.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Write only if `condition` holds; returns the new entity tag.
    async fn put_if(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition,
    ) -> Result<String, StorageError>;

    /// Read an object.
    async fn get(&self, key: &str) -> Result<Blob, StorageError>;

    /// Read an object unless its entity tag is still `etag` (then `None`, and for stores
    /// that support it, no body is transferred).
    async fn get_if_changed(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<Blob>, StorageError> {
        let blob = self.get(key).await?;
        Ok((Some(blob.etag.as_str()) != etag).then_some(blob))
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Delete an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Temporary files that interrupted writes left under `prefix`: stores that write
    /// under a temporary name and then rename (local disk, HDFS) can leave them when a
    /// process dies mid-write. None on S3 (a PUT is whole or absent).
    async fn temporaries(&self, prefix: &str) -> Result<Vec<Temporary>, StorageError> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Delete one of [`BlobStore::temporaries`].
    async fn delete_temporary(&self, temporary: &Temporary) -> Result<(), StorageError> {
        let _ = temporary;
        Ok(())
    }

    /// A cheap probe at start-up: the store is reachable, its bucket (or root) exists,
    /// and the credentials are accepted. Errors are classified as for any operation, so
    /// the caller can refuse bad configuration and wait out an outage.
    async fn check(&self) -> Result<(), StorageError>;
}

/// A temporary file an interrupted write left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporary {
    /// Its path in the store's own terms (for [`BlobStore::delete_temporary`]).
    pub path: String,
    /// The name of the object it was being written as (its last path component).
    pub object: String,
    /// How long since it was last written.
    pub age: std::time::Duration,
}

/// Refuse keys that could escape the store's root or are not plain relative paths.
pub(crate) fn check_key(key: &str) -> Result<(), StorageError> {
    let bad = |message| {
        Err(StorageError::InvalidKey {
            key: key.into(),
            message,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("must be relative");
    }
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, `.` or `..` path component");
    }
    if key.contains('\0') {
        return bad("contains NUL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_safe_relative_paths() {
        assert!(check_key("models/v1/model.fsm").is_ok());
        for k in ["", "/abs", "a/../b", "a//b", "./a", "a/."] {
            assert!(check_key(k).is_err(), "{k:?}");
        }
    }
}
