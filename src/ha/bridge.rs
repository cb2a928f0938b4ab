//! The MQTT bridge: two tasks.
//!
//! - The I/O task owns rumqttc's event loop: it polls it, reconnects with a
//!   capped backoff, and passes connections, disconnections and incoming
//!   messages on. When the Supervisor provided the broker, a refusal of the
//!   credentials (or a run of failed attempts) makes it ask the Supervisor
//!   again, since the Mosquitto add-on may have given new ones.
//! - The bridge task reads the engine's status snapshots, turns them into
//!   retained state payloads, publishes discovery configs and states with
//!   non-blocking `try_publish` (whatever does not fit waits for the next
//!   tick), and runs commands from Home Assistant on the control API in
//!   tasks of their own.
//!
//! At every connection: `online` on the availability topic, every config
//! and state again, and the configs this instance published before (the
//! list in the store, and any retained config under its node id) that no
//! longer match an entity are removed with an empty retained payload.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ClientError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::discovery::{Action, Discovery, Layout, Naming, OFFLINE, ONLINE, preview};
use super::settings::{Broker, BrokerSource, HaSettings};
use super::states::{RateMeter, States, state_topic_for_command};
use super::supervisor::{self, SupervisorError};
use crate::engine::{CommandSource, Engine, EngineStatus, ProductionState};
use crate::rate_limit::RateLimit;
use crate::store::{Event, EventLevel, PublishedTopics};

/// How often pending publications are retried and the rate sampled.
const TICK: Duration = Duration::from_millis(100);
/// First and longest wait between two connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Home Assistant subscribes to a state topic about 0.1 s after it has
/// processed the config; after its birth message it gets a moment first.
const BIRTH_DELAY: Duration = Duration::from_millis(500);
/// After removing stale configs, wait before adding new ones, so that Home
/// Assistant does not give a re-added entity a `_2` id.
const CLEAR_PAUSE: Duration = Duration::from_millis(500);
/// How long after connecting retained configs under our node id are
/// checked for strays.
const SCAN: Duration = Duration::from_secs(3);
/// Requests the MQTT client buffers before `try_publish` refuses.
const CHANNEL: usize = 512;
/// Largest MQTT packet in either direction.
const MAX_PACKET: usize = 256 * 1024;
/// Commands running at once; more are refused.
const MAX_COMMANDS: usize = 16;
/// Attempts to get the broker from the Supervisor (about ten minutes).
const SUPERVISOR_ATTEMPTS: u32 = 25;
/// Failed connection attempts in a row (about 4 s of backoff) after which
/// the Supervisor is asked again for the broker whatever the failure: a
/// reinstalled broker add-on may have moved, and a broker that refuses a
/// login by closing the connection says nothing more precise.
const REASK_AFTER: u32 = 5;
/// While the broker refuses the credentials, the error is said again this
/// often (the attempts go on at [`BACKOFF_MAX`]).
const REFUSED_RELOG: Duration = Duration::from_secs(600);
/// Time given to the final publications at shutdown.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

/// The bridge's connection state, for the log and the web UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttStatus {
    /// No MQTT: why.
    Off(String),
    /// Asking the Supervisor for the broker.
    Discovering,
    /// Connecting to the broker.
    Connecting(String),
    /// Connected to the broker.
    Connected(String),
    /// Lost the broker; reconnecting. The reason.
    Disconnected(String),
    /// Shut down.
    Stopped,
}

impl std::fmt::Display for MqttStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off(why) => write!(f, "off ({why})"),
            Self::Discovering => f.write_str("asking the Supervisor for the broker"),
            Self::Connecting(to) => write!(f, "connecting to {to}"),
            Self::Connected(to) => write!(f, "connected to {to}"),
            Self::Disconnected(why) => write!(f, "reconnecting ({why})"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// The running bridge.
pub struct BridgeHandle {
    stop: CancellationToken,
    closing: Arc<AtomicBool>,
    task: JoinHandle<()>,
    status: watch::Receiver<MqttStatus>,
}

impl BridgeHandle {
    /// The connection state now.
    pub fn status(&self) -> MqttStatus {
        self.status.borrow().clone()
    }

    /// The connection state, updated as it changes.
    pub fn watch_status(&self) -> watch::Receiver<MqttStatus> {
        self.status.clone()
    }

    /// From now on, commands from Home Assistant are refused (the engine is
    /// shutting down); states are still published.
    pub fn refuse_commands(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Publishes the final states and `offline`, disconnects, and waits for
    /// it (a few seconds at most).
    pub async fn shutdown(self) {
        self.refuse_commands();
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(FINAL_FLUSH + Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Starts the bridge beside the engine. Returns at once: finding the broker
/// (possibly asking the Supervisor) and connecting happen in the
/// background.
pub fn start(engine: Engine, settings: HaSettings) -> BridgeHandle {
    let stop = CancellationToken::new();
    let closing = Arc::new(AtomicBool::new(false));
    let (status_tx, status) = watch::channel(MqttStatus::Discovering);
    let task = tokio::spawn(run(engine, settings, stop.clone(), closing.clone(), status_tx));
    BridgeHandle { stop, closing, task, status }
}

async fn run(
    engine: Engine,
    settings: HaSettings,
    stop: CancellationToken,
    closing: Arc<AtomicBool>,
    status: watch::Sender<MqttStatus>,
) {
    let mut ui_url = settings.ui_url.clone();
    let mut supervisor_source = None;
    let broker = match settings.broker {
        BrokerSource::Off => {
            let why = "no MQTT broker configured (--mqtt-host, SWITCHBOARD_MQTT_HOST or the options file) and no \
                       Supervisor; Home Assistant entities are not published";
            tracing::info!("MQTT is off: {why}");
            let _ = status.send(MqttStatus::Off(why.into()));
            return;
        }
        BrokerSource::Given(broker) => broker,
        BrokerSource::Supervisor { url, token, client_id, keep_alive } => {
            let broker = match ask_supervisor(&url, &token, &client_id, keep_alive, &stop).await {
                Ok(broker) => broker,
                Err(why) => {
                    let why = format!("{why}; Home Assistant entities are not published");
                    if !stop.is_cancelled() {
                        tracing::warn!("MQTT is off: {why}");
                    }
                    let _ = status.send(MqttStatus::Off(why));
                    return;
                }
            };
            if ui_url.is_none() {
                ui_url = supervisor::addon_slug(&url, &token)
                    .await
                    .map(|slug| format!("homeassistant://hassio/ingress/{slug}"));
            }
            supervisor_source = Some((url, token));
            broker
        }
    };
    let naming = Naming { prefix: settings.discovery_prefix, instance: settings.instance_id, ui_url };
    let options = match mqtt_options(&broker, &naming) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!(error = %e, "MQTT is off: the broker connection cannot be set up");
            let _ = status.send(MqttStatus::Off(e));
            return;
        }
    };
    let address = format!("{}:{}", broker.host, broker.port);
    tracing::info!(broker = %address, tls = broker.tls.is_some(), user = ?broker.username, "connecting to the MQTT broker");
    let _ = status.send(MqttStatus::Connecting(address.clone()));
    let (client, eventloop) = AsyncClient::new(options, CHANNEL);
    let (events_tx, mut events) = mpsc::channel(256);
    let io_stop = CancellationToken::new();
    let reask =
        supervisor_source.map(|(url, token)| Reask { url, token, broker: broker.clone(), naming: naming.clone() });
    let io = tokio::spawn(io_loop(eventloop, events_tx, io_stop.clone(), reask));
    let mut bridge = Bridge::new(engine, naming, client, closing, status, address, broker.username.clone());
    bridge.run(&mut events, &stop).await;
    // The I/O task goes on reporting (the acknowledgments of the final
    // publications) until the disconnect is written: the receiver stays
    // open, or its first report would end it and lose the rest.
    bridge.finish(&mut events).await;
    if tokio::time::timeout(Duration::from_secs(2), io).await.is_err() {
        io_stop.cancel();
    }
    let _ = bridge.status.send(MqttStatus::Stopped);
}

/// Asks the Supervisor for the broker until it names one: while no broker
/// is installed (HTTP 400, "Service not enabled") or the Supervisor cannot
/// be reached, again and again with a growing pause, for about ten
/// minutes. A refusal (HTTP 403: `services` lacks `mqtt`) ends it at once,
/// since asking again cannot help. The error says why there is no broker.
async fn ask_supervisor(
    url: &str,
    token: &super::settings::Secret,
    client_id: &str,
    keep_alive: Duration,
    stop: &CancellationToken,
) -> Result<Broker, String> {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=SUPERVISOR_ATTEMPTS {
        match supervisor::mqtt_service(url, token, client_id, keep_alive).await {
            Ok(supervisor::Provided { broker, provider }) => {
                tracing::info!(
                    host = %broker.host,
                    port = broker.port,
                    provider = provider.as_deref().unwrap_or("unknown"),
                    "the Supervisor provides the MQTT broker"
                );
                return Ok(broker);
            }
            Err(e @ SupervisorError::Forbidden { .. }) => {
                tracing::error!("{e}");
                return Err("the Supervisor refused the MQTT service (`services` lacks `mqtt`)".into());
            }
            Err(e) if attempt == 1 => tracing::warn!(
                error = %e,
                "no MQTT broker from the Supervisor yet (install the Mosquitto broker add-on, or set the `mqtt` \
                 options); asking again for about ten minutes"
            ),
            Err(e) => tracing::debug!(error = %e, attempt, "no MQTT broker from the Supervisor yet"),
        }
        tokio::select! {
            () = stop.cancelled() => return Err("stopped".into()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
    Err("the Supervisor provides no MQTT broker (install the Mosquitto broker add-on, or set the `mqtt` options, \
         then restart the add-on)"
        .into())
}

/// The rumqttc options: identity, credentials, last will, TLS.
fn mqtt_options(broker: &Broker, naming: &Naming) -> Result<MqttOptions, String> {
    let mut options = MqttOptions::new(&broker.client_id, &broker.host, broker.port);
    options.set_keep_alive(broker.keep_alive.max(Duration::from_secs(1)));
    options.set_clean_session(true);
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_last_will(LastWill::new(naming.availability(), OFFLINE, QoS::AtLeastOnce, true));
    match (&broker.username, &broker.password) {
        (Some(user), password) => {
            options.set_credentials(user, password.as_ref().map_or("", |p| p.expose()));
        }
        (None, Some(_)) => tracing::warn!("an MQTT password is set without a user name; it is not used"),
        (None, None) => {}
    }
    if let Some(tls) = &broker.tls {
        let material = crate::tls::TlsMaterial::load("mqtt broker", &tls.as_tls_config()).map_err(|e| e.to_string())?;
        let config = material.client_config().map_err(|e| e.to_string())?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(options)
}

/// The Supervisor, asked again for the broker when the broker refuses the
/// credentials it gave: the Mosquitto add-on makes the credentials of the
/// add-ons that use it, and may give new ones (after a reinstall, or a
/// rotation) while Switchboard runs, and a restart of the add-on is not
/// what a user should have to find out.
struct Reask {
    url: String,
    token: super::settings::Secret,
    /// The broker as last provided.
    broker: Broker,
    naming: Naming,
}

impl Reask {
    /// Asks the Supervisor once; when it provides another broker or other
    /// credentials, the next connection attempt uses them.
    async fn refresh(&mut self, eventloop: &mut EventLoop) {
        let asked =
            supervisor::mqtt_service(&self.url, &self.token, &self.broker.client_id, self.broker.keep_alive).await;
        let broker = match asked {
            Ok(provided) => provided.broker,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the Supervisor for new MQTT credentials");
                return;
            }
        };
        if broker == self.broker {
            tracing::debug!("the Supervisor gives the same MQTT credentials");
            return;
        }
        match mqtt_options(&broker, &self.naming) {
            Ok(options) => {
                tracing::info!(
                    broker = %format!("{}:{}", broker.host, broker.port),
                    user = ?broker.username,
                    "the Supervisor provides new MQTT credentials; connecting with them"
                );
                eventloop.mqtt_options = options;
                self.broker = broker;
            }
            Err(e) => tracing::warn!(error = %e, "the broker the Supervisor now provides cannot be used"),
        }
    }
}

/// Whether the broker refused the connection for its credentials: asking
/// again with the same ones cannot succeed until someone changes them.
fn credentials_refused(error: &rumqttc::ConnectionError) -> bool {
    use rumqttc::ConnectReturnCode::{BadUserNamePassword, NotAuthorized};
    matches!(error, rumqttc::ConnectionError::ConnectionRefused(BadUserNamePassword | NotAuthorized))
}

/// What the I/O task reports.
#[derive(Debug)]
enum IoEvent {
    Connected,
    Disconnected(String),
    /// The broker refused the user name or password.
    CredentialsRefused(String),
    Message {
        topic: String,
        payload: Bytes,
        retain: bool,
    },
    /// The broker acknowledged a publication.
    Acked,
}

async fn io_loop(
    mut eventloop: EventLoop,
    events: mpsc::Sender<IoEvent>,
    stop: CancellationToken,
    mut reask: Option<Reask>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let polled = tokio::select! {
            () = stop.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let event = match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                IoEvent::Connected
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                IoEvent::Message { topic: p.topic, payload: p.payload, retain: p.retain }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) => IoEvent::Acked,
            // Our own DISCONNECT has been written: the session is over.
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => {
                let refused = credentials_refused(&e);
                let event = match refused {
                    true => IoEvent::CredentialsRefused(e.to_string()),
                    false => IoEvent::Disconnected(e.to_string()),
                };
                if events.send(event).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                failures = failures.saturating_add(1);
                if (refused || failures >= REASK_AFTER)
                    && let Some(reask) = reask.as_mut()
                {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = reask.refresh(&mut eventloop) => {}
                    }
                }
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// One step of publishing discovery.
#[derive(Debug)]
enum Pending {
    /// A config (empty: remove the entity).
    Publish(String, String),
    /// Wait before the next step.
    Pause(Duration),
    /// Remember the current config topics in the store.
    StoreTopics,
}

struct Bridge {
    engine: Engine,
    /// The topics published last: the one part of the store the bridge
    /// writes.
    published: PublishedTopics,
    naming: Naming,
    discovery: Discovery,
    topics: BTreeSet<String>,
    states: States,
    client: AsyncClient,
    connected: bool,
    ever_connected: bool,
    disconnect_logged: bool,
    pending: VecDeque<Pending>,
    not_before: Instant,
    scan_until: Option<Instant>,
    republish_at: Option<Instant>,
    cleared: BTreeSet<String>,
    snapshot: Arc<EngineStatus>,
    rate: RateMeter,
    last_sample: Option<Instant>,
    command_state: HashMap<String, String>,
    resend_tx: mpsc::Sender<String>,
    resend_rx: mpsc::Receiver<String>,
    permits: Arc<Semaphore>,
    closing: Arc<AtomicBool>,
    status: watch::Sender<MqttStatus>,
    address: String,
    full_logged: bool,
    /// Publications of this connection the broker has not acknowledged.
    unacked: usize,
    /// The user name the bridge connects as, for the errors.
    username: Option<String>,
    /// When the broker's refusal of the credentials was last said, while
    /// it goes on.
    refused_logged: Option<Instant>,
    /// Anyone who may publish to the broker can send commands: bad ones
    /// are warned about a few times a minute, not once each.
    command_warnings: RateLimit,
}

impl Bridge {
    fn new(
        engine: Engine,
        naming: Naming,
        client: AsyncClient,
        closing: Arc<AtomicBool>,
        status: watch::Sender<MqttStatus>,
        address: String,
        username: Option<String>,
    ) -> Self {
        // The structure never changes while the engine runs; the live status
        // has every production and TLS configuration from the start.
        let snapshot = Arc::new(engine.status());
        let discovery = Discovery::build(&naming, &Layout::new(&snapshot));
        let mut states = States::new(&discovery);
        let now = std::time::Instant::now();
        states.update(&snapshot, 0, now);
        let rate = RateMeter::starting(now, snapshot.received_from_outside());
        let (resend_tx, resend_rx) = mpsc::channel(64);
        Self {
            topics: discovery.config_topics(),
            command_state: state_topic_for_command(&discovery),
            discovery,
            states,
            published: engine.store().published_topics(),
            engine,
            naming,
            client,
            connected: false,
            ever_connected: false,
            disconnect_logged: false,
            pending: VecDeque::new(),
            not_before: Instant::now(),
            scan_until: None,
            republish_at: None,
            cleared: BTreeSet::new(),
            snapshot,
            rate,
            last_sample: None,
            resend_tx,
            resend_rx,
            permits: Arc::new(Semaphore::new(MAX_COMMANDS)),
            closing,
            status,
            address,
            full_logged: false,
            command_warnings: RateLimit::new(5, Duration::from_secs(60)),
            unacked: 0,
            username,
            refused_logged: None,
        }
    }

    async fn run(&mut self, events: &mut mpsc::Receiver<IoEvent>, stop: &CancellationToken) {
        let mut snapshots = self.engine.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The engine has shut down; keep serving until stopped.
                        snapshots = self.engine.subscribe();
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    self.update(snapshot);
                }
                Some(topic) = self.resend_rx.recv() => self.states.resend(&topic),
                _ = tick.tick() => self.on_tick(),
            }
            self.flush(Instant::now());
        }
    }

    fn update(&mut self, snapshot: Arc<EngineStatus>) {
        // A snapshot taken before the engine started has no productions.
        if snapshot.productions.len() == self.snapshot.productions.len() {
            self.snapshot = snapshot;
        }
        self.states.update(&self.snapshot, self.rate.per_minute(), std::time::Instant::now());
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.last_sample.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.last_sample = Some(now);
            self.rate.sample(now.into_std(), self.snapshot.received_from_outside());
            self.states.update(&self.snapshot, self.rate.per_minute(), now.into_std());
        }
        if self.republish_at.is_some_and(|t| now >= t) {
            self.republish_at = None;
            self.republish();
        }
        if self.scan_until.is_some_and(|t| now >= t) {
            self.scan_until = None;
            if self.connected {
                let _ = self.client.try_unsubscribe(self.naming.config_filter());
            }
        }
    }

    fn on_event(&mut self, event: IoEvent) {
        match event {
            IoEvent::Connected => self.on_connected(),
            IoEvent::Disconnected(reason) => {
                self.connected = false;
                self.pending.clear();
                if !self.disconnect_logged {
                    self.disconnect_logged = true;
                    if self.ever_connected {
                        tracing::warn!(broker = %self.address, error = %reason, "lost the MQTT broker; reconnecting");
                    } else {
                        tracing::warn!(broker = %self.address, error = %reason, "cannot connect to the MQTT broker; retrying");
                    }
                } else {
                    tracing::debug!(broker = %self.address, error = %reason, "MQTT connection attempt failed");
                }
                let _ = self.status.send(MqttStatus::Disconnected(reason));
            }
            IoEvent::CredentialsRefused(reason) => {
                self.connected = false;
                self.pending.clear();
                // Said once per refusal streak, and again every
                // `REFUSED_RELOG` while it lasts; never the password.
                let now = Instant::now();
                if self.refused_logged.is_none_or(|at| now.duration_since(at) >= REFUSED_RELOG) {
                    self.refused_logged = Some(now);
                    self.disconnect_logged = true;
                    let text = format!(
                        "the MQTT broker {} refuses the user name or password (user {}): {reason}; retrying with \
                         a growing pause (at most {}s). Fix the `mqtt` options (user and password) and restart the \
                         add-on, or, when the Supervisor provides the broker, it is asked again for the credentials \
                         after each refusal",
                        self.address,
                        self.username.as_deref().map_or_else(|| "none".to_owned(), |u| format!("`{u}`")),
                        BACKOFF_MAX.as_secs(),
                    );
                    tracing::error!("{text}");
                    self.engine.store().log_event(Event {
                        level: EventLevel::Error,
                        production: None,
                        item: None,
                        kind: "mqtt".into(),
                        text,
                    });
                } else {
                    tracing::debug!(broker = %self.address, error = %reason, "MQTT credentials refused again");
                }
                let _ = self.status.send(MqttStatus::Disconnected(format!("credentials refused: {reason}")));
            }
            IoEvent::Message { topic, payload, retain } => self.on_message(&topic, &payload, retain),
            IoEvent::Acked => self.unacked = self.unacked.saturating_sub(1),
        }
    }

    fn on_connected(&mut self) {
        let now = Instant::now();
        if self.ever_connected {
            tracing::info!(broker = %self.address, "reconnected to the MQTT broker");
        } else {
            tracing::info!(broker = %self.address, "connected to the MQTT broker");
        }
        self.connected = true;
        self.ever_connected = true;
        self.disconnect_logged = false;
        if self.refused_logged.take().is_some() {
            tracing::info!(broker = %self.address, "the MQTT broker accepts the credentials again");
        }
        self.full_logged = false;
        self.unacked = 0;
        let _ = self.status.send(MqttStatus::Connected(self.address.clone()));
        // Availability first, before anything refers to it.
        let _ = self.publish(self.discovery.availability.clone(), ONLINE.to_owned());
        let mut filters = self.naming.command_filters();
        filters.push(self.naming.birth());
        filters.push(self.naming.config_filter());
        let subscriptions = filters.into_iter().map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(subscriptions) {
            tracing::warn!(error = %e, "cannot subscribe to Home Assistant's topics");
        }
        self.scan_until = Some(now + SCAN);

        // Configs published before that match no entity any more.
        let previous = match self.published.list() {
            Ok(topics) => topics,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the discovery topics published before");
                Vec::new()
            }
        };
        self.pending.clear();
        let mut stale = 0;
        for topic in previous.iter().filter(|t| !self.topics.contains(*t)) {
            tracing::info!(%topic, "removing a Home Assistant entity that no longer exists");
            self.cleared.insert(topic.clone());
            self.pending.push_back(Pending::Publish(topic.clone(), String::new()));
            stale += 1;
        }
        if stale > 0 {
            self.pending.push_back(Pending::Pause(CLEAR_PAUSE));
        }
        for (topic, payload) in self.discovery.configs() {
            self.pending.push_back(Pending::Publish(topic, payload));
        }
        if previous.len() != self.topics.len() || stale > 0 {
            self.pending.push_back(Pending::StoreTopics);
        }
        self.states.resend_all();
    }

    fn republish(&mut self) {
        tracing::info!("publishing Home Assistant discovery again");
        for (topic, payload) in self.discovery.configs() {
            self.pending.push_back(Pending::Publish(topic, payload));
        }
        self.states.resend_all();
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        if topic == self.naming.birth() {
            match payload {
                b"online" => {
                    tracing::info!("Home Assistant started; publishing discovery and states again");
                    self.republish_at = Some(Instant::now() + BIRTH_DELAY);
                }
                b"offline" => tracing::info!("Home Assistant stopped"),
                other => tracing::debug!(payload = %preview(other), "unknown Home Assistant status"),
            }
            return;
        }
        if self.is_own_config(topic) {
            // A retained config of this instance that matches no entity: a
            // leftover the store does not know (e.g. a lost data folder).
            if retain
                && !payload.is_empty()
                && !self.topics.contains(topic)
                && self.scan_until.is_some()
                && self.cleared.insert(topic.to_owned())
            {
                tracing::info!(%topic, "removing a stray Home Assistant entity config");
                self.pending.push_front(Pending::Publish(topic.to_owned(), String::new()));
            }
            return;
        }
        self.on_command(topic, payload);
    }

    /// `<prefix>/<component>/<instance>/<key>/config`.
    fn is_own_config(&self, topic: &str) -> bool {
        let Some(rest) = topic.strip_prefix(&self.naming.prefix).and_then(|r| r.strip_prefix('/')) else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        parts.len() == 4 && parts[1] == self.naming.instance && parts[3] == "config"
    }

    fn on_command(&mut self, topic: &str, payload: &[u8]) {
        let Some(target) = self.discovery.commands.get(topic) else {
            if let Some(pass) = self.command_warnings.check() {
                tracing::warn!(%topic, "MQTT message on an unknown topic; ignored{}", pass.suffix());
            }
            return;
        };
        let action = match target.action(payload) {
            Ok(action) => action,
            Err(why) => {
                if let Some(pass) = self.command_warnings.check() {
                    tracing::warn!(%topic, "invalid MQTT command: {why}; ignored{}", pass.suffix());
                }
                if let Some(state) = self.command_state.get(topic) {
                    self.states.resend(state);
                }
                return;
            }
        };
        if self.closing.load(Ordering::Acquire) {
            tracing::info!(%topic, "MQTT command ignored: Switchboard is stopping");
            return;
        }
        if action == Action::Republish {
            self.engine.log_event(Event {
                level: EventLevel::Info,
                production: None,
                item: None,
                kind: "republish".into(),
                text: "Home Assistant discovery republished (by mqtt)".into(),
            });
            self.republish();
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(%topic, "too many MQTT commands in progress; ignored");
            return;
        };
        let engine = self.engine.clone();
        let resend = self.resend_tx.clone();
        let state_topic = self.command_state.get(topic).cloned();
        tokio::spawn(async move {
            execute(&engine, action).await;
            drop(permit);
            if let Some(topic) = state_topic {
                let _ = resend.try_send(topic);
            }
        });
    }

    /// Publishes what is due, as far as the client's buffer allows.
    fn flush(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        while now >= self.not_before {
            let Some(step) = self.pending.pop_front() else { break };
            match step {
                Pending::Publish(topic, payload) => {
                    if let Err(e) = self.publish(topic.clone(), payload.clone()) {
                        self.full(&e);
                        self.pending.push_front(Pending::Publish(topic, payload));
                        return;
                    }
                }
                Pending::Pause(pause) => self.not_before = now + pause,
                Pending::StoreTopics => {
                    let published = self.published.clone();
                    let topics: Vec<String> = self.topics.iter().cloned().collect();
                    tokio::spawn(async move {
                        if let Err(e) = published.replace(topics).await {
                            tracing::warn!(error = %e, "cannot store the discovery topics published");
                        }
                    });
                }
            }
        }
        for (topic, payload) in self.states.due(now.into_std(), false) {
            if let Err(e) = self.publish(topic.clone(), payload.clone()) {
                self.full(&e);
                return;
            }
            self.states.sent(&topic, payload, now.into_std());
        }
    }

    /// Hands a retained publication to the client, if it has room.
    fn publish(&mut self, topic: String, payload: String) -> Result<(), ClientError> {
        self.client.try_publish(topic, QoS::AtLeastOnce, true, payload)?;
        self.unacked += 1;
        Ok(())
    }

    fn full(&mut self, error: &ClientError) {
        if !self.full_logged {
            self.full_logged = true;
            tracing::debug!(error = %error, "MQTT client buffer full; publishing the rest shortly");
        }
    }

    /// The final states and `offline`, then a clean disconnect: every
    /// production and item as it is once the engine has stopped, so that
    /// no retained state says `running` for an engine that is gone.
    ///
    /// The disconnect waits for the broker to acknowledge every
    /// publication: a connection closed with acknowledgments still on
    /// their way is reset, and the broker may drop what it had not read.
    async fn finish(&mut self, events: &mut mpsc::Receiver<IoEvent>) {
        if !self.connected {
            return;
        }
        let deadline = Instant::now() + FINAL_FLUSH;
        let live = Arc::new(self.engine.status());
        self.update(live);
        let now = Instant::now();
        let mut last = Vec::new();
        for (topic, payload) in self.states.due(now.into_std(), true) {
            if topic != self.discovery.availability {
                last.push((topic, payload));
            }
        }
        last.push((self.discovery.availability.clone(), OFFLINE.to_owned()));
        let count = last.len();
        let client = self.client.clone();
        let finished = tokio::time::timeout_at(deadline, async {
            for (topic, payload) in last {
                // Reports are read meanwhile, so the I/O task never waits.
                let publish = client.publish(topic, QoS::AtLeastOnce, true, payload);
                tokio::pin!(publish);
                loop {
                    tokio::select! {
                        published = &mut publish => break published?,
                        Some(event) = events.recv() => self.on_final_event(event),
                    }
                }
                self.unacked += 1;
            }
            while self.unacked > 0 && self.connected {
                match events.recv().await {
                    Some(event) => self.on_final_event(event),
                    None => break,
                }
            }
            client.disconnect().await?;
            while events.recv().await.is_some() {}
            Ok::<_, ClientError>(())
        })
        .await;
        match finished {
            Ok(Ok(())) if self.connected => {
                tracing::info!(states = count, "published the final states; disconnected from the MQTT broker");
            }
            Ok(Ok(())) => tracing::warn!("lost the MQTT broker while publishing the final states"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not publish every final state to the MQTT broker"),
            Err(_) => tracing::warn!(unacked = self.unacked, "the MQTT broker did not take the final states in time"),
        }
    }

    /// A report from the I/O task while shutting down: only
    /// acknowledgments and a lost connection matter now.
    fn on_final_event(&mut self, event: IoEvent) {
        match event {
            IoEvent::Acked => self.unacked = self.unacked.saturating_sub(1),
            IoEvent::Disconnected(_) | IoEvent::CredentialsRefused(_) => self.connected = false,
            IoEvent::Connected | IoEvent::Message { .. } => {}
        }
    }
}

/// Runs one command on the control API. Commands that change nothing are
/// written to the event log here; the engine logs those that act.
async fn execute(engine: &Engine, action: Action) {
    let status = engine.status();
    let noop = |production: &str, item: Option<&str>, text: String| {
        tracing::info!(%production, "{text}");
        engine.log_event(Event {
            level: EventLevel::Info,
            production: Some(production.to_owned()),
            item: item.map(str::to_owned),
            kind: "command".into(),
            text: format!("{text} (by mqtt)"),
        });
    };
    let result = match &action {
        Action::Start(p) => match status.production(p).map(|s| s.state) {
            Some(state) if state.is_up() => {
                noop(p, None, format!("start ignored: the production is already {}", state.as_str()));
                Ok(())
            }
            _ => engine.start_production(p, CommandSource::Mqtt).await,
        },
        Action::Stop(p) => match status.production(p).map(|s| s.state) {
            Some(ProductionState::Stopped) => {
                noop(p, None, "stop ignored: the production is already stopped".into());
                Ok(())
            }
            _ => engine.stop_production(p, CommandSource::Mqtt).await,
        },
        Action::Restart(p, i) => {
            let up = status.production(p).is_some_and(|s| s.state.is_up());
            match status.item(p, i) {
                Some(item) if !up || !item.enabled => {
                    let why = if up { "the item is disabled" } else { "the production is not running" };
                    noop(p, Some(i), format!("restart of item {i:?} ignored: {why}"));
                    Ok(())
                }
                _ => engine.restart_item(p, i, CommandSource::Mqtt).await,
            }
        }
        Action::SetEnabled(p, i, enabled) => match status.item(p, i) {
            Some(item) if item.enabled == *enabled => {
                let verb = if *enabled { "enabled" } else { "disabled" };
                noop(p, Some(i), format!("item {i:?} is already {verb}"));
                Ok(())
            }
            _ => engine.set_item_enabled(p, i, *enabled, CommandSource::Mqtt).await,
        },
        Action::Republish => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, ?action, "MQTT command failed");
        engine.log_event(Event {
            level: EventLevel::Warning,
            production: None,
            item: None,
            kind: "command".into(),
            text: format!("command failed: {e} (by mqtt)"),
        });
    }
}
