//! The lake read by other engines, as a team that runs them over its lake would:
//! Spark 4 (pyspark, a local session) over the lake on HDFS, pyarrow's S3 filesystem over
//! the lake on S3 (Spark's S3A connector is not in the pyspark package, and Maven Central
//! cannot be reached from these machines), and DuckDB over a lake on local disk. Each reads the partitioned directory
//! (`dt=…/hour=…/part-….parquet`) and must see every row, every column with the type we
//! mean, and the rows per model version that the writer wrote.
//! The reader is `tests/tools/lake_read.py`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use common::lake::{record, settings};
use fraudstream::sinks::lake::{
    LakeCompression, LakePosition, LakeWriter, ScoredRecord, lake_schema,
};
use fraudstream::storage::BlobStore;
use fraudstream::storage::hdfs::HdfsStore;
use fraudstream::storage::local::LocalStore;
use fraudstream::storage::s3::S3Store;
use serde_json::Value;

/// Rows over two hour partitions, scored by three model versions (a rollout), with
/// shadow scores and rule decisions on some, all from one input stream (so the lake also
/// holds the writer's `_offsets/` marker log, which readers must pass over).
fn records() -> Vec<ScoredRecord> {
    (0..2500)
        .map(|i| ScoredRecord {
            model_version: ["v-1", "v-2", "v-2", "v-3"][i % 4].into(),
            position: Some(LakePosition {
                stream: "transactions+0".into(),
                offset: i as i64,
            }),
            ..record(i)
        })
        .collect()
}

/// Write `records` into `store` as the detector does, and return the rows per version.
async fn write(store: Arc<dyn BlobStore>, records: Vec<ScoredRecord>) -> BTreeMap<String, u64> {
    let mut per_version = BTreeMap::new();
    for r in &records {
        *per_version.entry(r.model_version.to_string()).or_insert(0) += 1;
    }
    let mut w = LakeWriter::new(store.clone(), settings(LakeCompression::Zstd));
    // As delivery does: where the stream stands, then the rows, flushed in batches.
    for batch in records.chunks(700) {
        w.recover(batch).await.unwrap();
        w.push_all(batch.to_vec());
        w.flush().await.unwrap();
    }
    assert!(
        !store.list("_offsets/").await.unwrap().is_empty(),
        "the marker log is there for readers to pass over"
    );
    per_version
}

/// What `tests/tools/lake_read.py ARGS` prints, parsed.
fn read_with(args: &[&str]) -> Value {
    let python = common::require(
        "FRAUDSTREAM_TEST_PYTHON",
        "python (with pyspark and pyarrow)",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/lake_read.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        // Spark binds the loopback, not the machine's first interface.
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "lake_read.py {args:?} failed (pyspark and duckdb come with \
         `FRAUDSTREAM_LAKE_READERS=1 scripts/services.sh up`, as `make test` starts them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn per_version(v: &Value) -> BTreeMap<String, u64> {
    v["by_version"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn columns(v: &Value) -> Vec<(String, String)> {
    v["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_owned(),
                c[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The type Spark gives a lake column of Arrow type `t`. A new column type fails here
/// until someone has checked that Spark reads it (as Spark 4 does not read nanosecond
/// timestamps by default).
fn spark_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 => "string",
        DataType::Float64 => "double",
        DataType::Float32 => "float",
        DataType::Boolean => "boolean",
        DataType::Int32 => "int",
        DataType::Int64 => "bigint",
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(_)) => "timestamp",
        other => panic!("lake column type {other:?}: check that Spark reads it, then map it here"),
    }
}

#[tokio::test]
async fn spark_reads_the_lake_on_hdfs() {
    let url = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    let root = format!("/{}", common::unique("spark-lake"));
    let written = write(
        Arc::new(HdfsStore::new(&url, &root, None).unwrap()),
        records(),
    )
    .await;
    let seen = read_with(&["spark", &format!("{url}{root}")]);
    assert_eq!(seen["count"].as_u64(), Some(2500));
    assert_eq!(per_version(&seen), written);
    // Every column with the type we mean, then the partition columns Spark discovers.
    let mut want: Vec<(String, String)> = lake_schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), spark_type(f.data_type()).to_owned()))
        .collect();
    want.push(("dt".into(), "date".into()));
    want.push(("hour".into(), "int".into()));
    assert_eq!(columns(&seen), want);
}

#[tokio::test]
async fn pyarrow_reads_the_lake_on_s3() {
    let bucket = common::test_bucket().await;
    let mut s = common::s3_settings(&bucket);
    s.prefix = common::unique("arrow-lake");
    let written = write(Arc::new(S3Store::new(&s).await), records()).await;
    let endpoint = common::require("FRAUDSTREAM_TEST_S3", "s3");
    let key = common::require("FRAUDSTREAM_TEST_S3_ACCESS_KEY_ID", "s3");
    let secret = common::require("FRAUDSTREAM_TEST_S3_SECRET_ACCESS_KEY", "s3");
    let url = format!("s3://{bucket}/{}", s.prefix);
    let seen = read_with(&["pyarrow", &url, &endpoint, &key, &secret]);
    assert_eq!(seen["count"].as_u64(), Some(2500));
    assert_eq!(per_version(&seen), written);
    let names: Vec<String> = columns(&seen).into_iter().map(|(n, _)| n).collect();
    let mut want: Vec<String> = lake_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    want.extend(["dt".into(), "hour".into()]);
    assert_eq!(names, want);
    let scored_at = columns(&seen)
        .into_iter()
        .find(|(n, _)| n == "scored_at")
        .unwrap();
    assert_eq!(scored_at.1, "timestamp[ms, tz=UTC]");
}

/// The type DuckDB gives a lake column of Arrow type `t` (as [`spark_type`]).
fn duckdb_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 => "VARCHAR",
        DataType::Float64 => "DOUBLE",
        DataType::Float32 => "FLOAT",
        DataType::Boolean => "BOOLEAN",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(_)) => {
            "TIMESTAMP WITH TIME ZONE"
        }
        other => panic!("lake column type {other:?}: check that DuckDB reads it, then map it here"),
    }
}

#[tokio::test]
async fn duckdb_reads_a_local_lake() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(Arc::new(LocalStore::new(dir.path()).unwrap()), records()).await;
    let seen = read_with(&["duckdb", dir.path().to_str().unwrap()]);
    assert_eq!(seen["count"].as_u64(), Some(2500));
    assert_eq!(per_version(&seen), written);
    let mut want: Vec<(String, String)> = lake_schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), duckdb_type(f.data_type()).to_owned()))
        .collect();
    want.push(("dt".into(), "DATE".into()));
    want.push(("hour".into(), "BIGINT".into()));
    assert_eq!(columns(&seen), want);
}
