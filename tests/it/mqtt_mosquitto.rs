//! End to end against a real Mosquitto, the broker Home Assistant installs:
//! the `switchboard` binary connects over TLS (certificates made for the
//! test) with a user name and password, publishes its entities, obeys the
//! production switch while MLLP traffic flows, and says `offline` when it
//! is stopped.
//!
//! Mosquitto is started by the test on free ports of 127.0.0.1. Without a
//! `mosquitto` binary the test says so and does nothing, unless
//! `SWITCHBOARD_TEST_REQUIRE_MOSQUITTO` is set (`.ci/run` installs Mosquitto
//! and sets it, so that CI cannot skip the test).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::common::{Receiver, free_port};
use crate::mqtt_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_with_mosquitto_over_tls_with_a_password() {
    let Some((mosquitto, passwd)) = mosquitto_or_skip("the end-to-end test against a real Mosquitto") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_broker, plain_port, tls_port) = start_mosquitto(&mosquitto, &passwd, dir.path()).await;
    let watcher = Watcher::start(plain_port, "#", Some((USER, PASSWORD))).await;

    let receiver = Receiver::start().await;
    let in_port = free_port();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("productions.yaml");
    std::fs::write(&config, pipeline_yaml(in_port, receiver.port, "", "")).unwrap();
    let tls_port = tls_port.to_string();
    let ca = dir.path().join("ca.pem");
    let args = [
        "--mqtt-host",
        "localhost",
        "--mqtt-port",
        &tls_port,
        "--mqtt-username",
        USER,
        "--mqtt-tls-ca",
        ca.to_str().unwrap(),
        "--instance-id",
        "sbmosq",
    ];
    let child = spawn_switchboard(&config, data.path(), &args, &[("SWITCHBOARD_MQTT_PASSWORD", PASSWORD)]);
    let mut child = KillOnDrop(Some(child));

    // Discovery and states arrive, retained, without the password.
    watcher.wait_for("sbmosq/availability", "online").await;
    watcher.wait_for("sbmosq/production/p/state", "ON").await;
    let switch = config_topic("switch", "sbmosq", "p");
    watcher.wait_until("the switch config", |m| m.iter().any(|m| m.topic == switch)).await;
    let payload: Value = serde_json::from_str(&watcher.last(&switch).unwrap()).unwrap();
    assert_eq!(payload["command_topic"], "sbmosq/production/p/set");
    let late = Watcher::start(plain_port, "homeassistant/+/sbmosq/+/config", Some((USER, PASSWORD))).await;
    late.wait_until("retained configs", |m| m.iter().filter(|m| m.retain).count() > 10).await;

    // Traffic, then the switch off and on again over the real broker.
    send_ok(in_port, "M1").await;
    watcher.publish("sbmosq/production/p/set", "OFF").await;
    watcher.wait_for("sbmosq/production/p/state", "OFF").await;
    watcher.wait_for("sbmosq/production/p/status", "stopped").await;
    assert!(
        switchboard::mllp::MllpClient::connect(&format!("127.0.0.1:{in_port}"), Duration::from_secs(1)).await.is_err(),
        "the stopped production still accepts connections"
    );
    watcher.publish("sbmosq/production/p/set", "ON").await;
    watcher.wait_for("sbmosq/production/p/state", "ON").await;
    send_ok(in_port, "M2").await;
    assert!(receiver.wait_len(2, WAIT).await);
    watcher.wait_for("sbmosq/production/p/item/lab_out/messages", "2").await;
    assert!(watcher.messages().iter().all(|m| !m.payload.contains(PASSWORD)), "the password leaks");

    // A stop (SIGTERM, as the Supervisor sends) ends with `offline`.
    let mut process = child.0.take().unwrap();
    let status = Command::new("kill").args(["-TERM", &process.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = process.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "switchboard did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    watcher.wait_for("sbmosq/availability", "offline").await;
    // Every final state made it, retained, not only the first ones.
    let retained = Watcher::start(plain_port, "sbmosq/#", Some((USER, PASSWORD))).await;
    retained.wait_for("sbmosq/availability", "offline").await;
    retained.wait_for("sbmosq/production/p/state", "OFF").await;
    retained.wait_for("sbmosq/production/p/status", "stopped").await;
    for item in ["adt_in", "adt_router", "lab_out"] {
        let attributes = format!("sbmosq/production/p/item/{item}/attributes");
        retained
            .wait_until(&format!("{item} stopped"), |m| {
                m.iter().rev().find(|m| m.topic == attributes).is_some_and(|m| m.payload.contains("\"stopped\""))
            })
            .await;
    }
    for item in ["adt_in", "lab_out"] {
        retained.wait_for(&format!("sbmosq/production/p/item/{item}/connected"), "OFF").await;
    }
}
