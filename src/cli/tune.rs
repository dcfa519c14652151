//! `fraudstream tune`: a search of the forest's hyper-parameters judged by time-series
//! cross-validation (`evaluate --folds`), with a fixed budget of trials and successive
//! halving: every trial is judged on the first fold (the smallest training set), the
//! best third of them and the defaults on every fold, and the best mean AUPRC wins, so
//! the choice is never judged worse than the defaults. The best parameters go
//! to a TOML file with a `[train]` table, which `train --config` and `retrain.params`
//! read.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::InputArgs;
use super::evaluate::{fold_metrics, fold_options, parse_folds};
use crate::forest::{ClassWeight, MaxFeatures, TrainParams};
use crate::rng::Rng;

/// `tune` arguments.
#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The protocol: `time:K`, K expanding-window folds in time order.
    #[arg(long, value_name = "time:K", default_value = "time:4", value_parser = parse_folds)]
    folds: usize,
    /// Trials: the defaults, then random draws of the search space.
    #[arg(long, default_value_t = 12)]
    trials: usize,
    /// Trees per model while searching (more trees rarely change the ranking, and the
    /// chosen file can raise `n_trees`).
    #[arg(long, default_value_t = 50)]
    trees: usize,
    /// Seed of the draws (and of every model).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the best parameters (`[train]` table).
    #[arg(long, short)]
    out: PathBuf,
    /// Print the trials and the choice as one JSON object.
    #[arg(long)]
    json: bool,
}

/// One trial's parameters and scores.
#[derive(Debug, Clone, Serialize)]
struct Trial {
    trial: usize,
    params: TrainParams,
    /// AUPRC on the first fold.
    first_fold_auprc: Option<f64>,
    /// Mean AUPRC over every fold (only the trials kept after the first rung).
    mean_auprc: Option<f64>,
}

/// A random draw of the search space.
fn draw(rng: &mut Rng, trees: usize, seed: u64) -> TrainParams {
    let pick = |rng: &mut Rng, n: usize| rng.below(n);
    let depths = [None, Some(8), Some(12), Some(16), Some(24)];
    let leaves = [1, 2, 5, 10, 25];
    let features = [
        MaxFeatures::Sqrt,
        MaxFeatures::Log2,
        MaxFeatures::Fraction(0.3),
        MaxFeatures::Fraction(0.5),
    ];
    let weights = [
        ClassWeight::None,
        ClassWeight::Balanced,
        ClassWeight::Fraud(5.0),
        ClassWeight::Fraud(20.0),
    ];
    let bins = [31, 63, 127, 255];
    let fractions = [0.3, 0.5, 0.7, 1.0];
    TrainParams {
        n_trees: trees,
        max_depth: depths[pick(rng, depths.len())],
        min_samples_leaf: leaves[pick(rng, leaves.len())],
        max_features: features[pick(rng, features.len())],
        class_weight: weights[pick(rng, weights.len())],
        max_bins: bins[pick(rng, bins.len())],
        sample_fraction: fractions[pick(rng, fractions.len())],
        seed,
        ..TrainParams::default()
    }
}

fn describe(p: &TrainParams) -> String {
    format!(
        "depth {} leaf {} features {} weight {} bins {} sample {}",
        p.max_depth.map_or_else(|| "none".into(), |d| d.to_string()),
        p.min_samples_leaf,
        p.max_features,
        p.class_weight,
        p.max_bins,
        p.sample_fraction
    )
}

/// Run `tune`.
pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.trials >= 1, "--trials must be at least 1");
    anyhow::ensure!(args.trees >= 1, "--trees must be at least 1");
    let (data, _) = super::read_input(&args.input)?;
    let folds = crate::eval::time_folds(&data.columns[crate::schema::TIME], args.folds);
    anyhow::ensure!(
        !folds.is_empty(),
        "{} rows cannot make {} folds",
        data.len(),
        args.folds
    );
    let mut rng = Rng::new(args.seed);
    let mut trials: Vec<Trial> = (0..args.trials)
        .map(|i| Trial {
            trial: i + 1,
            params: if i == 0 {
                TrainParams {
                    n_trees: args.trees,
                    seed: args.seed,
                    ..TrainParams::default()
                }
            } else {
                draw(&mut rng, args.trees, args.seed)
            },
            first_fold_auprc: None,
            mean_auprc: None,
        })
        .collect();
    let source = args.input.input.as_str();
    let velocity = args.input.velocity.as_deref();
    // Rung 1: every trial on the first fold.
    for t in &mut trials {
        t.params.validate()?;
        let opts = fold_options(t.params.clone(), velocity)?;
        let (train, test) = folds[0].clone();
        t.first_fold_auprc = fold_metrics(&data, source, &opts, train, test, 1)?.auprc;
        tracing::info!(trial = t.trial, auprc = ?t.first_fold_auprc, params = %describe(&t.params), "first fold");
    }
    // Rung 2: the best third (at least two) on every fold.
    let mut order: Vec<usize> = (0..trials.len()).collect();
    order.sort_by(|&a, &b| {
        let s = |i: usize| trials[i].first_fold_auprc.unwrap_or(f64::NEG_INFINITY);
        s(b).total_cmp(&s(a))
    });
    let keep = trials.len().div_ceil(3).max(2).min(trials.len());
    let mut kept: Vec<usize> = order[..keep].to_vec();
    // The defaults always go on: the choice is measured against them on every fold.
    if !kept.contains(&0) {
        kept.push(0);
    }
    for &i in &kept {
        let opts = fold_options(trials[i].params.clone(), velocity)?;
        let mut sum = 0.0;
        let mut n = 0;
        for (f, (train, test)) in folds.iter().enumerate() {
            let ap = if f == 0 {
                trials[i].first_fold_auprc
            } else {
                fold_metrics(&data, source, &opts, train.clone(), test.clone(), f + 1)?.auprc
            };
            if let Some(ap) = ap {
                sum += ap;
                n += 1;
            }
        }
        trials[i].mean_auprc = (n > 0).then(|| sum / f64::from(n));
        tracing::info!(trial = trials[i].trial, mean_auprc = ?trials[i].mean_auprc, "every fold");
    }
    let best = trials
        .iter()
        .filter(|t| t.mean_auprc.is_some())
        .max_by(|a, b| {
            a.mean_auprc
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&b.mean_auprc.unwrap_or(f64::NEG_INFINITY))
                // Equal means: the earlier trial (the defaults first).
                .then(b.trial.cmp(&a.trial))
        })
        .ok_or_else(|| anyhow::anyhow!("no trial could be judged: no fold has frauds"))?
        .clone();
    #[derive(Serialize)]
    struct File<'a> {
        train: &'a TrainParams,
    }
    let text = format!(
        "# Written by `fraudstream tune` on {source}: trial {} of {}, mean AUPRC {:.4} over {} time-ordered folds\n# (the defaults: {}). Read by `train --config` and `retrain.params`.\n{}",
        best.trial,
        trials.len(),
        best.mean_auprc.unwrap_or(f64::NAN),
        folds.len(),
        trials[0].mean_auprc.map_or_else(
            || "not kept after the first fold".into(),
            |a| format!("{a:.4}")
        ),
        toml::to_string(&File {
            train: &best.params
        })?
    );
    std::fs::write(&args.out, text)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    if args.json {
        println!(
            "{}",
            json!({"trials": trials, "best": best, "out": args.out.display().to_string()})
        );
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    println!(
        "tuning on {source}: {} trials, {} time-ordered folds, {} trees",
        trials.len(),
        folds.len(),
        args.trees
    );
    println!(
        "  {:>5}  {:>10}  {:>10}  parameters",
        "trial", "fold 1", "mean"
    );
    for t in &trials {
        println!(
            "  {:>5}  {:>10}  {:>10}  {}{}",
            t.trial,
            opt(t.first_fold_auprc),
            opt(t.mean_auprc),
            describe(&t.params),
            if t.trial == 1 { " (defaults)" } else { "" }
        );
    }
    println!(
        "best: trial {} (mean AUPRC {}), written to {}",
        best.trial,
        opt(best.mean_auprc),
        args.out.display()
    );
    Ok(())
}
