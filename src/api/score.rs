//! `POST /v1/score`: synchronous scoring of one transaction (a JSON object) or up to
//! `api.max_batch` (a JSON array), with the stream's decoder and validation. With
//! `?record=true` each verdict is also written to the verdict store, and each fraud
//! alert sent to the alert sinks, idempotently by id: a transaction already recorded
//! gets its stored verdict back and raises no second alert.

// utoipa's `params(...)` expands to fully qualified paths.
#![allow(unused_qualifications)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use super::read_body;
use crate::model::{Model, Verdict};
use crate::registry::decisions::Decider;
use crate::retry::Retryable;
use crate::schema::json::decode_transaction_limited;
use crate::schema::{Transaction, field_index};
use crate::sinks::verdicts::VerdictItem;

/// Transactions at most this many are scored on the request's own thread; larger
/// batches go to the blocking pool (about 20 µs a transaction).
const INLINE_ROWS: usize = 16;

/// One feature's part in a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contribution {
    /// Feature name.
    pub feature: String,
    /// The transaction's value of it.
    pub value: f64,
    /// Signed contribution to the fraud probability.
    pub contribution: f32,
}

/// The verdict for one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScoreResult {
    /// Transaction id.
    pub id: String,
    /// Fraud probability in [0, 1].
    pub score: f32,
    /// `score >= threshold`.
    pub fraud: bool,
    /// The threshold applied.
    pub threshold: f64,
    /// The model version that scored it.
    pub model_version: String,
    /// The largest contributions, largest magnitude first.
    pub contributions: Vec<Contribution>,
    /// `approve`, `review` or `block`.
    pub outcome: String,
    /// What decided: a rule's name, `model` (no rule matched, at or over the threshold)
    /// or `model_only` (no rule matched, under it).
    pub decided_by: String,
    /// The rules that matched, by name.
    pub rules: Vec<String>,
    /// The active rule set's version, when one decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<String>,
    /// With `record=true`: whether this call recorded it (false: it was already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<bool>,
}

/// Query of `POST /v1/score`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ScoreQuery {
    /// Also write the verdict (and the alert, if fraud) through the detector's sinks.
    #[serde(default)]
    pub record: bool,
}

fn result(v: &Verdict, tx: &Transaction, recorded: Option<bool>) -> ScoreResult {
    ScoreResult {
        id: v.tx_id.clone(),
        score: v.score,
        fraud: v.fraud,
        threshold: v.threshold,
        model_version: v.model_version.to_string(),
        contributions: v
            .top_features
            .iter()
            .map(|c| Contribution {
                feature: c.feature.to_string(),
                value: field_index(&c.feature).map_or(f64::NAN, |i| tx.values[i]),
                contribution: c.contribution,
            })
            .collect(),
        outcome: v.outcome.to_string(),
        decided_by: v.decided_by.to_string(),
        rules: v.rules.iter().map(ToString::to_string).collect(),
        rule_set: v.rule_set.as_deref().map(str::to_owned),
        recorded,
    }
}

fn stored_result(item: &VerdictItem, tx: &Transaction) -> ScoreResult {
    let v = Verdict {
        tx_id: item.tx_id.clone(),
        score: item.score,
        fraud: item.fraud,
        threshold: item.threshold,
        model_version: item.model_version.clone(),
        top_features: item.top_features.clone(),
        outcome: item.outcome,
        decided_by: item.decided_by.clone(),
        rules: item.rules.clone(),
        rule_set: item.rule_set.clone(),
    };
    result(&v, tx, Some(false))
}

/// Score transactions.
#[utoipa::path(
    post,
    path = "/v1/score",
    tag = "scoring",
    params(ScoreQuery),
    request_body(
        content = serde_json::Value,
        description = "One transaction (an object with Time, V1..V28, Amount and optionally id, Class) or an array of them",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "A verdict, or an array of verdicts in request order", body = ScoreResult),
        (status = 400, description = "Invalid JSON or an invalid transaction, or an id twice with `record=true`; `field` names the field", body = ErrorBody),
        (status = 403, description = "A cross-site request (`Origin` of another site, or `Sec-Fetch-Site: cross-site`)", body = ErrorBody),
        (status = 409, description = "The serving model uses entity features: score through the stream", body = ErrorBody),
        (status = 413, description = "Body over `api.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 429, description = "Too many requests in flight; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Not ready, or a sink unavailable with `record=true`", body = ErrorBody)
    )
)]
pub async fn score(
    State(state): State<super::AppState>,
    ApiQuery(q): ApiQuery<ScoreQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    // `application/json` and same-origin: checked for every POST by the guard.
    let handles = state.ready()?;
    let bytes: Bytes = read_body(body, state.config.max_body_bytes).await?;
    let (txs, many) = decode(&bytes, state.config.max_batch, q.record)?;
    let model = handles.model.load_full();
    if model.velocity().is_some() {
        // Its entity features come from the stream's state, in order; a request scored
        // here without them would get a silently wrong score.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "entity_features",
            format!(
                "model {} uses entity features, which only the stream computes: send the \
                 transaction through the stream and read its verdict with GET /v1/verdicts/{{id}}",
                model.version()
            ),
        ));
    }
    let top_k = state.top_k;
    let decider = handles.decisions.decider.load_full();
    let verdicts = if txs.len() <= INLINE_ROWS {
        score_rows(&model, &decider, &txs, top_k)
    } else {
        let rows = txs.clone();
        tokio::task::spawn_blocking(move || score_rows(&model, &decider, &rows, top_k))
            .await
            .map_err(|e| ApiError::internal(format!("scoring task: {e}")))?
    };
    let results = if q.record {
        record(&state, handles, &txs, &verdicts).await?
    } else {
        verdicts
            .iter()
            .zip(&txs)
            .map(|(v, tx)| result(v, tx, None))
            .collect()
    };
    Ok(if many {
        axum::Json(results).into_response()
    } else {
        axum::Json(results.into_iter().next()).into_response()
    })
}

/// Score and decide `txs` (with the rules and lists the stream decides with).
fn score_rows(model: &Model, decider: &Decider, txs: &[Transaction], top_k: usize) -> Vec<Verdict> {
    let mut x = Vec::with_capacity(txs.len() * model.forest().n_features());
    for tx in txs {
        model.features_into(tx, &mut x);
    }
    let ids: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    let mut verdicts = model.verdicts(&ids, &x, top_k);
    for (tx, v) in txs.iter().zip(verdicts.iter_mut()) {
        decider.apply(tx, v);
    }
    verdicts
}

/// Decode a body: one object, or an array of at most `max` objects. Each goes through the
/// stream's decoder. With `record`, each needs an id; without, a missing one becomes its
/// position.
fn decode(bytes: &[u8], max: usize, record: bool) -> Result<(Vec<Transaction>, bool), ApiError> {
    let trimmed = bytes.trim_ascii_start();
    let many = trimmed.first() == Some(&b'[');
    let items: Vec<&[u8]> = if many {
        let raw: Vec<&RawValue> = serde_json::from_slice(trimmed).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid JSON: {e}"),
            )
        })?;
        if raw.len() > max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many",
                format!("{} transactions in one request; at most {max}", raw.len()),
            ));
        }
        if raw.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty",
                "an empty array: send at least one transaction",
            ));
        }
        raw.into_iter().map(|r| r.get().as_bytes()).collect()
    } else {
        vec![bytes]
    };
    let mut txs = Vec::with_capacity(items.len());
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut missing_id = None;
    for (i, item) in items.into_iter().enumerate() {
        let index = many.then_some(i);
        let tx = decode_transaction_limited(item, usize::MAX, || {
            missing_id.get_or_insert(i);
            i.to_string()
        })
        .map_err(|kind| ApiError::invalid(&kind, index))?;
        if record && missing_id == Some(i) {
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "missing required field `id` (record=true writes the verdict under it)",
            );
            return Err(e.field(index.map_or_else(|| "id".to_owned(), |i| format!("[{i}].id"))));
        }
        if record && let Some(&first) = seen.get(tx.id.as_str()) {
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "duplicate_id",
                format!(
                    "transaction id {:?} is in the request twice, at {first} and {i} (record=true records each id once)",
                    tx.id
                ),
            );
            return Err(e.field(format!("[{i}].id")));
        }
        if record {
            seen.insert(tx.id.clone(), i);
        }
        txs.push(tx);
    }
    Ok((txs, many))
}

/// Record verdicts (and alerts) idempotently, by id, in the verdict store itself: each
/// verdict is written only where its id has none (a conditional write: of concurrent
/// requests with one id, exactly one records it), and only what this call wrote raises an
/// alert. Should an alert sink fail, what this call wrote is deleted again, so a retry
/// records and alerts rather than never alerting. A transaction already recorded gets its
/// stored verdict back, `recorded: false`.
async fn record(
    state: &super::AppState,
    handles: &crate::detector::Handles,
    txs: &[Transaction],
    verdicts: &[Verdict],
) -> Result<Vec<ScoreResult>, ApiError> {
    let unavailable =
        |what: &str, e: &dyn std::fmt::Display| ApiError::unavailable(format!("{what}: {e}"));
    let store_error = |e: crate::sinks::verdicts::VerdictError| {
        if e.is_retryable() {
            unavailable("verdict store", &e)
        } else {
            ApiError::internal(format!("verdict store: {e}"))
        }
    };
    let items: Vec<VerdictItem> = verdicts
        .iter()
        .map(|v| VerdictItem::from_verdict(v.clone(), state.ttl_seconds))
        .collect();
    let written = handles
        .verdicts
        .put_new(&items)
        .await
        .map_err(store_error)?;
    let frauds: Vec<Verdict> = verdicts
        .iter()
        .zip(&written)
        .filter(|(v, w)| **w && v.alerts())
        .map(|(v, _)| v.clone())
        .collect();
    if !frauds.is_empty() {
        for sink in handles.alert_sinks.iter() {
            if let Err(e) = sink.send(&frauds).await {
                for (it, _) in items.iter().zip(&written).filter(|(_, w)| **w) {
                    if let Err(d) = handles.verdicts.delete(&it.tx_id).await {
                        tracing::error!(tx_id = %it.tx_id, error = %d, "recorded verdict whose alert failed could not be deleted; a retry will not alert it");
                    }
                }
                return Err(if e.is_retryable() {
                    unavailable("alerts", &e)
                } else {
                    ApiError::internal(format!("alerts: {e}"))
                });
            }
        }
    }
    let recorded: Vec<Verdict> = verdicts
        .iter()
        .zip(&written)
        .filter(|(_, w)| **w)
        .map(|(v, _)| v.clone())
        .collect();
    handles.decisions.counts.count(&recorded);
    let recorded = recorded.len();
    metrics::counter!(crate::metric_names::API_RECORDED).increment(recorded as u64);
    let mut out = Vec::with_capacity(txs.len());
    for ((tx, v), w) in txs.iter().zip(verdicts).zip(&written) {
        out.push(if *w {
            result(v, tx, Some(true))
        } else {
            match handles.verdicts.get(&tx.id).await.map_err(store_error)? {
                Some(item) => stored_result(&item, tx),
                // Recorded by another request, then expired or taken back meanwhile.
                None => result(v, tx, Some(false)),
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx_json(id: Option<&str>) -> String {
        let mut v = serde_json::Map::new();
        if let Some(id) = id {
            v.insert("id".into(), id.into());
        }
        for f in crate::schema::FIELD_NAMES {
            v.insert(f.into(), 0.5.into());
        }
        serde_json::Value::Object(v).to_string()
    }

    #[test]
    fn decodes_one_or_many_and_names_the_field() {
        let (txs, many) = decode(tx_json(Some("a")).as_bytes(), 10, false).unwrap();
        assert_eq!((txs.len(), many, txs[0].id.as_str()), (1, false, "a"));
        let body = format!("[{}, {}]", tx_json(None), tx_json(Some("b")));
        let (txs, many) = decode(body.as_bytes(), 10, false).unwrap();
        assert_eq!((txs.len(), many, txs[0].id.as_str()), (2, true, "0"));
        let e = decode(body.as_bytes(), 10, true).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("[0].id"));
        let bad = format!(
            "[{}, {}]",
            tx_json(Some("a")),
            tx_json(Some("b")).replace("\"V3\":0.5", "\"V3\":\"x\"")
        );
        let e = decode(bad.as_bytes(), 10, false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("[1].V3"));
        assert_eq!(e.body.code, "wrong_type");
        let e = decode(body.as_bytes(), 1, false).unwrap_err();
        assert_eq!(e.body.code, "too_many");
        let e = decode(b"{\"Time\": ", 1, false).unwrap_err();
        assert_eq!(e.body.code, "invalid_json");
    }
}
