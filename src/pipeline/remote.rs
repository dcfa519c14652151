//! Inputs anywhere: a local file, or an object or prefix on S3 or HDFS (or a local
//! directory given with a trailing `/`). Files are read one at a time; remote objects are
//! staged in a temporary file with their extension (the readers take paths), so disk and
//! memory hold one object at a time.

use std::io::Write;

use crate::schema::{Dataset, Format, ReadError, ReadOptions, ReadReport, read_dataset_continuing};
use crate::storage::{S3Settings, StorageError};
use crate::velocity::{OfflineFeatures, VelocitySpec};

/// An input that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The entity features asked for are not valid.
    #[error("velocity.features.{key}: {message}")]
    Features {
        /// The key under `velocity.features`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A file's rows could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store holding the input failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A downloaded object could not be staged on local disk.
    #[error("staging a downloaded object: {0}")]
    Stage(#[from] std::io::Error),
    /// A prefix with nothing to read.
    #[error("{0}: no .csv, .jsonl or .parquet files")]
    Empty(String),
    /// A location that names no file.
    #[error("{0}: not a file location")]
    NotAFile(String),
    /// The reader on the blocking pool panicked.
    #[error("reader task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Whether `input` needs [`for_each_file`] rather than a plain path read.
#[must_use]
pub fn is_remote(input: &str) -> bool {
    input.starts_with("s3://") || input.starts_with("hdfs://") || input.ends_with('/')
}

/// Read every supported file of `location` (`.csv`, `.jsonl`, `.parquet`, …; hidden
/// files skipped, in key order), calling `each` with its name and rows. With `velocity`,
/// rows carry their entity features, computed over the files as one history in time
/// order.
pub async fn for_each_file(
    location: &str,
    s3: &S3Settings,
    opts: ReadOptions,
    velocity: Option<&VelocitySpec>,
    each: &mut (dyn FnMut(&str, Dataset, ReadReport) + Send),
) -> Result<(), RemoteError> {
    let mut features = velocity
        .map(|v| OfflineFeatures::new(v.clone()))
        .transpose()
        .map_err(|e| RemoteError::Features {
            key: e.key,
            message: e.message,
        })?;
    let read = move |path: String, mut features: Option<OfflineFeatures>| async move {
        let (result, features) = tokio::task::spawn_blocking(move || {
            let r = read_dataset_continuing(&path, opts, features.as_mut());
            (r, features)
        })
        .await?;
        Ok::<_, RemoteError>((result, features))
    };
    if !is_remote(location) {
        let (d, r) = read(location.to_owned(), features).await?.0?;
        each(location, d, r);
        return Ok(());
    }
    let (root, keys) = objects(location, s3, |k| Format::from_path(k).is_some()).await?;
    if keys.is_empty() {
        return Err(RemoteError::Empty(location.to_owned()));
    }
    let mut read_any = false;
    for key in keys {
        let blob = root.get(&key).await?;
        let ext = key.rsplit_once('.').map_or("csv", |(_, e)| e);
        let mut tmp = tempfile::Builder::new()
            .suffix(&format!(".{ext}"))
            .tempfile()?;
        tmp.write_all(&blob.data)?;
        tmp.flush()?;
        drop(blob);
        let path = tmp.path().to_str().unwrap_or_default().to_owned();
        let (result, f) = read(path, features.take()).await?;
        features = f;
        let (d, r) = match result {
            // A file without rows adds nothing (the lake's empty files: what a takeover
            // puts in place of an unfinished write).
            Err(ReadError::Empty { .. }) => continue,
            other => other?,
        };
        read_any = true;
        let name = if location.ends_with('/') {
            format!("{location}{key}")
        } else {
            location.to_owned()
        };
        each(&name, d, r);
    }
    if !read_any {
        return Err(RemoteError::Empty(location.to_owned()));
    }
    Ok(())
}

/// The store holding `location` and the keys in it: every object under a prefix ending
/// in `/` that `wanted` accepts (hidden files skipped), or the one object named.
pub async fn objects(
    location: &str,
    s3: &S3Settings,
    wanted: impl Fn(&str) -> bool,
) -> Result<(std::sync::Arc<dyn crate::storage::BlobStore>, Vec<String>), RemoteError> {
    if let Some(prefix) = location.strip_suffix('/') {
        let store = crate::storage::open(&format!("{prefix}/"), Some(s3)).await?;
        let keys: Vec<String> = store
            .list("")
            .await?
            .into_iter()
            .map(|o| o.key)
            // Hidden names (`.…`, `_…`: temporary files, the lake's offset markers, Spark's
            // `_SUCCESS`) are not data, as Hadoop and Spark readers agree.
            .filter(|k| {
                wanted(k)
                    && !k
                        .split('/')
                        .any(|c| c.starts_with('.') || c.starts_with('_'))
            })
            .collect();
        Ok((store, keys))
    } else {
        let (parent, name) = location
            .rsplit_once('/')
            .ok_or_else(|| RemoteError::NotAFile(location.to_owned()))?;
        Ok((
            crate::storage::open(&format!("{parent}/"), Some(s3)).await?,
            vec![name.to_owned()],
        ))
    }
}

/// Every row of `location`, concatenated, with the combined report.
pub async fn read_all(
    location: &str,
    s3: &S3Settings,
    opts: ReadOptions,
    velocity: Option<&VelocitySpec>,
) -> Result<(Dataset, ReadReport), RemoteError> {
    let mut all = match velocity {
        Some(v) => Dataset::with_derived(0, v.names()),
        None => Dataset::default(),
    };
    let mut report = ReadReport::default();
    for_each_file(location, s3, opts, velocity, &mut |name, d, r| {
        tracing::info!(file = %name, rows = d.len(), "read");
        for i in 0..d.len() {
            all.push(d.row(i));
        }
        report.merge(r);
    })
    .await?;
    Ok((all, report))
}
