//! [`Model`]: a validated forest with its metadata, ready to score transactions.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::format::{ModelError, decode, encode, sha256_hex};
use super::meta::ModelMeta;
use crate::forest::Forest;
use crate::forest::tree::top_k_into;
use crate::rules::Outcome;
use crate::schema::{Dataset, FIELD_NAMES, NUM_FIELDS, Transaction, field_index};

/// Rows per parallel task in [`Model::verdicts`]: one scoring block (a 512-row batch
/// is four tasks), enough work (about 2 µs a row) to outweigh a task's overhead.
const VERDICT_CHUNK_ROWS: usize = 128;

/// Below this many rows a block walks its trees, not its rows, in lock-step: the row
/// lanes would stay mostly empty.
const FEW_ROWS: usize = 4;

/// Which verdicts carry their explanation (the top contributions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Explain {
    /// Every verdict: contributions come from the same walk that scores (about a fifth
    /// more work than scoring alone).
    #[default]
    All,
    /// Fraud verdicts only: every row scored, then the fraud ones explained together in
    /// a second fused walk (about the cost of scoring alone when frauds are rare).
    Alerts,
    /// None.
    None,
}

/// A loaded, validated model.
#[derive(Debug, Clone)]
pub struct Model {
    meta: ModelMeta,
    forest: Forest,
    /// For each model feature, its index in the transaction's numeric fields.
    fields: Vec<usize>,
    /// Feature names and version, shared by every verdict instead of copied into each.
    names: Vec<Arc<str>>,
    version: Arc<str>,
    /// The distributions it was trained on, for drift monitoring (kept in the manifest,
    /// not in the model file).
    reference: Option<Arc<crate::monitor::Reference>>,
}

/// One feature's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature name.
    pub feature: Arc<str>,
    /// Signed contribution to the fraud probability.
    pub contribution: f32,
}

/// The decision for one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Transaction id.
    pub tx_id: String,
    /// Fraud probability in [0, 1].
    pub score: f32,
    /// `score >= threshold`.
    pub fraud: bool,
    /// The threshold applied.
    pub threshold: f64,
    /// The model version that scored it.
    pub model_version: Arc<str>,
    /// The largest contributions, largest magnitude first.
    pub top_features: Vec<Contribution>,
    /// `approve`, `review` or `block`: the active rules' decision, or the model's own
    /// rule (`block` at or over the threshold, else `approve`) until rules decide.
    #[serde(default = "approve")]
    pub outcome: Outcome,
    /// What decided: a rule's name, [`BY_MODEL`] (no rule matched, the score is at or
    /// over the threshold) or [`BY_MODEL_ONLY`] (no rule matched, under the threshold).
    #[serde(default = "model_only")]
    pub decided_by: Arc<str>,
    /// The rules that matched, by name (under the rule set's mode).
    #[serde(default)]
    pub rules: Vec<Arc<str>>,
    /// The rule set that decided, when one is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<Arc<str>>,
}

/// `decided_by` when no rule matched and the score is at or over the threshold.
pub const BY_MODEL: &str = "model";
/// `decided_by` when no rule matched and the score is under the threshold.
pub const BY_MODEL_ONLY: &str = "model_only";

fn approve() -> Outcome {
    Outcome::Approve
}

/// The shared `decided_by` of the model's rule: cloned, never allocated per verdict.
fn shared(by: &'static str) -> Arc<str> {
    static MODEL: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(BY_MODEL));
    static MODEL_ONLY: std::sync::LazyLock<Arc<str>> =
        std::sync::LazyLock::new(|| Arc::from(BY_MODEL_ONLY));
    if by == BY_MODEL {
        MODEL.clone()
    } else {
        MODEL_ONLY.clone()
    }
}

fn model_only() -> Arc<str> {
    shared(BY_MODEL_ONLY)
}

impl Verdict {
    /// A verdict decided by the model's rule alone (`block` at or over `threshold`).
    #[must_use]
    pub fn by_model(
        tx_id: &str,
        score: f32,
        threshold: f64,
        model_version: &str,
        top_features: Vec<Contribution>,
    ) -> Self {
        let fraud = score >= threshold as f32;
        let mut v = Self {
            tx_id: tx_id.to_owned(),
            score,
            fraud,
            threshold,
            model_version: Arc::from(model_version),
            top_features,
            outcome: Outcome::Approve,
            decided_by: model_only(),
            rules: Vec::new(),
            rule_set: None,
        };
        v.decide_by_model(Outcome::Block);
        v
    }

    /// Whether it raises an alert: its outcome is `review` or `block`.
    #[must_use]
    pub fn alerts(&self) -> bool {
        self.outcome != Outcome::Approve
    }

    /// Decide by the model's own rule: `outcome` at or over the threshold, else approve.
    pub fn decide_by_model(&mut self, outcome: Outcome) {
        let (outcome, by) = if self.fraud {
            (outcome, BY_MODEL)
        } else {
            (Outcome::Approve, BY_MODEL_ONLY)
        };
        self.outcome = outcome;
        self.decided_by = shared(by);
        self.rules.clear();
        self.rule_set = None;
    }
}

impl Model {
    /// Pair a forest with its metadata, checking that every feature is a transaction field.
    pub fn new(meta: ModelMeta, forest: Forest) -> Result<Self, ModelError> {
        if meta.features.len() != forest.n_features() {
            return Err(ModelError::FeatureMismatch(format!(
                "metadata lists {} features, the forest uses {}",
                meta.features.len(),
                forest.n_features()
            )));
        }
        let derived = meta
            .velocity
            .as_ref()
            .map(crate::velocity::VelocitySpec::names)
            .unwrap_or_default();
        let fields = meta
            .features
            .iter()
            .map(|f| {
                field_index(f)
                    .or_else(|| derived.iter().position(|d| d == f).map(|j| NUM_FIELDS + j))
                    .ok_or_else(|| {
                        ModelError::FeatureMismatch(format!(
                            "model feature {f:?} is not a transaction field (fields are {}) \
                             nor an entity feature of its spec",
                            FIELD_NAMES.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let names = meta
            .features
            .iter()
            .map(|f| Arc::from(f.as_str()))
            .collect();
        let version = Arc::from(meta.version.as_str());
        Ok(Self {
            meta,
            forest,
            fields,
            names,
            version,
            reference: None,
        })
    }

    /// The same model with its training reference ([`crate::monitor::Reference`]),
    /// checked against its features.
    pub fn with_reference(
        mut self,
        reference: crate::monitor::Reference,
    ) -> Result<Self, ModelError> {
        reference
            .check(&self.meta.features)
            .map_err(ModelError::FeatureMismatch)?;
        self.reference = Some(Arc::new(reference));
        Ok(self)
    }

    /// The distributions it was trained on, when recorded.
    #[must_use]
    pub fn reference(&self) -> Option<&Arc<crate::monitor::Reference>> {
        self.reference.as_ref()
    }

    /// Serialise to the model file format.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.meta, &self.forest)
    }

    /// Parse and validate a model file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let (meta, forest) = decode(bytes)?;
        Self::new(meta, forest)
    }

    /// Load a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Write the model file atomically (a temporary file renamed into place), returning
    /// the file's SHA-256.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<String, ModelError> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = self.to_bytes();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, &bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(sha256_hex(&bytes))
    }

    /// The metadata.
    #[must_use]
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The forest.
    #[must_use]
    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// The version string.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.meta.version
    }

    /// Refuse an input that lacks any of the model's features.
    pub fn check_input(&self, available: &[&str]) -> Result<(), ModelError> {
        let missing: Vec<&str> = self
            .meta
            .features
            .iter()
            .map(String::as_str)
            .filter(|f| !available.contains(f))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ModelError::FeatureMismatch(format!(
                "the input lacks {}",
                missing.join(", ")
            )))
        }
    }

    /// Refuse a model whose feature list differs from `expected` (name and order).
    pub fn expect_features(&self, expected: &[String]) -> Result<(), ModelError> {
        if self.meta.features == expected {
            Ok(())
        } else {
            Err(ModelError::FeatureMismatch(format!(
                "model features [{}] differ from the expected [{}]",
                self.meta.features.join(", "),
                expected.join(", ")
            )))
        }
    }

    /// One transaction's model features, appended to `out` (an entity feature the
    /// transaction lacks reads 0).
    pub fn features_into(&self, tx: &Transaction, out: &mut Vec<f32>) {
        out.extend(self.fields.iter().map(|&i| match tx.values.get(i) {
            Some(&v) => v as f32,
            None => tx.derived.get(i - NUM_FIELDS).copied().unwrap_or(0.0),
        }));
    }

    /// The entity-feature spec this model needs, if it uses entity features.
    #[must_use]
    pub fn velocity(&self) -> Option<&crate::velocity::VelocitySpec> {
        self.meta.velocity.as_ref()
    }

    /// Row-major feature matrix of a dataset; an error when the dataset lacks a feature
    /// (entity features computed with another spec, or none).
    pub fn matrix(&self, data: &Dataset) -> Result<Vec<f32>, ModelError> {
        Ok(data.feature_matrix(&self.columns_in(data)?))
    }

    /// `data`'s column of each model feature, in the model's order.
    fn columns_in(&self, data: &Dataset) -> Result<Vec<usize>, ModelError> {
        let columns = self
            .meta
            .features
            .iter()
            .map(|f| {
                data.column_index(f).ok_or_else(|| {
                    ModelError::FeatureMismatch(format!(
                        "the data lacks the model feature {f:?} (compute its entity features \
                         with the model's spec)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self
            .meta
            .velocity
            .as_ref()
            .is_some_and(|v| v.names() != data.derived)
        {
            return Err(ModelError::FeatureMismatch(
                "the data's entity features were computed with another spec than the model's"
                    .into(),
            ));
        }
        Ok(columns)
    }

    /// Scores of every row of a dataset, using every core.
    pub fn score_dataset(&self, data: &Dataset) -> Result<Vec<f32>, ModelError> {
        Ok(self.forest.predict_batch(&self.matrix(data)?))
    }

    /// [`Model::score_dataset`] of the rows `rows` of `data`, in that order, without a
    /// copy of those rows.
    pub fn score_rows(&self, data: &Dataset, rows: &[usize]) -> Result<Vec<f32>, ModelError> {
        let columns = self.columns_in(data)?;
        Ok(self
            .forest
            .predict_batch(&data.feature_matrix_of(&columns, rows)))
    }

    /// The shared version string, as verdicts carry it.
    #[must_use]
    pub fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }

    fn verdict_with(&self, tx_id: &str, score: f32, top: &[(usize, f32)]) -> Verdict {
        let fraud = score >= self.meta.threshold as f32;
        Verdict {
            tx_id: tx_id.to_owned(),
            score,
            fraud,
            threshold: self.meta.threshold,
            model_version: self.version.clone(),
            top_features: top
                .iter()
                .map(|&(f, c)| Contribution {
                    feature: self.names[f].clone(),
                    contribution: c,
                })
                .collect(),
            outcome: if fraud {
                Outcome::Block
            } else {
                Outcome::Approve
            },
            decided_by: shared(if fraud { BY_MODEL } else { BY_MODEL_ONLY }),
            rules: Vec::new(),
            rule_set: None,
        }
    }

    /// Verdict for one row of features (as produced by [`Model::features_into`]).
    #[must_use]
    pub fn verdict_for(&self, tx_id: &str, features: &[f32], score: f32, top_k: usize) -> Verdict {
        let top = if top_k == 0 {
            Vec::new()
        } else {
            self.forest.top_contributions(features, top_k)
        };
        self.verdict_with(tx_id, score, &top)
    }

    /// The one scoring function: verdicts for a row-major feature matrix (one row per
    /// id, as made by [`Model::features_into`] or [`Model::matrix`]), each with its
    /// `top_k` contributions, in row order ([`Model::verdicts_with`] with
    /// [`Explain::All`]).
    ///
    /// # Panics
    /// If `x.len() != ids.len() * n_features`.
    #[must_use]
    pub fn verdicts<S: AsRef<str> + Sync>(
        &self,
        ids: &[S],
        x: &[f32],
        top_k: usize,
    ) -> Vec<Verdict> {
        self.verdicts_with(ids, x, top_k, Explain::All)
    }

    /// Verdicts with the chosen explanations. Work is spread over the cores in blocks of
    /// rows (a batch of one block stays on the calling thread); each block is scored and
    /// explained in one walk of the trees ([`Explain::All`]).
    ///
    /// # Panics
    /// If `x.len() != ids.len() * n_features`.
    #[must_use]
    pub fn verdicts_with<S: AsRef<str> + Sync>(
        &self,
        ids: &[S],
        x: &[f32],
        top_k: usize,
        explain: Explain,
    ) -> Vec<Verdict> {
        let nf = self.forest.n_features();
        assert_eq!(x.len(), ids.len() * nf, "one row of features per id");
        if ids.len() <= VERDICT_CHUNK_ROWS {
            return self.verdict_block(ids, x, top_k, explain);
        }
        ids.par_chunks(VERDICT_CHUNK_ROWS)
            .zip(x.par_chunks(VERDICT_CHUNK_ROWS * nf))
            .flat_map_iter(|(ids, xs)| self.verdict_block(ids, xs, top_k, explain))
            .collect()
    }

    /// One block of rows on this thread.
    fn verdict_block<S: AsRef<str>>(
        &self,
        ids: &[S],
        xs: &[f32],
        top_k: usize,
        explain: Explain,
    ) -> Vec<Verdict> {
        let nf = self.forest.n_features();
        let mut scores = vec![0f32; ids.len()];
        let mut top = Vec::with_capacity(top_k);
        let mut out = Vec::with_capacity(ids.len());
        let explain = if top_k == 0 { Explain::None } else { explain };
        match explain {
            Explain::All => {
                let mut contrib = vec![0f32; xs.len()];
                if ids.len() < FEW_ROWS {
                    for ((s, row), c) in scores
                        .iter_mut()
                        .zip(xs.chunks_exact(nf))
                        .zip(contrib.chunks_exact_mut(nf))
                    {
                        *s = self.forest.predict_explain_one(row, c);
                    }
                } else {
                    self.forest
                        .predict_explain_into(xs, &mut scores, &mut contrib);
                }
                for ((id, &s), c) in ids.iter().zip(&scores).zip(contrib.chunks_exact(nf)) {
                    top_k_into(c, top_k, &mut top);
                    out.push(self.verdict_with(id.as_ref(), s, &top));
                }
            }
            Explain::Alerts => {
                // Every row scored, then the alerting rows explained together.
                let (mut explained, mut contrib) = (Vec::new(), Vec::new());
                let threshold = self.meta.threshold as f32;
                self.forest.predict_explain_above(
                    xs,
                    &mut scores,
                    threshold,
                    &mut explained,
                    &mut contrib,
                );
                let mut next = explained.iter().zip(contrib.chunks_exact(nf)).peekable();
                for (r, (id, &s)) in ids.iter().zip(&scores).enumerate() {
                    match next.next_if(|(e, _)| **e == r) {
                        Some((_, c)) => top_k_into(c, top_k, &mut top),
                        None => top.clear(),
                    }
                    out.push(self.verdict_with(id.as_ref(), s, &top));
                }
            }
            Explain::None => {
                self.forest.predict_into(xs, &mut scores);
                for (id, &s) in ids.iter().zip(&scores) {
                    out.push(self.verdict_with(id.as_ref(), s, &[]));
                }
            }
        }
        out
    }

    /// Score one transaction into a verdict with its `top_k` contributions.
    #[must_use]
    pub fn verdict(&self, tx: &Transaction, top_k: usize) -> Verdict {
        let mut x = Vec::with_capacity(self.fields.len());
        self.features_into(tx, &mut x);
        let score = self.forest.predict_one(&x);
        self.verdict_for(&tx.id, &x, score, top_k)
    }
}
