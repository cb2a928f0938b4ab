//! The store's public model: what callers hand it (received messages,
//! routing decisions, delivery results, events), what they read back
//! (queued messages, headers, stored events), and the options it opens
//! with.

use std::sync::Arc;

use bytes::Bytes;

/// How hard a commit tries to reach the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A received message is synced to the inbound log before it is
    /// acknowledged, and the write-ahead log is synced for the other
    /// changes that must last: an acknowledged message survives a power
    /// cut.
    #[default]
    Full,
    /// A received message is written to the inbound log without a sync,
    /// and syncing is left to checkpoints: survives a crash of the engine,
    /// not of the machine. Faster on slow disks.
    Normal,
}

/// Options for [`Store::open`](super::Store::open).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Run the writer and the checkpoints at the lowest CPU priority
    /// (the default). See `store.background_priority` in the
    /// configuration for the trade.
    pub low_background_priority: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { durability: Durability::Full, low_background_priority: true }
    }
}

/// Status of a message header. Serialized as stored: `queued`,
/// `delivering`, `completed`, `error`, `suspended`, `discarded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting in its target's queue.
    Queued,
    /// Taken by its target; goes back to `Queued` on restart.
    Delivering,
    /// Done.
    Completed,
    /// Failed; not retried.
    Error,
    /// Kept aside for an operator (resendable).
    Suspended,
    /// Dropped on purpose (by a rule or a ReplyCodeAction).
    Discarded,
}

impl Status {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivering => "delivering",
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Suspended => "suspended",
            Self::Discarded => "discarded",
        }
    }

    /// Reads a stored status name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "delivering" => Self::Delivering,
            "completed" => Self::Completed,
            "error" => Self::Error,
            "suspended" => Self::Suspended,
            "discarded" => Self::Discarded,
            _ => return None,
        })
    }

    /// True for statuses that still count in a queue.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Delivering)
    }

    /// Every status, in the order a message may go through them.
    pub const ALL: [Status; 6] =
        [Self::Queued, Self::Delivering, Self::Completed, Self::Error, Self::Suspended, Self::Discarded];
}

/// A received message to commit: its body, the service that took it and
/// the targets it is queued for.
#[derive(Clone, Debug)]
pub struct NewInbound {
    /// Production id. Shared (like the other names), since a service sends
    /// the same ones with every message.
    pub production: Arc<str>,
    /// The service item that received it.
    pub service: Arc<str>,
    /// Where it came from (peer address, file name).
    pub origin: Arc<str>,
    /// The raw message.
    pub body: Bytes,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-9 (`ADT^A01`).
    pub message_type: Option<String>,
    /// PID-3's first identifier (component 1 of the first repetition), for
    /// searches; routed copies inherit it. The store keeps at most
    /// [`MAX_PATIENT_BYTES`](super::MAX_PATIENT_BYTES) of it.
    pub patient_id: Option<String>,
    /// PID-5's family name (component 1 of the first repetition), likewise.
    pub patient_name: Option<String>,
    /// Items to queue it for.
    pub targets: Arc<[String]>,
    /// Decisions already made, where the message was received, by routers
    /// among `targets`. One is applied in the same transaction (the
    /// router's header is finished and its outputs queued) only while that
    /// router's queue is empty; otherwise the message is queued for the
    /// router behind what waits there, so no message overtakes another.
    pub routed: Vec<InlineRoute>,
}

impl NewInbound {
    /// Memory the message holds while it waits for the writer: its body,
    /// transformed bodies, and [`BOOKKEEPING_BYTES`] for everything else.
    pub(crate) fn weight(&self) -> usize {
        let outputs = self.routed.iter().flat_map(|r| &r.decision.outputs);
        self.body.len() + outputs.filter_map(|o| o.body.as_ref()).map(Bytes::len).sum::<usize>() + BOOKKEEPING_BYTES
    }
}

/// What a received message holds besides its bodies while in flight to the
/// writer (its strings, target list and answer channels), rounded up:
/// counted so that the bound on bytes in flight bounds memory, not only
/// bodies, however small the messages.
pub(super) const BOOKKEEPING_BYTES: usize = 1024;

/// A router's decision for a message it has not yet seen queued: the
/// router ran its rules in the task that received the message, which saves
/// a queue read, a second parse and a commit per message.
#[derive(Clone, Debug)]
pub struct InlineRoute {
    /// The router (one of the message's targets).
    pub router: String,
    /// What it decided.
    pub decision: RouteDecision,
}

/// What a router does with one message, whether it took the message from
/// its queue ([`Routed`]) or decided where it was received
/// ([`InlineRoute`]).
#[derive(Clone, Debug)]
pub struct RouteDecision {
    /// `Completed`, `Discarded` or `Error`.
    pub status: Status,
    /// Why, for `Discarded` and `Error`.
    pub error: Option<String>,
    /// Messages to queue.
    pub outputs: Vec<RoutedOutput>,
}

/// What committing an inbound message produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The session all headers of this message share.
    pub session_id: i64,
    /// The service's own header.
    pub header_id: i64,
    /// One header per target, in target order: queued, or finished by its
    /// router's decision when that was applied (see `routed`).
    pub queued: Vec<i64>,
    /// The routers among the targets whose [`InlineRoute`] was applied.
    pub routed: Vec<String>,
}

/// The result of a router processing one queued header.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The router's header.
    pub header_id: i64,
    /// What the router decided.
    pub decision: RouteDecision,
}

/// One message a router sends on.
#[derive(Clone, Debug)]
pub struct RoutedOutput {
    /// Target item (same production).
    pub target: String,
    /// A transformed body, or `None` to share the original's.
    pub body: Option<Bytes>,
    /// MSH-10 of a transformed body (defaults to the original's).
    pub control_id: Option<String>,
}

/// The end of a delivery: status, reply and error recorded together.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The header delivered.
    pub header_id: i64,
    /// Production id and target item: the queue it leaves.
    pub production: String,
    /// Target item.
    pub item: String,
    /// The new status. `Queued` puts it back at its place in the queue.
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// The reply received, if any.
    pub reply: Option<Bytes>,
    /// The error text, if any.
    pub error: Option<String>,
}

/// A pending header with its body, as an item takes it from its queue.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Header id; queues are in id order.
    pub id: i64,
    /// Session id.
    pub session_id: i64,
    /// The raw message.
    pub body: Bytes,
    /// MSH-10.
    pub control_id: Option<String>,
    /// Attempts made before.
    pub attempts: u32,
}

/// The state an operator last commanded for a production, kept across
/// restarts: a production stopped by hand stays stopped after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commanded {
    /// Started (or left to start with `autostart`).
    Running,
    /// Stopped by an operator.
    Stopped,
}

impl Commanded {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    /// Reads the stored spelling; anything else (a file written by another
    /// version) counts as running, which leaves `autostart` to decide.
    pub(super) fn parse(text: &str) -> Self {
        if text == "stopped" { Self::Stopped } else { Self::Running }
    }
}

/// Severity of an event log entry, serialized as stored: `info`,
/// `warning`, `error`. Ordered from the least to the most severe.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    /// Normal operation (start, stop, commands).
    Info,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
}

impl EventLevel {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// An event log entry. Texts must not contain message content.
#[derive(Clone, Debug)]
pub struct Event {
    /// Severity.
    pub level: EventLevel,
    /// Production id, if it concerns one.
    pub production: Option<String>,
    /// Item name, if it concerns one.
    pub item: Option<String>,
    /// Short machine-readable kind, e.g. `start`, `stop`, `delivery`.
    pub kind: String,
    /// What happened.
    pub text: String,
}

/// A stored event.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StoredEvent {
    /// Its id: events are numbered in the order they were recorded (see
    /// [`Store::events`](super::Store::events) for paging by it).
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// Production id.
    pub production: Option<String>,
    /// Item name.
    pub item: Option<String>,
    /// Kind.
    pub kind: String,
    /// Text.
    pub text: String,
}

/// How much a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Headers removed (with their replies).
    pub headers: u64,
    /// Bodies no longer referenced, removed.
    pub bodies: u64,
    /// Events removed.
    pub events: u64,
}

/// How far one purge batch got.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PurgeStep {
    pub(super) stats: PurgeStats,
    /// The next batch looks at headers after this id.
    pub(super) after: i64,
    /// No header older than the cutoff is left after `after`.
    pub(super) headers_done: bool,
}

/// How far one batch of [`Store::resend_all`](super::Store::resend_all)
/// got.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ResendStep {
    /// Headers put back in their queue.
    pub(super) resent: u64,
    /// The next batch looks at headers after this id.
    pub(super) after: i64,
    /// None is left after `after`.
    pub(super) done: bool,
}

/// Messages left `delivering` by the previous run and put back in their
/// queues by [`Store::open`](super::Store::open).
pub type Recovered = u64;

// --- finding messages and events --------------------------------------------

/// Filters of a message search ([`Store::search_messages`]); every field
/// is optional and those given are combined with AND. An empty string
/// counts as not given, as an empty form field means.
///
/// [`Store::search_messages`]: super::Store::search_messages
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MessageQuery {
    /// Created at or after (Unix milliseconds).
    pub from: Option<i64>,
    /// Created before (Unix milliseconds).
    pub to: Option<i64>,
    /// Production id.
    pub production: Option<String>,
    /// The header's target item: the service that received the message,
    /// the router or the operation it was queued for.
    pub item: Option<String>,
    /// Status.
    pub status: Option<Status>,
    /// MSH-9: `ADT` finds every ADT (`ADT^A01`, `ADT^A08`, `ADT` alone),
    /// `ADT^A01` only that one. Case-sensitive, as HL7 codes are.
    pub message_type: Option<String>,
    /// MSH-10, exact.
    pub control_id: Option<String>,
    /// PID-3's first identifier, exact.
    pub patient_id: Option<String>,
    /// The start of PID-5's family name, case-insensitive (for ASCII
    /// letters; other letters match their own case only).
    pub patient_name: Option<String>,
    /// Bytes anywhere in the body, case-sensitive (compared with the raw
    /// bytes of the message, as UTF-8).
    pub text: Option<String>,
}

/// One header as a message list shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MessageSummary {
    /// Header id.
    pub id: i64,
    /// The session: every header caused by one received message.
    pub session_id: i64,
    /// The header that caused this one (none for a received message).
    pub parent_id: Option<i64>,
    /// Production id.
    pub production: String,
    /// Where it came from: the peer or file for a received message, else
    /// the item that sent it on.
    pub source: String,
    /// The item it is for.
    pub target: String,
    /// Status.
    pub status: Status,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-9 (`ADT^A01`).
    pub message_type: Option<String>,
    /// PID-3's first identifier.
    pub patient_id: Option<String>,
    /// PID-5's family name.
    pub patient_name: Option<String>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why it failed or was discarded, if it did.
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last status change.
    pub updated_at: i64,
    /// The header this one is a copy of, for a message sent again with
    /// [`Store::resend_copy`](super::Store::resend_copy).
    pub resent_from: Option<i64>,
}

/// One page of a message search, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// The headers found, newest first (id descending).
    pub messages: Vec<MessageSummary>,
    /// Where the next page starts (pass it back as `before`), or `None`
    /// when nothing older is left to examine. A page with fewer messages
    /// than asked for and `next` set is a search that stopped at its
    /// budget: the caller may search further from `next`.
    pub next: Option<i64>,
    /// How many headers this call examined: every header of the range for
    /// a search by time, item, type or text, the index's candidates for a
    /// search by control id, patient id or a status other than
    /// `completed`.
    pub scanned: u64,
    /// The creation time of the oldest header this call reached (Unix
    /// milliseconds): "searched back to". `None` when it reached none.
    pub scanned_back_to: Option<i64>,
}

/// Everything the detail page of one message shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MessageDetail {
    /// The header.
    pub summary: MessageSummary,
    /// The body it points at, as received or transformed; serialized as
    /// text (invalid UTF-8 replaced).
    #[serde(serialize_with = "lossy_text")]
    pub body: Bytes,
    /// The reply its delivery received, with when (Unix milliseconds).
    #[serde(serialize_with = "lossy_reply")]
    pub reply: Option<(i64, Bytes)>,
    /// The whole session in id order: the received message, its router,
    /// the operations' copies, and copies sent again.
    pub trace: Vec<MessageSummary>,
    /// The headers sent again from this one, oldest first.
    pub resends: Vec<i64>,
}

fn lossy_text<S: serde::Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

fn lossy_reply<S: serde::Serializer>(reply: &Option<(i64, Bytes)>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct as _;
    match reply {
        None => s.serialize_none(),
        Some((at, bytes)) => {
            let mut st = s.serialize_struct("Reply", 2)?;
            st.serialize_field("received_at", at)?;
            st.serialize_field("data", &String::from_utf8_lossy(bytes))?;
            st.end()
        }
    }
}

/// Filters of an event search ([`Store::events`]); every field optional,
/// combined with AND; an empty string counts as not given.
///
/// [`Store::events`]: super::Store::events
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct EventQuery {
    /// This level and worse: `warning` finds warnings and errors.
    pub level: Option<EventLevel>,
    /// Production id.
    pub production: Option<String>,
    /// Item name.
    pub item: Option<String>,
    /// At or after (Unix milliseconds).
    pub from: Option<i64>,
    /// Before (Unix milliseconds).
    pub to: Option<i64>,
}

/// One page of events, newest first.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The events found, newest first (id descending).
    pub events: Vec<StoredEvent>,
    /// Where the next page starts (pass it back as `before`), or `None`
    /// when nothing older is left to examine; as for messages, a short
    /// page with `next` set stopped at its budget.
    pub next: Option<i64>,
}

/// What is wrong with the store, if anything. It is shown wherever the
/// engine's state is (web UI, Home Assistant, metrics): a damaged database
/// or a disk that refuses commits needs someone to act, and since the
/// messages meanwhile wait safely in the logs, nothing else would tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StoreHealth {
    /// Damage the background integrity check found in the database after
    /// it opened (SQLite's findings and what to do).
    pub damage: Option<String>,
    /// Why received messages or delivery results cannot be committed now
    /// (a full disk, for one); they are kept in the logs and tried again
    /// every second.
    pub commit_trouble: Option<String>,
}

impl StoreHealth {
    /// Whether anything is wrong.
    pub fn has_problem(&self) -> bool {
        self.damage.is_some() || self.commit_trouble.is_some()
    }
}
