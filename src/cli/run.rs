//! `fraudstream run`: the detector. With `[source] kind = "file"` or `"stdin"` it runs the
//! embedded pipeline (no services) to the end of the input and prints a summary.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Args;

use super::print::{metric_rows, spinner, table};
use crate::config::{Config, SourceKind, VerdictBackend};
use crate::model::Model;
use crate::pipeline::{TrainOptions, train_model};
use crate::registry::ModelStore;
use crate::schema::{Format, ReadOptions, read_dataset};
use crate::sinks::lake::LakeWriter;
use crate::sinks::verdicts::VerdictStore;
use crate::sinks::verdicts::dynamodb::DynamoVerdictStore;
use crate::sinks::verdicts::local::LocalVerdictStore;
use crate::stream::embedded::{self, EmbeddedSettings, Input};
use crate::stream::kafka::KafkaAlerts;
use crate::stream::kafka::PipelineOptions;
use crate::stream::process::{AlertSink, Durability, LocalAlerts, Processor, Stats};

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

/// The model store of the configuration.
pub(crate) async fn model_store(cfg: &Config) -> anyhow::Result<ModelStore> {
    let blobs = crate::storage::open(&cfg.models.location, Some(&cfg.s3.settings("", ""))).await?;
    Ok(ModelStore::new(blobs))
}

/// Start the hot-reload watcher on `serving` (unless `models.poll_interval` is 0); it
/// stops when `stop` turns true.
async fn start_watcher(
    cfg: &Config,
    serving: &Arc<ArcSwap<Model>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if cfg.models.poll_interval.is_zero() {
        return Ok(());
    }
    let watcher = crate::registry::watcher::Watcher::new(
        model_store(cfg).await?,
        serving.clone(),
        cfg.models.features.clone(),
    );
    tracing::info!(interval = ?cfg.models.poll_interval, store = %cfg.models.location, "watching the model store for new versions");
    tokio::spawn(watcher.run(cfg.models.poll_interval, stop));
    Ok(())
}

/// The serving model: `LATEST` from the model store, or, when the store is empty, a first
/// model trained from `bootstrap.history` and published there.
async fn serving_model(cfg: &Config) -> anyhow::Result<Model> {
    let store = model_store(cfg).await?;
    if let Some(latest) = store.latest().await? {
        let (model, _) = store.get(&latest.version).await?;
        tracing::info!(version = %latest.version, store = %store.describe(), "serving model loaded");
        return Ok(model);
    }
    let history = cfg.bootstrap.history.as_deref().with_context(|| {
        format!(
            "the model store {} is empty and no bootstrap.history is configured",
            store.describe()
        )
    })?;
    tracing::info!(history, store = %store.describe(), "model store is empty: training a first model");
    let history_owned = history.to_owned();
    let model = tokio::task::spawn_blocking(move || -> anyhow::Result<Model> {
        let (data, _) = read_dataset(&history_owned, ReadOptions::default())?;
        Ok(train_model(&data, &history_owned, &TrainOptions::default(), &|| {})?.model)
    })
    .await??;
    store.put(&model).await?;
    match store.set_latest(model.version(), None).await {
        Ok(_) => {}
        // Another detector published first: serve what it published.
        Err(crate::registry::RegistryError::Storage(
            crate::storage::StorageError::PreconditionFailed { .. },
        )) => {
            if let Some(l) = store.latest().await? {
                return Ok(store.get(&l.version).await?.0);
            }
        }
        Err(e) => return Err(e.into()),
    }
    let m = model.meta().headline_metrics().map(|(_, m)| m.auprc);
    tracing::info!(version = %model.version(), holdout_auprc = ?m.flatten(), "trained and published a first model");
    eprintln!(
        "trained a first model ({}) from {history} and stored it in {}",
        model.version(),
        store.describe()
    );
    Ok(model)
}

/// Alert sinks besides the log line: the webhook, when configured.
fn webhook_alerts(cfg: &Config) -> anyhow::Result<Vec<Box<dyn AlertSink>>> {
    let mut v: Vec<Box<dyn AlertSink>> = Vec::new();
    if let Some(w) = &cfg.alerts.webhook {
        v.push(Box::new(crate::sinks::webhook::Webhook::new(w.clone())?));
    }
    Ok(v)
}

/// Stop signals: `stop` turns true on the first ctrl-c or SIGTERM (stop reading, drain);
/// `abort` turns true `deadline` later, or on a second signal (give up on sinks still
/// down; what is not durable stays uncommitted).
fn stop_signals(
    deadline: std::time::Duration,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (abort_tx, abort_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!(deadline = ?deadline, "stopping: draining, flushing the lake, committing offsets");
        let _sent = stop_tx.send(true);
        tokio::select! {
            () = tokio::time::sleep(deadline) => {
                tracing::error!("shutdown deadline passed: giving up on what is not yet durable");
            }
            () = shutdown_signal() => {
                tracing::error!("second stop signal: giving up on what is not yet durable");
            }
        }
        let _sent = abort_tx.send(true);
    });
    (stop_rx, abort_rx)
}

/// The detector on Kafka: consume until ctrl-c or SIGTERM, then drain, commit and stop.
async fn run_kafka(
    cfg: &Config,
    model: Arc<ArcSwap<Model>>,
    verdicts: Arc<dyn VerdictStore>,
    lake: LakeWriter,
) -> anyhow::Result<()> {
    let k = &cfg.kafka;
    let mut alerts: Vec<Box<dyn AlertSink>> = vec![Box::new(LocalAlerts {
        file: None,
        stdout: cfg.alerts.stdout,
    })];
    if let Some(topic) = &k.alerts_topic {
        alerts.push(Box::new(KafkaAlerts::new(k, topic)?));
    }
    alerts.extend(webhook_alerts(cfg)?);
    let (stop_rx, abort_rx) = stop_signals(cfg.delivery.shutdown_deadline);
    let processor = Processor {
        model,
        verdicts,
        alerts,
        lake: Some(lake),
        durable: Durability::of(&cfg.delivery.durable),
        top_k: cfg.scoring.top_k,
        ttl_seconds: cfg.verdicts.ttl_seconds,
        stats: Stats::default(),
        stop: Some(abort_rx),
    };
    let options = PipelineOptions {
        batch_size: cfg.scoring.batch_size,
        batch_timeout: cfg.scoring.batch_timeout,
        in_flight_batches: cfg.delivery.in_flight_batches,
        revoke_timeout: cfg.delivery.revoke_timeout,
    };
    let started = std::time::Instant::now();
    let (result, processor) = crate::stream::kafka::run(k, processor, options, stop_rx).await;
    let s = result?;
    let st = &processor.stats;
    let l = st.latency_percentiles();
    let p = crate::stream::process::percentiles(&st.produce_latency);
    table(
        "fraudstream run (kafka): summary",
        &[
            ("messages", s.messages.to_string()),
            ("scored", st.scored.to_string()),
            (
                "dead letters",
                format!("{} -> {}", s.dead_letters, k.dlq_topic),
            ),
            ("flagged as fraud", st.flagged.to_string()),
            ("partitions revoked", s.revoked.to_string()),
            (
                "throughput",
                format!(
                    "{:.0} messages/s",
                    s.messages as f64 / started.elapsed().as_secs_f64().max(1e-9)
                ),
            ),
            (
                "latency read->durable (ms)",
                format!("p50 {:.2}  p99 {:.2}  p999 {:.2}", l[0], l[1], l[2]),
            ),
            (
                "latency produced->durable (ms)",
                format!("p50 {:.2}  p99 {:.2}  p999 {:.2}", p[0], p[1], p[2]),
            ),
            ("model version", st.model_versions.join(", ")),
        ],
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run `run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    // At least two workers: a rebalance callback blocks the polling thread while the
    // scorer task finishes the revoked partitions' batches.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        let (telemetry_stop, telemetry_stop_rx) = tokio::sync::watch::channel(false);
        if cfg.metrics.enabled {
            let handle = crate::telemetry::recorder()?;
            let (listener, addr) = crate::telemetry::bind(&cfg.metrics.address).await?;
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
            eprintln!("metrics: http://{addr}/metrics");
            tokio::spawn(crate::telemetry::serve(
                listener,
                handle,
                ready_rx,
                telemetry_stop_rx.clone(),
            ));
        }
        let model = Arc::new(ArcSwap::from_pointee(serving_model(&cfg).await?));
        start_watcher(&cfg, &model, telemetry_stop_rx.clone()).await?;
        let verdicts: Arc<dyn VerdictStore> = match cfg.verdicts.backend {
            VerdictBackend::Local => Arc::new(LocalVerdictStore::open(&cfg.verdicts.local_path)?),
            VerdictBackend::Dynamodb => Arc::new(
                DynamoVerdictStore::connect(
                    cfg.verdicts
                        .dynamodb
                        .as_ref()
                        .context("verdicts.dynamodb is required")?,
                )
                .await?,
            ),
        };
        let lake_store =
            crate::storage::open(&cfg.lake.location, Some(&cfg.s3.settings("", ""))).await?;
        let lake = LakeWriter::new(lake_store, cfg.lake.writer.clone());
        let _ready = ready_tx.send(true);
        if cfg.source.kind == SourceKind::Kafka && args.source.is_none() {
            let result = run_kafka(&cfg, model, verdicts, lake).await;
            let _stopped = telemetry_stop.send(true);
            return result;
        }
        let input = match (args.source.as_deref(), cfg.source.kind) {
            (Some("-"), _) | (None, SourceKind::Stdin) => {
                Input::Stdin(if cfg.source.stdin_format == "csv" {
                    Format::Csv
                } else {
                    Format::JsonLines
                })
            }
            (Some(p), _) => Input::File(p.into()),
            (None, _) => Input::File(cfg.source.path.clone().into()),
        };
        let settings = EmbeddedSettings {
            input: input.clone(),
            batch_size: cfg.scoring.batch_size,
            batch_timeout: cfg.scoring.batch_timeout,
            top_k: cfg.scoring.top_k,
            alerts_file: cfg.alerts.file.clone().map(PathBuf::from),
            alerts_stdout: cfg.alerts.stdout,
            dlq_file: cfg.dlq.file.clone().into(),
            ttl_seconds: cfg.verdicts.ttl_seconds,
            follow: args.follow,
            durable: Durability::of(&cfg.delivery.durable),
        };
        if args.follow && !matches!(input, Input::File(_)) {
            anyhow::bail!("--follow needs a file source");
        }
        let (stop_rx, abort_rx) = stop_signals(cfg.delivery.shutdown_deadline);
        let progress = spinner(format!("scoring {input:?}"));
        let summary = embedded::run(
            settings,
            model,
            verdicts.clone(),
            webhook_alerts(&cfg)?,
            Some(lake),
            stop_rx,
            abort_rx,
            &|n| progress.set_message(format!("{n} transactions")),
        )
        .await?;
        progress.finish_and_clear();
        let rate = summary.transactions as f64 / summary.seconds.max(1e-9);
        table(
            "fraudstream run: summary",
            &[
                ("transactions", summary.transactions.to_string()),
                ("scored", summary.scored.to_string()),
                (
                    "invalid (dead letters)",
                    format!("{} -> {}", summary.invalid, cfg.dlq.file),
                ),
                ("flagged as fraud", summary.flagged.to_string()),
                ("throughput", format!("{rate:.0} transactions/s")),
                (
                    "latency read->durable (ms)",
                    format!(
                        "p50 {:.2}  p99 {:.2}  p999 {:.2}",
                        summary.latency_ms[0], summary.latency_ms[1], summary.latency_ms[2]
                    ),
                ),
                ("model version", summary.model_versions.join(", ")),
                ("verdicts", verdicts.describe()),
                ("lake", cfg.lake.location.clone()),
            ],
        );
        if let Some(m) = &summary.metrics {
            table("against the labels", &metric_rows(m));
        }
        let _stopped = telemetry_stop.send(true);
        anyhow::Ok(())
    })
}
