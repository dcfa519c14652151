//! The API's resources besides scoring: verdicts, models, alerts, health and metrics.

// utoipa's `params(...)` expands to fully qualified paths.
#![allow(unused_qualifications)]

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use crate::registry::{Manifest, MoveError, Moved, RegistryError};
use crate::retry::Retryable;
use crate::schema::check_id;
use crate::sinks::alerts::RecentAlert;

/// One feature's stored contribution.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredContribution {
    /// Feature name.
    pub feature: String,
    /// Signed contribution to the fraud probability.
    pub contribution: f32,
}

/// A stored verdict.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerdictOut {
    /// Transaction id.
    pub tx_id: String,
    /// Fraud probability.
    pub score: f32,
    /// `score >= threshold`.
    pub fraud: bool,
    /// The threshold applied.
    pub threshold: f64,
    /// The model version that scored it.
    pub model_version: String,
    /// When (RFC 3339, UTC).
    pub scored_at: String,
    /// The largest contributions.
    pub top_features: Vec<StoredContribution>,
    /// Expiry, Unix seconds.
    pub ttl: Option<i64>,
    /// `approve`, `review` or `block`.
    pub outcome: String,
    /// What decided: a rule's name, `model` or `model_only`.
    pub decided_by: String,
    /// The rules that matched.
    pub rules: Vec<String>,
    /// The rule set that decided, when one was active.
    pub rule_set: Option<String>,
}

/// A verdict by transaction id.
#[utoipa::path(
    get,
    path = "/v1/verdicts/{tx_id}",
    tag = "verdicts",
    params(("tx_id" = String, Path, description = "Transaction id")),
    responses(
        (status = 200, description = "The verdict", body = VerdictOut),
        (status = 400, description = "Not a valid id", body = ErrorBody),
        (status = 404, description = "No verdict for this id", body = ErrorBody),
        (status = 503, description = "The verdict store is unavailable", body = ErrorBody)
    )
)]
pub async fn verdict(
    State(state): State<AppState>,
    ApiPath(tx_id): ApiPath<String>,
) -> Result<axum::Json<VerdictOut>, ApiError> {
    let handles = state.built()?;
    check_id(&tx_id).map_err(|k| ApiError::invalid(&k, None).field("tx_id"))?;
    match handles.verdicts.get(&tx_id).await {
        Ok(Some(v)) => Ok(axum::Json(VerdictOut {
            tx_id: v.tx_id,
            score: v.score,
            fraud: v.fraud,
            threshold: v.threshold,
            model_version: v.model_version.to_string(),
            scored_at: v.scored_at.to_string(),
            top_features: v
                .top_features
                .into_iter()
                .map(|c| StoredContribution {
                    feature: c.feature.to_string(),
                    contribution: c.contribution,
                })
                .collect(),
            ttl: v.ttl,
            outcome: v.outcome.to_string(),
            decided_by: v.decided_by.to_string(),
            rules: v.rules.iter().map(ToString::to_string).collect(),
            rule_set: v.rule_set.as_deref().map(str::to_owned),
        })),
        Ok(None) => Err(ApiError::not_found(format!("no verdict for {tx_id:?}")).field("tx_id")),
        Err(e) if e.is_retryable() => Err(ApiError::unavailable(format!("verdict store: {e}"))),
        Err(e) => Err(ApiError::internal(format!("verdict store: {e}"))),
    }
}

/// One stored version, summed up.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelSummary {
    /// Version.
    pub version: String,
    /// When it was trained.
    pub created_at: String,
    /// The version `LATEST` named when it was published.
    pub parent: Option<String>,
    /// Rows and frauds it trained on.
    pub train_rows: usize,
    /// Frauds among them.
    pub train_frauds: usize,
    /// Where its metrics were measured: `holdout` or `oob`.
    pub measured_on: Option<String>,
    /// Average precision there.
    pub auprc: Option<f64>,
    /// ROC-AUC there.
    pub roc_auc: Option<f64>,
    /// Recall at precision ≥ 0.90 there.
    pub recall_at_precision_90: Option<f64>,
    /// Its decision threshold.
    pub threshold: f64,
}

impl ModelSummary {
    fn of(m: &Manifest) -> Self {
        let headline = m.metadata.headline_metrics();
        Self {
            version: m.version.clone(),
            created_at: m.created_at.clone(),
            parent: m.parent.clone(),
            train_rows: m.metadata.train_rows,
            train_frauds: m.metadata.train_frauds,
            measured_on: headline.map(|(w, _)| w.to_owned()),
            auprc: headline.and_then(|(_, x)| x.auprc),
            roc_auc: headline.and_then(|(_, x)| x.roc_auc),
            recall_at_precision_90: headline.and_then(|(_, x)| x.recall_at_precision_90),
            threshold: m.metadata.threshold,
        }
    }
}

/// The model store's versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// The version `LATEST` names.
    pub latest: Option<String>,
    /// The version this process serves.
    pub serving: String,
    /// Whether promote and rollback are allowed here (`api.admin`).
    pub admin: bool,
    /// This page of versions, newest first (versions are named by their creation time).
    pub versions: Vec<ModelSummary>,
    /// The `after` of the next page, when there is one.
    pub next: Option<String>,
}

/// Query of `GET /v1/models`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ModelsQuery {
    /// Versions per page (1..=500, default 50).
    pub limit: Option<usize>,
    /// Only versions older than this one (the `next` of the previous page).
    pub after: Option<String>,
}

/// Manifests read at once for a page of `GET /v1/models`.
const MANIFEST_READS: usize = 16;

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::UnknownVersion(v) => {
            ApiError::not_found(format!("model version {v} is not in the store")).field("version")
        }
        RegistryError::Storage(s) if s.is_retryable() => {
            ApiError::unavailable(format!("model store: {s}"))
        }
        other => ApiError::internal(format!("model store: {other}")),
    }
}

/// The model store's versions, a page at a time, `LATEST`, and the serving version.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    params(ModelsQuery),
    responses(
        (status = 200, description = "A page of versions with their metrics", body = ModelList),
        (status = 400, description = "A bad limit", body = ErrorBody),
        (status = 503, description = "The model store is unavailable", body = ErrorBody)
    )
)]
pub async fn models(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ModelsQuery>,
) -> Result<axum::Json<ModelList>, ApiError> {
    use futures_util::stream::{self, StreamExt};
    let handles = state.built()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            "limit must be between 1 and 500",
        )
        .field("limit"));
    }
    let store = &handles.models;
    let latest = store.latest().await.map_err(registry_error)?;
    // One listing of the store, then the manifests of this page only, several at once.
    let mut names = store.list().await.map_err(registry_error)?;
    names.sort_unstable_by(|a, b| b.cmp(a));
    let start = q
        .after
        .as_deref()
        .map_or(0, |after| names.partition_point(|v| v.as_str() >= after));
    let page: Vec<String> = names.iter().skip(start).take(limit).cloned().collect();
    let next = (start + page.len() < names.len())
        .then(|| page.last().cloned())
        .flatten();
    let manifests: Vec<(String, Result<Manifest, RegistryError>)> = stream::iter(page)
        .map(|v| async move {
            let m = store.manifest(&v).await;
            (v, m)
        })
        .buffered(MANIFEST_READS)
        .collect()
        .await;
    let mut versions = Vec::with_capacity(manifests.len());
    for (v, m) in manifests {
        match m {
            Ok(m) => versions.push(ModelSummary::of(&m)),
            Err(e) => tracing::warn!(version = %v, error = %e, "unreadable manifest; left out"),
        }
    }
    Ok(axum::Json(ModelList {
        latest: latest.map(|l| l.version),
        serving: handles.model.load().version().to_owned(),
        admin: state.config.admin,
        versions,
        next,
    }))
}

/// A version's manifest.
#[utoipa::path(
    get,
    path = "/v1/models/{version}",
    tag = "models",
    params(("version" = String, Path, description = "Model version")),
    responses(
        (status = 200, description = "The manifest: checksum, features, metrics, lineage, canaries", body = serde_json::Value),
        (status = 404, description = "No such version", body = ErrorBody)
    )
)]
pub async fn model(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
) -> Result<axum::Json<Manifest>, ApiError> {
    let handles = state.built()?;
    handles
        .models
        .manifest(&version)
        .await
        .map(axum::Json)
        .map_err(registry_error)
}

fn move_result(r: Result<Moved, MoveError>) -> Result<axum::Json<Moved>, ApiError> {
    match r {
        Ok(m) => {
            tracing::warn!(from = ?m.from, to = %m.to, "LATEST moved through the API");
            Ok(axum::Json(m))
        }
        Err(MoveError::Rejected { version, reason }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            reason.reason(),
            format!("version {version} cannot serve: {reason}"),
        )
        .field("version")),
        Err(e @ (MoveError::Concurrent | MoveError::NoLatest(_) | MoveError::NoParent(_))) => Err(
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        ),
        Err(MoveError::Registry(e)) => Err(registry_error(e)),
    }
}

/// The body of a request that takes no arguments: empty, or a JSON object (`{}`).
pub(super) async fn no_arguments(state: &AppState, body: axum::body::Body) -> Result<(), ApiError> {
    let bytes = super::read_body(body, state.config.max_body_bytes).await?;
    if bytes.trim_ascii().is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be empty or a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON: {e}"),
        )),
    }
}

pub(super) fn require_admin(state: &AppState) -> Result<(), ApiError> {
    if state.config.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "changing models, rules and lists is off here (api.admin = false)",
        ))
    }
}

/// Serve a stored version: check it, then move `LATEST` to it (conditional write).
#[utoipa::path(
    post,
    path = "/v1/models/{version}/promote",
    tag = "models",
    params(("version" = String, Path, description = "Model version")),
    responses(
        (status = 200, description = "LATEST moved", body = Moved),
        (status = 400, description = "A body that is not empty or a JSON object", body = ErrorBody),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "The version fails its checks, or LATEST moved meanwhile", body = ErrorBody)
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
    body: axum::body::Body,
) -> Result<axum::Json<Moved>, ApiError> {
    require_admin(&state)?;
    no_arguments(&state, body).await?;
    let handles = state.built()?;
    handles
        .models
        .manifest(&version)
        .await
        .map_err(registry_error)?;
    move_result(handles.models.promote(&version).await)
}

/// Serve the current version's parent again.
#[utoipa::path(
    post,
    path = "/v1/models/rollback",
    tag = "models",
    responses(
        (status = 200, description = "LATEST moved", body = Moved),
        (status = 400, description = "A body that is not empty or a JSON object", body = ErrorBody),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 409, description = "No LATEST or no parent, or LATEST moved meanwhile", body = ErrorBody)
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    body: axum::body::Body,
) -> Result<axum::Json<Moved>, ApiError> {
    require_admin(&state)?;
    no_arguments(&state, body).await?;
    let handles = state.built()?;
    move_result(handles.models.rollback().await)
}

/// Query of `GET /v1/alerts`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertsQuery {
    /// At most this many (newest first; 1..=1000, default 100).
    pub limit: Option<usize>,
    /// Only alerts after this sequence number (the `seq` of the last one seen).
    pub since: Option<u64>,
}

/// Recent alerts from the in-memory ring, newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, description = "Alerts, newest first", body = Vec<serde_json::Value>),
        (status = 400, description = "A bad limit", body = ErrorBody)
    )
)]
pub async fn alerts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<axum::Json<Vec<RecentAlert>>, ApiError> {
    let handles = state.built()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            "limit must be between 1 and 1000",
        )
        .field("limit"));
    }
    Ok(axum::Json(
        handles.alerts.latest(limit, q.since.unwrap_or(0)),
    ))
}

/// Drift of the live data from the serving model's training data: per feature and for
/// the score, PSI and Jensen-Shannon distance over the window and since the model went
/// live, the share of missing and out-of-range values, the band, a short PSI history,
/// and the latest drift alerts.
#[utoipa::path(
    get,
    path = "/v1/monitoring",
    tag = "operations",
    responses(
        (status = 200, description = "The drift state (`status`: ok, disabled, no_model_yet, no_reference)", body = serde_json::Value),
        (status = 503, description = "Starting", body = ErrorBody)
    )
)]
pub async fn monitoring(
    State(state): State<AppState>,
) -> Result<axum::Json<crate::monitoring::MonitoringDocument>, ApiError> {
    let handles = state.built()?;
    Ok(axum::Json(handles.monitor.document()))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs", content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the model is loaded and the sinks are connected.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", content_type = "text/plain"),
        (status = 503, description = "Starting or stopping", content_type = "text/plain")
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready().is_ok() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
