//! Where each input stream stands in the lake, so that a redelivered row is never written
//! twice (the scheme of Kafka Connect's HDFS and S3 sinks).
//!
//! A row that carries a [`LakePosition`] (a Kafka partition and offset, or a file and
//! line) goes to a file of its stream alone, named
//! `dt=…/hour=…/<stream>+<first>+<last>.parquet` by the first and last offset it holds,
//! and a stream's rows reach files in offset order. Before the first row of a stream is
//! buffered (and again whenever its partition is assigned anew), the writer recovers the
//! highest offset already written from a marker, `_offsets/<stream>.json` (readers skip
//! `_` names), written before each file: the highest offset in earlier files, and the
//! file about to be written. If that file exists, its last offset counts (the process may
//! have died after writing it and before committing). Rows at or below that offset, and
//! rows already buffered, are skipped.
//!
//! With a partitioned source, an [`Ownership`] says which streams this member holds: rows
//! of a partition revoked before they reached a file are dropped (their new owner reads
//! them again from the last commit, which never passed them), and a revoke waits for a
//! file of its partition being written.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::storage::{BlobStore, StorageError};

/// Where a row came from, for the lake: its stream (`<topic>+<partition>`, or
/// `file-<hash>+0` for a file) and its offset (or line) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakePosition {
    /// The stream, as file names carry it.
    pub stream: Arc<str>,
    /// The row's offset in it.
    pub offset: i64,
}

/// The stream name of a Kafka partition.
#[must_use]
pub fn kafka_stream(topic: &str, partition: i32) -> String {
    format!("{topic}+{partition}")
}

/// The stream name of a file, from the SHA-256 of its first 64 KiB: the same file read
/// again (or grown since) is the same stream, another file under the same name is not.
/// `None` for stdin or a file that cannot be read.
#[must_use]
pub fn file_stream(path: &str) -> Option<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    if path == "-" {
        return None;
    }
    let mut head = Vec::with_capacity(1 << 16);
    std::fs::File::open(path)
        .ok()?
        .take(1 << 16)
        .read_to_end(&mut head)
        .ok()?;
    let digest = sha2::Sha256::digest(&head);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("file-{hex}+0"))
}

/// The key of a stream's file in hour partition `part`.
#[must_use]
pub fn stream_file_key(part: &str, stream: &str, first: i64, last: i64) -> String {
    format!("{part}/{stream}+{first:020}+{last:020}.parquet")
}

/// The stream, first and last offset of a file named by [`stream_file_key`] (the last
/// path component or the whole key).
#[must_use]
pub fn parse_stream_file(key: &str) -> Option<(&str, i64, i64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".parquet")?;
    let (rest, last) = name.rsplit_once('+')?;
    let (stream, first) = rest.rsplit_once('+')?;
    let first: i64 = first.parse().ok()?;
    let last: i64 = last.parse().ok()?;
    (stream.contains('+') && first <= last).then_some((stream, first, last))
}

/// Which streams this member may write: the partitioned source's assignment.
pub trait Ownership: Send + Sync {
    /// The assignment generation in which this member holds `stream` (unique within the
    /// process: a new generation means the stream may have been written by another
    /// member since), or `None` when it does not hold it.
    fn holds(&self, stream: &str) -> Option<u64>;
    /// Start writing a file of `stream` if this member still holds it; a revoke of the
    /// stream then waits for [`Ownership::end_write`].
    fn begin_write(&self, stream: &str) -> bool;
    /// The file of `stream` is written (or failed).
    fn end_write(&self, stream: &str);
    /// A count that moves when a revoke waits for the lake: flush now.
    fn flush_requests(&self) -> u64;
}

/// The current [`Ownership`] (a Kafka source installs its consumer's for each session),
/// shared between the writer and whoever installs it.
#[derive(Clone, Default)]
pub struct OwnershipSlot(Arc<Mutex<Option<Arc<dyn Ownership>>>>);

impl std::fmt::Debug for OwnershipSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnershipSlot")
    }
}

impl OwnershipSlot {
    /// Install `ownership` (or none).
    pub fn set(&self, ownership: Option<Arc<dyn Ownership>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ownership;
    }

    /// The installed one.
    #[must_use]
    pub fn get(&self) -> Option<Arc<dyn Ownership>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A stream's standing in this writer.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamState {
    /// The highest offset written to a file, or buffered: anything at or below is a
    /// redelivery.
    pub high: i64,
    /// The highest offset in its files (`-1`: none), as the marker records it.
    pub written: i64,
    /// This writer's epoch for the stream ([`claim`]).
    pub epoch: u64,
    /// The assignment generation it was recovered in (0 without an ownership).
    pub recovered: Option<u64>,
}

/// A stream's marker: the highest offset in its files, the file being written, and the
/// epoch of the writer that holds the stream.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Marker {
    /// The highest offset written before `writing`.
    last: i64,
    /// The key of the file whose write started last, and its last offset.
    writing: Option<(String, i64)>,
    /// Raised by every writer that takes the stream over ([`claim`]): a writer whose
    /// epoch is lower has lost it (a zombie) and writes nothing more.
    #[serde(default)]
    epoch: u64,
}

/// The marker's key.
fn marker_key(stream: &str) -> String {
    format!("_offsets/{stream}.json")
}

/// The stream's marker. One that is not a marker (damaged, or written by something else)
/// counts as absent, with a warning: the stream's next file replaces it, and at worst rows
/// already in files are written again. Refusing it would hold the lake up for ever.
async fn read_marker(store: &dyn BlobStore, stream: &str) -> Result<Option<Marker>, StorageError> {
    match store.get(&marker_key(stream)).await {
        Ok(blob) => match serde_json::from_slice(&blob.data) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                metrics::counter!(crate::metric_names::LAKE_BAD_MARKERS).increment(1);
                tracing::warn!(key = %marker_key(stream), error = %e, "lake: not an offset marker; the stream starts from what is buffered (redelivered rows may be written again)");
                Ok(None)
            }
        },
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn write_marker(store: &dyn BlobStore, stream: &str, m: &Marker) -> Result<(), StorageError> {
    let body = serde_json::to_vec(m).unwrap_or_default();
    store.put(&marker_key(stream), body.into()).await
}

/// Before a stream's file `key` (ending at `last`) is written: check that this writer
/// (at `epoch`) still holds the stream, and record the intent on top of `written`, the
/// highest offset already in files. `false`: another writer has taken the stream over
/// (this one is a zombie) and nothing was recorded.
pub(super) async fn mark_writing(
    store: &dyn BlobStore,
    stream: &str,
    epoch: u64,
    written: i64,
    key: &str,
    last: i64,
) -> Result<bool, StorageError> {
    if read_marker(store, stream)
        .await?
        .is_some_and(|m| m.epoch > epoch)
    {
        return Ok(false);
    }
    let marker = Marker {
        last: written,
        writing: Some((key.to_owned(), last)),
        epoch,
    };
    write_marker(store, stream, &marker).await?;
    Ok(true)
}

/// Take `stream` over: the highest offset in its files (`-1` when none), and this
/// writer's epoch, one above the marker's (recorded, so an earlier holder that wakes up
/// writes nothing more). The highest offset is the marker's, or the last offset of the
/// file it says was being written, if that file exists (the write finished; the process
/// may have died before committing). If it does not, the write's temporary file, if any,
/// is deleted. Without `take_over` (a writer that does not hold the stream: a
/// best-effort lake's revoked rows), the epoch is the marker's and nothing is recorded.
pub(super) async fn claim(
    store: &dyn BlobStore,
    stream: &str,
    take_over: bool,
) -> Result<(i64, u64), StorageError> {
    let marker = read_marker(store, stream).await?.unwrap_or(Marker {
        last: -1,
        ..Marker::default()
    });
    let mut high = marker.last;
    if let Some((key, last)) = &marker.writing {
        if store.list(key).await?.iter().any(|o| &o.key == key) {
            high = high.max(*last);
        } else {
            // The write was interrupted: its temporary file (local disk, HDFS) is
            // deleted. The caller holds the stream, so no one else is writing it.
            let (dir, name) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
            for t in store.temporaries(&format!("{dir}/")).await? {
                if t.object == name {
                    store.delete_temporary(&t).await?;
                    tracing::info!(path = %t.path, "lake: temporary file of an interrupted write deleted");
                }
            }
        }
    }
    if !take_over {
        return Ok((high, marker.epoch));
    }
    let epoch = marker.epoch + 1;
    write_marker(
        store,
        stream,
        &Marker {
            last: high,
            writing: None,
            epoch,
        },
    )
    .await?;
    Ok((high, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_stream_and_offsets() {
        let key = stream_file_key("dt=2026-12-07/hour=04", "tx.in+3", 7, 1200);
        assert_eq!(
            key,
            "dt=2026-12-07/hour=04/tx.in+3+00000000000000000007+00000000000000001200.parquet"
        );
        assert_eq!(parse_stream_file(&key), Some(("tx.in+3", 7, 1200)));
        assert_eq!(parse_stream_file("dt=x/hour=1/part-d1-0001.parquet"), None);
        assert_eq!(parse_stream_file("a+1+9+2.parquet"), None, "first > last");
    }

    #[tokio::test]
    async fn a_damaged_marker_counts_as_absent_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::local::LocalStore::new(dir.path()).unwrap();
        store
            .put(
                &marker_key("t+0"),
                bytes::Bytes::from_static(b"\xff not json"),
            )
            .await
            .unwrap();
        let (high, epoch) = claim(&store, "t+0", true).await.unwrap();
        assert_eq!((high, epoch), (-1, 1));
        assert!(
            mark_writing(&store, "t+0", epoch, high, "k.parquet", 9)
                .await
                .unwrap()
        );
        assert_eq!(
            claim(&store, "t+0", true).await.unwrap(),
            (-1, 2),
            "k.parquet never came"
        );
    }

    #[test]
    fn a_file_stream_is_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        std::fs::write(&a, "Time,V1\n1,2\n").unwrap();
        std::fs::write(&b, "Time,V1\n1,2\n").unwrap();
        let sa = file_stream(a.to_str().unwrap()).unwrap();
        assert_eq!(Some(sa.clone()), file_stream(b.to_str().unwrap()));
        std::fs::write(&b, "Time,V1\n1,3\n").unwrap();
        assert_ne!(Some(sa), file_stream(b.to_str().unwrap()));
        assert_eq!(file_stream("-"), None);
    }
}
