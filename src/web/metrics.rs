//! `/metrics` in the OpenMetrics text format, for Prometheus and the like.
//!
//! The figures are the status hub's own (the same counts Home Assistant
//! shows), read at each scrape into a fresh registry: the engine keeps its
//! counters in atomics already, and copying a few dozen numbers per scrape
//! is cheaper than mirroring every bump.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::App;
use crate::engine::{LATENCY_BUCKETS, LatencySnapshot};
use crate::sync::LockExt as _;

/// The engine's delivery-time histogram of one operation, as it was at the
/// scrape (see `engine::latency`).
#[derive(Clone, Debug, Default)]
struct Histogram(Arc<Mutex<LatencySnapshot>>);

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock_unpoisoned().clone();
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(snapshot.counts.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

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

fn family<M: TypedMetric + Default + Clone + Send + Sync + std::fmt::Debug + 'static, L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<L, M>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + std::fmt::Debug + 'static,
    Family<L, M>: EncodeMetric,
{
    let family = Family::<L, M>::default();
    registry.register(name, help, family.clone());
    family
}

/// A gauge without labels, registered with its value.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
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
    gauge(&mut registry, "store_size_bytes", "Size of the message store on disk", as_i64(status.store_bytes));
    gauge(
        &mut registry,
        "store_damaged",
        "1 once the integrity check found the store's database damaged",
        i64::from(status.store.damage.is_some()),
    );
    gauge(
        &mut registry,
        "store_commits_failing",
        "1 while the store cannot commit (a full disk, for one); messages wait in its logs",
        i64::from(status.store.commit_trouble.is_some()),
    );
    let latency: Family<ItemLabels, Histogram> = family(
        &mut registry,
        "delivery_duration_seconds",
        "How long an operation takes to deliver a message, from its first attempt to its result",
    );
    for (production, item, snapshot) in app.engine.delivery_latencies() {
        *latency.get_or_create(&ItemLabels { production, item }).0.lock_unpoisoned() = snapshot;
    }
    if let Some(mqtt) = &app.mqtt {
        let connected = matches!(*mqtt.borrow(), crate::ha::MqttStatus::Connected(_));
        gauge(&mut registry, "mqtt_connected", "1 while connected to the MQTT broker", i64::from(connected));
    }
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
