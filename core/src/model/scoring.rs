//! [`Model`]: a validated forest with its metadata, ready to score transactions.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::format::{ModelError, decode, encode, sha256_hex};
use super::meta::ModelMeta;
use crate::forest::Forest;
use crate::schema::{Dataset, FIELD_NAMES, Transaction, field_index};

/// Rows per parallel task in [`Model::verdicts`]: one scoring block, and enough
/// explanation work (about 20 µs a row) to outweigh a task's overhead.
const VERDICT_CHUNK_ROWS: usize = 64;

/// A loaded, validated model.
#[derive(Debug, Clone)]
pub struct Model {
    meta: ModelMeta,
    forest: Forest,
    /// For each model feature, its index in the transaction's numeric fields.
    fields: Vec<usize>,
}

/// One feature's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature name.
    pub feature: String,
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
    pub model_version: String,
    /// The largest contributions, largest magnitude first.
    pub top_features: Vec<Contribution>,
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
        let fields = meta
            .features
            .iter()
            .map(|f| {
                field_index(f).ok_or_else(|| {
                    ModelError::FeatureMismatch(format!(
                        "model feature {f:?} is not a transaction field (fields are {})",
                        FIELD_NAMES.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            meta,
            forest,
            fields,
        })
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

    /// One transaction's model features, appended to `out`.
    pub fn features_into(&self, tx: &Transaction, out: &mut Vec<f32>) {
        out.extend(self.fields.iter().map(|&i| tx.values[i] as f32));
    }

    /// Row-major feature matrix of a dataset.
    #[must_use]
    pub fn matrix(&self, data: &Dataset) -> Vec<f32> {
        data.feature_matrix(&self.fields)
    }

    /// Scores of every row of a dataset, using every core.
    #[must_use]
    pub fn score_dataset(&self, data: &Dataset) -> Vec<f32> {
        self.forest.predict_batch(&self.matrix(data))
    }

    /// Verdict for one row of features (as produced by [`Model::features_into`]).
    #[must_use]
    pub fn verdict_for(&self, tx_id: &str, features: &[f32], score: f32, top_k: usize) -> Verdict {
        let top_features = if top_k == 0 {
            Vec::new()
        } else {
            self.forest
                .top_contributions(features, top_k)
                .into_iter()
                .map(|(f, c)| Contribution {
                    feature: self.meta.features[f].clone(),
                    contribution: c,
                })
                .collect()
        };
        Verdict {
            tx_id: tx_id.to_owned(),
            score,
            fraud: score >= self.meta.threshold as f32,
            threshold: self.meta.threshold,
            model_version: self.meta.version.clone(),
            top_features,
        }
    }

    /// The one scoring function: verdicts for a row-major feature matrix (one row per
    /// id, as made by [`Model::features_into`] or [`Model::matrix`]), each with its
    /// `top_k` contributions, in row order. Work is spread over the cores in blocks of
    /// rows, each scored block-wise and then explained, so it suits a micro-batch and a
    /// whole file alike.
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
        let nf = self.forest.n_features();
        assert_eq!(x.len(), ids.len() * nf, "one row of features per id");
        ids.par_chunks(VERDICT_CHUNK_ROWS)
            .zip(x.par_chunks(VERDICT_CHUNK_ROWS * nf))
            .flat_map_iter(|(ids, xs)| {
                let mut scores = vec![0f32; ids.len()];
                self.forest.predict_into(xs, &mut scores);
                ids.iter()
                    .zip(scores)
                    .zip(xs.chunks_exact(nf))
                    .map(move |((id, s), row)| self.verdict_for(id.as_ref(), row, s, top_k))
            })
            .collect()
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
