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

use crate::storage::{BlobStore, Condition, StorageError};

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

/// One entry of a stream's marker log: the highest offset in its files, the file being
/// written, and the epoch of the writer that holds the stream.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
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

/// Entries kept in a stream's marker log: each append deletes the one this far back.
const MARKERS_KEPT: u64 = 8;

/// How often a marker append that loses a race is tried again.
const APPEND_ATTEMPTS: usize = 16;

/// The marker log's directory.
fn marker_dir(stream: &str) -> String {
    format!("_offsets/{stream}/")
}

/// The key of entry `seq` of the marker log.
fn marker_key(stream: &str, seq: u64) -> String {
    format!("_offsets/{stream}/{seq:020}.json")
}

/// The single marker file of lakes written before the log (read, never written).
fn legacy_marker_key(stream: &str) -> String {
    format!("_offsets/{stream}.json")
}

/// A marker's content, or `None` (counted, with a warning) when it is not one.
fn parse_marker(key: &str, data: &[u8]) -> Option<Marker> {
    match serde_json::from_slice(data) {
        Ok(m) => Some(m),
        Err(e) => {
            metrics::counter!(crate::metric_names::LAKE_BAD_MARKERS).increment(1);
            tracing::warn!(key, error = %e, "lake: not an offset marker; skipped (redelivered rows may be written again)");
            None
        }
    }
}

/// The stream's newest marker and its sequence number (0 and an empty marker when the
/// log is empty). Damaged entries (written by something else) are skipped with a warning:
/// refusing them would hold the lake up for ever.
async fn latest(store: &dyn BlobStore, stream: &str) -> Result<(u64, Marker), StorageError> {
    let dir = marker_dir(stream);
    let mut seqs: Vec<u64> = store
        .list(&dir)
        .await?
        .iter()
        .filter_map(|o| {
            let name = o.key.strip_prefix(&dir)?.strip_suffix(".json")?;
            (name.len() == 20).then(|| name.parse().ok()).flatten()
        })
        .collect();
    seqs.sort_unstable();
    let mut top = seqs.last().copied().unwrap_or(0);
    for &seq in seqs.iter().rev() {
        match store.get(&marker_key(stream, seq)).await {
            Ok(blob) => {
                if let Some(m) = parse_marker(&marker_key(stream, seq), &blob.data) {
                    return Ok((top, m));
                }
            }
            // Deleted meanwhile by a newer append's clean-up: look again.
            Err(StorageError::NotFound { .. }) => {
                return Box::pin(latest(store, stream)).await;
            }
            Err(e) => return Err(e),
        }
        top = top.max(seq);
    }
    let legacy = legacy_marker_key(stream);
    let marker = match store.get(&legacy).await {
        Ok(blob) => parse_marker(&legacy, &blob.data),
        Err(StorageError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok((
        top,
        marker.unwrap_or(Marker {
            last: -1,
            ..Marker::default()
        }),
    ))
}

/// Append `m` as entry `seq`, if no other writer took that number first (`false`).
async fn append(
    store: &dyn BlobStore,
    stream: &str,
    seq: u64,
    m: &Marker,
) -> Result<bool, StorageError> {
    let body = serde_json::to_vec(m).unwrap_or_default();
    match store
        .put_if(&marker_key(stream, seq), body.into(), Condition::IfAbsent)
        .await
    {
        Ok(_) => {
            if let Some(old) = seq.checked_sub(MARKERS_KEPT).filter(|&o| o > 0)
                && let Err(e) = store.delete(&marker_key(stream, old)).await
            {
                tracing::debug!(stream, error = %e, "lake: old offset marker not deleted");
            }
            Ok(true)
        }
        Err(StorageError::PreconditionFailed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the writer at `epoch` still holds `stream` (no takeover since).
pub(super) async fn holds(
    store: &dyn BlobStore,
    stream: &str,
    epoch: u64,
) -> Result<bool, StorageError> {
    Ok(latest(store, stream).await?.1.epoch <= epoch)
}

/// Before a stream's file `key` (ending at `last`) is written: check that this writer
/// (at `epoch`) still holds the stream, and record the intent on top of `written`, the
/// highest offset already in files. `false`: another writer has taken the stream over
/// (this one is a zombie) and nothing was recorded. The check and the record are one
/// step: the record is a new entry of the marker log, created only if absent, so a
/// takeover in between makes it fail and the check run again.
pub(super) async fn mark_writing(
    store: &dyn BlobStore,
    stream: &str,
    epoch: u64,
    written: i64,
    key: &str,
    last: i64,
) -> Result<bool, StorageError> {
    let marker = Marker {
        last: written,
        writing: Some((key.to_owned(), last)),
        epoch,
    };
    for _ in 0..APPEND_ATTEMPTS {
        let (seq, current) = latest(store, stream).await?;
        if current.epoch > epoch {
            return Ok(false);
        }
        if append(store, stream, seq + 1, &marker).await? {
            return Ok(true);
        }
    }
    // Others keep appending: this writer is not the stream's only holder.
    Ok(false)
}

/// Rows in the lake file `key`, or `None` when there is none. A file that cannot be
/// read as Parquet counts as absent.
pub(super) async fn file_rows(
    store: &dyn BlobStore,
    key: &str,
) -> Result<Option<i64>, StorageError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    match store.get(key).await {
        Ok(blob) => Ok(SerializedFileReader::new(blob.data)
            .ok()
            .map(|r| r.metadata().file_metadata().num_rows())),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`claim`] found.
#[derive(Debug)]
pub(super) struct Claimed {
    /// The highest offset in the stream's files (`-1` when none).
    pub high: i64,
    /// This writer's epoch.
    pub epoch: u64,
}

/// Take `stream` over: the highest offset in its files, and this writer's epoch, one
/// above the marker's (appended to the marker log, so an earlier holder that wakes up
/// writes nothing more).
///
/// When the marker shows a file whose write started (`writing`), it is settled for good:
/// an empty Parquet file (`empty`) is created under its name, only if absent. If that
/// succeeds, the earlier holder's write can never land (stream files are created only if
/// absent, and an empty one is replaced only by the stream's current holder), and its
/// rows are this writer's to write. If the file is there with rows, its last offset
/// counts (the process may have died after writing it and before committing). Either way
/// its temporary file, if any, is deleted.
///
/// Without `take_over` (a writer that does not hold the stream: a best-effort lake's
/// revoked rows), the epoch is the marker's and nothing is recorded or created.
pub(super) async fn claim(
    store: &dyn BlobStore,
    stream: &str,
    take_over: bool,
    empty: impl Fn() -> bytes::Bytes,
) -> Result<Claimed, StorageError> {
    for _ in 0..APPEND_ATTEMPTS {
        let (seq, marker) = latest(store, stream).await?;
        let mut high = marker.last;
        if !take_over {
            if let Some((key, last)) = &marker.writing
                && file_rows(store, key).await?.is_some_and(|n| n > 0)
            {
                high = high.max(*last);
            }
            return Ok(Claimed {
                high,
                epoch: marker.epoch,
            });
        }
        let epoch = marker.epoch + 1;
        let taking = Marker {
            epoch,
            ..marker.clone()
        };
        if !append(store, stream, seq + 1, &taking).await? {
            continue; // another writer appended meanwhile: look again
        }
        if let Some((key, last)) = &marker.writing {
            match store.put_if(key, empty(), Condition::IfAbsent).await {
                Ok(_) => {
                    tracing::info!(
                        key,
                        "lake: an unfinished write of the stream's previous holder is fenced by an empty file"
                    );
                }
                Err(StorageError::PreconditionFailed { .. }) => {
                    if file_rows(store, key).await?.is_some_and(|n| n > 0) {
                        high = high.max(*last);
                    }
                }
                Err(e) => return Err(e),
            }
            delete_temporaries(store, key).await?;
        }
        // Record the settled position; a newer holder appending first is fine (this
        // writer finds out at its next write).
        append(
            store,
            stream,
            seq + 2,
            &Marker {
                last: high,
                writing: None,
                epoch,
            },
        )
        .await?;
        return Ok(Claimed { high, epoch });
    }
    Err(StorageError::Other {
        store: store.describe(),
        message: format!("lake: the offset marker of {stream} keeps changing under this writer"),
        retryable: true,
    })
}

/// Delete the temporary files (local disk, HDFS) of an interrupted write of `key`.
async fn delete_temporaries(store: &dyn BlobStore, key: &str) -> Result<(), StorageError> {
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    for t in store.temporaries(&format!("{dir}/")).await? {
        if t.object == name {
            store.delete_temporary(&t).await?;
            tracing::info!(path = %t.path, "lake: temporary file of an interrupted write deleted");
        }
    }
    Ok(())
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

    /// A Parquet file of `rows` rows (one Int64 column).
    fn parquet(rows: i64) -> bytes::Bytes {
        let col = arrow::array::Int64Array::from_iter_values(0..rows);
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "x",
            Arc::new(col) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out.into()
    }

    fn store() -> (tempfile::TempDir, crate::storage::local::LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::local::LocalStore::new(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_damaged_marker_is_skipped_and_the_log_goes_on() {
        let (_dir, store) = store();
        store
            .put(
                &marker_key("t+0", 1),
                bytes::Bytes::from_static(b"\xff not json"),
            )
            .await
            .unwrap();
        let c = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert_eq!((c.high, c.epoch), (-1, 1));
        assert!(
            mark_writing(&store, "t+0", 1, -1, "k.parquet", 9)
                .await
                .unwrap()
        );
        let c = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert_eq!((c.high, c.epoch), (-1, 2), "k.parquet never came");
        assert_eq!(
            file_rows(&store, "k.parquet").await.unwrap(),
            Some(0),
            "an empty file fences it"
        );
    }

    #[tokio::test]
    async fn a_lake_of_single_markers_is_read_on() {
        let (_dir, store) = store();
        store
            .put(
                &legacy_marker_key("t+0"),
                serde_json::to_vec(&Marker {
                    last: 41,
                    writing: None,
                    epoch: 3,
                })
                .unwrap()
                .into(),
            )
            .await
            .unwrap();
        let c = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert_eq!((c.high, c.epoch), (41, 4));
    }

    /// A store whose stream `t+0` has a holder that has recorded writing `f.parquet`
    /// (offsets to 99), and that holder's claim.
    async fn holder_writing_f() -> (
        tempfile::TempDir,
        crate::storage::local::LocalStore,
        Claimed,
    ) {
        let (dir, store) = store();
        let a = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert!(
            mark_writing(&store, "t+0", a.epoch, -1, "f.parquet", 99)
                .await
                .unwrap()
        );
        (dir, store, a)
    }

    /// The race a freeze brings: a holder starts a file, the stream is taken over, then
    /// the old holder's write (a retry, or a write slowed down) tries to land.
    #[tokio::test]
    async fn a_takeover_fences_the_previous_holders_unfinished_file() {
        let (_dir, store, a) = holder_writing_f().await;
        let b = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert_eq!(
            (b.high, b.epoch),
            (-1, a.epoch + 1),
            "f.parquet is b's to write"
        );
        // a's write, late: refused, and a is no longer the holder.
        assert!(matches!(
            store
                .put_if("f.parquet", parquet(100), Condition::IfAbsent)
                .await,
            Err(StorageError::PreconditionFailed { .. })
        ));
        assert!(!holds(&store, "t+0", a.epoch).await.unwrap());
        assert!(holds(&store, "t+0", b.epoch).await.unwrap());
        assert!(
            !mark_writing(&store, "t+0", a.epoch, 99, "g.parquet", 150)
                .await
                .unwrap(),
            "a writes nothing more"
        );
        assert!(
            mark_writing(&store, "t+0", b.epoch, -1, "f.parquet", 99)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_takeover_counts_a_file_that_landed() {
        let (_dir, store, _a) = holder_writing_f().await;
        store
            .put_if("f.parquet", parquet(100), Condition::IfAbsent)
            .await
            .unwrap();
        let b = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        assert_eq!(b.high, 99, "its rows are in the lake");
        assert_eq!(file_rows(&store, "f.parquet").await.unwrap(), Some(100));
    }

    #[tokio::test]
    async fn the_marker_log_keeps_a_few_entries() {
        let (_dir, store) = store();
        let c = claim(&store, "t+0", true, || parquet(0)).await.unwrap();
        for i in 0..40 {
            assert!(
                mark_writing(
                    &store,
                    "t+0",
                    c.epoch,
                    i * 10 - 1,
                    &format!("f{i}.parquet"),
                    i * 10 + 9
                )
                .await
                .unwrap()
            );
        }
        let n = store.list(&marker_dir("t+0")).await.unwrap().len();
        assert!(n <= MARKERS_KEPT as usize + 1, "{n} entries");
        let (_, m) = latest(&store, "t+0").await.unwrap();
        assert_eq!(m.writing, Some(("f39.parquet".into(), 399)));
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
