//! A directory as a [`BlobStore`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Blob, BlobStore, Condition, ObjectInfo, StorageError, Temporary, check_key};

/// Files under a root directory. Writes go to a hidden temporary file in the target
/// directory, are synced, and are renamed into place; conditional writes hold an
/// exclusive lock on a sibling `.lock` file.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
    /// Makes temporary names unique within the process (shared by clones).
    counter: Arc<AtomicU64>,
}

/// Temporary files start with this, and listings skip them.
const TMP_PREFIX: &str = ".tmp-";

impl LocalStore {
    /// A store rooted at `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| StorageError::NoContainer {
            store: root.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            root: Arc::new(root),
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, key: &str, e: &std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound {
                store: self.describe(),
                key: key.into(),
            }
        } else {
            StorageError::Other {
                store: self.describe(),
                message: format!("{key}: {e}"),
                retryable: false,
            }
        }
    }

    fn etag(data: &[u8]) -> String {
        Sha256::digest(data)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Write `data` to a synced temporary file next to `path`, returning its path.
    fn write_tmp(&self, path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}-{name}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(tmp)
    }

    fn put_sync(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let tmp = self.write_tmp(&path, data).map_err(|e| self.io(key, &e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _removed = std::fs::remove_file(&tmp);
            self.io(key, &e)
        })?;
        // The rename is durable once its directory is: a crash must not bring back the
        // old object (or no object) after `put` returned.
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(key, &e))
    }

    /// Create `path` only if nothing is there: the data goes to a temporary file, which
    /// is hard-linked to `path` (atomic, and refused when `path` exists). No lock file, so
    /// a lake's files need none beside them. `None` when the file system cannot link:
    /// the caller falls back to a lock file.
    fn put_if_absent(
        &self,
        key: &str,
        path: &Path,
        data: &[u8],
    ) -> Option<Result<String, StorageError>> {
        let tmp = match self.write_tmp(path, data) {
            Ok(t) => t,
            Err(e) => return Some(Err(self.io(key, &e))),
        };
        let linked = std::fs::hard_link(&tmp, path);
        let _removed = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Some(Err(StorageError::PreconditionFailed {
                    store: self.describe(),
                    key: key.into(),
                }));
            }
            Err(e) => {
                tracing::debug!(key, error = %e, "no hard links here: a lock file guards the write");
                return None;
            }
        }
        let dir = path.parent().unwrap_or(&self.root);
        Some(
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map(|()| Self::etag(data))
                .map_err(|e| self.io(key, &e)),
        )
    }

    fn put_if_sync(
        &self,
        key: &str,
        data: &[u8],
        condition: &Condition,
    ) -> Result<String, StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io(key, &e))?;
        if let Condition::IfAbsent = condition
            && let Some(done) = self.put_if_absent(key, &path, data)
        {
            return done;
        }
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(lock_name))
            .map_err(|e| self.io(key, &e))?;
        lock.lock().map_err(|e| self.io(key, &e))?;
        let current = match std::fs::read(&path) {
            Ok(d) => Some(Self::etag(&d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(key, &e)),
        };
        let ok = match condition {
            Condition::IfAbsent => current.is_none(),
            Condition::IfMatch(etag) => current.as_deref() == Some(etag.as_str()),
        };
        if !ok {
            return Err(StorageError::PreconditionFailed {
                store: self.describe(),
                key: key.into(),
            });
        }
        self.put_sync(key, data)?;
        Ok(Self::etag(data))
    }

    /// Every file under the root with its relative path (`/`-separated), name and
    /// metadata (directories are walked, not listed).
    fn walk(
        &self,
        prefix: &str,
        mut f: impl FnMut(String, &str, &std::fs::Metadata),
    ) -> Result<(), StorageError> {
        // From the deepest directory the prefix names.
        let start = match prefix.rsplit_once('/') {
            Some((dir, _)) if check_key(dir).is_ok() => self.root.join(dir),
            _ => self.root.to_path_buf(),
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(prefix, &e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io(prefix, &e))?;
                let meta = entry.metadata().map_err(|e| self.io(prefix, &e))?;
                if meta.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(self.root.as_path())
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                if rel.starts_with(prefix) {
                    f(rel, &entry.file_name().to_string_lossy(), &meta);
                }
            }
        }
        Ok(())
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out = Vec::new();
        self.walk(prefix, |key, name, meta| {
            if !name.starts_with(TMP_PREFIX) && !name.ends_with(".lock") {
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                });
            }
        })?;
        out.sort();
        Ok(out)
    }

    /// Temporary files (`.tmp-<pid>-<n>-<object>`) under `prefix`.
    fn temporaries_sync(&self, prefix: &str) -> Result<Vec<Temporary>, StorageError> {
        let mut out = Vec::new();
        self.walk(prefix, |key, name, meta| {
            let Some(object) = name
                .strip_prefix(TMP_PREFIX)
                .and_then(|rest| rest.splitn(3, '-').nth(2))
            else {
                return;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default();
            out.push(Temporary {
                path: key,
                object: object.to_owned(),
                age,
            });
        })?;
        Ok(out)
    }
}

/// Run blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Other {
            store: "local".into(),
            message: format!("blocking task failed: {e}"),
            retryable: false,
        })
    })
}

#[async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let me = self.clone();
        let key = key.to_owned();
        blocking(move || me.put_sync(&key, &data)).await
    }

    async fn put_if(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition,
    ) -> Result<String, StorageError> {
        let me = self.clone();
        let key = key.to_owned();
        blocking(move || me.put_if_sync(&key, &data, &condition)).await
    }

    async fn get(&self, key: &str) -> Result<Blob, StorageError> {
        let path = self.path(key)?;
        let data = tokio::fs::read(&path).await.map_err(|e| self.io(key, &e))?;
        let etag = Self::etag(&data);
        Ok(Blob {
            data: data.into(),
            etag,
        })
    }

    async fn check(&self) -> Result<(), StorageError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let probe = me
                .root
                .join(format!("{TMP_PREFIX}check-{}", std::process::id()));
            std::fs::create_dir_all(me.root.as_path())
                .and_then(|()| std::fs::write(&probe, b""))
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| me.io("", &e))
        })
        .await
        .map_err(|e| StorageError::Other {
            store: self.describe(),
            message: e.to_string(),
            retryable: false,
        })?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let me = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || me.list_sync(&prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(key, &e)),
            _ => Ok(()),
        }
    }

    async fn temporaries(&self, prefix: &str) -> Result<Vec<Temporary>, StorageError> {
        let me = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || me.temporaries_sync(&prefix)).await
    }

    async fn delete_temporary(&self, temporary: &Temporary) -> Result<(), StorageError> {
        // Its path is the one `temporaries` walked to: relative, under the root.
        self.delete(&temporary.path).await
    }
}
