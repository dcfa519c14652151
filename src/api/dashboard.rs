//! The dashboard: one page, shipped inside the binary (no CDN, no build step). It draws
//! its charts as SVG, reads `/v1/stats`, `/v1/alerts` and `/v1/models` once, then updates
//! live from `/v1/events`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "The dashboard (HTML)", content_type = "text/html"))
)]
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
