//! Decisions over HTTP: the rule sets (`GET /v1/rules`, `POST /v1/rules/{v}/activate`,
//! `POST /v1/rules/{v}/backtest`) and the value lists (`GET /v1/lists`,
//! `GET /v1/lists/{name}`, `PUT` and `DELETE /v1/lists/{name}/{value}`). Changes need
//! `api.admin`; every detector picks them up at its next poll.

// utoipa's `params(...)` expands to fully qualified paths.
#![allow(unused_qualifications)]

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiPath;
use super::routes::{no_arguments, require_admin};
use super::{AppState, read_body};
use crate::pipeline::rules_backtest::{self, Report, Sets};
use crate::registry::decisions::catalog;
use crate::registry::rules::{Activated, ListVersion, RuleManifest, RulesError};
use crate::rules::compile;

/// What this process decides with, and what the store holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesView {
    /// The active version this detector serves (none: the model's rule alone).
    pub serving: Option<String>,
    /// The active version's manifest.
    pub active: Option<RuleManifest>,
    /// Every other stored version (drafts and former versions), oldest first.
    pub drafts: Vec<RuleManifest>,
    /// The lists this detector looks values up in.
    pub lists: Vec<ListVersion>,
    /// The outcome of a verdict over the threshold that no rule decided.
    pub model_outcome: String,
}

fn rules_error(e: RulesError) -> ApiError {
    match e {
        RulesError::UnknownVersion(_) => ApiError::not_found(e.to_string()).field("version"),
        RulesError::UnknownList(_) => ApiError::not_found(e.to_string()).field("name"),
        RulesError::Compile { .. } => {
            ApiError::new(StatusCode::CONFLICT, "compile", e.to_string()).field("version")
        }
        RulesError::Signature { .. } => {
            ApiError::new(StatusCode::CONFLICT, "signature", e.to_string()).field("version")
        }
        RulesError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
        RulesError::Concurrent(_) | RulesError::Unsigned => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        RulesError::Storage(_) | RulesError::Corrupt { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "storage",
            format!("the model store failed: {e}"),
        ),
    }
}

/// The rule sets: what serves here, the active version and the drafts.
#[utoipa::path(
    get,
    path = "/v1/rules",
    tag = "decisions",
    responses(
        (status = 200, description = "The rule sets and lists", body = RulesView),
        (status = 502, description = "The model store failed", body = ErrorBody)
    )
)]
pub async fn rules(State(state): State<AppState>) -> Result<axum::Json<RulesView>, ApiError> {
    let d = &state.built()?.decisions;
    let decider = d.decider.load();
    let active = d.store.active().await.map_err(rules_error)?;
    let mut versions = d.store.versions().await.map_err(rules_error)?;
    let active_manifest = active.as_ref().and_then(|a| {
        versions
            .iter()
            .position(|m| m.version == a.version)
            .map(|i| versions.remove(i))
    });
    Ok(axum::Json(RulesView {
        serving: decider.version().map(ToString::to_string),
        active: active_manifest,
        drafts: versions,
        lists: decider.list_versions.clone(),
        model_outcome: decider.model_outcome.to_string(),
    }))
}

/// Make a stored version active once it compiles against this detector's lists and
/// entity features (a conditional move of `rules/ACTIVE`).
#[utoipa::path(
    post,
    path = "/v1/rules/{version}/activate",
    tag = "decisions",
    params(("version" = String, Path, description = "A stored rule-set version")),
    responses(
        (status = 200, description = "rules/ACTIVE moved", body = Activated),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "It does not compile, its signature is refused, or ACTIVE moved meanwhile", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody)
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
    body: axum::body::Body,
) -> Result<axum::Json<Activated>, ApiError> {
    require_admin(&state)?;
    no_arguments(&state, body).await?;
    let d = &state.built()?.decisions;
    let lists = d.decider.load().lists.clone();
    let moved = d
        .store
        .activate(&version, &catalog(&d.derived, &lists))
        .await
        .map_err(rules_error)?;
    tracing::warn!(from = ?moved.from, to = %moved.to, "rules/ACTIVE moved through the API");
    Ok(axum::Json(moved))
}

/// Body of `POST /v1/rules/{version}/backtest` (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// The history to replay (default `lake.location`).
    #[serde(default)]
    pub history: Option<String>,
    /// Labels by transaction id (0 or 1), for rows without their own `Class`.
    #[serde(default)]
    pub labels: HashMap<String, u8>,
}

/// Replay the lake through a stored version beside the active set.
#[utoipa::path(
    post,
    path = "/v1/rules/{version}/backtest",
    tag = "decisions",
    params(("version" = String, Path, description = "A stored rule-set version")),
    request_body(content = BacktestRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The backtest", body = Report),
        (status = 400, description = "A body that is not a backtest request", body = ErrorBody),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such version, or no lake files", body = ErrorBody),
        (status = 409, description = "It does not compile", body = ErrorBody)
    )
)]
pub async fn backtest(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
    body: axum::body::Body,
) -> Result<axum::Json<Report>, ApiError> {
    require_admin(&state)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let request: BacktestRequest = if bytes.trim_ascii().is_empty() {
        BacktestRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("not a backtest request: {e}"),
            )
        })?
    };
    let d = state.built()?.decisions.clone();
    let decider = d.decider.load_full();
    let cat = catalog(&d.derived, &decider.lists);
    let draft_text = d.store.get(&version).await.map_err(rules_error)?.text;
    let draft = compile(&draft_text, &cat).map_err(|source| {
        rules_error(RulesError::Compile {
            version: version.clone(),
            source,
        })
    })?;
    let history = request.history.unwrap_or_else(|| d.lake.clone());
    let labels = request.labels;
    // Rows are evaluated on every core: off the async workers.
    let handle = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        let active = decider.rules.as_ref();
        let sets = Sets {
            draft: (&draft, &version),
            active: active.map(|a| (&a.set, &*a.version)),
            lists: &decider.lists,
            model_outcome: decider.model_outcome,
            labels: &labels,
            derived: &d.derived,
        };
        handle.block_on(rules_backtest::run(&history, &d.s3, &sets))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match report {
        Ok(r) => Ok(axum::Json(r)),
        Err(e @ rules_backtest::BacktestError::Empty(_)) => {
            Err(ApiError::not_found(e.to_string()).field("history"))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "storage",
            format!("the history could not be read: {e}"),
        )
        .field("history")),
    }
}

/// Every list in the store.
#[utoipa::path(
    get,
    path = "/v1/lists",
    tag = "decisions",
    responses(
        (status = 200, description = "Each list's version and size", body = Vec<ListVersion>),
        (status = 502, description = "The model store failed", body = ErrorBody)
    )
)]
pub async fn lists(
    State(state): State<AppState>,
) -> Result<axum::Json<Vec<ListVersion>>, ApiError> {
    let d = &state.built()?.decisions;
    let mut out = Vec::new();
    for name in d.store.list_names().await.map_err(rules_error)? {
        out.push(d.store.list(&name).await.map_err(rules_error)?.0);
    }
    Ok(axum::Json(out))
}

/// One list and its values.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView {
    /// Its version and size.
    #[serde(flatten)]
    pub version: ListVersion,
    /// The values, sorted.
    pub values: Vec<String>,
}

/// A list's values.
#[utoipa::path(
    get,
    path = "/v1/lists/{name}",
    tag = "decisions",
    params(("name" = String, Path, description = "The list (`@name` in rules)")),
    responses(
        (status = 200, description = "The list", body = ListView),
        (status = 404, description = "No such list", body = ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<ListView>, ApiError> {
    let d = &state.built()?.decisions;
    let (version, values) = d.store.list(&name).await.map_err(rules_error)?;
    Ok(axum::Json(ListView { version, values }))
}

/// Add a value to a list (creating the list).
#[utoipa::path(
    put,
    path = "/v1/lists/{name}/{value}",
    tag = "decisions",
    params(
        ("name" = String, Path, description = "The list"),
        ("value" = String, Path, description = "The value (percent-encoded)")
    ),
    responses(
        (status = 200, description = "The list's new version", body = ListVersion),
        (status = 400, description = "A name or value a list cannot hold", body = ErrorBody),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 409, description = "The list kept changing meanwhile", body = ErrorBody)
    )
)]
pub async fn add(
    State(state): State<AppState>,
    ApiPath((name, value)): ApiPath<(String, String)>,
) -> Result<axum::Json<ListVersion>, ApiError> {
    require_admin(&state)?;
    let d = &state.built()?.decisions;
    let v = d
        .store
        .change_list(&name, &[value], &[])
        .await
        .map_err(rules_error)?;
    tracing::warn!(list = %name, version = %v.version, "list changed through the API");
    Ok(axum::Json(v))
}

/// Remove a value from a list.
#[utoipa::path(
    delete,
    path = "/v1/lists/{name}/{value}",
    tag = "decisions",
    params(
        ("name" = String, Path, description = "The list"),
        ("value" = String, Path, description = "The value (percent-encoded)")
    ),
    responses(
        (status = 200, description = "The list's new version", body = ListVersion),
        (status = 403, description = "api.admin is off, or a cross-site request", body = ErrorBody),
        (status = 404, description = "No such list", body = ErrorBody),
        (status = 409, description = "The list kept changing meanwhile", body = ErrorBody)
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath((name, value)): ApiPath<(String, String)>,
) -> Result<axum::Json<ListVersion>, ApiError> {
    require_admin(&state)?;
    let d = &state.built()?.decisions;
    d.store.list(&name).await.map_err(rules_error)?;
    let v = d
        .store
        .change_list(&name, &[], &[value])
        .await
        .map_err(rules_error)?;
    tracing::warn!(list = %name, version = %v.version, "list changed through the API");
    Ok(axum::Json(v))
}
