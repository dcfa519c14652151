//! Extractors whose rejections are the API's JSON errors (axum's own answer in plain
//! text): a query string or a path segment that does not parse is a 400 naming the
//! parameter.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, MatchedPath, Path, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A query string deserialized into `T`, or 400 `invalid_query` naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => {
                let query = parts.uri.query().unwrap_or_default();
                let mut err = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("invalid query string: {}", e.body_text()),
                );
                if let Some(field) = bad_parameter::<T>(query) {
                    err = err.field(field);
                }
                Err(err)
            }
        }
    }
}

/// The first parameter of `query` that does not parse on its own into `T`.
fn bad_parameter<T: DeserializeOwned>(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| {
        let one: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(&k, &v)
            .finish();
        let uri: Uri = format!("/?{one}").parse().ok()?;
        Query::<T>::try_from_uri(&uri)
            .is_err()
            .then(|| k.into_owned())
    })
}

/// A path parameter deserialized into `T`, or 400 `invalid_path` naming it.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) => {
                let status = match &e {
                    PathRejection::FailedToDeserializePathParams(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let mut err = ApiError::new(
                    status,
                    "invalid_path",
                    format!("invalid path: {}", e.body_text()),
                );
                // The route's one parameter, when it has one (`/v1/verdicts/{tx_id}`).
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_owned());
                if let Some(name) = route.as_deref().and_then(only_parameter) {
                    err = err.field(name);
                }
                Err(err)
            }
        }
    }
}

/// The name of a route's only `{parameter}`.
fn only_parameter(route: &str) -> Option<&str> {
    let mut names = route
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
    let first = names.next()?;
    names.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<usize>,
        record: Option<bool>,
    }

    #[test]
    fn the_bad_parameter_is_named() {
        assert_eq!(
            bad_parameter::<Q>("limit=3&record=maybe").as_deref(),
            Some("record")
        );
        assert_eq!(bad_parameter::<Q>("limit=abc").as_deref(), Some("limit"));
        assert_eq!(bad_parameter::<Q>("limit=3"), None);
        assert_eq!(only_parameter("/v1/verdicts/{tx_id}"), Some("tx_id"));
        assert_eq!(only_parameter("/v1/models"), None);
    }
}
