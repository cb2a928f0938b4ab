//! Helpers of the MQTT tests: a client that records what the broker
//! sends (standing in for Home Assistant), productions, the real binary,
//! a real Mosquitto (`mosquitto`) and a Supervisor stand-in (`supervisor`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use switchboard::hl7::{Message, Reply};
use switchboard::mllp::MllpClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::hl7;

mod mosquitto;
mod supervisor;
pub(crate) use mosquitto::*;
pub(crate) use supervisor::{MqttAnswer, Supervisor};

/// How long any wait in these tests may take: counters go out at most
/// every 15 s, so a count is seen up to 15 s after it changed.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// The discovery prefix.
pub(crate) const PREFIX: &str = "homeassistant";

/// One message received.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// An MQTT client that records every message it receives, standing in for
/// Home Assistant.
pub(crate) struct Watcher {
    client: AsyncClient,
    log: Arc<Mutex<Vec<Msg>>>,
    task: JoinHandle<()>,
}

impl Watcher {
    pub(crate) async fn start(port: u16, filter: &str, user: Option<(&str, &str)>) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!("watcher-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = user {
            options.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let log: Arc<Mutex<Vec<Msg>>> = Arc::default();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let l = log.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => l.lock().unwrap().push(Msg {
                        topic: p.topic,
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
        tokio::time::timeout(Duration::from_secs(5), subscribed).await.expect("no SUBACK").expect("watcher task");
        Self { client, log, task }
    }

    pub(crate) fn messages(&self) -> Vec<Msg> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// The last payload seen on each topic.
    pub(crate) fn latest(&self) -> BTreeMap<String, String> {
        self.messages().into_iter().map(|m| (m.topic, m.payload)).collect()
    }

    pub(crate) fn last(&self, topic: &str) -> Option<String> {
        self.messages().into_iter().rev().find(|m| m.topic == topic).map(|m| m.payload)
    }

    pub(crate) async fn wait_until(&self, what: &str, check: impl Fn(&[Msg]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if check(&self.messages()) {
                return;
            }
            if Instant::now() >= deadline {
                let latest: Vec<String> = self
                    .latest()
                    .into_iter()
                    .filter(|(t, _)| !t.ends_with("/config"))
                    .map(|(t, p)| format!("{t} = {p}"))
                    .collect();
                panic!("timed out waiting for {what}; latest states:\n{}", latest.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the last payload on `topic` is `payload`.
    pub(crate) async fn wait_for(&self, topic: &str, payload: &str) {
        self.wait_until(&format!("{topic} = {payload}"), |msgs| {
            msgs.iter().rev().find(|m| m.topic == topic).is_some_and(|m| m.payload == payload)
        })
        .await;
    }

    pub(crate) async fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.expect("publish");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// mllp_in → router → mllp_out (+ more items), production `p` ("ADT feed").
pub(crate) fn pipeline_yaml(in_port: u16, out_port: u16, extra_items: &str, tls: &str) -> String {
    format!(
        "{tls}productions:
  p:
    name: ADT feed
    autostart: true
    stop_timeout: 2s
    items:
      - name: ADT in
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        targets: [ADT router]
      - name: ADT router
        kind: router
        rules:
          - when: MSH-9.1 = \"ADT\"
            send: [Lab out]
      - name: Lab out
        kind: mllp_out
        host: 127.0.0.1
        port: {out_port}
        connect_timeout: 300ms
        response_timeout: 2s
        retry_interval: 50ms
        failure_timeout: 300ms
{extra_items}"
    )
}

pub(crate) fn config_topic(component: &str, instance: &str, key: &str) -> String {
    format!("{PREFIX}/{component}/{instance}/{key}/config")
}

pub(crate) async fn send_ok(port: u16, control_id: &str) {
    let mut client = MllpClient::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to send {control_id}: {e}"));
    let bytes = client.exchange(&hl7("ADT^A01", control_id), Duration::from_secs(5)).await.expect("no ACK");
    let reply = Reply::read(&Message::parse(&bytes).expect("ACK parses"));
    assert_eq!(reply.msa.map(|m| m.0).as_deref(), Some("AA"), "{control_id} not accepted");
}

/// Runs `switchboard run` with MQTT flags; its log goes to the test output.
pub(crate) fn spawn_switchboard(config: &Path, data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("SWITCHBOARD_OPTIONS")
        .env("SWITCHBOARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard");
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[switchboard] {line}");
            }
        });
    }
    child
}

/// `switchboard run`, everything it writes to standard output and error
/// collected line by line.
pub(crate) struct Running {
    child: KillOnDrop,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts it with a clean environment but `envs` (logging at trace
    /// level unless `envs` sets `SWITCHBOARD_LOG`).
    pub(crate) fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .args(args)
            .env_clear()
            .env("SWITCHBOARD_LOG", "trace")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = vec![read_lines(stdout, lines.clone()), read_lines(stderr, lines.clone())];
        Self { child: KillOnDrop(Some(child)), lines, readers }
    }

    pub(crate) async fn wait_logged(&self, what: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "timed out waiting for the log to say {what} ({needle:?})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then every line it wrote, once it has exited.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        let mut child = self.child.0.take().expect("running");
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "switchboard did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "{exit:?}");
        for reader in self.readers.drain(..) {
            reader.join().expect("log reader");
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

fn read_lines(from: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    })
}
