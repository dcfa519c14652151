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

use serde::{Deserialize, Serialize};

use crate::eval::{ApDifference, SplitKind, ap_difference, evaluate, split};
use crate::metric_names as names;
use crate::model::Model;
use crate::pipeline::{TrainOptions, train_split};
use crate::registry::{HoldoutSet, Manifest, ModelStore, RegistryError};
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions, TIME};
use crate::storage::S3Settings;
use crate::storage::StorageError;

/// `[retrain]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Labelled history: files, or prefixes ending in `/` whose `.csv`, `.jsonl` and
    /// `.parquet` objects are all read (local, `s3://` or `hdfs://`).
    pub history: Vec<String>,
    /// Local JSON-lines labels files (`id`, `Class`, as `velocity.labels_path`): a history
    /// row without a `Class` (the lake's rows) takes its label from them by id; rows
    /// still unlabelled are left out. With the lake as history, the candidate then learns
    /// from the features exactly as they were served.
    pub labels: Vec<String>,
    /// A Kafka topic of labels (as `velocity.labels_topic`) on `kafka.brokers`, read to
    /// its end each cycle, like the files of `labels`. Keyed by transaction id with
    /// log compaction, it keeps one label per transaction for as long as needed.
    pub labels_topic: Option<String>,
    /// Most rows trained and evaluated on: above it, every fraud is kept and legitimate
    /// rows are sampled uniformly. Bounds memory to about `max_rows` × 250 bytes plus one
    /// history file.
    pub max_rows: usize,
    /// `time`: the most recent rows are the holdout; `stratified`: a random sample.
    pub holdout: SplitKind,
    /// Share of rows held out.
    pub test_fraction: f64,
    /// How much lower than the live model's AUPRC on the gate rows the candidate's may
    /// be, at the lower bound of the bootstrap interval of the difference. Two equally
    /// good models graded on about 100 frauds give an interval about ±0.012 wide, so a
    /// tolerance much below that refuses most equal candidates.
    pub tolerance: f64,
    /// Fewest frauds among the gate rows for a decision; fewer: `insufficient_data`.
    pub min_gate_frauds: usize,
    /// Fewest gate rows for a decision.
    pub min_gate_rows: usize,
    /// Bootstrap resamples for the interval of the AUPRC difference.
    pub resamples: usize,
    /// Coverage of that interval.
    pub confidence: f64,
    /// The candidate's holdout AUPRC must be at least this.
    pub min_auprc: f64,
    /// The candidate's holdout recall at precision ≥ 0.90 must be at least this.
    pub min_recall_at_precision_90: f64,
    /// Move `LATEST` to a candidate that passes the gate. `false`: only store it and point
    /// `models/CANDIDATE` at it (decision `approved`), to shadow-score it first and
    /// promote it by hand (`fraudstream model promote`).
    pub promote: bool,
    /// Trees in the candidate.
    pub trees: usize,
    /// Seed for sampling and the forest.
    pub seed: u64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            history: Vec::new(),
            labels: Vec::new(),
            labels_topic: None,
            max_rows: 2_000_000,
            holdout: SplitKind::Time,
            test_fraction: 0.2,
            tolerance: 0.02,
            min_gate_frauds: 30,
            min_gate_rows: 500,
            resamples: 1000,
            confidence: 0.95,
            min_auprc: 0.5,
            min_recall_at_precision_90: 0.0,
            promote: true,
            trees: 100,
            seed: 42,
        }
    }
}

impl crate::validate::Validate for RetrainConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        use crate::validate::Invalid;
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Invalid::new("test_fraction", "must be above 0 and below 1"));
        }
        if self.max_rows < 100 {
            return Err(Invalid::new("max_rows", "must be at least 100"));
        }
        if self.trees == 0 {
            return Err(Invalid::new("trees", "must be at least 1"));
        }
        if self.holdout == SplitKind::None {
            return Err(Invalid::new(
                "holdout",
                "the gate needs held-out rows: use \"time\" or \"stratified\"",
            ));
        }
        if self.min_gate_frauds == 0 {
            return Err(Invalid::new("min_gate_frauds", "must be at least 1"));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Invalid::new("confidence", "must be above 0 and below 1"));
        }
        if self.resamples < 100 {
            return Err(Invalid::new("resamples", "must be at least 100"));
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 1.0) {
            return Err(Invalid::new("tolerance", "must be at least 0 and below 1"));
        }
        if self
            .labels_topic
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Invalid::new("labels_topic", "must name a topic"));
        }
        Ok(())
    }
}

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
    /// Seconds reading history, training and evaluating.
    pub seconds: f64,
}

/// Every fraud, plus a uniform sample of at most `cap` legitimate rows (reservoir
/// sampling), fed one file at a time.
struct Sampler {
    frauds: Dataset,
    legit: Dataset,
    seen_legit: u64,
    cap: usize,
    rng: Rng,
    read: usize,
}

impl Sampler {
    fn add(&mut self, d: &Dataset) {
        self.read += d.len();
        for i in 0..d.len() {
            let tx = d.row(i);
            match tx.label {
                Some(1) => self.frauds.push(tx),
                Some(_) => {
                    self.seen_legit += 1;
                    if self.legit.len() < self.cap {
                        self.legit.push(tx);
                    } else {
                        let j = (self.rng.unit() * self.seen_legit as f64) as usize;
                        if j < self.cap {
                            let row = tx
                                .values
                                .iter()
                                .copied()
                                .chain(tx.derived.iter().map(|&v| f64::from(v)));
                            for (c, v) in self.legit.columns.iter_mut().zip(row) {
                                c[j] = v;
                            }
                            self.legit.ids[j] = tx.id;
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Frauds then legitimate rows, legitimate ones trimmed so the total fits `max_rows`.
    fn finish(mut self, max_rows: usize) -> Dataset {
        let room = max_rows.saturating_sub(self.frauds.len());
        if self.legit.len() > room {
            let mut idx: Vec<usize> = (0..self.legit.len()).collect();
            self.rng.shuffle(&mut idx);
            idx.truncate(room);
            idx.sort_unstable();
            self.legit = self.legit.select(&idx);
        }
        for i in 0..self.legit.len() {
            self.frauds.push(self.legit.row(i));
        }
        self.frauds
    }
}

/// Longest read of `retrain.labels_topic` to its end.
const LABELS_TOPIC_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Read every history entry into a capped dataset.
async fn read_history(
    cfg: &RetrainConfig,
    s3: &S3Settings,
    kafka: &crate::kafka::KafkaSettings,
    velocity: Option<&crate::velocity::VelocitySpec>,
    on_file: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(Dataset, usize)> {
    anyhow::ensure!(!cfg.history.is_empty(), "retrain.history is empty");
    let mut labels: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    for path in &cfg.labels {
        anyhow::ensure!(
            std::path::Path::new(path).is_file(),
            "retrain.labels: {path} is not a file"
        );
        let read = crate::stream::source::labels::file::LabelsFile::new(path).read_new()?;
        labels.extend(read.into_iter().map(|l| (l.tx_id, l.label)));
    }
    if let Some(topic) = &cfg.labels_topic {
        let read = crate::stream::source::labels::topic::read_all(kafka, topic, LABELS_TOPIC_LIMIT)
            .await
            .map_err(|e| anyhow::anyhow!("retrain.labels_topic: {e:#}"))?;
        tracing::info!(topic, labels = read.len(), "labels read");
        labels.extend(read.into_iter().map(|l| (l.tx_id, l.label)));
    }
    let names = velocity
        .map(crate::velocity::VelocitySpec::names)
        .unwrap_or_default();
    let mut sampler = Sampler {
        frauds: Dataset::with_derived(0, names.clone()),
        legit: Dataset::with_derived(0, names),
        seen_legit: 0,
        cap: cfg.max_rows,
        rng: Rng::new(cfg.seed),
        read: 0,
    };
    for entry in &cfg.history {
        on_file(entry);
        crate::pipeline::remote::for_each_file(
            entry,
            s3,
            ReadOptions { skip_invalid: true },
            velocity,
            &mut |name, mut d, report| {
                if report.skipped > 0 {
                    tracing::warn!(file = %name, skipped = report.skipped, "invalid history rows skipped");
                }
                if !labels.is_empty() {
                    for (id, label) in d.ids.iter().zip(d.labels.iter_mut()) {
                        if label.is_none() {
                            *label = labels.get(id).copied();
                        }
                    }
                }
                sampler.add(&d);
            },
        )
        .await?;
    }
    let read = sampler.read;
    Ok((sampler.finish(cfg.max_rows), read))
}

/// The serving model with what its manifest says about its training rows.
struct Live {
    model: Model,
    manifest: Manifest,
    holdout: Option<HoldoutSet>,
}

impl Live {
    /// Whether the model never trained on this row: outside its training window, or one
    /// of the rows it held out. A model that records neither saw, as far as anyone can
    /// tell, every row.
    fn unseen(&self, data: &Dataset, i: usize) -> bool {
        self.manifest
            .metadata
            .train_window
            .is_some_and(|w| !w.contains(data.columns[TIME][i]))
            || self
                .holdout
                .as_ref()
                .is_some_and(|h| h.contains_row(data, i))
    }
}

/// Split `data` for the gate: the candidate's training rows, the gate rows (neither model
/// trains on them), both ascending, and how many rows the live model never saw.
fn gate_split(
    cfg: &RetrainConfig,
    data: &Dataset,
    labels: &[u8],
    live: Option<&Live>,
) -> (Vec<usize>, Vec<usize>, usize) {
    let times = &data.columns[TIME];
    let Some(live) = live else {
        let (train, test) = split(cfg.holdout, labels, times, cfg.test_fraction, cfg.seed);
        return (train, test, data.len());
    };
    let unseen: Vec<usize> = (0..data.len()).filter(|&i| live.unseen(data, i)).collect();
    let cap = (cfg.test_fraction * data.len() as f64).round() as usize;
    let gate: Vec<usize> = if unseen.len() <= cap {
        unseen.clone()
    } else {
        // The same kind of holdout as without a live model, within the unseen rows.
        let sub_labels: Vec<u8> = unseen.iter().map(|&i| labels[i]).collect();
        let sub_times: Vec<f64> = unseen.iter().map(|&i| times[i]).collect();
        let fraction = cap as f64 / unseen.len() as f64;
        let (_, picked) = split(cfg.holdout, &sub_labels, &sub_times, fraction, cfg.seed);
        let mut g: Vec<usize> = picked.into_iter().map(|k| unseen[k]).collect();
        g.sort_unstable();
        g
    };
    let mut in_gate = vec![false; data.len()];
    for &i in &gate {
        in_gate[i] = true;
    }
    let train = (0..data.len()).filter(|&i| !in_gate[i]).collect();
    (train, gate, unseen.len())
}

/// One retraining cycle against `store`.
pub async fn retrain_once(
    cfg: &RetrainConfig,
    s3: &S3Settings,
    kafka: &crate::kafka::KafkaSettings,
    store: &ModelStore,
    on_file: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Decision> {
    let started = std::time::Instant::now();
    store
        .check_publishable()
        .map_err(|why| anyhow::anyhow!("retrain cannot publish: {why}"))?;
    let live_pointer = store.latest().await?;
    let live = match &live_pointer {
        Some(l) => {
            let (model, manifest) = store.get_checked(&l.version, None).await?;
            let holdout = match store.holdout(&manifest).await {
                Ok(h) => h,
                // Missing or not matching its manifest: grade with the training window
                // alone (fewer rows count as unseen, never more). Unreachable storage is
                // an error, and the next cycle tries again.
                Err(
                    e @ (RegistryError::Corrupt { .. }
                    | RegistryError::Storage(StorageError::NotFound { .. })),
                ) => {
                    tracing::warn!(version = %l.version, error = %e, "the live model's held-out rows cannot be read; only its training window tells unseen rows");
                    None
                }
                Err(e) => return Err(e.into()),
            };
            if manifest.metadata.train_window.is_none() && holdout.is_none() {
                tracing::warn!(version = %l.version, "the live model records neither its training window nor its held-out rows: no row is known to be unseen by it");
            }
            Some(Live {
                model,
                manifest,
                holdout,
            })
        }
        None => None,
    };
    // The candidate keeps the live model's features: with entity features, the history is
    // read with them (stored in lake files, computed for other files).
    let velocity = live.as_ref().and_then(|l| l.model.velocity().cloned());
    let (data, rows_read) = read_history(cfg, s3, kafka, velocity.as_ref(), on_file).await?;
    let labels = data.labels()?;
    let frauds = labels.iter().filter(|&&l| l == 1).count();
    anyhow::ensure!(
        frauds > 0,
        "the history has no frauds: nothing to learn from"
    );
    let (train_rows, gate_rows, unseen_rows) = gate_split(cfg, &data, &labels, live.as_ref());
    let gate_frauds = gate_rows.iter().filter(|&&i| labels[i] == 1).count();
    let mut decision = Decision {
        decision: Outcome::InsufficientData,
        rows_read,
        rows_used: data.len(),
        frauds,
        unseen_rows,
        holdout_rows: gate_rows.len(),
        holdout_frauds: gate_frauds,
        needed_rows: cfg.min_gate_rows,
        needed_frauds: cfg.min_gate_frauds,
        candidate: None,
        candidate_auprc: None,
        candidate_recall_at_p90: None,
        live: live_pointer.as_ref().map(|l| l.version.clone()),
        live_auprc: None,
        difference: None,
        published: false,
        reason: String::new(),
        seconds: 0.0,
    };
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
    opts.params.n_trees = cfg.trees;
    opts.params.seed = cfg.seed;
    opts.split = cfg.holdout;
    opts.test_fraction = cfg.test_fraction;
    if let Some(l) = &live {
        opts.features.clone_from(&l.model.meta().features);
    }
    opts.velocity = velocity;
    let source = cfg.history.join(",");
    let (resamples, confidence, seed) = (cfg.resamples, cfg.confidence, cfg.seed);
    let live_model = live.as_ref().map(|l| l.model.clone());
    let (candidate, holdout, live_metrics, difference) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let holdout = HoldoutSet::of_split(&data, &gate_rows);
            let gate = data.select(&gate_rows);
            let outcome = train_split(&data, &source, &opts, train_rows, gate_rows, &|| {})?;
            let (live_metrics, difference) = match live_model {
                Some(m) => {
                    let scores = m.score_dataset(&gate)?;
                    let metrics = evaluate(&scores, &outcome.test_labels, m.meta().threshold);
                    let diff = ap_difference(
                        &outcome.test_scores,
                        &scores,
                        &outcome.test_labels,
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
        live.is_some().then_some(decision.difference.as_ref()),
    );
    // A candidate that passes is stored (with the rows it held out) and named by
    // `models/CANDIDATE`, so detectors can shadow-score it; a refused one is not stored,
    // so an hourly retrain that keeps refusing does not grow the store.
    if verdict.is_ok() {
        store.put_with_holdout(&candidate, Some(&holdout)).await?;
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
                .map_err(|e| {
                    anyhow::anyhow!("LATEST moved during retraining; not published: {e}")
                })?;
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

/// Record the decision's metrics and log it.
fn finish(mut decision: Decision, started: std::time::Instant) -> Decision {
    decision.seconds = started.elapsed().as_secs_f64();
    let outcome = decision.decision.as_str();
    metrics::counter!(names::RETRAIN_DECISIONS, "outcome" => outcome).increment(1);
    if let Some(a) = decision.candidate_auprc {
        metrics::gauge!(names::RETRAIN_CANDIDATE_AUPRC).set(a);
    }
    if let Some(a) = decision.live_auprc {
        metrics::gauge!(names::RETRAIN_LIVE_AUPRC).set(a);
    }
    tracing::info!(outcome, candidate = ?decision.candidate, candidate_auprc = ?decision.candidate_auprc, live = ?decision.live, live_auprc = ?decision.live_auprc, gate_rows = decision.holdout_rows, gate_frauds = decision.holdout_frauds, reason = %decision.reason, seconds = decision.seconds, "retraining decision");
    decision
}

/// The quality gate: `Ok(why)` to publish, `Err(why)` to keep the live model.
/// `live` is `None` without a live model, and `Some(None)` when the comparison with it is
/// undefined (no fraud among the gate rows).
pub fn gate(
    cfg: &RetrainConfig,
    candidate_auprc: Option<f64>,
    candidate_recall_at_p90: Option<f64>,
    live: Option<Option<&ApDifference>>,
) -> Result<String, String> {
    let Some(c) = candidate_auprc else {
        return Err("the gate rows have no frauds: the candidate cannot be judged".into());
    };
    if c < cfg.min_auprc {
        return Err(format!(
            "candidate AUPRC {c:.4} is below the floor {:.4}",
            cfg.min_auprc
        ));
    }
    let r = candidate_recall_at_p90.unwrap_or(0.0);
    if r < cfg.min_recall_at_precision_90 {
        return Err(format!(
            "candidate recall at precision 0.90 {r:.4} is below the floor {:.4}",
            cfg.min_recall_at_precision_90
        ));
    }
    match live {
        None => Ok(format!(
            "no live model; candidate AUPRC {c:.4} clears the floors"
        )),
        Some(None) => Err("the live model cannot be compared on the gate rows".into()),
        Some(Some(d)) => {
            let summary = format!(
                "candidate AUPRC {:.4} vs live {:.4} on rows neither trained on: difference {:+.4}, {:.0}% interval [{:+.4}, {:+.4}]",
                d.a,
                d.b,
                d.difference,
                d.confidence * 100.0,
                d.low,
                d.high
            );
            if d.low < -cfg.tolerance {
                Err(format!(
                    "{summary}: the candidate may be worse than the live model by more than the tolerance {:.4}",
                    cfg.tolerance
                ))
            } else {
                Ok(summary)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(a: f64, b: f64, low: f64, high: f64) -> ApDifference {
        ApDifference {
            a,
            b,
            difference: a - b,
            low,
            high,
            confidence: 0.95,
            resamples: 1000,
        }
    }

    #[test]
    fn the_gate_compares_with_the_live_model_and_the_floors() {
        let cfg = RetrainConfig {
            tolerance: 0.01,
            min_auprc: 0.5,
            min_recall_at_precision_90: 0.3,
            ..RetrainConfig::default()
        };
        let close = diff(0.80, 0.805, -0.008, 0.01);
        assert!(
            gate(&cfg, Some(0.80), Some(0.6), Some(Some(&close))).is_ok(),
            "within tolerance at the interval's lower bound"
        );
        let unsure = diff(0.81, 0.80, -0.05, 0.07);
        let e = gate(&cfg, Some(0.81), Some(0.6), Some(Some(&unsure))).unwrap_err();
        assert!(
            e.contains("worse"),
            "a better point estimate is not enough: {e}"
        );
        let worse = diff(0.78, 0.80, -0.04, -0.01);
        assert!(gate(&cfg, Some(0.78), Some(0.6), Some(Some(&worse))).is_err());
        assert!(
            gate(&cfg, Some(0.45), Some(0.6), None).is_err(),
            "below the floor"
        );
        assert!(
            gate(&cfg, Some(0.9), Some(0.1), None).is_err(),
            "recall floor"
        );
        assert!(gate(&cfg, None, None, None).is_err(), "cannot judge");
        assert!(
            gate(&cfg, Some(0.9), Some(0.6), Some(None)).is_err(),
            "cannot compare"
        );
        assert!(
            gate(&cfg, Some(0.6), Some(0.4), None).is_ok(),
            "first model"
        );
    }

    #[test]
    fn the_sampler_keeps_every_fraud_and_caps_the_rest() {
        let mut rng = Rng::new(3);
        let mut d = Dataset::default();
        for i in 0..5000 {
            let mut values = [0.0; crate::schema::NUM_FIELDS];
            values[0] = f64::from(i);
            values[1] = rng.unit();
            d.push(crate::schema::Transaction {
                id: format!("r{i}"),
                values,
                label: Some(u8::from(i % 100 == 0)),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        let mut s = Sampler {
            frauds: Dataset::default(),
            legit: Dataset::default(),
            seen_legit: 0,
            cap: 1000,
            rng: Rng::new(1),
            read: 0,
        };
        s.add(&d.select(&(0..2500).collect::<Vec<_>>()));
        s.add(&d.select(&(2500..5000).collect::<Vec<_>>()));
        assert_eq!(s.read, 5000);
        let out = s.finish(1000);
        let labels = out.labels().unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(
            labels.iter().filter(|&&l| l == 1).count(),
            50,
            "every fraud kept"
        );
        // The legitimate sample spans both files.
        let times = &out.columns[TIME];
        assert!(times.iter().any(|&t| t < 2500.0) && times.iter().any(|&t| t >= 2500.0));
    }
}
