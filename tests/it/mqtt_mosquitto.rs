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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchboard::tls::pki::{CertificateAuthority, CertificateRequest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::{Receiver, free_port};
use crate::mqtt_support::*;

const USER: &str = "switchboard";
const PASSWORD: &str = "Mosquitto-Pa55word";

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Kills the broker when the test ends, however it ends.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Mosquitto with a password file (`mosquitto_passwd -c -b`), a plain listener and a TLS
/// listener; returns it with the two ports.
async fn start_mosquitto(mosquitto: &Path, passwd: &Path, dir: &Path) -> (Mosquitto, u16, u16) {
    let password_file = dir.join("passwd");
    let status = Command::new(passwd)
        .args(["-c", "-b"])
        .arg(&password_file)
        .args([USER, PASSWORD])
        .stdout(Stdio::null())
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed");

    let (ca, ca_files) = CertificateAuthority::new_root("Mosquitto test CA", 30, Default::default()).expect("CA");
    let mut request = CertificateRequest::new("localhost", 30);
    request.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
    let server = ca.issue(&request).expect("server certificate");
    std::fs::write(dir.join("ca.pem"), &ca_files.cert_pem).unwrap();
    server.write(&dir.join("server.pem"), &dir.join("server.key"), true).unwrap();

    let (plain, tls) = (free_port(), free_port());
    // Running as root, Mosquitto would switch to its own user, which cannot
    // read the test's private folder.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let config = format!(
        "{user}per_listener_settings false
allow_anonymous false
password_file {passwords}
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
listener {plain} 127.0.0.1
listener {tls} 127.0.0.1
certfile {cert}
keyfile {key}
",
        user = if root { "user root\n" } else { "" },
        passwords = password_file.display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
    );
    let config_file = dir.join("mosquitto.conf");
    std::fs::write(&config_file, config).unwrap();
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mosquitto");
    let broker = Mosquitto(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    for port in [plain, tls] {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "mosquitto does not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (broker, plain, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_with_mosquitto_over_tls_with_a_password() {
    let (Some(mosquitto), Some(passwd)) = (find("mosquitto"), find("mosquitto_passwd")) else {
        assert!(
            std::env::var_os("SWITCHBOARD_TEST_REQUIRE_MOSQUITTO").is_none(),
            "mosquitto is not installed but SWITCHBOARD_TEST_REQUIRE_MOSQUITTO is set"
        );
        eprintln!(
            "SKIPPED: mosquitto is not installed (apt-get install -y mosquitto); the end-to-end test against a \
             real Mosquitto did not run"
        );
        return;
    };
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

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
