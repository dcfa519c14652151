//! Configuration into a ready detector: everything is opened and checked before a
//! message is read.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::error::{DetectorError, Opening as _};
use super::{Detector, Handles, Source, bootstrap, velocity};
use crate::config::{Config, SourceKind, VerdictBackend};
use crate::model::Model;
use crate::registry::ModelStore;
use crate::registry::decisions::{
    Decider, DecisionWatcher, Decisions, Loaded, load as load_decider,
};
use crate::registry::shadow::{ShadowSpec, ShadowWatcher};
use crate::registry::watcher::Watcher;
use crate::retry::Retryable;
use crate::schema::Format;
use crate::sinks::alerts::{AlertSink, KafkaAlerts, LocalAlerts, RecentAlerts, Webhook};
use crate::sinks::lake::LakeWriter;
use crate::sinks::verdicts::VerdictStore;
use crate::sinks::verdicts::dynamodb::DynamoVerdictStore;
use crate::sinks::verdicts::local::LocalVerdictStore;
use crate::storage::BlobStore;
use crate::stream::dead_letter::kafka::OutboxDeadLetters;
use crate::stream::dead_letter::{DeadLetterFile, DeadLetterSink, DeadLetterTopic};
use crate::stream::delivery::config::KafkaOutputs;
use crate::stream::delivery::{Delivery, Durability, OutboxAlerts};
use crate::stream::scorer::Scorer;
use crate::stream::source::file::{FileSource, Input};
use crate::stream::source::kafka::outbox::Outbox;
use crate::stream::source::kafka::{KafkaSource, KafkaSourceOptions};
use crate::stream::stages::Stages;
use crate::stream::stats::SharedStats;
use crate::tasks::Tasks;
use crate::validate::Invalid;

impl Detector {
    /// Build a detector from `cfg`: validate it, serve the API (not ready yet), load or
    /// bootstrap the serving model, connect the verdict store (creating the DynamoDB
    /// table when configured), check the lake's store and the Kafka topics, open the
    /// lake, the alert sinks and the dead-letter sink. Any of these failing is an error
    /// here, before a message is read.
    pub async fn build(cfg: &Config) -> Result<Self, DetectorError> {
        Self::assemble(cfg, true).await
    }

    /// An API replica (`fraudstream serve`): the same model (hot-reloaded), verdict store
    /// and alert sinks, and no stream source. `run` serves until the shutdown.
    pub async fn build_serving(cfg: &Config) -> Result<Self, DetectorError> {
        Self::assemble(cfg, false).await
    }

    async fn assemble(cfg: &Config, stream: bool) -> Result<Self, DetectorError> {
        cfg.check()?;
        // Metrics are recorded with or without the API (the run summary reads them).
        crate::telemetry::recorder().opening("metrics")?;
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
                .await
                .opening("the API")?,
            )
        } else {
            None
        };
        let models = ModelStore::open(&cfg.models, &cfg.s3)
            .await
            .opening("models.location")?
            .serving_velocity(cfg.velocity.enabled.then(|| cfg.velocity.features.clone()));
        let (model, model_origin) = bootstrap::serving_model(cfg, &models).await?;
        let model = Arc::new(ArcSwap::from_pointee(model));
        let decisions = decisions(cfg, &models).await?;
        let verdicts = verdict_store(cfg).await?;
        let recent = Arc::new(RecentAlerts::default());
        let monitor = Arc::new(crate::monitoring::Monitor::new(cfg.monitoring.clone()));
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
                crate::storage::open(&cfg.lake.location, Some(&cfg.s3.settings("", "")))
                    .await
                    .opening("lake.location")?;
            check_store("lake.location", lake_store.as_ref()).await?;
            if kafka {
                cfg.kafka
                    .check_topics(cfg.alert_outputs()?.topic.as_deref())
                    .await
                    .map_err(|e| e.within("kafka"))?;
                let (settings, claim) = cfg
                    .kafka
                    .with_membership()
                    .map_err(|e| Invalid::new("kafka.instance_id", e.to_string()))?;
                kafka_settings = settings;
                instance = claim;
            }
            let lake = open_lake(cfg, lake_store).await;
            let SourceParts {
                source,
                dead_letters,
                plain_dead_letters,
                outbox,
            } = source(cfg, &kafka_settings)?;
            let (mut alerts, topic) = alert_sinks(cfg, &recent)?;
            // Exactly once, the alerts topic is written through the outbox; the API's
            // recorded alerts (no input offset) still go to it directly.
            let mut delivery_alerts = alerts.clone();
            let mut outbox_alerts = None;
            if let Some((name, sink)) = topic {
                alerts.push(sink.clone());
                match &outbox {
                    Some(o) => {
                        outbox_alerts = Some(OutboxAlerts {
                            outbox: o.clone(),
                            topic: Arc::from(name.as_str()),
                        });
                    }
                    None => delivery_alerts.push(sink),
                }
            }
            let delivery = Delivery {
                verdicts: verdicts.clone(),
                alerts: delivery_alerts,
                lake: Some(lake),
                durable: Durability::of(&cfg.delivery.durable),
                ttl_seconds: cfg.verdicts.ttl_seconds,
                abort: CancellationToken::new(),
                dead_letters: dead_letters.clone(),
                lake_task: None,
                streams: Default::default(),
                outbox_alerts,
            };
            // The labels' dead letters come from another topic: never transactional.
            let v = velocity::set_up(cfg, &kafka_settings, plain_dead_letters, &background).await?;
            velocity_stage.clone_from(&v.stage);
            labels = v.labels_file;
            labels_topic = v.labels_topic;
            let velocity = v.stage;
            if let Some(v) = &velocity {
                v.set_monitor(monitor.clone());
            }
            let mut scorer =
                Scorer::with_explain(model.clone(), cfg.scoring.top_k, cfg.scoring.explain)
                    .with_velocity(velocity)
                    .with_decider(decisions.decider.clone(), decisions.counts.clone())
                    .with_monitor(monitor.clone());
            if let Some(spec) = &cfg.models.shadow {
                let (w, slot) = shadow_watcher(&models, spec).await?;
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
            let (mut alerts, topic) = alert_sinks(cfg, &recent)?;
            alerts.extend(topic.map(|(_, sink)| sink));
            (Source::None, None, alerts)
        };
        let watcher = (!cfg.models.poll_interval.is_zero()).then(|| {
            (
                Watcher::new(models.clone(), model.clone(), cfg.models.features.clone()),
                cfg.models.poll_interval,
            )
        });
        let decision_watcher = (!cfg.models.poll_interval.is_zero()).then(|| {
            (
                DecisionWatcher::new(
                    decisions.store.clone(),
                    decisions.decider.clone(),
                    decisions.derived.clone(),
                ),
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
            decisions,
            monitor,
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
            decision_watcher,
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
}

/// The decisions: the rule sets and lists in the model store, loaded and compiled against
/// the entity features this detector computes. An active rule set that does not compile
/// is refused (logged and counted): the model's rule decides until a good one is active.
async fn decisions(cfg: &Config, models: &ModelStore) -> Result<Decisions, DetectorError> {
    let store = models.rules();
    let derived = if cfg.velocity.enabled {
        cfg.velocity.features.names()
    } else {
        Vec::new()
    };
    let decider = match load_decider(&store, &derived, cfg.decisions.model_outcome)
        .await
        .opening("the rule sets and lists in models.location")?
    {
        Loaded::Ready(d) => {
            if let Some(v) = d.version() {
                tracing::info!(version = %v, rules = d.rules.as_ref().map_or(0, |r| r.set.len()), lists = d.list_versions.len(), "rule set active");
            }
            *d
        }
        Loaded::Refused { version, reason } => {
            metrics::counter!(crate::metric_names::RULES_REJECTIONS).increment(1);
            tracing::error!(version, reason = %reason, "the active rule set is refused; the model's rule decides until a good one is active");
            Decider::model_only(cfg.decisions.model_outcome)
        }
    };
    Ok(Decisions {
        store,
        decider: Arc::new(ArcSwap::from_pointee(decider)),
        counts: Arc::default(),
        derived,
        lake: cfg.lake.location.clone(),
        s3: cfg.s3.settings("", ""),
    })
}

/// The lake's writer on `store`, after deleting what interrupted writes of this writer
/// left (its temporary files), with the entity-feature columns when they are computed.
async fn open_lake(cfg: &Config, store: Arc<dyn BlobStore>) -> LakeWriter {
    let mut lake = LakeWriter::new(store, cfg.lake.writer.clone());
    match lake.clean_temporaries().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            files = n,
            "lake: temporary files of interrupted writes deleted"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "lake: temporary files not cleaned (tried again at the next start)");
        }
    }
    if cfg.velocity.enabled {
        lake = lake.with_features(cfg.velocity.features.names());
    }
    // Offsets wait for a durable lake, so a revoked partition's unwritten rows are read
    // again by its new owner: this member drops them.
    lake.dropping_revoked(
        cfg.delivery
            .durable
            .contains(&crate::stream::delivery::Sink::Lake),
    )
}

/// The shadow watcher of `models.shadow = spec`, after a first poll, and the slot it
/// fills. Unreachable storage is retried by later polls; a fixed version that does not
/// load is a configuration error.
async fn shadow_watcher(
    models: &ModelStore,
    spec: &str,
) -> Result<(ShadowWatcher, Arc<arc_swap::ArcSwapOption<Model>>), DetectorError> {
    let slot = Arc::new(arc_swap::ArcSwapOption::empty());
    let mut w = ShadowWatcher::new(models.clone(), ShadowSpec::parse(spec), slot.clone());
    if let Err(e) = w.poll().await {
        tracing::warn!(error = %e, shadow = %spec, "shadow model not loaded yet; retrying");
    }
    if let (ShadowSpec::Version(_), Some(why)) = (ShadowSpec::parse(spec), w.refusal()) {
        return Err(Invalid::new("models.shadow", why).into());
    }
    Ok((w, slot))
}

/// Refuse a store whose bucket or root is missing or whose credentials are refused; an
/// unreachable one is waited out later, like any outage.
async fn check_store(key: &str, store: &dyn BlobStore) -> Result<(), DetectorError> {
    match store.check().await {
        Ok(()) => Ok(()),
        Err(e) if e.is_retryable() => {
            tracing::warn!(store = %store.describe(), error = %e, "{key} is not reachable at start; writes will be retried");
            Ok(())
        }
        Err(e) => Err(e).opening(key),
    }
}

/// The configured verdict store, connected.
async fn verdict_store(cfg: &Config) -> Result<Arc<dyn VerdictStore>, DetectorError> {
    Ok(match cfg.verdicts.backend {
        VerdictBackend::Local => Arc::new(
            LocalVerdictStore::open(&cfg.verdicts.local_path)
                .opening(format!("verdicts.local_path {}", cfg.verdicts.local_path))?,
        ),
        VerdictBackend::Dynamodb => Arc::new(
            DynamoVerdictStore::connect(cfg.verdicts.dynamodb.as_ref().ok_or_else(|| {
                Invalid::new(
                    "verdicts.dynamodb",
                    "is required with backend = \"dynamodb\"",
                )
            })?)
            .await
            .opening("verdicts.dynamodb")?,
        ),
    })
}

/// The configured source and its sinks for dead letters.
struct SourceParts {
    source: Source,
    /// For the source and delivery (through the outbox when exactly once).
    dead_letters: Arc<dyn DeadLetterSink>,
    /// For other inputs (the labels topic): the same sink, never transactional.
    plain_dead_letters: Arc<dyn DeadLetterSink>,
    /// The transactional outbox, when Kafka outputs are exactly once.
    outbox: Option<Arc<Outbox>>,
}

/// The configured source and its dead-letter sinks (which delivery uses too); a Kafka
/// source consumes with `kafka` (the settings with this detector's membership).
fn source(cfg: &Config, kafka: &crate::kafka::KafkaSettings) -> Result<SourceParts, DetectorError> {
    let input = match cfg.source.kind {
        SourceKind::Kafka => {
            let topic = Arc::new(DeadLetterTopic::new(kafka).opening("kafka.dlq_topic")?);
            let plain_dead_letters: Arc<dyn DeadLetterSink> = topic.clone();
            let outbox = match cfg.delivery.kafka_outputs {
                KafkaOutputs::ExactlyOnce => {
                    Some(Outbox::start(kafka).opening("delivery.kafka_outputs")?)
                }
                KafkaOutputs::AtLeastOnce => None,
            };
            let dead_letters: Arc<dyn DeadLetterSink> = match &outbox {
                Some(o) => Arc::new(OutboxDeadLetters::new(topic, o.clone())),
                None => plain_dead_letters.clone(),
            };
            let source = Source::Kafka(KafkaSource {
                outbox: outbox.clone(),
                settings: kafka.clone(),
                options: KafkaSourceOptions {
                    batch_size: cfg.scoring.batch_size,
                    batch_timeout: cfg.scoring.batch_timeout,
                    in_flight_batches: cfg.delivery.in_flight_batches,
                    revoke_timeout: cfg.delivery.revoke_timeout,
                },
                dead_letters: dead_letters.clone(),
            });
            return Ok(SourceParts {
                source,
                dead_letters,
                plain_dead_letters,
                outbox,
            });
        }
        SourceKind::Stdin => Input::Stdin(if cfg.source.stdin_format == "csv" {
            Format::Csv
        } else {
            Format::JsonLines
        }),
        SourceKind::File => Input::File(PathBuf::from(&cfg.source.path)),
    };
    let dlq = PathBuf::from(&cfg.dlq.file);
    let dead_letters: Arc<dyn DeadLetterSink> =
        Arc::new(DeadLetterFile::open(&dlq).opening(format!("dlq.file {}", dlq.display()))?);
    let source = Source::File(FileSource {
        input,
        follow: false,
        batch_size: cfg.scoring.batch_size,
        batch_timeout: cfg.scoring.batch_timeout,
        dead_letters: dead_letters.clone(),
    });
    Ok(SourceParts {
        source,
        plain_dead_letters: dead_letters.clone(),
        dead_letters,
        outbox: None,
    })
}

/// Alert sinks: the recent-alerts ring, and every configured one ([`Config::alert_outputs`]):
/// the alerts file and stdout, the alerts topic, the webhook.
/// The alerts topic's sink comes apart, with the topic's name.
#[allow(clippy::type_complexity)]
fn alert_sinks(
    cfg: &Config,
    recent: &Arc<RecentAlerts>,
) -> Result<
    (
        Vec<Arc<dyn AlertSink>>,
        Option<(String, Arc<dyn AlertSink>)>,
    ),
    DetectorError,
> {
    let outputs = cfg.alert_outputs()?;
    let mut sinks: Vec<Arc<dyn AlertSink>> = vec![recent.clone()];
    let file = outputs.file.as_deref().map(std::path::Path::new);
    if file.is_some() || cfg.alerts.stdout {
        sinks.push(Arc::new(
            LocalAlerts::open(file, cfg.alerts.stdout)
                .opening(format!("alerts.file {:?}", outputs.file))?,
        ));
    }
    let topic = match outputs.topic {
        Some(name) => {
            let sink: Arc<dyn AlertSink> =
                Arc::new(KafkaAlerts::new(&cfg.kafka, &name).opening("kafka.alerts_topic")?);
            Some((name, sink))
        }
        None => None,
    };
    if let Some(w) = &cfg.alerts.webhook {
        sinks.push(Arc::new(Webhook::new(w.clone()).opening("alerts.webhook")?));
    }
    Ok((sinks, topic))
}
