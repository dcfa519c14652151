//! `fraudstream model inspect`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::print::{metric_rows, metrics_json, table, with};
use crate::model::Model;

/// `model inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model file.
    model: PathBuf,
    /// Print one JSON object: the headline metrics' keys at top level, plus `metadata`.
    #[arg(long)]
    json: bool,
}

/// Run `model inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.model).map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    let model = Model::from_bytes(&bytes)?;
    let meta = model.meta();
    let forest = model.forest();
    let max_depth = forest.trees().iter().map(crate::forest::Tree::depth).max();
    let headline = meta.headline_metrics();
    if args.json {
        let base = json!({
            "model_version": meta.version,
            "sha256": crate::model::format::sha256_hex(&bytes),
            "size_bytes": bytes.len(),
            "nodes": forest.n_nodes(),
            "max_depth": max_depth,
            "evaluated_on": headline.map(|h| h.0),
            "metadata": meta,
        });
        let out = match headline {
            Some((_, m)) => with(metrics_json(m), base),
            None => base,
        };
        println!("{out}");
        return Ok(());
    }
    let mut imp: Vec<(&String, f64)> = meta
        .features
        .iter()
        .zip(meta.feature_importances.iter().copied())
        .collect();
    imp.sort_by(|a, b| b.1.total_cmp(&a.1));
    table(
        &format!("model {}", args.model.display()),
        &[
            ("version", meta.version.clone()),
            ("created", meta.created_at.clone()),
            ("fraudstream", meta.fraudstream_version.clone()),
            ("size", format!("{} bytes", bytes.len())),
            ("sha256", crate::model::format::sha256_hex(&bytes)),
            ("features", meta.features.join(",")),
            (
                "forest",
                format!(
                    "{} trees, {} nodes, max depth {}",
                    forest.trees().len(),
                    forest.n_nodes(),
                    max_depth.unwrap_or(0)
                ),
            ),
            (
                "params",
                serde_json::to_string(&meta.params).unwrap_or_default(),
            ),
            (
                "threshold",
                format!(
                    "{:.4} ({} on {} scores)",
                    meta.threshold, meta.threshold_strategy, meta.threshold_source
                ),
            ),
            (
                "training data",
                format!(
                    "{} rows, {} frauds, from {}",
                    meta.train_rows, meta.train_frauds, meta.source
                ),
            ),
            ("data fingerprint", meta.data_fingerprint.clone()),
            ("training time", format!("{:.2} s", meta.train_seconds)),
            (
                "top features",
                imp.iter()
                    .take(5)
                    .map(|(f, v)| format!("{f} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ],
    );
    if let Some(m) = &meta.holdout_metrics {
        table("holdout metrics", &metric_rows(m));
    }
    if let Some(m) = &meta.oob_metrics {
        table("out-of-bag metrics (training rows)", &metric_rows(m));
    }
    Ok(())
}
