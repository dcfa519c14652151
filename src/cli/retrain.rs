//! `fraudstream retrain`: one retraining cycle with the quality gate, or one every
//! `--every` until ctrl-c or SIGTERM. Publishing moves `LATEST`, and running detectors
//! hot-reload the new version.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::print::table;
use crate::config::Config;
use crate::pipeline::retrain::{Decision, Outcome, retrain_once};

/// `retrain` arguments.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Configuration file: `[retrain]`, `[models]` and `[s3]`.
    #[arg(long, short)]
    config: PathBuf,
    /// Retrain this often (`1h`, `30m`; at least `1s`) until ctrl-c or SIGTERM; without
    /// it, once.
    #[arg(long, value_parser = parse_every)]
    every: Option<Duration>,
    /// Print each decision as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_every(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: retrain at most once a second"));
    }
    Ok(d)
}

fn report(d: &Decision, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(d)?);
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.4}"));
    let interval = d.difference.as_ref().map_or_else(
        || "-".into(),
        |x| {
            format!(
                "{:+.4} ({:.0}% interval {:+.4} to {:+.4}, {} resamples)",
                x.difference,
                x.confidence * 100.0,
                x.low,
                x.high,
                x.resamples
            )
        },
    );
    table(
        match d.decision {
            Outcome::Published => "retrain: candidate published",
            Outcome::Approved => {
                "retrain: candidate passed the gate, stored as CANDIDATE (retrain.promote is off)"
            }
            Outcome::Rejected => "retrain: candidate rejected (the live model keeps serving)",
            Outcome::InsufficientData => {
                "retrain: insufficient data, nothing trained (the live model keeps serving)"
            }
            Outcome::NotTriggered => {
                "retrain: not triggered, nothing trained (the live model keeps serving)"
            }
        },
        &[
            (
                "rows read / used / frauds",
                format!("{} / {} / {}", d.rows_read, d.rows_used, d.frauds),
            ),
            ("rows the live model never saw", d.unseen_rows.to_string()),
            (
                "gate rows / frauds (needed)",
                format!(
                    "{} / {} ({} / {})",
                    d.holdout_rows, d.holdout_frauds, d.needed_rows, d.needed_frauds
                ),
            ),
            (
                "candidate",
                d.candidate.clone().unwrap_or_else(|| "-".into()),
            ),
            ("candidate AUPRC", opt(d.candidate_auprc)),
            (
                "candidate recall @ precision>=0.90",
                opt(d.candidate_recall_at_p90),
            ),
            ("live", d.live.clone().unwrap_or_else(|| "-".into())),
            ("live AUPRC on the same rows", opt(d.live_auprc)),
            ("AUPRC difference", interval),
            (
                "trigger",
                d.trigger
                    .as_ref()
                    .map_or_else(|| "-".into(), |t| format!("{}: {}", t.trigger, t.reason)),
            ),
            (
                "evidence: recent rows / frauds",
                d.trigger
                    .as_ref()
                    .and_then(|t| t.evidence.as_ref())
                    .map_or_else(|| "-".into(), |e| format!("{} / {}", e.rows, e.frauds)),
            ),
            (
                "evidence: worst PSI, live AUPRC now / when trained",
                d.trigger
                    .as_ref()
                    .and_then(|t| t.evidence.as_ref())
                    .map_or_else(
                        || "-".into(),
                        |e| {
                            format!(
                                "{}, {} / {}",
                                opt(e.max_psi),
                                opt(e.live_auprc),
                                opt(e.trained_auprc)
                            )
                        },
                    ),
            ),
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
        let store = crate::registry::ModelStore::open(&cfg.models, &cfg.s3).await?;
        let s3 = cfg.s3.settings("", "");
        let on_file = |f: &str| tracing::info!(file = %f, "reading history");
        let once = |last_trained| {
            retrain_once(
                &cfg.retrain,
                &cfg.monitoring,
                &s3,
                &cfg.kafka,
                &store,
                &on_file,
                last_trained,
            )
        };
        let Some(every) = args.every else {
            return report(&once(None).await?, args.json);
        };
        // When this process last ran a cycle that trained: an evidence trigger's
        // cool-down counts from it (and from the live version's training).
        let mut last_trained = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = super::signal::stop_requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => return Ok(()),
            }
            // A failed cycle (history unreachable, say) is logged; the next one tries
            // again. A stop request ends a cycle in progress: a version stored without
            // `LATEST` moving to it is harmless.
            let cycle = tokio::select! {
                r = once(last_trained) => r,
                () = &mut stop => return Ok(()),
            };
            match cycle {
                Ok(d) => {
                    if d.candidate.is_some() {
                        last_trained = Some(std::time::SystemTime::now());
                    }
                    report(&d, args.json)?;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "retraining cycle failed"),
            }
        }
    })
}
