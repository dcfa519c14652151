//! Errors as JSON: `{"error", "code", "field"}`, with the status that says whose fault.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::schema::RecordErrorKind;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// Stable, for programs: `invalid_json`, `missing_field`, `not_found`, `too_large`,
    /// `unsupported_media_type`, `unauthorized`, `forbidden`, `not_ready`, `busy`,
    /// `timeout`, `unavailable`, `conflict`, ….
    pub code: String,
    /// The field at fault, when one is (`V3`, `[12].Amount`, `id`).
    pub field: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Seconds a client should wait before trying again (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and message.
    pub fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                code: code.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    /// The same error, naming `field`.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    /// The same error, asking the client to retry after `seconds`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 for an invalid transaction, naming its field (prefixed with `[i].` for the
    /// `i`th of an array).
    pub fn invalid(kind: &RecordErrorKind, index: Option<usize>) -> Self {
        let field = match kind {
            RecordErrorKind::MissingField { field }
            | RecordErrorKind::NotNumber { field, .. }
            | RecordErrorKind::NotFinite { field, .. }
            | RecordErrorKind::WrongType { field, .. }
            | RecordErrorKind::DuplicateField { field } => Some(field.clone()),
            RecordErrorKind::BadLabel { .. } => Some("Class".into()),
            RecordErrorKind::InvalidId { .. } => Some("id".into()),
            RecordErrorKind::InvalidEntityId { field, .. } => Some(field.clone()),
            _ => None,
        };
        let field = match (index, field) {
            (Some(i), Some(f)) => Some(format!("[{i}].{f}")),
            (Some(i), None) => Some(format!("[{i}]")),
            (None, f) => f,
        };
        let mut e = Self::new(StatusCode::BAD_REQUEST, kind.code(), kind.to_string());
        e.body.field = field;
        e
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 503: a service behind the API is unavailable.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", what).retry_after(1)
    }

    /// 500: a failure that is not the client's and will not clear by itself.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}
