//! Certificates: each TLS configuration with its chain's expiry and the
//! doctor's findings.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};

use super::messages::at;
use super::{App, Root, action, layout, seg, store_alert};
use crate::web::api::system::{EventParams, store_info};
use crate::web::problem::Problem;

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/certificates", get(certificates))
        .route("/events", get(events))
        .route("/store", get(store_page))
}

async fn certificates(State(app): State<App>, root: Root) -> Markup {
    let status = app.engine.status();
    let engine = app.engine.clone();
    let reports = tokio::task::spawn_blocking(move || engine.tls_reports()).await.unwrap_or_default();
    let content = html! {
        @if status.certificates.is_empty() {
            p { "No TLS configurations are defined." }
        }
        @for c in &status.certificates {
            section.certificate {
                h2 {
                    (c.name) " "
                    span.badge data-state=(if c.problem { "error" } else { "running" }) {
                        @if c.problem { "problem" } @else { "ok" }
                    }
                }
                dl.facts {
                    dt { "Role" } dd { (c.role) }
                    dt { "Subject" } dd { (c.subject.as_deref().unwrap_or("—")) }
                    dt { "Issuer" } dd { (c.issuer.as_deref().unwrap_or("—")) }
                    dt { "Names" } dd { @if c.subject_alt_names.is_empty() { "—" } @else { (c.subject_alt_names.join(", ")) } }
                    dt { "Expires" } dd {
                        @if let Some(t) = c.not_after { (t.date()) " " (format!("{:02}:{:02}", t.hour(), t.minute())) " UTC" } @else { "—" }
                    }
                    dt { "First to expire" } dd {
                        (c.earliest_expiring.as_deref().unwrap_or("—"))
                        @if let Some(at) = c.earliest_not_after { " on " (at.date()) }
                    }
                    dt { "Days left" } dd { (c.days_left.map(|d| d.to_string()).unwrap_or_else(|| "—".into())) }
                    dt { "SHA-256" } dd { code.wrap { (c.sha256_fingerprint.as_deref().unwrap_or("—")) } }
                }
                @if let Some(report) = reports.iter().find(|r| r.name == c.name) {
                    @if !report.chain.is_empty() {
                        h3 { "Chain" }
                        (chain(&report.chain))
                    }
                    @if !report.ca_certificates.is_empty() {
                        h3 { "Trusted authorities (ca_file)" }
                        (chain(&report.ca_certificates))
                    }
                }
                @if !c.problems.is_empty() {
                    ul.findings {
                        @for f in &c.problems {
                            li data-severity=(format!("{:?}", f.severity).to_lowercase()) { (f.message) }
                        }
                    }
                }
            }
        }
    };
    layout(&app, &root, "Certificates", content)
}

fn chain(certs: &[crate::tls::CertificateInfo]) -> Markup {
    html! {
        div.table-wrap { table.chain {
            thead { tr { th { "Subject" } th { "Issuer" } th { "Valid until" } th { "Key" } } }
            tbody { @for c in certs {
                tr {
                    td { (c.subject) }
                    td { (c.issuer) }
                    td { (c.not_after.date()) }
                    td { (c.key_type) @if let Some(bits) = c.key_bits { " " (bits) } }
                }
            } }
        } }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct EventForm {
    #[serde(default)]
    level: String,
    #[serde(default)]
    production: String,
    #[serde(default)]
    item: String,
    before: Option<i64>,
}

async fn events(
    State(app): State<App>,
    root: Root,
    crate::web::extract::Query(form): crate::web::extract::Query<EventForm>,
) -> Result<Markup, Problem> {
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let params = EventParams {
        level: opt(&form.level),
        production: opt(&form.production),
        item: opt(&form.item),
        before: form.before,
        ..EventParams::default()
    };
    let (query, limit) = params.query()?;
    let page = app.engine.store().events(&query, form.before, limit)?;
    let mut next =
        format!("events?level={}&production={}&item={}", seg(&form.level), seg(&form.production), seg(&form.item));
    if let Some(n) = page.next {
        next.push_str(&format!("&before={n}"));
    }
    let content = html! {
        form.filters method="get" {
            div {
                label for="level" { "Level" }
                select #level name="level" {
                    option value="" { "any" }
                    @for l in ["info", "warning", "error"] { option value=(l) selected[form.level == l] { (l) " and worse" } }
                }
            }
            div { label for="production" { "Production" } input #production name="production" value=(form.production); }
            div { label for="item" { "Item" } input #item name="item" value=(form.item); }
            div { button type="submit" { "Filter" } }
        }
        div.table-wrap { table.events {
            thead { tr { th { "At (UTC)" } th { "Level" } th { "Where" } th { "Kind" } th { "What" } } }
            tbody { @for e in &page.events {
                tr {
                    td { (at(e.at)) }
                    td { span.badge data-state=(if e.level == "error" { "error" } else if e.level == "warning" { "suspended" } else { "running" }) { (e.level) } }
                    td { (e.production.as_deref().unwrap_or("")) @if let Some(i) = &e.item { " / " (i) } }
                    td { (e.kind) }
                    td.error { (e.text) }
                }
            } }
        } }
        @if page.next.is_some() { p { a.button href=(root.to(&next)) { "Older →" } } }
    };
    Ok(layout(&app, &root, "Events", content))
}

async fn store_page(State(app): State<App>, root: Root) -> Result<Markup, Problem> {
    let app2 = app.clone();
    let info = tokio::task::spawn_blocking(move || store_info(&app2))
        .await
        .map_err(|_| Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "interrupted"))??;
    let content = html! {
        (store_alert(&root, &info.health, false))
        dl.facts {
            dt { "Size on disk" } dd { (format!("{:.1} MB", info.size_bytes as f64 / 1e6)) }
            dt { "Kept for" } dd { @if info.retention_days == 0 { "ever (retention_days: 0)" } @else { (info.retention_days) " days" } }
            @for (status, n) in &info.counts {
                dt { (status) } dd { a href=(root.to(&format!("messages?status={status}"))) { (n) } }
            }
        }
        @if info.retention_days > 0 {
            div.controls {
                (action(&root, "api/v1/store/purge", "Purge now", Some(&format!(
                    "Remove finished messages older than {} days now? Queued messages are kept.", info.retention_days))))
            }
        }
    };
    Ok(layout(&app, &root, "Store", content))
}
