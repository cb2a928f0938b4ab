//! State payloads from a status snapshot, the message rate, and the
//! bookkeeping that decides what to publish when.
//!
//! Every publication of a state or of an attribute set is a `state_changed`
//! event in Home Assistant and a row in its recorder's database, so what
//! goes out is kept to what a user would want to see:
//!
//! - a value goes out when it changes, never when it does not;
//! - values that move with traffic (counters, queue depths, the rate, the
//!   store size) go out at most once per [`COUNTER_INTERVAL`] or
//!   [`GAUGE_INTERVAL`], with their latest value;
//! - attributes hold only what changes with its meaning (an item's kind,
//!   state and last error; a certificate's subject), never a counter;
//! - a `connected` that drops goes out only once it has stayed off for
//!   [`CONNECTED_HOLD`], so a sender that connects for every message shows
//!   as connected instead of flapping;
//! - everything goes out again after a reconnect or a Home Assistant
//!   restart, and at shutdown every value still waiting goes out at once.
//!
//! Pure: the bridge feeds it snapshots and the clock, and publishes what it
//! hands out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;

use super::discovery::{Discovery, ONLINE, StateValue, VERSION};
use crate::config::ItemRole;
use crate::engine::{EngineStatus, ItemStatus, ProductionState};

/// The shortest time between two publications of a counter (messages,
/// errors), the message rate and the store size.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(15);
/// The shortest time between two publications of a queue depth.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a `connected` must stay off before it is published as off.
pub const CONNECTED_HOLD: Duration = Duration::from_secs(5);
/// The window of the message rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How long after its last publication a value may go out again, for the
/// values that change with traffic; the rest go out as soon as they change.
fn interval(value: &StateValue) -> Option<Duration> {
    match value {
        StateValue::ItemMessages(..)
        | StateValue::ItemErrors(..)
        | StateValue::EngineMessageRate
        | StateValue::EngineStoreSize => Some(COUNTER_INTERVAL),
        StateValue::ProductionQueued(_) | StateValue::ItemQueueDepth(..) => Some(GAUGE_INTERVAL),
        _ => None,
    }
}

/// How long a new payload must stay before it goes out.
fn hold(value: &StateValue, payload: &str) -> Option<Duration> {
    matches!(value, StateValue::ItemConnected(..) if payload == "OFF").then_some(CONNECTED_HOLD)
}

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

/// Messages received from outside per minute: how many arrived over the
/// last minute, counted rather than extrapolated, so in the first minute
/// after the start it is the number received so far.
#[derive(Debug, Default)]
pub struct RateMeter {
    /// Totals received, oldest first; the first is the newest sample at
    /// least a window old (or the first of all).
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Starts counting at `now` from `total`.
    pub fn starting(now: Instant, total: u64) -> Self {
        Self { samples: VecDeque::from([(now, total)]) }
    }

    /// Records the total received so far.
    pub fn sample(&mut self, now: Instant, total: u64) {
        if self.samples.back().is_some_and(|&(_, last)| total < last) {
            // Counters restarted: start over.
            self.samples.clear();
        }
        self.samples.push_back((now, total));
        while self.samples.get(1).is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW) {
            self.samples.pop_front();
        }
        while self.samples.len() > 512 {
            self.samples.pop_front();
        }
    }

    /// Messages received over the window.
    pub fn per_minute(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(_, first)), Some(&(_, last))) => last.saturating_sub(first),
            _ => 0,
        }
    }
}

/// Messages an item processed: received by a service, taken by a router,
/// delivered by an operation.
pub fn processed(item: &ItemStatus) -> u64 {
    if item.role == ItemRole::Operation { item.sent } else { item.received }
}

fn on_off(on: bool) -> String {
    if on { "ON" } else { "OFF" }.to_owned()
}

/// A text as an attribute: Home Assistant's recorder drops attributes over
/// 16 KiB, and SQLite's findings on a badly damaged file run longer; the
/// web UI's store page has them in full.
fn attribute_text(text: &str) -> String {
    const MAX: usize = 2000;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (in full on the web UI's store page)", &text[..end])
}

/// What Home Assistant shows for an unknown value of a sensor.
const UNKNOWN: &str = "None";

/// The payload of a state topic, or `None` to leave it as it is (a
/// production switch while it starts or stops, a value whose subject is
/// gone).
pub fn payload(value: &StateValue, status: &EngineStatus, rate: u64) -> Option<String> {
    let item = |p: &str, i: &str| status.item(p, i);
    let certificate = |name: &str| status.certificates.iter().find(|c| c.name == name);
    Some(match value {
        StateValue::Availability => ONLINE.to_owned(),
        StateValue::EngineVersion => VERSION.to_owned(),
        StateValue::EngineStarted => timestamp(OffsetDateTime::from(status.started_at)),
        StateValue::EngineStoreSize => format!("{:.1}", status.store_bytes as f64 / (1024.0 * 1024.0)),
        StateValue::EngineMessageRate => rate.to_string(),
        StateValue::EngineStoreProblem => on_off(status.store.has_problem()),
        StateValue::EngineStoreAttributes => json!({
            "damage": status.store.damage.as_deref().map(attribute_text),
            "commit_trouble": status.store.commit_trouble.as_deref().map(attribute_text),
        })
        .to_string(),
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
            // No counters here (they are the sensors' states), and no
            // `state`: Home Assistant drops attributes by that name.
            json!({
                "kind": it.kind,
                "role": it.role,
                "item_state": it.state.as_str(),
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
                "problems": c.problems.iter().map(|f| format!("{}: {}", f.severity, f.message)).collect::<Vec<_>>(),
            })
            .to_string()
        }
    })
}

#[derive(Debug)]
struct Slot {
    value: StateValue,
    desired: Option<String>,
    /// When `desired` last changed.
    changed_at: Option<Instant>,
    sent: Option<String>,
    last_sent: Option<Instant>,
}

impl Slot {
    /// Whether the desired payload may go out at `now`; `all` skips every
    /// wait (the final flush at shutdown).
    fn due(&self, now: Instant, all: bool) -> bool {
        let Some(desired) = &self.desired else { return false };
        if self.sent.as_ref() == Some(desired) {
            return false;
        }
        if all || self.sent.is_none() {
            return true;
        }
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let spaced = interval(&self.value).is_none_or(|min| since(self.last_sent) >= min);
        let settled = hold(&self.value, desired).is_none_or(|min| since(self.changed_at) >= min);
        spaced && settled
    }
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
            let slot = Slot { value: s.value.clone(), desired: None, changed_at: None, sent: None, last_sent: None };
            slots.insert(s.topic.clone(), slot);
        }
        Self { slots, order }
    }

    /// Takes the values of a new snapshot, seen at `now`.
    pub fn update(&mut self, status: &EngineStatus, rate: u64, now: Instant) {
        for slot in self.slots.values_mut() {
            if let Some(p) = payload(&slot.value, status, rate)
                && slot.desired.as_ref() != Some(&p)
            {
                slot.desired = Some(p);
                slot.changed_at = Some(now);
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
    /// `all` skips the intervals and holds (a final flush at shutdown).
    pub fn due(&self, now: Instant, all: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for topic in &self.order {
            if let Some(slot) = self.slots.get(topic)
                && slot.due(now, all)
                && let Some(desired) = &slot.desired
            {
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
    use crate::config::KindTag;
    use crate::engine::{ItemState, ProductionStatus};
    use crate::ha::discovery::{Layout, Naming};
    use std::time::SystemTime;

    fn status(state: ProductionState, depth: u64) -> EngineStatus {
        EngineStatus {
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            store_bytes: 3 * 1024 * 1024 / 2,
            store: Default::default(),
            certificates: Vec::new(),
            productions: vec![ProductionStatus {
                id: "adt".into(),
                name: "ADT".into(),
                state,
                queued: depth,
                items: vec![
                    ItemStatus {
                        name: "In".into(),
                        kind: KindTag::MllpIn,
                        role: ItemRole::Service,
                        state: ItemState::Running,
                        enabled: true,
                        queue_depth: 0,
                        connections: 2,
                        received: 7,
                        sent: 7,
                        errors: 0,
                        last_error: None,
                        fed_by_engine: false,
                    },
                    ItemStatus {
                        name: "Out".into(),
                        kind: KindTag::MllpOut,
                        role: ItemRole::Operation,
                        state: ItemState::Error,
                        enabled: true,
                        queue_depth: depth,
                        connections: 0,
                        received: 9,
                        sent: 4,
                        errors: 1,
                        last_error: Some("connection refused".into()),
                        fed_by_engine: false,
                    },
                ],
            }],
        }
    }

    /// Damage or a disk that refuses commits turns the problem sensor on,
    /// with the texts as attributes, cut short past what Home Assistant's
    /// recorder keeps.
    #[test]
    fn store_problem_payloads() {
        let mut s = status(ProductionState::Running, 0);
        s.store.commit_trouble = Some("database or disk is full".into());
        let p = |s: &EngineStatus, v: StateValue| payload(&v, s, 0).unwrap();
        assert_eq!(p(&s, StateValue::EngineStoreProblem), "ON");
        let attributes: serde_json::Value = serde_json::from_str(&p(&s, StateValue::EngineStoreAttributes)).unwrap();
        assert_eq!(attributes, json!({ "damage": null, "commit_trouble": "database or disk is full" }));

        s.store.commit_trouble = None;
        s.store.damage = Some(format!("page 12: é{}", "x".repeat(5000)));
        assert_eq!(p(&s, StateValue::EngineStoreProblem), "ON");
        let attributes: serde_json::Value = serde_json::from_str(&p(&s, StateValue::EngineStoreAttributes)).unwrap();
        let damage = attributes["damage"].as_str().unwrap();
        assert!(
            damage.starts_with("page 12: é") && damage.ends_with("(in full on the web UI's store page)"),
            "{damage}"
        );
        assert!(damage.len() < 2100, "{}", damage.len());
    }

    fn discovery() -> Discovery {
        let naming = Naming { prefix: "homeassistant".into(), instance: "sb".into(), ui_url: None };
        Discovery::build(&naming, &Layout::new(&status(ProductionState::Running, 0)))
    }

    #[test]
    fn payloads() {
        let s = status(ProductionState::Troubled, 5);
        let p = |v: StateValue| payload(&v, &s, 12);
        assert_eq!(p(StateValue::Availability).as_deref(), Some("online"));
        assert_eq!(p(StateValue::EngineStarted).as_deref(), Some("2027-01-15T08:00:00+00:00"));
        assert_eq!(p(StateValue::EngineStoreSize).as_deref(), Some("1.5"));
        assert_eq!(p(StateValue::EngineMessageRate).as_deref(), Some("12"));
        assert_eq!(p(StateValue::EngineStoreProblem).as_deref(), Some("OFF"));
        assert_eq!(p(StateValue::EngineStoreAttributes).as_deref(), Some(r#"{"commit_trouble":null,"damage":null}"#));
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
        assert_eq!(attrs["item_state"], "error");
        // Nothing that moves with traffic, and no name Home Assistant drops.
        let keys: Vec<&str> = attrs.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["item_state", "kind", "last_error", "role"]);
        assert_eq!(p(StateValue::ItemQueueDepth("adt".into(), "Gone".into())), None);
        let starting = status(ProductionState::Starting, 0);
        assert_eq!(payload(&StateValue::ProductionSwitch("adt".into()), &starting, 0), None);
    }

    /// Publishes what is due at `now`, as the bridge does; returns the
    /// topics.
    fn publish(states: &mut States, now: Instant) -> Vec<String> {
        let due = states.due(now, false);
        for (topic, payload) in &due {
            states.sent(topic, payload.clone(), now);
        }
        due.into_iter().map(|(t, _)| t).collect()
    }

    fn with_traffic(state: ProductionState, depth: u64, delivered: u64, connections: u32) -> EngineStatus {
        let mut s = status(state, depth);
        let items = &mut s.productions[0].items;
        items[0].connections = connections;
        items[0].received = delivered + 7;
        items[1].sent = delivered + 4;
        s
    }

    #[test]
    fn changes_are_published_and_traffic_values_spaced() {
        let d = discovery();
        let mut states = States::new(&d);
        let t0 = Instant::now();
        states.update(&status(ProductionState::Running, 0), 0, t0);
        let first = states.due(t0, false);
        assert_eq!(first[0], ("sb/availability".to_owned(), "online".to_owned()));
        publish(&mut states, t0);
        assert!(states.due(t0 + Duration::from_secs(60), false).is_empty(), "nothing changed");

        // The production is troubled and the queue grows: the status goes
        // out at once, the depths once their interval has passed.
        let t1 = t0 + Duration::from_millis(300);
        states.update(&status(ProductionState::Troubled, 3), 0, t1);
        let due = publish(&mut states, t1);
        assert!(due.contains(&"sb/production/adt/status".to_owned()));
        assert!(!due.contains(&"sb/production/adt/item/out/queue_depth".to_owned()));
        let t2 = t0 + GAUGE_INTERVAL;
        let due = states.due(t2, false);
        assert!(due.contains(&("sb/production/adt/item/out/queue_depth".to_owned(), "3".to_owned())));
        assert!(due.contains(&("sb/production/adt/queued".to_owned(), "3".to_owned())));
        publish(&mut states, t2);

        // A final flush takes what still waits for its interval.
        let t3 = t2 + Duration::from_millis(100);
        states.update(&status(ProductionState::Troubled, 4), 0, t3);
        assert!(states.due(t3, false).is_empty());
        assert!(states.due(t3, true).contains(&("sb/production/adt/item/out/queue_depth".to_owned(), "4".to_owned())));

        // After a reconnect everything goes out again.
        states.resend_all();
        assert!(states.due(t3, false).len() >= d.states.len() - 1);
    }

    /// Traffic at 5 messages a second for a minute, a snapshot after each
    /// message: each counter goes out at most once per interval, with its
    /// latest value, and values that do not change never go out.
    #[test]
    fn steady_traffic_publishes_each_counter_once_per_interval() {
        let d = discovery();
        let mut states = States::new(&d);
        let t0 = Instant::now();
        states.update(&with_traffic(ProductionState::Running, 0, 0, 1), 0, t0);
        publish(&mut states, t0);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut now = t0;
        for n in 1..=300u64 {
            now = t0 + Duration::from_millis(200 * n);
            states.update(&with_traffic(ProductionState::Running, n % 2, n, 1), n.min(60 * 5), now);
            for topic in publish(&mut states, now) {
                *counts.entry(topic).or_default() += 1;
            }
        }
        let minute = Duration::from_secs(60);
        let most = |interval: Duration| (minute.as_secs() / interval.as_secs()) as usize;
        for (topic, n) in &counts {
            let value = &d.states.iter().find(|s| &s.topic == topic).unwrap().value;
            let limit = interval(value).map_or(0, most);
            assert!(*n <= limit, "{topic}: {n} publications in a minute, at most {limit}");
        }
        assert_eq!(counts["sb/production/adt/item/in/messages"], most(COUNTER_INTERVAL));
        assert!(!counts.contains_key("sb/production/adt/item/in/errors"), "unchanged values stay quiet");
        assert!(!counts.contains_key("sb/production/adt/item/in/attributes"));
        let total: usize = counts.values().sum();
        assert!(total <= 60, "{total} publications in a minute: {counts:?}");
        // Once traffic stops, the latest values go out when their interval
        // ends, and then nothing is left waiting.
        publish(&mut states, now + COUNTER_INTERVAL);
        assert_eq!(states.due(now + COUNTER_INTERVAL, true), Vec::new());
    }

    /// A sender that connects for each message: `connected` stays on; it
    /// goes off only once no connection has been open for a while.
    #[test]
    fn connected_goes_off_only_after_the_hold() {
        let d = discovery();
        let mut states = States::new(&d);
        let topic = "sb/production/adt/item/in/connected".to_owned();
        let t0 = Instant::now();
        states.update(&with_traffic(ProductionState::Running, 0, 0, 1), 0, t0);
        publish(&mut states, t0);
        for n in 1..=20u64 {
            let now = t0 + Duration::from_millis(500 * n);
            let open = u32::from(n % 2 == 0);
            states.update(&with_traffic(ProductionState::Running, 0, 0, open), 0, now);
            assert!(!publish(&mut states, now).contains(&topic), "published at {n}");
        }
        let closed = t0 + Duration::from_millis(500 * 21);
        states.update(&with_traffic(ProductionState::Running, 0, 0, 0), 0, closed);
        assert!(!publish(&mut states, closed + CONNECTED_HOLD / 2).contains(&topic));
        assert!(publish(&mut states, closed + CONNECTED_HOLD).contains(&topic));
        // On goes out at once.
        let back = closed + CONNECTED_HOLD * 2;
        states.update(&with_traffic(ProductionState::Running, 0, 0, 1), 0, back);
        assert_eq!(states.due(back, false), vec![(topic, "ON".to_owned())]);
    }

    #[test]
    fn resend_one_topic() {
        let d = discovery();
        let mut states = States::new(&d);
        let now = Instant::now();
        states.update(&status(ProductionState::Running, 0), 0, now);
        publish(&mut states, now);
        states.resend("sb/production/adt/state");
        assert_eq!(states.due(now, false), vec![("sb/production/adt/state".to_owned(), "ON".to_owned())]);
        let map = state_topic_for_command(&d);
        assert_eq!(map["sb/production/adt/set"], "sb/production/adt/state");
    }

    #[test]
    fn rate_counts_the_last_minute_without_extrapolating() {
        let t0 = Instant::now();
        let mut meter = RateMeter::starting(t0, 0);
        assert_eq!(meter.per_minute(), 0);
        // 202 messages in the first 30 s are 202, not 404 a minute.
        meter.sample(t0 + Duration::from_secs(30), 202);
        assert_eq!(meter.per_minute(), 202);
        // Then 5 a second: the count over the last minute, once the window
        // is full, is 300 and stays there.
        let mut total = 202;
        for s in 31..=150 {
            total += 5;
            meter.sample(t0 + Duration::from_secs(s), total);
            if s >= 91 {
                assert_eq!(meter.per_minute(), 300, "at {s} s");
            }
        }
        // Traffic stops: the count falls as the minute slides, to 0.
        for s in 151..=211 {
            meter.sample(t0 + Duration::from_secs(s), total);
        }
        assert_eq!(meter.per_minute(), 0);
        // A restart of the counters starts over.
        meter.sample(t0 + Duration::from_secs(212), 5);
        assert_eq!(meter.per_minute(), 0);
    }

    #[test]
    fn timestamps_have_an_offset() {
        let t = OffsetDateTime::from_unix_timestamp(1_801_439_999).unwrap();
        assert_eq!(timestamp(t), "2027-01-31T23:59:59+00:00");
    }
}
