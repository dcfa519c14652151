//! Hot reload under live load, against the real services: the detector, built in-process
//! from its configuration file, consumes a steady stream while a new model version is
//! published to the S3 model store. Verdicts
//! switch to the new version within a few poll intervals, with no message lost or scored
//! twice; then a version with a wrong checksum, a corrupt (truncated) one and one over other
//! features are published in turn, each is rejected, and the good one keeps serving.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::detector::{Deployment, InProcess};
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::ModelStore;
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::storage::BlobStore;
use fraudstream::storage::s3::S3Store;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn model(seed: u64) -> fraudstream::model::Model {
    model_over(seed, TrainOptions::default().features)
}

fn model_over(seed: u64, features: Vec<String>) -> fraudstream::model::Model {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 15;
    opts.params.seed = seed;
    opts.features = features;
    train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model
}

/// Point `LATEST` at a version already in the store.
async fn point_latest(store: &ModelStore, version: &str) {
    let before = store.latest().await.unwrap();
    store.set_latest(version, before.as_ref()).await.unwrap();
}

/// `fraudstream_model_rejections_total{reason="<kind>"}` (0 when absent).
fn rejections(det: &InProcess, kind: &str) -> u64 {
    let prefix = format!("fraudstream_model_rejections_total{{reason=\"{kind}\"}} ");
    det.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Wait until the detector has rejected a version for `kind`, still serving `serving`.
async fn wait_for_rejection(det: &InProcess, kind: &str, serving: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while rejections(det, kind) == 0 {
        assert!(
            Instant::now() < deadline,
            "no {kind} rejection:\n{}",
            det.metrics()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        det.handles.model.load().version(),
        serving,
        "the old model keeps serving"
    );
}

async fn publish(store: &ModelStore, m: &fraudstream::model::Model) {
    store.put(m).await.unwrap();
    let before = store.latest().await.unwrap();
    store
        .set_latest(m.version(), before.as_ref())
        .await
        .unwrap();
}

/// Wait until the detector serves `version`.
async fn wait_for_version(det: &InProcess, version: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if det.handles.model.load().version() == version {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_version_is_picked_up_under_load_and_a_bad_one_is_rejected() {
    let d = Deployment::new("reload").await;
    let bucket = common::test_bucket().await;
    let prefix = common::unique("models");
    let mut s3 = common::s3_settings(&bucket);
    s3.prefix = format!("{prefix}/");
    let blobs: Arc<dyn BlobStore> = Arc::new(S3Store::new(&s3).await);
    let store = ModelStore::new(blobs.clone());
    let v1 = model(1);
    publish(&store, &v1).await;

    let config = d.write(
        &d.config(false)
            .set("models.location", format!("s3://{bucket}/{prefix}/"))
            .set("models.poll_interval", "1s"),
        "detector.toml",
    );
    let det = d.start(&config).await;

    // A steady stream: 6,000 transactions at about 600/s.
    let n = 6_000;
    let producer = {
        let d = Deployment {
            brokers: d.brokers.clone(),
            dynamodb: d.dynamodb.clone(),
            topic: d.topic.clone(),
            group: d.group.clone(),
            table: d.table.clone(),
            dir: tempfile::tempdir().unwrap(),
            data: d.data.clone(),
        };
        tokio::spawn(async move {
            for chunk in (0..n).step_by(60) {
                d.produce(chunk, chunk + 60).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    assert!(d.wait_for_verdicts(1_000, Duration::from_secs(120)).await);

    let v2 = model(2);
    let published = Instant::now();
    publish(&store, &v2).await;
    assert!(
        wait_for_version(&det, v2.version(), Duration::from_secs(15)).await,
        "v2 not swapped in"
    );
    println!(
        "publish -> swap: {:.2} s (poll interval 1 s)",
        published.elapsed().as_secs_f64()
    );

    // A version whose file does not match its manifest's checksum.
    let v3 = model(3);
    store.put(&v3).await.unwrap();
    blobs
        .put(
            &format!("models/{}/model.fsm", v3.version()),
            v1.to_bytes().into(),
        )
        .await
        .unwrap();
    point_latest(&store, v3.version()).await;
    wait_for_rejection(&det, "checksum", v2.version()).await;

    // A truncated file whose manifest was written to match it: the checksum passes, loading
    // does not.
    let v4 = model(4);
    store.put(&v4).await.unwrap();
    let bytes = v4.to_bytes();
    let truncated = bytes[..bytes.len() / 2].to_vec();
    blobs
        .put(
            &format!("models/{}/model.fsm", v4.version()),
            truncated.clone().into(),
        )
        .await
        .unwrap();
    let manifest_key = format!("models/{}/manifest.json", v4.version());
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&blobs.get(&manifest_key).await.unwrap().data).unwrap();
    manifest["sha256"] = fraudstream::model::format::sha256_hex(&truncated).into();
    manifest["size_bytes"] = (truncated.len() as u64).into();
    blobs
        .put(&manifest_key, serde_json::to_vec(&manifest).unwrap().into())
        .await
        .unwrap();
    point_latest(&store, v4.version()).await;
    wait_for_rejection(&det, "corrupt", v2.version()).await;

    // A sound model over other features than the stream's.
    let v5 = model_over(5, (1..=10).map(|i| format!("V{i}")).collect());
    publish(&store, &v5).await;
    wait_for_rejection(&det, "features", v2.version()).await;

    producer.await.unwrap();
    assert!(
        d.wait_for_verdicts(n as u64, Duration::from_secs(120))
            .await
    );
    let summary = det.stop_within(Duration::from_secs(40)).await;
    assert_eq!(
        summary.stats.scored, n as u64,
        "no transaction scored twice"
    );
    assert_eq!(
        summary.stats.model_versions,
        [v1.version(), v2.version()],
        "served v1, then v2, and nothing else"
    );

    let versions = d.verdict_versions().await;
    assert_eq!(versions.len(), n, "exactly one verdict per transaction");
    let by_id: HashMap<&str, &str> = versions
        .iter()
        .map(|(i, v)| (i.as_str(), v.as_str()))
        .collect();
    assert_eq!(by_id.len(), n);
    let count = |v: &str| versions.iter().filter(|(_, m)| m == v).count();
    assert!(
        count(v1.version()) > 0,
        "the first version scored the start"
    );
    assert!(
        count(v2.version()) > 0,
        "the new version scored after the swap"
    );
    for rejected in [&v3, &v4, &v5] {
        assert_eq!(
            count(rejected.version()),
            0,
            "a rejected version never scored"
        );
    }
    // The last transactions were produced seconds after the swap: all on the new version.
    for i in n - 300..n {
        assert_eq!(by_id[format!("tx-{i}").as_str()], v2.version(), "tx-{i}");
    }
}
