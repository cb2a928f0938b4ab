//! The status stream, certificates, the OpenAPI document.

use std::convert::Infallible;
use std::time::Duration;

use crate::web::extract::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::tls::CertificateStatus;
use crate::web::App;
use crate::web::problem::Problem;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(status_stream))
        .routes(routes!(certificates))
        .routes(routes!(openapi_json))
        .routes(routes!(purge))
}

/// The engine's status as server-sent events: one `status` event with the
/// whole status (as `GET /status` gives it) now and after every change, at
/// most five a second.
#[utoipa::path(
    get, path = "/status/stream", tag = "status",
    responses((status = 200, content_type = "text/event-stream", description = "`status` events, each an EngineStatus"))
)]
async fn status_stream(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = app.engine.subscribe();
    changes.mark_changed();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        let status = changes.borrow_and_update().clone();
        let event = Event::default().event("status").json_data(&*status).unwrap_or_else(|_| Event::default());
        Some((Ok(event), changes))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Every TLS configuration: its certificates' expiry and the doctor's
/// findings.
#[utoipa::path(get, path = "/certificates", tag = "system", responses((status = 200, body = [CertificateStatus])))]
async fn certificates(State(app): State<App>) -> Json<Vec<CertificateStatus>> {
    Json(app.engine.status().certificates)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, content_type = "application/json", description = "The OpenAPI 3.1 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi())
}

/// What a purge removed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Purged {
    /// Headers removed, with their replies.
    pub(crate) headers: u64,
    /// Bodies no message uses any more, removed.
    pub(crate) bodies: u64,
    /// Events removed.
    pub(crate) events: u64,
    /// What was done, in words.
    pub(crate) done: String,
}

/// Removes the finished messages older than the retention now, rather than
/// at the next hourly purge. Messages still queued are never removed.
#[utoipa::path(
    post, path = "/store/purge", tag = "system",
    responses(
        (status = 200, body = Purged),
        (status = 409, body = Problem, description = "retention_days is 0: messages are kept forever")
    )
)]
async fn purge(State(app): State<App>) -> Result<Json<Purged>, Problem> {
    if app.retention_days == 0 {
        return Err(Problem::conflict(
            "store.retention_days is 0, so messages are kept forever; set it in the productions file to purge",
        ));
    }
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(u64::from(app.retention_days) * 86_400);
    let stats = app.engine.store().purge(cutoff, 500).await?;
    Ok(Json(Purged {
        headers: stats.headers,
        bodies: stats.bodies,
        events: stats.events,
        done: format!("purged {} messages older than {} days", stats.headers, app.retention_days),
    }))
}
