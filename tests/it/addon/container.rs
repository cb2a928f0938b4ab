//! The container's contract, without Docker: the s6 service's own `run`
//! script starts the real binary with temporary folders in place of
//! `/data`, `/config` and `/ssl`, an options file, and a stand-in for the
//! Supervisor's API on loopback that names a real Mosquitto started by the
//! test. What the Supervisor and Home Assistant rely on is checked: the
//! broker reached with the Supervisor's credentials, discovery published,
//! `/healthz` (the image's HEALTHCHECK command itself) answered on
//! loopback while the ingress port admits only the ingress proxy, the
//! first-run example written, and a SIGTERM ending in `offline` and a
//! clean exit within the add-on's stop timeout.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::manifest::{healthcheck_command, root, yaml};
use crate::common::free_port;
use crate::mqtt_support::{
    KillOnDrop, MqttAnswer, PASSWORD, Supervisor, USER, Watcher, config_topic, mosquitto_or_skip, start_mosquitto,
};

const TOKEN: &str = "supervisor-token-for-the-test";
const API_TOKEN: &str = "an-api-token-of-32-characters-00";
const LONG: Duration = Duration::from_secs(60);

/// The container's folders, temporary.
struct Folders {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    ssl: PathBuf,
}

fn folders() -> Folders {
    let dir = tempfile::tempdir().unwrap();
    let [data, config, ssl] = ["data", "config", "ssl"].map(|f| dir.path().join(f));
    for folder in [&data, &config, &ssl] {
        std::fs::create_dir(folder).unwrap();
    }
    Folders { _dir: dir, data, config, ssl }
}

/// The add-on's service as s6 starts it: its `run` script, with the
/// folders and the environment given, the `switchboard` of this build on
/// the `PATH`. Its log lines are collected (and shown with the test's
/// output).
fn start_addon(folders: &Folders, env: &[(&str, String)]) -> (KillOnDrop, Arc<Mutex<Vec<String>>>) {
    let binary = Path::new(env!("CARGO_BIN_EXE_switchboard"));
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", binary.parent().unwrap().display());
    let mut child = Command::new("sh")
        .arg(root().join("addon/rootfs/etc/s6-overlay/s6-rc.d/switchboard/run"))
        .env_clear()
        .env("PATH", path)
        .env("SWITCHBOARD_DATA_DIR", &folders.data)
        .env("SWITCHBOARD_CONFIG_DIR", &folders.config)
        .env("SWITCHBOARD_SSL_DIR", &folders.ssl)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the run script");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[addon] {line}");
            lines.lock().unwrap().push(line);
        }
    });
    (KillOnDrop(Some(child)), log)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn logged(log: &Mutex<Vec<String>>, all: &[&str]) -> bool {
    log.lock().unwrap().iter().any(|line| all.iter().all(|part| line.contains(part)))
}

/// SIGTERM, as Docker sends it when the Supervisor stops the add-on; the
/// process must exit cleanly within the add-on's `timeout`.
async fn stop(addon: &mut KillOnDrop) {
    let timeout = yaml("config.yaml")["timeout"].as_u64().expect("timeout");
    let mut child: Child = addon.0.take().expect("running");
    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(timeout), "not stopped within the add-on's {timeout} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

async fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url).timeout(Duration::from_secs(20));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_add_on_starts_connects_and_stops_as_the_supervisor_expects() {
    let Some((mosquitto, passwd)) = mosquitto_or_skip("the add-on's container test") else { return };
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, broker_port, _) = start_mosquitto(&mosquitto, &passwd, broker_dir.path()).await;
    let watcher = Watcher::start(broker_port, "#", Some((USER, PASSWORD))).await;
    // Not enabled first (no broker installed yet), then the broker in
    // the newer API's shape.
    let supervisor =
        Supervisor::start(vec![MqttAnswer::NotEnabled, MqttAnswer::broker(broker_port, USER, PASSWORD)]).await;

    let folders = folders();
    let options = json!({
        "log_level": "info", "productions_file": "productions.yaml", "mqtt": {},
        "discovery_prefix": "homeassistant", "certificate_warning_days": 30, "web_allow": [],
        "api_tokens": [API_TOKEN], "colour": "blue",
    });
    std::fs::write(folders.data.join("options.json"), options.to_string()).unwrap();
    let web_port = free_port();
    let env = [
        ("SUPERVISOR_TOKEN", TOKEN.to_owned()),
        ("SWITCHBOARD_SUPERVISOR_URL", supervisor.url()),
        // In the container: 8099 on every address. Tests listen on
        // loopback, on a port of their own.
        ("SWITCHBOARD_WEB_PORT", web_port.to_string()),
        ("SWITCHBOARD_WEB_HOST", "127.0.0.1".to_owned()),
    ];
    let (mut addon, log) = start_addon(&folders, &env);

    // Connected with the Supervisor's credentials (the broker admits no
    // one else), after it said "not enabled" once; discovery published.
    watcher.wait_for("switchboard/availability", "online").await;
    let switch = config_topic("switch", "switchboard", "example");
    watcher.wait_until("the example's switch", |m| m.iter().any(|m| m.topic == switch)).await;
    let config: Value = serde_json::from_str(&watcher.last(&switch).unwrap()).unwrap();
    assert_eq!(config["device"]["name"], "Example feed");
    assert_eq!(config["device"]["configuration_url"], "homeassistant://hassio/ingress/local_switchboard");
    watcher.wait_for("switchboard/production/example/state", "ON").await;
    let asked = supervisor.asked();
    assert!(asked.len() >= 2, "{asked:?}");
    assert!(asked.iter().all(|a| *a == format!("Bearer {TOKEN}")), "{asked:?}");

    // The first start wrote the example, which checks.
    let example = folders.config.join("productions.yaml");
    assert!(std::fs::read_to_string(&example).unwrap().starts_with("# Switchboard productions file."));
    assert!(folders.config.join("inbox").is_dir());
    let check = Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("check").arg("--config").arg(&example).output();
    assert!(check.unwrap().status.success());
    assert!(logged(&log, &["unknown option ignored", "colour"]), "no word about the unknown option");

    // The health check passes on loopback while the UI admits only the
    // ingress proxy (or a token); links in the UI are relative, so they
    // work under the ingress path.
    let base = format!("http://127.0.0.1:{web_port}");
    assert_eq!(http_get(&format!("{base}/healthz"), &[]).await, (200, "ok\n".to_owned()));
    let (status, _) = http_get(&format!("{base}/"), &[]).await;
    assert!(status == 401 || status == 403, "the UI answered {status} to a source that is not the ingress proxy");
    let bearer = format!("Bearer {API_TOKEN}");
    let ingress = [("authorization", bearer.as_str()), ("x-ingress-path", "/api/hassio_ingress/abc123")];
    let (status, page) = http_get(&format!("{base}/"), &ingress).await;
    assert_eq!(status, 200, "{page}");
    for absolute in ["href=\"/", "src=\"/", "action=\"/"] {
        assert!(!page.contains(absolute), "an absolute link ({absolute}) breaks under ingress");
    }
    let command = healthcheck_command();
    let wget = ["/usr/bin/wget", "/bin/wget"].iter().any(|p| Path::new(p).exists());
    if wget {
        let health =
            Command::new("sh").args(["-c", &command]).env("SWITCHBOARD_WEB_PORT", web_port.to_string()).status();
        assert!(health.unwrap().success(), "the image's health check failed: {command}");
    } else {
        eprintln!("SKIPPED: wget is not installed; the HEALTHCHECK command itself did not run");
    }

    // SIGTERM: final states, then `offline`, and a clean exit.
    stop(&mut addon).await;
    watcher.wait_for("switchboard/availability", "offline").await;
    watcher.wait_for("switchboard/production/example/state", "OFF").await;
    assert!(logged(&log, &["stopped"]));
    // The stopped store, for backups taken while stopped.
    use std::os::unix::fs::MetadataExt as _;
    let copy = std::fs::metadata(folders.data.join(switchboard::backup::COPY_FILE))
        .unwrap_or_else(|e| panic!("no copy at rest ({e}); the log: {:#?}", log.lock().unwrap()));
    let store = std::fs::metadata(folders.data.join(switchboard::backup::STORE_FILE)).unwrap();
    assert_eq!((copy.dev(), copy.ino()), (store.dev(), store.ino()));
}

/// Started with only the older `HASSIO_TOKEN`, no options file (the image
/// run by hand), and a Supervisor that refuses the MQTT service: it is
/// asked once, the log says what to change, and Switchboard runs on
/// without MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mqtt_service_is_said_once_and_plainly() {
    let supervisor = Supervisor::start(vec![MqttAnswer::Forbidden]).await;
    let folders = folders();
    let web_port = free_port();
    let env = [
        ("HASSIO_TOKEN", TOKEN.to_owned()),
        ("SWITCHBOARD_SUPERVISOR_URL", supervisor.url()),
        ("SWITCHBOARD_WEB_PORT", web_port.to_string()),
        ("SWITCHBOARD_WEB_HOST", "127.0.0.1".to_owned()),
    ];
    let (mut addon, log) = start_addon(&folders, &env);
    wait_until("the refusal in the log", || logged(&log, &["403", "mqtt:need", "services"])).await;
    wait_until("MQTT off", || logged(&log, &["MQTT is off", "refused"])).await;
    assert_eq!(supervisor.asked(), [format!("Bearer {TOKEN}")], "asked again after a 403");
    assert!(folders.config.join("productions.yaml").is_file(), "no first-run example");
    assert_eq!(http_get(&format!("http://127.0.0.1:{web_port}/healthz"), &[]).await.0, 200);
    stop(&mut addon).await;
}
