//! The lake conformance suite: Parquet micro-batches on a local directory, SeaweedFS (S3)
//! and HDFS, read back by our reader and (for a local file) by pyarrow.

mod common;

use common::lake::{record, settings};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fraudstream::retry::RetryPolicy;
use fraudstream::sinks::lake::{
    LakeCompression, LakePosition, LakeWriter, Ownership, ScoredRecord, lake_schema,
    parse_stream_file,
};
use fraudstream::storage::hdfs::HdfsStore;
use fraudstream::storage::local::LocalStore;
use fraudstream::storage::s3::S3Store;
use fraudstream::storage::{BlobStore, StorageError};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn rows_in(data: &Bytes) -> usize {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap();
    assert_eq!(reader.schema().fields(), lake_schema().fields());
    reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum()
}

async fn conformance(store: Arc<dyn BlobStore>, compression: LakeCompression) -> Vec<String> {
    let what = store.describe();
    let mut w = LakeWriter::new(store.clone(), settings(compression));
    let n = 2500; // 10:15:00 .. 10:56:39 plus 11:xx: see record(); two hour partitions
    for i in 0..n {
        w.push(record(i));
        if w.is_due() {
            w.flush().await.unwrap();
        }
    }
    assert!(!w.is_due());
    let last = w.flush().await.unwrap(); // shutdown flush
    assert!(!last.is_empty());
    assert_eq!(w.buffered(), 0);
    assert!(w.flush().await.unwrap().is_empty(), "nothing left to write");

    let files = store.list("dt=").await.unwrap();
    let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
    let pattern = |k: &str| {
        let parts: Vec<&str> = k.split('/').collect();
        parts.len() == 3
            && (parts[0] == "dt=2026-11-26")
            && (parts[1] == "hour=10" || parts[1] == "hour=11")
            && parts[2].starts_with("part-d1-")
            && parts[2].ends_with(".parquet")
    };
    assert!(keys.iter().all(|k| pattern(k)), "{what}: {keys:?}");
    assert!(
        keys.iter().any(|k| k.contains("hour=10")) && keys.iter().any(|k| k.contains("hour=11"))
    );
    let mut total = 0;
    for k in &keys {
        total += rows_in(&store.get(k).await.unwrap().data);
    }
    assert_eq!(total, n, "{what}: every record written exactly once");
    exactly_once(&store, compression).await;
    keys
}

/// `record(i)` at offset `i` of stream `stream`.
fn at(stream: &str, i: usize) -> ScoredRecord {
    ScoredRecord {
        position: Some(LakePosition {
            stream: stream.into(),
            offset: i as i64,
        }),
        ..record(i)
    }
}

/// Push `records` as delivery does (recover, then buffer) and flush.
async fn deliver(w: &mut LakeWriter, records: Vec<ScoredRecord>) {
    w.recover(&records).await.unwrap();
    w.push_all(records);
    w.flush().await.unwrap();
}

/// The files of `stream` (under `dt=`): their ranges, in key order, and the ids of their rows.
async fn stream_files(store: &Arc<dyn BlobStore>, stream: &str) -> (Vec<(i64, i64)>, Vec<String>) {
    let mut ranges = Vec::new();
    let mut ids = Vec::new();
    for f in store.list("dt=").await.unwrap() {
        let Some((s, first, last)) = parse_stream_file(&f.key) else {
            continue;
        };
        if s != stream {
            continue;
        }
        ranges.push((first, last));
        let data = store.get(&f.key).await.unwrap().data;
        ids.extend(
            common::parquet_columns(data, &["id"])
                .into_iter()
                .map(|mut r| r.remove(0)),
        );
    }
    (ranges, ids)
}

/// Rows with positions are written once however often they are delivered: a restarted
/// writer (a crash after the file, before the offsets were committed) recovers the
/// stream's written offset from the lake and skips what it redelivers; a redelivery
/// within one writer is skipped too; a rerun of everything adds nothing.
async fn exactly_once(store: &Arc<dyn BlobStore>, compression: LakeCompression) {
    let what = store.describe();
    let stream = "tx.in+3";
    let mut first = LakeWriter::new(store.clone(), settings(compression));
    deliver(&mut first, (0..1500).map(|i| at(stream, i)).collect()).await;
    // The same writer is handed 1400..1600 again (a redelivery): only 1500.. are new.
    deliver(&mut first, (1400..1600).map(|i| at(stream, i)).collect()).await;
    drop(first); // dies before committing: everything from 1000 is redelivered
    let mut second = LakeWriter::new(store.clone(), settings(compression));
    deliver(&mut second, (1000..2500).map(|i| at(stream, i)).collect()).await;
    let mut third = LakeWriter::new(store.clone(), settings(compression));
    deliver(&mut third, (0..2500).map(|i| at(stream, i)).collect()).await;

    let (ranges, ids) = stream_files(store, stream).await;
    assert_eq!(ids.len(), 2500, "{what}: one row per offset: {ranges:?}");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 2500, "{what}");
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    assert!(
        sorted.windows(2).all(|w| w[0].1 < w[1].0),
        "{what}: ranges do not overlap: {sorted:?}"
    );
    assert_eq!((sorted[0].0, sorted[sorted.len() - 1].1), (0, 2499));
}

/// Two writers that both hold a stream (a zombie that woke up, or a partition a broker
/// assigned twice) take it from each other in turn. Neither may drop rows it holds
/// (its offsets could be committed after): the one that finds the stream taken claims it
/// back, skips what the other wrote meanwhile and writes the rest. Every offset lands
/// once.
#[tokio::test]
async fn writers_that_take_a_stream_from_each_other_drop_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let stream = "tx.in+0";
    let mut a = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd));
    let mut b = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd));
    deliver(&mut a, (0..100).map(|i| at(stream, i)).collect()).await;
    deliver(&mut b, (50..200).map(|i| at(stream, i)).collect()).await;
    // a, unaware, goes on from where it was: its write is refused, it claims the
    // stream back and keeps 200..300 for its next flush.
    deliver(&mut a, (100..300).map(|i| at(stream, i)).collect()).await;
    assert_eq!(a.buffered(), 100, "rows b did not write are kept");
    a.flush().await.unwrap();
    assert_eq!(a.buffered(), 0);
    // And b, in turn.
    deliver(&mut b, (200..400).map(|i| at(stream, i)).collect()).await;
    b.flush().await.unwrap();
    assert_eq!(b.buffered(), 0);

    let (ranges, ids) = stream_files(&store, stream).await;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (400, 400), "{ranges:?}");
}

/// An ownership that holds nothing (every partition revoked).
struct Revoked;

impl Ownership for Revoked {
    fn holds(&self, _: &str) -> Option<u64> {
        None
    }
    fn begin_write(&self, _: &str) -> bool {
        false
    }
    fn end_write(&self, _: &str) {}
    fn flush_requests(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn rows_of_a_revoked_partition_are_left_to_its_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    for drop_revoked in [true, false] {
        let stream = if drop_revoked { "a+0" } else { "b+0" };
        let mut w = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd))
            .dropping_revoked(drop_revoked);
        w.ownership().set(Some(Arc::new(Revoked)));
        deliver(&mut w, (0..100).map(|i| at(stream, i)).collect()).await;
        assert_eq!(w.buffered(), 0);
        let (_, ids) = stream_files(&store, stream).await;
        // A durable lake drops them (their offsets were not committed); a best-effort one
        // writes them (theirs may have been).
        assert_eq!(ids.len(), if drop_revoked { 0 } else { 100 });
    }
}

#[tokio::test]
async fn local_lake_readable_by_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let keys = conformance(
        Arc::new(LocalStore::new(dir.path()).unwrap()),
        LakeCompression::Zstd,
    )
    .await;
    let python = common::require("FRAUDSTREAM_TEST_PYTHON", "python (with pyarrow)");
    let path = dir.path().join(&keys[0]);
    let script = "import sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(t.num_rows)\n\
                  print(','.join(t.schema.names))\n\
                  print(t.schema.field('scored_at').type)\n";
    let out = std::process::Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let rows: usize = lines.next().unwrap().parse().unwrap();
    let mine = rows_in(&Bytes::from(std::fs::read(&path).unwrap()));
    assert_eq!(rows, mine);
    let names: Vec<String> = lake_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(lines.next().unwrap(), names.join(","));
    assert_eq!(lines.next().unwrap(), "timestamp[ms, tz=UTC]");
}

#[tokio::test]
async fn s3_lake() {
    let bucket = common::test_bucket().await;
    let mut s = common::s3_settings(&bucket);
    s.prefix = common::unique("lake");
    conformance(Arc::new(S3Store::new(&s).await), LakeCompression::Snappy).await;
}

#[tokio::test]
async fn hdfs_lake() {
    let url = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    let root = format!("/{}", common::unique("lake"));
    conformance(
        Arc::new(HdfsStore::new(&url, &root, None).unwrap()),
        LakeCompression::Zstd,
    )
    .await;
}

#[tokio::test]
async fn failed_flush_keeps_every_record_and_leaves_no_file() {
    let mut s = common::s3_settings("lake");
    s.connection.endpoint = Some(format!("http://127.0.0.1:{}", common::dead_port()));
    let store: Arc<dyn BlobStore> = Arc::new(S3Store::new(&s).await);
    let mut w = LakeWriter::new(store, settings(LakeCompression::Zstd)).with_retry(RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    });
    for i in 0..500 {
        w.push(record(i));
    }
    let e = w.flush().await.unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert_eq!(w.buffered(), 500, "nothing acknowledged is lost");

    // Against a working store the same writer's next flush writes them all.
    let dir = tempfile::tempdir().unwrap();
    let good: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let mut w2 = LakeWriter::new(good.clone(), settings(LakeCompression::Zstd));
    for i in 0..500 {
        w2.push(record(i));
    }
    w2.flush().await.unwrap();
    let total: usize = {
        let mut t = 0;
        for f in good.list("").await.unwrap() {
            assert!(
                !f.key.contains(".tmp-"),
                "temporary file visible: {}",
                f.key
            );
            t += rows_in(&good.get(&f.key).await.unwrap().data);
        }
        t
    };
    assert_eq!(total, 500);
}

#[tokio::test(start_paused = true)]
async fn age_limit_makes_a_flush_due() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(LakeCompression::Zstd);
    s.max_age = Duration::from_millis(250);
    let mut w = LakeWriter::new(Arc::new(LocalStore::new(dir.path()).unwrap()), s);
    w.push(record(1));
    assert!(!w.is_due());
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(!w.is_due());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(w.is_due(), "the oldest row is older than max_age");
}

/// A temporary file an interrupted write left (a process killed mid-write, or a writer
/// dropped unclosed when a frozen DataNode timed it out) is deleted at the writer's next
/// start; another writer's young one is left alone (it may be writing now).
async fn temporaries_are_cleaned(store: Arc<dyn BlobStore>, make_tmp: impl AsyncFn(&str)) {
    let part = fraudstream::sinks::lake::partition(fraudstream::clock::now_ms());
    let own = format!("{part}/part-d1-00000000000000000042.parquet");
    let other = format!("{part}/part-other-00000000000000000043.parquet");
    make_tmp(&own).await;
    make_tmp(&other).await;
    let found = store.temporaries("").await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        store.list("").await.unwrap().is_empty(),
        "never listed as objects"
    );
    let w = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd));
    assert_eq!(w.clean_temporaries().await.unwrap(), 1);
    let left = store.temporaries("").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].object.starts_with("part-other-"), "{left:?}");
}

#[tokio::test]
async fn local_temporaries_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    temporaries_are_cleaned(
        Arc::new(LocalStore::new(&root).unwrap()),
        async |key: &str| {
            let (d, name) = key.rsplit_once('/').unwrap();
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join(format!(".tmp-4242-0-{name}")), b"").unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn hdfs_temporaries_are_cleaned() {
    let url = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    let root = format!("/{}", common::unique("tmp-clean"));
    let client = hdfs_native::ClientBuilder::new()
        .with_url(&url)
        .build()
        .unwrap();
    temporaries_are_cleaned(
        Arc::new(HdfsStore::new(&url, &root, None).unwrap()),
        async |key: &str| {
            let (d, name) = key.rsplit_once('/').unwrap();
            let path = format!("{root}/{d}/_tmp.{name}.4242.0");
            // Created and dropped unclosed, as a timed-out write leaves it.
            let w = client
                .create(
                    &path,
                    hdfs_native::WriteOptions::default().create_parent(true),
                )
                .await
                .unwrap();
            drop(w);
        },
    )
    .await;
}

/// `lake compact` on a lake with every row written twice (an old writer's redeliveries,
/// scored again later, some in the next hour): a dry run reports the duplicates and
/// changes nothing; the compaction leaves one row per id, the newest, and a rerun finds
/// nothing to do.
#[tokio::test]
async fn compact_leaves_one_row_per_transaction_the_newest() {
    use fraudstream::pipeline::lake_compact::compact;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let n = 1200;
    let mut w = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd));
    for i in 0..n {
        w.push(record(i));
    }
    w.flush().await.unwrap();
    // The same transactions again, scored 40 minutes later, with another score.
    for i in 0..n {
        let mut r = record(i);
        r.scored_at_ms += 2_400_000;
        r.score = 0.123;
        w.push(r);
    }
    w.flush().await.unwrap();
    let keys = || async {
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        keys
    };
    let before = keys().await;
    let dry = compact(&store, &before, LakeCompression::Zstd, true)
        .await
        .unwrap();
    assert_eq!((dry.rows_in, dry.rows_out, dry.distinct_ids), (2 * n, n, n));
    assert!(!dry.rewritten.is_empty());
    assert_eq!(keys().await, before, "a dry run writes nothing");

    let done = compact(&store, &before, LakeCompression::Zstd, false)
        .await
        .unwrap();
    assert_eq!(done.rows_out, n);
    let after = keys().await;
    let mut ids = Vec::new();
    for k in &after {
        let data = store.get(k).await.unwrap().data;
        for row in common::parquet_columns(data, &["id", "score"]) {
            assert_eq!(row[1], "0.123", "the newest copy is kept");
            ids.push(row[0].clone());
        }
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (n, n));
    let again = compact(&store, &after, LakeCompression::Zstd, false)
        .await
        .unwrap();
    assert!(again.rewritten.is_empty(), "nothing left to do");
}
