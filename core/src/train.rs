//! Training a model from a dataset: split, grow, pick a threshold, measure.

use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::PipelineError;
use crate::eval::{
    ClassWeights, Metrics, SplitKind, ThresholdStrategy, UNWEIGHTED, Weights, evaluate_weighted,
    split,
};
use crate::forest::{ClassWeight, TrainParams, train_owned};
use crate::model::meta::{SplitInfo, TimeWindow};
use crate::model::{Model, ModelMeta};
use crate::schema::{DEFAULT_FEATURES, Dataset, NUM_FIELDS, TIME};
use crate::velocity::VelocitySpec;

/// What to train and how to judge it.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Forest hyper-parameters (its seed also seeds the split).
    pub params: TrainParams,
    /// Feature names (transaction fields).
    pub features: Vec<String>,
    /// How to hold out test rows.
    pub split: SplitKind,
    /// Fraction held out.
    pub test_fraction: f64,
    /// How to choose the decision threshold.
    pub threshold: ThresholdStrategy,
    /// The entity-feature spec the dataset's derived columns were computed with
    /// (recorded in the model when it uses any of them).
    pub velocity: Option<VelocitySpec>,
    /// When the data is a sample of a larger history (`retrain.max_rows`): how many rows
    /// of the history each row of a class stands for, `[legitimate, fraud]`. The forest
    /// then trains with the fraud class weighted by `fraud / legitimate` (on top of
    /// `params.class_weight`, unless that is `balanced`), which moves the values of
    /// impure leaves toward the history's fraud rate (fully grown trees, whose leaves are
    /// mostly pure, move little: their scores stay the sample's vote shares); and the
    /// threshold is chosen, and the metrics measured, with the rows weighted, so that a
    /// precision target holds on the history rather than on the sample.
    pub sampling: Option<ClassWeights>,
    /// When the sample's rates differ within a class (stratified by time,
    /// `retrain.sample_bucket`): how many history rows each row of the dataset stands
    /// for, one per row. The threshold and the metrics then weigh each row by its own
    /// weight, so that they are the history's; the forest still trains with `sampling`'s
    /// class weights, so that what it learns from is the sample (recent spans not crowded
    /// out), and only the class balance is corrected.
    pub row_weights: Option<RowWeights>,
}

/// One weight per row of a dataset, shared without copying; printed by its length.
#[derive(Clone, PartialEq)]
pub struct RowWeights(pub std::sync::Arc<[f64]>);

impl std::fmt::Debug for RowWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowWeights({} rows)", self.0.len())
    }
}

impl RowWeights {
    /// The weights of the rows `idx`, in that order.
    #[must_use]
    pub fn of(&self, idx: &[usize]) -> Vec<f64> {
        idx.iter().map(|&i| self.0[i]).collect()
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            params: TrainParams::default(),
            features: DEFAULT_FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            split: SplitKind::Stratified,
            test_fraction: 0.2,
            threshold: ThresholdStrategy::MaxF1,
            velocity: None,
            sampling: None,
            row_weights: None,
        }
    }
}

/// A trained model and what it was measured on.
pub struct TrainOutcome {
    /// The model, metadata filled in.
    pub model: Model,
    /// Held-out scores and labels (empty with `--split none`).
    pub test_scores: Vec<f32>,
    /// Labels of the held-out rows.
    pub test_labels: Vec<u8>,
    /// Indices (into the training data) of the held-out rows, ascending.
    pub test_rows: Vec<usize>,
}

impl TrainOutcome {
    /// The metrics to report, and what they were measured on.
    #[must_use]
    pub fn headline(&self) -> Option<(&'static str, &Metrics)> {
        self.model.meta().headline_metrics()
    }
}

/// Train on `data` (which must be fully labelled), holding out rows by `opts.split`.
pub fn train_model(
    data: &Dataset,
    source: &str,
    opts: &TrainOptions,
    on_tree: &(dyn Fn() + Sync),
) -> Result<TrainOutcome, PipelineError> {
    if !(0.0..1.0).contains(&opts.test_fraction)
        || (opts.split != SplitKind::None && opts.test_fraction == 0.0)
    {
        return Err(PipelineError::Option {
            name: "test-fraction",
            message: format!("{} must be in (0, 1)", opts.test_fraction),
        });
    }
    let labels = data.labels()?;
    let (train_idx, test_idx) = split(
        opts.split,
        &labels,
        &data.columns[TIME],
        opts.test_fraction,
        opts.params.seed,
    );
    train_split(data, source, opts, train_idx, test_idx, on_tree)
}

/// `params` with the fraud class weighted for a sample whose rows stand for `weights`
/// history rows by class (see [`TrainOptions::sampling`]).
fn corrected_params(params: &TrainParams, weights: ClassWeights) -> TrainParams {
    let factor = weights[1] / weights[0];
    if weights == UNWEIGHTED || !factor.is_finite() || factor <= 0.0 {
        return params.clone();
    }
    let class_weight = match params.class_weight {
        ClassWeight::None => ClassWeight::Fraud(factor),
        ClassWeight::Fraud(w) => ClassWeight::Fraud(w * factor),
        ClassWeight::Balanced => ClassWeight::Balanced,
    };
    TrainParams {
        class_weight,
        ..params.clone()
    }
}

/// Train on the rows `train_idx` of `data` and measure on the rows `test_idx` (both
/// ascending); `opts.split` and `opts.test_fraction` are only recorded.
pub fn train_split(
    data: &Dataset,
    source: &str,
    opts: &TrainOptions,
    train_idx: Vec<usize>,
    test_idx: Vec<usize>,
    on_tree: &(dyn Fn() + Sync),
) -> Result<TrainOutcome, PipelineError> {
    let fields: Vec<usize> = opts
        .features
        .iter()
        .map(|f| {
            data.column_index(f).ok_or_else(|| PipelineError::Option {
                name: "features",
                message: if data.derived.is_empty() {
                    format!("{f:?} is not a transaction field")
                } else {
                    format!(
                        "{f:?} is neither a transaction field nor an entity feature ({})",
                        data.derived.join(", ")
                    )
                },
            })
        })
        .collect::<Result<_, _>>()?;
    let velocity = if fields.iter().any(|&i| i >= NUM_FIELDS) {
        let spec = opts.velocity.clone().ok_or_else(|| PipelineError::Option {
            name: "features",
            message: "entity features need the spec they were computed with".into(),
        })?;
        if spec.names() != data.derived {
            return Err(PipelineError::Option {
                name: "features",
                message: "the dataset's entity features were not computed with this spec".into(),
            });
        }
        Some(spec)
    } else {
        None
    };
    if fields.is_empty() {
        return Err(PipelineError::Option {
            name: "features",
            message: "at least one feature is needed".into(),
        });
    }
    if let Some(r) = &opts.row_weights
        && r.0.len() != data.len()
    {
        return Err(PipelineError::Option {
            name: "row_weights",
            message: format!("{} weights for {} rows", r.0.len(), data.len()),
        });
    }
    let labels = data.labels()?;
    let train_labels: Vec<u8> = train_idx.iter().map(|&i| labels[i]).collect();
    // Straight from the dataset: copying the rows first would double the peak memory.
    let x = data.feature_matrix_of(&fields, &train_idx);
    // What needs the matrix is taken from it now, and training frees it once binned.
    let fingerprint = fingerprint(&x, &train_labels);
    let features_reference = crate::monitor::Reference::fit_features(&opts.features, &x);

    let weights = opts.sampling.unwrap_or(UNWEIGHTED);
    let params = corrected_params(&opts.params, weights);
    let started = Instant::now();
    let trained = train_owned(x, &train_labels, fields.len(), &params, on_tree)?;
    let train_seconds = started.elapsed().as_secs_f64();

    let test_labels: Vec<u8> = test_idx.iter().map(|&i| labels[i]).collect();
    let test_scores = trained
        .forest
        .predict_batch(&data.feature_matrix_of(&fields, &test_idx));

    let amount = &data.columns[crate::schema::AMOUNT];
    let ((oob_scores, oob_labels), oob_rows): ((Vec<f32>, Vec<u8>), Vec<usize>) = trained
        .oob_scores
        .iter()
        .zip(&train_labels)
        .zip(&train_idx)
        .filter_map(|((s, &l), &i)| s.map(|s| ((s, l), i)))
        .unzip();
    let oob_amounts: Vec<f64> = oob_rows.iter().map(|&i| amount[i]).collect();
    let test_amounts: Vec<f64> = test_idx.iter().map(|&i| amount[i]).collect();
    // Per-row weights, when the sample has them, replace the class weights in the
    // threshold and the metrics.
    let (oob_w, test_w) = match &opts.row_weights {
        Some(r) => (Some(r.of(&oob_rows)), Some(r.of(&test_idx))),
        None => (None, None),
    };
    let oob_weights = Weights::rows_or(oob_w.as_deref(), Some(weights));
    let test_weights = Weights::rows_or(test_w.as_deref(), Some(weights));
    let oob_usable = oob_labels.contains(&1) && oob_labels.contains(&0);
    let (threshold, threshold_source) = match opts.threshold {
        ThresholdStrategy::Fixed(t) => (t, "fixed"),
        s if oob_usable => (
            s.choose_weighted(&oob_scores, &oob_labels, &oob_amounts, oob_weights),
            "oob",
        ),
        s if test_labels.contains(&1) => (
            s.choose_weighted(&test_scores, &test_labels, &test_amounts, test_weights),
            "holdout",
        ),
        _ => (0.5, "none"),
    };
    if threshold_source == "none" {
        tracing::warn!("no out-of-bag or held-out frauds to choose a threshold on; using 0.5");
    }
    let oob_metrics =
        oob_usable.then(|| evaluate_weighted(&oob_scores, &oob_labels, threshold, oob_weights));
    let holdout_metrics = (!test_labels.is_empty())
        .then(|| evaluate_weighted(&test_scores, &test_labels, threshold, test_weights));

    let reference = if test_scores.is_empty() {
        features_reference.with_scores(&oob_scores, "oob")
    } else {
        features_reference.with_scores(&test_scores, "holdout")
    };
    let created = SystemTime::now();
    let created_at = humantime::format_rfc3339_seconds(created).to_string();
    let params_json = serde_json::to_string(&opts.params).unwrap_or_default();
    let digest = Sha256::digest(format!("{fingerprint}{params_json}{created_at}").as_bytes());
    let version = format!(
        "{}-{:02x}{:02x}{:02x}{:02x}",
        created_at.replace(['-', ':'], ""),
        digest[0],
        digest[1],
        digest[2],
        digest[3]
    );
    let meta = ModelMeta {
        version,
        fraudstream_version: env!("CARGO_PKG_VERSION").into(),
        created_at,
        features: opts.features.clone(),
        params: opts.params.clone(),
        threshold,
        threshold_strategy: opts.threshold,
        threshold_source: threshold_source.into(),
        oob_metrics,
        holdout_metrics,
        split: SplitInfo {
            kind: opts.split,
            test_fraction: opts.test_fraction,
            seed: opts.params.seed,
        },
        data_fingerprint: fingerprint,
        velocity,
        train_window: TimeWindow::of(train_idx.iter().map(|&i| data.columns[TIME][i])),
        train_rows: train_labels.len(),
        train_frauds: train_labels.iter().filter(|&&l| l == 1).count(),
        source: source.into(),
        feature_importances: trained.importances,
        train_seconds,
    };
    Ok(TrainOutcome {
        model: Model::new(meta, trained.forest)?.with_reference(reference)?,
        test_scores,
        test_labels,
        test_rows: test_idx,
    })
}

/// SHA-256 of the training matrix and labels, as hex.
fn fingerprint(x: &[f32], y: &[u8]) -> String {
    let mut h = Sha256::new();
    for v in x {
        h.update(v.to_le_bytes());
    }
    h.update(y);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
