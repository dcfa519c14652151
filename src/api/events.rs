//! Live figures and event streams. One sampler per server reads the detector's totals
//! every [`super::STATS_EVERY`] and keeps the last few minutes: rates and latency
//! percentiles over each interval, consumer lag, the serving model. `GET /v1/stats`
//! returns them; `GET /v1/events` streams them (`stats` events) with every alert (`alert`
//! events); `GET /v1/alerts/stream` streams alerts only.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::detector::Handles;
use crate::registry::decisions::CountsSnapshot;
use crate::stream::stats::{self, LatencyHistogram};

/// Seconds of history kept for the charts.
const HISTORY: usize = 300;

/// One interval's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// Unix milliseconds at the end of the interval.
    pub at_ms: i64,
    /// Transactions scored per second.
    pub scored_per_second: f64,
    /// Messages read per second.
    pub read_per_second: f64,
    /// Read-to-durable latency over the interval, milliseconds: p50.
    pub latency_p50_ms: f64,
    /// p99.
    pub latency_p99_ms: f64,
    /// Consumer lag, when the source is Kafka.
    pub consumer_lag: Option<i64>,
}

/// The serving model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ServingModel {
    /// Version.
    pub version: String,
    /// When it was trained (RFC 3339).
    pub created_at: String,
    /// Seconds since then.
    pub age_seconds: f64,
    /// Its headline AUPRC (holdout, else out-of-bag).
    pub auprc: Option<f64>,
    /// Its threshold.
    pub threshold: f64,
}

/// The served verdicts against the labels received (entity features' labels source).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct OnlineLabels {
    /// Fraud verdicts on frauds.
    pub tp: u64,
    /// Fraud verdicts on legitimate transactions.
    pub fp: u64,
    /// Legitimate verdicts on frauds.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Legitimate verdicts on legitimate transactions.
    pub tn: u64,
    /// Labels with no verdict remembered (yet).
    pub unmatched: u64,
    /// Precision so far.
    pub precision: Option<f64>,
    /// Recall so far.
    pub recall: Option<f64>,
}

/// One rule's figures over the last five minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct RuleRate {
    /// The rule.
    pub name: String,
    /// `allow`, `review` or `block`.
    pub action: String,
    /// Its source text.
    pub text: String,
    /// Verdicts it matched in the window.
    pub matches: u64,
    /// Of the verdicts decided in the window, the share it matched.
    pub match_rate: f64,
}

/// The decisions over the last five minutes (or since start, when shorter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct DecisionView {
    /// The active rule set (none: the model's rule alone).
    pub rule_set: Option<String>,
    /// Its mode.
    pub mode: Option<String>,
    /// Seconds the window covers.
    pub window_seconds: f64,
    /// Outcomes in the window: approve.
    pub approve: u64,
    /// Review.
    pub review: u64,
    /// Block.
    pub block: u64,
    /// Each active rule, in file order.
    pub rules: Vec<RuleRate>,
}

/// Seconds of decision counts kept for the rates.
const DECISION_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

fn decision_view(
    h: &Handles,
    counts: &VecDeque<(Instant, CountsSnapshot)>,
    now: &CountsSnapshot,
) -> DecisionView {
    let decider = h.decisions.decider.load();
    let (at, first) = counts
        .front()
        .map_or((Instant::now(), now), |(t, c)| (*t, c));
    let outcomes: [u64; 3] = [0, 1, 2].map(|i| now.outcomes[i] - first.outcomes[i]);
    let decided: u64 = outcomes.iter().sum();
    let rules = decider.rules.as_ref().map_or_else(Vec::new, |r| {
        (0..r.set.len())
            .map(|i| {
                let name = r.set.name(i);
                let matches = now.rules.get(name).copied().unwrap_or(0)
                    - first.rules.get(name).copied().unwrap_or(0);
                RuleRate {
                    name: name.to_string(),
                    action: r.set.action(i).to_string(),
                    text: r.set.text(i).to_owned(),
                    matches,
                    match_rate: if decided == 0 {
                        0.0
                    } else {
                        matches as f64 / decided as f64
                    },
                }
            })
            .collect()
    });
    DecisionView {
        rule_set: decider.version().map(ToString::to_string),
        mode: decider.rules.as_ref().map(|r| r.set.mode().to_string()),
        window_seconds: at.elapsed().as_secs_f64(),
        approve: outcomes[0],
        review: outcomes[1],
        block: outcomes[2],
        rules,
    }
}

/// The figures now and the last few minutes of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Snapshot {
    /// Whether the detector is running.
    pub ready: bool,
    /// Seconds since the server started.
    pub uptime_seconds: f64,
    /// Totals since start: messages read.
    pub read: u64,
    /// Transactions scored.
    pub scored: u64,
    /// Fraud verdicts.
    pub flagged: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Latency over the whole run, milliseconds: p50, p99, p999.
    pub latency_ms: [f64; 3],
    /// The last interval.
    pub now: Point,
    /// The serving model.
    pub model: ServingModel,
    /// Alerts raised since start.
    pub alerts: u64,
    /// The last intervals, oldest first.
    pub history: Vec<Point>,
    /// Online precision and recall, when labels arrive (`velocity.labels_path`).
    pub labels: Option<OnlineLabels>,
    /// Outcomes and rule matches over the last five minutes.
    pub decisions: DecisionView,
}

/// Sample the detector every interval into a watch channel, until `stop`.
pub fn spawn_sampler(
    handles: Arc<OnceLock<Handles>>,
    ready: watch::Receiver<bool>,
    tasks: &mut crate::tasks::Tasks,
) -> watch::Receiver<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let mut ready = ready;
    let stop = tasks.stop_token();
    tasks.spawn("api_sampler", async move {
        let started = Instant::now();
        // Sample as soon as the detector is built, then every interval.
        while handles.get().is_none() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
        let mut tick = tokio::time::interval(super::STATS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history: VecDeque<Point> = VecDeque::with_capacity(HISTORY);
        let mut counts: VecDeque<(Instant, CountsSnapshot)> = VecDeque::new();
        let mut last: Option<(Instant, u64, u64, LatencyHistogram)> = None;
        loop {
            // Every interval, and at once when the detector starts or stops running.
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
                changed = ready.changed() => if changed.is_err() { return },
            }
            let Some(h) = handles.get() else { continue };
            let (read, scored, flagged, dead, lag, latency, overall) = {
                let s = stats::lock(&h.stats);
                (
                    s.read,
                    s.scored,
                    s.flagged,
                    s.dead_letters,
                    s.consumer_lag,
                    s.latency.clone(),
                    s.latency_percentiles(),
                )
            };
            let now = Instant::now();
            let point = match &last {
                Some((t, r0, s0, l0)) => {
                    let secs = now.duration_since(*t).as_secs_f64().max(1e-3);
                    let window = latency.since(l0);
                    Point {
                        at_ms: crate::clock::now_ms(),
                        scored_per_second: (scored - s0) as f64 / secs,
                        read_per_second: (read - r0) as f64 / secs,
                        latency_p50_ms: window.quantile(0.5),
                        latency_p99_ms: window.quantile(0.99),
                        consumer_lag: lag,
                    }
                }
                None => Point {
                    at_ms: crate::clock::now_ms(),
                    consumer_lag: lag,
                    ..Point::default()
                },
            };
            last = Some((now, read, scored, latency));
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(point.clone());
            let decided = h.decisions.counts.snapshot();
            while counts
                .front()
                .is_some_and(|(t, _)| t.elapsed() > DECISION_WINDOW)
            {
                counts.pop_front();
            }
            let decisions = decision_view(h, &counts, &decided);
            counts.push_back((Instant::now(), decided));
            let m = h.model.load();
            let meta = m.meta();
            let age = humantime::parse_rfc3339(&meta.created_at)
                .ok()
                .and_then(|c| std::time::SystemTime::now().duration_since(c).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            let snapshot = Snapshot {
                ready: *ready.borrow(),
                uptime_seconds: started.elapsed().as_secs_f64(),
                read,
                scored,
                flagged,
                dead_letters: dead,
                latency_ms: overall,
                now: point,
                model: ServingModel {
                    version: meta.version.clone(),
                    created_at: meta.created_at.clone(),
                    age_seconds: age,
                    auprc: meta.headline_metrics().and_then(|(_, x)| x.auprc),
                    threshold: meta.threshold,
                },
                alerts: h.alerts.total(),
                history: history.iter().cloned().collect(),
                labels: h.velocity.as_ref().map(|v| {
                    let c = v.confusion();
                    OnlineLabels {
                        tp: c.tp,
                        fp: c.fp,
                        fn_: c.fn_,
                        tn: c.tn,
                        unmatched: c.unmatched,
                        precision: c.precision(),
                        recall: c.recall(),
                    }
                }),
                decisions,
            };
            if tx.send(Arc::new(snapshot)).is_err() {
                return; // the server is gone
            }
        }
    });
    rx
}

/// The detector's figures now, with the last few minutes of history.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "operations",
    responses(
        (status = 200, description = "Totals, rates, latency, lag and the serving model", body = Snapshot),
        (status = 503, description = "Starting", body = ErrorBody)
    )
)]
pub async fn stats(State(state): State<AppState>) -> Result<axum::Json<Snapshot>, ApiError> {
    state.built()?;
    Ok(axum::Json((*state.live.borrow()).as_ref().clone()))
}

fn json_event(kind: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// Figures (`stats`, every second) and alerts (`alert`) as server-sent events.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "operations",
    responses(
        (status = 200, description = "`stats` events with a Snapshot, `alert` events with an alert", content_type = "text/event-stream"),
        (status = 503, description = "Starting, or `api.max_event_streams` streams open", body = ErrorBody)
    )
)]
pub async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let handles = state.built()?;
    let permit = stream_permit(&state)?;
    let alerts = handles.alerts.subscribe();
    let live = state.live.clone();
    let first = (*live.borrow()).clone();
    let stream = futures_util::stream::unfold(
        (Some(first), live, alerts, permit),
        |(first, mut live, mut alerts, permit)| async move {
            if let Some(s) = first {
                return Some((Ok(json_event("stats", &*s)), (None, live, alerts, permit)));
            }
            loop {
                tokio::select! {
                    changed = live.changed() => {
                        changed.ok()?;
                        let s = live.borrow_and_update().clone();
                        return Some((Ok(json_event("stats", &*s)), (None, live, alerts, permit)));
                    }
                    a = alerts.recv() => match a {
                        Ok(a) => return Some((Ok(json_event("alert", &a)), (None, live, alerts, permit))),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A place among the open event streams (released when the stream ends), or 503.
fn stream_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "{} event streams are open (api.max_event_streams); try again later",
                state.config.max_event_streams
            ),
        )
        .retry_after(5)
    })
}

/// Alerts as server-sent events (`alert`), as they are raised.
#[utoipa::path(
    get,
    path = "/v1/alerts/stream",
    tag = "alerts",
    responses(
        (status = 200, description = "`alert` events", content_type = "text/event-stream"),
        (status = 503, description = "Starting, or `api.max_event_streams` streams open", body = ErrorBody)
    )
)]
pub async fn alert_stream(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let handles = state.built()?;
    let permit = stream_permit(&state)?;
    let stream = futures_util::stream::unfold(
        (handles.alerts.subscribe(), permit),
        |(mut rx, permit)| async move {
            loop {
                match rx.recv().await {
                    Ok(a) => return Some((Ok(json_event("alert", &a)), (rx, permit))),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
