//! The web UI's pages, rendered on the server (maud) with a little
//! JavaScript (`assets/app.js`) for live status, buttons and forms.
//!
//! Every link is relative to the page's own address ([`Root`]), never
//! absolute, so the UI works under Home Assistant's ingress prefix and
//! under any other.

mod messages;
mod overview;
mod system;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::App;

pub(super) fn routes() -> Router<App> {
    overview::routes().merge(messages::routes()).merge(system::routes())
}

/// The way from the current page back to the UI's root: `./` for a page at
/// the top, `../` one level down, and so on. Every link starts with it.
#[derive(Clone, Debug)]
pub(crate) struct Root(String);

impl Root {
    fn for_path(path: &str) -> Self {
        let depth = path.trim_start_matches('/').matches('/').count();
        Self(if depth == 0 { "./".to_owned() } else { "../".repeat(depth) })
    }

    /// A link to `path` (relative to the root, without a leading `/`).
    pub(crate) fn to(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Root {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::for_path(parts.uri.path()))
    }
}

/// A path segment for a link: production ids are safe already, item names
/// may hold spaces.
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page around `content`.
pub(crate) fn layout(app: &App, root: &Root, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(app.csrf);
                meta name="color-scheme" content="light dark";
                title { (title) " · Switchboard" }
                link rel="stylesheet" href=(root.to("assets/app.css"));
                script src=(root.to("assets/app.js")) defer {}
            }
            body data-root=(root.0) {
                header {
                    nav {
                        a.brand href=(root.to("")) { "Switchboard" }
                        a href=(root.to("")) { "Overview" }
                        a href=(root.to("messages")) { "Messages" }
                        a href=(root.to("events")) { "Events" }
                        a href=(root.to("certificates")) { "Certificates" }
                        a href=(root.to("store")) { "Store" }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
                div #toast role="status" aria-live="polite" {}
            }
        }
    }
}

/// A state shown as a coloured word, kept live by `app.js` through `key`.
pub(crate) fn badge(state: &str, key: &str) -> Markup {
    html! { span.badge data-k=(key) data-state=(state) { (state) } }
}

/// What is wrong with the store, at the top of the overview and the store
/// page; nothing when it is sound. The texts are the store's own (paths
/// and SQLite's findings, never message content).
pub(crate) fn store_alert(root: &Root, health: &crate::store::StoreHealth, link: bool) -> Markup {
    html! {
        @if health.has_problem() {
            div.alert role="alert" {
                @if let Some(trouble) = &health.commit_trouble {
                    p { strong { "The store cannot commit: " } (trouble) }
                    p.muted { "Received messages and delivery results wait in the inbound and delivery logs and are committed as soon as the store can; acknowledgments stop once 4 MiB wait." }
                }
                @if let Some(damage) = &health.damage {
                    p { strong { "The store's database is damaged." } }
                    pre.raw { (damage) }
                }
                @if link { p { a href=(root.to("store")) { "Store details" } } }
            }
        }
    }
}

/// A button that posts to `action` (relative to the root) and reloads or
/// shows the answer; `confirm` asks first.
pub(crate) fn action(root: &Root, action: &str, label: &str, confirm: Option<&str>) -> Markup {
    html! {
        button type="button" data-post=(root.to(action)) data-confirm=[confirm] { (label) }
    }
}

/// Text that may hold anything (a message): escaped by maud; this marks
/// where raw separators are made visible.
pub(crate) fn visible_separators(text: &str) -> Markup {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("<span class=\"sep\">\u{21b5}</span>\n"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                out.push_str(&format!("<span class=\"sep\">\\x{:02X}</span>", c as u32));
            }
            c => out.push(c),
        }
    }
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_climb_back_to_the_root() {
        assert_eq!(Root::for_path("/").to("messages"), "./messages");
        assert_eq!(Root::for_path("/messages").to("assets/app.css"), "./assets/app.css");
        assert_eq!(Root::for_path("/messages/12").to(""), "../");
        assert_eq!(Root::for_path("/productions/demo/items/ADT%20in").to("messages"), "../../../messages");
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("ADT in"), "ADT%20in");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(seg("lab-out_1.x"), "lab-out_1.x");
    }

    #[test]
    fn separators_show_and_markup_does_not_pass() {
        let shown = visible_separators("MSH|^~\\&|<b>\rPID\u{1}").into_string();
        assert!(shown.contains("&lt;b&gt;"), "{shown}");
        assert!(shown.contains("\u{21b5}"), "{shown}");
        assert!(shown.contains("\\x01"), "{shown}");
    }
}
