//! The serving model at start-up: `LATEST` from the model store, or, when the store is
//! empty, a first model trained from `bootstrap.history` and published there (when
//! several detectors start on an empty store together, the first publication wins and
//! the others serve it).

use super::error::{DetectorError, Opening as _};
use crate::config::Config;
use crate::model::Model;
use crate::pipeline::{PipelineError, TrainOptions, train_model};
use crate::registry::{HoldoutSet, ModelStore, RegistryError};
use crate::schema::{ReadOptions, read_dataset};
use crate::storage::StorageError;

/// Where the serving model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOrigin {
    /// The version `LATEST` named.
    Latest,
    /// Trained from this history because the store was empty, and published.
    Trained {
        /// The history file.
        history: String,
    },
}

/// Load or bootstrap the serving model.
pub async fn serving_model(
    cfg: &Config,
    store: &ModelStore,
) -> Result<(Model, ModelOrigin), DetectorError> {
    let expected = cfg.models.features.as_deref();
    if let Some(latest) = store.latest().await? {
        let (model, _) = store
            .get_checked(&latest.version, expected)
            .await
            .opening(format!("the serving version {} is refused", latest.version))?;
        tracing::info!(version = %latest.version, store = %store.describe(), "serving model loaded");
        return Ok((model, ModelOrigin::Latest));
    }
    let history = cfg.bootstrap.history.as_deref().ok_or_else(|| {
        DetectorError::NoModel(format!(
            "the model store {} is empty and no bootstrap.history is configured",
            store.describe()
        ))
    })?;
    store
        .check_publishable()
        .map_err(|why| DetectorError::NoModel(format!("cannot bootstrap a first model: {why}")))?;
    tracing::info!(history, store = %store.describe(), "model store is empty: training a first model");
    let history_owned = history.to_owned();
    let (model, holdout) = tokio::task::spawn_blocking(move || -> Result<_, PipelineError> {
        let (data, _) = read_dataset(&history_owned, ReadOptions::default())?;
        let outcome = train_model(&data, &history_owned, &TrainOptions::default(), &|| {})?;
        let holdout = HoldoutSet::of_split(&data, &outcome.test_rows);
        Ok((outcome.model, holdout))
    })
    .await
    .opening("bootstrap.history")?
    .opening(format!("bootstrap.history {history}"))?;
    model
        .check(expected, &[])
        .opening("the bootstrapped model")?;
    // With the held-out rows recorded, `retrain` can grade this model on rows it never saw.
    store.put_with_holdout(&model, Some(&holdout)).await?;
    match store.set_latest(model.version(), None).await {
        Ok(_) => {}
        // Another detector published first: serve what it published.
        Err(RegistryError::Storage(StorageError::PreconditionFailed { .. })) => {
            if let Some(l) = store.latest().await? {
                let (model, _) = store
                    .get_checked(&l.version, expected)
                    .await
                    .opening(format!("the serving version {} is refused", l.version))?;
                return Ok((model, ModelOrigin::Latest));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let m = model.meta().headline_metrics().map(|(_, m)| m.auprc);
    tracing::info!(version = %model.version(), holdout_auprc = ?m.flatten(), "trained and published a first model");
    Ok((
        model,
        ModelOrigin::Trained {
            history: history.to_owned(),
        },
    ))
}
