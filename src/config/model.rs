//! The settings of a productions file, as the engine receives them after
//! validation. The doc comment of each field is the reference for the YAML
//! key of the same name: what it does, its default and its valid values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::Problem;
use crate::rules::reply_actions::ReplyCodeActions;
use crate::rules::route::{Condition, TransformStep};

/// A validated productions file.
///
/// Every relative path in it has already been resolved against the folder
/// of the productions file, so the engine never depends on its working
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration was read from, as given to
    /// [`load`](super::load) or [`parse`](super::parse).
    pub source: PathBuf,
    /// `tls:` — named TLS configurations, referenced by the `tls` setting of
    /// `mllp_in` and `mllp_out` items. Optional; default none.
    pub tls: BTreeMap<String, TlsConfig>,
    /// `store:` — how messages are kept on disk. Optional.
    pub store: StoreSettings,
    /// `productions:` — the productions, in the order the file lists them.
    pub productions: Vec<ProductionConfig>,
    pub(crate) warnings: Vec<Problem>,
}

impl Config {
    /// Findings that do not stop the file from loading but that an operator
    /// should see, such as an operation that retries forever. `switchboard
    /// check` prints them; the engine logs them at start. Sorted by position
    /// in the file.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The production with this id, if the file defines one.
    pub fn production(&self, id: &str) -> Option<&ProductionConfig> {
        self.productions.iter().find(|p| p.id == id)
    }

    /// The `mllp_in` items (production id, item name) that an `mllp_out` of
    /// this file delivers to on this machine: the hop between two
    /// productions, like the demo's lab. Their messages have already been
    /// counted once, where they entered, so the engine's message rate
    /// leaves them out. Only a loopback `host` (`127.0.0.1`, `::1`,
    /// `localhost`) counts as this machine.
    pub fn fed_by_own_operations(&self) -> Vec<(String, String)> {
        let is_loopback = |host: &str| {
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        };
        let targets: Vec<(&str, u16)> = self
            .productions
            .iter()
            .flat_map(|p| &p.items)
            .filter_map(|i| match &i.kind {
                ItemKind::MllpOut(out) if is_loopback(&out.host) => Some((out.host.as_str(), out.port)),
                _ => None,
            })
            .collect();
        let mut fed = Vec::new();
        for production in &self.productions {
            for item in &production.items {
                let ItemKind::MllpIn(listen) = &item.kind else { continue };
                if targets
                    .iter()
                    .any(|&(host, port)| port == listen.port && super::check::hosts_overlap(host, &listen.host))
                {
                    fed.push((production.id.clone(), item.name.clone()));
                }
            }
        }
        fed
    }
}

/// `store:` — durability and retention of the message store.
///
/// ```yaml
/// store:
///   durability: full
///   retention_days: 30
///   background_priority: low
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// `durability` — when a commit counts as done. Default `full`.
    pub durability: Durability,
    /// `retention_days` — how many days completed messages are kept before
    /// they are purged. Default `30`; `0` keeps them forever. Messages that
    /// are still queued or suspended are never purged.
    pub retention_days: u32,
    /// `background_priority` — the CPU priority of the store's work that no
    /// sender waits for. Default `low`.
    pub background_priority: BackgroundPriority,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { durability: Durability::Full, retention_days: 30, background_priority: BackgroundPriority::Low }
    }
}

/// `store.background_priority` — how the store's background threads (the
/// commits of received messages into the queues, and checkpoints) share
/// the CPU with the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackgroundPriority {
    /// `low` (default): they run at the lowest priority (on Linux the idle
    /// scheduling class, and nice 19 where that class is refused), in the
    /// gaps left by the connections, which acknowledge sooner under load.
    /// They cannot fall far behind: past 4 MiB of received messages not yet
    /// committed, acknowledgments wait for them.
    #[default]
    Low,
    /// `normal`: they compete with the connections on equal terms. For a
    /// host where other CPU-bound programs run in the same container or
    /// session as Switchboard and would leave a low-priority thread too
    /// little time.
    Normal,
}

/// `store.durability` — the trade between safety and speed of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `full` (default): a received message reaches the disk (the store's
    /// inbound log, synced) before its sender is acknowledged, so an
    /// acknowledged message survives a power cut.
    #[default]
    Full,
    /// `normal`: a received message survives a crash of Switchboard but the
    /// last ones may be lost if the machine loses power. Faster on slow
    /// disks.
    Normal,
}

/// One production: a named set of items that start and stop together.
///
/// ```yaml
/// productions:
///   adt:                 # the id: lower case letters, digits, `_`, `-`
///     name: ADT feed
///     autostart: true
///     stop_timeout: 10s
///     items: [...]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProductionConfig {
    /// The key under `productions:`. It must match `[a-z0-9][a-z0-9_-]*`
    /// because it becomes part of Home Assistant entity ids and MQTT topics,
    /// and it must not change once Home Assistant knows the production.
    pub id: String,
    /// `name` — the friendly name shown in Home Assistant and the web UI,
    /// and the name a voice assistant answers to ("turn off ADT feed").
    /// Default: the id.
    pub name: String,
    /// `autostart` — whether the production runs when Switchboard starts.
    /// With `true` (default) Switchboard restores the last commanded state:
    /// the production starts unless an operator stopped it before the
    /// restart. With `false` it stays stopped until it is started from Home
    /// Assistant, the web UI or the API.
    pub autostart: bool,
    /// `stop_timeout` — how long a stopping production waits for its items
    /// to finish the message in hand before it closes them anyway. Default
    /// `10s`. A message interrupted this way stays queued and is delivered
    /// again at the next start.
    pub stop_timeout: Duration,
    /// `items` — the business hosts of the production, in file order. Item
    /// names are unique within a production.
    pub items: Vec<ItemConfig>,
}

/// One item (business host) of a production.
///
/// Keys common to every kind: `name`, `kind`, `enabled`, `targets`; the
/// other keys depend on `kind`.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemConfig {
    /// `name` — required; unique within the production; letters, digits,
    /// spaces, `-`, `_` and `.`. Targets and rules refer to items by it, and
    /// it appears in Home Assistant entity names.
    pub name: String,
    /// `enabled` — whether the item runs when its production runs. Default
    /// `true`. Messages for a disabled operation or process wait in its queue
    /// until it is enabled.
    pub enabled: bool,
    /// `targets` — for services only: the processes or operations that every
    /// received message is sent to, as a list of item names (a single name
    /// is accepted too). Default: none. Routers choose targets with their
    /// rules instead, and operations have no targets.
    pub targets: Vec<String>,
    /// `kind` and the settings that go with it.
    pub kind: ItemKind,
}

impl ItemConfig {
    /// The role the item plays in the data flow.
    pub fn role(&self) -> ItemRole {
        self.kind.tag().role()
    }
}

/// `kind` — what an item does, with the settings of that kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// `kind: mllp_in` — a service that listens for MLLP connections.
    MllpIn(MllpInConfig),
    /// `kind: router` — a process that routes by rules.
    Router(RouterConfig),
    /// `kind: mllp_out` — an operation that delivers over MLLP.
    MllpOut(MllpOutConfig),
    /// `kind: file_in` — a service that picks up HL7 files from a folder.
    FileIn(FileInConfig),
    /// `kind: file_out` — an operation that writes each message to a file.
    FileOut(FileOutConfig),
}

impl ItemKind {
    /// The `kind` value that selects this variant.
    pub fn tag(&self) -> KindTag {
        match self {
            ItemKind::MllpIn(_) => KindTag::MllpIn,
            ItemKind::Router(_) => KindTag::Router,
            ItemKind::MllpOut(_) => KindTag::MllpOut,
            ItemKind::FileIn(_) => KindTag::FileIn,
            ItemKind::FileOut(_) => KindTag::FileOut,
        }
    }
}

/// The valid values of `kind`, without their settings. Serialised as
/// spelled in the productions file (`mllp_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindTag {
    /// `mllp_in`
    MllpIn,
    /// `router`
    Router,
    /// `mllp_out`
    MllpOut,
    /// `file_in`
    FileIn,
    /// `file_out`
    FileOut,
}

impl KindTag {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [KindTag; 5] =
        [KindTag::MllpIn, KindTag::FileIn, KindTag::Router, KindTag::MllpOut, KindTag::FileOut];

    /// The spelling used in the productions file.
    pub fn as_str(self) -> &'static str {
        match self {
            KindTag::MllpIn => "mllp_in",
            KindTag::Router => "router",
            KindTag::MllpOut => "mllp_out",
            KindTag::FileIn => "file_in",
            KindTag::FileOut => "file_out",
        }
    }

    /// Reads the spelling used in the productions file.
    pub fn from_name(name: &str) -> Option<KindTag> {
        KindTag::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Service, process or operation.
    pub fn role(self) -> ItemRole {
        match self {
            KindTag::MllpIn | KindTag::FileIn => ItemRole::Service,
            KindTag::Router => ItemRole::Process,
            KindTag::MllpOut | KindTag::FileOut => ItemRole::Operation,
        }
    }
}

impl std::fmt::Display for KindTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Ensemble roles: messages flow from services through processes to
/// operations. Serialised in lower case (`service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemRole {
    /// Inbound: receives messages from outside (`mllp_in`, `file_in`).
    Service,
    /// In between: routes and transforms (`router`).
    Process,
    /// Outbound: delivers messages to outside (`mllp_out`, `file_out`).
    Operation,
}

impl std::fmt::Display for ItemRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ItemRole::Service => "service",
            ItemRole::Process => "process",
            ItemRole::Operation => "operation",
        })
    }
}

/// `kind: mllp_in` — listens for MLLP connections, stores each message and
/// acknowledges it.
///
/// ```yaml
/// - name: ADT in
///   kind: mllp_in
///   port: 2575
///   targets: [ADT router]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MllpInConfig {
    /// `host` — the local address to listen on: an IP address or `localhost`.
    /// Default `0.0.0.0` (every IPv4 interface); `::` listens on every
    /// interface, `127.0.0.1` only on this machine.
    pub host: String,
    /// `port` — required; the TCP port to listen on, 1–65535. Two `mllp_in`
    /// items may not listen on the same port of overlapping addresses, in
    /// any production.
    pub port: u16,
    /// `tls` — the name of a TLS configuration with `role: server` under
    /// `tls:`. Default: none (plain TCP).
    pub tls: Option<String>,
    /// `ack_mode` — when and how the sender is acknowledged. Default
    /// `immediate`.
    pub ack_mode: AckMode,
    /// `application_ack_timeout` — with `ack_mode: application`, how long to
    /// wait for the downstream reply before answering the sender with a
    /// negative ACK. Default `30s`.
    pub application_ack_timeout: Duration,
    /// `max_connections` — how many connections may be open at once, from
    /// all senders together. Default `100`; at least 1. When the listener
    /// is full, a new connection is still taken: the connection idle the
    /// longest is closed to make room for it, first among those that have
    /// not delivered a message yet (silent, trickling bytes, or stuck in a
    /// TLS handshake), so a flood of connections that deliver nothing
    /// cannot lock out a sender that delivers. "Idle" is the time since
    /// the connection's last complete message, or since it was accepted.
    /// A connection storing a message finishes it and sends its ACK before
    /// it closes.
    pub max_connections: usize,
    /// `max_connections_per_peer` — how many connections one peer IP
    /// address may have open at once. Default `10`; at least 1. A peer at
    /// its limit that opens another loses its own longest-idle connection,
    /// so one address cannot take the whole listener, yet a sender whose
    /// old connections went half-open (dropped by a firewall without a
    /// word) is never locked out by them. Raise it for senders that open
    /// many connections at once, or for many senders behind one address
    /// (NAT).
    pub max_connections_per_peer: usize,
    /// `first_byte_timeout` — a connection that has sent nothing this long
    /// after it was accepted is closed; on a TLS listener the whole
    /// handshake must be complete by then (and the first byte of a message
    /// must follow within the same time after it). Default `10s`. It frees
    /// the resources that silent and half-open connections hold long
    /// before `idle_timeout` would; raise it for a sender that connects
    /// well ahead of its first message (it would otherwise be disconnected
    /// and connect again when it has one).
    pub first_byte_timeout: Duration,
    /// `idle_timeout` — a connection with no complete message for this long
    /// is closed. Default `300s`. Bytes that never make a message (junk,
    /// a frame trickled in but never finished) do not count as traffic, so
    /// they cannot hold a connection open past it.
    pub idle_timeout: Duration,
    /// `read_timeout` — a message whose first byte has arrived must be
    /// complete within this time, or the connection is closed, so a stalled
    /// or byte-at-a-time sender cannot hold a connection forever. Default
    /// `30s`.
    pub read_timeout: Duration,
    /// `max_message_size` — the largest message accepted, in bytes; a larger
    /// frame is drained without being buffered and rejected with AR naming
    /// its size (the connection stays open). Default `16MiB`. Written
    /// as a number of bytes or with a unit: `512KiB`, `16MiB`, `1MB`, `1GiB`
    /// (`KiB`/`MiB`/`GiB` are powers of 1024, `KB`/`MB`/`GB` of 1000); at
    /// most `1GiB`.
    pub max_message_size: usize,
}

impl MllpInConfig {
    /// Default of `host`.
    pub const DEFAULT_HOST: &'static str = "0.0.0.0";
    /// Default of `max_message_size`: 16 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

    /// The settings an item gets for `port` when it writes nothing else.
    pub fn with_port(port: u16) -> Self {
        Self {
            host: Self::DEFAULT_HOST.to_owned(),
            port,
            tls: None,
            ack_mode: AckMode::Immediate,
            application_ack_timeout: Duration::from_secs(30),
            max_connections: 100,
            max_connections_per_peer: 10,
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(30),
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// `ack_mode` of an `mllp_in` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// `immediate` (default): answer AA as soon as the message is durable
    /// in the store (its inbound log), AE/AR when it cannot be.
    #[default]
    Immediate,
    /// `never`: store the message and send no ACK, for senders that do not
    /// expect one.
    Never,
    /// `application`: relay the reply of the downstream system, waiting up to
    /// `application_ack_timeout` for it.
    Application,
}

/// `kind: router` — picks targets and applies transforms by rules.
///
/// Rules are tried in order; the first whose `when` matches decides what
/// happens to the message. A message that no rule matches is handled by
/// `no_match`.
///
/// ```yaml
/// - name: ADT router
///   kind: router
///   rules:
///     - when: MSH-9.1 = "ADT"
///       transform:
///         - set: PID-8
///           value: U
///       send: [Lab out]
///     - discard: true
///   no_match: discard
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// `rules` — required; the list of rules, tried in order.
    pub rules: Vec<RuleConfig>,
    /// `no_match` — what happens to a message that no rule matches. Default
    /// `discard`.
    pub no_match: NoMatch,
}

/// One rule of a router: `when`, then either `send` or `discard`, and
/// optionally `transform`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// `when` — the condition, e.g. `MSH-9.1 = "ADT" and MSH-9.2 in ["A01",
    /// "A04"]`, compiled when the file is loaded (see [`Condition`]).
    /// Default: none, meaning the rule matches every message (useful as the
    /// last rule).
    pub when: Option<Condition>,
    /// `send: [names]` or `discard: true` — exactly one of the two.
    pub action: RuleAction,
    /// `transform` — edits applied, in order, to the copy of the message that
    /// this rule sends: `- set: PID-8` with `value: U`, `- copy: PID-3[1].1`
    /// with `to: PID-2`, `- clear: PID-19`. Default: none. The stored
    /// original is never changed.
    pub transform: Vec<TransformStep>,
}

/// What a matching rule does with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// `send: [Lab out, Archive]` — send to these items (processes or
    /// operations of the same production; a single name is accepted too).
    Send(Vec<String>),
    /// `discard: true` — drop the message on purpose; it is marked discarded
    /// in the store.
    Discard,
}

/// `no_match` of a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoMatch {
    /// `discard` (default): drop the message, logging a warning.
    #[default]
    Discard,
    /// `error`: mark the message as an error, so it shows in the error count
    /// and can be resent once the rules are fixed.
    Error,
}

/// `kind: mllp_out` — delivers queued messages over MLLP, in order, and acts
/// on each reply with `reply_code_actions`.
///
/// ```yaml
/// - name: Lab out
///   kind: mllp_out
///   host: lab.example.org
///   port: 6661
///   failure_timeout: 15s
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MllpOutConfig {
    /// `host` — required; the receiver's host name or IP address.
    pub host: String,
    /// `port` — required; the receiver's TCP port, 1–65535.
    pub port: u16,
    /// `tls` — the name of a TLS configuration with `role: client` under
    /// `tls:`. Default: none (plain TCP).
    pub tls: Option<String>,
    /// `stay_connected` — keep the connection open between messages (`true`,
    /// default) or connect for each message and close after its reply
    /// (`false`).
    pub stay_connected: bool,
    /// `connect_timeout` — how long one connection attempt may take. Default
    /// `5s`.
    pub connect_timeout: Duration,
    /// `response_timeout` — how long to wait for the reply to a message on
    /// a live connection. Default `30s`. Passing it is "no reply" (`X` in
    /// `reply_code_actions`) at once; a connection lost while waiting is a
    /// transport failure instead, and the message is sent again.
    pub response_timeout: Duration,
    /// `retry_interval` — the pause between two attempts at the same
    /// message (after an `R` action, or a transport failure: a connection
    /// refused, closed or reset, a failed TLS handshake). Default `5s`.
    pub retry_interval: Duration,
    /// `failure_timeout` — how long a message is retried, from its first
    /// attempt, before it is given up (as in Ensemble's FailureTimeout):
    /// after `R` actions it then fails unless the entry says otherwise;
    /// after transport failures it is judged as `X` (no reply), and the
    /// item shows as in error until the receiver answers again. Default
    /// `15s`; `0` gives up after the first failed attempt. `forever` (or
    /// `-1`) retries without end and is `None` here; the file then loads
    /// with a warning, because the queue never drains while the receiver
    /// rejects.
    pub failure_timeout: Option<Duration>,
    /// `pipeline_depth` — how many messages may be sent before the reply to
    /// the first has come back, 1 to
    /// [`MAX_PIPELINE_DEPTH`](Self::MAX_PIPELINE_DEPTH). Default 1: each
    /// message waits for the reply to the one before, as Ensemble and Mirth
    /// deliver, so a message that is retried never reaches the receiver
    /// after one queued behind it. Above 1, a busy feed is no longer held to
    /// one network round trip per message: the receiver reads the messages
    /// waiting on the connection one after the other and answers them in
    /// order. The price is paid on a retry: the messages already sent
    /// behind the retried one have reached the receiver before it, and are
    /// sent again after it, so the last copy of each arrives in order.
    /// Needs `stay_connected: true`.
    pub pipeline_depth: usize,
    /// `reply_code_actions` — what each kind of reply leads to, in
    /// Ensemble's ReplyCodeActions syntax, compiled when the file is loaded.
    /// Default `":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C"`.
    pub reply_code_actions: ReplyCodeActions,
}

impl MllpOutConfig {
    /// Default of `reply_code_actions`: retry then fail on AR/CR, suspend on
    /// AE/CE, suspend on no reply code, complete on AA/CA, suspend on
    /// anything else, complete with a warning on an "I"-type code, complete
    /// on a "T"-type code.
    pub const DEFAULT_REPLY_CODE_ACTIONS: &'static str = ":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C";

    /// The largest `pipeline_depth`.
    pub const MAX_PIPELINE_DEPTH: usize = 32;

    /// The settings an item gets for `host` and `port` when it writes
    /// nothing else.
    pub fn with_address(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            stay_connected: true,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
            failure_timeout: Some(Duration::from_secs(15)),
            pipeline_depth: 1,
            reply_code_actions: ReplyCodeActions::default(),
        }
    }
}

/// `kind: file_in` — picks up files of HL7 messages from a folder (one
/// message, several back to back, or a batch per file), stores them, then
/// moves each file to the archive folder.
///
/// ```yaml
/// - name: Lab results from disk
///   kind: file_in
///   path: inbox
///   pattern: "*.hl7"
///   targets: [Lab router]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FileInConfig {
    /// `path` — required; the folder to watch. Relative paths are resolved
    /// against the folder of the productions file.
    pub path: PathBuf,
    /// `pattern` — which file names to pick up: `*` matches any run of
    /// characters, `?` one character. Default `*.hl7`.
    pub pattern: String,
    /// `archive_path` — the folder processed files are moved to. Default:
    /// `archive` inside `path`. It must differ from `path`. Relative paths are
    /// resolved against the folder of the productions file.
    pub archive_path: Option<PathBuf>,
    /// `poll_interval` — how often the folder is scanned. Default `2s`.
    pub poll_interval: Duration,
}

impl FileInConfig {
    /// Default of `pattern`.
    pub const DEFAULT_PATTERN: &'static str = "*.hl7";

    /// Where processed files go: `archive_path`, else `<path>/archive`.
    pub fn archive_dir(&self) -> PathBuf {
        self.archive_path.clone().unwrap_or_else(|| self.path.join("archive"))
    }
}

/// `kind: file_out` — writes each message to its own file in a folder.
///
/// ```yaml
/// - name: Archive
///   kind: file_out
///   path: out
///   filename: "{message_type}_{control_id}.hl7"
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutConfig {
    /// `path` — required; the folder to write to, created if missing.
    /// Relative paths are resolved against the folder of the productions
    /// file.
    pub path: PathBuf,
    /// `filename` — the name of each file, with placeholders replaced:
    /// `{control_id}` (MSH-10), `{message_type}` (MSH-9 as `ADT_A01`),
    /// `{timestamp}` (the time of writing, UTC, `YYYYMMDDhhmmssSSS`), `{seq}`
    /// (a number that grows with each file the item writes) and `{item}`
    /// (the item's name). Characters that cannot appear in file names are
    /// replaced by `_`. Default `{control_id}_{timestamp}.hl7`.
    pub filename: String,
}

impl FileOutConfig {
    /// Default of `filename`.
    pub const DEFAULT_FILENAME: &'static str = "{control_id}_{timestamp}.hl7";
    /// The placeholders `filename` may use.
    pub const PLACEHOLDERS: [&'static str; 5] = ["control_id", "message_type", "timestamp", "seq", "item"];
}

/// A named TLS configuration under `tls:`, referenced by items through
/// their `tls` setting. The same configuration drives the certificate-expiry
/// sensors in Home Assistant.
///
/// ```yaml
/// tls:
///   lab-client:
///     role: client
///     ca_file: /ssl/lab-ca-bundle.pem
///     cert_file: /ssl/switchboard.crt
///     key_file: /ssl/switchboard.key
///     key_password_env: LAB_KEY_PASSWORD
/// ```
///
/// Relative file paths are resolved against the folder of the productions
/// file; in the add-on, certificates live under `/ssl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `role` — required; `client` for `mllp_out` items, `server` for
    /// `mllp_in` items.
    pub role: TlsRole,
    /// `ca_file` — PEM bundle of the certificate authorities trusted to sign
    /// the peer's certificate. Without it, a client trusts the system's
    /// roots; a server that verifies clients needs it.
    pub ca_file: Option<PathBuf>,
    /// `cert_file` — PEM certificate chain presented to the peer, leaf first.
    /// Required for `role: server`; for a client, it enables mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// `key_file` — PEM private key of `cert_file`. Required whenever
    /// `cert_file` is set.
    pub key_file: Option<PathBuf>,
    /// `key_password_env` — the name of the environment variable that holds
    /// the key's password, for an encrypted key. At most one of
    /// `key_password_env` and `key_password_file`.
    pub key_password_env: Option<String>,
    /// `key_password_file` — a file whose first line is the key's password.
    pub key_password_file: Option<PathBuf>,
    /// `verify_peer` — how the peer's certificate is checked. Default
    /// `require` for a client, `none` for a server (clients need no
    /// certificate); `require` on a server means mutual TLS.
    pub verify_peer: VerifyPeer,
    /// `verify_host` — client only: whether the server's certificate must
    /// name the host connected to (or `server_name`). Default `true`.
    pub verify_host: bool,
    /// `server_name` — client only: the name to send (SNI) and to check the
    /// certificate against, when it differs from the item's `host`. Default:
    /// the item's `host`.
    pub server_name: Option<String>,
    /// `min_version` — the oldest TLS version accepted: `"1.2"` (default) or
    /// `"1.3"`.
    pub min_version: TlsVersion,
    /// `create_if_missing` — for trying TLS before real certificates exist:
    /// when `true` and the files are missing at start, Switchboard creates a
    /// test CA at `ca_file` (its key beside it, `.key` instead of the
    /// extension) and a certificate and key for this configuration signed
    /// by it, valid for `localhost`, `127.0.0.1` and `::1`, for both server
    /// and client use. Needs `ca_file`, `cert_file` and `key_file`. Existing
    /// files are never touched. Default `false`; never use it in production.
    pub create_if_missing: bool,
}

/// `role` of a TLS configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRole {
    /// `client`: Switchboard connects (`mllp_out`).
    Client,
    /// `server`: Switchboard accepts connections (`mllp_in`).
    Server,
}

impl std::fmt::Display for TlsRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsRole::Client => "client",
            TlsRole::Server => "server",
        })
    }
}

/// `verify_peer` of a TLS configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyPeer {
    /// `require`: the peer must present a certificate that chains to a
    /// trusted authority.
    Require,
    /// `optional`: a certificate is checked if the peer presents one (server
    /// role: clients without a certificate are still accepted).
    Optional,
    /// `none`: no check. For a client this accepts any server, which is only
    /// fit for tests.
    None,
}

/// `min_version` of a TLS configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsVersion {
    /// `"1.2"` (default).
    #[default]
    Tls12,
    /// `"1.3"`.
    Tls13,
}
