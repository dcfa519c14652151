//! The HTTP API and dashboard, one axum server per process (`api.address`, loopback by
//! default), on the detector's runtime.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/score` | [`score`]: synchronous scoring, `?record=true` to record |
//! | `GET /v1/verdicts/{tx_id}` | a verdict from the verdict store |
//! | `GET /v1/models`, `GET /v1/models/{version}` | the model store |
//! | `POST /v1/models/{version}/promote`, `POST /v1/models/rollback` | with `api.admin` |
//! | `GET /v1/rules`, `POST /v1/rules/{v}/activate`, `POST /v1/rules/{v}/backtest` | [`rules`]: rule sets (changes with `api.admin`) |
//! | `GET /v1/lists`, `GET /v1/lists/{name}`, `PUT`/`DELETE /v1/lists/{name}/{value}` | value lists (changes with `api.admin`) |
//! | `GET /v1/alerts`, `GET /v1/alerts/stream` | recent alerts; live, as server-sent events |
//! | `GET /v1/stats`, `GET /v1/events` | live figures; with alerts, as server-sent events |
//! | `GET /metrics`, `/healthz`, `/readyz` | Prometheus, liveness, readiness |
//! | `GET /v1/openapi.json` | the OpenAPI document, generated from the handlers |
//! | `GET /` | the dashboard |
//!
//! Every request passes, in order: bearer-token authentication (when `api.tokens` is
//! set; not for `/healthz`, `/readyz` and the page itself), for a POST the cross-site
//! refusal (it must be `application/json`, and its `Origin` and `Sec-Fetch-Site`, when
//! sent, this server's own: 415 or 403 `cross_site`), the concurrency limit
//! (`api.concurrency`; beyond it 429 with `Retry-After`) and the request timeout
//! (`api.request_timeout`; event streams are exempt from both, and capped by
//! `api.max_event_streams` instead; a backtest, which reads the whole lake, from the
//! timeout). Errors are JSON ([`error::ErrorBody`]), axum's
//! extractor rejections and wrong methods included ([`extract`]).
//!
//! - [`config`]: `[api]`. [`error`]: error answers. [`extract`]: query and path
//!   extractors that answer in JSON. [`score`]: scoring. [`routes`]: the other
//!   resources. [`events`]: figures and event streams. [`dashboard`]: the page.
//!   [`openapi`]: the document.

pub mod config;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod rules;
pub mod score;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use config::ApiConfig;
use error::ApiError;

use crate::detector::Handles;
use crate::metric_names as names;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The detector's state, once it is built (503 before).
    pub handles: Arc<OnceLock<Handles>>,
    /// Whether the detector is running.
    pub ready: watch::Receiver<bool>,
    /// The Prometheus recorder.
    pub metrics: PrometheusHandle,
    /// `[api]`.
    pub config: Arc<ApiConfig>,
    /// Contributions per verdict (`scoring.top_k`).
    pub top_k: usize,
    /// Verdict expiry (`verdicts.ttl_seconds`).
    pub ttl_seconds: Option<u64>,
    /// Requests in flight.
    pub limiter: Arc<Semaphore>,
    /// Event streams open (`api.max_event_streams`).
    pub streams: Arc<Semaphore>,
    /// When the server started.
    pub started: Instant,
    /// The sampler's latest figures.
    pub live: watch::Receiver<Arc<events::Snapshot>>,
}

impl AppState {
    /// The detector's state, or 503 while it is not ready.
    pub fn ready(&self) -> Result<&Handles, ApiError> {
        match self.handles.get() {
            Some(h) if *self.ready.borrow() => Ok(h),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the detector is starting or stopping",
            )
            .retry_after(1)),
        }
    }

    /// The detector's state once built, ready or not (for read-only views).
    pub fn built(&self) -> Result<&Handles, ApiError> {
        self.handles.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the detector is starting",
            )
            .retry_after(1)
        })
    }
}

/// Read a request body of at most `limit` bytes (413 beyond).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over the limit of {limit} bytes (api.max_body_bytes)"),
        )
    })
}

/// The router, with every route and middleware.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/score", post(score::score))
        .route("/v1/verdicts/{tx_id}", get(routes::verdict))
        .route("/v1/models", get(routes::models))
        .route("/v1/models/rollback", post(routes::rollback))
        .route("/v1/models/{version}", get(routes::model))
        .route("/v1/models/{version}/promote", post(routes::promote))
        .route("/v1/rules", get(rules::rules))
        .route("/v1/rules/{version}/activate", post(rules::activate))
        .route("/v1/rules/{version}/backtest", post(rules::backtest))
        .route("/v1/lists", get(rules::lists))
        .route("/v1/lists/{name}", get(rules::list))
        .route("/v1/lists/{name}/{value}", put(rules::add))
        .route("/v1/lists/{name}/{value}", delete(rules::remove))
        .route("/v1/alerts", get(routes::alerts))
        .route("/v1/alerts/stream", get(events::alert_stream))
        .route("/v1/stats", get(events::stats))
        .route("/v1/monitoring", get(routes::monitoring))
        .route("/v1/events", get(events::events))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/metrics", get(routes::metrics))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/", get(dashboard::page));
    api.layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn(observe))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see /v1/openapi.json)",
            )
        })
        .with_state(state)
}

/// Routes open without a token: health checks and the page (which asks for one).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/")
}

/// Long-lived event streams: no timeout, no concurrency permit.
fn is_stream(path: &str) -> bool {
    matches!(path, "/v1/events" | "/v1/alerts/stream")
}

/// A backtest reads the whole lake: it holds a permit, and `api.request_timeout` does
/// not cut it short.
fn is_long(path: &str) -> bool {
    path.starts_with("/v1/rules/") && path.ends_with("/backtest")
}

/// Authentication, cross-site refusal, the concurrency limit and the timeout.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !state.config.tokens.is_empty() && !is_public(&path) && !authorized(&state, &req) {
        return axum::response::IntoResponse::into_response(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer <token>)",
            )
            .field("Authorization"),
        );
    }
    if !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && let Err(e) = same_origin_json(&req)
    {
        return axum::response::IntoResponse::into_response(e);
    }
    if is_stream(&path) || is_public(&path) {
        return next.run(req).await;
    }
    let Ok(_permit) = state.limiter.clone().try_acquire_owned() else {
        // Read the body away first (up to the usual limit): the client gets its 429 and
        // the connection stays usable, instead of a reset while it is still sending.
        let _discarded = axum::body::to_bytes(req.into_body(), state.config.max_body_bytes).await;
        return axum::response::IntoResponse::into_response(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "{} requests in flight (api.concurrency); try again shortly",
                    state.config.concurrency
                ),
            )
            .retry_after(1),
        );
    };
    if is_long(&path) {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => axum::response::IntoResponse::into_response(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "no answer within {:?} (api.request_timeout)",
                    state.config.request_timeout
                ),
            )
            .retry_after(1),
        ),
    }
}

/// Every state-changing request (the POST routes: scoring with `record=true`, promote,
/// rollback, rules; and the lists' PUT and DELETE) must be same-origin, and a POST
/// `application/json`, so a web page the operator has
/// open cannot make the browser send one (issue 22: a `text/plain` POST from another
/// origin moved `LATEST`). A browser sends JSON to another origin only after a CORS
/// preflight, which this server never grants; and it names the page's origin in
/// `Origin` and `Sec-Fetch-Site`, which must be this server's own.
fn same_origin_json(req: &Request) -> Result<(), ApiError> {
    use axum::http::header;
    let headers = req.headers();
    let cross = |why: String| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!("{why}: state-changing requests must come from this server's own origin"),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && matches!(site, "cross-site" | "same-site")
    {
        return cross(format!("Sec-Fetch-Site is {site}"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let authority = origin
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .trim_end_matches('/');
        if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return cross(format!("Origin {origin} is not this server ({host})"));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    // A PUT or DELETE (the lists) carries no body, and a browser never sends either to
    // another origin without a preflight: only the origin is checked for them.
    if !json && req.method() == axum::http::Method::POST {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (Content-Type: application/json)",
        )
        .field("Content-Type"));
    }
    Ok(())
}

/// A bearer token from the `Authorization` header, or `access_token` in the query (for
/// `EventSource`, which cannot set headers; percent-decoded, as a browser encodes it),
/// matching one of `api.tokens`.
fn authorized(state: &AppState, req: &Request) -> bool {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let Some(given) = header.or(query) else {
        return false;
    };
    state
        .config
        .tokens
        .iter()
        .any(|t| constant_time_eq(t.expose().as_bytes(), given.as_bytes()))
}

/// Compare without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The routes, as metric labels (static strings: no allocation per request).
const ROUTE_LABELS: [&str; 15] = [
    "/v1/score",
    "/v1/verdicts/{tx_id}",
    "/v1/models",
    "/v1/models/rollback",
    "/v1/models/{version}",
    "/v1/models/{version}/promote",
    "/v1/alerts",
    "/v1/alerts/stream",
    "/v1/stats",
    "/v1/events",
    "/v1/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/",
];

/// Status codes as metric labels.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Count and time every request by route and status.
async fn observe(req: Request, next: Next) -> Response {
    let route: &'static str = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| ROUTE_LABELS.iter().find(|r| **r == m.as_str()))
        .copied()
        .unwrap_or("other");
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::counter!(names::API_REQUESTS, "route" => route, "status" => status_label(resp.status()))
        .increment(1);
    metrics::histogram!(names::API_REQUEST_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Set once the detector is built.
    pub handles: Arc<OnceLock<Handles>>,
    /// Whether the detector is running.
    pub ready: watch::Sender<bool>,
}

/// Why the API server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::RecorderError),
    /// `api.address` cannot be bound.
    #[error("api.address {address}: {source}")]
    Bind {
        /// The address configured.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Bind `config.address` and serve until `stop` is cancelled. The server answers at once
/// (health, and 503 "not ready" elsewhere) and serves the detector once `handles` is set.
pub async fn start(
    config: &ApiConfig,
    top_k: usize,
    ttl_seconds: Option<u64>,
    tasks: &mut crate::tasks::Tasks,
) -> Result<Server, StartError> {
    let stop = tasks.stop_token();
    let metrics = crate::telemetry::recorder()?;
    let bind = |e: std::io::Error| StartError::Bind {
        address: config.address.clone(),
        source: e,
    };
    let listener = TcpListener::bind(&config.address).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let (ready_tx, ready) = watch::channel(false);
    let handles = Arc::new(OnceLock::new());
    let live = events::spawn_sampler(handles.clone(), ready.clone(), tasks);
    let state = AppState {
        live,
        handles: handles.clone(),
        ready,
        metrics,
        config: Arc::new(config.clone()),
        top_k,
        ttl_seconds,
        limiter: Arc::new(Semaphore::new(config.concurrency)),
        streams: Arc::new(Semaphore::new(config.max_event_streams)),
        started: Instant::now(),
    };
    let app = router(state);
    tasks.spawn_fallible("api_server", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(|e| format!("the API server stopped: {e}"))
    });
    tracing::info!(%addr, "serving the API, the dashboard and /metrics");
    Ok(Server {
        addr,
        handles,
        ready: ready_tx,
    })
}

/// How often the event stream sends figures.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_the_whole_token() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
