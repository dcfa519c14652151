//! The retraining gate against real services: history CSVs in S3 (SeaweedFS), the model
//! store in S3, the `fraudstream retrain` binary. A candidate trained on shuffled labels
//! is rejected and the live model stays; a candidate better than a weak live model is
//! published and `LATEST` moves to it.

mod common;

use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::ModelStore;
use fraudstream::schema::csv::write_kaggle_csv;
use fraudstream::schema::{Dataset, ReadOptions, TIME, read_dataset};
use fraudstream::storage::BlobStore;
use fraudstream::storage::s3::S3Store;
use serde_json::Value;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

/// The sample, ordered by time, with the labels of the oldest `shuffle_share` of the rows
/// shuffled among themselves (0: clean).
fn history(shuffle_share: f64) -> Dataset {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| data.columns[TIME][a].total_cmp(&data.columns[TIME][b]));
    let mut d = data.select(&order);
    let k = (d.len() as f64 * shuffle_share) as usize;
    let mut rng = fastrand(7);
    for i in (1..k).rev() {
        let j = (rng() % (i as u64 + 1)) as usize;
        d.labels.swap(i, j);
    }
    d
}

/// A tiny deterministic generator (the test needs no randomness crate).
fn fastrand(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn model(data: &Dataset, trees: usize) -> fraudstream::model::Model {
    let mut opts = TrainOptions::default();
    opts.params.n_trees = trees;
    train_model(data, "test", &opts, &|| {}).unwrap().model
}

struct Setup {
    dir: tempfile::TempDir,
    bucket: String,
    prefix: String,
    blobs: Arc<dyn BlobStore>,
    store: ModelStore,
}

async fn setup() -> Setup {
    let bucket = common::test_bucket().await;
    let prefix = common::unique("retrain");
    let mut s3 = common::s3_settings(&bucket);
    s3.prefix = format!("{prefix}/");
    let blobs: Arc<dyn BlobStore> = Arc::new(S3Store::new(&s3).await);
    let models: Arc<dyn BlobStore> = {
        let mut m = s3.clone();
        m.prefix = format!("{prefix}/registry/");
        Arc::new(S3Store::new(&m).await)
    };
    Setup {
        dir: tempfile::tempdir().unwrap(),
        bucket,
        prefix,
        blobs,
        store: ModelStore::new(models),
    }
}

impl Setup {
    async fn upload(&self, key: &str, d: &Dataset) {
        let mut buf = Vec::new();
        write_kaggle_csv(&mut buf, (0..d.len()).map(|i| d.row(i)), true, true).unwrap();
        self.blobs.put(key, Bytes::from(buf)).await.unwrap();
    }

    async fn publish(&self, m: &fraudstream::model::Model) {
        self.store.put(m).await.unwrap();
        let before = self.store.latest().await.unwrap();
        self.store
            .set_latest(m.version(), before.as_ref())
            .await
            .unwrap();
    }

    fn retrain(&self) -> Value {
        let s3 = common::s3_settings(&self.bucket);
        let cfg = format!(
            r#"
[s3]
endpoint = "{endpoint}"
access_key_id = "{key}"
secret_access_key = "{secret}"

[models]
location = "s3://{bucket}/{prefix}/registry/"

[retrain]
history = ["s3://{bucket}/{prefix}/history/"]
holdout = "time"
test_fraction = 0.25
tolerance = 0.01
min_auprc = 0.0
trees = 30
"#,
            endpoint = s3.connection.endpoint.unwrap(),
            key = s3.connection.access_key_id.unwrap(),
            secret = s3.connection.secret_access_key.unwrap().expose(),
            bucket = self.bucket,
            prefix = self.prefix,
        );
        let path = self.dir.path().join("retrain.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fraudstream"))
            .args(["retrain", "--json", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_trained_on_shuffled_labels_is_rejected() {
    let s = setup().await;
    let good = model(&history(0.0), 50);
    s.publish(&good).await;
    // The oldest 75% (what the candidate trains on) have shuffled labels; the holdout,
    // the newest 25%, is clean.
    let noisy = history(0.75);
    let half = noisy.len() / 2;
    s.upload(
        "history/part-1.csv",
        &noisy.select(&(0..half).collect::<Vec<_>>()),
    )
    .await;
    s.upload(
        "history/part-2.csv",
        &noisy.select(&(half..noisy.len()).collect::<Vec<_>>()),
    )
    .await;

    let d = s.retrain();
    assert_eq!(d["published"], Value::Bool(false), "{d}");
    assert!(d["reason"].as_str().unwrap().contains("worse"), "{d}");
    assert_eq!(
        d["rows_read"].as_u64().unwrap() as usize,
        noisy.len(),
        "both files read"
    );
    assert!(d["candidate_auprc"].as_f64().unwrap() < d["live_auprc"].as_f64().unwrap());
    let latest = s.store.latest().await.unwrap().unwrap();
    assert_eq!(latest.version, good.version(), "the live model stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_candidate_is_published() {
    let s = setup().await;
    // A weak live model: trained on labels shuffled throughout.
    let weak = model(&history(1.0), 5);
    s.publish(&weak).await;
    s.upload("history/creditcard.csv", &history(0.0)).await;

    let d = s.retrain();
    assert_eq!(d["published"], Value::Bool(true), "{d}");
    assert!(d["candidate_auprc"].as_f64().unwrap() > d["live_auprc"].as_f64().unwrap());
    let latest = s.store.latest().await.unwrap().unwrap();
    assert_eq!(latest.version, d["candidate"].as_str().unwrap());
    let manifest = s.store.manifest(&latest.version).await.unwrap();
    assert_eq!(
        manifest.parent.as_deref(),
        Some(weak.version()),
        "lineage recorded"
    );
    assert!(
        manifest.metadata.holdout_metrics.is_some(),
        "holdout metrics in the manifest"
    );
}
