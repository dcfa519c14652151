//! Drift monitoring in the detector: the scorer counts each batch's features and scores
//! in the serving model's reference bins ([`Monitor::observe`]); a task
//! ([`Monitor::run`]) computes the drift every `monitoring.interval`, exports it as
//! metrics, keeps a short history for the dashboard's sparklines, and raises a drift
//! alert on the alert sinks when a variable stays at or above `monitoring.alert_band` for
//! `monitoring.alert_after`. `GET /v1/monitoring` serves [`Monitor::document`].

pub mod batch;
pub mod config;
pub mod quality;
pub mod report;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use config::MonitoringConfig;

use crate::metric_names as names;
use crate::model::Model;
use crate::monitor::{DriftSnapshot, DriftState, LiveDrift, VariableDrift};
use crate::sinks::alerts::{AlertSink, MonitoringAlert};

/// Points kept per variable for the sparklines.
const HISTORY: usize = 60;
/// Ticks between two history points (at the default 1 s interval: a point every 10 s,
/// ten minutes in all).
const HISTORY_EVERY: u64 = 10;
/// Monitoring alerts kept for the document.
const ALERTS_KEPT: usize = 50;

/// What is counted.
#[derive(Debug)]
enum Counting {
    /// No batch scored yet.
    Nothing,
    /// The serving model has no reference (trained before references were recorded).
    NoReference(String),
    /// Counting against the serving model's reference.
    Live(Box<LiveDrift>),
}

/// What the last tick found.
#[derive(Debug, Default)]
struct State {
    last: Option<DriftSnapshot>,
    ticks: u64,
    /// Per variable, its PSI at the last [`HISTORY`] history points.
    history: HashMap<String, VecDeque<f64>>,
    /// Per variable at or above the alert band, since when (ms) and whether its alert
    /// went out.
    above: HashMap<String, (u64, bool)>,
    alerts: VecDeque<MonitoringAlert>,
}

/// The detector's drift monitor, shared by the scorer, its task and the API.
#[derive(Debug)]
pub struct Monitor {
    config: MonitoringConfig,
    counting: Mutex<Counting>,
    state: Mutex<State>,
    quality: Mutex<quality::Quality>,
}

/// One variable in the document: its drift and its recent PSI.
#[derive(Debug, Clone, Serialize)]
pub struct VariableReport {
    /// The drift.
    #[serde(flatten)]
    pub drift: VariableDrift,
    /// Its window PSI at the last history points, oldest first.
    pub history: Vec<f64>,
    /// Since when (ms since the epoch) it has been at or above the alert band.
    pub above_band_since_ms: Option<u64>,
}

/// `GET /v1/monitoring`: the drift state in one document.
#[derive(Debug, Clone, Serialize)]
pub struct MonitoringDocument {
    /// `ok`, `disabled`, `no_model_yet` (nothing scored yet) or `no_reference` (the
    /// serving model's manifest records none).
    pub status: &'static str,
    /// The serving model version counted.
    pub model_version: Option<String>,
    /// The window: `{"rows": N}` or `{"span_ms": N}`.
    pub window: serde_json::Value,
    /// Transactions in the window.
    pub window_rows: u64,
    /// Transactions counted since the model went live.
    pub rows_since_live: u64,
    /// The PSI bands.
    pub bands: Bands,
    /// Every monitored feature, in the model's order.
    pub features: Vec<VariableReport>,
    /// The score.
    pub score: Option<VariableReport>,
    /// The features and the score by window PSI, worst first (names).
    pub top: Vec<String>,
    /// The latest monitoring alerts (drift, quality drops), newest last.
    pub alerts: Vec<MonitoringAlert>,
    /// Quality as the labels arrive, per model version (newest first); empty without
    /// labels (`velocity.labels_path` or `velocity.labels_topic`).
    pub quality: Vec<quality::VersionQuality>,
}

/// The bands, as the document shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Bands {
    /// PSI from which drift is moderate.
    pub moderate: f64,
    /// PSI from which it is significant.
    pub significant: f64,
    /// The band that raises an alert.
    pub alert: String,
    /// How long a variable stays in it before the alert (ms).
    pub alert_after_ms: u64,
}

fn now_ms() -> u64 {
    u64::try_from(crate::clock::now_ms()).unwrap_or(0)
}

impl Monitor {
    /// A monitor with `config`.
    #[must_use]
    pub fn new(config: MonitoringConfig) -> Self {
        Self {
            config,
            counting: Mutex::new(Counting::Nothing),
            state: Mutex::new(State::default()),
            quality: Mutex::new(quality::Quality::default()),
        }
    }

    /// A verdict of `version` (its score, whether it was flagged) joined with its label.
    pub fn labelled(&self, version: &str, score: f32, flagged: bool, fraud: bool) {
        if self.config.enabled {
            lock(&self.quality).labelled(version, score, flagged, fraud, now_ms());
        }
    }

    /// Count a scored batch: `x` is its feature matrix in `model`'s order, `scores` its
    /// scores. A new serving version starts the counts over, against its own reference.
    pub fn observe(&self, model: &Model, x: &[f32], scores: &[f32], flagged: u64) {
        if !self.config.enabled {
            return;
        }
        let now = now_ms();
        lock(&self.quality).served(model.version(), scores.len() as u64, flagged, now);
        let mut counting = lock(&self.counting);
        let current = match &*counting {
            Counting::Nothing => None,
            Counting::NoReference(v) => Some(v.as_str()),
            Counting::Live(l) => Some(l.version()),
        };
        if current != Some(model.version()) {
            let features = &model.meta().features;
            let unknown: Vec<&String> = self
                .config
                .skip
                .iter()
                .filter(|f| !features.contains(f))
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(version = model.version(), skip = ?unknown, "monitoring.skip names features the serving model does not use: ignored");
            }
            *counting = match model.reference() {
                Some(r) => Counting::Live(Box::new(LiveDrift::new(
                    model.version_arc(),
                    r.clone(),
                    self.config.live_window(),
                    &self.config.skip,
                    now,
                ))),
                None => {
                    tracing::warn!(
                        version = model.version(),
                        "monitoring: the serving model's manifest records no reference distributions (trained by an older release): no drift is measured"
                    );
                    Counting::NoReference(model.version().to_owned())
                }
            };
        }
        if let Counting::Live(live) = &mut *counting {
            live.observe(x, scores, now);
        }
    }

    /// Compute the drift now: export it, record history, and return the drift alerts
    /// due.
    pub fn tick(&self) -> Vec<MonitoringAlert> {
        let now = now_ms();
        let snapshot = match &mut *lock(&self.counting) {
            Counting::Live(live) => {
                Some(live.snapshot(&self.config.bands(), self.config.min_rows, now))
            }
            _ => None,
        };
        let mut due: Vec<MonitoringAlert> = self.quality_alerts(now);
        let mut state = lock(&self.state);
        state.ticks += 1;
        let Some(snapshot) = snapshot else {
            state.last = None;
            keep(&mut state.alerts, &due);
            return due;
        };
        if state
            .last
            .as_ref()
            .is_some_and(|l| l.version != snapshot.version)
        {
            state.history.clear();
            state.above.clear();
        }
        let sample = state.ticks % HISTORY_EVERY == 1;
        let alert_at = self.config.alert_state();
        let after = self.config.alert_after.as_millis() as u64;
        for v in snapshot.features.iter().chain(&snapshot.score) {
            export(v);
            if sample {
                let h = state.history.entry(v.name.clone()).or_default();
                if h.len() == HISTORY {
                    h.pop_front();
                }
                h.push_back(v.psi);
            }
            if v.state.is_some_and(|s| s >= alert_at) {
                let (since, sent) = state.above.entry(v.name.clone()).or_insert((now, false));
                if !*sent && now.saturating_sub(*since) >= after {
                    *sent = true;
                    due.push(self.alert(&snapshot.version, v, *since, now));
                }
            } else if v.state.is_some() {
                state.above.remove(&v.name);
            }
        }
        keep(&mut state.alerts, &due);
        state.last = Some(snapshot);
        due
    }

    /// Export the quality of the newest version, and turn the error-rate alarms into
    /// `quality_drop` alerts.
    fn quality_alerts(&self, now: u64) -> Vec<MonitoringAlert> {
        let mut q = lock(&self.quality);
        // (The AUPRC sorts up to 20,000 pairs: only when a label came.)
        if std::mem::take(&mut q.changed)
            && let Some(v) = q.report().first()
        {
            let version = v.version.clone();
            let set = |name: &'static str, x: Option<f64>| {
                if let Some(x) = x {
                    metrics::gauge!(name, "version" => version.clone()).set(x);
                }
            };
            set(names::QUALITY_PRECISION, v.precision);
            set(names::QUALITY_RECALL, v.recall);
            set(names::QUALITY_AUPRC, v.auprc);
            set(names::QUALITY_UNLABELLED, v.unlabelled);
        }
        if let Some((version, Some(at))) = q.newest_label() {
            metrics::gauge!(names::QUALITY_LABEL_AGE, "version" => version.to_owned())
                .set(now.saturating_sub(at) as f64 / 1000.0);
        }
        std::mem::take(&mut q.alarms)
            .into_iter()
            .map(|(version, rate)| MonitoringAlert {
                kind: "quality_drop".into(),
                key: format!("quality_drop:{version}:{now}"),
                model_version: version.clone(),
                variable: None,
                value: rate,
                state: "significant".into(),
                since_ms: now,
                at_ms: now,
                message: format!(
                    "the error rate of model {version} on labelled verdicts has risen (Page-Hinkley test; {:.2}% errors overall)",
                    rate * 100.0
                ),
            })
            .collect()
    }

    fn alert(&self, version: &str, v: &VariableDrift, since: u64, now: u64) -> MonitoringAlert {
        let state = v.state.unwrap_or(DriftState::Significant).as_str();
        MonitoringAlert {
            kind: "drift".into(),
            key: format!("drift:{version}:{}:{since}", v.name),
            model_version: version.to_owned(),
            variable: Some(v.name.clone()),
            value: v.psi,
            state: state.into(),
            since_ms: since,
            at_ms: now,
            message: format!(
                "{} has drifted from the data model {version} was trained on: PSI {:.3} over the window ({state}), {:.1}% of values out of the training range, for {}s",
                v.name,
                v.psi,
                v.out_of_range * 100.0,
                now.saturating_sub(since) / 1000
            ),
        }
    }

    /// The drift state in one document.
    #[must_use]
    pub fn document(&self) -> MonitoringDocument {
        let (status, version) = if self.config.enabled {
            match &*lock(&self.counting) {
                Counting::Nothing => ("no_model_yet", None),
                Counting::NoReference(v) => ("no_reference", Some(v.clone())),
                Counting::Live(l) => ("ok", Some(l.version().to_owned())),
            }
        } else {
            ("disabled", None)
        };
        let state = lock(&self.state);
        let report = |v: &VariableDrift| VariableReport {
            drift: v.clone(),
            history: state
                .history
                .get(&v.name)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default(),
            above_band_since_ms: state.above.get(&v.name).map(|&(since, _)| since),
        };
        let last = state
            .last
            .as_ref()
            .filter(|l| status == "ok" && version.as_deref() == Some(l.version.as_str()));
        let window = match self.config.live_window() {
            crate::monitor::Window::Rows(n) => serde_json::json!({ "rows": n }),
            crate::monitor::Window::Span(ms) => serde_json::json!({ "span_ms": ms }),
        };
        MonitoringDocument {
            status,
            model_version: version,
            window,
            window_rows: last.map_or(0, |l| l.window_rows),
            rows_since_live: last.map_or(0, |l| l.rows_since_live),
            bands: Bands {
                moderate: self.config.moderate,
                significant: self.config.significant,
                alert: self.config.alert_band.clone(),
                alert_after_ms: self.config.alert_after.as_millis() as u64,
            },
            features: last.map_or_else(Vec::new, |l| l.features.iter().map(report).collect()),
            score: last.and_then(|l| l.score.as_ref().map(report)),
            top: last.map_or_else(Vec::new, |l| {
                l.ranked().iter().map(|v| v.name.clone()).collect()
            }),
            alerts: state.alerts.iter().cloned().collect(),
            quality: lock(&self.quality).report(),
        }
    }

    /// Tick every `monitoring.interval` until `stop` (and once more then, so that a run
    /// over a file ends with its drift judged), sending drift alerts to `sinks` (each
    /// tried a few times; a sink that stays down is logged, the alert stays in the
    /// document).
    pub async fn run(
        self: Arc<Self>,
        sinks: Arc<Vec<Arc<dyn AlertSink>>>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            for alert in self.tick() {
                tracing::warn!(key = %alert.key, kind = %alert.kind, "{}", alert.message);
                metrics::counter!(names::MONITORING_ALERTS, "kind" => alert.kind.clone())
                    .increment(1);
                for sink in sinks.iter() {
                    let policy = crate::retry::RetryPolicy {
                        max_attempts: 5,
                        base_delay: std::time::Duration::from_millis(200),
                        max_delay: std::time::Duration::from_secs(5),
                    };
                    if let Err(e) =
                        crate::retry::retry(policy, "drift alert", || sink.send_monitoring(&alert))
                            .await
                    {
                        tracing::error!(sink = %sink.describe(), error = %e, key = %alert.key, "drift alert not delivered");
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// Add `due` to the kept alerts.
fn keep(kept: &mut VecDeque<MonitoringAlert>, due: &[MonitoringAlert]) {
    for a in due {
        if kept.len() == ALERTS_KEPT {
            kept.pop_front();
        }
        kept.push_back(a.clone());
    }
}

/// Export one variable's drift.
fn export(v: &VariableDrift) {
    if v.name == "score" {
        metrics::gauge!(names::SCORE_PSI).set(v.psi);
    } else {
        metrics::gauge!(names::FEATURE_PSI, "feature" => v.name.clone()).set(v.psi);
    }
    if let Some(s) = v.state {
        metrics::gauge!(names::DRIFT_STATE, "feature" => v.name.clone()).set(s.level());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
