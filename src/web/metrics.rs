//! `/metrics` in the OpenMetrics text format, for Prometheus and the like.
//!
//! The figures are the status hub's own (the same counts Home Assistant
//! shows), read at each scrape into a fresh registry: the engine keeps its
//! counters in atomics already, and copying a few dozen numbers per scrape
//! is cheaper than mirroring every bump.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    production: String,
    item: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProductionLabels {
    production: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    tls: String,
}

fn family<M: prometheus_client::metrics::TypedMetric + Default + Clone + Send + Sync + std::fmt::Debug + 'static, L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<L, M>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + std::fmt::Debug + 'static,
    Family<L, M>: prometheus_client::encoding::EncodeMetric,
{
    let family = Family::<L, M>::default();
    registry.register(name, help, family.clone());
    family
}

pub(super) async fn serve(State(app): State<App>) -> Response {
    let status = app.engine.status();
    let mut registry = Registry::with_prefix("switchboard");
    let received: Family<ItemLabels, Counter> = family(&mut registry, "messages_received", "Messages an item received");
    let sent: Family<ItemLabels, Counter> = family(&mut registry, "messages_sent", "Messages an item passed on");
    let errors: Family<ItemLabels, Counter> = family(&mut registry, "errors", "Errors of an item");
    let depth: Family<ItemLabels, Gauge> = family(&mut registry, "queue_depth", "Messages waiting in an item's queue");
    let connections: Family<ItemLabels, Gauge> = family(&mut registry, "connections", "Open connections of an item");
    let up: Family<ItemLabels, Gauge> = family(&mut registry, "item_up", "1 while an item runs without error");
    let running: Family<ProductionLabels, Gauge> =
        family(&mut registry, "production_up", "1 while a production takes traffic (running or troubled)");
    let expiry: Family<TlsLabels, Gauge> = family(
        &mut registry,
        "certificate_expiry_timestamp_seconds",
        "When the first certificate of a TLS configuration expires (Unix time)",
    );
    let store_bytes = Gauge::<i64>::default();
    registry.register("store_size_bytes", "Size of the message store on disk", store_bytes.clone());
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for p in &status.productions {
        running.get_or_create(&ProductionLabels { production: p.id.clone() }).set(i64::from(p.state.is_up()));
        for i in &p.items {
            let labels = ItemLabels { production: p.id.clone(), item: i.name.clone() };
            received.get_or_create(&labels).inc_by(i.received);
            sent.get_or_create(&labels).inc_by(i.sent);
            errors.get_or_create(&labels).inc_by(i.errors);
            depth.get_or_create(&labels).set(as_i64(i.queue_depth));
            connections.get_or_create(&labels).set(i64::from(i.connections));
            up.get_or_create(&labels).set(i64::from(i.state == crate::engine::ItemState::Running));
        }
    }
    for c in &status.certificates {
        if let Some(at) = c.earliest_not_after {
            expiry.get_or_create(&TlsLabels { tls: c.name.clone() }).set(at.unix_timestamp());
        }
    }
    store_bytes.set(as_i64(status.store_bytes));
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
