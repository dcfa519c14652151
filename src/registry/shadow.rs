//! The shadow model: a second model (`models.shadow`) scored on every batch beside the
//! serving one, whose scores go to the lake and to metrics only, never to verdicts or
//! alerts.
//!
//! `models.shadow` names a version, loaded once, or `candidate`, which follows the
//! `models/CANDIDATE` pointer that `retrain` moves to every candidate that passes. A shadow
//! version passes the same checks as a serving one ([`ModelStore::get_checked`]); one
//! that fails them is not loaded, and scoring goes on without a shadow (a fixed version
//! that fails at start-up stops the detector: [`ShadowWatcher::refusal`]). A shadow equal to
//! the serving version is not scored twice.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use super::{CANDIDATE_KEY, Latest, ModelStore, RegistryError, Rejection};
use crate::metric_names as names;
use crate::model::Model;

/// The configured shadow: `candidate`, or a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowSpec {
    /// Follow `models/CANDIDATE`.
    Candidate,
    /// This version.
    Version(String),
}

impl ShadowSpec {
    /// Parse `models.shadow`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        if text == "candidate" {
            Self::Candidate
        } else {
            Self::Version(text.to_owned())
        }
    }
}

/// Loads the shadow model into its slot, and keeps it current.
pub struct ShadowWatcher {
    store: ModelStore,
    spec: ShadowSpec,
    slot: Arc<ArcSwapOption<Model>>,
    pointer: Option<Latest>,
    /// A fixed version that loaded or was refused for good: nothing left to do.
    settled: bool,
    /// Why the last version polled was refused (cleared when one loads).
    refused: Option<String>,
}

impl ShadowWatcher {
    /// A watcher filling `slot`.
    #[must_use]
    pub fn new(store: ModelStore, spec: ShadowSpec, slot: Arc<ArcSwapOption<Model>>) -> Self {
        Self {
            store,
            spec,
            slot,
            pointer: None,
            settled: false,
            refused: None,
        }
    }

    /// Why the last version polled was refused, if it was: a fixed `models.shadow` that
    /// cannot load is a configuration error at start-up.
    #[must_use]
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Load the shadow if it changed. `Ok(Some(version))` when a new one was loaded.
    pub async fn poll(&mut self) -> Result<Option<String>, RegistryError> {
        if self.settled {
            return Ok(None);
        }
        let version = match &self.spec {
            ShadowSpec::Version(v) => v.clone(),
            ShadowSpec::Candidate => {
                let etag = self.pointer.as_ref().map(|l| l.etag.clone());
                match self
                    .store
                    .pointer_if_changed(CANDIDATE_KEY, etag.as_deref())
                    .await?
                {
                    Some(l) => {
                        let v = l.version.clone();
                        self.pointer = Some(l);
                        v
                    }
                    None => return Ok(None),
                }
            }
        };
        if self
            .slot
            .load()
            .as_ref()
            .is_some_and(|m| m.version() == version)
        {
            return Ok(None);
        }
        match self.store.get_checked(&version, None).await {
            Err(Rejection::Load(e @ RegistryError::Storage(_))) => {
                self.pointer = None;
                Err(e)
            }
            Ok((model, _)) => {
                self.settled = matches!(self.spec, ShadowSpec::Version(_));
                self.slot.store(Some(Arc::new(model)));
                self.refused = None;
                tracing::info!(version = %version, "shadow model loaded");
                Ok(Some(version))
            }
            Err(reason) => {
                self.settled = matches!(self.spec, ShadowSpec::Version(_));
                metrics::counter!(names::SHADOW_REJECTIONS, "reason" => reason.reason())
                    .increment(1);
                tracing::error!(version = %version, kind = %reason.reason(), reason = %reason, "shadow model refused; scoring goes on without it");
                self.refused = Some(format!("version {version} cannot serve: {reason}"));
                Ok(None)
            }
        }
    }

    /// Poll every `interval` until `stop` is cancelled.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        super::poll_every(self, interval, stop).await;
    }
}

impl super::Polling for ShadowWatcher {
    type Error = RegistryError;

    async fn poll_once(&mut self) -> Result<(), RegistryError> {
        self.poll().await.map(drop)
    }

    fn watching(&self) -> String {
        format!("{} (shadow {:?})", self.store.describe(), self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{TrainOptions, train_model};
    use crate::storage::local::LocalStore;

    fn model(seed: u64) -> Model {
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 3;
        opts.params.seed = seed;
        let data = crate::test_support::dataset(400, seed);
        train_model(&data, "t", &opts, &|| {}).unwrap().model
    }

    #[tokio::test]
    async fn the_candidate_pointer_is_followed_and_a_missing_version_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(Arc::new(LocalStore::new(dir.path()).unwrap()));
        let slot = Arc::new(ArcSwapOption::empty());
        let mut w = ShadowWatcher::new(store.clone(), ShadowSpec::Candidate, slot.clone());
        assert_eq!(w.poll().await.unwrap(), None, "no candidate yet");
        let a = model(1);
        store.put(&a).await.unwrap();
        store.set_candidate(a.version()).await.unwrap();
        assert_eq!(w.poll().await.unwrap().as_deref(), Some(a.version()));
        assert_eq!(w.poll().await.unwrap(), None, "unchanged");
        let b = model(2);
        store.put(&b).await.unwrap();
        store.set_candidate(b.version()).await.unwrap();
        assert_eq!(w.poll().await.unwrap().as_deref(), Some(b.version()));
        assert_eq!(slot.load().as_ref().unwrap().version(), b.version());

        let empty = Arc::new(ArcSwapOption::empty());
        let mut fixed =
            ShadowWatcher::new(store, ShadowSpec::parse("no-such-version"), empty.clone());
        assert_eq!(fixed.poll().await.unwrap(), None);
        assert!(
            empty.load().is_none(),
            "refused, and scoring goes on without it"
        );
    }
}
