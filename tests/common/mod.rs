//! Helpers shared by the integration tests: service endpoints from the environment
//! (set by `scripts/services.sh up`), unique names, and S3 bucket set-up.
#![allow(dead_code)]

pub mod config;
pub mod detector;
pub mod group;
pub mod http;
pub mod lake;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(unused_imports)] // Not every test binary writes a config.
pub use config::TestConfig;
use fraudstream::aws::AwsConnection;
use fraudstream::secret::Secret;
use fraudstream::storage::S3Settings;

/// The endpoint of a service the test needs. Fails, never skips, when it is not set.
pub fn require(var: &str, service: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this integration test needs a real {service} server. \
             Start it with `eval \"$(scripts/services.sh up {service})\"` (or run `make test`, \
             which starts and stops every service)."
        )
    })
}

/// The `fraudstream` binary this test run built.
pub fn fraudstream() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fraudstream"))
}

/// The `loadgen` binary, built beside `fraudstream` (`cargo test` builds the workspace).
pub fn loadgen() -> std::process::Command {
    std::process::Command::new(
        Path::new(env!("CARGO_BIN_EXE_fraudstream")).with_file_name("loadgen"),
    )
}

/// A client for the DynamoDB test server.
pub fn dynamo() -> aws_sdk_dynamodb::Client {
    dynamo_at(&require("FRAUDSTREAM_TEST_DYNAMODB", "dynamodb"))
}

/// A client for the DynamoDB server at `endpoint`, with the test credentials.
pub fn dynamo_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Builder, Credentials, Region};
    let conf = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "local",
            "local-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// A name unique to this process and call, for buckets, tables, topics and directories.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Create `names`, each with `partitions` partitions, on the test brokers.
pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &options).await.unwrap() {
        r.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
    }
}

/// Every `.rs` file under `dir`, appended to `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The connection to the test S3 server.
pub fn s3_connection() -> AwsConnection {
    AwsConnection {
        region: "us-east-1".into(),
        endpoint: Some(require("FRAUDSTREAM_TEST_S3", "s3")),
        access_key_id: Some(
            std::env::var("FRAUDSTREAM_TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        ),
        secret_access_key: Some(Secret::new(
            std::env::var("FRAUDSTREAM_TEST_S3_SECRET_ACCESS_KEY")
                .unwrap_or_else(|_| "test".into()),
        )),
    }
}

/// S3 settings for the test server, for `bucket`.
pub fn s3_settings(bucket: &str) -> S3Settings {
    S3Settings::new(bucket, "", s3_connection())
}

/// The test binary's bucket on the test S3 server (created on first use). Tests share it
/// and isolate themselves with a [`unique`] key prefix: every bucket costs the server
/// volumes of its own.
pub async fn test_bucket() -> String {
    static BUCKET: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    BUCKET.get_or_init(create_bucket).await.clone()
}

async fn create_bucket() -> String {
    let bucket = unique("fs").to_lowercase();
    let s = s3_connection();
    let creds = aws_sdk_s3::config::Credentials::new(
        s.access_key_id.clone().unwrap(),
        s.secret_access_key.as_ref().unwrap().expose().to_owned(),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(s.endpoint.clone().unwrap())
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create test bucket");
    wait_writable(&client, &bucket).await;
    bucket
}

/// Wait until a new bucket takes writes. SeaweedFS answers `500 InternalError` to a PUT
/// that comes soon after `CreateBucket` while other writers load it (its issue 11031:
/// the bucket's volumes are still being grown), and a test's first write is not where
/// that should show up.
async fn wait_writable(client: &aws_sdk_s3::Client, bucket: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let put = client
            .put_object()
            .bucket(bucket)
            .key(".writable")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"ok"))
            .send()
            .await;
        match put {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("test bucket {bucket} not writable yet: {e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => panic!("test bucket {bucket} never took a write: {e:?}"),
        }
    }
    // The probe may stay if even its delete is refused: tests keep to prefixes of their own.
    if let Err(e) = client
        .delete_object()
        .bucket(bucket)
        .key(".writable")
        .send()
        .await
    {
        eprintln!("test bucket {bucket}: the probe object stays: {e:?}");
    }
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The Parquet files under `dir`, at any depth (none when it does not exist).
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Every lake row under `dir` as (transaction id, its stored entity features under
/// `spec`), duplicates included. The spec tells the reader which columns hold the
/// features; a file that stores them is read, never recomputed.
pub fn lake_features(
    dir: &Path,
    spec: &fraudstream::velocity::VelocitySpec,
) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for p in parquet_files(dir) {
        let mut f = fraudstream::velocity::OfflineFeatures::new(spec.clone()).unwrap();
        fraudstream::schema::for_each_transaction(
            p.to_str().unwrap(),
            fraudstream::schema::ReadOptions::default(),
            Some(&mut f),
            |tx| out.push((tx.id, tx.derived)),
        )
        .unwrap();
    }
    out
}

/// Every lake row under `dir` as transaction id → (outcome, decided_by, rules joined by
/// commas, `""` for none).
pub fn lake_decisions(dir: &Path) -> std::collections::HashMap<String, (String, String, String)> {
    use arrow::array::{Array, AsArray};
    let mut out = std::collections::HashMap::new();
    for p in parquet_files(dir) {
        let file = std::fs::File::open(&p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("{}: no column {name}", p.display()))
                    .as_string::<i32>()
                    .clone()
            };
            let (id, outcome, by, rules) =
                (col("id"), col("outcome"), col("decided_by"), col("rules"));
            for i in 0..batch.num_rows() {
                let rules = if rules.is_valid(i) {
                    rules.value(i)
                } else {
                    ""
                };
                out.insert(
                    id.value(i).to_owned(),
                    (
                        outcome.value(i).to_owned(),
                        by.value(i).to_owned(),
                        rules.to_owned(),
                    ),
                );
            }
        }
    }
    out
}

/// Train a 10-tree model with the handbook's entity features on `txs` (written to
/// `dir/history.csv`) and publish it to the model store `dir/registry`.
pub fn publish_velocity_model(dir: &Path, txs: &[fraudstream::schema::Transaction]) {
    let history = dir.join("history.csv");
    fraudstream::schema::csv::write_kaggle_csv(
        std::fs::File::create(&history).unwrap(),
        txs.to_vec(),
        true,
        true,
    )
    .unwrap();
    let mut train = fraudstream();
    train
        .args(["train", "-i"])
        .arg(&history)
        .args(["--velocity", "handbook", "--trees", "10", "--split", "time"])
        .arg("-o")
        .arg(dir.join("m.fsm"))
        .arg("--publish")
        .arg(dir.join("registry"));
    let out = train.output().unwrap();
    if !out.status.success() {
        panic!("train failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `txs` without their labels, as a stream carries them.
pub fn unlabelled(
    txs: &[fraudstream::schema::Transaction],
) -> Vec<fraudstream::schema::Transaction> {
    txs.iter()
        .map(|t| fraudstream::schema::Transaction {
            label: None,
            ..t.clone()
        })
        .collect()
}

/// Run `fraudstream retrain --json --config CONFIG` and return its decision (the JSON
/// line with a `decision` field); fails the test when it fails or prints none.
pub fn retrain_decision(config: &Path) -> serde_json::Value {
    let out = fraudstream()
        .args(["retrain", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "retrain failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .find_map(|l| {
            serde_json::from_str(l)
                .ok()
                .filter(|v: &serde_json::Value| v.get("decision").is_some())
        })
        .unwrap_or_else(|| panic!("no decision in:\n{text}"))
}

/// The values of columns `names` in a lake (Parquet) file's bytes, row by row, each as
/// text (strings as they are, numbers printed).
#[allow(dead_code)]
pub fn parquet_columns(data: bytes::Bytes, names: &[&str]) -> Vec<Vec<String>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let columns: Vec<_> = names
            .iter()
            .map(|n| {
                arrow::compute::cast(
                    b.column_by_name(n).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap()
            })
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap()
                            .value(i)
                            .to_owned()
                    })
                    .collect(),
            );
        }
    }
    rows
}
