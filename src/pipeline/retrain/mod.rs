//! Periodic retraining with a quality gate that compares fairly.
//!
//! One cycle: read labelled history (Kaggle-layout CSV, JSON lines, or Parquet such as the
//! lake's files, from local paths, `s3://` or `hdfs://`), keep it within `max_rows` (every
//! fraud is kept; legitimate rows are sampled uniformly), and choose the *gate rows*: rows
//! the live model never trained on, i.e. outside its training window
//! (`metadata.train_window`) or among the rows its manifest records as held out. At most
//! `test_fraction` of the rows are gate rows (the most recent ones with `holdout = "time"`,
//! a stratified sample otherwise). The candidate trains on every other row, so neither
//! model has seen a gate row; both are scored on them.
//!
//! - Too few gate rows or frauds (`min_gate_rows`, `min_gate_frauds`): the decision is
//!   `insufficient_data`, nothing is trained or published, and it says what it had and
//!   needed.
//! - Otherwise the candidate is published (a conditional move of `LATEST`) only if it
//!   clears the absolute floors and the lower bound of a paired bootstrap interval of
//!   AUPRC(candidate) − AUPRC(live) on the gate rows is at least −`tolerance`.
//!
//! A candidate that passes is stored with the rows it held out and `models/CANDIDATE`
//! points at it (published, or only approved with `retrain.promote = false`), so
//! detectors can shadow-score it before anyone promotes it. A refused candidate is not
//! stored.
//!
//! - [`config`]: `[retrain]`. [`history`]: reading the history into a capped sample.
//! - [`gate`]: the gate rows and the gate itself (pure).

pub mod config;
mod evidence;
pub mod gate;
pub mod history;

use std::time::Duration;

use serde::Serialize;

pub use config::{RetrainConfig, Trigger};
pub use gate::gate;

use crate::eval::{ApDifference, Weights, ap_difference_weighted, evaluate_weighted};
use crate::metric_names as names;
use crate::model::RetrainTrigger;
use crate::monitoring::MonitoringConfig;
use crate::pipeline::{TrainOptions, train_split};
use crate::registry::{HoldoutSet, ModelStore, RegistryError};
use crate::storage::S3Settings;
use crate::stream::source::labels::LabelsError;

/// Why a retraining cycle ended without a decision.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// The model store refuses unsigned publications and this process cannot sign.
    #[error("retrain cannot publish: {0}")]
    CannotPublish(String),
    /// The model store failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The live version does not load or pass its checks.
    #[error("the live version is refused: {0}")]
    Live(#[from] crate::registry::Rejection),
    /// Reading, training or scoring failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The history could not be read.
    #[error(transparent)]
    History(#[from] crate::pipeline::remote::RemoteError),
    /// A `retrain.labels` file is missing or unreadable.
    #[error("retrain.labels: {0}")]
    LabelsFile(String),
    /// `retrain.labels_topic` could not be read to its end.
    #[error("retrain.labels_topic: {0}")]
    LabelsTopic(#[source] LabelsError),
    /// A value of `[retrain]` that cannot work.
    #[error("{0}")]
    Config(String),
    /// The history holds no fraud.
    #[error("the history has no frauds: nothing to learn from")]
    NoFrauds,
    /// Someone else moved `LATEST` while the candidate trained.
    #[error("LATEST moved during retraining; not published: {0}")]
    Moved(#[source] RegistryError),
    /// The training task panicked.
    #[error("training task: {0}")]
    Task(#[from] tokio::task::JoinError),
}
use crate::storage::StorageError;
use gate::{Live, gate_split};
use history::read_history;

/// The outcome of a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate is now `LATEST`.
    Published,
    /// The candidate passed the gate and is stored, but `retrain.promote` is off.
    Approved,
    /// The candidate was judged and refused; the live model keeps serving.
    Rejected,
    /// Too few rows that neither model trained on to judge: nothing was trained.
    InsufficientData,
    /// The evidence trigger found no reason to train (or is cooling down).
    NotTriggered,
}

impl Outcome {
    /// Metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::InsufficientData => "insufficient_data",
            Self::NotTriggered => "not_triggered",
        }
    }
}

/// What a cycle decided.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Published, rejected, or insufficient data.
    pub decision: Outcome,
    /// Rows read from history.
    pub rows_read: usize,
    /// Rows used (after the cap).
    pub rows_used: usize,
    /// Frauds among them.
    pub frauds: usize,
    /// Rows the live model never trained on (all rows without a live model).
    pub unseen_rows: usize,
    /// Gate rows: held out from the candidate, never seen by the live model.
    pub holdout_rows: usize,
    /// Frauds among the gate rows.
    pub holdout_frauds: usize,
    /// Gate rows needed for a decision.
    pub needed_rows: usize,
    /// Gate frauds needed for a decision.
    pub needed_frauds: usize,
    /// The candidate's version (none when nothing was trained).
    pub candidate: Option<String>,
    /// Its AUPRC on the gate rows.
    pub candidate_auprc: Option<f64>,
    /// Its recall at precision ≥ 0.90 on the gate rows.
    pub candidate_recall_at_p90: Option<f64>,
    /// The live version, if any.
    pub live: Option<String>,
    /// The live model's AUPRC on the same gate rows.
    pub live_auprc: Option<f64>,
    /// AUPRC(candidate) − AUPRC(live) on the gate rows, with its bootstrap interval.
    pub difference: Option<ApDifference>,
    /// Whether the candidate is now `LATEST`.
    pub published: bool,
    /// Why.
    pub reason: String,
    /// What started the cycle (or did not), with the evidence on the live model.
    pub trigger: Option<RetrainTrigger>,
    /// With `retrain.sample_bucket`: what the sample kept of each span of the history,
    /// oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<crate::pipeline::sample::Span>,
    /// Seconds reading history, training and evaluating.
    pub seconds: f64,
}

impl Decision {
    fn new(cfg: &RetrainConfig, live: Option<String>) -> Self {
        Self {
            decision: Outcome::InsufficientData,
            rows_read: 0,
            rows_used: 0,
            frauds: 0,
            unseen_rows: 0,
            holdout_rows: 0,
            holdout_frauds: 0,
            needed_rows: cfg.min_gate_rows,
            needed_frauds: cfg.min_gate_frauds,
            candidate: None,
            candidate_auprc: None,
            candidate_recall_at_p90: None,
            live,
            live_auprc: None,
            difference: None,
            published: false,
            reason: String::new(),
            trigger: None,
            spans: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// One retraining cycle against `store`. `monitoring` gives the drift bands of an
/// evidence trigger; `last_trained` is when this process last ran a cycle that trained
/// (for the cool-down).
pub async fn retrain_once(
    cfg: &RetrainConfig,
    monitoring: &MonitoringConfig,
    s3: &S3Settings,
    kafka: &crate::kafka::KafkaSettings,
    store: &ModelStore,
    on_file: &(dyn Fn(&str) + Sync),
    last_trained: Option<std::time::SystemTime>,
) -> Result<Decision, RetrainError> {
    let started = std::time::Instant::now();
    store
        .check_publishable()
        .map_err(RetrainError::CannotPublish)?;
    let live_pointer = store.latest().await?;
    // The live model's manifest now, its signature checked (its entity-feature spec says
    // how to read the history); its forest, checked in full, only once the history is
    // read: a forest retrained on a large history takes hundreds of MB, and holding it
    // beside the entity state and the sample would set the peak. A model file that fails
    // its checks is therefore found after the read, not before.
    let live_manifest = match &live_pointer {
        Some(l) => Some(store.manifest_verified(&l.version).await?),
        None => None,
    };
    let live_created = live_manifest.as_ref().map(|m| m.created_at.clone());
    let now = std::time::SystemTime::now();
    if cfg.trigger != Trigger::Schedule
        && let Some(left) = evidence::cooling_down(cfg, live_created.as_deref(), last_trained, now)
    {
        let mut decision = Decision::new(cfg, live_pointer.map(|l| l.version));
        decision.decision = Outcome::NotTriggered;
        decision.reason = format!(
            "retrain.cooldown: no evidence-triggered training for another {}",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        );
        return Ok(finish(decision, started));
    }
    // The candidate keeps the live model's features: with entity features, the history is
    // read with them (stored in lake files, computed for other files).
    let velocity = live_manifest.and_then(|m| m.metadata.velocity);
    let (
        crate::pipeline::sample::Sample {
            data,
            weights,
            row_weights,
            spans,
        },
        rows_read,
    ) = read_history(cfg, s3, kafka, velocity.as_ref(), on_file).await?;
    let live = match &live_pointer {
        Some(l) => Some(load_live(store, &l.version).await?),
        None => None,
    };
    let labels = data
        .labels()
        .map_err(crate::pipeline::PipelineError::from)?;
    let frauds = labels.iter().filter(|&&l| l == 1).count();
    if frauds == 0 {
        return Err(RetrainError::NoFrauds);
    }
    let (train_rows, gate_rows, unseen_rows) = gate_split(cfg, &data, &labels, live.as_ref());
    let gate_frauds = gate_rows.iter().filter(|&&i| labels[i] == 1).count();
    let mut decision = Decision {
        rows_read,
        rows_used: data.len(),
        spans,
        frauds,
        unseen_rows,
        holdout_rows: gate_rows.len(),
        holdout_frauds: gate_frauds,
        ..Decision::new(cfg, live_pointer.as_ref().map(|l| l.version.clone()))
    };
    let trigger = match &live {
        // On a schedule the evidence is only recorded: a cycle does not fail for it.
        Some(l) if cfg.trigger == Trigger::Schedule => RetrainTrigger {
            trigger: "schedule".into(),
            reason: "retrain.trigger is \"schedule\": every cycle trains".into(),
            evidence: evidence::judge(cfg, monitoring, &data, &labels, weights, row_weights.as_deref(), l)
                .inspect_err(|e| tracing::warn!(error = %e, "the live model could not be judged on the recent rows"))
                .ok(),
        },
        Some(l) => {
            let e = evidence::judge(cfg, monitoring, &data, &labels, weights, row_weights.as_deref(), l)?;
            evidence::decide(cfg, &e, live_created.as_deref(), now)
        }
        None => RetrainTrigger {
            trigger: cfg.trigger.as_str().into(),
            reason: "no live model: the first one is trained".into(),
            evidence: None,
        },
    };
    let fired = trigger.trigger != "none";
    decision.trigger = Some(trigger.clone());
    if !fired {
        decision.decision = Outcome::NotTriggered;
        decision.reason = trigger.reason;
        return Ok(finish(decision, started));
    }
    if gate_frauds < cfg.min_gate_frauds || gate_rows.len() < cfg.min_gate_rows {
        decision.reason = format!(
            "insufficient data: {} rows with {gate_frauds} frauds that {} never trained on; a decision needs at least {} rows and {} frauds",
            gate_rows.len(),
            if live.is_some() {
                "neither model has"
            } else {
                "the candidate has"
            },
            cfg.min_gate_rows,
            cfg.min_gate_frauds
        );
        return Ok(finish(decision, started));
    }

    let mut opts = TrainOptions::default();
    match &cfg.params {
        Some(p) => {
            opts.params = crate::pipeline::read_train_params(std::path::Path::new(p))
                .map_err(RetrainError::Config)?;
        }
        None => {
            opts.params.n_trees = cfg.trees;
            opts.params.seed = cfg.seed;
        }
    }
    opts.split = cfg.holdout;
    opts.test_fraction = cfg.test_fraction;
    if let Some(l) = &live {
        opts.features.clone_from(&l.model.meta().features);
    }
    opts.velocity = velocity;
    opts.sampling = weights;
    if let Some(w) = weights {
        tracing::info!(
            legit_weight = w[0],
            fraud_weight = w[1],
            per_row = row_weights.is_some(),
            "the history is sampled: rows weighted by what they stand for"
        );
    }
    opts.row_weights = row_weights.map(|r| crate::pipeline::RowWeights(r.into()));
    let source = cfg.history.join(",");
    let (resamples, confidence, seed) = (cfg.resamples, cfg.confidence, cfg.seed);
    let had_live = live.is_some();
    let (candidate, holdout, live_metrics, difference) =
        tokio::task::spawn_blocking(move || -> Result<_, crate::pipeline::PipelineError> {
            // The live model scores the gate rows (in place: a copy of them would sit
            // beside the sample) and is freed before the candidate trains: a forest
            // retrained on a large history takes hundreds of MB, and two of them at
            // once would set the peak.
            let live_scores = live
                .map(|l| {
                    let scores = l.model.score_rows(&data, &gate_rows)?;
                    Ok::<_, crate::model::ModelError>((scores, l.model.meta().threshold))
                })
                .transpose()
                .map_err(crate::pipeline::PipelineError::from)?;
            let holdout = HoldoutSet::of_split(&data, &gate_rows);
            let outcome = train_split(&data, &source, &opts, train_rows, gate_rows, &|| {})?;
            let (live_metrics, difference) = match live_scores {
                Some((scores, threshold)) => {
                    // Weighted as the candidate's own metrics are, on a sampled history.
                    let rows = opts.row_weights.as_ref().map(|r| r.of(&outcome.test_rows));
                    let class = Weights::rows_or(rows.as_deref(), weights);
                    let metrics =
                        evaluate_weighted(&scores, &outcome.test_labels, threshold, class);
                    let diff = ap_difference_weighted(
                        &outcome.test_scores,
                        &scores,
                        &outcome.test_labels,
                        class,
                        resamples,
                        confidence,
                        seed,
                    );
                    (Some(metrics), diff)
                }
                None => (None, None),
            };
            Ok((outcome.model, holdout, live_metrics, difference))
        })
        .await??;

    let cm = candidate.meta().holdout_metrics.clone();
    decision.candidate = Some(candidate.version().to_owned());
    decision.candidate_auprc = cm.as_ref().and_then(|m| m.auprc);
    decision.candidate_recall_at_p90 = cm.as_ref().and_then(|m| m.recall_at_precision_90);
    decision.live_auprc = live_metrics.as_ref().and_then(|m| m.auprc);
    decision.difference = difference;
    let verdict = gate(
        cfg,
        decision.candidate_auprc,
        decision.candidate_recall_at_p90,
        had_live.then_some(decision.difference.as_ref()),
    );
    // A candidate that passes is stored (with the rows it held out) and named by
    // `models/CANDIDATE`, so detectors can shadow-score it; a refused one is not stored,
    // so an hourly retrain that keeps refusing does not grow the store.
    if verdict.is_ok() {
        store
            .put_retrained(&candidate, Some(&holdout), Some(&trigger))
            .await?;
        store.set_candidate(candidate.version()).await?;
    }
    match verdict {
        Ok(why) if !cfg.promote => {
            decision.decision = Outcome::Approved;
            decision.reason = format!("{why}; retrain.promote is off: LATEST not moved");
        }
        Ok(why) => {
            store
                .set_latest(candidate.version(), live_pointer.as_ref())
                .await
                .map_err(RetrainError::Moved)?;
            decision.decision = Outcome::Published;
            decision.published = true;
            decision.reason = why;
        }
        Err(why) => {
            decision.decision = Outcome::Rejected;
            decision.reason = why;
        }
    }
    Ok(finish(decision, started))
}

/// The live model `version`, checked, with what tells the rows it never trained on.
async fn load_live(store: &ModelStore, version: &str) -> Result<Live, RetrainError> {
    let (model, manifest) = store.get_checked(version, None).await?;
    let holdout = match store.holdout(&manifest).await {
        Ok(h) => h,
        // Missing or not matching its manifest: grade with the training window
        // alone (fewer rows count as unseen, never more). Unreachable storage is
        // an error, and the next cycle tries again.
        Err(
            e @ (RegistryError::Corrupt { .. }
            | RegistryError::Storage(StorageError::NotFound { .. })),
        ) => {
            tracing::warn!(version = %version, error = %e, "the live model's held-out rows cannot be read; only its training window tells unseen rows");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if manifest.metadata.train_window.is_none() && holdout.is_none() {
        tracing::warn!(version = %version, "the live model records neither its training window nor its held-out rows: no row is known to be unseen by it");
    }
    Ok(Live {
        model,
        manifest,
        holdout,
    })
}

/// Record the decision's metrics and log it.
fn finish(mut decision: Decision, started: std::time::Instant) -> Decision {
    decision.seconds = started.elapsed().as_secs_f64();
    let outcome = decision.decision.as_str();
    metrics::counter!(names::RETRAIN_DECISIONS, "outcome" => outcome).increment(1);
    let trigger = decision
        .trigger
        .as_ref()
        .map_or("none", |t| t.trigger.as_str());
    if let Some(psi) = decision
        .trigger
        .as_ref()
        .and_then(|t| t.evidence.as_ref())
        .and_then(|e| e.max_psi)
    {
        metrics::gauge!(names::RETRAIN_EVIDENCE_MAX_PSI).set(psi);
    }
    if let Some(a) = decision.candidate_auprc {
        metrics::gauge!(names::RETRAIN_CANDIDATE_AUPRC).set(a);
    }
    if let Some(a) = decision.live_auprc {
        metrics::gauge!(names::RETRAIN_LIVE_AUPRC).set(a);
    }
    tracing::info!(outcome, trigger, candidate = ?decision.candidate, candidate_auprc = ?decision.candidate_auprc, live = ?decision.live, live_auprc = ?decision.live_auprc, gate_rows = decision.holdout_rows, gate_frauds = decision.holdout_frauds, reason = %decision.reason, seconds = decision.seconds, "retraining decision");
    decision
}

#[cfg(test)]
mod tests;
