//! The batch commands' logic, shared by the CLI and the tests.
//!
//! - [`mod@train`]: dataset → split → forest → threshold → metrics → [`crate::model::Model`].
//! - [`retrain`]: periodic retraining with a quality gate.
//! - [`output`]: writing verdicts as CSV, JSON lines or Parquet.
//! - [`rules_backtest`]: a draft rule set replayed on the lake beside the active one.
//! - [`lake_compact`]: one row per transaction id in a lake written twice.
//! - [`sample`]: a bounded, weighted sample of a history of any length.

pub mod lake_compact;
pub mod output;
pub mod remote;
pub mod retrain;
pub mod rules_backtest;
pub mod sample;

pub use fraudstream_core::PipelineError;
pub use fraudstream_core::train;
pub use fraudstream_core::train::{TrainOptions, TrainOutcome, train_model, train_split};

/// The `[train]` table of hyper-parameters in the TOML file at `path` (config/train.toml,
/// or what `fraudstream tune` writes); a file without one gives the defaults. The error
/// says what is wrong, and where.
pub fn read_train_params(path: &std::path::Path) -> Result<crate::forest::TrainParams, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        train: crate::forest::TrainParams,
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let params = toml::from_str::<File>(&text)
        .map_err(|e| format!("{}: invalid configuration: {e}", path.display()))?
        .train;
    params
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(params)
}
