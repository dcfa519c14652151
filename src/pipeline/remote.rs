//! Inputs anywhere: a local file, or an object or prefix on S3 or HDFS (or a local
//! directory given with a trailing `/`). Files are read one at a time; remote objects are
//! staged in a temporary file with their extension (the readers take paths), so disk and
//! memory hold one object at a time.

use std::io::Write;

use crate::schema::{
    Dataset, Format, ReadError, ReadOptions, ReadReport, for_each_transaction,
    read_dataset_continuing,
};
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

/// The entity-feature state for reading a history with `velocity`, if any.
fn offline_features(
    velocity: Option<&VelocitySpec>,
) -> Result<Option<OfflineFeatures>, RemoteError> {
    velocity
        .map(|v| OfflineFeatures::new(v.clone()))
        .transpose()
        .map_err(|e| RemoteError::Features {
            key: e.key,
            message: e.message,
        })
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
    let mut features = offline_features(velocity)?;
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
        let tmp = stage(root.as_ref(), &key).await?;
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

/// An object of `store` copied into a temporary file with its extension (the readers
/// take paths), deleted when dropped.
async fn stage(
    store: &dyn crate::storage::BlobStore,
    key: &str,
) -> Result<tempfile::NamedTempFile, RemoteError> {
    let blob = store.get(key).await?;
    let ext = key.rsplit_once('.').map_or("csv", |(_, e)| e);
    let mut tmp = tempfile::Builder::new()
        .suffix(&format!(".{ext}"))
        .tempfile()?;
    tmp.write_all(&blob.data)?;
    tmp.flush()?;
    Ok(tmp)
}

/// Rows per chunk of [`for_each_chunk`].
pub const CHUNK_ROWS: usize = 65_536;

/// Every row of `location`, as [`for_each_file`] reads it, but in chunks of at most
/// `rows` rows, so that memory holds a few chunks, never a whole local file (a remote
/// object is downloaded whole, then read from a temporary file): `each` is called with
/// each chunk of a file in order, then once more with no rows and the file's
/// [`ReadReport`] (the chunks carry an empty one). A Parquet file is read batch by batch,
/// a CSV or JSON-lines file line by line, on a blocking thread that waits while two
/// chunks are queued. Files without rows are skipped; a location with no row at all is
/// [`RemoteError::Empty`].
pub async fn for_each_chunk(
    location: &str,
    s3: &S3Settings,
    opts: ReadOptions,
    velocity: Option<&VelocitySpec>,
    rows: usize,
    each: &mut (dyn FnMut(&str, Dataset, ReadReport) + Send),
) -> Result<(), RemoteError> {
    let mut features = offline_features(velocity)?;
    let names = velocity.map(VelocitySpec::names).unwrap_or_default();
    if !is_remote(location) {
        let rows = read_chunks(location, location, opts, &mut features, &names, rows, each).await?;
        return if rows == 0 {
            Err(RemoteError::Empty(location.to_owned()))
        } else {
            Ok(())
        };
    }
    let (root, keys) = objects(location, s3, |k| Format::from_path(k).is_some()).await?;
    let mut read = 0;
    for key in keys {
        let tmp = stage(root.as_ref(), &key).await?;
        let path = tmp.path().to_str().unwrap_or_default().to_owned();
        let name = if location.ends_with('/') {
            format!("{location}{key}")
        } else {
            location.to_owned()
        };
        read += read_chunks(&path, &name, opts, &mut features, &names, rows, each).await?;
    }
    if read == 0 {
        return Err(RemoteError::Empty(location.to_owned()));
    }
    Ok(())
}

/// One local file in chunks (see [`for_each_chunk`]), its entity features continuing
/// from `features`; the rows read. A file with no rows (an empty export, the lake's
/// placeholders) adds nothing.
async fn read_chunks(
    path: &str,
    name: &str,
    opts: ReadOptions,
    features: &mut Option<OfflineFeatures>,
    names: &[String],
    rows: usize,
    each: &mut (dyn FnMut(&str, Dataset, ReadReport) + Send),
) -> Result<usize, RemoteError> {
    let empty = {
        let names = names.to_vec();
        move || Dataset::with_derived(0, names.clone())
    };
    let (send, mut chunks) = tokio::sync::mpsc::channel::<Dataset>(2);
    let (path_owned, mut state, new) = (path.to_owned(), features.take(), empty.clone());
    let reader = tokio::task::spawn_blocking(move || {
        let mut buf = new();
        // The receiver goes only with the caller's task (its error or cancellation):
        // nothing is left to read for.
        let mut gone = false;
        let report = for_each_transaction(&path_owned, opts, state.as_mut(), |tx| {
            if gone {
                return;
            }
            buf.push(tx);
            if buf.len() >= rows.max(1) {
                gone = send
                    .blocking_send(std::mem::replace(&mut buf, new()))
                    .is_err();
            }
        });
        if !buf.is_empty() && !gone && send.blocking_send(buf).is_err() {
            tracing::debug!("history chunk dropped: its reader is gone");
        }
        (report, state)
    });
    let mut read = 0;
    while let Some(chunk) = chunks.recv().await {
        read += chunk.len();
        each(name, chunk, ReadReport::default());
    }
    let (report, state) = reader.await?;
    *features = state;
    let report = match report {
        Err(ReadError::Empty { .. }) => ReadReport::default(),
        other => other?,
    };
    each(name, empty(), report);
    Ok(read)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Kaggle-shaped CSV of `rows` rows whose `Time` counts from `first`.
    fn csv(path: &std::path::Path, first: usize, rows: usize) {
        let mut text = crate::schema::FIELD_NAMES.join(",") + ",Class\n";
        for i in first..first + rows {
            let mut values = vec!["0.5".to_owned(); crate::schema::NUM_FIELDS];
            values[0] = i.to_string();
            text += &format!("{},{}\n", values.join(","), u8::from(i % 10 == 0));
        }
        std::fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn chunks_cover_every_file_in_order_and_end_each_with_its_report() {
        let dir = tempfile::tempdir().unwrap();
        csv(&dir.path().join("a.csv"), 0, 1000);
        csv(&dir.path().join("b.csv"), 1000, 250);
        // An empty export is skipped.
        std::fs::write(dir.path().join("c.csv"), "").unwrap();
        let location = format!("{}/", dir.path().display());
        let mut calls: Vec<(String, usize, bool)> = Vec::new();
        let mut times = Vec::new();
        for_each_chunk(
            &location,
            &S3Settings::new("", "", crate::aws::AwsConnection::default()),
            ReadOptions::default(),
            None,
            300,
            &mut |name, d, _| {
                times.extend_from_slice(&d.columns[crate::schema::TIME]);
                let file = name.rsplit('/').next().unwrap_or_default().to_owned();
                calls.push((file, d.len(), d.is_empty()));
            },
        )
        .await
        .unwrap();
        let sizes: Vec<(&str, usize)> = calls.iter().map(|(f, n, _)| (f.as_str(), *n)).collect();
        assert_eq!(
            sizes,
            [
                ("a.csv", 300),
                ("a.csv", 300),
                ("a.csv", 300),
                ("a.csv", 100),
                ("a.csv", 0),
                ("b.csv", 250),
                ("b.csv", 0),
                ("c.csv", 0)
            ]
        );
        let want: Vec<f64> = (0..1250).map(|i| i as f64).collect();
        assert_eq!(times, want);
        // A location without a row is an error, not an empty history.
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("x.csv"), "").unwrap();
        let e = for_each_chunk(
            &format!("{}/", empty.path().display()),
            &S3Settings::new("", "", crate::aws::AwsConnection::default()),
            ReadOptions::default(),
            None,
            300,
            &mut |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, RemoteError::Empty(_)), "{e}");
    }
}
