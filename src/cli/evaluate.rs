//! `fraudstream evaluate`: a model file on a labelled file it never saw, or, with
//! `--folds time:K`, expanding-window time-series cross-validation of the training
//! settings.

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
    /// The model file (not with --folds, which trains a model per fold).
    #[arg(
        long,
        short,
        required_unless_present = "folds",
        conflicts_with = "folds"
    )]
    model: Option<PathBuf>,
    /// Time-series cross-validation instead of a model file: `time:K` orders the rows by
    /// `Time`, cuts them into K+1 consecutive parts, and for each i in 1..=K trains on
    /// the parts before part i and tests on part i; prints each fold and the mean.
    #[arg(long, value_name = "time:K", value_parser = parse_folds)]
    folds: Option<usize>,
    /// With --folds: a TOML file with a `[train]` table of hyper-parameters (as `train
    /// --config`).
    #[arg(long, requires = "folds")]
    train_config: Option<PathBuf>,
    /// With --folds: trees per model (over the file's).
    #[arg(long, requires = "folds")]
    trees: Option<usize>,
    #[command(flatten)]
    input: InputArgs,
    /// Override the model's threshold.
    #[arg(long)]
    threshold: Option<f64>,
    #[command(flatten)]
    report: ReportArgs,
}

pub(super) fn parse_folds(s: &str) -> Result<usize, String> {
    match s.split_once(':') {
        Some(("time", k)) => k
            .parse::<usize>()
            .ok()
            .filter(|&k| k >= 2)
            .ok_or_else(|| format!("{s:?}: K must be a whole number of at least 2")),
        _ => Err(format!("{s:?}: use time:K (for example time:5)")),
    }
}

/// One fold's figures (threshold-free: a threshold chosen on the fold's own test rows
/// would flatter it).
#[derive(Debug, serde::Serialize)]
struct Fold {
    fold: usize,
    train_rows: usize,
    test_rows: usize,
    test_frauds: usize,
    auprc: Option<f64>,
    roc_auc: Option<f64>,
    recall_at_precision_90: Option<f64>,
}

fn mean_std(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

/// Training options for folds: `params`, with the entity features of `velocity` (a
/// `--velocity` argument: Amount and every entity feature, as `train`) when given.
pub(super) fn fold_options(
    params: crate::forest::TrainParams,
    velocity: Option<&str>,
) -> anyhow::Result<crate::pipeline::TrainOptions> {
    let mut opts = crate::pipeline::TrainOptions {
        params,
        split: crate::eval::SplitKind::Time,
        ..crate::pipeline::TrainOptions::default()
    };
    opts.velocity = velocity
        .map(crate::velocity::config::spec_from_arg)
        .transpose()?;
    if let Some(spec) = &opts.velocity {
        opts.features = std::iter::once("Amount".to_owned())
            .chain(spec.names())
            .collect();
    }
    Ok(opts)
}

/// Train on `train` and measure on `test` (fold `fold`, for the progress bar).
pub(super) fn fold_metrics(
    data: &crate::schema::Dataset,
    source: &str,
    opts: &crate::pipeline::TrainOptions,
    train: Vec<usize>,
    test: Vec<usize>,
    fold: usize,
) -> anyhow::Result<crate::eval::Metrics> {
    let bar = super::print::bar(opts.params.n_trees as u64, &format!("fold {fold}"));
    let o = crate::pipeline::train_split(data, source, opts, train, test, &|| bar.inc(1))?;
    bar.finish_and_clear();
    Ok(evaluate(
        &o.test_scores,
        &o.test_labels,
        o.model.meta().threshold,
    ))
}

/// `evaluate --folds time:K`.
fn run_folds(args: &EvaluateArgs, k: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.report.report.is_none() && args.threshold.is_none(),
        "--folds reports threshold-free figures per fold: --report and --threshold need --model"
    );
    let mut params =
        super::train::params_file(args.train_config.as_deref(), args.input.velocity.as_deref())?;
    if let Some(t) = args.trees {
        params.n_trees = t;
    }
    params.validate()?;
    let opts = fold_options(params, args.input.velocity.as_deref())?;
    let (data, _) = super::read_input(&args.input)?;
    let labels = data.labels()?;
    let folds = crate::eval::time_folds(&data.columns[crate::schema::TIME], k);
    anyhow::ensure!(
        !folds.is_empty(),
        "{} rows cannot make {k} folds",
        data.len()
    );
    let mut out = Vec::with_capacity(k);
    for (i, (train, test)) in folds.into_iter().enumerate() {
        let (train_rows, test_rows) = (train.len(), test.len());
        let test_frauds = test.iter().filter(|&&r| labels[r] == 1).count();
        let m = fold_metrics(&data, &args.input.input, &opts, train, test, i + 1)?;
        out.push(Fold {
            fold: i + 1,
            train_rows,
            test_rows,
            test_frauds,
            auprc: m.auprc,
            roc_auc: m.roc_auc,
            recall_at_precision_90: m.recall_at_precision_90,
        });
    }
    let auprc = mean_std(out.iter().map(|f| f.auprc));
    let roc = mean_std(out.iter().map(|f| f.roc_auc));
    let recall = mean_std(out.iter().map(|f| f.recall_at_precision_90));
    if args.report.json {
        let ms = |v: Option<(f64, f64)>| v.map(|(m, s)| json!({"mean": m, "std": s}));
        println!(
            "{}",
            json!({
                "input": args.input.input,
                "folds": out,
                "auprc": ms(auprc),
                "roc_auc": ms(roc),
                "recall_at_precision_90": ms(recall),
                "params": opts.params,
            })
        );
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    println!(
        "time-series cross-validation on {}: {k} expanding-window folds, {} trees",
        args.input.input, opts.params.n_trees
    );
    println!(
        "  {:>4}  {:>10}  {:>10}  {:>7}  {:>7}  {:>7}  {:>14}",
        "fold", "train rows", "test rows", "frauds", "AUPRC", "ROC-AUC", "recall@P>=0.90"
    );
    for f in &out {
        println!(
            "  {:>4}  {:>10}  {:>10}  {:>7}  {:>7}  {:>7}  {:>14}",
            f.fold,
            f.train_rows,
            f.test_rows,
            f.test_frauds,
            opt(f.auprc),
            opt(f.roc_auc),
            opt(f.recall_at_precision_90)
        );
    }
    let ms =
        |v: Option<(f64, f64)>| v.map_or_else(|| "-".into(), |(m, s)| format!("{m:.4} ± {s:.4}"));
    println!(
        "  mean  AUPRC {}  ROC-AUC {}  recall@P>=0.90 {}",
        ms(auprc),
        ms(roc),
        ms(recall)
    );
    Ok(())
}

/// Run `evaluate`.
pub fn run(args: &EvaluateArgs) -> anyhow::Result<()> {
    if let Some(k) = args.folds {
        return run_folds(args, k);
    }
    let path = args
        .model
        .as_ref()
        .expect("clap requires --model without --folds");
    let model = Model::load(path)?;
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
