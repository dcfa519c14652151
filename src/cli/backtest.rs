//! `fraudstream backtest`: the handbook's evaluation protocol for delayed labels on a
//! labelled history with card and terminal ids (for example `loadgen --simulate --out`).
//! Entity features are computed over the whole history in time order (what a detector
//! computes online), then a forest is trained on the training period and tested on the
//! test period, once with the transaction's own features and once with the entity
//! features too.

use std::collections::HashMap;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::print::{self, table};
use crate::eval::evaluate;
use crate::eval::prequential::{Periods, Row, card_precision_at_k, split};
use crate::schema::{ReadOptions, for_each_transaction};
use crate::velocity::OfflineFeatures;

/// `backtest` arguments.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// A labelled history in time order (CSV, JSON lines or Parquet) with `card_id`
    /// (and `terminal_id` for terminal features); `Time` in Unix seconds.
    #[arg(long, short)]
    input: String,
    /// Entity features: `handbook`, or a TOML file with a `[velocity.features]` table.
    #[arg(long, default_value = "handbook")]
    velocity: String,
    /// First training day (UTC date).
    #[arg(long, default_value = "2018-07-25")]
    train_start: String,
    /// Training days.
    #[arg(long, default_value_t = 7)]
    train_days: i64,
    /// Days between training and test (the label delay).
    #[arg(long, default_value_t = 7)]
    delay_days: i64,
    /// Test days.
    #[arg(long, default_value_t = 7)]
    test_days: i64,
    /// A TOML file with a `[train]` table of hyper-parameters (as `train --config`, for
    /// example what `tune` writes); the defaults without it.
    #[arg(long)]
    train_config: Option<std::path::PathBuf>,
    /// Trees per forest (over the file's).
    #[arg(long)]
    trees: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cards per day for card precision@k.
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// One feature set's results.
struct Outcome {
    name: &'static str,
    features: Vec<String>,
    ap: Option<f64>,
    auc: Option<f64>,
    card_precision: f64,
    train_seconds: f64,
}

/// Run `backtest`.
pub fn run(args: &BacktestArgs) -> anyhow::Result<()> {
    let spec = crate::velocity::config::spec_from_arg(&args.velocity)?;
    let start = humantime::parse_rfc3339(&format!("{}T00:00:00Z", args.train_start))
        .map_err(|e| anyhow::anyhow!("--train-start {}: {e} (use YYYY-MM-DD)", args.train_start))?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64
        / 86_400;
    let names = spec.names();
    let mut features = OfflineFeatures::new(spec.clone())
        .map_err(|e| anyhow::anyhow!("--velocity: {}: {}", e.key, e.message))?;
    // Columns: Amount, then the entity features.
    let width = 1 + names.len();
    let mut x: Vec<f32> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut cards: HashMap<String, u32> = HashMap::new();
    let started = Instant::now();
    let spinner = print::spinner(format!(
        "reading {} and computing entity features",
        args.input
    ));
    let report = for_each_transaction(
        &args.input,
        ReadOptions::default(),
        Some(&mut features),
        |tx| {
            let next = cards.len() as u32;
            let card = *cards
                .entry(tx.card_id.clone().unwrap_or_default())
                .or_insert(next);
            rows.push(Row {
                day: (tx.time() / 86_400.0).floor() as i64,
                card,
                label: tx.label.unwrap_or(0),
            });
            x.push(tx.amount() as f32);
            x.extend_from_slice(&tx.derived);
        },
    )?;
    spinner.finish_and_clear();
    anyhow::ensure!(report.skipped == 0, "invalid rows");
    let feature_seconds = started.elapsed().as_secs_f64();
    let periods = Periods {
        start,
        train_days: args.train_days,
        delay_days: args.delay_days,
        test_days: args.test_days,
    };
    let (train_rows, test_rows) = split(&rows, periods);
    anyhow::ensure!(
        !train_rows.is_empty() && !test_rows.is_empty(),
        "no training or test rows: the history does not cover {} plus {} days",
        args.train_start,
        args.train_days + args.delay_days + args.test_days
    );
    let train_labels: Vec<u8> = train_rows.iter().map(|&i| rows[i].label).collect();
    let test_labels: Vec<u8> = test_rows.iter().map(|&i| rows[i].label).collect();
    let test_meta: Vec<Row> = test_rows.iter().map(|&i| rows[i]).collect();
    let mut params = super::train::params_file(args.train_config.as_deref(), Some(&args.velocity))?;
    if let Some(t) = args.trees {
        params.n_trees = t;
    }
    params.seed = args.seed;
    params.validate()?;
    // The transaction's own features (amount, and the time flags when the spec has
    // them), then everything.
    let own: Vec<usize> = std::iter::once(0)
        .chain(
            names
                .iter()
                .enumerate()
                .filter(|(_, n)| *n == "weekend" || *n == "night")
                .map(|(j, _)| 1 + j),
        )
        .collect();
    let all: Vec<usize> = (0..width).collect();
    let column_name = |c: usize| {
        if c == 0 {
            "Amount".to_owned()
        } else {
            names[c - 1].clone()
        }
    };
    let mut outcomes = Vec::new();
    for (name, columns) in [("transaction features", own), ("with entity features", all)] {
        let pick = |idx: &[usize]| -> Vec<f32> {
            let mut m = Vec::with_capacity(idx.len() * columns.len());
            for &i in idx {
                m.extend(columns.iter().map(|&c| x[i * width + c]));
            }
            m
        };
        let xt = pick(&train_rows);
        let t0 = Instant::now();
        let trained = crate::forest::train(&xt, &train_labels, columns.len(), &params, &|| {})?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let scores = trained.forest.predict_batch(&pick(&test_rows));
        let m = evaluate(&scores, &test_labels, 0.5);
        outcomes.push(Outcome {
            name,
            features: columns.iter().map(|&c| column_name(c)).collect(),
            ap: m.auprc,
            auc: m.roc_auc,
            card_precision: card_precision_at_k(&test_meta, &scores, args.top_k),
            train_seconds,
        });
    }
    let frauds = |labels: &[u8]| labels.iter().filter(|&&l| l == 1).count();
    if args.json {
        let results: Vec<_> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "features": o.name,
                    "columns": o.features,
                    "average_precision": o.ap,
                    "roc_auc": o.auc,
                    format!("card_precision_at_{}", args.top_k): o.card_precision,
                    "train_seconds": o.train_seconds,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "input": args.input,
                "rows": rows.len(),
                "feature_seconds": feature_seconds,
                "train_rows": train_rows.len(),
                "train_frauds": frauds(&train_labels),
                "test_rows": test_rows.len(),
                "test_frauds": frauds(&test_labels),
                "trees": params.n_trees,
                "params": params,
                "results": results,
            })
        );
    } else {
        table(
            &format!(
                "backtest on {}: train {} + {} days, delay {} days, test {} days",
                args.input, args.train_start, args.train_days, args.delay_days, args.test_days
            ),
            &[
                (
                    "rows (features computed)",
                    format!("{} in {feature_seconds:.1} s", rows.len()),
                ),
                (
                    "training rows (frauds)",
                    format!("{} ({})", train_rows.len(), frauds(&train_labels)),
                ),
                (
                    "test rows (frauds)",
                    format!("{} ({})", test_rows.len(), frauds(&test_labels)),
                ),
            ],
        );
        for o in &outcomes {
            let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            table(
                o.name,
                &[
                    ("features", o.features.join(", ")),
                    ("average precision", opt(o.ap)),
                    ("ROC-AUC", opt(o.auc)),
                    (
                        &format!("card precision@{}", args.top_k),
                        format!("{:.3}", o.card_precision),
                    ),
                    ("training time", format!("{:.2} s", o.train_seconds)),
                ],
            );
        }
    }
    Ok(())
}
