//! `fraudstream retrain`: one retraining cycle with the quality gate, or one every
//! `--every` until ctrl-c or SIGTERM. Publishing moves `LATEST`, and running detectors
//! hot-reload the new version.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::print::table;
use crate::config::Config;
use crate::pipeline::retrain::{Decision, retrain_once};

/// `retrain` arguments.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Configuration file: `[retrain]`, `[models]` and `[s3]`.
    #[arg(long, short)]
    config: PathBuf,
    /// Retrain this often (`1h`, `30m`) until stopped; without it, once.
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// Print each decision as one JSON object.
    #[arg(long)]
    json: bool,
}

fn report(d: &Decision, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(d)?);
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    table(
        if d.published {
            "retrain: candidate published"
        } else {
            "retrain: candidate rejected (the live model keeps serving)"
        },
        &[
            (
                "rows read / used / frauds",
                format!("{} / {} / {}", d.rows_read, d.rows_used, d.frauds),
            ),
            ("holdout rows", d.holdout_rows.to_string()),
            ("candidate", d.candidate.clone()),
            ("candidate AUPRC", opt(d.candidate_auprc)),
            (
                "candidate recall @ precision>=0.90",
                opt(d.candidate_recall_at_p90),
            ),
            ("live", d.live.clone().unwrap_or_else(|| "-".into())),
            ("live AUPRC on the same holdout", opt(d.live_auprc)),
            ("reason", d.reason.clone()),
            ("seconds", format!("{:.1}", d.seconds)),
        ],
    );
    Ok(())
}

/// Run `retrain`.
pub fn run(args: &RetrainArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = cfg.model_store().await?;
        let s3 = cfg.s3.settings("", "");
        let on_file = |f: &str| tracing::info!(file = %f, "reading history");
        let Some(every) = args.every else {
            let d = retrain_once(&cfg.retrain, &s3, &store, &on_file).await?;
            return report(&d, args.json);
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            // A failed cycle (history unreachable, say) is logged; the next one tries again.
            match retrain_once(&cfg.retrain, &s3, &store, &on_file).await {
                Ok(d) => report(&d, args.json)?,
                Err(e) => tracing::error!(error = %format!("{e:#}"), "retraining cycle failed"),
            }
        }
    })
}
