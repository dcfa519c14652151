//! The scorer: one batch of transactions in, one verdict each out. It loads the serving
//! model once per batch (so a hot reload never splits a batch, and every verdict names
//! the version that scored it), and scores off the async runtime with the core's one
//! scoring function, [`crate::model::Model::verdicts`].

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::source::Incoming;
use crate::metric_names as names;
use crate::model::{Explain, Model, Verdict};

/// A scored batch: the rows and their verdicts, index for index.
#[derive(Debug)]
pub struct Scored {
    /// The transactions.
    pub rows: Vec<Incoming>,
    /// Their verdicts.
    pub verdicts: Vec<Verdict>,
}

/// Scoring failed for a reason that is not the input's: the blocking pool lost the task.
#[derive(Debug, thiserror::Error)]
#[error("scoring task failed: {0}")]
pub struct ScoreError(#[from] tokio::task::JoinError);

/// Scores batches with the serving model.
pub struct Scorer {
    model: Arc<ArcSwap<Model>>,
    top_k: usize,
    explain: Explain,
    version: String,
}

impl Scorer {
    /// A scorer of `model` (swapped by the watcher) keeping `top_k` contributions on every
    /// verdict.
    #[must_use]
    pub fn new(model: Arc<ArcSwap<Model>>, top_k: usize) -> Self {
        Self::with_explain(model, top_k, Explain::All)
    }

    /// A scorer explaining the verdicts `explain` names.
    #[must_use]
    pub fn with_explain(model: Arc<ArcSwap<Model>>, top_k: usize, explain: Explain) -> Self {
        Self {
            model,
            top_k,
            explain,
            version: String::new(),
        }
    }

    /// Score `rows` on the blocking pool.
    pub async fn score(&mut self, rows: Vec<Incoming>) -> Result<Scored, ScoreError> {
        let model = self.model.load_full();
        self.note_model(&model);
        let (top_k, explain) = (self.top_k, self.explain);
        let started = Instant::now();
        let scored = tokio::task::spawn_blocking(move || {
            let mut x = Vec::with_capacity(rows.len() * model.forest().n_features());
            for r in &rows {
                model.features_into(&r.tx, &mut x);
            }
            let ids: Vec<&str> = rows.iter().map(|r| r.tx.id.as_str()).collect();
            let verdicts = model.verdicts_with(&ids, &x, top_k, explain);
            drop(ids);
            Scored { rows, verdicts }
        })
        .await?;
        super::delivery::stage_time("score", started);
        Ok(scored)
    }

    /// Export the serving model's version and age.
    fn note_model(&mut self, model: &Model) {
        if self.version != model.version() {
            if !self.version.is_empty() {
                metrics::gauge!(names::MODEL_INFO, "version" => self.version.clone()).set(0.0);
            }
            metrics::gauge!(names::MODEL_INFO, "version" => model.version().to_owned()).set(1.0);
            model.version().clone_into(&mut self.version);
        }
        if let Ok(created) = humantime::parse_rfc3339(&model.meta().created_at)
            && let Ok(age) = std::time::SystemTime::now().duration_since(created)
        {
            metrics::gauge!(names::MODEL_AGE_SECONDS).set(age.as_secs_f64());
        }
    }
}
