//! The UI's stylesheet and script, compiled into the binary (no CDN, no
//! build step). Both are written for this UI; no third-party code.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::App;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

pub(super) fn routes() -> Router<App> {
    Router::new().route("/assets/app.css", get(css)).route("/assets/app.js", get(js))
}

/// Cached for an hour: a new version of the add-on restarts the server, and
/// an hour-old stylesheet does no harm.
const CACHE: &str = "public, max-age=3600";

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, CACHE)], APP_CSS)
}

async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, CACHE)], APP_JS)
}
