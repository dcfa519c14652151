//! The model store conformance suite: a local directory and SeaweedFS (S3).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use fraudstream::model::Model;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::{LATEST_KEY, ModelStore, RegistryError};
use fraudstream::schema::{ReadOptions, read_dataset};
use fraudstream::storage::local::LocalStore;
use fraudstream::storage::s3::S3Store;
use fraudstream::storage::{BlobStore, StorageError};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn small_model(seed: u64) -> Model {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 5;
    opts.params.seed = seed;
    train_model(&data, SAMPLE, &opts, &|| {}).unwrap().model
}

async fn conformance(blobs: Arc<dyn BlobStore>) {
    let store = ModelStore::new(blobs.clone());
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.latest().await.unwrap().is_none());

    let m1 = small_model(1);
    let v1 = m1.version().to_owned();
    let man1 = store.put(&m1).await.unwrap();
    assert_eq!(man1.parent, None);
    // Storing the same version again is a no-op.
    store.put(&m1).await.unwrap();
    let (back, manifest) = store.get(&v1).await.unwrap();
    assert_eq!(back.forest(), m1.forest());
    assert_eq!(manifest.sha256, man1.sha256);
    assert_eq!(manifest.features.len(), 29);
    // The training reference (for drift monitoring) is kept in the manifest and comes
    // back with the model, on the path start-up and hot reload take.
    assert!(m1.reference().is_some());
    assert_eq!(
        manifest.reference.as_ref(),
        m1.reference().map(|r| r.as_ref())
    );
    let (checked, _) = store.get_checked(&v1, None).await.unwrap();
    assert_eq!(checked.reference(), m1.reference());

    let l1 = store.set_latest(&v1, None).await.unwrap();
    assert_eq!(store.latest().await.unwrap().unwrap().version, v1);
    // An unchanged pointer reads as "no change".
    assert!(
        store
            .latest_if_changed(Some(&l1.etag))
            .await
            .unwrap()
            .is_none()
    );

    // A second version, published against the current pointer.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // versions are per second
    let m2 = small_model(2);
    let v2 = m2.version().to_owned();
    assert_ne!(v1, v2);
    let man2 = store.put(&m2).await.unwrap();
    assert_eq!(man2.parent.as_deref(), Some(v1.as_str()));
    let l2 = store.set_latest(&v2, Some(&l1)).await.unwrap();
    let seen = store
        .latest_if_changed(Some(&l1.etag))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.version, v2);

    // A publisher holding the old pointer cannot move it: no interleaving.
    match store.set_latest(&v1, Some(&l1)).await {
        Err(RegistryError::Storage(StorageError::PreconditionFailed { .. })) => {}
        other => panic!("expected a precondition failure, got {other:?}"),
    }
    match store.set_latest(&v1, None).await {
        Err(RegistryError::Storage(StorageError::PreconditionFailed { .. })) => {}
        other => panic!("expected a precondition failure, got {other:?}"),
    }
    assert_eq!(store.latest().await.unwrap().unwrap(), l2);

    let mut versions = store.list().await.unwrap();
    versions.sort();
    let mut want = vec![v1.clone(), v2.clone()];
    want.sort();
    assert_eq!(versions, want);

    // Unknown versions, and a pointer to one, are refused.
    assert!(matches!(
        store.get("nope").await,
        Err(RegistryError::UnknownVersion(_))
    ));
    assert!(matches!(
        store.set_latest("nope", Some(&l2)).await,
        Err(RegistryError::UnknownVersion(_))
    ));

    // A reference that does not fit the model's features is refused with the version.
    let manifest_key = format!("models/{v2}/manifest.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&blobs.get(&manifest_key).await.unwrap().data).unwrap();
    doc["reference"]["features"][0]["name"] = "not_a_feature".into();
    let original = blobs.get(&manifest_key).await.unwrap().data;
    blobs
        .put(
            &manifest_key,
            Bytes::from(serde_json::to_vec(&doc).unwrap()),
        )
        .await
        .unwrap();
    match store.get(&v2).await {
        Err(RegistryError::Model { source, .. }) => {
            assert!(source.to_string().contains("not_a_feature"), "{source}");
        }
        other => panic!("expected the reference refused, got {other:?}"),
    }
    blobs.put(&manifest_key, original).await.unwrap();

    // A model file altered after publishing fails its checksum.
    let key = format!("models/{v1}/model.fsm");
    let mut bytes = blobs.get(&key).await.unwrap().data.to_vec();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    blobs.put(&key, Bytes::from(bytes)).await.unwrap();
    assert!(matches!(
        store.get(&v1).await,
        Err(RegistryError::Checksum { .. })
    ));

    // A garbage pointer is reported, not trusted.
    blobs
        .put(LATEST_KEY, Bytes::from_static(b"../../etc"))
        .await
        .unwrap();
    assert!(matches!(
        store.latest().await,
        Err(RegistryError::Corrupt { .. })
    ));
}

/// The reason a store with trusted keys gives for refusing `version`.
async fn refusal(store: &ModelStore, version: &str) -> String {
    match store.get_checked(version, None).await {
        Ok(_) => panic!("{version} was accepted"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e.reason().to_owned()
        }
    }
}

/// Signed manifests: a store that trusts a key loads what that key signed, and refuses
/// an unsigned version, one signed by another key, a manifest edited after signing
/// (`signature`), and a model file swapped under a signed manifest (`checksum`).
async fn signing(blobs: Arc<dyn BlobStore>) {
    let release = fraudstream::registry::signing::generate().unwrap();
    let intruder = fraudstream::registry::signing::generate().unwrap();
    let trusted = vec![release.public()];
    let signer = ModelStore::new(blobs.clone()).with_signer(Some(release));
    let reader = ModelStore::new(blobs.clone()).with_trusted_keys(trusted.clone());

    let good = small_model(11);
    signer.put(&good).await.unwrap();
    let (back, _) = reader.get_checked(good.version(), None).await.unwrap();
    assert_eq!(back.forest(), good.forest());

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let unsigned = small_model(12);
    ModelStore::new(blobs.clone()).put(&unsigned).await.unwrap();
    assert_eq!(refusal(&reader, unsigned.version()).await, "signature");
    // Without trusted keys the same version loads: the check is the detector's choice.
    ModelStore::new(blobs.clone())
        .get_checked(unsigned.version(), None)
        .await
        .unwrap();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let foreign = small_model(13);
    ModelStore::new(blobs.clone())
        .with_signer(Some(intruder))
        .put(&foreign)
        .await
        .unwrap();
    assert_eq!(refusal(&reader, foreign.version()).await, "signature");

    // The manifest edited after signing: a lower threshold, say.
    let key = format!("models/{}/manifest.json", good.version());
    let text = String::from_utf8(blobs.get(&key).await.unwrap().data.to_vec()).unwrap();
    let edited = text.replacen("\"threshold\": ", "\"threshold\": 0.0001, \"was\": ", 1);
    assert_ne!(edited, text);
    blobs.put(&key, Bytes::from(edited)).await.unwrap();
    assert_eq!(refusal(&reader, good.version()).await, "signature");
    blobs.put(&key, Bytes::from(text)).await.unwrap();
    reader.get_checked(good.version(), None).await.unwrap();

    // Another model's file under the signed manifest.
    let swapped = blobs
        .get(&format!("models/{}/model.fsm", unsigned.version()))
        .await
        .unwrap()
        .data;
    blobs
        .put(&format!("models/{}/model.fsm", good.version()), swapped)
        .await
        .unwrap();
    assert_eq!(refusal(&reader, good.version()).await, "checksum");

    // Promoting through a store with trusted keys refuses an unsigned version.
    assert!(reader.promote(unsigned.version()).await.is_err());
}

#[tokio::test]
async fn local_model_store() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(LocalStore::new(dir.path()).unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    signing(Arc::new(LocalStore::new(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn s3_model_store() {
    let bucket = common::test_bucket().await;
    let mut s = common::s3_settings(&bucket);
    s.prefix = common::unique("registry");
    conformance(Arc::new(S3Store::new(&s).await)).await;
    s.prefix = common::unique("signed-registry");
    signing(Arc::new(S3Store::new(&s).await)).await;
}
