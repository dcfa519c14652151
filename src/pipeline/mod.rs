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
pub use fraudstream_core::train::{
    RowWeights, TrainOptions, TrainOutcome, train_model, train_split,
};

/// The `[train]` table of hyper-parameters in the TOML file at `path` (config/train.toml,
/// or what `fraudstream tune` writes); a file without one gives the defaults. The file
/// may also hold the `[velocity]` table of the features the model is trained on
/// (config/entity-model.toml), which `--velocity` reads; any other table is refused. The
/// error says what is wrong, and where.
pub fn read_train_params(path: &std::path::Path) -> Result<crate::forest::TrainParams, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        train: crate::forest::TrainParams,
        /// Read by `--velocity` (`velocity::config::spec_from_arg`), not here.
        #[serde(default, rename = "velocity")]
        _velocity: Option<toml::Table>,
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

#[cfg(test)]
mod tests {
    use super::read_train_params;

    fn read(text: &str) -> Result<crate::forest::TrainParams, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.toml");
        std::fs::write(&path, text).unwrap();
        read_train_params(&path)
    }

    #[test]
    fn a_recipe_holds_the_features_beside_the_parameters() {
        let p =
            read("[train]\nmin_samples_leaf = 5\n[velocity.features]\nbucket = \"1h\"\n").unwrap();
        assert_eq!(p.min_samples_leaf, 5);
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/entity-model.toml");
        let p = read_train_params(std::path::Path::new(shipped)).unwrap();
        assert_eq!(p.min_samples_leaf, 5);
        let spec = crate::velocity::config::spec_from_arg(shipped).unwrap();
        assert!(
            spec.names()
                .contains(&"card_id_amount_ratio_30d".to_owned())
        );
    }

    #[test]
    fn any_other_table_is_refused() {
        let e = read("[trian]\nmin_samples_leaf = 5\n").unwrap_err();
        assert!(e.contains("trian"), "{e}");
    }
}
