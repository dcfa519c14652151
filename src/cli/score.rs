//! `fraudstream score`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rayon::prelude::*;
use serde_json::json;

use super::print::{self, metric_rows, metrics_json, table, with};
use super::{InputArgs, read_input};
use crate::eval::evaluate;
use crate::model::{Model, Verdict};
use crate::pipeline::output::write_verdicts;
use crate::schema::FIELD_NAMES;
use crate::sinks::verdicts::local::LocalVerdictStore;
use crate::sinks::verdicts::{VerdictItem, VerdictStore};

/// Rows per scoring task (and progress-bar step).
const SCORE_CHUNK: usize = 8192;

/// `score` arguments.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The model file.
    #[arg(long, short)]
    model: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Output file: .csv, .jsonl or .parquet (`-` for JSON lines on stdout).
    #[arg(long, short)]
    out: String,
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

/// Run `score`.
pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    model.check_input(&FIELD_NAMES)?;
    let (data, skipped) = read_input(&args.input)?;
    let started = Instant::now();
    let x = model.matrix(&data);
    let nf = model.forest().n_features();
    let bar = print::bar(data.len() as u64, "scoring");
    let verdicts: Vec<Verdict> = x
        .par_chunks(SCORE_CHUNK * nf)
        .enumerate()
        .flat_map_iter(|(c, xs)| {
            let mut scores = vec![0f32; xs.len() / nf];
            model.forest().predict_into(xs, &mut scores);
            bar.inc(scores.len() as u64);
            let model = &model;
            let data = &data;
            scores.into_iter().enumerate().map(move |(i, s)| {
                let row = c * SCORE_CHUNK + i;
                model.verdict_for(&data.ids[row], &xs[i * nf..(i + 1) * nf], s, args.top_k)
            })
        })
        .collect();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    write_verdicts(&args.out, &verdicts, &data.labels)?;
    if let Some(db) = &args.verdict_db {
        let store = LocalVerdictStore::open(db)?;
        let items: Vec<VerdictItem> = verdicts
            .iter()
            .map(|v| VerdictItem::from_verdict(v.clone(), None))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(store.put_batch(&items))?;
        tracing::info!(db = %db.display(), items = items.len(), "verdicts stored");
    }
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
            "out": args.out,
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
    } else if args.out != "-" {
        table(
            &format!("scored {} with model {}", args.input.input, model.version()),
            &[
                ("rows", data.len().to_string()),
                ("flagged as fraud", flagged.to_string()),
                ("verdicts written to", args.out.clone()),
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
