//! `/healthz` (liveness: the process serves requests) and `/readyz`
//! (readiness: the store is open and the productions are loaded). The
//! container's health check and the Supervisor's watchdog use the first;
//! a load balancer or an orchestrator the second.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::App;

pub(super) fn routes() -> Router<App> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    if app.engine.store().is_closed() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the message store is closed\n".into());
    }
    let status = app.engine.status();
    (StatusCode::OK, format!("ready: {} production(s)\n", status.productions.len()))
}
