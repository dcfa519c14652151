//! `fraudstream evaluate`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::print::{metric_rows, metrics_json, table, with};
use super::{InputArgs, ReportArgs, read_input_for};
use crate::eval::evaluate;
use crate::model::Model;
use crate::schema::FIELD_NAMES;

/// `evaluate` arguments.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model file.
    #[arg(long, short)]
    model: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Override the model's threshold.
    #[arg(long)]
    threshold: Option<f64>,
    #[command(flatten)]
    report: ReportArgs,
}

/// Run `evaluate`.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    model.check(None, &[])?;
    if model.velocity().is_none() {
        model.check_input(&FIELD_NAMES)?;
    }
    let (data, skipped) = read_input_for(&args.input, &model)?;
    let labels = data.labels()?;
    let scores = model.score_dataset(&data)?;
    let threshold = args.threshold.unwrap_or(model.meta().threshold);
    let m = evaluate(&scores, &labels, threshold);
    args.report
        .write(&model, &args.input.input, &scores, &labels, &m)?;
    if args.report.json {
        let out = with(
            metrics_json(&m),
            json!({
                "model_version": model.version(),
                "input": args.input.input,
                "skipped_rows": skipped,
            }),
        );
        println!("{out}");
    } else {
        table(
            &format!("model {} on {}", model.version(), args.input.input),
            &metric_rows(&m),
        );
    }
    Ok(())
}
