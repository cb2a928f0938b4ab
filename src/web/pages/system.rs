//! Certificates: each TLS configuration with its chain's expiry and the
//! doctor's findings.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};

use super::{App, Root, layout};

pub(super) fn routes() -> Router<App> {
    Router::new().route("/certificates", get(certificates))
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
