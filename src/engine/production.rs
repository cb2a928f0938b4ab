//! A production at run time: its items, their tasks, and the state machine
//! stopped → starting → running/troubled → stopping → stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::items::{self, ItemCtx, ItemSpec};
use super::replies::ReplyBoard;
use super::status::{ItemState, ItemStats, ItemStatus, ProductionState, ProductionStatus, StatusChange, StatusHub};
use crate::config::{ItemRole, KindTag, ProductionConfig};
use crate::store::{Event, EventLevel, Store};
use crate::sync::LockExt as _;
use crate::tls::TlsConfigHandle;

/// How long a service may take to report that it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What items need from their production.
pub(crate) struct ProductionShared {
    pub(crate) id: Arc<str>,
    pub(crate) name: String,
    pub(crate) state: Mutex<ProductionState>,
    pub(crate) slots: Vec<Arc<ItemSlot>>,
    pub(crate) hub: StatusHub,
    pub(crate) store: Store,
    pub(crate) replies: Arc<ReplyBoard>,
    pub(crate) tls: Arc<TlsHandles>,
    /// The runtime operations run on (see the `deliveries` module).
    pub(crate) deliveries: tokio::runtime::Handle,
}

/// The TLS configurations of the productions file, loaded once; a
/// configuration that failed to load keeps its error, which the items that
/// use it report (their production shows as troubled).
pub(crate) type TlsHandles = std::collections::HashMap<String, Result<Arc<TlsConfigHandle>, String>>;

impl ProductionShared {
    /// The TLS configuration `name`, or why it cannot be used.
    pub(crate) fn tls(&self, name: &str) -> Result<Arc<TlsConfigHandle>, String> {
        match self.tls.get(name) {
            Some(Ok(handle)) => Ok(handle.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("no TLS configuration {name:?}")),
        }
    }

    pub(crate) fn state(&self) -> ProductionState {
        *self.state.lock_unpoisoned()
    }

    fn set_state(&self, state: ProductionState) {
        let mut guard = self.state.lock_unpoisoned();
        if *guard == state {
            return;
        }
        *guard = state;
        drop(guard);
        tracing::info!(production = %self.id, state = state.as_str(), "production state");
        self.hub.publish_change(StatusChange::Production { id: self.id.to_string(), state });
    }

    /// Running or troubled, from the items' states, while the production is
    /// up; any other state is left alone.
    pub(crate) fn refresh(&self) {
        let current = self.state();
        if !current.is_up() {
            return;
        }
        let troubled = self.slots.iter().any(|s| s.stats.state().0 == ItemState::Error);
        self.set_state(if troubled { ProductionState::Troubled } else { ProductionState::Running });
    }

    /// Records an item state change: status hub, log, and the production's
    /// own state.
    pub(crate) fn item_state(&self, slot: &ItemSlot, state: ItemState, error: Option<String>) {
        if slot.stats.set_state(state, error.clone()) {
            match (&error, state) {
                (Some(e), ItemState::Error) => {
                    tracing::warn!(production = %self.id, item = %slot.name, error = %e, "item in error");
                }
                _ => tracing::debug!(production = %self.id, item = %slot.name, state = state.as_str(), "item state"),
            }
            self.hub.publish_change(StatusChange::Item {
                production: self.id.to_string(),
                item: slot.name.clone(),
                state,
                error,
            });
        }
        self.refresh();
    }

    /// Disables an item from inside its own task (a `D` reply code action):
    /// the flag is stored at once; the task ends by itself.
    pub(crate) fn disable_later(&self, item: &str) {
        let Some(slot) = self.slots.iter().find(|s| s.name == item) else { return };
        slot.enabled.store(false, Ordering::Relaxed);
        self.item_state(slot, ItemState::Disabled, None);
        let (store, production, item) = (self.store.clone(), self.id.to_string(), item.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.set_item_enabled(&production, &item, false).await {
                tracing::error!(%production, %item, error = %e, "cannot store the disabled flag");
            }
        });
    }

    pub(crate) fn event(&self, level: EventLevel, item: Option<&str>, kind: &str, text: String) {
        self.store.log_event(Event {
            level,
            production: Some(self.id.to_string()),
            item: item.map(str::to_owned),
            kind: kind.to_owned(),
            text,
        });
    }

    pub(crate) fn status(&self) -> ProductionStatus {
        let items: Vec<ItemStatus> = self.slots.iter().map(|s| s.status(&self.id, &self.store)).collect();
        ProductionStatus {
            id: self.id.to_string(),
            name: self.name.clone(),
            state: self.state(),
            queued: items.iter().map(|i| i.queue_depth).sum(),
            items,
        }
    }
}

/// One configured item and, while it runs, its task.
pub(crate) struct ItemSlot {
    pub(crate) name: String,
    pub(crate) kind: KindTag,
    pub(crate) spec: Arc<ItemSpec>,
    pub(crate) stats: Arc<ItemStats>,
    pub(crate) enabled: AtomicBool,
    /// See [`ItemStatus::fed_by_engine`].
    pub(crate) fed_by_engine: bool,
    task: Mutex<Option<ItemTask>>,
}

struct ItemTask {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl ItemSlot {
    pub(crate) fn new(name: String, kind: KindTag, spec: ItemSpec, enabled: bool, hub: StatusHub) -> Self {
        Self {
            name,
            kind,
            spec: Arc::new(spec),
            stats: Arc::new(ItemStats::new(hub, enabled)),
            enabled: AtomicBool::new(enabled),
            fed_by_engine: false,
            task: Mutex::new(None),
        }
    }

    pub(crate) fn role(&self) -> ItemRole {
        self.kind.role()
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn status(&self, production: &str, store: &Store) -> ItemStatus {
        let (state, last_error) = self.stats.state();
        ItemStatus {
            name: self.name.clone(),
            kind: self.kind,
            role: self.role(),
            state,
            enabled: self.is_enabled(),
            queue_depth: if self.role() == ItemRole::Service { 0 } else { store.queue_depth(production, &self.name) },
            connections: self.stats.connections.load(Ordering::Relaxed),
            received: self.stats.received.load(Ordering::Relaxed),
            sent: self.stats.sent.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            last_error,
            fed_by_engine: self.fed_by_engine,
        }
    }

    /// Starts the item's task; resolves once a service listens (or failed to).
    pub(crate) async fn start(self: &Arc<Self>, production: &Arc<ProductionShared>) {
        let cancel = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let ctx = ItemCtx::new(production.clone(), self.clone(), cancel.clone(), ready_tx);
        production.item_state(self, ItemState::Starting, None);
        let handle = match self.role() {
            ItemRole::Operation => production.deliveries.spawn(items::run(ctx)),
            ItemRole::Service | ItemRole::Process => tokio::spawn(items::run(ctx)),
        };
        *self.task.lock_unpoisoned() = Some(ItemTask { cancel, handle });
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => production.item_state(self, ItemState::Running, None),
            Ok(Ok(Err(error))) => production.item_state(self, ItemState::Error, Some(error)),
            Ok(Err(_)) => {} // the task ended before saying: it set its own state
            Err(_) => production.item_state(self, ItemState::Error, Some("did not start within 10 s".into())),
        }
    }

    /// Stops the item's task, waiting up to `timeout` for it to finish its
    /// current message; a task that does not is aborted and its taken
    /// messages go back to the queue.
    pub(crate) async fn stop(&self, production: &ProductionShared, timeout: Duration, final_state: ItemState) {
        let task = self.task.lock_unpoisoned().take();
        if let Some(ItemTask { cancel, mut handle }) = task {
            cancel.cancel();
            if tokio::time::timeout(timeout, &mut handle).await.is_err() {
                tracing::warn!(production = %production.id, item = %self.name, "item did not stop in time; aborted");
                handle.abort();
                let _ = handle.await;
            }
            if self.role() != ItemRole::Service
                && let Err(e) = production.store.requeue_item(&production.id, &self.name).await
            {
                tracing::error!(production = %production.id, item = %self.name, error = %e, "cannot requeue messages");
            }
        }
        self.stats.connections.store(0, Ordering::Relaxed);
        production.item_state(self, final_state, None);
    }
}

/// A production: its shared state and the lock that serialises commands.
pub(crate) struct Production {
    pub(crate) shared: Arc<ProductionShared>,
    pub(crate) config: ProductionConfig,
    pub(crate) commands: tokio::sync::Mutex<()>,
}

impl Production {
    /// Starts every enabled item: operations first, then processes, then
    /// services, so that nothing is received before it can be handled.
    pub(crate) async fn start(&self) {
        let shared = &self.shared;
        if shared.state() != ProductionState::Stopped {
            return;
        }
        shared.set_state(ProductionState::Starting);
        for role in [ItemRole::Operation, ItemRole::Process, ItemRole::Service] {
            for slot in shared.slots.iter().filter(|s| s.role() == role && s.is_enabled()) {
                slot.start(shared).await;
            }
        }
        shared.set_state(ProductionState::Running);
        shared.refresh();
    }

    /// Stops services first (no new messages), then processes and
    /// operations, each within the production's stop timeout.
    pub(crate) async fn stop(&self) {
        let shared = &self.shared;
        if !matches!(shared.state(), ProductionState::Running | ProductionState::Troubled | ProductionState::Starting) {
            return;
        }
        shared.set_state(ProductionState::Stopping);
        let timeout = self.config.stop_timeout;
        for role in [ItemRole::Service, ItemRole::Process, ItemRole::Operation] {
            let stops = shared.slots.iter().filter(|s| s.role() == role).map(|slot| {
                let final_state = if slot.is_enabled() { ItemState::Stopped } else { ItemState::Disabled };
                slot.stop(shared, timeout, final_state)
            });
            futures_util::future::join_all(stops).await;
        }
        shared.set_state(ProductionState::Stopped);
    }
}
