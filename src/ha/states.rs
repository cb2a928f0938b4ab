//! State payloads from a status snapshot, the message rate, and the
//! bookkeeping that decides what to publish when: on change, high-rate
//! values at most once per [`COALESCE`] each, everything again after a
//! reconnect or a Home Assistant restart. Pure: the bridge feeds it
//! snapshots and the clock, and publishes what it hands out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;

use super::discovery::{Discovery, ONLINE, StateValue, VERSION};
use crate::engine::{EngineStatus, ItemStatus, ProductionState};

/// The shortest time between two publications of one high-rate value.
pub const COALESCE: Duration = Duration::from_secs(1);
/// The window of the message rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// An ISO 8601 time with an explicit UTC offset, as `device_class:
/// timestamp` wants it: `2027-01-31T23:59:59+00:00`.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Messages received by services per minute, over the last minute.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records the total received so far.
    pub fn sample(&mut self, now: Instant, total: u64) {
        if self.samples.back().is_some_and(|&(_, last)| total < last) {
            // Counters restarted: start over.
            self.samples.clear();
        }
        self.samples.push_back((now, total));
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > 512 {
            self.samples.pop_front();
        }
    }

    /// Messages per minute over the samples of the window.
    pub fn per_minute(&self) -> f64 {
        let (Some(&(t0, n0)), Some(&(t1, n1))) = (self.samples.front(), self.samples.back()) else { return 0.0 };
        let elapsed = t1.duration_since(t0).as_secs_f64();
        if elapsed < 1.0 {
            return 0.0;
        }
        (n1.saturating_sub(n0)) as f64 * 60.0 / elapsed
    }
}

/// Messages received by every service: the engine's inbound traffic.
pub fn inbound_total(status: &EngineStatus) -> u64 {
    status.productions.iter().flat_map(|p| &p.items).filter(|i| i.role == "service").map(|i| i.received).sum()
}

/// Messages an item processed: received by a service, taken by a router,
/// delivered by an operation.
pub fn processed(item: &ItemStatus) -> u64 {
    if item.role == "operation" { item.sent } else { item.received }
}

fn on_off(on: bool) -> String {
    if on { "ON" } else { "OFF" }.to_owned()
}

/// What Home Assistant shows for an unknown value of a sensor.
const UNKNOWN: &str = "None";

/// The payload of a state topic, or `None` to leave it as it is (a
/// production switch while it starts or stops, a value whose subject is
/// gone).
pub fn payload(value: &StateValue, status: &EngineStatus, rate: f64) -> Option<String> {
    let item = |p: &str, i: &str| status.item(p, i);
    let certificate = |name: &str| status.certificates.iter().find(|c| c.name == name);
    Some(match value {
        StateValue::Availability => ONLINE.to_owned(),
        StateValue::EngineVersion => VERSION.to_owned(),
        StateValue::EngineStarted => timestamp(OffsetDateTime::from(status.started_at)),
        StateValue::EngineStoreSize => format!("{:.2}", status.store_bytes as f64 / (1024.0 * 1024.0)),
        StateValue::EngineMessageRate => format!("{rate:.1}"),
        StateValue::ProductionSwitch(p) => match status.production(p)?.state {
            ProductionState::Running | ProductionState::Troubled => on_off(true),
            ProductionState::Stopped => on_off(false),
            ProductionState::Starting | ProductionState::Stopping => return None,
        },
        StateValue::ProductionStatus(p) => status.production(p)?.state.as_str().to_owned(),
        StateValue::ProductionQueued(p) => status.production(p)?.queued.to_string(),
        StateValue::ItemQueueDepth(p, i) => item(p, i)?.queue_depth.to_string(),
        StateValue::ItemConnected(p, i) => on_off(item(p, i)?.connections > 0),
        StateValue::ItemMessages(p, i) => processed(item(p, i)?).to_string(),
        StateValue::ItemErrors(p, i) => item(p, i)?.errors.to_string(),
        StateValue::ItemEnabled(p, i) => on_off(item(p, i)?.enabled),
        StateValue::ItemAttributes(p, i) => {
            let it = item(p, i)?;
            json!({
                "kind": it.kind,
                "role": it.role,
                "state": it.state.as_str(),
                "enabled": it.enabled,
                "connections": it.connections,
                "received": it.received,
                "sent": it.sent,
                "errors": it.errors,
                "last_error": it.last_error,
            })
            .to_string()
        }
        StateValue::CertificateExpiry(name) => {
            certificate(name)?.earliest_not_after.map_or_else(|| UNKNOWN.to_owned(), timestamp)
        }
        StateValue::CertificateDaysLeft(name) => {
            certificate(name)?.days_left.map_or_else(|| UNKNOWN.to_owned(), |d| d.to_string())
        }
        StateValue::CertificateProblem(name) => on_off(certificate(name)?.problem),
        StateValue::CertificateAttributes(name) => {
            let c = certificate(name)?;
            json!({
                "role": c.role,
                "subject": c.subject,
                "issuer": c.issuer,
                "serial": c.serial,
                "subject_alt_names": c.subject_alt_names,
                "sha256_fingerprint": c.sha256_fingerprint,
                "not_after": c.not_after.map(timestamp),
                "earliest_not_after": c.earliest_not_after.map(timestamp),
                "earliest_expiring": c.earliest_expiring,
                "days_left": c.days_left,
                "problems": c.problems.iter().map(|f| format!("{}: {}", f.severity, f.message)).collect::<Vec<_>>(),
                "checked_at": timestamp(c.checked_at),
            })
            .to_string()
        }
    })
}

#[derive(Debug)]
struct Slot {
    value: StateValue,
    desired: Option<String>,
    sent: Option<String>,
    last_sent: Option<Instant>,
}

/// What has been published on which state topic, and what is due.
#[derive(Debug)]
pub struct States {
    slots: BTreeMap<String, Slot>,
    /// Topics in the order of the discovery (availability first).
    order: Vec<String>,
}

impl States {
    /// Tracks the state topics of a discovery.
    pub fn new(discovery: &Discovery) -> Self {
        let mut slots = BTreeMap::new();
        let mut order = Vec::new();
        for s in &discovery.states {
            order.push(s.topic.clone());
            slots.insert(s.topic.clone(), Slot { value: s.value.clone(), desired: None, sent: None, last_sent: None });
        }
        Self { slots, order }
    }

    /// Takes the values of a new snapshot.
    pub fn update(&mut self, status: &EngineStatus, rate: f64) {
        for slot in self.slots.values_mut() {
            if let Some(p) = payload(&slot.value, status, rate) {
                slot.desired = Some(p);
            }
        }
    }

    /// Forgets what was published, so that everything goes out again (a new
    /// connection, Home Assistant restarted).
    pub fn resend_all(&mut self) {
        for slot in self.slots.values_mut() {
            slot.sent = None;
        }
    }

    /// Publishes this topic again even if unchanged (the answer to a
    /// command that changed nothing, so Home Assistant's switch settles).
    pub fn resend(&mut self, topic: &str) {
        if let Some(slot) = self.slots.get_mut(topic) {
            slot.sent = None;
            slot.last_sent = None;
        }
    }

    /// The topics whose value is due now, in order, with their payloads.
    /// `all` ignores the coalescing interval (a final flush at shutdown).
    pub fn due(&self, now: Instant, all: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for topic in &self.order {
            let Some(slot) = self.slots.get(topic) else { continue };
            let Some(desired) = &slot.desired else { continue };
            if slot.sent.as_ref() == Some(desired) {
                continue;
            }
            let waiting = slot.value.coalesced()
                && !all
                && slot.sent.is_some()
                && slot.last_sent.is_some_and(|t| now.duration_since(t) < COALESCE);
            if !waiting {
                out.push((topic.clone(), desired.clone()));
            }
        }
        out
    }

    /// Records a publication.
    pub fn sent(&mut self, topic: &str, payload: String, now: Instant) {
        if let Some(slot) = self.slots.get_mut(topic) {
            slot.sent = Some(payload);
            slot.last_sent = Some(now);
        }
    }

    /// The latest value of a topic.
    pub fn desired(&self, topic: &str) -> Option<&str> {
        self.slots.get(topic).and_then(|s| s.desired.as_deref())
    }
}

/// The `HashMap` of topics of production switches and enable switches to
/// resend after a command on them (so a refused command shows the real
/// state again).
pub fn state_topic_for_command(discovery: &Discovery) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for e in &discovery.entities {
        let (Some(command), Some(state)) = (e.payload.get("command_topic"), e.payload.get("state_topic")) else {
            continue;
        };
        if let (Some(c), Some(s)) = (command.as_str(), state.as_str()) {
            map.insert(c.to_owned(), s.to_owned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ItemState, ProductionStatus};
    use crate::ha::discovery::{Layout, Naming};
    use std::time::SystemTime;

    fn status(state: ProductionState, depth: u64) -> EngineStatus {
        EngineStatus {
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            store_bytes: 3 * 1024 * 1024 / 2,
            certificates: Vec::new(),
            productions: vec![ProductionStatus {
                id: "adt".into(),
                name: "ADT".into(),
                state,
                queued: depth,
                items: vec![
                    ItemStatus {
                        name: "In".into(),
                        kind: "mllp_in",
                        role: "service",
                        state: ItemState::Running,
                        enabled: true,
                        queue_depth: 0,
                        connections: 2,
                        received: 7,
                        sent: 7,
                        errors: 0,
                        last_error: None,
                    },
                    ItemStatus {
                        name: "Out".into(),
                        kind: "mllp_out",
                        role: "operation",
                        state: ItemState::Error,
                        enabled: true,
                        queue_depth: depth,
                        connections: 0,
                        received: 9,
                        sent: 4,
                        errors: 1,
                        last_error: Some("connection refused".into()),
                    },
                ],
            }],
        }
    }

    fn discovery() -> Discovery {
        let naming = Naming { prefix: "homeassistant".into(), instance: "sb".into(), ui_url: None };
        Discovery::build(&naming, &Layout::new(&status(ProductionState::Running, 0)))
    }

    #[test]
    fn payloads() {
        let s = status(ProductionState::Troubled, 5);
        let p = |v: StateValue| payload(&v, &s, 12.34);
        assert_eq!(p(StateValue::Availability).as_deref(), Some("online"));
        assert_eq!(p(StateValue::EngineStarted).as_deref(), Some("2027-01-15T08:00:00+00:00"));
        assert_eq!(p(StateValue::EngineStoreSize).as_deref(), Some("1.50"));
        assert_eq!(p(StateValue::EngineMessageRate).as_deref(), Some("12.3"));
        assert_eq!(p(StateValue::ProductionSwitch("adt".into())).as_deref(), Some("ON"));
        assert_eq!(p(StateValue::ProductionStatus("adt".into())).as_deref(), Some("troubled"));
        assert_eq!(p(StateValue::ItemQueueDepth("adt".into(), "Out".into())).as_deref(), Some("5"));
        assert_eq!(p(StateValue::ItemConnected("adt".into(), "In".into())).as_deref(), Some("ON"));
        assert_eq!(p(StateValue::ItemConnected("adt".into(), "Out".into())).as_deref(), Some("OFF"));
        assert_eq!(p(StateValue::ItemMessages("adt".into(), "In".into())).as_deref(), Some("7"));
        assert_eq!(p(StateValue::ItemMessages("adt".into(), "Out".into())).as_deref(), Some("4"));
        let attrs: serde_json::Value =
            serde_json::from_str(&p(StateValue::ItemAttributes("adt".into(), "Out".into())).unwrap()).unwrap();
        assert_eq!(attrs["last_error"], "connection refused");
        assert_eq!(attrs["state"], "error");
        assert_eq!(p(StateValue::ItemQueueDepth("adt".into(), "Gone".into())), None);
        let starting = status(ProductionState::Starting, 0);
        assert_eq!(payload(&StateValue::ProductionSwitch("adt".into()), &starting, 0.0), None);
    }

    #[test]
    fn changes_are_published_and_high_rate_values_coalesced() {
        let d = discovery();
        let mut states = States::new(&d);
        let t0 = Instant::now();
        states.update(&status(ProductionState::Running, 0), 0.0);
        let first = states.due(t0, false);
        assert_eq!(first[0], ("sb/availability".to_owned(), "online".to_owned()));
        for (topic, payload) in first {
            states.sent(&topic, payload, t0);
        }
        assert!(states.due(t0, false).is_empty(), "nothing changed");

        // The queue grows and the production is troubled: the status goes
        // out at once, the depth waits for its second.
        states.update(&status(ProductionState::Troubled, 3), 0.0);
        let t1 = t0 + Duration::from_millis(300);
        let due: Vec<String> = states.due(t1, false).into_iter().map(|(t, _)| t).collect();
        assert!(due.contains(&"sb/production/adt/status".to_owned()));
        assert!(!due.contains(&"sb/production/adt/item/out/queue_depth".to_owned()));
        for (topic, payload) in states.due(t1, false) {
            states.sent(&topic, payload, t1);
        }
        let t2 = t0 + COALESCE;
        let due = states.due(t2, false);
        assert!(due.contains(&("sb/production/adt/item/out/queue_depth".to_owned(), "3".to_owned())));
        assert!(due.contains(&("sb/production/adt/queued".to_owned(), "3".to_owned())));
        for (topic, payload) in states.due(t2, false) {
            states.sent(&topic, payload, t2);
        }
        // A final flush takes what still waits for its second.
        states.update(&status(ProductionState::Troubled, 4), 0.0);
        let t3 = t2 + Duration::from_millis(100);
        assert!(states.due(t3, false).is_empty());
        assert!(states.due(t3, true).contains(&("sb/production/adt/item/out/queue_depth".to_owned(), "4".to_owned())));

        // After a reconnect everything goes out again.
        states.resend_all();
        assert!(states.due(t2, false).len() >= d.states.len() - 1);
    }

    #[test]
    fn resend_one_topic() {
        let d = discovery();
        let mut states = States::new(&d);
        let now = Instant::now();
        states.update(&status(ProductionState::Running, 0), 0.0);
        for (topic, payload) in states.due(now, false) {
            states.sent(&topic, payload, now);
        }
        states.resend("sb/production/adt/state");
        assert_eq!(states.due(now, false), vec![("sb/production/adt/state".to_owned(), "ON".to_owned())]);
        let map = state_topic_for_command(&d);
        assert_eq!(map["sb/production/adt/set"], "sb/production/adt/state");
    }

    #[test]
    fn rate() {
        let mut meter = RateMeter::default();
        let t0 = Instant::now();
        assert_eq!(meter.per_minute(), 0.0);
        meter.sample(t0, 100);
        meter.sample(t0 + Duration::from_secs(30), 130);
        assert!((meter.per_minute() - 60.0).abs() < 1e-9);
        // Old samples leave the window.
        for s in 31..=200 {
            meter.sample(t0 + Duration::from_secs(s), 130);
        }
        assert_eq!(meter.per_minute(), 0.0);
        // A restart of the counters starts over.
        meter.sample(t0 + Duration::from_secs(201), 5);
        assert_eq!(meter.per_minute(), 0.0);
    }

    #[test]
    fn timestamps_have_an_offset() {
        let t = OffsetDateTime::from_unix_timestamp(1_801_439_999).unwrap();
        assert_eq!(timestamp(t), "2027-01-31T23:59:59+00:00");
    }
}
