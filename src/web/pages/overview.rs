//! The overview (every production and item, live), a production's page
//! and an item's page with its settings and commands.

use axum::Router;
use axum::extract::State;

use crate::web::extract::Path;
use axum::routing::get;
use maud::{Markup, html};

use super::{App, Root, action, badge, layout, seg, store_alert};
use crate::config::{ItemConfig, ItemRole};
use crate::engine::{ItemStatus, ProductionStatus};
use crate::web::problem::Problem;

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(overview))
        .route("/productions/{production}", get(production))
        .route("/productions/{production}/items/{item}", get(item))
}

/// Start and Stop; the stylesheet shows the one that applies to the
/// production's state, which the status stream keeps current (`data-s`).
fn production_controls(root: &Root, p: &ProductionStatus) -> Markup {
    let base = format!("api/v1/productions/{}", seg(&p.id));
    html! {
        span.controls data-s=(format!("p:{}:state", p.id)) data-state=(p.state.as_str()) {
            (action(root, &format!("{base}/start"), "Start", None))
            (action(root, &format!("{base}/stop"), "Stop", Some(&format!("Stop {}? Messages wait in the queues until it starts again.", p.name))))
        }
    }
}

fn items_table(root: &Root, p: &ProductionStatus) -> Markup {
    html! {
        div.table-wrap {
            table.items {
                thead { tr {
                    th { "Item" } th { "Kind" } th { "State" } th.num { "Queue" } th.num { "Conn." }
                    th.num { "Received" } th.num { "Sent" } th.num { "Errors" } th { "Last error" }
                } }
                tbody {
                    @for i in &p.items {
                        @let key = format!("i:{}:{}", p.id, i.name);
                        tr {
                            td { a href=(root.to(&format!("productions/{}/items/{}", seg(&p.id), seg(&i.name)))) { (i.name) } }
                            td { (i.kind.as_str()) }
                            td { (badge(i.state.as_str(), &format!("{key}:state"))) }
                            td.num data-k=(format!("{key}:queue_depth")) { (i.queue_depth) }
                            td.num data-k=(format!("{key}:connections")) { (i.connections) }
                            td.num data-k=(format!("{key}:received")) { (i.received) }
                            td.num data-k=(format!("{key}:sent")) { (i.sent) }
                            td.num data-k=(format!("{key}:errors")) { (i.errors) }
                            td.error data-k=(format!("{key}:last_error")) { (i.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

async fn overview(State(app): State<App>, root: Root) -> Markup {
    let status = app.engine.status();
    let mqtt = app.mqtt.as_ref().map(|m| m.borrow().to_string());
    let content = html! {
        (store_alert(&root, &status.store, true))
        @if let Some(mqtt) = &mqtt { p.muted { "Home Assistant (MQTT): " (mqtt) } }
        div data-live="status" {
            @if status.productions.is_empty() {
                p { "No productions are defined in " code { (app.engine.config().source.display()) } "." }
            }
            @for p in &status.productions {
                section.production {
                    h2 {
                        a href=(root.to(&format!("productions/{}", seg(&p.id)))) { (p.name) }
                        " " (badge(p.state.as_str(), &format!("p:{}:state", p.id)))
                        " " span.muted { "queued " span data-k=(format!("p:{}:queued", p.id)) { (p.queued) } }
                    }
                    (production_controls(&root, p))
                    (items_table(&root, p))
                }
            }
        }
    };
    layout(&app, &root, "Overview", content)
}

async fn production(State(app): State<App>, root: Root, Path(id): Path<String>) -> Result<Markup, Problem> {
    let status = app.engine.status();
    let p = status.production(&id).ok_or_else(|| Problem::not_found(format!("no production {id:?}")))?;
    let config = app.engine.config().productions.iter().find(|c| c.id == id);
    let content = html! {
        div data-live="status" {
            p {
                (badge(p.state.as_str(), &format!("p:{}:state", p.id)))
                " " span.muted { "id " code { (p.id) } }
                @if let Some(c) = config {
                    " · " span.muted { "autostart " (c.autostart) " · stop timeout " (format!("{:?}", c.stop_timeout)) }
                }
            }
            (production_controls(&root, p))
            (items_table(&root, p))
        }
    };
    Ok(layout(&app, &root, &p.name, content))
}

async fn item(
    State(app): State<App>,
    root: Root,
    Path((production, item)): Path<(String, String)>,
) -> Result<Markup, Problem> {
    let status = app.engine.status();
    let i = status.item(&production, &item).ok_or_else(|| crate::web::api::unknown_item(&production, &item))?;
    let config = app
        .engine
        .config()
        .productions
        .iter()
        .find(|c| c.id == production)
        .and_then(|p| p.items.iter().find(|c| c.name == item));
    let production_name = status.production(&production).map_or(production.as_str(), |p| p.name.as_str());
    let resendable = match i.role {
        ItemRole::Service => 0,
        _ => app.engine.store().count_resendable(&production, &item)?,
    };
    let base = format!("api/v1/productions/{}/items/{}", seg(&production), seg(&item));
    let key = format!("i:{production}:{item}");
    let content = html! {
        p.crumbs { a href=(root.to(&format!("productions/{}", seg(&production)))) { "← " (production_name) } }
        (item_summary(i, &key))
        div.controls {
            (action(&root, &format!("{base}/restart"), "Restart", None))
            @if i.enabled {
                (action(&root, &format!("{base}/disable"), "Disable", Some(&format!("Disable {item}? Its messages wait in its queue."))))
            } @else {
                (action(&root, &format!("{base}/enable"), "Enable", None))
            }
            a.button href=(root.to(&format!("messages?production={}&item={}", seg(&production), seg(&item)))) { "Messages" }
            @if resendable > 0 {
                button type="button" data-post=(root.to(&format!("{base}/resend-all")))
                    data-body=(format!("{{\"expected\":{resendable}}}"))
                    data-confirm=(format!("Resend the {resendable} suspended or failed messages of {item}? They go back in its queue, oldest first.")) {
                    "Resend " (resendable) " failed"
                }
            }
        }
        @if let Some(c) = config {
            h2 { "Settings" }
            (settings(c))
            @if c.role() == ItemRole::Service {
                h2 { "Send a test message" }
                form.test-message data-post-json=(root.to(&format!("{base}/test-message"))) {
                    label for="test-message" { "HL7 message (one segment per line)" }
                    textarea #test-message name="message" rows="8" spellcheck="false" required
                        placeholder="MSH|^~\\&|APP|FAC|SWITCHBOARD|LAB|20260101120000||ADT^A01|TEST1|P|2.5" {}
                    button type="submit" { "Check and send" }
                }
            }
        }
    };
    Ok(layout(&app, &root, &item, content))
}

fn item_summary(i: &ItemStatus, key: &str) -> Markup {
    html! {
        dl.facts data-live="status" {
            dt { "State" } dd { (badge(i.state.as_str(), &format!("{key}:state"))) }
            dt { "Kind" } dd { (i.kind.as_str()) " (" (i.role.to_string()) ")" }
            dt { "Enabled" } dd { (i.enabled) }
            dt { "Queue" } dd data-k=(format!("{key}:queue_depth")) { (i.queue_depth) }
            dt { "Connections" } dd data-k=(format!("{key}:connections")) { (i.connections) }
            dt { "Received" } dd data-k=(format!("{key}:received")) { (i.received) }
            dt { "Sent" } dd data-k=(format!("{key}:sent")) { (i.sent) }
            dt { "Errors" } dd data-k=(format!("{key}:errors")) { (i.errors) }
            dt { "Last error" } dd.error data-k=(format!("{key}:last_error")) { (i.last_error.as_deref().unwrap_or("—")) }
        }
    }
}

/// An item's settings as the engine runs them (see
/// [`ItemKind::describe`](crate::config::ItemKind::describe)).
fn settings(item: &ItemConfig) -> Markup {
    html! {
        dl.facts.settings {
            dt { "targets" } dd { @if item.targets.is_empty() { "—" } @else { (item.targets.join(", ")) } }
            @for (key, value) in item.kind.describe() {
                dt { (key) } dd { code { (value) } }
            }
        }
    }
}
