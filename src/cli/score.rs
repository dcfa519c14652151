//! `fraudstream score`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::print::{self, metric_rows, metrics_json, table, with};
use super::{InputArgs, read_input_for};
use crate::eval::evaluate;
use crate::model::{Model, Verdict};
use crate::pipeline::output::write_verdicts;
use crate::schema::FIELD_NAMES;
use crate::sinks::verdicts::dynamodb::DynamoVerdictStore;
use crate::sinks::verdicts::local::LocalVerdictStore;
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

/// Rows per progress-bar step.
const SCORE_CHUNK: usize = 8192;

/// Where verdicts go besides `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sink {
    /// The DynamoDB table of the service configuration's `[verdicts.dynamodb]`.
    Dynamodb,
}

/// `score` arguments.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// A model file, or a version in the service configuration's model store (`latest`:
    /// the one `LATEST` names).
    #[arg(long, short)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
    /// Output file: .csv, .jsonl or .parquet (`-` for JSON lines on stdout).
    #[arg(long, short, required_unless_present_any = ["sink", "verdict_db"])]
    out: Option<String>,
    /// Also write every verdict to this verdict store (the same items the detector writes).
    #[arg(long, value_enum)]
    sink: Option<Sink>,
    /// Feature contributions kept per verdict.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Print one JSON summary object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write every verdict to this local verdict database (SQLite), where
    /// `fraudstream verdict get ID --db PATH` reads it back.
    #[arg(long)]
    verdict_db: Option<PathBuf>,
}

/// The model: a file, or a version from the model store.
fn load_model(args: &ScoreArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<Model> {
    if std::path::Path::new(&args.model).exists() {
        let model = Model::load(&args.model)?;
        model.check(None, &[])?;
        return Ok(model);
    }
    let cfg = args.input.services()?;
    rt.block_on(async {
        let store = crate::registry::ModelStore::open(&cfg.models, &cfg.s3).await?;
        let version = if args.model == "latest" {
            store
                .latest()
                .await?
                .with_context(|| format!("{} has no LATEST", store.describe()))?
                .version
        } else {
            args.model.clone()
        };
        Ok(store
            .get_checked(&version, None)
            .await
            .with_context(|| format!("--model {}: no such file, and", args.model))?
            .0)
    })
}

/// Run `score`.
pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let model = load_model(args, &rt)?;
    if model.velocity().is_none() {
        model.check_input(&FIELD_NAMES)?;
    }
    let (data, skipped) = read_input_for(&args.input, &model)?;
    let started = Instant::now();
    let x = model.matrix(&data)?;
    let nf = model.forest().n_features();
    let bar = print::bar(data.len() as u64, "scoring");
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(data.len());
    for (ids, xs) in data.ids.chunks(SCORE_CHUNK).zip(x.chunks(SCORE_CHUNK * nf)) {
        verdicts.extend(model.verdicts(ids, xs, args.top_k));
        bar.inc(ids.len() as u64);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &args.out {
        write_verdicts(out, &verdicts, &data.labels)?;
    }
    let mut stores: Vec<Box<dyn VerdictStore>> = Vec::new();
    if let Some(db) = &args.verdict_db {
        stores.push(Box::new(LocalVerdictStore::open(db)?));
    }
    if args.sink == Some(Sink::Dynamodb) {
        let cfg = args.input.services()?;
        let settings = cfg
            .verdicts
            .dynamodb
            .as_ref()
            .context("--sink dynamodb needs [verdicts.dynamodb] in --service-config")?;
        stores.push(Box::new(
            rt.block_on(DynamoVerdictStore::connect(settings))?,
        ));
    }
    if !stores.is_empty() {
        let items: Vec<VerdictItem> = verdicts
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), None))
            .collect();
        for store in &stores {
            let bar = print::bar(items.len() as u64, "storing verdicts");
            for chunk in items.chunks(1000) {
                rt.block_on(store.put_batch(chunk))?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            tracing::info!(store = %store.describe(), items = items.len(), "verdicts stored");
        }
    }
    let out_name = args.out.clone().unwrap_or_else(|| {
        stores
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let flagged = verdicts.iter().filter(|v| v.fraud).count();
    let rate = data.len() as f64 / seconds.max(1e-9);
    let metrics = data.labels().ok().map(|labels| {
        let scores: Vec<f32> = verdicts.iter().map(|v| v.score).collect();
        evaluate(&scores, &labels, model.meta().threshold)
    });
    if args.json {
        let base = json!({
            "rows": data.len(),
            "flagged": flagged,
            "out": out_name,
            "model_version": model.version(),
            "threshold": model.meta().threshold,
            "seconds": seconds,
            "rows_per_second": rate,
            "skipped_rows": skipped,
        });
        let out = match &metrics {
            Some(m) => with(metrics_json(m), base),
            None => base,
        };
        println!("{out}");
    } else if args.out.as_deref() != Some("-") {
        table(
            &format!("scored {} with model {}", args.input.input, model.version()),
            &[
                ("rows", data.len().to_string()),
                ("flagged as fraud", flagged.to_string()),
                ("verdicts written to", out_name.clone()),
                (
                    "scoring time",
                    format!("{seconds:.3} s ({rate:.0} rows/s, with explanations)"),
                ),
            ],
        );
        if let Some(m) = &metrics {
            table("metrics against the labels", &metric_rows(m));
        }
    }
    Ok(())
}
