//! Hot reload: every detector polls the model store's `LATEST` pointer and swaps in a new
//! version only after it passes every check; until then, and after a rejection, the
//! serving model keeps serving.
//!
//! A candidate is checked in order:
//! 1. its model file hashes to the manifest's SHA-256 (and the file's own checksum and
//!    structure validate: [`ModelStore::get`]);
//! 2. the manifest's feature list is the model's, every feature is a stream field, and
//!    the list equals the expected one (`models.features`, or else the serving model's:
//!    changing the features is deliberate);
//! 3. canary rows score finite values in [0, 1], and the manifest's published canaries
//!    score exactly as they did at publication.
//!
//! These are [`ModelStore::get_checked`], the same path the start-up model takes.
//!
//! Then the `ArcSwap` is stored. The scorer loads the model once per batch, so batches in
//! flight finish on the old model and every verdict names the version that scored it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{Latest, ModelStore, RegistryError, Rejection};
use crate::metric_names as names;
use crate::model::Model;

/// The watcher's state.
pub struct Watcher {
    store: ModelStore,
    serving: Arc<ArcSwap<Model>>,
    expected: Option<Vec<String>>,
    pointer: Option<Latest>,
}

/// What one poll did.
#[derive(Debug)]
pub enum Poll {
    /// The pointer did not move (or names the serving version).
    Unchanged,
    /// A new version was swapped in.
    Swapped {
        /// The new version.
        version: String,
    },
    /// The pointer names a version that failed a check; the old one keeps serving.
    Rejected {
        /// The version.
        version: String,
        /// Why.
        reason: Rejection,
    },
}

impl Watcher {
    /// A watcher that swaps into `serving`. `expected` fixes the feature list; `None`
    /// expects the serving model's.
    #[must_use]
    pub fn new(
        store: ModelStore,
        serving: Arc<ArcSwap<Model>>,
        expected: Option<Vec<String>>,
    ) -> Self {
        Self {
            store,
            serving,
            expected,
            pointer: None,
        }
    }

    /// Poll once: a conditional read of `LATEST` (nothing is downloaded while its entity
    /// tag is unchanged), then, for a new version, download, check and swap.
    pub async fn poll(&mut self) -> Result<Poll, RegistryError> {
        let etag = self.pointer.as_ref().map(|l| l.etag.clone());
        let Some(latest) = self.store.latest_if_changed(etag.as_deref()).await? else {
            return Ok(Poll::Unchanged);
        };
        let version = latest.version.clone();
        // Remembered whatever the outcome, so a rejected version is not fetched again
        // until the pointer moves.
        self.pointer = Some(latest);
        if version == self.serving.load().version() {
            return Ok(Poll::Unchanged);
        }
        let started = Instant::now();
        let expected = self
            .expected
            .clone()
            .unwrap_or_else(|| self.serving.load().meta().features.clone());
        match self.store.get_checked(&version, Some(&expected)).await {
            // Unreachable storage is not the candidate's fault: try again next poll.
            Err(Rejection::Load(e @ RegistryError::Storage(_))) => {
                self.pointer = None;
                Err(e)
            }
            Ok((model, _)) => {
                let old = self.serving.load().version().to_owned();
                self.serving.store(Arc::new(model));
                metrics::counter!(names::MODEL_RELOADS).increment(1);
                tracing::info!(from = %old, to = %version, check_ms = started.elapsed().as_millis() as u64, "serving model swapped");
                Ok(Poll::Swapped { version })
            }
            Err(reason) => {
                metrics::counter!(names::MODEL_REJECTIONS, "reason" => reason.reason())
                    .increment(1);
                tracing::error!(version = %version, kind = %reason.reason(), reason = %reason, serving = %self.serving.load().version(), "model rejected; the serving model stays");
                Ok(Poll::Rejected { version, reason })
            }
        }
    }

    /// Poll every `interval` until `stop` is cancelled.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        super::poll_every(self, interval, stop).await;
    }
}

impl super::Polling for Watcher {
    type Error = RegistryError;

    async fn poll_once(&mut self) -> Result<(), RegistryError> {
        self.poll().await.map(drop)
    }

    fn watching(&self) -> String {
        format!("{} (LATEST)", self.store.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{TrainOptions, train_model};
    use crate::storage::BlobStore;
    use crate::storage::local::LocalStore;

    fn model(seed: u64, features: Option<Vec<String>>) -> Model {
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 5;
        opts.params.seed = seed;
        if let Some(f) = features {
            opts.features = f;
        }
        train_model(
            &crate::test_support::dataset(600, seed),
            &format!("seed{seed}"),
            &opts,
            &|| {},
        )
        .unwrap()
        .model
    }

    async fn setup() -> (
        tempfile::TempDir,
        Arc<LocalStore>,
        ModelStore,
        Watcher,
        Model,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(LocalStore::new(dir.path()).unwrap());
        let store = ModelStore::new(blobs.clone());
        let first = model(1, None);
        store.put(&first).await.unwrap();
        store.set_latest(first.version(), None).await.unwrap();
        let serving = Arc::new(ArcSwap::from_pointee(first.clone()));
        let mut w = Watcher::new(store.clone(), serving, None);
        assert!(matches!(w.poll().await.unwrap(), Poll::Unchanged));
        (dir, blobs, store, w, first)
    }

    async fn publish(store: &ModelStore, m: &Model) {
        store.put(m).await.unwrap();
        let cur = store.latest().await.unwrap();
        store.set_latest(m.version(), cur.as_ref()).await.unwrap();
    }

    #[tokio::test]
    async fn a_good_version_is_swapped_in_and_an_unchanged_pointer_is_free() {
        let (_d, _b, store, mut w, _) = setup().await;
        let second = model(2, None);
        publish(&store, &second).await;
        match w.poll().await.unwrap() {
            Poll::Swapped { version } => assert_eq!(version, second.version()),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), second.version());
        assert!(matches!(w.poll().await.unwrap(), Poll::Unchanged));
    }

    /// `check_publishable` of a store trusting one fresh key and signing with `signer`.
    fn trusting_store_check(
        blobs: &Arc<LocalStore>,
        signer: Option<crate::registry::SigningKey>,
    ) -> Result<(), String> {
        let trusted = crate::registry::signing::generate().unwrap().public();
        ModelStore::new(blobs.clone())
            .with_trusted_keys(vec![trusted])
            .with_signer(signer)
            .check_publishable()
    }

    #[tokio::test]
    async fn with_trusted_keys_only_a_signed_version_is_swapped_in() {
        let (_d, blobs, store, _, first) = setup().await;
        let key = crate::registry::signing::generate().unwrap();
        let trusting = ModelStore::new(blobs.clone()).with_trusted_keys(vec![key.public()]);
        let serving = Arc::new(ArcSwap::from_pointee(first.clone()));
        let mut w = Watcher::new(trusting, serving, None);
        let unsigned = model(5, None);
        publish(&store, &unsigned).await;
        match w.poll().await.unwrap() {
            Poll::Rejected { reason, .. } => assert_eq!(reason.reason(), "signature", "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), first.version());
        assert!(
            trusting_store_check(&blobs, None).is_err(),
            "no signing key"
        );
        let other = crate::registry::signing::generate().unwrap();
        assert!(
            trusting_store_check(&blobs, Some(other)).is_err(),
            "a key the detectors do not trust"
        );
        let public = key.public();
        let signer = store.clone().with_signer(Some(key));
        signer
            .clone()
            .with_trusted_keys(vec![public])
            .check_publishable()
            .unwrap();
        let signed = model(6, None);
        publish(&signer, &signed).await;
        match w.poll().await.unwrap() {
            Poll::Swapped { version } => assert_eq!(version, signed.version()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_wrong_checksum_is_rejected_and_the_old_model_serves() {
        let (_d, blobs, store, mut w, first) = setup().await;
        let second = model(3, None);
        publish(&store, &second).await;
        // Replace the model file with another valid model's bytes.
        let other = model(4, None);
        blobs
            .put(
                &format!("models/{}/model.fsm", second.version()),
                other.to_bytes().into(),
            )
            .await
            .unwrap();
        match w.poll().await.unwrap() {
            Poll::Rejected { reason, .. } => assert_eq!(reason.reason(), "checksum", "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), first.version());
        // Not fetched again while the pointer stays.
        assert!(matches!(w.poll().await.unwrap(), Poll::Unchanged));
    }

    #[tokio::test]
    async fn a_corrupt_or_truncated_file_is_rejected() {
        let (_d, blobs, store, mut w, first) = setup().await;
        let second = model(5, None);
        publish(&store, &second).await;
        let mut bytes = second.to_bytes();
        bytes.truncate(bytes.len() / 2);
        let key = format!("models/{}/model.fsm", second.version());
        blobs.put(&key, bytes.clone().into()).await.unwrap();
        // A manifest that matches the truncated bytes, so only the file's own checks fail.
        let mut manifest = store.manifest(second.version()).await.unwrap();
        manifest.sha256 = crate::model::format::sha256_hex(&bytes);
        blobs
            .put(
                &format!("models/{}/manifest.json", second.version()),
                serde_json::to_vec(&manifest).unwrap().into(),
            )
            .await
            .unwrap();
        match w.poll().await.unwrap() {
            Poll::Rejected { reason, .. } => assert_eq!(reason.reason(), "corrupt", "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), first.version());
    }

    #[tokio::test]
    async fn a_feature_mismatch_is_rejected() {
        let (_d, _b, store, mut w, first) = setup().await;
        let fewer: Vec<String> = first.meta().features[..10].to_vec();
        let narrow = model(6, Some(fewer));
        publish(&store, &narrow).await;
        match w.poll().await.unwrap() {
            Poll::Rejected { reason, .. } => assert_eq!(reason.reason(), "features", "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), first.version());
        // Publishing a good one afterwards moves the pointer and is picked up.
        let good = model(7, None);
        publish(&store, &good).await;
        assert!(matches!(w.poll().await.unwrap(), Poll::Swapped { .. }));
    }

    #[tokio::test]
    async fn a_swapped_model_file_with_a_matching_checksum_fails_its_canaries() {
        let (_d, blobs, store, mut w, first) = setup().await;
        let second = model(8, None);
        publish(&store, &second).await;
        // Another sound model under the second's name, with the manifest's checksum and
        // size edited to match: only the published canaries can tell.
        let other = model(9, None).to_bytes();
        blobs
            .put(
                &format!("models/{}/model.fsm", second.version()),
                other.clone().into(),
            )
            .await
            .unwrap();
        let mut manifest = store.manifest(second.version()).await.unwrap();
        manifest.sha256 = crate::model::format::sha256_hex(&other);
        manifest.size_bytes = other.len() as u64;
        blobs
            .put(
                &format!("models/{}/manifest.json", second.version()),
                serde_json::to_vec(&manifest).unwrap().into(),
            )
            .await
            .unwrap();
        match w.poll().await.unwrap() {
            Poll::Rejected { reason, .. } => assert_eq!(reason.reason(), "canary", "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.serving.load().version(), first.version());
    }
}
