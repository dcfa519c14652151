//! `fraudstream run`: build the detector from the configuration, run it until the input
//! ends or ctrl-c / SIGTERM (a second signal aborts), and print a summary.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::print::{metric_rows, spinner, table};
use crate::config::{Config, SourceKind};
use crate::detector::{Detector, ModelOrigin, Summary};
use crate::shutdown::Shutdown;
use crate::stream::stats;

/// `run` arguments. Pipeline settings live in the config file; these are run switches.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (see config/local.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Read this file instead of the configured source (`-` for stdin).
    #[arg(long)]
    source: Option<String>,
    /// Keep reading the source file as it grows (like `tail -f`) until ctrl-c or SIGTERM.
    #[arg(long)]
    follow: bool,
}

/// Run `run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    match args.source.as_deref() {
        Some("-") => cfg.source.kind = SourceKind::Stdin,
        Some(p) => {
            cfg.source.kind = SourceKind::File;
            p.clone_into(&mut cfg.source.path);
        }
        None => {}
    }
    // At least two workers: a rebalance callback blocks the polling thread while the
    // scorer task finishes the revoked partitions' batches.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut detector = Detector::build(&cfg).await?;
        if args.follow {
            detector = detector.follow()?;
        }
        let handles = detector.handles();
        if let Some(addr) = handles.api_addr {
            eprintln!("api: http://{addr}/ (dashboard; /v1/…, /metrics)");
        }
        if let ModelOrigin::Trained { history } = detector.model_origin() {
            eprintln!(
                "trained a first model ({}) from {history} and stored it in {}",
                handles.model.load().version(),
                handles.models.describe()
            );
        }
        let shutdown = Shutdown::new(cfg.delivery.shutdown_deadline);
        tokio::spawn(stop_on_signals(shutdown.clone()));
        let progress = (cfg.source.kind != SourceKind::Kafka).then(|| {
            let bar = spinner(format!("scoring {}", cfg.source.path));
            let stats = handles.stats.clone();
            let shown = bar.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let n = stats::lock(&stats).read;
                    shown.set_message(format!("{n} transactions"));
                }
            });
            (bar, ticker)
        });
        let summary = detector.run(shutdown).await;
        if let Some((bar, ticker)) = progress {
            ticker.abort();
            bar.finish_and_clear();
        }
        print_summary(&cfg, &summary?, &handles.verdicts.describe());
        anyhow::Ok(())
    })
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file: `[api]`, `[models]`, `[verdicts]`, `[alerts]`, `[scoring]`.
    #[arg(long, short)]
    config: PathBuf,
}

/// Run `serve`: the API and dashboard alone, with no stream source, until ctrl-c or
/// SIGTERM (an API replica behind a load balancer).
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    anyhow::ensure!(
        cfg.api.enabled,
        "{}: api.enabled is false, so there is nothing to serve",
        args.config.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let detector = Detector::build_serving(&cfg).await?;
        let handles = detector.handles();
        if let Some(addr) = handles.api_addr {
            eprintln!("api: http://{addr}/ (dashboard; /v1/…, /metrics)");
        }
        let shutdown = Shutdown::new(cfg.delivery.shutdown_deadline);
        tokio::spawn(stop_on_signals(shutdown.clone()));
        detector.run(shutdown).await?;
        anyhow::Ok(())
    })
}

/// Stop on the first ctrl-c or SIGTERM; abort on the second.
async fn stop_on_signals(shutdown: Shutdown) {
    loop {
        super::signal::stop_requested().await;
        shutdown.stop();
    }
}

/// Seconds spent in each stage, from the metrics (`fraudstream_stage_seconds_sum`).
fn stage_seconds() -> String {
    let Ok(handle) = crate::telemetry::recorder() else {
        return String::new();
    };
    let text = handle.render();
    let mut out = Vec::new();
    // `velocity` (entity features) runs inside `score`.
    for stage in ["decode", "score", "velocity", "verdicts", "alerts", "lake"] {
        let prefix = format!("fraudstream_stage_seconds_sum{{stage=\"{stage}\"}} ");
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            out.push(format!("{stage} {v:.2}"));
        }
    }
    out.join("  ")
}

fn print_summary(cfg: &Config, s: &Summary, verdicts: &str) {
    let st = &s.stats;
    let stages = stage_seconds();
    let l = s.latency_ms();
    let latency = |l: [f64; 3]| format!("p50 {:.2}  p99 {:.2}  p999 {:.2}", l[0], l[1], l[2]);
    let rate = |n: u64| n as f64 / s.seconds.max(1e-9);
    if s.kafka {
        table(
            "fraudstream run (kafka): summary",
            &[
                ("messages", st.read.to_string()),
                ("scored", st.scored.to_string()),
                (
                    "dead letters",
                    format!("{} -> {}", st.dead_letters, cfg.kafka.dlq_topic),
                ),
                ("flagged as fraud", st.flagged.to_string()),
                ("partitions revoked", st.revoked.to_string()),
                ("throughput", format!("{:.0} messages/s", rate(st.read))),
                ("latency read->durable (ms)", latency(l)),
                (
                    "latency produced->durable (ms)",
                    latency(s.produce_latency_ms()),
                ),
                ("time in stages (s)", stages),
                ("model version", st.model_versions.join(", ")),
            ],
        );
        return;
    }
    table(
        "fraudstream run: summary",
        &[
            ("transactions", st.read.to_string()),
            ("scored", st.scored.to_string()),
            (
                "invalid (dead letters)",
                format!("{} -> {}", st.dead_letters, s.dead_letter_sink),
            ),
            ("flagged as fraud", st.flagged.to_string()),
            ("throughput", format!("{:.0} transactions/s", rate(st.read))),
            ("latency read->durable (ms)", latency(l)),
            ("time in stages (s)", stages),
            ("model version", st.model_versions.join(", ")),
            ("verdicts", verdicts.to_owned()),
            ("lake", cfg.lake.location.clone()),
        ],
    );
    if let Some(m) = &s.metrics {
        table("against the labels", &metric_rows(m));
    }
    if let Some(c) = &s.labels {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
        table(
            "against the labels received (velocity.labels_path, velocity.labels_topic)",
            &[
                (
                    "labelled verdicts (TP FP FN TN)",
                    format!("{} {} {} {}", c.tp, c.fp, c.fn_, c.tn),
                ),
                ("labels without a verdict", c.unmatched.to_string()),
                ("online precision", opt(c.precision())),
                ("online recall", opt(c.recall())),
            ],
        );
    }
}
