//! A malformed `manifest.sig` (issue 22: 128 bytes of "€" and zeros, which once panicked
//! in a byte slice inside the multibyte character) is a `signature` rejection everywhere
//! a version is loaded: at start-up, on hot reload (the watcher lives on and loads the
//! next good version), in `model promote` and in the API's promote route.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestConfig;
use common::http::Http;
use fraudstream::config::Config;
use fraudstream::detector::Detector;
use fraudstream::model::Model;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::{ModelStore, signing};
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::shutdown::Shutdown;
use fraudstream::storage::BlobStore;
use fraudstream::storage::local::LocalStore;
use serde_json::json;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn model(seed: u64) -> Model {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 5;
    opts.params.seed = seed;
    // Versions are named by their creation second.
    std::thread::sleep(Duration::from_millis(1_050));
    train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model
}

/// The signature of the reproduction: valid JSON, a trusted key, and 128 bytes that are
/// not hex ("€" is three of them).
fn poisoned_signature(key: &str) -> Bytes {
    let sig = format!("€{}", "0".repeat(125));
    assert_eq!(sig.len(), 128);
    Bytes::from(
        serde_json::to_vec(&json!({"algorithm": "ed25519", "key": key, "signature": sig})).unwrap(),
    )
}

fn config(dir: &Path, public: &str) -> Config {
    TestConfig::local(dir)
        .set("models.poll_interval", "100ms")
        .set("models.trusted_keys", vec![public])
        .set("api.admin", true)
        .parse()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_signature_is_rejected_everywhere_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing::generate().unwrap();
    let public = key.public().to_string();
    let blobs = Arc::new(LocalStore::new(dir.path().join("registry")).unwrap());
    let signer = ModelStore::new(blobs.clone()).with_signer(Some(key));

    let good = model(1);
    signer.put(&good).await.unwrap();
    signer.set_latest(good.version(), None).await.unwrap();
    let bad = model(2);
    signer.put(&bad).await.unwrap();
    blobs
        .put(
            &format!("models/{}/manifest.sig", bad.version()),
            poisoned_signature(&public),
        )
        .await
        .unwrap();

    // `model promote` refuses it with a message, not exit code 101.
    let store = dir.path().join("registry");
    let cfg_path = TestConfig::empty()
        .set("models.location", store.display().to_string())
        .set("models.trusted_keys", vec![public.as_str()])
        .write(dir.path().join("cli.toml"));
    let out = common::fraudstream()
        .args(["model", "promote", bad.version(), "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("signature"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A detector serving the good version rejects the bad one on hot reload, keeps
    // serving, and still loads the next good version.
    let cfg = config(dir.path(), &public);
    let detector = Detector::build_serving(&cfg).await.unwrap();
    let handles = detector.handles();
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let running = tokio::spawn(detector.run(shutdown.clone()));
    let http = Http::new(handles.api_addr.unwrap());
    let latest = signer.latest().await.unwrap();
    signer
        .set_latest(bad.version(), latest.as_ref())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = http.get("/metrics").await.text();
        if metrics.contains("fraudstream_model_rejections_total{reason=\"signature\"}") {
            break;
        }
        assert!(Instant::now() < deadline, "no rejection:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handles.model.load().version(), good.version());

    // The API's promote answers with the reason; the connection is not dropped.
    let r = http
        .post_json(&format!("/v1/models/{}/promote", bad.version()), &json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["code"], "signature", "{}", r.text());
    assert!(r.text().contains("signature"), "{}", r.text());

    let next = model(3);
    signer.put(&next).await.unwrap();
    let latest = signer.latest().await.unwrap();
    signer
        .set_latest(next.version(), latest.as_ref())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while handles.model.load().version() != next.version() {
        assert!(
            Instant::now() < deadline,
            "the watcher died: the next good version was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.stop();
    running.await.unwrap().unwrap();

    // Start-up with LATEST at the bad version: a clear error, not a panic.
    let latest = signer.latest().await.unwrap();
    signer
        .set_latest(bad.version(), latest.as_ref())
        .await
        .unwrap();
    let e = match Detector::build_serving(&config(dir.path(), &public)).await {
        Ok(_) => panic!("a detector started on a badly signed version"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("signature"), "{e}");
}
