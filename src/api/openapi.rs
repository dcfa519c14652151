//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

use super::{dashboard, error, events, routes, score};

/// The API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fraudstream",
        description = "Fraud verdicts over REST: synchronous scoring, stored verdicts, models, alerts and live figures."
    ),
    paths(
        score::score,
        routes::verdict,
        routes::models,
        routes::model,
        routes::promote,
        routes::rollback,
        routes::alerts,
        events::alert_stream,
        events::stats,
        events::events,
        routes::metrics,
        routes::healthz,
        routes::readyz,
        document,
        dashboard::page,
    ),
    components(schemas(
        error::ErrorBody,
        score::ScoreResult,
        score::Contribution,
        routes::VerdictOut,
        routes::StoredContribution,
        routes::ModelList,
        routes::ModelSummary,
        crate::registry::Moved,
        events::Snapshot,
        events::Point,
        events::ServingModel,
        events::OnlineLabels,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme (`api.tokens`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json"))
)]
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
