//! Home Assistant MQTT discovery: which entities exist, their topics and
//! their config payloads. Pure: built from the engine's structure, with no
//! I/O, so every payload can be checked in unit tests.
//!
//! Ids: one `node_id` per Switchboard instance (the instance id), so that
//! all of its configs live under `<prefix>/+/<instance>/+/config`. Each
//! entity's `unique_id` and object id are `<instance>_` followed by the
//! production id and the item name made into a slug (`Lab out` →
//! `lab_out`) — never a display name, so renaming a production keeps its
//! entities. Both `object_id` (older Home Assistant) and
//! `default_entity_id` (2025.10 and later) are sent, so entity ids come out
//! the same everywhere, e.g. `switch.switchboard_adt` and
//! `sensor.switchboard_adt_lab_out_queue_depth`.
//!
//! State topics live under the instance id as base topic:
//!
//! | topic | payload |
//! |---|---|
//! | `<base>/availability` | `online` / `offline` (retained, last will) |
//! | `<base>/engine/{version,started,store_size,message_rate}` | value |
//! | `<base>/engine/republish` | command: `PRESS` |
//! | `<base>/production/<p>/{state,status,queued}` | `ON`/`OFF`, state, count |
//! | `<base>/production/<p>/set` | command: `ON` / `OFF` |
//! | `<base>/production/<p>/item/<i>/{queue_depth,connected,messages,errors,enabled,attributes}` | value, JSON |
//! | `<base>/production/<p>/item/<i>/{restart,enabled/set}` | commands |
//! | `<base>/tls/<t>/{expiry,days_left,problem,attributes}` | value, JSON |

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::config::{ItemRole, KindTag};
use crate::engine::{EngineStatus, ProductionState};

/// The Switchboard version reported to Home Assistant.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where users find help (`origin.support_url`).
pub const SUPPORT_URL: &str = env!("CARGO_PKG_REPOSITORY");
/// Payload of an available entity.
pub const ONLINE: &str = "online";
/// Payload of an unavailable entity (also the last will).
pub const OFFLINE: &str = "offline";

/// Names shared by every payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Discovery prefix, e.g. `homeassistant`.
    pub prefix: String,
    /// Instance id: node id, base topic and id prefix.
    pub instance: String,
    /// The web UI's address (`configuration_url`).
    pub ui_url: Option<String>,
}

impl Naming {
    /// The topic all state and command topics start with.
    pub fn base(&self) -> &str {
        &self.instance
    }

    /// The availability topic.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base())
    }

    /// Home Assistant's status (birth and last will) topic.
    pub fn birth(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// A filter matching every config topic of this instance.
    pub fn config_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.prefix, self.instance)
    }

    /// Filters that match every command topic exactly once: wildcards of
    /// the command shapes, so that a command for something that does not
    /// exist arrives and is logged (overlapping filters could deliver a
    /// command twice).
    pub fn command_filters(&self) -> Vec<String> {
        let base = self.base();
        ["production/+/set", "production/+/item/+/restart", "production/+/item/+/enabled/set", "engine/republish"]
            .iter()
            .map(|f| format!("{base}/{f}"))
            .collect()
    }

    /// The config topic of an entity.
    pub fn config_topic(&self, component: Component, key: &str) -> String {
        format!("{}/{}/{}/{}/config", self.prefix, component.as_str(), self.instance, key)
    }
}

/// The entity platforms Switchboard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `sensor`
    Sensor,
    /// `binary_sensor`
    BinarySensor,
    /// `switch`
    Switch,
    /// `button`
    Button,
}

impl Component {
    /// The platform name in topics and entity ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sensor => "sensor",
            Self::BinarySensor => "binary_sensor",
            Self::Switch => "switch",
            Self::Button => "button",
        }
    }
}

/// The engine's structure as Home Assistant sees it, with slugs fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Productions, in file order.
    pub productions: Vec<ProductionLayout>,
    /// TLS configurations, in name order.
    pub certificates: Vec<CertificateLayout>,
}

/// One production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductionLayout {
    /// Production id.
    pub id: String,
    /// Its slug (the id with `-` as `_`, made unique).
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Items, in file order.
    pub items: Vec<ItemLayout>,
}

/// One item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLayout {
    /// Item name.
    pub name: String,
    /// Slug of the name, unique within the production.
    pub slug: String,
    /// `mllp_in`, `router`, ...
    pub kind: KindTag,
    /// Service, process or operation.
    pub role: ItemRole,
}

impl ItemLayout {
    /// Processes and operations hold a queue.
    pub fn has_queue(&self) -> bool {
        self.role != ItemRole::Service
    }

    /// MLLP items have a connection to show.
    pub fn has_connection(&self) -> bool {
        matches!(self.kind, KindTag::MllpIn | KindTag::MllpOut)
    }
}

/// One TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLayout {
    /// Name under `tls:`.
    pub name: String,
    /// Its slug.
    pub slug: String,
}

impl Layout {
    /// The layout of the engine whose status this is.
    pub fn new(status: &EngineStatus) -> Self {
        let production_slugs = unique_slugs(status.productions.iter().map(|p| p.id.as_str()));
        let productions = status
            .productions
            .iter()
            .zip(production_slugs)
            .map(|(p, slug)| {
                let item_slugs = unique_slugs(p.items.iter().map(|i| i.name.as_str()));
                ProductionLayout {
                    id: p.id.clone(),
                    slug,
                    name: p.name.clone(),
                    items: p
                        .items
                        .iter()
                        .zip(item_slugs)
                        .map(|(i, slug)| ItemLayout { name: i.name.clone(), slug, kind: i.kind, role: i.role })
                        .collect(),
                }
            })
            .collect();
        let mut names: Vec<&str> = status.certificates.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let certificates = names
            .iter()
            .zip(unique_slugs(names.iter().copied()))
            .map(|(name, slug)| CertificateLayout { name: (*name).to_owned(), slug })
            .collect();
        Self { productions, certificates }
    }
}

/// A name as an id: lower-case ASCII letters and digits, other characters
/// as `_` (common accented letters lose their accent), no leading, trailing
/// or double `_`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let push = |c: char, out: &mut String| {
        if c == '_' {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c);
        }
    };
    for c in name.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' => push(c, &mut out),
            _ => match fold(c) {
                Some(ascii) => ascii.chars().for_each(|a| push(a, &mut out)),
                None => push('_', &mut out),
            },
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// ASCII spelling of common accented letters.
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ā' => "a",
        'ä' | 'æ' => "ae",
        'ç' | 'č' | 'ć' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ě' => "e",
        'ì' | 'í' | 'î' | 'ï' => "i",
        'ñ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' => "o",
        'ö' | 'œ' => "oe",
        'ù' | 'ú' | 'û' | 'ů' => "u",
        'ü' => "ue",
        'ý' | 'ÿ' => "y",
        'ß' => "ss",
        'š' => "s",
        'ž' => "z",
        'ř' => "r",
        _ => return None,
    })
}

/// 32-bit FNV-1a: a short stable suffix that tells apart names whose slugs
/// collide.
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Slugs for a list of names, unique within the list: a name whose slug is
/// empty or shared with another name gets a suffix derived from the name
/// itself, so it does not depend on the order of the list.
pub fn unique_slugs<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    let slugs: Vec<(String, &str)> = names.map(|n| (slug(n), n)).collect();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (s, _) in &slugs {
        *count.entry(s.as_str()).or_default() += 1;
    }
    slugs
        .iter()
        .map(|(s, name)| {
            if s.is_empty() || count.get(s.as_str()).copied().unwrap_or(0) > 1 {
                let stem = if s.is_empty() { "x" } else { s.as_str() };
                format!("{stem}_{:08x}", fnv32(name))
            } else {
                s.clone()
            }
        })
        .collect()
}

/// What a state topic carries; the states module computes the payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateValue {
    /// `online` while connected.
    Availability,
    /// The Switchboard version.
    EngineVersion,
    /// When the engine started (a timestamp).
    EngineStarted,
    /// Store size in MiB.
    EngineStoreSize,
    /// Messages received from outside over the last minute.
    EngineMessageRate,
    /// `ON` while the store is damaged or cannot commit.
    EngineStoreProblem,
    /// JSON: the damage found and why commits fail.
    EngineStoreAttributes,
    /// `ON` when the production runs.
    ProductionSwitch(String),
    /// The production's state name.
    ProductionStatus(String),
    /// Total queued.
    ProductionQueued(String),
    /// An item's queue depth.
    ItemQueueDepth(String, String),
    /// `ON` when an MLLP item has a connection.
    ItemConnected(String, String),
    /// Messages processed.
    ItemMessages(String, String),
    /// Errors.
    ItemErrors(String, String),
    /// `ON` when enabled.
    ItemEnabled(String, String),
    /// JSON: kind, role, state and last error.
    ItemAttributes(String, String),
    /// Earliest certificate expiry.
    CertificateExpiry(String),
    /// Days until then.
    CertificateDaysLeft(String),
    /// `ON` when anything is wrong.
    CertificateProblem(String),
    /// JSON: subject, issuer, SANs, dates, problems.
    CertificateAttributes(String),
}

/// What a command topic does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTarget {
    /// The production switch: `ON` starts, `OFF` stops.
    Production(String),
    /// An item's restart button: `PRESS`.
    Restart(String, String),
    /// An item's enable switch: `ON` / `OFF`.
    Enable(String, String),
    /// The engine's "Republish discovery" button: `PRESS`.
    Republish,
}

/// A validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a production.
    Start(String),
    /// Stop a production.
    Stop(String),
    /// Restart an item.
    Restart(String, String),
    /// Enable or disable an item.
    SetEnabled(String, String, bool),
    /// Publish every config and state again.
    Republish,
}

impl CommandTarget {
    /// Reads a command payload; anything but the documented payloads is
    /// refused with the reason.
    pub fn action(&self, payload: &[u8]) -> Result<Action, String> {
        let text = std::str::from_utf8(payload).map(str::trim).unwrap_or("");
        let on_off = || match text {
            "ON" => Ok(true),
            "OFF" => Ok(false),
            _ => Err(format!("expected ON or OFF, got {:?}", preview(payload))),
        };
        let press = || match text {
            "PRESS" => Ok(()),
            _ => Err(format!("expected PRESS, got {:?}", preview(payload))),
        };
        Ok(match self {
            Self::Production(p) => {
                if on_off()? {
                    Action::Start(p.clone())
                } else {
                    Action::Stop(p.clone())
                }
            }
            Self::Enable(p, i) => Action::SetEnabled(p.clone(), i.clone(), on_off()?),
            Self::Restart(p, i) => {
                press()?;
                Action::Restart(p.clone(), i.clone())
            }
            Self::Republish => {
                press()?;
                Action::Republish
            }
        })
    }
}

/// The start of a payload, for log lines.
pub fn preview(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned();
    if payload.len() > 40 { format!("{text}…") } else { text }
}

/// One discovered entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Its platform.
    pub component: Component,
    /// Object id (`<instance>_…`); also its `unique_id`.
    pub object_id: String,
    /// Where its config goes.
    pub config_topic: String,
    /// The config.
    pub payload: Value,
}

/// One state topic and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTopic {
    /// The topic.
    pub topic: String,
    /// The value.
    pub value: StateValue,
}

/// Everything published for discovery, and the topics listened to.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Entities, engine first.
    pub entities: Vec<Entity>,
    /// State topics (retained).
    pub states: Vec<StateTopic>,
    /// Command topics and what they do.
    pub commands: BTreeMap<String, CommandTarget>,
    /// The availability topic.
    pub availability: String,
}

impl Discovery {
    /// The config topics, for the list kept in the store.
    pub fn config_topics(&self) -> BTreeSet<String> {
        self.entities.iter().map(|e| e.config_topic.clone()).collect()
    }

    /// The config payload of each entity, serialized.
    pub fn configs(&self) -> Vec<(String, String)> {
        self.entities.iter().map(|e| (e.config_topic.clone(), e.payload.to_string())).collect()
    }

    /// Builds every entity of the layout.
    pub fn build(naming: &Naming, layout: &Layout) -> Self {
        let mut b = Builder { naming, entities: Vec::new(), states: Vec::new(), commands: BTreeMap::new() };
        b.state(naming.availability(), StateValue::Availability);
        b.engine();
        for certificate in &layout.certificates {
            b.certificate(certificate);
        }
        for production in &layout.productions {
            b.production(production);
        }
        Self { entities: b.entities, states: b.states, commands: b.commands, availability: naming.availability() }
    }
}

/// The values of `device_class: enum` for a production's status.
pub fn status_options() -> Vec<&'static str> {
    ProductionState::ALL.iter().map(|s| s.as_str()).collect()
}

/// One entity being described: its platform, id and keys.
struct Spec {
    component: Component,
    key: String,
    name: Option<String>,
    device: Value,
    fields: Map<String, Value>,
}

impl Spec {
    fn new(component: Component, key: String, name: Option<String>, device: &Value) -> Self {
        Self { component, key, name, device: device.clone(), fields: Map::new() }
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }
}

struct Builder<'a> {
    naming: &'a Naming,
    entities: Vec<Entity>,
    states: Vec<StateTopic>,
    commands: BTreeMap<String, CommandTarget>,
}

impl Builder<'_> {
    fn state(&mut self, topic: String, value: StateValue) -> String {
        self.states.push(StateTopic { topic: topic.clone(), value });
        topic
    }

    fn command(&mut self, topic: String, target: CommandTarget) -> String {
        self.commands.insert(topic.clone(), target);
        topic
    }

    fn engine_id(&self) -> String {
        format!("{}_engine", self.naming.instance)
    }

    fn device(&self, identifier: String, name: &str, model: &str, via: bool) -> Value {
        let mut device = Map::new();
        device.insert("identifiers".into(), json!([identifier]));
        device.insert("name".into(), json!(name));
        device.insert("manufacturer".into(), json!("Switchboard"));
        device.insert("model".into(), json!(model));
        device.insert("sw_version".into(), json!(VERSION));
        if via {
            device.insert("via_device".into(), json!(self.engine_id()));
        }
        if let Some(url) = &self.naming.ui_url {
            device.insert("configuration_url".into(), json!(url));
        }
        Value::Object(device)
    }

    fn add(&mut self, spec: Spec) {
        let object_id = format!("{}_{}", self.naming.instance, spec.key);
        let mut payload = Map::new();
        payload.insert("name".into(), spec.name.map_or(Value::Null, Value::String));
        payload.insert("unique_id".into(), json!(object_id));
        payload.insert("object_id".into(), json!(object_id));
        payload.insert("default_entity_id".into(), json!(format!("{}.{object_id}", spec.component.as_str())));
        payload.insert("availability".into(), json!([{ "topic": self.naming.availability() }]));
        payload.insert("device".into(), spec.device);
        payload.insert(
            "origin".into(),
            json!({ "name": "Switchboard", "sw_version": VERSION, "support_url": SUPPORT_URL }),
        );
        payload.insert("qos".into(), json!(1));
        payload.extend(spec.fields);
        self.entities.push(Entity {
            component: spec.component,
            config_topic: self.naming.config_topic(spec.component, &spec.key),
            object_id,
            payload: Value::Object(payload),
        });
    }

    fn engine_device(&self) -> Value {
        let name = if self.naming.instance == super::settings::DEFAULT_INSTANCE_ID {
            "Switchboard".to_owned()
        } else {
            format!("Switchboard {}", self.naming.instance)
        };
        self.device(self.engine_id(), &name, "HL7 interface engine", false)
    }

    fn engine(&mut self) {
        let device = self.engine_device();
        let base = format!("{}/engine", self.naming.base());

        let topic = self.state(format!("{base}/version"), StateValue::EngineVersion);
        self.add(
            Spec::new(Component::Sensor, "engine_version".into(), Some("Version".into()), &device)
                .set("state_topic", topic)
                .set("entity_category", "diagnostic")
                .set("icon", "mdi:tag-outline"),
        );
        let topic = self.state(format!("{base}/started"), StateValue::EngineStarted);
        self.add(
            Spec::new(Component::Sensor, "engine_uptime".into(), Some("Uptime".into()), &device)
                .set("state_topic", topic)
                .set("device_class", "timestamp")
                .set("entity_category", "diagnostic"),
        );
        let topic = self.state(format!("{base}/store_size"), StateValue::EngineStoreSize);
        self.add(
            Spec::new(Component::Sensor, "engine_store_size".into(), Some("Store size".into()), &device)
                .set("state_topic", topic)
                .set("device_class", "data_size")
                .set("unit_of_measurement", "MiB")
                .set("state_class", "measurement")
                .set("suggested_display_precision", 1)
                .set("entity_category", "diagnostic")
                .set("icon", "mdi:database"),
        );
        let attributes = self.state(format!("{base}/store_attributes"), StateValue::EngineStoreAttributes);
        let topic = self.state(format!("{base}/store_problem"), StateValue::EngineStoreProblem);
        self.add(
            Spec::new(Component::BinarySensor, "engine_store_problem".into(), Some("Store problem".into()), &device)
                .set("state_topic", topic)
                .set("device_class", "problem")
                .set("payload_on", "ON")
                .set("payload_off", "OFF")
                .set("json_attributes_topic", attributes)
                .set("entity_category", "diagnostic"),
        );
        let topic = self.state(format!("{base}/message_rate"), StateValue::EngineMessageRate);
        self.add(
            Spec::new(Component::Sensor, "engine_message_rate".into(), Some("Message rate".into()), &device)
                .set("state_topic", topic)
                .set("unit_of_measurement", "msg/min")
                .set("state_class", "measurement")
                .set("suggested_display_precision", 0)
                .set("icon", "mdi:swap-horizontal"),
        );
        let topic = self.command(format!("{base}/republish"), CommandTarget::Republish);
        self.add(
            Spec::new(
                Component::Button,
                "engine_republish_discovery".into(),
                Some("Republish discovery".into()),
                &device,
            )
            .set("command_topic", topic)
            .set("payload_press", "PRESS")
            .set("entity_category", "config")
            .set("icon", "mdi:home-import-outline"),
        );
    }

    fn certificate(&mut self, c: &CertificateLayout) {
        let device = self.engine_device();
        let base = format!("{}/tls/{}", self.naming.base(), c.slug);
        let key = format!("tls_{}", c.slug);
        let attributes = self.state(format!("{base}/attributes"), StateValue::CertificateAttributes(c.name.clone()));

        let topic = self.state(format!("{base}/expiry"), StateValue::CertificateExpiry(c.name.clone()));
        self.add(
            Spec::new(
                Component::Sensor,
                format!("{key}_expiry"),
                Some(format!("{} certificate expiry", c.name)),
                &device,
            )
            .set("state_topic", topic)
            .set("device_class", "timestamp")
            .set("json_attributes_topic", attributes.clone())
            .set("icon", "mdi:certificate"),
        );
        let topic = self.state(format!("{base}/days_left"), StateValue::CertificateDaysLeft(c.name.clone()));
        self.add(
            Spec::new(
                Component::Sensor,
                format!("{key}_days_left"),
                Some(format!("{} certificate days left", c.name)),
                &device,
            )
            .set("state_topic", topic)
            .set("device_class", "duration")
            .set("unit_of_measurement", "d")
            .set("state_class", "measurement")
            .set("icon", "mdi:calendar-clock"),
        );
        let topic = self.state(format!("{base}/problem"), StateValue::CertificateProblem(c.name.clone()));
        self.add(
            Spec::new(
                Component::BinarySensor,
                format!("{key}_problem"),
                Some(format!("{} certificate problem", c.name)),
                &device,
            )
            .set("state_topic", topic)
            .set("device_class", "problem")
            .set("payload_on", "ON")
            .set("payload_off", "OFF")
            .set("json_attributes_topic", attributes),
        );
    }

    fn production(&mut self, p: &ProductionLayout) {
        let device =
            self.device(format!("{}_production_{}", self.naming.instance, p.slug), &p.name, "Production", true);
        let base = format!("{}/production/{}", self.naming.base(), p.slug);

        let state = self.state(format!("{base}/state"), StateValue::ProductionSwitch(p.id.clone()));
        let command = self.command(format!("{base}/set"), CommandTarget::Production(p.id.clone()));
        // No entity name: the switch is called like the production, so that
        // "turn off ADT feed" works.
        self.add(
            Spec::new(Component::Switch, p.slug.clone(), None, &device)
                .set("state_topic", state)
                .set("command_topic", command)
                .set("payload_on", "ON")
                .set("payload_off", "OFF")
                .set("state_on", "ON")
                .set("state_off", "OFF")
                .set("optimistic", false)
                .set("icon", "mdi:transit-connection-variant"),
        );
        let topic = self.state(format!("{base}/status"), StateValue::ProductionStatus(p.id.clone()));
        self.add(
            Spec::new(Component::Sensor, format!("{}_status", p.slug), Some("Status".into()), &device)
                .set("state_topic", topic)
                .set("device_class", "enum")
                .set("options", status_options())
                .set("icon", "mdi:list-status"),
        );
        let topic = self.state(format!("{base}/queued"), StateValue::ProductionQueued(p.id.clone()));
        self.add(
            Spec::new(Component::Sensor, format!("{}_queued", p.slug), Some("Queued".into()), &device)
                .set("state_topic", topic)
                .set("unit_of_measurement", "messages")
                .set("state_class", "measurement")
                .set("icon", "mdi:tray-full"),
        );
        for item in &p.items {
            self.item(p, item, &device);
        }
    }

    fn item(&mut self, p: &ProductionLayout, item: &ItemLayout, device: &Value) {
        let base = format!("{}/production/{}/item/{}", self.naming.base(), p.slug, item.slug);
        let key = format!("{}_{}", p.slug, item.slug);
        let (pid, name) = (p.id.clone(), item.name.clone());
        let attributes =
            self.state(format!("{base}/attributes"), StateValue::ItemAttributes(pid.clone(), name.clone()));

        if item.has_queue() {
            let topic =
                self.state(format!("{base}/queue_depth"), StateValue::ItemQueueDepth(pid.clone(), name.clone()));
            self.add(
                Spec::new(Component::Sensor, format!("{key}_queue_depth"), Some(format!("{name} queue depth")), device)
                    .set("state_topic", topic)
                    .set("unit_of_measurement", "messages")
                    .set("state_class", "measurement")
                    .set("icon", "mdi:tray-full"),
            );
        }
        if item.has_connection() {
            let topic = self.state(format!("{base}/connected"), StateValue::ItemConnected(pid.clone(), name.clone()));
            self.add(
                Spec::new(
                    Component::BinarySensor,
                    format!("{key}_connected"),
                    Some(format!("{name} connected")),
                    device,
                )
                .set("state_topic", topic)
                .set("device_class", "connectivity")
                .set("payload_on", "ON")
                .set("payload_off", "OFF"),
            );
        }
        let topic = self.state(format!("{base}/messages"), StateValue::ItemMessages(pid.clone(), name.clone()));
        self.add(
            Spec::new(Component::Sensor, format!("{key}_messages"), Some(format!("{name} messages")), device)
                .set("state_topic", topic)
                .set("unit_of_measurement", "messages")
                .set("state_class", "total_increasing")
                .set("icon", "mdi:email-fast-outline"),
        );
        // The item's details ride on one entity only: each change of them
        // is then one event in Home Assistant, not one per entity.
        let topic = self.state(format!("{base}/errors"), StateValue::ItemErrors(pid.clone(), name.clone()));
        self.add(
            Spec::new(Component::Sensor, format!("{key}_errors"), Some(format!("{name} errors")), device)
                .set("state_topic", topic)
                .set("unit_of_measurement", "messages")
                .set("state_class", "total_increasing")
                .set("json_attributes_topic", attributes)
                .set("icon", "mdi:email-alert-outline"),
        );
        let topic = self.command(format!("{base}/restart"), CommandTarget::Restart(pid.clone(), name.clone()));
        self.add(
            Spec::new(Component::Button, format!("{key}_restart"), Some(format!("{name} restart")), device)
                .set("command_topic", topic)
                .set("payload_press", "PRESS")
                .set("device_class", "restart")
                .set("entity_category", "config"),
        );
        let state = self.state(format!("{base}/enabled"), StateValue::ItemEnabled(pid.clone(), name.clone()));
        let command = self.command(format!("{base}/enabled/set"), CommandTarget::Enable(pid, name.clone()));
        self.add(
            Spec::new(Component::Switch, format!("{key}_enabled"), Some(format!("{name} enabled")), device)
                .set("state_topic", state)
                .set("command_topic", command)
                .set("payload_on", "ON")
                .set("payload_off", "OFF")
                .set("state_on", "ON")
                .set("state_off", "OFF")
                .set("optimistic", false)
                .set("entity_category", "config")
                .set("icon", "mdi:power-plug-outline"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ItemState, ItemStatus, ProductionStatus};
    use crate::tls::CertificateStatus;
    use std::time::SystemTime;

    fn item(name: &str, kind: KindTag) -> ItemStatus {
        ItemStatus {
            name: name.into(),
            kind,
            role: kind.role(),
            state: ItemState::Running,
            enabled: true,
            queue_depth: 0,
            connections: 0,
            received: 0,
            sent: 0,
            errors: 0,
            last_error: None,
            fed_by_engine: false,
        }
    }

    fn status() -> EngineStatus {
        EngineStatus {
            started_at: SystemTime::UNIX_EPOCH,
            store_bytes: 0,
            store: Default::default(),
            certificates: vec![certificate("lab-client")],
            productions: vec![ProductionStatus {
                id: "adt-feed".into(),
                name: "ADT feed".into(),
                state: ProductionState::Running,
                queued: 0,
                items: vec![
                    item("ADT in", KindTag::MllpIn),
                    item("ADT router", KindTag::Router),
                    item("Lab out", KindTag::MllpOut),
                    item("Archive", KindTag::FileOut),
                ],
            }],
        }
    }

    fn certificate(name: &str) -> CertificateStatus {
        CertificateStatus {
            name: name.into(),
            role: "client".into(),
            subject: Some("CN=lab".into()),
            issuer: Some("CN=ca".into()),
            serial: None,
            subject_alt_names: vec!["DNS:lab".into()],
            sha256_fingerprint: None,
            not_after: None,
            earliest_not_after: None,
            earliest_expiring: None,
            days_left: Some(10),
            problem: true,
            problems: Vec::new(),
            checked_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn naming() -> Naming {
        Naming { prefix: "homeassistant".into(), instance: "switchboard".into(), ui_url: Some("http://ui".into()) }
    }

    fn discovery() -> Discovery {
        Discovery::build(&naming(), &Layout::new(&status()))
    }

    fn entity<'a>(d: &'a Discovery, object_id: &str) -> &'a Map<String, Value> {
        d.entities
            .iter()
            .find(|e| e.object_id == object_id)
            .and_then(|e| e.payload.as_object())
            .unwrap_or_else(|| panic!("no entity {object_id}"))
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Lab out"), "lab_out");
        assert_eq!(slug("  ADT  in.v2 "), "adt_in_v2");
        assert_eq!(slug("Über-Feed"), "ueber_feed");
        assert_eq!(slug("__x__"), "x");
        assert_eq!(slug("日本"), "");
        let s = unique_slugs(["Lab out", "lab_out", "Other", "日本"].into_iter());
        assert_eq!(s[2], "other");
        assert!(s[0].starts_with("lab_out_") && s[1].starts_with("lab_out_") && s[0] != s[1]);
        assert!(s[3].starts_with("x_"));
        // The suffix depends on the name only, not on the order.
        let again = unique_slugs(["lab_out", "Lab out"].into_iter());
        assert_eq!((again[1].as_str(), again[0].as_str()), (s[0].as_str(), s[1].as_str()));
    }

    #[test]
    fn every_payload_has_the_required_keys() {
        let d = discovery();
        assert!(!d.entities.is_empty());
        for e in &d.entities {
            let p = e.payload.as_object().unwrap();
            for key in ["unique_id", "object_id", "default_entity_id", "availability", "device", "origin", "name"] {
                assert!(p.contains_key(key), "{} lacks {key}", e.object_id);
            }
            assert_eq!(p["unique_id"], json!(e.object_id));
            assert_eq!(p["default_entity_id"], json!(format!("{}.{}", e.component.as_str(), e.object_id)));
            assert!(e.object_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(e.config_topic.starts_with(&format!("homeassistant/{}/switchboard/", e.component.as_str())));
            assert!(e.config_topic.ends_with("/config"));
            assert_eq!(p["availability"], json!([{ "topic": "switchboard/availability" }]));
            assert_eq!(p["origin"]["name"], "Switchboard");
            assert!(p["origin"]["sw_version"].is_string() && p["origin"]["support_url"].is_string());
            let device = p["device"].as_object().unwrap();
            for key in ["identifiers", "name", "manufacturer", "model", "sw_version"] {
                assert!(device.contains_key(key), "{} device lacks {key}", e.object_id);
            }
            if let Some(via) = device.get("via_device") {
                assert_ne!(Some(via), device["identifiers"].get(0), "via_device points at itself");
            }
            let required: &[&str] = match e.component {
                Component::Sensor | Component::BinarySensor => &["state_topic"],
                Component::Switch => &["state_topic", "command_topic", "payload_on", "payload_off"],
                Component::Button => &["command_topic", "payload_press"],
            };
            for key in required {
                assert!(p.contains_key(*key), "{} lacks {key}", e.object_id);
            }
            // Home Assistant's rules.
            let class = p.get("device_class").and_then(Value::as_str);
            assert_eq!(
                class == Some("enum"),
                p.contains_key("options"),
                "{}: enum and options go together",
                e.object_id
            );
            if class == Some("enum") {
                assert!(!p.contains_key("unit_of_measurement") && !p.contains_key("state_class"));
            }
            if matches!(class, Some("duration" | "data_size")) {
                assert!(p.contains_key("unit_of_measurement"), "{} needs a unit", e.object_id);
            }
            if e.component == Component::Sensor {
                assert_ne!(p.get("entity_category"), Some(&json!("config")), "{}", e.object_id);
            }
            if let Some(topic) = p.get("state_topic").and_then(Value::as_str) {
                assert!(d.states.iter().any(|s| s.topic == topic), "{}: state topic not published", e.object_id);
            }
            if let Some(topic) = p.get("command_topic").and_then(Value::as_str) {
                assert!(d.commands.contains_key(topic), "{}: command topic not handled", e.object_id);
            }
            if let Some(topic) = p.get("json_attributes_topic").and_then(Value::as_str) {
                assert!(d.states.iter().any(|s| s.topic == topic));
            }
        }
        // Topics are unique.
        assert_eq!(d.config_topics().len(), d.entities.len());
        let states: BTreeSet<_> = d.states.iter().map(|s| &s.topic).collect();
        assert_eq!(states.len(), d.states.len());
    }

    #[test]
    fn production_entities() {
        let d = discovery();
        let switch = entity(&d, "switchboard_adt_feed");
        assert_eq!(switch["name"], Value::Null, "the switch takes the production's name");
        assert_eq!(switch["device"]["name"], "ADT feed");
        assert_eq!(switch["device"]["identifiers"], json!(["switchboard_production_adt_feed"]));
        assert_eq!(switch["device"]["via_device"], "switchboard_engine");
        assert_eq!(switch["device"]["configuration_url"], "http://ui");
        assert_eq!(switch["command_topic"], "switchboard/production/adt_feed/set");
        assert_eq!(switch["state_topic"], "switchboard/production/adt_feed/state");
        assert_eq!(switch["default_entity_id"], "switch.switchboard_adt_feed");

        let status = entity(&d, "switchboard_adt_feed_status");
        assert_eq!(status["device_class"], "enum");
        assert_eq!(status["options"], json!(["stopped", "starting", "running", "stopping", "troubled"]));

        let queued = entity(&d, "switchboard_adt_feed_queued");
        assert_eq!(
            (&queued["state_class"], &queued["unit_of_measurement"]),
            (&json!("measurement"), &json!("messages"))
        );
    }

    #[test]
    fn item_entities() {
        let d = discovery();
        let ids: BTreeSet<&str> = d.entities.iter().map(|e| e.object_id.as_str()).collect();
        // A service has no queue; file items have no connection.
        assert!(!ids.contains("switchboard_adt_feed_adt_in_queue_depth"));
        assert!(ids.contains("switchboard_adt_feed_adt_in_connected"));
        assert!(ids.contains("switchboard_adt_feed_adt_router_queue_depth"));
        assert!(!ids.contains("switchboard_adt_feed_adt_router_connected"));
        assert!(!ids.contains("switchboard_adt_feed_archive_connected"));

        let depth = entity(&d, "switchboard_adt_feed_lab_out_queue_depth");
        assert_eq!(depth["state_class"], "measurement");
        assert_eq!(depth["unit_of_measurement"], "messages");
        assert_eq!(depth["name"], "Lab out queue depth");
        let connected = entity(&d, "switchboard_adt_feed_lab_out_connected");
        assert_eq!(connected["device_class"], "connectivity");
        for counter in ["messages", "errors"] {
            let c = entity(&d, &format!("switchboard_adt_feed_lab_out_{counter}"));
            assert_eq!(c["state_class"], "total_increasing");
        }
        // The item's details ride on the errors sensor only.
        let errors = entity(&d, "switchboard_adt_feed_lab_out_errors");
        assert_eq!(errors["json_attributes_topic"], "switchboard/production/adt_feed/item/lab_out/attributes");
        assert!(!entity(&d, "switchboard_adt_feed_lab_out_messages").contains_key("json_attributes_topic"));
        let restart = entity(&d, "switchboard_adt_feed_lab_out_restart");
        assert_eq!(restart["device_class"], "restart");
        assert_eq!(restart["command_topic"], "switchboard/production/adt_feed/item/lab_out/restart");
        let enabled = entity(&d, "switchboard_adt_feed_lab_out_enabled");
        assert_eq!(enabled["entity_category"], "config");
        assert_eq!(enabled["command_topic"], "switchboard/production/adt_feed/item/lab_out/enabled/set");
        assert_eq!(
            d.commands["switchboard/production/adt_feed/item/lab_out/enabled/set"],
            CommandTarget::Enable("adt-feed".into(), "Lab out".into())
        );
    }

    #[test]
    fn engine_and_certificate_entities() {
        let d = discovery();
        let version = entity(&d, "switchboard_engine_version");
        assert_eq!(version["entity_category"], "diagnostic");
        assert_eq!(version["device"]["identifiers"], json!(["switchboard_engine"]));
        assert!(version["device"].get("via_device").is_none());
        assert_eq!(entity(&d, "switchboard_engine_uptime")["device_class"], "timestamp");
        assert_eq!(entity(&d, "switchboard_engine_store_size")["unit_of_measurement"], "MiB");
        assert_eq!(entity(&d, "switchboard_engine_message_rate")["state_class"], "measurement");
        let store = entity(&d, "switchboard_engine_store_problem");
        assert_eq!(store["device_class"], "problem");
        assert_eq!(store["entity_category"], "diagnostic");
        assert_eq!(store["state_topic"], "switchboard/engine/store_problem");
        assert_eq!(store["json_attributes_topic"], "switchboard/engine/store_attributes");
        assert_eq!(
            entity(&d, "switchboard_engine_republish_discovery")["command_topic"],
            "switchboard/engine/republish"
        );

        let expiry = entity(&d, "switchboard_tls_lab_client_expiry");
        assert_eq!(expiry["device_class"], "timestamp");
        assert_eq!(expiry["device"]["identifiers"], json!(["switchboard_engine"]));
        let days = entity(&d, "switchboard_tls_lab_client_days_left");
        assert_eq!((&days["device_class"], &days["unit_of_measurement"]), (&json!("duration"), &json!("d")));
        let problem = entity(&d, "switchboard_tls_lab_client_problem");
        assert_eq!(problem["device_class"], "problem");
        assert_eq!(problem["json_attributes_topic"], "switchboard/tls/lab_client/attributes");
    }

    #[test]
    fn unique_ids_follow_ids_not_display_names() {
        let mut renamed = status();
        renamed.productions[0].name = "Admissions".into();
        let a = discovery();
        let b = Discovery::build(&naming(), &Layout::new(&renamed));
        let ids = |d: &Discovery| d.entities.iter().map(|e| e.object_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.config_topics(), b.config_topics());
        // Another instance gets other ids and topics.
        let other = Naming { instance: "lab".into(), ..naming() };
        let c = Discovery::build(&other, &Layout::new(&status()));
        assert!(c.entities.iter().all(|e| e.object_id.starts_with("lab_")));
        assert!(c.config_topics().iter().all(|t| t.contains("/lab/")));
        assert_eq!(entity(&c, "lab_engine_version")["device"]["name"], "Switchboard lab");
    }

    #[test]
    fn no_secrets_in_payloads() {
        let text: String = discovery().configs().into_iter().map(|(_, p)| p).collect();
        for word in ["password", "token", "key_file", "secret"] {
            assert!(!text.to_lowercase().contains(word), "{word} in a payload");
        }
    }

    /// Whether an MQTT topic filter matches a topic.
    fn matches(filter: &str, topic: &str) -> bool {
        let (f, t): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), topic.split('/').collect());
        f.len() == t.len() && f.iter().zip(&t).all(|(f, t)| *f == "+" || f == t)
    }

    #[test]
    fn every_command_topic_matches_one_filter() {
        let d = discovery();
        let filters = naming().command_filters();
        for topic in d.commands.keys() {
            assert_eq!(filters.iter().filter(|f| matches(f, topic)).count(), 1, "{topic}");
        }
        for state in &d.states {
            assert!(!filters.iter().any(|f| matches(f, &state.topic)), "{} looks like a command", state.topic);
        }
    }

    #[test]
    fn commands_are_validated() {
        let p = CommandTarget::Production("adt".into());
        assert_eq!(p.action(b"ON"), Ok(Action::Start("adt".into())));
        assert_eq!(p.action(b"OFF"), Ok(Action::Stop("adt".into())));
        assert!(p.action(b"on").is_err());
        assert!(p.action(b"TOGGLE").is_err());
        assert!(p.action(&[0xff, 0xfe]).is_err());
        let r = CommandTarget::Restart("adt".into(), "Lab out".into());
        assert_eq!(r.action(b"PRESS"), Ok(Action::Restart("adt".into(), "Lab out".into())));
        assert!(r.action(b"ON").is_err());
        let e = CommandTarget::Enable("adt".into(), "Lab out".into());
        assert_eq!(e.action(b"OFF"), Ok(Action::SetEnabled("adt".into(), "Lab out".into(), false)));
        assert_eq!(CommandTarget::Republish.action(b"PRESS"), Ok(Action::Republish));
        assert!(preview(&[b'x'; 100]).ends_with('…'));
    }
}
