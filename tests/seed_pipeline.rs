//! The replaced PySpark pipeline's three steps against the real services: upload the raw
//! sample CSV (with a few invalid rows) to S3, `preprocess` it to Parquet on HDFS, `train`
//! from HDFS and publish to the S3 model store, `score` from HDFS into DynamoDB Local.

mod common;

use bytes::Bytes;
use fraudstream::storage::BlobStore;
use fraudstream::storage::s3::S3Store;
use serde_json::Value;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn fraudstream(args: &[&str]) -> std::process::Output {
    let out = common::fraudstream().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_line(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preprocess_s3_to_hdfs_train_publish_score_into_dynamodb() {
    let hdfs = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    let dynamodb = common::require("FRAUDSTREAM_TEST_DYNAMODB", "dynamodb");
    let bucket = common::test_bucket().await;
    let prefix = common::unique("seed");
    let mut s3 = common::s3_settings(&bucket);
    s3.prefix = format!("{prefix}/");
    let raw_store = S3Store::new(&s3).await;

    // The raw CSV, plus three invalid rows.
    let mut raw = std::fs::read_to_string(SAMPLE).unwrap();
    let rows = raw.lines().count() - 1;
    let width = raw.lines().next().unwrap().split(',').count();
    let mut bad = vec!["0"; width];
    bad[1] = "not-a-number";
    raw.push_str(&format!("{}\n", bad.join(",")));
    raw.push_str("1,2,3\n");
    let mut nan = vec!["0"; width];
    nan[3] = "NaN";
    raw.push_str(&format!("{}\n", nan.join(",")));
    raw_store
        .put("raw/creditcard.csv", Bytes::from(raw))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let table = common::unique("seed-verdicts");
    let cfg = common::TestConfig::empty()
        .with_test_s3()
        .set("models.location", format!("s3://{bucket}/{prefix}/models/"))
        .with_test_dynamodb(&table)
        .write(dir.path().join("services.toml"));
    let cfg = cfg.to_str().unwrap();
    let raw_url = format!("s3://{bucket}/{prefix}/raw/creditcard.csv");
    let processed = format!("{hdfs}/{prefix}/processed/");

    // 1. preprocess: S3 CSV → HDFS Parquet.
    let p = json_line(&fraudstream(&[
        "preprocess",
        "--input",
        &raw_url,
        "--out",
        &processed,
        "--dedup",
        "--service-config",
        cfg,
        "--json",
    ]));
    assert_eq!(p["rows_in"].as_u64().unwrap() as usize, rows + 3, "{p}");
    assert_eq!(p["rows_out"].as_u64().unwrap() as usize, rows, "{p}");
    assert_eq!(p["rows_rejected"], 3, "{p}");
    assert!(!p["files"].as_array().unwrap().is_empty());

    // 2. train from HDFS, publish to the S3 model store.
    let model_file = dir.path().join("model.fsm");
    let t = fraudstream(&[
        "train",
        "--input",
        &processed,
        "--out",
        model_file.to_str().unwrap(),
        "--trees",
        "40",
        "--publish",
        &format!("s3://{bucket}/{prefix}/models/"),
        "--service-config",
        cfg,
        "--json",
    ]);
    let trained = json_line(&t);
    assert!(trained["auprc"].as_f64().unwrap() > 0.5, "{trained}");
    let version = trained["model_version"].as_str().unwrap().to_owned();

    // 3. score from HDFS with the published version into DynamoDB.
    let s = json_line(&fraudstream(&[
        "score",
        "--input",
        &processed,
        "--model",
        "latest",
        "--sink",
        "dynamodb",
        "--service-config",
        cfg,
        "--json",
    ]));
    assert_eq!(s["rows"].as_u64().unwrap() as usize, rows, "{s}");
    assert_eq!(s["model_version"].as_str().unwrap(), version);
    assert!(
        s["precision"].as_f64().unwrap() > 0.5 && s["recall"].as_f64().unwrap() > 0.5,
        "{s}"
    );

    let client = common::dynamo_at(&dynamodb);
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += page.count() as usize;
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert_eq!(count, rows, "one verdict item per transaction");
}
