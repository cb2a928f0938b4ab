//! The production engine: productions of services, processes and
//! operations, their lifecycle, and the control API and status hub that
//! the outside (MQTT bridge, web UI, command line) uses.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use switchboard::engine::{CommandSource, Engine};
//! use switchboard::store::{Store, StoreOptions};
//!
//! let config = switchboard::config::load("examples/demo.yaml".as_ref())?;
//! let (store, _recovered) = Store::open("demo-data/store.db".as_ref(), StoreOptions::default())?;
//! let engine = Engine::new(config, store)?;
//! engine.start().await;                       // autostart productions
//! engine.stop_production("demo", CommandSource::Api).await?;
//! let status = engine.status();               // or engine.subscribe() for updates
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

mod context;
mod deliveries;
mod intake;
mod items;
mod latency;
mod production;
mod replies;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{Commanded, Event, EventLevel, Store, StoreError};
use crate::sync::LockExt as _;
use items::ItemSpec;
pub use latency::{BUCKETS as LATENCY_BUCKETS, LatencySnapshot};
use production::{ItemSlot, Production, ProductionShared};
use replies::ReplyBoard;
pub use status::{EngineStatus, ItemState, ItemStatus, ProductionState, ProductionStatus, StatusChange, StatusHub};

/// Who asked for a command; written to the event log with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandSource {
    /// Home Assistant over MQTT.
    Mqtt,
    /// The web UI.
    Ui,
    /// The REST API.
    Api,
    /// The command line.
    Cli,
    /// Restoring the last commanded state at start-up.
    Autostart,
}

impl CommandSource {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Ui => "ui",
            Self::Api => "api",
            Self::Cli => "cli",
            Self::Autostart => "autostart",
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thread that runs the operations could not be started.
    #[error("cannot start the delivery thread: {0}")]
    Thread(std::io::Error),
}

/// Why a command was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No production with that id.
    #[error("no production {0:?}")]
    UnknownProduction(String),
    /// No item with that name in the production.
    #[error("production {production:?} has no item {item:?}")]
    UnknownItem {
        /// Production id.
        production: String,
        /// Item name.
        item: String,
    },
    /// The command cannot be stored.
    #[error("cannot store the command: {0}")]
    Store(#[from] StoreError),
}

/// Why a test message was not taken (see [`Engine::submit_test_message`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TestMessageError {
    /// No such production or item, or the store failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The item is a router or an operation.
    #[error("the item is not a service")]
    NotAService,
    /// The message does not parse.
    #[error("the message does not parse: {0}")]
    Parse(#[from] crate::hl7::ParseError),
}

/// Settings of the engine itself (not of its productions).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// A certificate expiring within this many days is reported as a
    /// problem. Default 30.
    pub certificate_warning_days: u32,
    /// How often certificate files are checked for changes. Default 30 s.
    pub tls_reload_interval: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { certificate_warning_days: 30, tls_reload_interval: Duration::from_secs(30) }
    }
}

/// How often certificates are re-checked even when their files do not
/// change (days left decrease by themselves).
const CERTIFICATE_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// The engine. Cheap to clone; all clones control the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    config: Config,
    options: EngineOptions,
    tls: Arc<production::TlsHandles>,
    certificates: std::sync::Mutex<Vec<crate::tls::CertificateStatus>>,
    store: Store,
    productions: Vec<Production>,
    index: HashMap<String, usize>,
    hub: StatusHub,
    started_at: SystemTime,
    shutdown: CancellationToken,
    /// Kept for as long as the engine: its operations run there.
    _deliveries: deliveries::DeliveryThread,
}

impl Engine {
    /// Builds the engine from a validated configuration and an open store.
    /// Nothing runs until [`start`](Self::start).
    pub fn new(config: Config, store: Store) -> Result<Self, EngineError> {
        Self::with_options(config, store, EngineOptions::default())
    }

    /// [`new`](Self::new) with engine settings.
    pub fn with_options(config: Config, store: Store, options: EngineOptions) -> Result<Self, EngineError> {
        let started_at = SystemTime::now();
        let hub = StatusHub::new(EngineStatus {
            started_at,
            productions: Vec::new(),
            store_bytes: 0,
            store: crate::store::StoreHealth::default(),
            certificates: Vec::new(),
        });
        let tls: Arc<production::TlsHandles> = Arc::new(
            config
                .tls
                .iter()
                .map(|(name, tls)| {
                    let handle = crate::tls::TlsConfigHandle::load(name, tls).map(Arc::new).map_err(|e| {
                        tracing::error!(tls = %name, error = %e, "TLS configuration cannot be used");
                        e.to_string()
                    });
                    (name.clone(), handle)
                })
                .collect(),
        );
        let deliveries = deliveries::DeliveryThread::start().map_err(EngineError::Thread)?;
        let mut productions = Vec::new();
        let fed_by_engine = config.fed_by_own_operations();
        for production in &config.productions {
            let application_mode = production.items.iter().any(|i| {
                matches!(&i.kind, crate::config::ItemKind::MllpIn(c) if c.ack_mode == crate::config::AckMode::Application)
            });
            let mut slots = Vec::new();
            for item in &production.items {
                let spec = ItemSpec::compile(item);
                let enabled = store.item_enabled(&production.id, &item.name)?.unwrap_or(item.enabled);
                let mut slot = ItemSlot::new(item.name.clone(), item.kind.tag(), spec, enabled, hub.clone());
                slot.fed_by_engine = fed_by_engine.iter().any(|(p, i)| *p == production.id && *i == item.name);
                slots.push(Arc::new(slot));
            }
            let shared = ProductionShared {
                id: production.id.as_str().into(),
                name: production.name.clone(),
                state: std::sync::Mutex::new(ProductionState::Stopped),
                slots,
                hub: hub.clone(),
                store: store.clone(),
                replies: Arc::new(ReplyBoard::new(application_mode)),
                tls: tls.clone(),
                deliveries: deliveries.handle(),
            };
            productions.push(Production {
                shared: Arc::new(shared),
                config: production.clone(),
                commands: tokio::sync::Mutex::new(()),
            });
        }
        let index = productions.iter().enumerate().map(|(i, p)| (p.config.id.clone(), i)).collect();
        let certificates = std::sync::Mutex::new(Vec::new());
        let inner = EngineInner {
            config,
            options,
            tls,
            certificates,
            store,
            productions,
            index,
            hub,
            started_at,
            shutdown: CancellationToken::new(),
            _deliveries: deliveries,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Starts the status hub and every production with `autostart`, unless
    /// an operator stopped it last (the last commanded state is restored).
    pub async fn start(&self) {
        let engine = self.clone();
        let stop = self.inner.shutdown.clone();
        tokio::spawn(async move {
            let hub = engine.inner.hub.clone();
            hub.run(|| engine.status(), stop).await;
        });
        // Queue depths, damage and commit trouble change in the store, not
        // through the items' counters: they mark the snapshot stale too.
        let (store, hub, stop) = (self.inner.store.clone(), self.inner.hub.clone(), self.inner.shutdown.clone());
        tokio::spawn(async move {
            let (mut damage, mut trouble) = (store.damage(), store.commit_trouble());
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = store.queue_depths_changed() => hub.touch(),
                    Ok(()) = damage.changed() => hub.touch(),
                    Ok(()) = trouble.changed() => hub.touch(),
                }
            }
        });
        self.check_certificates();
        let engine = self.clone();
        tokio::spawn(async move { engine.maintain_tls().await });
        self.inner.hub.touch();
        for production in &self.inner.productions {
            let id = &production.config.id;
            let commanded = match self.inner.store.commanded_state(id) {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(production = %id, error = %e, "cannot read the last commanded state");
                    None
                }
            };
            let start = match commanded {
                Some(Commanded::Stopped) => false,
                Some(Commanded::Running) | None => production.config.autostart,
            };
            if start {
                let _guard = production.commands.lock().await;
                production.start().await;
                self.event(id, "start", "started at engine start-up (autostart)".into(), CommandSource::Autostart);
            }
        }
    }

    /// Re-checks every TLS configuration's certificates for the status hub.
    fn check_certificates(&self) {
        if self.inner.config.tls.is_empty() {
            return;
        }
        let reports = crate::tls::check_all(&self.inner.config, self.inner.options.certificate_warning_days);
        let mut statuses: Vec<_> = reports.iter().map(|r| r.status()).collect();
        for status in &mut statuses {
            if let Some(finding) = self.not_in_force(&status.name) {
                status.problem = true;
                status.problems.push(finding);
            }
        }
        for status in statuses.iter().filter(|s| s.problem) {
            let problems: Vec<&str> = status.problems.iter().map(|f| f.message.as_str()).collect();
            tracing::warn!(tls = %status.name, "certificate problems: {}", problems.join("; "));
        }
        *self.inner.certificates.lock_unpoisoned() = statuses;
        self.inner.hub.touch();
    }

    /// The doctor reads the files, but what is in force may be older: a
    /// finding when the files of TLS configuration `name` changed while the
    /// engine ran and could not be used.
    fn not_in_force(&self, name: &str) -> Option<crate::tls::Finding> {
        let handle = self.inner.tls.get(name).and_then(|h| h.as_ref().ok())?;
        let error = handle.last_reload_error()?;
        Some(crate::tls::Finding {
            severity: crate::tls::Severity::Error,
            kind: crate::tls::FindingKind::NotInForce,
            message: format!(
                "the files changed but cannot be used, so the certificate loaded before them is still in force \
                 (until it expires, or the engine restarts): {error}"
            ),
        })
    }

    /// Picks up renewed certificate files (new handshakes use them) and
    /// re-checks expiry daily.
    async fn maintain_tls(&self) {
        if self.inner.tls.is_empty() {
            return;
        }
        let mut last_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(self.inner.options.tls_reload_interval) => {}
            }
            let mut changed = false;
            for handle in self.inner.tls.values().filter_map(|h| h.as_ref().ok()) {
                match handle.reload_if_changed() {
                    Ok(true) => {
                        changed = true;
                        let text = format!("TLS configuration {:?}: new certificate files in use", handle.name());
                        tracing::info!("{text}");
                        self.inner.store.log_event(Event {
                            level: EventLevel::Info,
                            production: None,
                            item: None,
                            kind: "tls".into(),
                            text,
                        });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        changed = true;
                        tracing::error!(tls = handle.name(), error = %e, "renewed certificate files cannot be used; keeping the previous ones");
                        self.inner.store.log_event(Event {
                            level: EventLevel::Error,
                            production: None,
                            item: None,
                            kind: "tls".into(),
                            text: format!("renewed files cannot be used, the previous ones stay in force: {e}"),
                        });
                    }
                }
            }
            if changed || last_check.elapsed() >= CERTIFICATE_RECHECK {
                last_check = tokio::time::Instant::now();
                self.check_certificates();
            }
        }
    }

    fn production(&self, id: &str) -> Result<&Production, ControlError> {
        self.inner
            .index
            .get(id)
            .map(|&i| &self.inner.productions[i])
            .ok_or_else(|| ControlError::UnknownProduction(id.to_owned()))
    }

    fn event(&self, production: &str, kind: &str, text: String, source: CommandSource) {
        tracing::info!(%production, source = source.as_str(), "{text}");
        self.inner.store.log_event(Event {
            level: EventLevel::Info,
            production: Some(production.to_owned()),
            item: None,
            kind: kind.to_owned(),
            text: format!("{text} (by {})", source.as_str()),
        });
    }

    /// Starts a production; a no-op if it already runs. The commanded state
    /// is stored so that a restart of the engine restores it.
    pub async fn start_production(&self, id: &str, source: CommandSource) -> Result<(), ControlError> {
        let production = self.production(id)?;
        let _guard = production.commands.lock().await;
        self.inner.store.set_commanded_state(id, Commanded::Running).await?;
        if production.shared.state() == ProductionState::Stopped {
            production.start().await;
            self.event(id, "start", "production started".into(), source);
        }
        Ok(())
    }

    /// Stops a production gracefully; a no-op if it is stopped.
    pub async fn stop_production(&self, id: &str, source: CommandSource) -> Result<(), ControlError> {
        let production = self.production(id)?;
        let _guard = production.commands.lock().await;
        self.inner.store.set_commanded_state(id, Commanded::Stopped).await?;
        if production.shared.state() != ProductionState::Stopped {
            production.stop().await;
            self.event(id, "stop", "production stopped".into(), source);
        }
        Ok(())
    }

    fn slot(&self, production: &str, item: &str) -> Result<(&Production, Arc<ItemSlot>), ControlError> {
        let p = self.production(production)?;
        let slot =
            p.shared.slots.iter().find(|s| s.name == item).cloned().ok_or_else(|| ControlError::UnknownItem {
                production: production.to_owned(),
                item: item.to_owned(),
            })?;
        Ok((p, slot))
    }

    /// Hands `body` to a service as if it had received it (from the web UI's
    /// "send a test message"): parsed first, then stored, sent to the
    /// service's targets (routed on receipt like any other) and counted as
    /// received. Returns the service's header id.
    pub async fn submit_test_message(
        &self,
        production: &str,
        item: &str,
        body: Bytes,
    ) -> Result<i64, TestMessageError> {
        let (p, slot) = self.slot(production, item)?;
        let config =
            p.config.items.iter().find(|i| i.name == item).ok_or_else(|| ControlError::UnknownItem {
                production: production.to_owned(),
                item: item.to_owned(),
            })?;
        if config.role() != crate::config::ItemRole::Service {
            return Err(TestMessageError::NotAService);
        }
        let intake = intake::Intake::new(p.shared.clone(), item, &config.targets);
        let (inbound, decided) = {
            let msg = crate::hl7::Message::parse(&body)?;
            intake.inbound(&msg, body.clone(), Arc::from("web UI"))
        };
        let committed = self.inner.store.commit_inbound(inbound).await.map_err(ControlError::from)?;
        intake.account(&committed, &decided);
        slot.stats.bump(&slot.stats.received, 1);
        self.event(production, "test_message", format!("a test message was handed to {item:?}"), CommandSource::Ui);
        Ok(committed.header_id)
    }

    /// How long each operation's deliveries take, as histograms:
    /// `(production, item, histogram)` for every operation.
    pub fn delivery_latencies(&self) -> Vec<(String, String, LatencySnapshot)> {
        let mut out = Vec::new();
        for p in &self.inner.productions {
            for slot in &p.shared.slots {
                let operation = p
                    .config
                    .items
                    .iter()
                    .any(|i| i.name == slot.name && i.role() == crate::config::ItemRole::Operation);
                if operation {
                    out.push((p.config.id.clone(), slot.name.clone(), slot.stats.latency.snapshot()));
                }
            }
        }
        out
    }

    /// The certificate doctor's full reports (chains and every finding),
    /// read from the files now, and whether they are the ones in force.
    pub fn tls_reports(&self) -> Vec<crate::tls::TlsReport> {
        let mut reports = crate::tls::check_all(&self.inner.config, self.inner.options.certificate_warning_days);
        for report in &mut reports {
            report.findings.extend(self.not_in_force(&report.name));
        }
        reports
    }

    /// The configuration the engine runs.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Restarts one item (if its production runs and it is enabled): its
    /// messages in progress go back to its queue first.
    pub async fn restart_item(&self, production: &str, item: &str, source: CommandSource) -> Result<(), ControlError> {
        let (p, slot) = self.slot(production, item)?;
        let _guard = p.commands.lock().await;
        if p.shared.state().is_up() && slot.is_enabled() {
            slot.stop(&p.shared, p.config.stop_timeout, ItemState::Stopped).await;
            slot.start(&p.shared).await;
            self.event(production, "restart", format!("item {item:?} restarted"), source);
        }
        Ok(())
    }

    /// Enables or disables an item; stored, so it survives restarts. A
    /// disabled item stops at once (its messages stay queued); an enabled
    /// one starts if its production runs.
    pub async fn set_item_enabled(
        &self,
        production: &str,
        item: &str,
        enabled: bool,
        source: CommandSource,
    ) -> Result<(), ControlError> {
        let (p, slot) = self.slot(production, item)?;
        let _guard = p.commands.lock().await;
        self.inner.store.set_item_enabled(production, item, enabled).await?;
        let was = slot.enabled.swap(enabled, std::sync::atomic::Ordering::Relaxed);
        if enabled {
            // Also restarts an item a `D` reply code action switched off.
            let idle = matches!(slot.stats.state().0, ItemState::Disabled | ItemState::Stopped);
            if p.shared.state().is_up() && (idle || !was) {
                slot.stop(&p.shared, p.config.stop_timeout, ItemState::Stopped).await;
                slot.start(&p.shared).await;
            } else if !p.shared.state().is_up() {
                p.shared.item_state(&slot, ItemState::Stopped, None);
            }
        } else {
            slot.stop(&p.shared, p.config.stop_timeout, ItemState::Disabled).await;
        }
        if was != enabled {
            let verb = if enabled { "enabled" } else { "disabled" };
            self.event(production, verb, format!("item {item:?} {verb}"), source);
        }
        Ok(())
    }

    /// The status of everything, now.
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            started_at: self.inner.started_at,
            productions: self.inner.productions.iter().map(|p| p.shared.status()).collect(),
            store_bytes: self.inner.store.size_on_disk(),
            store: self.inner.store.health(),
            certificates: self.inner.certificates.lock_unpoisoned().clone(),
        }
    }

    /// Snapshots, updated whenever something changes (coalesced).
    pub fn subscribe(&self) -> watch::Receiver<Arc<EngineStatus>> {
        self.inner.hub.subscribe()
    }

    /// Every state change as it happens.
    pub fn changes(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.hub.changes()
    }

    /// The store, for reading messages and events. Clients of the engine
    /// change it only through the control API, [`log_event`](Self::log_event)
    /// and, for the MQTT bridge, [`Store::published_topics`].
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Writes an entry to the event log, such as a command a client
    /// handled itself (a command that changed nothing).
    pub fn log_event(&self, event: Event) {
        self.inner.store.log_event(event);
    }

    /// The production ids, in file order.
    pub fn production_ids(&self) -> Vec<String> {
        self.inner.productions.iter().map(|p| p.config.id.clone()).collect()
    }

    /// Stops every production (without changing their commanded states, so
    /// they come back after a restart) and the store.
    pub async fn shutdown(&self) {
        for production in &self.inner.productions {
            let _guard = production.commands.lock().await;
            production.stop().await;
        }
        self.inner.shutdown.cancel();
        self.inner.store.close().await;
    }

    /// Waits until `check` holds for the status, or `timeout` passes; for
    /// tests and scripts that need to wait for a state.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&EngineStatus) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(&self.status()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
