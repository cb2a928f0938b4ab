//! The REST API under `/api/v1`: JSON in and out, errors as problem
//! documents, and an OpenAPI 3.1 document generated from the handlers
//! themselves (each handler's `#[utoipa::path]`), so the document and the
//! routes cannot drift apart: both come from [`routes`].

mod control;
pub(crate) mod messages;
pub(crate) mod system;

use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::App;

pub(crate) use control::unknown_item;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard API",
        description = "Control productions and items, find, inspect and resend messages, and read the engine's \
                       status. Errors are application/problem+json. Outside Home Assistant ingress, send \
                       `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    servers((url = "api/v1", description = "relative to the UI's address")),
    tags(
        (name = "status", description = "What the engine is doing"),
        (name = "control", description = "Start and stop productions; restart, enable and disable items"),
        (name = "messages", description = "Find, inspect and resend messages"),
        (name = "system", description = "Certificates, events and the store"),
    )
)]
struct Doc;

/// Every API route with its OpenAPI description.
pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(Doc::openapi())
        .merge(control::routes())
        .merge(messages::routes())
        .merge(system::routes())
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}
