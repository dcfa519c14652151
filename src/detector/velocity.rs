//! The entity-feature stage of a detector, and its labels: the labels file read to its
//! end, the in-memory store rebuilt from the input topics' history, the labels topic
//! caught up; what follows them is started by [`super::Detector::run`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::error::{DetectorError, Opening as _};
use crate::config::Config;
use crate::kafka::KafkaSettings;
use crate::stream::dead_letter::DeadLetterSink;
use crate::stream::source::labels::file::{LabelsFile, catch_up};
use crate::stream::source::labels::topic::LabelsTopic;
use crate::velocity::config::StoreKind;
use crate::velocity::stage::Velocity;

/// Longest start-up count of the input's history into the in-memory velocity store.
const VELOCITY_REBUILD: std::time::Duration = std::time::Duration::from_secs(900);

/// Longest start-up wait for the labels topic to be read to its end (memory store).
const LABELS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(120);

/// The stage and its labels readers, caught up.
pub(super) struct VelocitySetUp {
    /// The stage (none when `velocity.enabled = false`).
    pub stage: Option<Arc<Velocity>>,
    /// The labels file, read to its end, to follow.
    pub labels_file: Option<(Arc<Velocity>, LabelsFile)>,
    /// The labels topic, caught up, to follow.
    pub labels_topic: Option<(Arc<Velocity>, LabelsTopic)>,
}

/// Set up the stage `cfg.velocity` asks for: read the labels file to its end, rebuild
/// the in-memory store from the input topics (memory store on Kafka), and catch up with
/// the labels topic (group consumers with `kafka`, the settings with this detector's
/// membership).
pub(super) async fn set_up(
    cfg: &Config,
    kafka: &KafkaSettings,
    dead_letters: Arc<dyn DeadLetterSink>,
    background: &CancellationToken,
) -> Result<VelocitySetUp, DetectorError> {
    let mut out = VelocitySetUp {
        stage: Velocity::from_config(&cfg.velocity)?.map(Arc::new),
        labels_file: None,
        labels_topic: None,
    };
    let Some(v) = out.stage.clone() else {
        return Ok(out);
    };
    let on_kafka = cfg.source.kind == crate::config::SourceKind::Kafka;
    if let Some(path) = &cfg.velocity.labels_path {
        let mut file = LabelsFile::new(path);
        let v2 = v.clone();
        let (file, read) = tokio::task::spawn_blocking(move || {
            let n = catch_up(&v2, &mut file);
            (file, n)
        })
        .await
        .opening("velocity.labels_path")?;
        let read = read.opening(format!("reading velocity.labels_path {path}"))?;
        tracing::info!(path, labels = read, "labels applied; following the file");
        out.labels_file = Some((v.clone(), file));
    }
    if on_kafka && cfg.velocity.rebuild && cfg.velocity.store == StoreKind::Memory {
        let (v, settings, stop) = (v.clone(), cfg.kafka.clone(), background.clone());
        tokio::task::spawn_blocking(move || {
            crate::stream::source::kafka::rebuild::rebuild_with_retries(
                &settings,
                &v,
                VELOCITY_REBUILD,
                &stop,
            );
        })
        .await
        .opening("velocity.rebuild")?;
    }
    if let Some(topic) = &cfg.velocity.labels_topic {
        let grouped = cfg.velocity.store == StoreKind::Redis;
        let mut reader = LabelsTopic::open(kafka, topic, grouped, Some(dead_letters))
            .await
            .opening("velocity.labels_topic")?;
        let read = reader
            .catch_up(&v, LABELS_CATCH_UP, background)
            .await
            .opening(format!("reading velocity.labels_topic {topic}"))?;
        tracing::info!(
            topic,
            labels = read,
            grouped,
            "labels applied; following the topic"
        );
        out.labels_topic = Some((v, reader));
    }
    Ok(out)
}
