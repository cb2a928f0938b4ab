//! The status hub: the one place that says what the engine is doing.
//!
//! Every production and item state change is broadcast as a
//! [`StatusChange`]; counters and queue depths live in atomics that items
//! bump without locking, and a snapshot of everything ([`EngineStatus`]) is
//! published on a watch channel whenever something changed, at most every
//! [`SNAPSHOT_INTERVAL`]. Readers (the MQTT bridge, the web UI) subscribe to
//! either; none of them reaches into the engine.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{ItemRole, KindTag};
use crate::sync::LockExt as _;
use tokio::sync::{Notify, broadcast, watch};

/// The shortest time between two published snapshots: counters of a busy
/// feed change thousands of times a second, readers need a few updates.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(200);

/// The state of a production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductionState {
    /// Not running.
    Stopped,
    /// Items are being started.
    Starting,
    /// All enabled items run.
    Running,
    /// Items are being stopped.
    Stopping,
    /// Running, but an item is in error (cannot listen, downstream
    /// unreachable past its failure timeout, ...).
    Troubled,
}

impl ProductionState {
    /// Every state, for enum sensors.
    pub const ALL: [Self; 5] = [Self::Stopped, Self::Starting, Self::Running, Self::Stopping, Self::Troubled];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Troubled => "troubled",
        }
    }

    /// True while the production takes traffic (running or troubled).
    pub fn is_up(self) -> bool {
        matches!(self, Self::Running | Self::Troubled)
    }
}

/// The state of one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Not running (its production is stopped).
    Stopped,
    /// Being started.
    Starting,
    /// Working.
    Running,
    /// Running but failing; see the last error.
    Error,
    /// Switched off by an operator or by a `D` reply code action.
    Disabled,
}

impl ItemState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Error => "error",
            Self::Disabled => "disabled",
        }
    }
}

/// Live counters and state of one item, shared with its task.
#[derive(Debug)]
pub struct ItemStats {
    /// Messages taken in (received by a service, taken from the queue by a
    /// process or operation).
    pub received: AtomicU64,
    /// Messages passed on (delivered, routed).
    pub sent: AtomicU64,
    /// Messages that ended in an error, rejection or suspension.
    pub errors: AtomicU64,
    /// Open connections (services: clients; operations: 0 or 1).
    pub connections: AtomicU32,
    /// How long deliveries take (operations).
    pub latency: super::latency::Latency,
    state: Mutex<(ItemState, Option<String>)>,
    hub: StatusHub,
}

impl ItemStats {
    pub(crate) fn new(hub: StatusHub, enabled: bool) -> Self {
        let state = if enabled { ItemState::Stopped } else { ItemState::Disabled };
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connections: AtomicU32::new(0),
            latency: super::latency::Latency::default(),
            state: Mutex::new((state, None)),
            hub,
        }
    }

    /// Adds to a counter and marks the snapshot stale.
    pub fn bump(&self, counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
        self.hub.touch();
    }

    /// Changes the open-connection gauge.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.hub.touch();
    }

    /// The state and the last error.
    pub fn state(&self) -> (ItemState, Option<String>) {
        self.state.lock_unpoisoned().clone()
    }

    /// Sets the state; returns true when it changed. `error` replaces the
    /// last error only when given.
    pub(crate) fn set_state(&self, state: ItemState, error: Option<String>) -> bool {
        let mut guard = self.state.lock_unpoisoned();
        let changed = guard.0 != state || (error.is_some() && guard.1 != error);
        guard.0 = state;
        if error.is_some() {
            guard.1 = error;
        }
        drop(guard);
        if changed {
            self.hub.touch();
        }
        changed
    }
}

/// A point-in-time view of one item.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ItemStatus {
    /// Item name.
    pub name: String,
    /// `mllp_in`, `router`, ...
    pub kind: KindTag,
    /// `service`, `process` or `operation`.
    pub role: ItemRole,
    /// State.
    pub state: ItemState,
    /// Whether the item is enabled.
    pub enabled: bool,
    /// Messages waiting in its queue (processes and operations).
    pub queue_depth: u64,
    /// Open connections.
    pub connections: u32,
    /// Messages received.
    pub received: u64,
    /// Messages passed on.
    pub sent: u64,
    /// Errors.
    pub errors: u64,
    /// The last error text (never message content).
    pub last_error: Option<String>,
    /// A service that an operation of this engine delivers to (the hop
    /// between two productions): its messages entered the engine
    /// elsewhere first, so they are not counted as received from outside.
    pub fed_by_engine: bool,
}

/// A point-in-time view of one production.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProductionStatus {
    /// Production id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// State.
    pub state: ProductionState,
    /// Sum of its items' queue depths.
    pub queued: u64,
    /// Its items, in file order.
    pub items: Vec<ItemStatus>,
}

/// A point-in-time view of the engine.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EngineStatus {
    /// When the engine started.
    #[serde(with = "unix_seconds")]
    #[schema(value_type = u64)]
    pub started_at: SystemTime,
    /// Productions, in file order.
    pub productions: Vec<ProductionStatus>,
    /// Size of the store on disk, bytes.
    pub store_bytes: u64,
    /// What is wrong with the store, if anything.
    pub store: crate::store::StoreHealth,
    /// Expiry and health of every TLS configuration, refreshed at start,
    /// daily and whenever certificate files change.
    pub certificates: Vec<crate::tls::CertificateStatus>,
}

impl EngineStatus {
    /// One production's status.
    pub fn production(&self, id: &str) -> Option<&ProductionStatus> {
        self.productions.iter().find(|p| p.id == id)
    }

    /// One item's status.
    pub fn item(&self, production: &str, item: &str) -> Option<&ItemStatus> {
        self.production(production)?.items.iter().find(|i| i.name == item)
    }

    /// Messages received from outside the engine so far: by every service
    /// except those only this engine's own operations deliver to.
    pub fn received_from_outside(&self) -> u64 {
        let services = self.productions.iter().flat_map(|p| &p.items);
        services.filter(|i| i.role == ItemRole::Service && !i.fed_by_engine).map(|i| i.received).sum()
    }
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

/// One state change, as it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// A production changed state.
    Production {
        /// Production id.
        id: String,
        /// The new state.
        state: ProductionState,
    },
    /// An item changed state.
    Item {
        /// Production id.
        production: String,
        /// Item name.
        item: String,
        /// The new state.
        state: ItemState,
        /// The error that caused an `Error` state.
        error: Option<String>,
    },
}

/// The hub: change broadcast plus a coalesced snapshot watch.
#[derive(Clone, Debug)]
pub struct StatusHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    changes: broadcast::Sender<StatusChange>,
    snapshot: watch::Sender<Arc<EngineStatus>>,
    dirty: AtomicBool,
    wake: Notify,
}

impl StatusHub {
    pub(crate) fn new(initial: EngineStatus) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let (snapshot, _) = watch::channel(Arc::new(initial));
        Self { inner: Arc::new(HubInner { changes, snapshot, dirty: AtomicBool::new(false), wake: Notify::new() }) }
    }

    /// Marks the snapshot stale; cheap enough for every message.
    pub fn touch(&self) {
        if !self.inner.dirty.swap(true, Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
    }

    pub(crate) fn publish_change(&self, change: StatusChange) {
        let _ = self.inner.changes.send(change);
        self.touch();
    }

    /// Every state change from now on. A reader that falls more than 1024
    /// changes behind gets `Lagged` and should re-read the snapshot.
    pub fn changes(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.changes.subscribe()
    }

    /// The latest snapshot, updated when anything changes (coalesced).
    pub fn subscribe(&self) -> watch::Receiver<Arc<EngineStatus>> {
        self.inner.snapshot.subscribe()
    }

    /// Runs until `stop`: rebuilds the snapshot with `build` whenever it is
    /// stale, at most every [`SNAPSHOT_INTERVAL`].
    pub(crate) async fn run(&self, build: impl Fn() -> EngineStatus, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inner.wake.notified() => {}
            }
            self.inner.dirty.store(false, Ordering::Release);
            let status = build();
            self.inner.snapshot.send_if_modified(|current| {
                if **current == status {
                    false
                } else {
                    *current = Arc::new(status);
                    true
                }
            });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SNAPSHOT_INTERVAL) => {}
            }
        }
    }
}
