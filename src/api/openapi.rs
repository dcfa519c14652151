//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::OpenApi;

use super::{dashboard, error, events, routes, rules, score};

/// The API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fraudstream",
        description = "Fraud verdicts over REST: synchronous scoring, stored verdicts, models, rules and lists, alerts and live figures."
    ),
    paths(
        score::score,
        routes::verdict,
        routes::models,
        routes::model,
        routes::promote,
        routes::rollback,
        rules::rules,
        rules::activate,
        rules::backtest,
        rules::lists,
        rules::list,
        rules::add,
        rules::remove,
        routes::alerts,
        routes::monitoring,
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
        rules::RulesView,
        rules::BacktestRequest,
        rules::ListView,
        crate::registry::rules::RuleManifest,
        crate::registry::rules::RuleSummary,
        crate::registry::rules::Activated,
        crate::registry::rules::ListVersion,
        crate::pipeline::rules_backtest::Report,
        crate::pipeline::rules_backtest::SetFigures,
        crate::pipeline::rules_backtest::RuleFigures,
        crate::pipeline::rules_backtest::Change,
        events::Snapshot,
        events::Point,
        events::ServingModel,
        events::OnlineLabels,
        events::DecisionView,
        events::RuleRate,
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
