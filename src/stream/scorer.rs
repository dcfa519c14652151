//! The scorer: one batch of transactions in, one verdict each out. It loads the serving
//! model once per batch (so a hot reload never splits a batch, and every verdict names
//! the version that scored it), and scores off the async runtime with the core's one
//! scoring function, [`crate::model::Model::verdicts`].
//!
//! With a shadow model loaded ([`crate::registry::shadow`]), the same batch is scored by
//! it too, on the same thread: its scores ride along to the lake and to metrics, never to
//! verdicts or alerts.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::source::Incoming;
use crate::metric_names as names;
use crate::model::{Explain, Model, Verdict};
use crate::registry::decisions::{Decider, DecisionCounts};
use crate::velocity::IdRing;
use crate::velocity::stage::Velocity;

/// A transaction for the dead-letter sink: refused before scoring (a missing entity id:
/// taken out of its batch), or scored but counted in no entity for its event time (a
/// copy).
#[derive(Debug)]
pub struct Refused {
    /// The row.
    pub row: Incoming,
    /// The dead letter's reason code: `missing_entity` or `time_out_of_range`.
    pub code: &'static str,
    /// Why.
    pub reason: String,
}

/// Rows the velocity stage holds ahead of the watermark, remembered for their dead
/// letter should they be taken back; more than the engine holds.
const HELD_REMEMBERED: usize = 4_096;

/// A scored batch: the rows and their verdicts, index for index.
#[derive(Debug)]
pub struct Scored {
    /// The transactions.
    pub rows: Vec<Incoming>,
    /// Their verdicts.
    pub verdicts: Vec<Verdict>,
    /// The shadow model's scores of the same rows, when one is loaded.
    pub shadow: Option<ShadowScores>,
    /// Rows taken out before scoring (a missing entity id under
    /// `velocity.features.missing_entity = "refuse"`), for the dead-letter sink.
    pub refused: Vec<Refused>,
    /// Copies of scored rows for the dead-letter sink (an event time out of range).
    pub notices: Vec<Refused>,
}

impl Scored {
    /// Keep the rows whose flag in `keep` is `true` (rows past its end are kept), with
    /// their verdicts and shadow scores.
    pub fn retain(&mut self, keep: &[bool]) {
        fn by<T>(items: &mut Vec<T>, keep: &[bool]) {
            let mut flags = keep.iter();
            items.retain(|_| *flags.next().unwrap_or(&true));
        }
        by(&mut self.rows, keep);
        by(&mut self.verdicts, keep);
        if let Some(s) = self.shadow.as_mut() {
            by(&mut s.scores, keep);
            by(&mut s.fraud, keep);
        }
    }
}

/// A shadow model's scores of a batch.
#[derive(Debug, Clone)]
pub struct ShadowScores {
    /// The shadow version.
    pub version: Arc<str>,
    /// One score per row.
    pub scores: Vec<f32>,
    /// One verdict per row, at the shadow model's own threshold.
    pub fraud: Vec<bool>,
}

/// Score a batch with the shadow model and export how it compares with the verdicts.
/// `x` is the serving model's feature matrix, reused when the shadow's features are the
/// same.
fn shadow_scores(
    model: &Model,
    serving: &Model,
    x: &[f32],
    rows: &[Incoming],
    verdicts: &[Verdict],
) -> ShadowScores {
    let own;
    let x = if model.meta().features == serving.meta().features {
        x
    } else {
        let mut m = Vec::with_capacity(rows.len() * model.forest().n_features());
        for r in rows {
            model.features_into(&r.tx, &mut m);
        }
        own = m;
        &own
    };
    let mut scores = vec![0.0; rows.len()];
    model.forest().predict_into(x, &mut scores);
    let threshold = model.meta().threshold as f32;
    let fraud: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
    let agree = fraud
        .iter()
        .zip(verdicts)
        .filter(|&(&f, v)| f == v.fraud)
        .count() as u64;
    metrics::counter!(names::SHADOW_SCORED, "agree" => "true").increment(agree);
    metrics::counter!(names::SHADOW_SCORED, "agree" => "false")
        .increment(rows.len() as u64 - agree);
    let histogram = metrics::histogram!(names::SHADOW_SCORE);
    for &s in &scores {
        histogram.record(f64::from(s));
    }
    ShadowScores {
        version: model.version_arc(),
        scores,
        fraud,
    }
}

/// Give `rows` their entity features: rows the stage refuses (a missing entity id) are
/// taken out; rows it holds are remembered in `held`; returns the refused rows and the
/// dead-letter copies of rows that count in no entity for their event time.
fn entity_features(
    v: &Velocity,
    held: &std::sync::Mutex<IdRing<Incoming>>,
    rows: &mut Vec<Incoming>,
) -> Result<(Vec<Refused>, Vec<Refused>), crate::velocity::StoreError> {
    let mut refused = Vec::new();
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        match v.refusal(&row.tx) {
            Some((entity, reason)) => {
                metrics::counter!(names::VELOCITY_MISSING_ENTITY, "entity" => entity, "action" => "refused").increment(1);
                refused.push(Refused {
                    row,
                    code: "missing_entity",
                    reason,
                });
            }
            None => kept.push(row),
        }
    }
    *rows = kept;
    let mut txs: Vec<crate::schema::Transaction> =
        rows.iter_mut().map(|r| std::mem::take(&mut r.tx)).collect();
    let computed = v.compute(&mut txs);
    for (r, t) in rows.iter_mut().zip(txs) {
        r.tx = t;
    }
    let report = computed?;
    let mut held = held
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for &i in &report.held {
        held.insert(&rows[i].tx.id, rows[i].clone(), 0, HELD_REMEMBERED);
    }
    for id in &report.confirmed {
        held.remove(id);
    }
    let notices = report
        .notices
        .into_iter()
        .filter_map(|n| {
            let row = match n.row {
                Some(i) => Some(rows[i].clone()),
                None => held.remove(&n.tx_id),
            }?;
            Some(Refused {
                row,
                code: "time_out_of_range",
                reason: n.reason,
            })
        })
        .collect();
    Ok((refused, notices))
}

/// Scoring failed for a reason that is not the input's.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The blocking pool lost the task.
    #[error("scoring task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The entity-feature store stayed unreachable until the shutdown deadline.
    #[error("entity features: {0}")]
    Velocity(#[from] crate::velocity::StoreError),
}

/// Scores batches with the serving model.
pub struct Scorer {
    model: Arc<ArcSwap<Model>>,
    shadow: Arc<ArcSwapOption<Model>>,
    top_k: usize,
    explain: Explain,
    version: String,
    shadow_version: String,
    velocity: Option<Arc<Velocity>>,
    /// Rows the velocity stage holds (by transaction id), for their dead letter.
    held: Arc<std::sync::Mutex<IdRing<Incoming>>>,
    /// What turns verdicts into outcomes (none: the model's rule, as scored).
    decider: Option<(Arc<ArcSwap<Decider>>, Arc<DecisionCounts>)>,
    /// Where each batch's features and scores are counted for drift.
    monitor: Option<Arc<crate::monitoring::Monitor>>,
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
            shadow: Arc::new(ArcSwapOption::empty()),
            top_k,
            explain,
            version: String::new(),
            shadow_version: String::new(),
            velocity: None,
            held: Arc::default(),
            decider: None,
            monitor: None,
        }
    }

    /// Count every batch's features and scores in `monitor`.
    #[must_use]
    pub fn with_monitor(mut self, monitor: Arc<crate::monitoring::Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Decide every verdict with the decider in `slot` (rules, lists, the model's rule),
    /// counting the outcomes and the rules' matches in `counts`.
    #[must_use]
    pub fn with_decider(
        mut self,
        slot: Arc<ArcSwap<Decider>>,
        counts: Arc<DecisionCounts>,
    ) -> Self {
        self.decider = Some((slot, counts));
        self
    }

    /// Also score every batch with the model in `slot`, when there is one.
    #[must_use]
    pub fn with_shadow(mut self, slot: Arc<ArcSwapOption<Model>>) -> Self {
        self.shadow = slot;
        self
    }

    /// Give every transaction its entity features before it is scored.
    #[must_use]
    pub fn with_velocity(mut self, velocity: Option<Arc<Velocity>>) -> Self {
        self.velocity = velocity;
        self
    }

    /// Score `rows` on the blocking pool.
    pub async fn score(&mut self, rows: Vec<Incoming>) -> Result<Scored, ScoreError> {
        let model = self.model.load_full();
        self.note_model(&model);
        // Scoring the serving version twice would say nothing.
        let shadow = self
            .shadow
            .load_full()
            .filter(|s| s.version() != model.version());
        self.note_shadow(shadow.as_deref());
        let (top_k, explain) = (self.top_k, self.explain);
        let velocity = self.velocity.clone();
        let held = self.held.clone();
        let decider = self
            .decider
            .as_ref()
            .map(|(slot, counts)| (slot.load_full(), counts.clone()));
        let monitor = self.monitor.clone();
        let started = Instant::now();
        let scored = tokio::task::spawn_blocking(move || {
            let mut rows = rows;
            let (refused, notices) = match &velocity {
                Some(v) => {
                    let started = Instant::now();
                    let set_aside = entity_features(v, &held, &mut rows)?;
                    super::delivery::stage_time("velocity", started);
                    set_aside
                }
                None => (Vec::new(), Vec::new()),
            };
            let mut x = Vec::with_capacity(rows.len() * model.forest().n_features());
            for r in &rows {
                model.features_into(&r.tx, &mut x);
            }
            let ids: Vec<&str> = rows.iter().map(|r| r.tx.id.as_str()).collect();
            let mut verdicts = model.verdicts_with(&ids, &x, top_k, explain);
            drop(ids);
            if let Some(m) = &monitor {
                let scores: Vec<f32> = verdicts.iter().map(|v| v.score).collect();
                let flagged = verdicts.iter().filter(|v| v.fraud).count() as u64;
                m.observe(&model, &x, &scores, flagged);
            }
            if let Some((decider, counts)) = &decider {
                for (r, v) in rows.iter().zip(verdicts.iter_mut()) {
                    decider.apply(&r.tx, v);
                }
                counts.count(&verdicts);
            }
            let shadow = shadow.map(|m| shadow_scores(&m, &model, &x, &rows, &verdicts));
            if let Some(v) = &velocity {
                v.record_verdicts(&verdicts);
            }
            Ok::<_, ScoreError>(Scored {
                rows,
                verdicts,
                shadow,
                refused,
                notices,
            })
        })
        .await??;
        super::delivery::stage_time("score", started);
        Ok(scored)
    }

    /// Export the shadow model's version.
    fn note_shadow(&mut self, shadow: Option<&Model>) {
        let version = shadow.map_or("", Model::version);
        if self.shadow_version != version {
            if !self.shadow_version.is_empty() {
                metrics::gauge!(names::SHADOW_INFO, "version" => self.shadow_version.clone())
                    .set(0.0);
            }
            if !version.is_empty() {
                metrics::gauge!(names::SHADOW_INFO, "version" => version.to_owned()).set(1.0);
            }
            version.clone_into(&mut self.shadow_version);
        }
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
