//! HDFS as a [`BlobStore`] (hdfs-native).

use async_trait::async_trait;
use bytes::Bytes;
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Blob, BlobStore, Condition, ObjectInfo, StorageError, Temporary, check_key};

/// Temporary files are `_tmp.<object>.<pid>.<n>` beside their object, renamed into place
/// once closed.
const TMP_PREFIX: &str = "_tmp.";

/// A directory on HDFS. Writes go to a temporary file in the target directory, which is
/// renamed into place once closed, so readers never see a partial file.
#[derive(Clone)]
pub struct HdfsStore {
    client: Arc<Client>,
    url: String,
    root: String,
    block_size: Option<u64>,
    counter: Arc<AtomicU64>,
    timeout: Duration,
}

impl std::fmt::Debug for HdfsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HdfsStore")
            .field("url", &self.url)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl HdfsStore {
    /// Connect to the NameNode at `url` (`hdfs://host:port`), storing under `root`.
    /// `block_size` overrides the server's default block size for new files.
    pub fn new(url: &str, root: &str, block_size: Option<u64>) -> Result<Self, StorageError> {
        let client =
            ClientBuilder::new()
                .with_url(url)
                .build()
                .map_err(|e| StorageError::Unreachable {
                    endpoint: url.into(),
                    message: e.to_string(),
                })?;
        Ok(Self {
            client: Arc::new(client),
            url: url.into(),
            root: format!("/{}", root.trim_matches('/')),
            block_size,
            counter: Arc::new(AtomicU64::new(0)),
            timeout: Duration::from_secs(30),
        })
    }

    fn path(&self, key: &str) -> Result<String, StorageError> {
        check_key(key)?;
        Ok(format!("{}/{key}", self.root.trim_end_matches('/')))
    }

    fn error(&self, key: &str, e: HdfsError) -> StorageError {
        match e {
            HdfsError::FileNotFound(_) => StorageError::NotFound {
                store: self.describe(),
                key: key.into(),
            },
            HdfsError::RPCError(class, _) if class.contains("FileNotFoundException") => {
                StorageError::NotFound {
                    store: self.describe(),
                    key: key.into(),
                }
            }
            HdfsError::AlreadyExists(_) => StorageError::PreconditionFailed {
                store: self.describe(),
                key: key.into(),
            },
            HdfsError::RPCError(class, _) if class.contains("FileAlreadyExistsException") => {
                StorageError::PreconditionFailed {
                    store: self.describe(),
                    key: key.into(),
                }
            }
            HdfsError::IOError(io) => StorageError::Unreachable {
                endpoint: self.url.clone(),
                message: io.to_string(),
            },
            HdfsError::RPCError(class, msg) if class.contains("AccessControlException") => {
                StorageError::Denied {
                    endpoint: self.url.clone(),
                    message: format!("{class}: {msg}"),
                }
            }
            other => {
                let retryable = matches!(
                    other,
                    HdfsError::DataTransferError(_) | HdfsError::BlocksNotFound(_)
                ) || matches!(&other, HdfsError::RPCError(c, _)
                        if c.contains("SafeModeException") || c.contains("RetriableException"));
                StorageError::Other {
                    store: self.describe(),
                    message: format!("{key}: {other}"),
                    retryable,
                }
            }
        }
    }

    /// A temporary name beside `path`.
    fn tmp_path(&self, path: &str) -> String {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        format!(
            "{dir}/{TMP_PREFIX}{name}.{}.{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// After a write that failed or timed out (its writer dropped unclosed, which leaves
    /// the file behind): delete its temporary file, within the timeout, best effort (what
    /// stays is deleted at the writer's next start: `LakeWriter::clean_temporaries`).
    async fn forget(&self, tmp: &str) {
        let _gone = tokio::time::timeout(self.timeout, self.client.delete(tmp, false)).await;
    }

    async fn write_tmp(&self, key: &str, tmp: &str, data: Bytes) -> Result<(), StorageError> {
        let mut opts = WriteOptions::default().create_parent(true);
        if let Some(b) = self.block_size {
            opts = opts.block_size(b);
        }
        let mut w = self
            .client
            .create(tmp, opts)
            .await
            .map_err(|e| self.error(key, e))?;
        w.write_bytes(data).await.map_err(|e| self.error(key, e))?;
        w.close().await.map_err(|e| self.error(key, e))
    }

    /// Give up on an operation after the store's timeout: the client keeps reconnecting
    /// to a NameNode that is down, and callers need a bounded answer naming the endpoint.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unreachable {
                    endpoint: self.url.clone(),
                    message: format!("no answer within {:?}", self.timeout),
                })
            })
    }

    /// Set the per-operation timeout (default 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn etag(length: usize, mtime: u64) -> String {
        format!("{length}-{mtime}")
    }
}

impl HdfsStore {
    async fn put_inner(
        &self,
        key: &str,
        path: &str,
        tmp: &str,
        data: Bytes,
    ) -> Result<(), StorageError> {
        self.write_tmp(key, tmp, data).await?;
        self.client
            .rename(tmp, path, true)
            .await
            .map_err(|e| self.error(key, e))
    }

    async fn put_if_inner(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition,
    ) -> Result<String, StorageError> {
        let Condition::IfAbsent = condition else {
            return Err(StorageError::Unsupported {
                store: self.describe(),
                operation: "compare-and-swap (If-Match) writes",
            });
        };
        let path = self.path(key)?;
        let tmp = self.tmp_path(&path);
        let written = self.bounded(self.write_tmp(key, &tmp, data)).await;
        // Rename without overwrite fails with FileAlreadyExistsException when the target
        // exists (mapped to PreconditionFailed): an atomic if-absent.
        let renamed = match written {
            Ok(()) => {
                self.bounded(async {
                    self.client
                        .rename(&tmp, &path, false)
                        .await
                        .map_err(|e| self.error(key, e))
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            self.forget(&tmp).await;
            return Err(e);
        }
        let st = self
            .bounded(async {
                self.client
                    .get_file_info(&path)
                    .await
                    .map_err(|e| self.error(key, e))
            })
            .await?;
        Ok(Self::etag(st.length, st.modification_time))
    }

    async fn get_inner(&self, key: &str) -> Result<Blob, StorageError> {
        let path = self.path(key)?;
        let mut r = self
            .client
            .read(&path)
            .await
            .map_err(|e| self.error(key, e))?;
        let len = r.file_length();
        let data = r.read_bytes(len).await.map_err(|e| self.error(key, e))?;
        let st = self
            .client
            .get_file_info(&path)
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(Blob {
            data,
            etag: Self::etag(st.length, st.modification_time),
        })
    }

    /// The files under the deepest directory `prefix` names whose key starts with it:
    /// key, name and status.
    async fn files(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, hdfs_native::client::FileStatus)>, StorageError> {
        let dir = match prefix.rsplit_once('/') {
            Some((d, _)) => format!("{}/{d}", self.root.trim_end_matches('/')),
            None => self.root.clone(),
        };
        let statuses = match self.client.list_status(&dir, true).await {
            Ok(s) => s,
            Err(e) => match self.error(prefix, e) {
                StorageError::NotFound { .. } => return Ok(Vec::new()),
                other => return Err(other),
            },
        };
        let root = format!("{}/", self.root.trim_end_matches('/'));
        Ok(statuses
            .into_iter()
            .filter(|s| !s.isdir)
            .filter_map(|s| {
                let rel = s.path.strip_prefix(&root)?.to_owned();
                let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
                rel.starts_with(prefix).then_some((rel, name, s))
            })
            .collect())
    }

    async fn list_inner(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out: Vec<ObjectInfo> = self
            .files(prefix)
            .await?
            .into_iter()
            .filter(|(_, name, _)| !name.starts_with(TMP_PREFIX))
            .map(|(key, _, s)| ObjectInfo {
                key,
                size: s.length as u64,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Temporary files (`_tmp.<object>.<pid>.<n>`) under `prefix`.
    async fn temporaries_inner(&self, prefix: &str) -> Result<Vec<Temporary>, StorageError> {
        let now_ms = crate::clock::now_ms().max(0) as u64;
        Ok(self
            .files(prefix)
            .await?
            .into_iter()
            .filter_map(|(_, name, s)| {
                let object = name
                    .strip_prefix(TMP_PREFIX)?
                    .rsplitn(3, '.')
                    .nth(2)?
                    .to_owned();
                Some(Temporary {
                    path: s.path,
                    object,
                    age: Duration::from_millis(now_ms.saturating_sub(s.modification_time)),
                })
            })
            .collect())
    }

    async fn delete_inner(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.client.delete(&path, false).await {
            Ok(_) => Ok(()),
            Err(e) => match self.error(key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[async_trait]
impl BlobStore for HdfsStore {
    fn describe(&self) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), self.root)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let tmp = self.tmp_path(&path);
        let written = self.bounded(self.put_inner(key, &path, &tmp, data)).await;
        if written.is_err() {
            self.forget(&tmp).await;
        }
        written
    }

    async fn put_if(
        &self,
        key: &str,
        data: Bytes,
        condition: Condition,
    ) -> Result<String, StorageError> {
        // Bounded step by step inside, so a timed-out write still deletes its temporary.
        self.put_if_inner(key, data, condition).await
    }

    async fn get(&self, key: &str) -> Result<Blob, StorageError> {
        self.bounded(self.get_inner(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.bounded(self.list_inner(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.bounded(self.delete_inner(key)).await
    }

    async fn temporaries(&self, prefix: &str) -> Result<Vec<Temporary>, StorageError> {
        self.bounded(self.temporaries_inner(prefix)).await
    }

    async fn delete_temporary(&self, temporary: &Temporary) -> Result<(), StorageError> {
        self.bounded(async {
            match self.client.delete(&temporary.path, false).await {
                Ok(_) => Ok(()),
                Err(e) => match self.error(&temporary.object, e) {
                    StorageError::NotFound { .. } => Ok(()),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.bounded(async {
            match self.client.get_file_info("/").await {
                Ok(_) => Ok(()),
                Err(e) => Err(self.error("", e)),
            }
        })
        .await
    }
}
