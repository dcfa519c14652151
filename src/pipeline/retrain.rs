//! Periodic retraining with a quality gate.
//!
//! One cycle: read labelled history (Kaggle-layout CSV, JSON lines, or Parquet such as the
//! lake's files, from local paths, `s3://` or `hdfs://`), keep it within `max_rows` (every
//! fraud is kept; legitimate rows are sampled uniformly), hold out the most recent rows
//! (by `Time`; or a stratified sample), train a candidate on the rest, and score both the
//! candidate and the live model (`LATEST`) on that same holdout. The candidate is
//! published, with a conditional move of `LATEST`, only if its AUPRC is no worse than the
//! live model's minus `tolerance` and it clears the absolute floors.

use serde::{Deserialize, Serialize};

use crate::eval::{SplitKind, evaluate, split};
use crate::metric_names as names;
use crate::model::Model;
use crate::pipeline::{TrainOptions, train_model};
use crate::registry::ModelStore;
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions, TIME};
use crate::storage::S3Settings;

/// `[retrain]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Labelled history: files, or prefixes ending in `/` whose `.csv`, `.jsonl` and
    /// `.parquet` objects are all read (local, `s3://` or `hdfs://`).
    pub history: Vec<String>,
    /// Most rows trained and evaluated on: above it, every fraud is kept and legitimate
    /// rows are sampled uniformly. Bounds memory to about `max_rows` × 250 bytes plus one
    /// history file.
    pub max_rows: usize,
    /// `time`: the most recent rows are the holdout; `stratified`: a random sample.
    pub holdout: SplitKind,
    /// Share of rows held out.
    pub test_fraction: f64,
    /// How much lower than the live model's holdout AUPRC the candidate's may be.
    pub tolerance: f64,
    /// The candidate's holdout AUPRC must be at least this.
    pub min_auprc: f64,
    /// The candidate's holdout recall at precision ≥ 0.90 must be at least this.
    pub min_recall_at_precision_90: f64,
    /// Trees in the candidate.
    pub trees: usize,
    /// Seed for sampling and the forest.
    pub seed: u64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            history: Vec::new(),
            max_rows: 2_000_000,
            holdout: SplitKind::Time,
            test_fraction: 0.2,
            tolerance: 0.01,
            min_auprc: 0.5,
            min_recall_at_precision_90: 0.0,
            trees: 100,
            seed: 42,
        }
    }
}

impl crate::config::Validate for RetrainConfig {
    fn validate(&self) -> Result<(), crate::config::Invalid> {
        use crate::config::Invalid;
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Invalid::new("test_fraction", "must be above 0 and below 1"));
        }
        if self.max_rows < 100 {
            return Err(Invalid::new("max_rows", "must be at least 100"));
        }
        if self.trees == 0 {
            return Err(Invalid::new("trees", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a cycle decided.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Rows read from history.
    pub rows_read: usize,
    /// Rows used (after the cap).
    pub rows_used: usize,
    /// Frauds among them.
    pub frauds: usize,
    /// Holdout rows.
    pub holdout_rows: usize,
    /// The candidate's version.
    pub candidate: String,
    /// Its holdout AUPRC.
    pub candidate_auprc: Option<f64>,
    /// Its holdout recall at precision ≥ 0.90.
    pub candidate_recall_at_p90: Option<f64>,
    /// The live version, if any.
    pub live: Option<String>,
    /// The live model's AUPRC on the same holdout.
    pub live_auprc: Option<f64>,
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
                            for (c, v) in self.legit.columns.iter_mut().zip(tx.values) {
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

/// Read every history entry into a capped dataset.
async fn read_history(
    cfg: &RetrainConfig,
    s3: &S3Settings,
    on_file: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(Dataset, usize)> {
    anyhow::ensure!(!cfg.history.is_empty(), "retrain.history is empty");
    let mut sampler = Sampler {
        frauds: Dataset::default(),
        legit: Dataset::default(),
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
            &mut |name, d, report| {
                if report.skipped > 0 {
                    tracing::warn!(file = %name, skipped = report.skipped, "invalid history rows skipped");
                }
                sampler.add(&d);
            },
        )
        .await?;
    }
    let read = sampler.read;
    Ok((sampler.finish(cfg.max_rows), read))
}

/// One retraining cycle against `store`.
pub async fn retrain_once(
    cfg: &RetrainConfig,
    s3: &S3Settings,
    store: &ModelStore,
    on_file: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Decision> {
    let started = std::time::Instant::now();
    let live_pointer = store.latest().await?;
    let live = match &live_pointer {
        Some(l) => Some(store.get_checked(&l.version, None).await?.0),
        None => None,
    };
    let (data, rows_read) = read_history(cfg, s3, on_file).await?;
    let labels = data.labels()?;
    let frauds = labels.iter().filter(|&&l| l == 1).count();
    let rows_used = data.len();
    anyhow::ensure!(
        frauds > 0,
        "the history has no frauds: nothing to learn from"
    );

    let mut opts = TrainOptions::default();
    opts.params.n_trees = cfg.trees;
    opts.params.seed = cfg.seed;
    opts.split = cfg.holdout;
    opts.test_fraction = cfg.test_fraction;
    if let Some(l) = &live {
        opts.features.clone_from(&l.meta().features);
    }
    let source = cfg.history.join(",");
    let (candidate, live_metrics, holdout_rows) = tokio::task::spawn_blocking({
        let live = live.clone();
        move || -> anyhow::Result<_> {
            let outcome = train_model(&data, &source, &opts, &|| {})?;
            // The same holdout rows the candidate was evaluated on.
            let (_, test) = split(
                opts.split,
                &labels,
                &data.columns[TIME],
                opts.test_fraction,
                opts.params.seed,
            );
            let holdout = data.select(&test);
            let holdout_labels: Vec<u8> = test.iter().map(|&i| labels[i]).collect();
            let live_metrics = live.map(|m: Model| {
                evaluate(
                    &m.score_dataset(&holdout),
                    &holdout_labels,
                    m.meta().threshold,
                )
            });
            Ok((outcome.model, live_metrics, test.len()))
        }
    })
    .await??;

    let cm = candidate.meta().holdout_metrics.clone();
    let candidate_auprc = cm.as_ref().and_then(|m| m.auprc);
    let candidate_recall = cm.as_ref().and_then(|m| m.recall_at_precision_90);
    let live_auprc = live_metrics.as_ref().and_then(|m| m.auprc);
    let verdict = gate(cfg, candidate_auprc, candidate_recall, live_auprc);
    let mut decision = Decision {
        rows_read,
        rows_used,
        frauds,
        holdout_rows,
        candidate: candidate.version().to_owned(),
        candidate_auprc,
        candidate_recall_at_p90: candidate_recall,
        live: live_pointer.as_ref().map(|l| l.version.clone()),
        live_auprc,
        published: false,
        reason: String::new(),
        seconds: 0.0,
    };
    match verdict {
        Ok(why) => {
            store.put(&candidate).await?;
            store
                .set_latest(candidate.version(), live_pointer.as_ref())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("LATEST moved during retraining; not published: {e}")
                })?;
            decision.published = true;
            decision.reason = why;
        }
        Err(why) => decision.reason = why,
    }
    decision.seconds = started.elapsed().as_secs_f64();
    let outcome = if decision.published {
        "published"
    } else {
        "rejected"
    };
    metrics::counter!(names::RETRAIN_DECISIONS, "outcome" => outcome).increment(1);
    if let Some(a) = candidate_auprc {
        metrics::gauge!(names::RETRAIN_CANDIDATE_AUPRC).set(a);
    }
    if let Some(a) = live_auprc {
        metrics::gauge!(names::RETRAIN_LIVE_AUPRC).set(a);
    }
    tracing::info!(outcome, candidate = %decision.candidate, candidate_auprc = ?candidate_auprc, live = ?decision.live, live_auprc = ?live_auprc, reason = %decision.reason, seconds = decision.seconds, "retraining decision");
    Ok(decision)
}

/// The quality gate: `Ok(why)` to publish, `Err(why)` to keep the live model.
pub fn gate(
    cfg: &RetrainConfig,
    candidate_auprc: Option<f64>,
    candidate_recall_at_p90: Option<f64>,
    live_auprc: Option<f64>,
) -> Result<String, String> {
    let Some(c) = candidate_auprc else {
        return Err("the holdout has no frauds: the candidate cannot be judged".into());
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
    match live_auprc {
        Some(l) if c < l - cfg.tolerance => Err(format!(
            "candidate AUPRC {c:.4} is worse than the live model's {l:.4} (tolerance {:.4})",
            cfg.tolerance
        )),
        Some(l) => Ok(format!("candidate AUPRC {c:.4} vs live {l:.4}")),
        None => Ok(format!(
            "no live model; candidate AUPRC {c:.4} clears the floors"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_compares_with_the_live_model_and_the_floors() {
        let cfg = RetrainConfig {
            tolerance: 0.01,
            min_auprc: 0.5,
            min_recall_at_precision_90: 0.3,
            ..RetrainConfig::default()
        };
        assert!(
            gate(&cfg, Some(0.80), Some(0.6), Some(0.805)).is_ok(),
            "within tolerance"
        );
        assert!(
            gate(&cfg, Some(0.78), Some(0.6), Some(0.80)).is_err(),
            "worse"
        );
        assert!(
            gate(&cfg, Some(0.45), Some(0.6), None).is_err(),
            "below the floor"
        );
        assert!(
            gate(&cfg, Some(0.9), Some(0.1), Some(0.5)).is_err(),
            "recall floor"
        );
        assert!(gate(&cfg, None, None, Some(0.5)).is_err(), "cannot judge");
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
