//! The status stream, certificates, the OpenAPI document.

use std::convert::Infallible;
use std::time::Duration;

use crate::web::extract::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{EventLevel, EventPage, EventQuery};
use crate::tls::CertificateStatus;
use crate::web::App;
use crate::web::extract::Query;
use crate::web::problem::Problem;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(status_stream))
        .routes(routes!(certificates))
        .routes(routes!(openapi_json))
        .routes(routes!(purge))
        .routes(routes!(events))
        .routes(routes!(store))
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

/// Event filters.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventParams {
    /// This level and worse: info, warning or error.
    pub(crate) level: Option<String>,
    pub(crate) production: Option<String>,
    pub(crate) item: Option<String>,
    /// At or after (Unix milliseconds).
    pub(crate) from: Option<i64>,
    /// Before (Unix milliseconds).
    pub(crate) to: Option<i64>,
    /// The `next` of the previous page.
    pub(crate) before: Option<i64>,
    /// Rows per page, 1 to 500 (default 100).
    pub(crate) limit: Option<usize>,
}

impl EventParams {
    pub(crate) fn query(&self) -> Result<(EventQuery, usize), Problem> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let level = match text(&self.level) {
            None => None,
            Some(l) => Some(
                serde_json::from_value::<EventLevel>(serde_json::Value::String(l.clone()))
                    .map_err(|_| Problem::bad_request(format!("{l:?} is not a level; use info, warning or error")))?,
            ),
        };
        let limit = match self.limit {
            None => 100,
            Some(n) if (1..=500).contains(&n) => n,
            Some(n) => return Err(Problem::bad_request(format!("limit {n} is out of range; use 1 to 500"))),
        };
        Ok((
            EventQuery {
                level,
                production: text(&self.production),
                item: text(&self.item),
                from: self.from,
                to: self.to,
            },
            limit,
        ))
    }
}

/// The event log, newest first.
#[utoipa::path(
    get, path = "/events", tag = "system", params(EventParams),
    responses((status = 200, body = EventPage), (status = 400, body = Problem))
)]
async fn events(State(app): State<App>, Query(params): Query<EventParams>) -> Result<Json<EventPage>, Problem> {
    let (query, limit) = params.query()?;
    Ok(Json(app.engine.store().events(&query, params.before, limit)?))
}

/// The store: its size, messages by status, how long they are kept and
/// what is wrong with it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StoreInfo {
    /// Bytes on disk.
    pub(crate) size_bytes: u64,
    /// Messages by status.
    pub(crate) counts: std::collections::BTreeMap<String, u64>,
    /// Days messages are kept (0: forever).
    pub(crate) retention_days: u32,
    /// What is wrong with the store, if anything.
    pub(crate) health: crate::store::StoreHealth,
}

pub(crate) fn store_info(app: &App) -> Result<StoreInfo, Problem> {
    let store = app.engine.store();
    let counts = store.counts_by_status()?.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect();
    Ok(StoreInfo {
        size_bytes: store.size_on_disk(),
        counts,
        retention_days: app.retention_days,
        health: store.health(),
    })
}

#[utoipa::path(get, path = "/store", tag = "system", responses((status = 200, body = StoreInfo)))]
async fn store(State(app): State<App>) -> Result<Json<StoreInfo>, Problem> {
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || store_info(&app2))
        .await
        .map_err(|_| Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "interrupted"))?
        .map(Json)
}
