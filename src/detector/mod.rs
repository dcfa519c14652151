//! The detector as a library: [`Detector::build`] turns a [`Config`] into a ready
//! detector, checking everything it can before a message is read (the configuration, the
//! metrics address, the serving model, the verdict store, the lake, the alert and
//! dead-letter sinks); [`Detector::run`] runs it until the input ends or a [`Shutdown`]
//! stops it, and returns a [`Summary`]. [`Detector::handles`] gives the running
//! detector's shared state (serving model, verdict store, statistics, recent alerts) to
//! whatever serves it, such as an HTTP API.
//!
//! This module is the one place where configuration becomes running stages: no stage
//! takes a copy of settings it could read from its section.
//!
//! - [`bootstrap`]: the serving model at start-up (`LATEST`, or a first model trained
//!   from `bootstrap.history`).

pub mod bootstrap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use bootstrap::Origin as ModelOrigin;

use crate::config::{Config, SourceKind, VerdictBackend};
use crate::eval::Metrics;
use crate::model::Model;
use crate::registry::ModelStore;
use crate::registry::shadow::{ShadowSpec, ShadowWatcher};
use crate::registry::watcher::Watcher;
use crate::retry::Retryable;
use crate::schema::Format;
use crate::shutdown::Shutdown;
use crate::sinks::alerts::{AlertSink, KafkaAlerts, LocalAlerts, RecentAlerts, Webhook};
use crate::sinks::lake::LakeWriter;
use crate::sinks::verdicts::VerdictStore;
use crate::sinks::verdicts::dynamodb::DynamoVerdictStore;
use crate::sinks::verdicts::local::LocalVerdictStore;
use crate::storage::BlobStore;
use crate::stream::dead_letter::{DeadLetterFile, DeadLetterSink, DeadLetterTopic};
use crate::stream::delivery::{Delivery, Durability};
use crate::stream::pipeline::Stages;
use crate::stream::scorer::Scorer;
use crate::stream::source::file::{FileSource, Input};
use crate::stream::source::kafka::{KafkaSource, KafkaSourceOptions};
use crate::stream::source::labels::file::{LabelsFile, catch_up};
use crate::stream::source::labels::topic::LabelsTopic;
use crate::stream::stats::{self, SharedStats, Stats};
use crate::tasks::Tasks;
use crate::velocity::stage::Velocity;

/// The running detector's shared state, for an API or a progress display. Clones share
/// it.
#[derive(Clone)]
pub struct Handles {
    /// The serving model (the watcher swaps it; the scorer loads it once per batch).
    pub model: Arc<ArcSwap<Model>>,
    /// The verdict store the detector writes.
    pub verdicts: Arc<dyn VerdictStore>,
    /// Running totals.
    pub stats: SharedStats,
    /// The latest alerts, and their live feed.
    pub alerts: Arc<RecentAlerts>,
    /// The model store the watcher polls.
    pub models: ModelStore,
    /// The alert sinks (the recent ring among them), for verdicts recorded by the API.
    pub alert_sinks: Arc<Vec<Arc<dyn AlertSink>>>,
    /// Where the API, the dashboard and `/metrics` are served, when enabled.
    pub api_addr: Option<SocketAddr>,
    /// The entity-feature stage, when enabled (its verdict/label join feeds the
    /// dashboard's online precision and recall).
    pub velocity: Option<Arc<Velocity>>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The source, for people (`kafka topics …`, a path, or `-`).
    pub source: String,
    /// Whether the source was Kafka.
    pub kafka: bool,
    /// Where dead letters went.
    pub dead_letter_sink: String,
    /// Totals.
    pub stats: Stats,
    /// Wall time of the run.
    pub seconds: f64,
    /// Metrics against the labels, when every scored row had one.
    pub metrics: Option<Metrics>,
    /// The verdicts against the labels that arrived separately (`velocity.labels_path` or
    /// `velocity.labels_topic`).
    pub labels: Option<crate::velocity::stage::Confusion>,
}

impl Summary {
    /// Read-to-durable latency percentiles p50, p99, p999 in milliseconds.
    #[must_use]
    pub fn latency_ms(&self) -> [f64; 3] {
        self.stats.latency_percentiles()
    }

    /// Produce-to-durable latency percentiles (Kafka message timestamps).
    #[must_use]
    pub fn produce_latency_ms(&self) -> [f64; 3] {
        stats::percentiles(&self.stats.produce_latency)
    }
}

enum Source {
    Kafka(KafkaSource),
    File(FileSource),
    /// No stream: the API alone (`fraudstream serve`).
    None,
}

/// How often the labels file is checked for new lines.
const LABELS_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest start-up count of the input's history into the in-memory velocity store.
const VELOCITY_REBUILD: std::time::Duration = std::time::Duration::from_secs(900);

/// How long background tasks get to end once the detector stops.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest start-up wait for the labels topic to be read to its end (memory store).
const LABELS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(120);

/// A detector, built and ready to run.
pub struct Detector {
    source: Source,
    stages: Option<Stages>,
    handles: Handles,
    in_flight_batches: usize,
    watcher: Option<(Watcher, std::time::Duration)>,
    shadow: Option<(ShadowWatcher, std::time::Duration)>,
    labels: Option<(Arc<Velocity>, LabelsFile)>,
    labels_topic: Option<(Arc<Velocity>, LabelsTopic)>,
    velocity: Option<Arc<Velocity>>,
    ready: Option<watch::Sender<bool>>,
    model_origin: ModelOrigin,
    /// Stops the metrics server and the watcher when the detector is dropped.
    _background: DropGuard,
    background: CancellationToken,
    /// The background tasks (API server, watchers, labels readers): one that stops early
    /// stops the detector.
    tasks: Tasks,
    /// This detector's static group membership, held while it runs.
    _instance: Option<crate::kafka::instance::InstanceId>,
}

impl Detector {
    /// Build a detector from `cfg`: validate it, serve the API (not ready yet), load or
    /// bootstrap the serving model, connect the verdict store (creating the DynamoDB
    /// table when configured), check the lake's store and the Kafka topics, open the
    /// lake, the alert sinks and the dead-letter sink. Any of these failing is an error
    /// here, before a message is read.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        Self::assemble(cfg, true).await
    }

    /// An API replica (`fraudstream serve`): the same model (hot-reloaded), verdict store
    /// and alert sinks, and no stream source. `run` serves until the shutdown.
    pub async fn build_serving(cfg: &Config) -> anyhow::Result<Self> {
        Self::assemble(cfg, false).await
    }

    async fn assemble(cfg: &Config, stream: bool) -> anyhow::Result<Self> {
        cfg.check()?;
        // Metrics are recorded with or without the API (the run summary reads them).
        crate::telemetry::recorder()?;
        let background = CancellationToken::new();
        let mut tasks = Tasks::new(background.clone());
        let server = if cfg.api.enabled {
            Some(
                crate::api::start(
                    &cfg.api,
                    cfg.scoring.top_k,
                    cfg.verdicts.ttl_seconds,
                    &mut tasks,
                )
                .await?,
            )
        } else {
            None
        };
        let models = ModelStore::open(&cfg.models, &cfg.s3)
            .await?
            .serving_velocity(cfg.velocity.enabled.then(|| cfg.velocity.features.clone()));
        let (model, model_origin) = bootstrap::serving_model(cfg, &models).await?;
        let model = Arc::new(ArcSwap::from_pointee(model));
        let verdicts = verdict_store(cfg).await?;
        let recent = Arc::new(RecentAlerts::default());
        let kafka = cfg.source.kind == SourceKind::Kafka;
        let stats = SharedStats::default();
        let mut shadow = None;
        let mut labels = None;
        let mut labels_topic = None;
        let mut velocity_stage = None;
        // With static membership claimed, for the group consumers (source, labels).
        let mut kafka_settings = cfg.kafka.clone();
        let mut instance = None;
        let (source, stages, alerts) = if stream {
            let lake_store =
                crate::storage::open(&cfg.lake.location, Some(&cfg.s3.settings("", ""))).await?;
            check_store("lake.location", lake_store.as_ref()).await?;
            if kafka {
                cfg.kafka
                    .check_topics()
                    .await
                    .map_err(|e| anyhow::anyhow!("invalid `kafka.{}`: {}", e.key, e.message))?;
                let (settings, claim) = cfg
                    .kafka
                    .with_membership()
                    .map_err(|e| anyhow::anyhow!("invalid `kafka.instance_id`: {e}"))?;
                kafka_settings = settings;
                instance = claim;
            }
            let mut lake = LakeWriter::new(lake_store, cfg.lake.writer.clone());
            // A write this writer's previous run left half done: its temporary file.
            match lake.clean_temporaries().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    "lake: temporary files of interrupted writes deleted"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "lake: temporary files not cleaned (tried again at the next start)")
                }
            }
            if cfg.velocity.enabled {
                lake = lake.with_features(cfg.velocity.features.names());
            }
            let (source, dead_letters) = source(cfg, &kafka_settings)?;
            let alerts = alert_sinks(cfg, kafka, &recent)?;
            let delivery = Delivery {
                verdicts: verdicts.clone(),
                alerts: alerts.clone(),
                lake: Some(lake),
                durable: Durability::of(&cfg.delivery.durable),
                ttl_seconds: cfg.verdicts.ttl_seconds,
                abort: CancellationToken::new(),
                dead_letters: dead_letters.clone(),
                lake_task: None,
            };
            let velocity = Velocity::from_config(&cfg.velocity)?.map(Arc::new);
            velocity_stage.clone_from(&velocity);
            if let (Some(v), Some(path)) = (&velocity, &cfg.velocity.labels_path) {
                let mut file = LabelsFile::new(path);
                let v2 = v.clone();
                let (file, read) = tokio::task::spawn_blocking(move || {
                    let n = catch_up(&v2, &mut file);
                    (file, n)
                })
                .await?;
                let read = read.with_context(|| format!("reading velocity.labels_path {path}"))?;
                tracing::info!(path, labels = read, "labels applied; following the file");
                labels = Some((v.clone(), file));
            }
            if let Some(v) = velocity.as_ref().filter(|_| {
                kafka
                    && cfg.velocity.rebuild
                    && cfg.velocity.store == crate::velocity::config::StoreKind::Memory
            }) {
                let (v, settings, stop) = (v.clone(), cfg.kafka.clone(), background.clone());
                tokio::task::spawn_blocking(move || {
                    crate::stream::source::kafka::rebuild::rebuild_with_retries(
                        &settings,
                        &v,
                        VELOCITY_REBUILD,
                        &stop,
                    );
                })
                .await?;
            }
            if let (Some(v), Some(topic)) = (&velocity, &cfg.velocity.labels_topic) {
                let grouped = cfg.velocity.store == crate::velocity::config::StoreKind::Redis;
                let mut reader =
                    LabelsTopic::open(&kafka_settings, topic, grouped, Some(dead_letters.clone()))
                        .await?;
                let read = reader
                    .catch_up(v, LABELS_CATCH_UP, &background)
                    .await
                    .with_context(|| format!("reading velocity.labels_topic {topic}"))?;
                tracing::info!(
                    topic,
                    labels = read,
                    grouped,
                    "labels applied; following the topic"
                );
                labels_topic = Some((v.clone(), reader));
            }
            let mut scorer =
                Scorer::with_explain(model.clone(), cfg.scoring.top_k, cfg.scoring.explain)
                    .with_velocity(velocity);
            if let Some(spec) = &cfg.models.shadow {
                let slot = Arc::new(arc_swap::ArcSwapOption::empty());
                let mut w =
                    ShadowWatcher::new(models.clone(), ShadowSpec::parse(spec), slot.clone());
                // Unreachable storage is retried by later polls; a fixed version that
                // does not load is a configuration error.
                if let Err(e) = w.poll().await {
                    tracing::warn!(error = %e, shadow = %spec, "shadow model not loaded yet; retrying");
                }
                if let (ShadowSpec::Version(_), Some(why)) = (ShadowSpec::parse(spec), w.refusal())
                {
                    anyhow::bail!("invalid `models.shadow`: {why}");
                }
                scorer = scorer.with_shadow(slot);
                shadow = Some((w, cfg.models.poll_interval));
            }
            let stages = Stages {
                scorer,
                delivery,
                stats: stats.clone(),
            };
            (source, Some(stages), alerts)
        } else {
            (Source::None, None, alert_sinks(cfg, kafka, &recent)?)
        };
        let watcher = (!cfg.models.poll_interval.is_zero()).then(|| {
            (
                Watcher::new(models.clone(), model.clone(), cfg.models.features.clone()),
                cfg.models.poll_interval,
            )
        });
        let handles = Handles {
            model,
            verdicts,
            stats,
            alerts: recent,
            models,
            alert_sinks: Arc::new(alerts),
            api_addr: server.as_ref().map(|s| s.addr),
            velocity: velocity_stage.clone(),
        };
        let ready = server.map(|s| {
            // Set once: a fresh cell per server.
            let _set = s.handles.set(handles.clone());
            s.ready
        });
        Ok(Self {
            source,
            stages,
            handles,
            in_flight_batches: cfg.delivery.in_flight_batches,
            watcher,
            shadow,
            labels,
            labels_topic,
            velocity: velocity_stage,
            ready,
            model_origin,
            _background: background.clone().drop_guard(),
            background,
            tasks,
            _instance: instance,
        })
    }

    /// Keep reading the source file as it grows (like `tail -f`) until stopped.
    pub fn follow(mut self) -> anyhow::Result<Self> {
        match &mut self.source {
            Source::File(f) if matches!(f.input, Input::File(_)) => {
                f.follow = true;
                Ok(self)
            }
            _ => anyhow::bail!("--follow needs a file source"),
        }
    }

    /// The shared state of this detector.
    #[must_use]
    pub fn handles(&self) -> Handles {
        self.handles.clone()
    }

    /// Where the serving model came from (loaded, or trained because the store was
    /// empty).
    #[must_use]
    pub fn model_origin(&self) -> &ModelOrigin {
        &self.model_origin
    }

    /// Run until the input ends (files) or `shutdown` stops it, then drain, flush the
    /// lake and commit. An error means some input is not durable and was left
    /// uncommitted (it is read again on restart).
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let Self {
            source,
            stages,
            handles,
            in_flight_batches,
            watcher,
            shadow,
            labels,
            labels_topic,
            velocity,
            ready,
            background,
            mut tasks,
            ..
        } = self;
        if let Some((v, file)) = labels {
            tasks.spawn(
                "labels_file",
                crate::stream::source::labels::file::follow(
                    v,
                    file,
                    LABELS_POLL,
                    background.clone(),
                ),
            );
        }
        if let Some((v, reader)) = labels_topic {
            tasks.spawn("labels_topic", reader.follow(v, background.clone()));
        }
        if let Some((w, interval)) = watcher {
            tracing::info!(interval = ?interval, store = %handles.models.describe(), "watching the model store for new versions");
            let stop = background.clone();
            tasks.spawn("model_watcher", async move {
                w.run(interval, stop).await;
                Ok(())
            });
        }
        if let Some((w, interval)) = shadow.filter(|(_, i)| !i.is_zero()) {
            let stop = background.clone();
            tasks.spawn("shadow_watcher", async move {
                w.run(interval, stop).await;
                Ok(())
            });
        }
        let set_ready = |value: bool| {
            if let Some(r) = &ready {
                let _sent = r.send(value);
            }
        };
        set_ready(true);
        let streaming = async {
            match (source, stages) {
                (Source::None, _) | (_, None) => {
                    shutdown.stopping().await;
                    (
                        "the API (no stream)".to_owned(),
                        false,
                        String::new(),
                        Ok(()),
                    )
                }
                (Source::Kafka(k), Some(mut stages)) => {
                    stages.delivery.abort = shutdown.abort_token();
                    if let Some(v) = &velocity {
                        v.abort_on(shutdown.abort_token());
                    }
                    let (result, _stages) = k.run(stages, &shutdown).await;
                    (
                        format!("kafka topics {}", k.settings.topics.join(", ")),
                        true,
                        format!("kafka topic {}", k.settings.dlq_topic),
                        result.map_err(anyhow::Error::from),
                    )
                }
                (Source::File(f), Some(mut stages)) => {
                    stages.delivery.abort = shutdown.abort_token();
                    if let Some(v) = &velocity {
                        v.abort_on(shutdown.abort_token());
                    }
                    let (tx, rx) = mpsc::channel(in_flight_batches.max(1));
                    let scorer = tokio::spawn(async move {
                        let r = stages.run(rx, &()).await;
                        (stages, r)
                    });
                    let read = f
                        .run(
                            &tx,
                            &handles.stats,
                            &shutdown.stop_token(),
                            &shutdown.abort_token(),
                        )
                        .await;
                    drop(tx);
                    let drained = match scorer.await.context("scorer task") {
                        Ok((_stages, drained)) => drained.map_err(anyhow::Error::from),
                        Err(e) => Err(e),
                    };
                    (
                        f.input.describe(),
                        false,
                        f.dead_letters.describe(),
                        read.map_err(anyhow::Error::from).and(drained),
                    )
                }
            }
        };
        let mut streaming = Box::pin(streaming);
        // A background task that stops early stops the detector (drained as on a
        // signal) and is the run's error.
        let (outcome, failed) = tokio::select! {
            outcome = &mut streaming => (outcome, None),
            failed = tasks.failed() => {
                shutdown.stop();
                ((&mut streaming).await, Some(failed))
            }
        };
        drop(streaming);
        let (description, kafka, dead_letter_sink, result) = outcome;
        set_ready(false);
        background.cancel();
        tasks.shut_down(TASKS_GRACE).await;
        if let Some(failed) = failed {
            return Err(failed.into());
        }
        result?;
        let stats = stats::lock(&handles.stats).clone();
        let metrics = stats.metrics(handles.model.load().meta().threshold);
        Ok(Summary {
            source: description,
            kafka,
            dead_letter_sink,
            stats,
            seconds: started.elapsed().as_secs_f64(),
            metrics,
            labels: velocity.map(|v| v.confusion()),
        })
    }
}

/// Refuse a store whose bucket or root is missing or whose credentials are refused; an
/// unreachable one is waited out later, like any outage.
async fn check_store(key: &str, store: &dyn BlobStore) -> anyhow::Result<()> {
    match store.check().await {
        Ok(()) => Ok(()),
        Err(e) if e.is_retryable() => {
            tracing::warn!(store = %store.describe(), error = %e, "{key} is not reachable at start; writes will be retried");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{key}: {e}")),
    }
}

/// The configured verdict store, connected.
async fn verdict_store(cfg: &Config) -> anyhow::Result<Arc<dyn VerdictStore>> {
    Ok(match cfg.verdicts.backend {
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
    })
}

/// The configured source and its dead-letter sink (which delivery uses too); a Kafka
/// source consumes with `kafka` (the settings with this detector's membership).
fn source(
    cfg: &Config,
    kafka: &crate::kafka::KafkaSettings,
) -> anyhow::Result<(Source, Arc<dyn DeadLetterSink>)> {
    let input = match cfg.source.kind {
        SourceKind::Kafka => {
            let dead_letters: Arc<dyn DeadLetterSink> = Arc::new(DeadLetterTopic::new(kafka)?);
            let source = Source::Kafka(KafkaSource {
                settings: kafka.clone(),
                options: KafkaSourceOptions {
                    batch_size: cfg.scoring.batch_size,
                    batch_timeout: cfg.scoring.batch_timeout,
                    in_flight_batches: cfg.delivery.in_flight_batches,
                    revoke_timeout: cfg.delivery.revoke_timeout,
                },
                dead_letters: dead_letters.clone(),
            });
            return Ok((source, dead_letters));
        }
        SourceKind::Stdin => Input::Stdin(if cfg.source.stdin_format == "csv" {
            Format::Csv
        } else {
            Format::JsonLines
        }),
        SourceKind::File => Input::File(PathBuf::from(&cfg.source.path)),
    };
    let dlq = PathBuf::from(&cfg.dlq.file);
    let dead_letters: Arc<dyn DeadLetterSink> = Arc::new(
        DeadLetterFile::open(&dlq).with_context(|| format!("dlq.file {}", dlq.display()))?,
    );
    let source = Source::File(FileSource {
        input,
        follow: false,
        batch_size: cfg.scoring.batch_size,
        batch_timeout: cfg.scoring.batch_timeout,
        dead_letters: dead_letters.clone(),
    });
    Ok((source, dead_letters))
}

/// Alert sinks: the recent-alerts ring; on Kafka the alerts topic and stdout, otherwise
/// the alerts file and stdout; and the webhook when configured.
fn alert_sinks(
    cfg: &Config,
    kafka: bool,
    recent: &Arc<RecentAlerts>,
) -> anyhow::Result<Vec<Arc<dyn AlertSink>>> {
    let mut sinks: Vec<Arc<dyn AlertSink>> = vec![recent.clone()];
    let file = if kafka {
        None
    } else {
        cfg.alerts.file.as_deref().map(std::path::Path::new)
    };
    if file.is_some() || cfg.alerts.stdout {
        sinks.push(Arc::new(
            LocalAlerts::open(file, cfg.alerts.stdout)
                .with_context(|| format!("alerts.file {:?}", cfg.alerts.file))?,
        ));
    }
    if kafka && let Some(topic) = &cfg.kafka.alerts_topic {
        sinks.push(Arc::new(KafkaAlerts::new(&cfg.kafka, topic)?));
    }
    if let Some(w) = &cfg.alerts.webhook {
        sinks.push(Arc::new(Webhook::new(w.clone())?));
    }
    Ok(sinks)
}
