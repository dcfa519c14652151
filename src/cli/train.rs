//! `fraudstream train`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::print::{self, metric_rows, metrics_json, table, with};
use super::{InputArgs, ReportArgs, read_input};
use crate::eval::{SplitKind, ThresholdStrategy};
use crate::forest::{ClassWeight, Criterion, MaxFeatures, TrainParams};
use crate::pipeline::{TrainOptions, train_model};

/// `train` arguments. Hyper-parameters left unset come from `--config`, then the defaults.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Where to write the model file.
    #[arg(long, short)]
    out: PathBuf,
    /// A TOML file with a `[train]` table of hyper-parameters (see config/train.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of trees [default: 100].
    #[arg(long)]
    trees: Option<usize>,
    /// Maximum depth [default: unlimited].
    #[arg(long)]
    max_depth: Option<usize>,
    /// Minimum samples per leaf [default: 1].
    #[arg(long)]
    min_samples_leaf: Option<usize>,
    /// Minimum samples to split a node [default: 2].
    #[arg(long)]
    min_samples_split: Option<usize>,
    /// Features tried per split: sqrt, log2, all, a count, or a fraction [default: sqrt].
    #[arg(long)]
    max_features: Option<MaxFeatures>,
    /// Split criterion [default: gini].
    #[arg(long, value_enum)]
    criterion: Option<Criterion>,
    /// Class weights: none, balanced, or a fraud weight [default: none].
    #[arg(long)]
    class_weight: Option<ClassWeight>,
    /// Sample without replacement instead of bootstrapping.
    #[arg(long)]
    no_bootstrap: bool,
    /// Rows drawn per tree, as a fraction of the training rows [default: 1.0].
    #[arg(long)]
    sample_fraction: Option<f64>,
    /// Maximum bins per feature, 2..=255 [default: 255].
    #[arg(long)]
    max_bins: Option<usize>,
    /// Seed for the split and the forest [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// How to hold out test rows.
    #[arg(long, value_enum, default_value_t = SplitKind::Stratified)]
    split: SplitKind,
    /// Fraction of rows held out.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Comma-separated features [default: V1..V28,Amount; with --velocity: Amount and
    /// every entity feature].
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Threshold choice: f1, precision:P, fixed:T, or cost (with --fraud-cost and
    /// --review-cost: the least expected cost, each missed fraud costing its Amount plus
    /// the fraud cost and each flagged transaction the review cost), chosen on
    /// out-of-bag scores (held-out ones without).
    #[arg(long, default_value = "f1")]
    threshold: String,
    /// With --threshold cost: what a missed fraud costs on top of its amount
    /// (chargeback fee, handling).
    #[arg(long, default_value_t = 0.0)]
    fraud_cost: f64,
    /// With --threshold cost: what flagging a transaction costs (a review, a declined
    /// good customer).
    #[arg(long)]
    review_cost: Option<f64>,
    /// Train on a sample of at most this many rows, read in chunks so that memory
    /// depends on it and not on the input: the frauds (see --max-frauds) and a uniform sample of the
    /// legitimate rows, weighted by the rows they stand for (the threshold's precision
    /// and the metrics are the input's, not the sample's).
    #[arg(long, value_name = "ROWS")]
    max_rows: Option<usize>,
    /// With --max-rows: keep at most this many frauds (sampled uniformly above it)
    /// [default: half of --max-rows].
    #[arg(long, value_name = "ROWS", requires = "max_rows")]
    max_frauds: Option<usize>,
    /// With --max-rows: sample each span of `Time` of this length on its own (`7d`), the
    /// budget of each class shared fairly among the spans, so that a thin span is not
    /// crowded out by busy ones; each row then weighs what its span's rows stand for
    /// (`retrain.sample_bucket`).
    #[arg(long, value_name = "SPAN", requires = "max_rows", value_parser = positive_span)]
    sample_bucket: Option<std::time::Duration>,
    /// Worker threads for training [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Also publish the model to this model store (a path or `s3://bucket/prefix`) and
    /// point its LATEST at it; running detectors then hot-reload it.
    #[arg(long)]
    publish: Option<String>,
    /// Sign the published manifest with this secret key (from `fraudstream keygen`);
    /// detectors with `models.trusted_keys` serve only signed versions.
    #[arg(long, requires = "publish")]
    sign_key: Option<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
}

/// Store `model` (with the rows it held out) in the model store at `location` and move
/// LATEST to it (conditionally: a concurrent publisher makes this fail instead of being
/// overwritten).
fn publish(
    model: &crate::model::Model,
    holdout: &crate::registry::HoldoutSet,
    location: &str,
    sign_key: Option<&std::path::Path>,
    mut cfg: crate::config::Config,
) -> anyhow::Result<()> {
    cfg.models.location = location.to_owned();
    if let Some(key) = sign_key {
        cfg.models.sign_key = Some(key.display().to_string());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let store = crate::registry::ModelStore::open(&cfg.models, &cfg.s3).await?;
            store
                .check_publishable()
                .map_err(|why| anyhow::anyhow!("--publish: {why} (pass --sign-key)"))?;
            let before = store.latest().await?;
            store.put_with_holdout(model, Some(holdout)).await?;
            store
                .set_latest(model.version(), before.as_ref())
                .await
                .context("LATEST moved while publishing (another publisher); the version is stored but not served")?;
            eprintln!(
                "published {} to {} (LATEST was {})",
                model.version(),
                store.describe(),
                before.map_or_else(|| "unset".to_owned(), |b| b.version)
            );
            anyhow::Ok(())
        })
}

/// The `[train]` table of `path` (see config/train.toml), or the defaults. `velocity`
/// is the command's `--velocity`: a file that also declares features (a recipe such as
/// config/entity-model.toml) gets a warning when the command computes other ones.
pub(super) fn params_file(
    path: Option<&std::path::Path>,
    velocity: Option<&str>,
) -> anyhow::Result<TrainParams> {
    let Some(path) = path else {
        return Ok(TrainParams::default());
    };
    let params = crate::pipeline::read_train_params(path).map_err(anyhow::Error::msg)?;
    if let Some(warning) = unused_features(path, velocity) {
        tracing::warn!("{warning}");
    }
    Ok(params)
}

/// Why the features a parameter file declares are not the ones `--velocity` computes
/// (`None`: the file declares none, or the same).
fn unused_features(path: &std::path::Path, velocity: Option<&str>) -> Option<String> {
    use crate::velocity::config::spec_from_arg;
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("velocity")?;
    let file = path.display().to_string();
    let declared = spec_from_arg(&file).ok()?;
    if velocity.and_then(|v| spec_from_arg(v).ok()).as_ref() == Some(&declared) {
        return None;
    }
    Some(format!(
        "{file} declares entity features in [velocity], but this command computes {}: pass \
         --velocity {file} to train on them",
        velocity.map_or_else(|| "none".to_owned(), |v| format!("those of --velocity {v}"))
    ))
}

impl TrainArgs {
    fn params(&self) -> anyhow::Result<TrainParams> {
        let mut p = params_file(self.config.as_deref(), self.input.velocity.as_deref())?;
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(v) = $value {
                    p.$field = v;
                }
            };
        }
        set!(n_trees, self.trees);
        set!(min_samples_leaf, self.min_samples_leaf);
        set!(min_samples_split, self.min_samples_split);
        set!(max_features, self.max_features);
        set!(criterion, self.criterion);
        set!(class_weight, self.class_weight);
        set!(sample_fraction, self.sample_fraction);
        set!(max_bins, self.max_bins);
        set!(seed, self.seed);
        if self.max_depth.is_some() {
            p.max_depth = self.max_depth;
        }
        if self.no_bootstrap {
            p.bootstrap = false;
        }
        p.validate()?;
        Ok(p)
    }
}

/// The threshold strategy of `--threshold`, with the costs of `--threshold cost`.
fn threshold_strategy(args: &TrainArgs) -> anyhow::Result<ThresholdStrategy> {
    if args.threshold.trim() != "cost" {
        anyhow::ensure!(
            args.review_cost.is_none(),
            "--review-cost applies to --threshold cost"
        );
        return args
            .threshold
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--threshold: {e}"));
    }
    let review = args
        .review_cost
        .context("--threshold cost needs --review-cost (and --fraud-cost, 0 by default)")?;
    for (name, v) in [("--fraud-cost", args.fraud_cost), ("--review-cost", review)] {
        anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} {v}: must be 0 or more");
    }
    Ok(ThresholdStrategy::Cost {
        fraud: args.fraud_cost,
        review,
    })
}

/// A span of at least an hour (`--sample-bucket`).
fn positive_span(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d < crate::pipeline::sample::MIN_SPAN => Err("must be at least 1h".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `train --max-rows`: the input sampled chunk by chunk; the sample (with its weights)
/// and the rows skipped as invalid.
fn read_sampled(
    args: &TrainArgs,
    velocity: Option<&crate::velocity::VelocitySpec>,
    max_rows: usize,
    seed: u64,
) -> anyhow::Result<(crate::pipeline::sample::Sample, usize)> {
    anyhow::ensure!(max_rows >= 100, "--max-rows must be at least 100");
    if let Some(m) = args.max_frauds {
        anyhow::ensure!(
            (1..max_rows).contains(&m),
            "--max-frauds must be at least 1 and below --max-rows"
        );
    }
    let input = &args.input;
    let spec = crate::pipeline::sample::SampleSpec {
        max_rows,
        max_frauds: args.max_frauds,
        seed,
        warm_up_secs: super::warm_up_secs(input, velocity)?.map(|s| s as f64),
        skip_invalid: input.skip_invalid,
        bucket_secs: args.sample_bucket.map(|b| b.as_secs_f64()),
    };
    let s3 = input.services()?.s3.settings("", "");
    let spinner = print::spinner(format!("sampling {}", input.input));
    let (sample, read, report) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::pipeline::sample::read_sample(
            std::slice::from_ref(&input.input),
            &s3,
            velocity,
            &std::collections::HashMap::new(),
            &spec,
            &|_| {},
        ))?;
    spinner.finish_and_clear();
    super::log_skipped(&input.input, &report);
    tracing::info!(
        input = %input.input,
        read,
        kept = sample.data.len(),
        weights = ?sample.weights,
        per_row = sample.row_weights.is_some(),
        "sampled the input"
    );
    Ok((sample, report.skipped))
}

/// Run `train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let params = args.params()?;
    let strategy = threshold_strategy(args)?;
    let mut opts = TrainOptions {
        params,
        split: args.split,
        test_fraction: args.test_fraction,
        threshold: strategy,
        ..TrainOptions::default()
    };
    if let Some(f) = &args.features {
        opts.features.clone_from(f);
    }
    anyhow::ensure!(
        args.report.report.is_none() || args.split != SplitKind::None,
        "--report needs a held-out set; use --split stratified or time"
    );
    opts.velocity = args
        .input
        .velocity
        .as_deref()
        .map(crate::velocity::config::spec_from_arg)
        .transpose()?;
    if let (Some(spec), None) = (&opts.velocity, &args.features) {
        // Entity features asked for: train on the amount and all of them.
        opts.features = std::iter::once("Amount".to_owned())
            .chain(spec.names())
            .collect();
    }
    let (data, skipped) = match args.max_rows {
        None => read_input(&args.input)?,
        Some(rows) => {
            let (sample, skipped) =
                read_sampled(args, opts.velocity.as_ref(), rows, opts.params.seed)?;
            opts.sampling = sample.weights;
            opts.row_weights = sample
                .row_weights
                .map(|r| crate::pipeline::RowWeights(r.into()));
            (sample.data, skipped)
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let bar = print::bar(opts.params.n_trees as u64, "training");
    let outcome = pool.install(|| train_model(&data, &args.input.input, &opts, &|| bar.inc(1)))?;
    bar.finish_and_clear();
    let model = &outcome.model;
    let sha = model.save(&args.out)?;
    if let Some(location) = &args.publish {
        let holdout = crate::registry::HoldoutSet::of_split(&data, &outcome.test_rows);
        publish(
            model,
            &holdout,
            location,
            args.sign_key.as_deref(),
            args.input.services()?,
        )?;
    }
    let meta = model.meta();
    tracing::info!(
        model = %args.out.display(),
        version = %meta.version,
        seconds = meta.train_seconds,
        "model written"
    );

    let (evaluated_on, metrics) = outcome
        .headline()
        .context("no metrics: the data has no held-out or out-of-bag rows")?;
    if evaluated_on == "holdout" {
        args.report.write(
            model,
            "holdout",
            &outcome.test_scores,
            &outcome.test_labels,
            metrics,
        )?;
    }
    // With a cost threshold: the expected cost on the held-out rows at the chosen
    // threshold, and with nothing flagged.
    let cost = match (strategy, outcome.test_rows.is_empty()) {
        (ThresholdStrategy::Cost { fraud, review }, false) => {
            let amounts: Vec<f64> = outcome
                .test_rows
                .iter()
                .map(|&i| data.columns[crate::schema::AMOUNT][i])
                .collect();
            let at = |t: f64| {
                outcome
                    .test_scores
                    .iter()
                    .zip(&outcome.test_labels)
                    .zip(&amounts)
                    .map(|((&s, &l), &a)| match (f64::from(s) >= t, l == 1) {
                        (true, _) => review,
                        (false, true) => a + fraud,
                        (false, false) => 0.0,
                    })
                    .sum::<f64>()
            };
            Some((at(meta.threshold), at(f64::INFINITY)))
        }
        _ => None,
    };
    if args.report.json {
        let out = with(
            metrics_json(metrics),
            json!({
                "expected_cost": cost.map(|(c, _)| c),
                "expected_cost_flagging_nothing": cost.map(|(_, n)| n),
                "evaluated_on": evaluated_on,
                "model": args.out.display().to_string(),
                "model_version": meta.version,
                "sha256": sha,
                "train_rows": meta.train_rows,
                "train_frauds": meta.train_frauds,
                "train_seconds": meta.train_seconds,
                "threshold_source": meta.threshold_source,
                "skipped_rows": skipped,
                "oob": meta.oob_metrics.as_ref().map(metrics_json),
            }),
        );
        println!("{out}");
    } else {
        table(
            &format!(
                "model {} ({} trees, {} nodes) written to {}",
                meta.version,
                model.forest().trees().len(),
                model.forest().n_nodes(),
                args.out.display()
            ),
            &[
                ("training rows", meta.train_rows.to_string()),
                ("training frauds", meta.train_frauds.to_string()),
                ("training time", format!("{:.2} s", meta.train_seconds)),
                (
                    "threshold",
                    format!(
                        "{:.4} ({} on {} scores)",
                        meta.threshold, meta.threshold_strategy, meta.threshold_source
                    ),
                ),
            ],
        );
        table(
            &format!("metrics on {evaluated_on} rows"),
            &metric_rows(metrics),
        );
        if let Some((c, nothing)) = cost {
            println!(
                "expected cost on the held-out rows: {c:.2} at the threshold, {nothing:.2} flagging nothing"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unused_features;

    #[test]
    fn a_recipe_used_without_its_features_is_named() {
        let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/config/entity-model.toml");
        let train = concat!(env!("CARGO_MANIFEST_DIR"), "/config/train.toml");
        let path = std::path::Path::new(recipe);
        let w = unused_features(path, None).expect("no --velocity");
        assert!(
            w.contains("--velocity") && w.contains("entity-model.toml"),
            "{w}"
        );
        assert!(unused_features(path, Some("handbook")).is_some());
        assert_eq!(unused_features(path, Some(recipe)), None);
        assert_eq!(unused_features(std::path::Path::new(train), None), None);
    }
}
