//! Productions and items: their status, and the control API (start and
//! stop a production; restart, enable and disable an item; hand a test
//! message to a service).

use crate::web::extract::Json;
use axum::extract::State;

use crate::web::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{CommandSource, EngineStatus, ItemStatus, ProductionStatus};
use crate::web::App;
use crate::web::problem::Problem;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(productions))
        .routes(routes!(production))
        .routes(routes!(start_production))
        .routes(routes!(stop_production))
        .routes(routes!(item))
        .routes(routes!(restart_item))
        .routes(routes!(enable_item))
        .routes(routes!(disable_item))
        .routes(routes!(test_message))
}

/// Everything the engine is doing: productions, items, certificates and
/// the store's size.
#[utoipa::path(get, path = "/status", tag = "status", responses((status = 200, body = EngineStatus)))]
async fn status(State(app): State<App>) -> Json<EngineStatus> {
    Json(app.engine.status())
}

/// Every production with its items.
#[utoipa::path(get, path = "/productions", tag = "status", responses((status = 200, body = [ProductionStatus])))]
async fn productions(State(app): State<App>) -> Json<Vec<ProductionStatus>> {
    Json(app.engine.status().productions)
}

/// One production with its items.
#[utoipa::path(
    get, path = "/productions/{production}", tag = "status",
    params(("production" = String, Path, description = "Production id")),
    responses((status = 200, body = ProductionStatus), (status = 404, body = Problem))
)]
async fn production(State(app): State<App>, Path(id): Path<String>) -> Result<Json<ProductionStatus>, Problem> {
    let status = app.engine.status();
    let found = status.productions.into_iter().find(|p| p.id == id);
    found.map(Json).ok_or_else(|| Problem::not_found(format!("no production {id:?}")))
}

/// The outcome of a command.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Done {
    /// What was done, in words.
    pub(crate) done: String,
}

/// Starts a production (and remembers it across restarts).
#[utoipa::path(
    post, path = "/productions/{production}/start", tag = "control",
    params(("production" = String, Path, description = "Production id")),
    responses((status = 200, body = Done), (status = 404, body = Problem))
)]
async fn start_production(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Done>, Problem> {
    app.engine.start_production(&id, CommandSource::Api).await?;
    Ok(Json(Done { done: format!("production {id} started") }))
}

/// Stops a production (and remembers it across restarts).
#[utoipa::path(
    post, path = "/productions/{production}/stop", tag = "control",
    params(("production" = String, Path, description = "Production id")),
    responses((status = 200, body = Done), (status = 404, body = Problem))
)]
async fn stop_production(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Done>, Problem> {
    app.engine.stop_production(&id, CommandSource::Api).await?;
    Ok(Json(Done { done: format!("production {id} stopped") }))
}

/// One item's status.
#[utoipa::path(
    get, path = "/productions/{production}/items/{item}", tag = "status",
    params(
        ("production" = String, Path, description = "Production id"),
        ("item" = String, Path, description = "Item name")
    ),
    responses((status = 200, body = ItemStatus), (status = 404, body = Problem))
)]
async fn item(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
) -> Result<Json<ItemStatus>, Problem> {
    app.engine.status().item(&production, &item).cloned().map(Json).ok_or_else(|| unknown_item(&production, &item))
}

pub(crate) fn unknown_item(production: &str, item: &str) -> Problem {
    Problem::not_found(format!("production {production:?} has no item {item:?}"))
}

/// Restarts an item (its production must be running).
#[utoipa::path(
    post, path = "/productions/{production}/items/{item}/restart", tag = "control",
    params(("production" = String, Path), ("item" = String, Path)),
    responses((status = 200, body = Done), (status = 404, body = Problem))
)]
async fn restart_item(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
) -> Result<Json<Done>, Problem> {
    app.engine.restart_item(&production, &item, CommandSource::Api).await?;
    Ok(Json(Done { done: format!("{item} restarted") }))
}

/// Enables an item: it runs whenever its production runs.
#[utoipa::path(
    post, path = "/productions/{production}/items/{item}/enable", tag = "control",
    params(("production" = String, Path), ("item" = String, Path)),
    responses((status = 200, body = Done), (status = 404, body = Problem))
)]
async fn enable_item(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
) -> Result<Json<Done>, Problem> {
    app.engine.set_item_enabled(&production, &item, true, CommandSource::Api).await?;
    Ok(Json(Done { done: format!("{item} enabled") }))
}

/// Disables an item: messages for it wait in its queue.
#[utoipa::path(
    post, path = "/productions/{production}/items/{item}/disable", tag = "control",
    params(("production" = String, Path), ("item" = String, Path)),
    responses((status = 200, body = Done), (status = 404, body = Problem))
)]
async fn disable_item(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
) -> Result<Json<Done>, Problem> {
    app.engine.set_item_enabled(&production, &item, false, CommandSource::Api).await?;
    Ok(Json(Done { done: format!("{item} disabled") }))
}

/// A message to hand to a service as if it had been received.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct TestMessage {
    /// The HL7 message; segments separated by carriage returns or new
    /// lines (new lines are turned into carriage returns).
    pub(crate) message: String,
}

/// The message received: its header id.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Received {
    /// The service's header of the new message.
    pub(crate) id: i64,
}

/// Hands a pasted message to a service as if it had received it: it is
/// checked first (a parse error is a 422 naming its position), then
/// stored and sent to the service's targets.
#[utoipa::path(
    post, path = "/productions/{production}/items/{item}/test-message", tag = "control",
    params(("production" = String, Path), ("item" = String, Path)),
    request_body = TestMessage,
    responses(
        (status = 201, body = Received),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the item is not a service"),
        (status = 422, body = Problem, description = "the message does not parse")
    )
)]
async fn test_message(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
    Json(body): Json<TestMessage>,
) -> Result<(StatusCode, Json<Received>), Problem> {
    let bytes = super::messages::message_bytes(&body.message)?;
    let id = app.engine.submit_test_message(&production, &item, bytes).await.map_err(|e| match e {
        crate::engine::TestMessageError::Control(c) => Problem::from(c),
        crate::engine::TestMessageError::NotAService => {
            Problem::conflict(format!("{item} is not a service; test messages go to an mllp_in or file_in item"))
        }
        other => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
    })?;
    Ok((StatusCode::CREATED, Json(Received { id })))
}
