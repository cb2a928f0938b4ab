//! The MQTT broker failing under a running engine, against a real
//! Mosquitto: killed (SIGKILL) and started again several times while
//! messages flow, and its password changed while the bridge is connected.
//! Message traffic must not notice; the entities must come back, with the
//! states they have now, on a broker that lost every retained message.
//!
//! Without a `mosquitto` binary these tests say so and do nothing, unless
//! `SWITCHBOARD_TEST_REQUIRE_MOSQUITTO` is set.

use std::time::Duration;

use switchboard::engine::CommandSource;
use switchboard::ha::{self, BrokerSource, HaSettings, Secret};
use switchboard::store::Store;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::{Receiver, free_port};
use crate::mqtt::{settings, start_engine};
use crate::mqtt_support::*;

/// A user the watchers log in as, whose password never changes.
const WATCHER: (&str, &str) = ("watcher", "watcher-Pa55word");
/// The bridge's password after the change.
const NEW_PASSWORD: &str = "Rotated-Pa55word";

/// Production `p` as the other MQTT tests have it, and `q`, which the test
/// stops, so that a state other than the default must come back.
fn productions(in_port: u16, out_port: u16, archive: &std::path::Path) -> String {
    let q = format!(
        "  q:\n    name: Archive feed\n    autostart: true\n    stop_timeout: 2s\n    items:\n      - name: Archive in\n        \
         kind: mllp_in\n        host: 127.0.0.1\n        port: {}\n        targets: [Archive out]\n      - name: Archive out\n        \
         kind: file_out\n        path: \"{}\"\n",
        free_port(),
        archive.display()
    );
    let mut yaml = pipeline_yaml(in_port, out_port, "", "");
    yaml.push_str(&q);
    yaml
}

/// Sends `count` messages one after another (each acknowledged) while the
/// test does something to the broker.
fn steady_sender(in_port: u16, prefix: &'static str, count: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..count {
            send_ok(in_port, &format!("{prefix}{i}")).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

/// A fresh client sees what a Home Assistant that starts now would: the
/// retained configs and states, with the values they have now.
async fn entities_are_back(port: u16, instance: &str, messages: usize) {
    let fresh = Watcher::start(port, &format!("{instance}/#"), Some(WATCHER)).await;
    fresh.wait_for(&format!("{instance}/availability"), "online").await;
    fresh.wait_for(&format!("{instance}/production/p/state"), "ON").await;
    fresh.wait_for(&format!("{instance}/production/q/state"), "OFF").await;
    fresh.wait_for(&format!("{instance}/production/q/status"), "stopped").await;
    fresh.wait_for(&format!("{instance}/production/p/item/lab_out/messages"), &messages.to_string()).await;
    fresh.wait_for(&format!("{instance}/production/p/item/lab_out/queue_depth"), "0").await;
    let configs = Watcher::start(port, &format!("{PREFIX}/+/{instance}/+/config"), Some(WATCHER)).await;
    let switch = config_topic("switch", instance, "p");
    configs.wait_until("the switch config", |m| m.iter().any(|m| m.topic == switch && m.retain)).await;
}

/// Events of kind `mqtt`.
fn mqtt_events(store: &Store) -> Vec<(String, String)> {
    let events = store.recent_events(1000).expect("events");
    events.into_iter().filter(|e| e.kind == "mqtt").map(|e| (e.level, e.text)).collect()
}

/// Mosquitto killed three times while a sender sends: every message is
/// acknowledged and delivered, in order and once, and after each restart
/// the entities are back with their current states, `q` still off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_killed_under_load_keeps_traffic_and_brings_the_entities_back() {
    let Some((mosquitto, passwd)) = mosquitto_or_skip("the broker kill test against a real Mosquitto") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port, tls_port) = start_mosquitto(&mosquitto, &passwd, dir.path()).await;
    set_password(&passwd, dir.path(), WATCHER.0, WATCHER.1);
    broker.reload();

    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(data.path(), &productions(in_port, receiver.port, &data.path().join("archive"))).await;
    let bridge = ha::start(engine.clone(), settings(port, "sbkill", Some((USER, PASSWORD))));
    let watcher = Watcher::start(port, "sbkill/#", Some(WATCHER)).await;
    watcher.wait_for("sbkill/production/q/state", "ON").await;
    watcher.publish("sbkill/production/q/set", "OFF").await;
    watcher.wait_for("sbkill/production/q/state", "OFF").await;
    drop(watcher);

    let total = 60;
    let sender = steady_sender(in_port, "K", total);
    let started = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker = restart_mosquitto(&mosquitto, dir.path(), &[port, tls_port]).await;
        let back = Watcher::start(port, "sbkill/availability", Some(WATCHER)).await;
        back.wait_for("sbkill/availability", "online").await;
    }
    eprintln!("three kills and reconnects in {:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(60), sender).await.expect("the sender finished").expect("every ACK");
    assert!(receiver.wait_len(total, WAIT).await, "{} of {total} delivered", receiver.len());
    let expected: Vec<String> = (0..total).map(|i| format!("K{i}")).collect();
    assert_eq!(receiver.ids(), expected, "each message once, in order");
    entities_are_back(port, "sbkill", total).await;
    assert!(matches!(bridge.status(), ha::MqttStatus::Connected(_)), "{:?}", bridge.status());
    bridge.shutdown().await;
    engine.shutdown().await;
    drop(broker);
}

/// The bridge's password changed at the broker while it runs (a restart
/// makes the broker refuse it): message traffic goes on, the refusal is
/// one clear error event (the user, never a password) however often the
/// bridge tries again, and the entities come back once the credentials
/// are fixed — at the broker (read again on SIGHUP) for credentials given
/// in the options, or by the Supervisor giving new ones, which the bridge
/// asks for after a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_broker_password_leaves_traffic_alone_and_the_fix_brings_the_entities_back() {
    let Some((mosquitto, passwd)) = mosquitto_or_skip("the credential change test against a real Mosquitto") else {
        return;
    };
    for from_supervisor in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut broker, port, tls_port) = start_mosquitto(&mosquitto, &passwd, dir.path()).await;
        set_password(&passwd, dir.path(), WATCHER.0, WATCHER.1);
        broker.reload();
        let supervisor = Supervisor::start(vec![MqttAnswer::broker(port, USER, PASSWORD)]).await;

        let data = tempfile::tempdir().unwrap();
        let receiver = Receiver::start().await;
        let in_port = free_port();
        let engine =
            start_engine(data.path(), &productions(in_port, receiver.port, &data.path().join("archive"))).await;
        let instance = if from_supervisor { "sbsuperpw" } else { "sboptionspw" };
        let settings = match from_supervisor {
            false => settings(port, instance, Some((USER, PASSWORD))),
            true => HaSettings {
                broker: BrokerSource::Supervisor {
                    url: supervisor.url(),
                    token: Secret::new("test-token"),
                    client_id: instance.into(),
                    keep_alive: Duration::from_secs(5),
                },
                discovery_prefix: PREFIX.into(),
                instance_id: instance.into(),
                ui_url: None,
            },
        };
        let bridge = ha::start(engine.clone(), settings);
        let watcher = Watcher::start(port, &format!("{instance}/#"), Some(WATCHER)).await;
        watcher.wait_for(&format!("{instance}/availability"), "online").await;
        engine.stop_production("q", CommandSource::Api).await.unwrap();
        watcher.wait_for(&format!("{instance}/production/q/state"), "OFF").await;
        drop(watcher);

        // The password changes; the broker restarts and refuses the old one.
        set_password(&passwd, dir.path(), USER, NEW_PASSWORD);
        broker.kill();
        broker = restart_mosquitto(&mosquitto, dir.path(), &[port, tls_port]).await;
        let total = 30;
        let sender = steady_sender(in_port, "C", total);
        let store = engine.store();
        let refused = |e: &(String, String)| e.0 == "error" && e.1.contains("refuses the user name or password");
        let deadline = Instant::now() + WAIT;
        while !mqtt_events(store).iter().any(refused) {
            assert!(Instant::now() < deadline, "no error event: {:?}", mqtt_events(store));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several attempts later, still one error, naming the user.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let errors: Vec<_> = mqtt_events(store).into_iter().filter(refused).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].1.contains(&format!("`{USER}`")), "{errors:?}");
        assert!(
            matches!(bridge.status(), ha::MqttStatus::Disconnected(ref why) if why.contains("credentials refused")),
            "{:?}",
            bridge.status()
        );
        let asked_before = supervisor.asked().len();
        if from_supervisor {
            // The Mosquitto add-on gives the add-on its new credentials.
            supervisor.answer(MqttAnswer::broker(port, USER, NEW_PASSWORD));
        } else {
            // The broker's administrator puts the password back.
            set_password(&passwd, dir.path(), USER, PASSWORD);
            broker.reload();
        }

        tokio::time::timeout(Duration::from_secs(60), sender).await.expect("the sender finished").expect("every ACK");
        assert!(receiver.wait_len(total, WAIT).await, "{} of {total} delivered", receiver.len());
        // The bridge tries again at most every 30 s.
        let back = Watcher::start(port, &format!("{instance}/availability"), Some(WATCHER)).await;
        let deadline = Instant::now() + Duration::from_secs(40);
        while back.last(&format!("{instance}/availability")).as_deref() != Some("online") {
            assert!(Instant::now() < deadline, "the entities did not come back: {:?}", bridge.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        entities_are_back(port, instance, total).await;
        if from_supervisor {
            assert!(supervisor.asked().len() > asked_before, "the Supervisor was not asked again");
        }
        for text in mqtt_events(store).iter().map(|e| &e.1) {
            assert!(!text.contains(PASSWORD) && !text.contains(NEW_PASSWORD), "a password in an event: {text}");
        }
        bridge.shutdown().await;
        engine.shutdown().await;
        drop(broker);
    }
}
