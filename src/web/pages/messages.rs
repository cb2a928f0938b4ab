//! The message viewer: search with keyset paging, and a message's detail
//! (fields, raw text, trace, reply, resend, edit & resend, differences from
//! the message it was resent from).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use maud::{Markup, html};
use time::OffsetDateTime;
use time::macros::format_description;

use super::{App, Root, badge, layout, seg, visible_separators};
use crate::config::ItemRole;
use crate::store::{MessagePage, MessageSummary};
use crate::web::api::messages::{Detail, Element, SearchParams, load_detail};
use crate::web::extract::{Path, Query};
use crate::web::problem::Problem;

pub(super) fn routes() -> Router<App> {
    Router::new().route("/messages", get(search)).route("/messages/{id}", get(detail))
}

/// Unix milliseconds as `2026-12-05 06:52:40.123` (UTC).
pub(crate) fn at(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `2026-12-05T06:52` or `2026-12-05 06:52[:40]` (UTC) as Unix milliseconds.
fn parse_at(text: &str) -> Option<i64> {
    let text = text.trim().replace('T', " ");
    let long = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let short = format_description!("[year]-[month]-[day] [hour]:[minute]");
    let day = format_description!("[year]-[month]-[day]");
    let t = time::PrimitiveDateTime::parse(&text, &long)
        .or_else(|_| time::PrimitiveDateTime::parse(&text, &short))
        .or_else(|_| time::Date::parse(&text, &day).map(|d| d.midnight()))
        .ok()?;
    i64::try_from(t.assume_utc().unix_timestamp_nanos() / 1_000_000).ok()
}

/// The search form's fields, as written (times as text).
#[derive(Debug, Default, serde::Deserialize)]
struct Form {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    production: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    message_type: String,
    #[serde(default)]
    control_id: String,
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    patient_name: String,
    #[serde(default)]
    text: String,
    before: Option<i64>,
}

impl Form {
    fn params(&self) -> Result<SearchParams, Problem> {
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let time = |s: &str, name: &str| -> Result<Option<i64>, Problem> {
            match opt(s) {
                None => Ok(None),
                Some(t) => parse_at(&t).map(Some).ok_or_else(|| {
                    Problem::bad_request(format!("{name} {t:?} is not a time; write 2026-12-05 06:30 (UTC)"))
                }),
            }
        };
        Ok(SearchParams {
            from: time(&self.from, "from")?,
            to: time(&self.to, "to")?,
            production: opt(&self.production),
            item: opt(&self.item),
            status: opt(&self.status),
            message_type: opt(&self.message_type),
            control_id: opt(&self.control_id),
            patient_id: opt(&self.patient_id),
            patient_name: opt(&self.patient_name),
            text: Some(self.text.clone()).filter(|t| !t.is_empty()),
            before: self.before,
            limit: None,
        })
    }
}

fn input(name: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        div {
            label for=(name) { (label) }
            input #(name) name=(name) value=(value) placeholder=(placeholder);
        }
    }
}

const STATUSES: [&str; 6] = ["queued", "delivering", "completed", "error", "suspended", "discarded"];

async fn search(
    State(app): State<App>,
    root: Root,
    RawQuery(raw): RawQuery,
    Query(form): Query<Form>,
) -> Result<Markup, Problem> {
    let params = form.params()?;
    let query = params.query()?;
    let limit = params.limit()?;
    let store = app.engine.store().clone();
    let before = params.before;
    let page: MessagePage =
        tokio::task::spawn_blocking(move || store.search_messages(&query, before, limit))
            .await
            .map_err(|_| Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the search was interrupted"))??;
    // The same filters with another starting point.
    let others: String = raw
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("before="))
        .collect::<Vec<_>>()
        .join("&");
    let older = page.next.map(|next| {
        if others.is_empty() { format!("messages?before={next}") } else { format!("messages?{others}&before={next}") }
    });
    let free_text = !form.text.is_empty();
    let content = html! {
        form.filters method="get" {
            (input("from", "From (UTC)", &form.from, "2026-12-05 06:00"))
            (input("to", "To (UTC)", &form.to, "2026-12-05 07:00"))
            (input("production", "Production", &form.production, "demo"))
            (input("item", "Item", &form.item, "Lab out"))
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[form.status == s] { (s) }
                    }
                }
            }
            (input("message_type", "Type", &form.message_type, "ADT^A01"))
            (input("control_id", "Control id (MSH-10)", &form.control_id, ""))
            (input("patient_id", "Patient id (PID-3)", &form.patient_id, ""))
            (input("patient_name", "Patient name (PID-5)", &form.patient_name, "DOE"))
            (input("text", "Text in message", &form.text, ""))
            div { button type="submit" { "Search" } " " a href=(root.to("messages")) { "Clear" } }
        }
        @if free_text {
            p.muted {
                "Looked through " (page.scanned) " messages"
                @if let Some(back) = page.scanned_back_to { ", back to " (at(back)) }
                "."
            }
        }
        @if page.messages.is_empty() {
            p { "No messages found" @if free_text && page.next.is_some() { " yet" } "." }
        } @else {
            (summary_table(&root, &page.messages, None))
        }
        @if let Some(older) = &older {
            p {
                a.button href=(root.to(older)) {
                    @if free_text && page.messages.len() < limit { "Search further" } @else { "Older →" }
                }
            }
        }
    };
    Ok(layout(&app, &root, "Messages", content))
}

fn summary_table(root: &Root, rows: &[MessageSummary], start: Option<i64>) -> Markup {
    html! {
        div.table-wrap {
            table.messages {
                thead { tr {
                    th.num { "Id" } th { "Created (UTC)" } @if start.is_some() { th.num { "+ms" } }
                    th { "Item" } th { "Status" } th { "Type" } th { "Control id" } th { "Patient" } th.num { "Tries" } th { "Error" }
                } }
                tbody {
                    @for m in rows {
                        tr {
                            td.num { a href=(root.to(&format!("messages/{}", m.id))) { (m.id) } }
                            td { (at(m.created_at)) }
                            @if let Some(start) = start { td.num { (m.updated_at - start) } }
                            td { (m.production) " / " (m.target) }
                            td { (badge(m.status.as_str(), "")) }
                            td { (m.message_type.as_deref().unwrap_or("")) }
                            td { (m.control_id.as_deref().unwrap_or("")) }
                            td { (m.patient_id.as_deref().unwrap_or("")) " " (m.patient_name.as_deref().unwrap_or("")) }
                            td.num { (m.attempts) }
                            td.error { (m.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

fn outline_table(lines: &[Element]) -> Markup {
    html! {
        div.table-wrap {
            table.outline {
                tbody {
                    @for l in lines {
                        tr data-depth=(l.depth) {
                            td { code style=(format!("padding-left:{}em", l.depth)) { (l.path) } }
                            td { (l.value) }
                        }
                    }
                }
            }
        }
    }
}

/// The fields that differ between two outlines, by path.
fn differences(before: &[Element], after: &[Element]) -> Vec<(String, Option<String>, Option<String>)> {
    let leaf = |lines: &[Element]| -> BTreeMap<String, String> {
        lines.iter().filter(|l| l.depth == 1).map(|l| (l.path.clone(), l.value.clone())).collect()
    };
    let (a, b) = (leaf(before), leaf(after));
    let mut out = Vec::new();
    for (path, value) in &a {
        match b.get(path) {
            Some(new) if new == value => {}
            new => out.push((path.clone(), Some(value.clone()), new.cloned())),
        }
    }
    for (path, value) in &b {
        if !a.contains_key(path) {
            out.push((path.clone(), None, Some(value.clone())));
        }
    }
    out
}

async fn detail(State(app): State<App>, root: Root, Path(id): Path<i64>) -> Result<Markup, Problem> {
    let d: Detail = load_detail(&app, id)?;
    let m = &d.message;
    let original = match m.resent_from {
        Some(from) => load_detail(&app, from).ok(),
        None => None,
    };
    let targets: Vec<String> = app
        .engine
        .config()
        .productions
        .iter()
        .filter(|p| p.id == m.production)
        .flat_map(|p| p.items.iter())
        .filter(|i| i.role() != ItemRole::Service)
        .map(|i| i.name.clone())
        .collect();
    let start = d.trace.first().map(|t| t.created_at);
    let editable = d.body.replace('\r', "\n");
    let content = html! {
        dl.facts {
            dt { "Status" } dd { (badge(m.status.as_str(), "")) }
            dt { "Where" } dd {
                a href=(root.to(&format!("productions/{}", seg(&m.production)))) { (m.production) } " · "
                (m.source) " → "
                a href=(root.to(&format!("productions/{}/items/{}", seg(&m.production), seg(&m.target)))) { (m.target) }
            }
            dt { "Type" } dd { (m.message_type.as_deref().unwrap_or("—")) }
            dt { "Control id" } dd { (m.control_id.as_deref().unwrap_or("—")) }
            dt { "Patient" } dd { (m.patient_id.as_deref().unwrap_or("—")) " " (m.patient_name.as_deref().unwrap_or("")) }
            dt { "Created" } dd { (at(m.created_at)) " UTC" }
            dt { "Updated" } dd { (at(m.updated_at)) " UTC" }
            dt { "Attempts" } dd { (m.attempts) }
            @if let Some(e) = &m.error { dt { "Error" } dd.error { (e) } }
            @if let Some(from) = m.resent_from {
                dt { "Resent from" } dd { a href=(root.to(&format!("messages/{from}"))) { "message " (from) } }
            }
            @if !d.resends.is_empty() {
                dt { "Resent as" } dd {
                    @for (n, r) in d.resends.iter().enumerate() {
                        @if n > 0 { ", " }
                        a href=(root.to(&format!("messages/{r}"))) { (r) }
                    }
                }
            }
        }
        h2 { "Trace" }
        (summary_table(&root, &d.trace, start))
        @if let Some(o) = &original {
            h2 { "Changed from message " (o.message.id) }
            @let diff = differences(&o.outline, &d.outline);
            @if diff.is_empty() { p.muted { "The same text." } } @else {
                div.table-wrap { table.diff {
                    thead { tr { th { "Field" } th { "Before" } th { "After" } } }
                    tbody { @for (path, before, after) in &diff {
                        tr { td { code { (path) } } td.before { (before.as_deref().unwrap_or("—")) } td.after { (after.as_deref().unwrap_or("—")) } }
                    } }
                } }
            }
        }
        h2 { "Fields" }
        @if let Some(e) = &d.parse_error { p.problem { "The message does not parse: " (e) } }
        (outline_table(&d.outline))
        h2 { "Raw" }
        pre.raw { (visible_separators(&d.body)) }
        @if let Some(r) = &d.reply {
            h2 { "Reply" span.muted { " received " (at(r.received_at)) " UTC" } }
            (outline_table(&r.outline))
            pre.raw { (visible_separators(&r.body)) }
        }
        h2 { "Resend" }
        form.resend data-post-json=(root.to(&format!("api/v1/messages/{id}/resend"))) data-then=(root.to("messages/{id}")) {
            label for="resend-target" { "To" }
            select #resend-target name="target" {
                @for t in &targets { option value=(t) selected[*t == m.target] { (t) } }
            }
            " " button type="submit" { "Resend as it is" }
            p.form-result {}
        }
        h2 { "Edit and resend" }
        form.edit data-post-json=(root.to(&format!("api/v1/messages/{id}/resend"))) data-then=(root.to("messages/{id}")) {
            label for="edit-target" { "To" }
            select #edit-target name="target" {
                @for t in &targets { option value=(t) selected[*t == m.target] { (t) } }
            }
            label for="edit-path" { "Set a field (optional)" }
            div.controls {
                input #edit-path name="edit_path" placeholder="PID-8";
                input name="edit_value" placeholder="F" aria-label="value";
            }
            label for="edit-message" { "Message text (one segment per line)" }
            textarea #edit-message name="message" rows="10" spellcheck="false" { (editable) }
            button type="submit" { "Check and resend" }
            p.form-result {}
        }
    };
    Ok(layout(&app, &root, &format!("Message {id}"), content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_print_in_utc() {
        let ms = parse_at("2026-12-05 06:52:40").unwrap();
        assert_eq!(at(ms), "2026-12-05 06:52:40.000");
        assert_eq!(parse_at("2026-12-05T06:52"), Some(ms - 40_000));
        assert_eq!(parse_at("2026-12-05"), Some(ms - (6 * 3600 + 52 * 60 + 40) * 1000));
        assert_eq!(parse_at("yesterday"), None);
    }

    #[test]
    fn differences_name_changed_added_and_removed_fields() {
        let e = |path: &str, value: &str| Element { depth: 1, path: path.into(), value: value.into() };
        let before = [e("PID-8", "M"), e("PID-5", "DOE"), e("PID-19", "x")];
        let after = [e("PID-8", "F"), e("PID-5", "DOE"), e("PID-7", "1980")];
        let diff = differences(&before, &after);
        assert_eq!(
            diff,
            [
                ("PID-19".into(), Some("x".into()), None),
                ("PID-8".into(), Some("M".into()), Some("F".into())),
                ("PID-7".into(), None, Some("1980".into())),
            ]
        );
    }
}
