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
//! - [`build`]: configuration into a ready detector (sinks, sources, stages);
//!   [`velocity`]: the entity-feature stage and its labels readers.
//! - [`run`]: running it, its background tasks supervised, until the input ends or a
//!   shutdown.

pub mod bootstrap;
mod build;
pub mod error;
mod run;
mod velocity;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use bootstrap::ModelOrigin;
pub use error::DetectorError;

use crate::eval::Metrics;
use crate::model::Model;
use crate::registry::ModelStore;
use crate::registry::decisions::DecisionWatcher;
use crate::registry::shadow::ShadowWatcher;
use crate::registry::watcher::Watcher;
use crate::sinks::alerts::{AlertSink, RecentAlerts};
use crate::sinks::verdicts::VerdictStore;
use crate::stream::source::file::{FileSource, Input};
use crate::stream::source::kafka::KafkaSource;
use crate::stream::source::labels::file::LabelsFile;
use crate::stream::source::labels::topic::LabelsTopic;
use crate::stream::stages::Stages;
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
    /// The rule sets and lists, and the decider they make.
    pub decisions: crate::registry::decisions::Decisions,
    /// Drift of the live data from the serving model's training data.
    pub monitor: Arc<crate::monitoring::Monitor>,
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

/// How long background tasks get to end once the detector stops.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A detector, built and ready to run.
pub struct Detector {
    source: Source,
    stages: Option<Stages>,
    handles: Handles,
    in_flight_batches: usize,
    watcher: Option<(Watcher, std::time::Duration)>,
    decision_watcher: Option<(DecisionWatcher, std::time::Duration)>,
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
    /// Keep reading the source file as it grows (like `tail -f`) until stopped.
    pub fn follow(mut self) -> Result<Self, DetectorError> {
        match &mut self.source {
            Source::File(f) if matches!(f.input, Input::File(_)) => {
                f.follow = true;
                Ok(self)
            }
            _ => Err(DetectorError::NotFollowable),
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
}
