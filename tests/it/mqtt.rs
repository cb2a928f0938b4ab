//! Home Assistant over MQTT, end to end against a real broker started in
//! this process (rumqttd): discovery payloads, commands from Home
//! Assistant, queue depth, availability and the last will, re-discovery
//! after Home Assistant restarts, removal of stale entities, a broker
//! restart in the middle of traffic, and the broker found through the
//! Supervisor's services API. Everything runs on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::engine::{Engine, EngineStatus, ProductionState};
use switchboard::ha::{self, Broker, BrokerSource, HaSettings, Secret};
use switchboard::mllp::MllpClient;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::{self, Receiver, free_port};
use crate::mqtt_support::*;

// ---------------------------------------------------------------------------
// A broker, a proxy in front of it, and a client that records everything

/// Starts rumqttd on a free port of 127.0.0.1 (optionally with one user)
/// and waits until it accepts connections. Its threads live as long as the
/// test process.
pub(crate) async fn start_broker(user: Option<(&str, &str)>) -> u16 {
    let port = free_port();
    let auth = user.map(|(u, p)| json!({ u: p }));
    let config = json!({
        "id": 0,
        "router": {
            "max_connections": 100,
            "max_outgoing_packet_count": 1000,
            "max_segment_size": 1_048_576,
            "max_segment_count": 10,
        },
        "v4": { "1": {
            "name": "v4-1",
            "listen": format!("127.0.0.1:{port}"),
            "next_connection_delay_ms": 0,
            "connections": {
                "connection_timeout_ms": 5000,
                "max_payload_size": 262_144,
                "max_inflight_count": 500,
                "dynamic_filters": true,
                "auth": auth,
            },
        }},
    });
    let config: rumqttd::Config = serde_json::from_value(config).expect("broker configuration");
    std::thread::Builder::new()
        .name(format!("broker-{port}"))
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("broker on {port} stopped: {e}");
            }
        })
        .expect("broker thread");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the broker did not start on port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    port
}

/// A TCP proxy in front of a broker: cutting it closes every connection and
/// refuses new ones until it points at a (fresh) broker again, which is a
/// broker restart as its clients see it.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    backend: Arc<Mutex<Option<u16>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(backend: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy address").port();
        let target = Arc::new(Mutex::new(Some(backend)));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (t, c) = (target.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let Some(backend) = *t.lock().unwrap() else { continue };
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self { port, backend: target, connections, accept }
    }

    pub(crate) fn cut(&self) {
        *self.backend.lock().unwrap() = None;
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub(crate) fn point_at(&self, backend: u16) {
        *self.backend.lock().unwrap() = Some(backend);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------
// Engines and bridges

pub(crate) fn settings(port: u16, instance: &str, user: Option<(&str, &str)>) -> HaSettings {
    HaSettings {
        broker: BrokerSource::Given(Broker {
            host: "127.0.0.1".into(),
            port,
            username: user.map(|(u, _)| u.to_owned()),
            password: user.map(|(_, p)| Secret::new(p)),
            tls: None,
            client_id: instance.into(),
            keep_alive: Duration::from_secs(5),
        }),
        discovery_prefix: PREFIX.into(),
        instance_id: instance.into(),
        ui_url: Some("http://switchboard.local:8099/".into()),
    }
}

pub(crate) async fn start_engine(dir: &Path, yaml: &str) -> Engine {
    let engine = common::open_engine(dir, yaml);
    engine.start().await;
    assert!(
        engine.wait_for(WAIT, |s| s.productions.iter().all(|p| p.state.is_up())).await,
        "the production did not start: {:?}",
        engine.status()
    );
    engine
}

fn topic(instance: &str, rest: &str) -> String {
    format!("{instance}/{rest}")
}

fn production_state(status: &EngineStatus) -> ProductionState {
    status.production("p").expect("production p").state
}

// ---------------------------------------------------------------------------
// Tests

/// Every entity type is announced with the keys Home Assistant requires,
/// retained, and neither configs nor states carry the broker password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_payloads_have_the_required_keys_and_no_secrets() {
    let user = ("switchboard", "s3cret-Pa55word");
    let broker = start_broker(Some(user)).await;
    let dir = tempfile::tempdir().unwrap();
    // A TLS configuration whose certificate expires within the warning
    // period: its problem sensor is on.
    let (ca, ca_files) =
        switchboard::tls::pki::CertificateAuthority::new_root("Test CA", 365, Default::default()).expect("test CA");
    let mut request = switchboard::tls::pki::CertificateRequest::new("lab.example.org", 10);
    request.subject_alt_names = vec!["lab.example.org".into()];
    let leaf = ca.issue(&request).expect("leaf");
    std::fs::write(dir.path().join("ca.pem"), &ca_files.cert_pem).unwrap();
    leaf.write(&dir.path().join("lab.pem"), &dir.path().join("lab.key"), true).unwrap();
    let tls =
        "tls:\n  lab-client:\n    role: client\n    ca_file: ca.pem\n    cert_file: lab.pem\n    key_file: lab.key\n";
    let archive = format!(
        "      - name: Archive\n        kind: file_out\n        path: \"{}\"\n",
        dir.path().join("archive").display()
    );
    let receiver = Receiver::start().await;
    let engine = start_engine(dir.path(), &pipeline_yaml(free_port(), receiver.port, &archive, tls)).await;

    let watcher = Watcher::start(broker, "#", Some(user)).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbkeys", Some(user)));
    let switch = config_topic("switch", "sbkeys", "p");
    let expiry = topic("sbkeys", "tls/lab_client/expiry");
    watcher.wait_until("the production switch config", |m| m.iter().any(|m| m.topic == switch)).await;
    watcher.wait_until("the certificate expiry", |m| m.iter().any(|m| m.topic == expiry)).await;
    watcher.wait_for(&topic("sbkeys", "production/p/state"), "ON").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let configs: BTreeMap<String, Value> = watcher
        .messages()
        .into_iter()
        .filter(|m| m.topic.ends_with("/config") && m.topic.contains("/sbkeys/"))
        .map(|m| (m.topic.clone(), serde_json::from_str(&m.payload).expect("config is JSON")))
        .collect();
    let mut components = std::collections::BTreeSet::new();
    for (config_topic, payload) in &configs {
        let component = config_topic.split('/').nth(1).unwrap();
        components.insert(component.to_owned());
        let p = payload.as_object().unwrap();
        let mut required = vec!["unique_id", "object_id", "default_entity_id", "availability", "device", "origin"];
        required.extend(match component {
            "sensor" | "binary_sensor" => vec!["state_topic"],
            "switch" => vec!["state_topic", "command_topic"],
            "button" => vec!["command_topic"],
            other => panic!("unexpected component {other}"),
        });
        for key in required {
            assert!(p.contains_key(key), "{config_topic} lacks {key}: {payload}");
        }
        let device = p["device"].as_object().unwrap();
        for key in ["identifiers", "name", "manufacturer", "model", "sw_version"] {
            assert!(device.contains_key(key), "{config_topic} device lacks {key}");
        }
        assert_eq!(p.get("device_class") == Some(&json!("enum")), p.contains_key("options"), "{config_topic}");
        assert_eq!(p["availability"][0]["topic"], "sbkeys/availability");
    }
    assert_eq!(
        components.into_iter().collect::<Vec<_>>(),
        ["binary_sensor", "button", "sensor", "switch"],
        "every entity type"
    );
    // Every config and state is retained.
    for m in watcher.messages().iter().filter(|m| m.topic.starts_with("sbkeys/") || m.topic.contains("/sbkeys/")) {
        assert!(!m.payload.contains(user.1), "the password leaks on {}", m.topic);
    }
    let late = Watcher::start(broker, "#", Some(user)).await;
    late.wait_until("retained configs and states", |m| {
        m.iter().filter(|m| m.retain && m.topic.ends_with("/config") && m.topic.contains("/sbkeys/")).count()
            == configs.len()
            && m.iter().any(|m| m.retain && m.topic == "sbkeys/production/p/status" && m.payload == "running")
    })
    .await;

    // Entity by entity, what a dashboard relies on.
    let get = |component: &str, key: &str| configs[&config_topic(component, "sbkeys", key)].clone();
    assert_eq!(get("switch", "p")["name"], Value::Null);
    assert_eq!(get("switch", "p")["device"]["name"], "ADT feed");
    assert_eq!(get("switch", "p")["device"]["via_device"], "sbkeys_engine");
    assert_eq!(get("sensor", "p_status")["options"].as_array().map(Vec::len), Some(5));
    assert_eq!(get("sensor", "p_lab_out_queue_depth")["unit_of_measurement"], "messages");
    assert_eq!(get("binary_sensor", "p_lab_out_connected")["device_class"], "connectivity");
    assert_eq!(get("sensor", "p_lab_out_errors")["state_class"], "total_increasing");
    assert_eq!(get("button", "p_lab_out_restart")["device_class"], "restart");
    assert_eq!(get("switch", "p_lab_out_enabled")["entity_category"], "config");
    assert_eq!(get("sensor", "tls_lab_client_expiry")["device_class"], "timestamp");
    assert_eq!(get("sensor", "tls_lab_client_days_left")["unit_of_measurement"], "d");
    assert_eq!(get("binary_sensor", "tls_lab_client_problem")["device_class"], "problem");
    assert_eq!(get("button", "engine_republish_discovery")["command_topic"], "sbkeys/engine/republish");
    assert!(!configs.contains_key(&config_topic("binary_sensor", "sbkeys", "p_archive_connected")));

    // States of the certificate and engine entities.
    let days: i64 = watcher.last(&topic("sbkeys", "tls/lab_client/days_left")).unwrap().parse().unwrap();
    assert_eq!(days, 10, "days left");
    assert_eq!(watcher.last(&topic("sbkeys", "tls/lab_client/problem")).as_deref(), Some("ON"));
    let attributes: Value =
        serde_json::from_str(&watcher.last(&topic("sbkeys", "tls/lab_client/attributes")).unwrap()).unwrap();
    assert_eq!(attributes["subject_alt_names"], json!(["DNS:lab.example.org"]));
    assert!(attributes["problems"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(watcher.last(&expiry).unwrap().ends_with("+00:00"));
    assert_eq!(watcher.last(&topic("sbkeys", "engine/version")).as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(watcher.last(&topic("sbkeys", "engine/started")).unwrap().ends_with("+00:00"));

    bridge.shutdown().await;
    engine.shutdown().await;
}

/// Home Assistant's switch stops and starts a production while a sender is
/// sending: refused while stopped, ACKs again after the start; commands that
/// change nothing, bad payloads and unknown topics are ignored; the item
/// switches and buttons work; every command is in the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_stops_and_starts_a_production_with_live_traffic() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(dir.path(), &pipeline_yaml(in_port, receiver.port, "", "")).await;
    let watcher = Watcher::start(broker, "sbswitch/#", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbswitch", None));
    let state = topic("sbswitch", "production/p/state");
    let set = topic("sbswitch", "production/p/set");
    watcher.wait_for(&state, "ON").await;

    // Live traffic; the counters are published at most about once a second.
    let messages = topic("sbswitch", "production/p/item/adt_in/messages");
    watcher.wait_for(&messages, "0").await;
    watcher.clear();
    let started = Instant::now();
    for i in 0..20 {
        send_ok(in_port, &format!("A{i}")).await;
    }
    assert!(receiver.wait_len(20, WAIT).await);
    watcher.wait_for(&messages, "20").await;
    let updates = watcher.messages().iter().filter(|m| m.topic == messages).count();
    let bound = started.elapsed().as_secs() as usize + 2;
    assert!(updates <= bound, "{updates} updates of the counter in {:?}", started.elapsed());

    // OFF stops it: the sender is refused.
    watcher.publish(&set, "OFF").await;
    watcher.wait_for(&state, "OFF").await;
    watcher.wait_for(&topic("sbswitch", "production/p/status"), "stopped").await;
    assert_eq!(production_state(&engine.status()), ProductionState::Stopped);
    let refused = MllpClient::connect(&format!("127.0.0.1:{in_port}"), Duration::from_secs(1)).await;
    assert!(refused.is_err(), "the listener still accepts connections");

    // Already stopped, a bad payload, an unknown topic: nothing happens.
    watcher.publish(&set, "OFF").await;
    watcher.publish(&set, "TOGGLE").await;
    watcher.publish(&topic("sbswitch", "production/nope/set"), "ON").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(production_state(&engine.status()), ProductionState::Stopped);

    // ON starts it again and the sender gets ACKs.
    watcher.publish(&set, "ON").await;
    watcher.wait_for(&state, "ON").await;
    send_ok(in_port, "B1").await;
    assert!(receiver.wait_len(21, WAIT).await);

    // The item's enable switch and restart button.
    let enabled = topic("sbswitch", "production/p/item/lab_out/enabled");
    watcher.publish(&format!("{enabled}/set"), "OFF").await;
    watcher.wait_for(&enabled, "OFF").await;
    assert!(!engine.status().item("p", "Lab out").unwrap().enabled);
    watcher.publish(&format!("{enabled}/set"), "ON").await;
    watcher.wait_for(&enabled, "ON").await;
    watcher.publish(&topic("sbswitch", "production/p/item/lab_out/restart"), "PRESS").await;

    let expected = [
        "production stopped (by mqtt)",
        "stop ignored: the production is already stopped (by mqtt)",
        "production started (by mqtt)",
        "item \"Lab out\" disabled (by mqtt)",
        "item \"Lab out\" enabled (by mqtt)",
        "item \"Lab out\" restarted (by mqtt)",
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let events: Vec<String> =
            engine.store().recent_events(100).unwrap().into_iter().rev().map(|e| e.text).collect();
        if expected.iter().all(|t| events.contains(&t.to_string())) {
            break;
        }
        assert!(Instant::now() < deadline, "missing events; have {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// The queue-depth sensor rises while the downstream system is down and
/// falls to 0 when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_rises_while_the_downstream_is_down_and_falls_after() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::down().await;
    let in_port = free_port();
    // Long enough to see the queue rise (depths go out at most every 10 s)
    // and to restart the receiver once the production shows as troubled,
    // before the second message's own failure timeout passes.
    let yaml = pipeline_yaml(in_port, receiver.port, "", "").replace("failure_timeout: 300ms", "failure_timeout: 12s");
    let engine = start_engine(dir.path(), &yaml).await;
    let watcher = Watcher::start(broker, "sbqueue/#", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbqueue", None));
    let depth = topic("sbqueue", "production/p/item/lab_out/queue_depth");
    let connected = topic("sbqueue", "production/p/item/lab_out/connected");
    watcher.wait_for(&depth, "0").await;

    for i in 0..3 {
        send_ok(in_port, &format!("Q{i}")).await;
    }
    // Depths go out at most every 10 s, with the value of that moment: the
    // queue is seen to rise, not every step of it.
    let risen = |topic: String| {
        move |msgs: &[Msg]| {
            msgs.iter().rev().find(|m| m.topic == topic).is_some_and(|m| m.payload.parse::<u64>().is_ok_and(|d| d > 0))
        }
    };
    watcher.wait_until("a queue depth above 0", risen(depth.clone())).await;
    watcher.wait_until("a production queue above 0", risen(topic("sbqueue", "production/p/queued"))).await;
    watcher.wait_for(&connected, "OFF").await;
    watcher.wait_for(&topic("sbqueue", "production/p/status"), "troubled").await;
    let attributes = topic("sbqueue", "production/p/item/lab_out/attributes");
    watcher
        .wait_until("a last error in the attributes", |msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.topic == attributes)
                .is_some_and(|m| serde_json::from_str::<Value>(&m.payload).is_ok_and(|a| a["last_error"].is_string()))
        })
        .await;

    // The message at the head was tried for the failure timeout, which is
    // also when the production became troubled: it has failed.
    assert!(engine.wait_for(WAIT, |s| s.item("p", "Lab out").is_some_and(|i| i.queue_depth == 2)).await);
    receiver.restart().await;
    watcher.wait_for(&depth, "0").await;
    watcher.wait_for(&connected, "ON").await;
    watcher.wait_for(&topic("sbqueue", "production/p/item/lab_out/messages"), "2").await;
    watcher.wait_for(&topic("sbqueue", "production/p/item/lab_out/errors"), "1").await;
    watcher.wait_for(&topic("sbqueue", "production/p/status"), "running").await;
    assert!(receiver.wait_len(2, WAIT).await);
    assert_eq!(receiver.ids(), ["Q1", "Q2"]);
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// Two productions as in the demo: `p` receives and delivers to `q` on this
/// machine, which files what it receives under `dir`.
fn two_productions_yaml(in_port: u16, lab_port: u16, dir: &Path) -> String {
    pipeline_yaml(in_port, lab_port, "", "")
        + &format!(
            "  q:
    name: Lab system
    autostart: true
    items:
      - name: Lab in
        kind: mllp_in
        host: 127.0.0.1
        port: {lab_port}
        targets: [Lab inbox]
      - name: Lab inbox
        kind: file_out
        path: {}
        filename: \"{{control_id}}.hl7\"
",
            dir.join("inbox").display()
        )
}

/// After a graceful stop every production and item shows its final state,
/// as retained messages for any MQTT client, not only the first production.
/// (The broker sends the retained messages in no particular order: the
/// check waits until every one has arrived.)
async fn assert_final_states(broker: u16, instance: &str, messages: usize) {
    let retained = Watcher::start(broker, &format!("{instance}/#"), None).await;
    let mut expected: Vec<(String, String)> = vec![(topic(instance, "availability"), "offline".into())];
    for production in ["p", "q"] {
        expected.push((topic(instance, &format!("production/{production}/state")), "OFF".into()));
        expected.push((topic(instance, &format!("production/{production}/status")), "stopped".into()));
    }
    let items = ["p/item/adt_in", "p/item/adt_router", "p/item/lab_out", "q/item/lab_in", "q/item/lab_inbox"];
    for item in items {
        expected.push((topic(instance, &format!("production/{item}/messages")), messages.to_string()));
    }
    for item in ["p/item/adt_in", "p/item/lab_out", "q/item/lab_in"] {
        expected.push((topic(instance, &format!("production/{item}/connected")), "OFF".into()));
    }
    let attributes: Vec<String> =
        items.iter().map(|i| topic(instance, &format!("production/{i}/attributes"))).collect();
    retained
        .wait_until("every final state", |msgs| {
            let last = |t: &str| msgs.iter().rev().find(|m| m.topic == t).map(|m| m.payload.as_str());
            let stopped = |t: &String| {
                last(t)
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .is_some_and(|a| a["item_state"] == "stopped")
            };
            expected.iter().all(|(t, p)| last(t) == Some(p.as_str())) && attributes.iter().all(stopped)
        })
        .await;
}

/// A stop publishes the final states of every production and item and
/// then `offline` (in process and the real binary on SIGTERM); killing the
/// process (no chance to say goodbye) lets the broker publish the last
/// will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_graceful_stop_and_last_will_of_a_killed_process() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let yaml = two_productions_yaml(in_port, free_port(), dir.path());

    // In process: a graceful stop, moments after traffic (the counters
    // still wait for their interval).
    let engine = start_engine(dir.path(), &yaml).await;
    let watcher = Watcher::start(broker, "#", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbstop", None));
    watcher.wait_for("sbstop/availability", "online").await;
    watcher.wait_for("sbstop/production/q/state", "ON").await;
    for n in 0..3 {
        send_ok(in_port, &format!("S{n}")).await;
    }
    assert!(engine.wait_for(WAIT, |s| s.item("q", "Lab inbox").is_some_and(|i| i.sent == 3)).await);
    bridge.refuse_commands();
    engine.shutdown().await;
    bridge.shutdown().await;
    assert_final_states(broker, "sbstop", 3).await;

    // The real binary, stopped with SIGTERM.
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("productions.yaml");
    let in_port = free_port();
    std::fs::write(&config, two_productions_yaml(in_port, free_port(), data.path())).unwrap();
    let port = broker.to_string();
    let args = ["--mqtt-host", "127.0.0.1", "--mqtt-port", &port, "--instance-id", "sbterm"];
    let mut child = spawn_switchboard(&config, data.path(), &args, &[]);
    watcher.wait_for("sbterm/availability", "online").await;
    watcher.wait_for("sbterm/production/q/state", "ON").await;
    for n in 0..2 {
        send_ok(in_port, &format!("T{n}")).await;
    }
    let inbox = data.path().join("inbox");
    let filed = || std::fs::read_dir(&inbox).map_or(0, Iterator::count);
    assert!(common::eventually(WAIT, || filed() == 2).await, "the lab filed {} messages", filed());
    let term = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(term.is_ok_and(|s| s.success()), "cannot send SIGTERM");
    let status = child.wait().expect("wait for switchboard");
    assert!(status.success(), "{status}");
    assert_final_states(broker, "sbterm", 2).await;

    // The real binary, killed.
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("productions.yaml");
    std::fs::write(&config, pipeline_yaml(free_port(), receiver.port, "", "")).unwrap();
    let args = ["--mqtt-host", "127.0.0.1", "--mqtt-port", &port, "--instance-id", "sbkill"];
    let mut child = spawn_switchboard(&config, data.path(), &args, &[]);
    watcher.wait_for("sbkill/availability", "online").await;
    watcher.wait_for("sbkill/production/p/state", "ON").await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    watcher.wait_for("sbkill/availability", "offline").await;
    let later = Watcher::start(broker, "sbkill/availability", None).await;
    later.wait_until("a retained offline", |m| m.iter().any(|m| m.retain && m.payload == "offline")).await;
}

/// Steady traffic keeps Home Assistant quiet: each counter and queue depth
/// goes out at most once per its interval, attributes not at all, and the
/// rate counts only what came from outside (not the hop to the lab).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_publishes_few_states() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let engine = start_engine(dir.path(), &two_productions_yaml(in_port, free_port(), dir.path())).await;
    let watcher = Watcher::start(broker, "sbquiet/#", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbquiet", None));
    watcher.wait_for(&topic("sbquiet", "production/q/item/lab_inbox/messages"), "0").await;
    let before = watcher.messages().len();

    // 20 messages a second for 3 s, on one connection.
    const MESSAGES: usize = 60;
    let mut client =
        MllpClient::connect(&format!("127.0.0.1:{in_port}"), Duration::from_secs(2)).await.expect("connect");
    let started = Instant::now();
    for n in 0..MESSAGES {
        tokio::time::sleep_until(started + Duration::from_millis(50 * n as u64)).await;
        client.exchange(&common::hl7("ADT^A01", &format!("R{n}")), Duration::from_secs(5)).await.expect("ACK");
    }
    let during = watcher.messages().len();
    // Then each counter catches up with its final value.
    let rate_topic = topic("sbquiet", "engine/message_rate");
    let all = MESSAGES.to_string();
    for item in ["p/item/adt_in", "p/item/lab_out", "q/item/lab_in", "q/item/lab_inbox"] {
        let messages = topic("sbquiet", &format!("production/{item}/messages"));
        let deadline = Instant::now() + WAIT;
        while watcher.last(&messages).as_deref() != Some(all.as_str()) {
            assert!(Instant::now() < deadline, "{messages} = {:?}", watcher.last(&messages));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Received from outside: the 60 from the sender, not the 60 again at
    // the lab.
    assert_eq!(watcher.last(&rate_topic).as_deref(), Some(all.as_str()));
    let log = watcher.messages();
    let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &log[before..during] {
        *per_topic.entry(m.topic.as_str()).or_default() += 1;
    }
    for (topic, n) in &per_topic {
        assert!(!topic.ends_with("/attributes"), "attributes moved with traffic: {per_topic:#?}");
        // At most once in 3 s for a counter (15 s) or a depth (10 s); the
        // connection of the sender and the lab may come up once.
        assert!(*n <= 1, "{topic} published {n} times in 3 s: {per_topic:#?}");
    }
    let mut after: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &log[before..] {
        *after.entry(m.topic.as_str()).or_default() += 1;
    }
    assert!(after.values().all(|&n| n <= 2), "{after:#?}");
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// Home Assistant's birth message (`homeassistant/status` = `online`) brings
/// every config and state again, and so does the "Republish discovery"
/// button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_birth_message_and_the_button_republish_discovery() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let engine = start_engine(dir.path(), &pipeline_yaml(free_port(), receiver.port, "", "")).await;
    let watcher = Watcher::start(broker, "#", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbbirth", None));
    watcher.wait_for("sbbirth/production/p/state", "ON").await;
    let filter = |m: &Msg| m.topic.ends_with("/config") && m.topic.contains("/sbbirth/");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = watcher.messages().iter().filter(|m| filter(m)).count();
    assert!(count > 10, "{count} configs");

    for (topic, payload) in [("homeassistant/status", "online"), ("sbbirth/engine/republish", "PRESS")] {
        watcher.clear();
        watcher.publish(topic, payload).await;
        watcher
            .wait_until("configs and states again", |msgs| {
                msgs.iter().filter(|m| filter(m)).count() == count
                    && msgs.iter().any(|m| m.topic == "sbbirth/production/p/state" && m.payload == "ON")
                    && msgs.iter().any(|m| m.topic == "sbbirth/availability" && m.payload == "online")
            })
            .await;
    }
    // Home Assistant going offline changes nothing.
    watcher.clear();
    watcher.publish("homeassistant/status", "offline").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!watcher.messages().iter().any(filter));
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// An item removed from the productions file loses its entities at the next
/// start: an empty retained config on each of its topics (the list of
/// topics published is kept in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_item_gets_an_empty_retained_config_at_the_next_start() {
    let broker = start_broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let archive = format!(
        "      - name: Archive\n        kind: file_out\n        path: \"{}\"\n",
        dir.path().join("archive").display()
    );
    let archive_topics: Vec<String> = [
        ("sensor", "p_archive_queue_depth"),
        ("sensor", "p_archive_messages"),
        ("sensor", "p_archive_errors"),
        ("button", "p_archive_restart"),
        ("switch", "p_archive_enabled"),
    ]
    .iter()
    .map(|(c, k)| config_topic(c, "sbremove", k))
    .collect();

    let engine = start_engine(dir.path(), &pipeline_yaml(in_port, receiver.port, &archive, "")).await;
    let watcher = Watcher::start(broker, "homeassistant/+/sbremove/+/config", None).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbremove", None));
    watcher
        .wait_until("the archive's configs", |m| archive_topics.iter().all(|t| m.iter().any(|m| &m.topic == t)))
        .await;
    let first: Vec<String> = {
        let deadline = Instant::now() + WAIT;
        loop {
            let stored = engine.store().published_topics().list().unwrap();
            if archive_topics.iter().all(|t| stored.contains(t)) {
                break stored;
            }
            assert!(Instant::now() < deadline, "the store does not list the topics: {stored:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    bridge.refuse_commands();
    engine.shutdown().await;
    bridge.shutdown().await;

    // Next start without the archive.
    watcher.clear();
    let engine = start_engine(dir.path(), &pipeline_yaml(in_port, receiver.port, "", "")).await;
    let bridge = ha::start(engine.clone(), settings(broker, "sbremove", None));
    watcher
        .wait_until("empty configs for the archive", |m| {
            archive_topics.iter().all(|t| m.iter().any(|m| &m.topic == t && m.payload.is_empty()))
        })
        .await;
    // The clearing comes before the new configs, and nothing else is cleared.
    let msgs = watcher.messages();
    let cleared: Vec<&Msg> = msgs.iter().filter(|m| m.payload.is_empty()).collect();
    assert_eq!(cleared.len(), archive_topics.len(), "{cleared:?}");
    watcher
        .wait_until("the other configs", |m| m.iter().any(|m| m.topic == config_topic("switch", "sbremove", "p")))
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = engine.store().published_topics().list().unwrap();
        if stored.len() == first.len() - archive_topics.len() && !archive_topics.iter().any(|t| stored.contains(t)) {
            break;
        }
        assert!(Instant::now() < deadline, "the store still lists removed topics: {stored:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// The broker restarts (connections cut, refused for a while, back without
/// any retained message) in the middle of traffic: every message is still
/// acknowledged and delivered, and the entities come back on the new broker
/// without Home Assistant having to ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_traffic_loses_no_message_and_the_entities_come_back() {
    let first = start_broker(None).await;
    let proxy = Proxy::start(first).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(dir.path(), &pipeline_yaml(in_port, receiver.port, "", "")).await;
    let bridge = ha::start(engine.clone(), settings(proxy.port, "sbrestart", None));
    let watcher = Watcher::start(first, "sbrestart/#", None).await;
    watcher.wait_for("sbrestart/availability", "online").await;

    let total = 40;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            send_ok(in_port, &format!("R{i}")).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = start_broker(None).await;
    proxy.point_at(second);

    sender.await.expect("every message acknowledged");
    assert!(receiver.wait_len(total, WAIT).await, "{} of {total} delivered", receiver.len());
    let ids = receiver.ids();
    for i in 0..total {
        assert!(ids.contains(&format!("R{i}")), "R{i} lost");
    }
    // On the new broker, without a birth message: configs, availability and
    // the counters, retained.
    let after = Watcher::start(second, "#", None).await;
    after.wait_for("sbrestart/availability", "online").await;
    after.wait_for("sbrestart/production/p/state", "ON").await;
    after.wait_for("sbrestart/production/p/item/lab_out/messages", &total.to_string()).await;
    after
        .wait_until("the configs", |m| {
            m.iter().any(|m| m.topic == config_topic("switch", "sbrestart", "p") && !m.payload.is_empty())
        })
        .await;
    bridge.shutdown().await;
    engine.shutdown().await;
}

/// Under the Supervisor: no MQTT settings, a token, and the services API
/// answers "not enabled" first, then the broker and its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_provides_the_broker() {
    let user = ("addons", "pw-from-supervisor");
    let broker = start_broker(Some(user)).await;
    let supervisor =
        Supervisor::start(vec![MqttAnswer::NotEnabled, MqttAnswer::older_broker(broker, user.0, user.1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let engine = start_engine(dir.path(), &pipeline_yaml(free_port(), receiver.port, "", "")).await;
    let watcher = Watcher::start(broker, "#", Some(user)).await;
    let settings = HaSettings {
        broker: BrokerSource::Supervisor {
            url: supervisor.url(),
            token: Secret::new("test-token"),
            client_id: "sbsuper".into(),
            keep_alive: Duration::from_secs(5),
        },
        discovery_prefix: PREFIX.into(),
        instance_id: "sbsuper".into(),
        ui_url: None,
    };
    let bridge = ha::start(engine.clone(), settings);
    watcher.wait_for("sbsuper/availability", "online").await;
    let switch = config_topic("switch", "sbsuper", "p");
    watcher.wait_until("the switch config", |m| m.iter().any(|m| m.topic == switch)).await;
    let config: Value = serde_json::from_str(&watcher.last(&switch).unwrap()).unwrap();
    assert_eq!(config["device"]["configuration_url"], "homeassistant://hassio/ingress/local_switchboard");
    assert!(supervisor.asked().len() >= 2, "asked again after the 400: {:?}", supervisor.asked());
    let authorizations = supervisor.authorizations();
    assert!(authorizations.len() > 2 && authorizations.iter().all(|a| a == "Bearer test-token"), "{authorizations:?}");
    assert!(matches!(bridge.status(), ha::MqttStatus::Connected(_)));
    bridge.shutdown().await;
    engine.shutdown().await;
}
