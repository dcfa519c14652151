//! The manifest that publishes a model version: `models/<version>/manifest.json` in the
//! model store. A version exists once its manifest does; the manifest's SHA-256 covers
//! the model file (and the holdout record), and a signature (`crate::signing`) covers the
//! manifest's exact bytes.

use serde::{Deserialize, Serialize};

use super::{Canary, ModelMeta};

/// Which rows a version held out from training: `holdout.bin` beside its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldoutRecord {
    /// Distinct held-out row fingerprints.
    pub rows: usize,
    /// SHA-256 of `holdout.bin`, hex.
    pub sha256: String,
}

/// What a manifest records about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version (the model's own).
    pub version: String,
    /// SHA-256 of the model file, hex.
    pub sha256: String,
    /// Size of the model file in bytes.
    pub size_bytes: u64,
    /// Feature names in order.
    pub features: Vec<String>,
    /// When the model was trained.
    pub created_at: String,
    /// The version that was `LATEST` when this one was published, if any.
    pub parent: Option<String>,
    /// The model's full metadata (hyper-parameters, metrics, data fingerprint).
    pub metadata: ModelMeta,
    /// Canary inputs with the exact scores the model gave them when published; a loaded
    /// version must reproduce them ([`super::Model::check`]). Empty in manifests written
    /// before canaries were recorded.
    #[serde(default)]
    pub canaries: Vec<Canary>,
    /// The rows held out from training, when recorded: with the training window
    /// (`metadata.train_window`) they tell the retrain gate which rows the model never
    /// saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<HoldoutRecord>,
    /// The distributions the model was trained on (each feature's training deciles, the
    /// score's on rows it did not train on), for drift monitoring. Absent in manifests
    /// written before it was recorded: monitoring then says "no reference".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::monitor::Reference>,
    /// Why `retrain` trained this version, and what it saw of the live model then.
    /// Absent for versions trained by hand, and in manifests written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainTrigger>,
}

/// What started a retraining cycle, and the evidence it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainTrigger {
    /// `schedule`, `drift`, `quality`, `drift+quality` or `age`; `none` when the cycle
    /// found no reason to train.
    pub trigger: String,
    /// In words.
    pub reason: String,
    /// The evidence, when the live model was judged on recent rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The live model judged on the most recent rows it never trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The live version judged.
    pub live: String,
    /// Rows judged (the most recent after the live model's training window).
    pub rows: usize,
    /// Frauds among them.
    pub frauds: usize,
    /// `Time` of the first and last row judged.
    pub first_time: f64,
    /// See `first_time`.
    pub last_time: f64,
    /// Variables (features, or `score`) whose PSI against the live model's reference is
    /// at or above the configured band, worst first.
    pub drifted: Vec<DriftedVariable>,
    /// The worst variable's PSI, drifted or not.
    pub max_psi: Option<f64>,
    /// The live model's AUPRC on the rows judged (none without frauds among them).
    pub live_auprc: Option<f64>,
    /// Its AUPRC when it was trained (held-out, else out-of-bag).
    pub trained_auprc: Option<f64>,
    /// Whether the drift counts as a reason to retrain.
    pub drift: bool,
    /// Whether the fall in quality counts as a reason to retrain.
    pub quality: bool,
}

/// One drifted variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftedVariable {
    /// Feature name, or `score`.
    pub name: String,
    /// Its PSI over the rows judged.
    pub psi: f64,
}

impl Manifest {
    /// Parse a stored manifest; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
