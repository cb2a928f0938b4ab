//! Crash recovery: the engine is killed with SIGKILL again and again while a
//! sender streams messages into it and a receiver takes them out of it. No
//! message the sender got a positive ACK for may be lost (invariants 1 and
//! 2), and the receiver must see them in the order they were sent.
//!
//! The engine is the real `switchboard run` binary on one data directory:
//! `mllp_in` → `mllp_out`, `durability: full`, once with the operation
//! waiting for each reply and once sending ahead of them. The sender and the receiver
//! run in this process. Kills come at pseudo-random moments (a fixed seed,
//! so every run kills on the same schedule relative to the traffic) while
//! messages flow in both directions.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::hl7::{AckBuilder, AckCode, Message, Reply};
use switchboard::mllp::{MllpClient, MllpCodec, MllpFrame};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

use crate::ports::free_port;

/// How many times the engine is killed.
const KILLS: usize = 5;
/// Seed of the kill schedule.
const SEED: u64 = 0x5EED_C4A5_0F00;
/// Traffic between a restart and the next kill: this many milliseconds
/// plus a pseudo-random part below `KILL_SPREAD_MS`.
const KILL_AFTER_MS: u64 = 300;
const KILL_SPREAD_MS: u64 = 400;
/// The receiver takes this long to answer each message. That is slower than
/// the sender, so a backlog builds up in the engine and a kill finds a
/// whole batch of messages `delivering` and more queued behind it, not only
/// the one on the wire.
const RECEIVER_DELAY: Duration = Duration::from_millis(4);
/// The whole scenario must finish within this time.
const TEST_LIMIT: Duration = Duration::from_secs(100);
/// After a restart, traffic must flow again within this time.
const RESUME_LIMIT: Duration = Duration::from_secs(10);
/// After the last kill, the receiver must have every acknowledged message
/// within this time, plus three times its delay per message acknowledged
/// (the backlog at the last kill can hold most of them: the engine takes
/// messages in much faster than the slowed receiver drains them).
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// The sender gives up on one message after trying this long.
const SEND_LIMIT: Duration = Duration::from_secs(15);

/// A deterministic pseudo-random sequence (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn control_id(n: u32) -> String {
    format!("C{n:06}")
}

fn sequence_number(id: &str) -> Option<u32> {
    id.strip_prefix('C')?.parse().ok()
}

fn message(n: u32) -> Vec<u8> {
    let id = control_id(n);
    format!(
        "MSH|^~\\&|CRASHTEST|WARD|SWITCHBOARD|HOSP|20260101120000||ADT^A01^ADT_A01|{id}|P|2.5\r\
         EVN|A01|20260101120000\r\
         PID|1||{n}^^^HOSP^MR||Test^Patient^{id}||19700101|F\r\
         PV1|1|I|WARD^101^1\r"
    )
    .into_bytes()
}

/// A port that nobody listens on right now.
fn productions_yaml(in_port: u16, out_port: u16, pipeline_depth: usize) -> String {
    format!(
        "store:
  durability: full
  retention_days: 0

productions:
  crash:
    name: Crash test
    autostart: true
    items:
      - name: Sender in
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        targets: [Receiver out]
      - name: Receiver out
        kind: mllp_out
        host: 127.0.0.1
        port: {out_port}
        stay_connected: true
        retry_interval: 50ms
        pipeline_depth: {pipeline_depth}
"
    )
}

/// The engine as a child process; killed whenever this is dropped, so a
/// failing assertion never leaves it running.
struct Engine {
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Engine {
    fn new(config: PathBuf, data_dir: PathBuf, log: PathBuf) -> Self {
        Self { config, data_dir, log, child: None, starts: 0 }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "the engine is already running");
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
    }

    /// Fails the test if the engine exited on its own.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            panic!("the engine exited by itself ({status}) after start {}; see its log above", self.starts);
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> Vec<String> {
        let Ok(file) = File::open(&self.log) else { return Vec::new() };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].to_vec()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- last lines of the engine's log ---");
            for line in self.log_tail(60) {
                eprintln!("{line}");
            }
        }
    }
}

/// What the receiver got: MSH-10 of every message, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<String>>>);

impl Received {
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn distinct(&self) -> usize {
        self.0.lock().unwrap().iter().collect::<std::collections::HashSet<_>>().len()
    }
}

/// The downstream system: answers AA to everything, recording each
/// message before answering it.
async fn receive(listener: TcpListener, received: Received, connections: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        connections.fetch_add(1, Ordering::Relaxed);
        let received = received.clone();
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, MllpCodec::new());
            // A killed engine resets its connection: the loop just ends.
            while let Some(Ok(frame)) = framed.next().await {
                let MllpFrame::Message(payload) = frame else { continue };
                let msg = Message::parse(&payload).expect("the engine forwarded an unparsable message");
                let id = String::from_utf8_lossy(msg.control_id().expect("no MSH-10")).into_owned();
                received.0.lock().unwrap().push(id);
                tokio::time::sleep(RECEIVER_DELAY).await;
                let ack = AckBuilder::new(&msg, AckCode::AA).build();
                if framed.send(&ack[..]).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[derive(Debug, Default)]
struct SenderReport {
    /// Sequence numbers that got a positive ACK, in order.
    acked: Vec<u32>,
    /// Messages sent again after an attempt that got no reply at all (the
    /// connection broke while the message was on its way or being stored).
    resends_without_reply: u64,
    /// The messages those resends were of.
    resent: std::collections::HashSet<u32>,
    /// Messages sent again after a negative ACK.
    resends_after_nak: u64,
    /// A message that could not be delivered within `SEND_LIMIT`.
    stuck: Option<u32>,
}

/// Streams messages C000001, C000002, … over one connection, one at a
/// time, until `stop` is set. A message is repeated until it gets a
/// positive ACK, reconnecting as often as needed while the engine is down.
async fn send(addr: String, stop: Arc<AtomicBool>, acked_count: Arc<AtomicU64>) -> SenderReport {
    let mut report = SenderReport::default();
    let mut client: Option<MllpClient> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = message(n);
        let id = control_id(n);
        let started = Instant::now();
        let mut unanswered = false;
        let mut nak = false;
        loop {
            if started.elapsed() > SEND_LIMIT {
                report.stuck = Some(n);
                return report;
            }
            let Some(conn) = client.as_mut() else {
                match MllpClient::connect(&addr, Duration::from_secs(1)).await {
                    Ok(c) => client = Some(c),
                    // The engine is down or still starting.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                continue;
            };
            if unanswered {
                report.resends_without_reply += 1;
                report.resent.insert(n);
            } else if nak {
                report.resends_after_nak += 1;
            }
            match conn.exchange(&body, Duration::from_secs(5)).await {
                Ok(bytes) => {
                    let msg = Message::parse(&bytes).expect("the engine sent an unparsable ACK");
                    let reply = Reply::read(&msg);
                    assert_eq!(reply.acknowledged_control_id(), Some(id.as_str()), "an ACK for another message");
                    if reply.is_positive() {
                        report.acked.push(n);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    (unanswered, nak) = (false, true);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    // The message may or may not have been stored.
                    client = None;
                    (unanswered, nak) = (true, false);
                }
            }
        }
    }
    report
}

/// Waits until `done` holds, polling; false when `limit` passed first.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_message_is_lost_when_the_engine_is_killed() {
    killed_again_and_again(1).await;
}

/// The same with the operation sending up to 8 messages ahead of their
/// replies: a kill can then find 8 with the receiver, unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_message_is_lost_when_a_pipelining_engine_is_killed() {
    killed_again_and_again(8).await;
}

async fn killed_again_and_again(pipeline_depth: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("productions.yaml");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let out_port = listener.local_addr().unwrap().port();
    let in_port = free_port();
    std::fs::write(&config, productions_yaml(in_port, out_port, pipeline_depth)).unwrap();

    let received = Received::default();
    let receiver_connections = Arc::new(AtomicU64::new(0));
    let receiver = tokio::spawn(receive(listener, received.clone(), receiver_connections.clone()));

    let mut engine = Engine::new(config, data_dir, dir.path().join("engine.log"));
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send(format!("127.0.0.1:{in_port}"), stop.clone(), acked_count.clone()));

    let scenario = async {
        let mut rng = Rng(SEED);
        let mut kill_times = Vec::new();
        for _ in 0..KILLS {
            engine.start();
            // Kill only once messages flow again, so every kill lands in
            // traffic rather than in start-up.
            let before = acked_count.load(Ordering::Relaxed);
            let resumed = wait_until(RESUME_LIMIT, || acked_count.load(Ordering::Relaxed) > before).await;
            engine.assert_running();
            assert!(resumed, "no message was acknowledged within {RESUME_LIMIT:?} of start {}", engine.starts);
            let after = Duration::from_millis(KILL_AFTER_MS + rng.next() % KILL_SPREAD_MS);
            tokio::time::sleep(after).await;
            engine.assert_running();
            // Acknowledged but not yet delivered: what the engine holds.
            let backlog = acked_count.load(Ordering::Relaxed).saturating_sub(received.distinct() as u64);
            engine.kill();
            kill_times.push((after.as_millis(), backlog));
        }
        // The last run: traffic resumes, then the sender stops and the
        // engine gets to deliver everything.
        engine.start();
        let before = acked_count.load(Ordering::Relaxed);
        let resumed = wait_until(RESUME_LIMIT, || acked_count.load(Ordering::Relaxed) > before).await;
        assert!(resumed, "no message was acknowledged within {RESUME_LIMIT:?} of the last start");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let report = tokio::time::timeout(SEND_LIMIT + Duration::from_secs(1), sender)
            .await
            .expect("the sender did not finish")
            .expect("the sender panicked");
        assert_eq!(report.stuck, None, "the sender could not get an ACK for a message within {SEND_LIMIT:?}");

        let wanted: Vec<String> = report.acked.iter().map(|&n| control_id(n)).collect();
        let drain_limit = DRAIN_LIMIT + RECEIVER_DELAY * 3 * wanted.len() as u32;
        let all_in = wait_until(drain_limit, || {
            let got = received.snapshot();
            let got: std::collections::HashSet<&String> = got.iter().collect();
            wanted.iter().all(|id| got.contains(id))
        })
        .await;
        engine.assert_running();
        // Let a duplicate still in the queue arrive too (a sender's resend
        // stored twice comes right after its first copy), so the count below
        // is complete: wait until nothing has arrived for a while.
        let mut last = received.len();
        let mut quiet_since = Instant::now();
        let settle = wait_until(Duration::from_secs(5), || {
            let now = received.len();
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
            quiet_since.elapsed() >= Duration::from_millis(500)
        })
        .await;
        engine.kill();
        (report, all_in, settle, kill_times)
    };
    let (report, all_in, settled, kill_times) =
        tokio::time::timeout(TEST_LIMIT, scenario).await.expect("the crash recovery scenario took more than 100 s");
    receiver.abort();

    let got = received.snapshot();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &got {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: usize = times.values().map(|&n| n - 1).sum();
    // The engine alone accounts for the duplicates of messages the sender
    // sent once.
    let engine_duplicates: usize = times
        .iter()
        .filter(|(id, _)| sequence_number(id).is_some_and(|n| !report.resent.contains(&n)))
        .map(|(_, &n)| n - 1)
        .sum();
    let duplicated_ids = times.values().filter(|&&n| n > 1).count();
    eprintln!(
        "crash recovery, pipeline_depth {pipeline_depth}: {} kills (after ms of traffic, with a backlog of) {:?}; {} messages acknowledged to the sender \
         ({} resent after no reply, {} after a negative ACK); {} received downstream ({} distinct, \
         {duplicates} duplicates of {duplicated_ids} messages, {engine_duplicates} of them of messages \
         sent once) over {} connections; {:.1} s",
        kill_times.len(),
        kill_times,
        report.acked.len(),
        report.resends_without_reply,
        report.resends_after_nak,
        got.len(),
        times.len(),
        receiver_connections.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );

    // (a) Nothing acknowledged is lost.
    let missing: Vec<String> =
        report.acked.iter().map(|&n| control_id(n)).filter(|id| !times.contains_key(id.as_str())).collect();
    assert!(
        all_in && missing.is_empty(),
        "{} acknowledged messages never delivered, first ones: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(report.acked.len() > 100, "too little traffic to prove anything: {} messages", report.acked.len());
    assert!(settled, "the receiver kept getting messages long after the last one was sent");
    for id in times.keys() {
        let n = sequence_number(id).unwrap_or_else(|| panic!("the receiver got an unknown control id {id:?}"));
        assert!(report.acked.last().is_some_and(|&last| n <= last), "the receiver got {id}, which was never sent");
    }

    // (b) Order: the operation delivers its queue first in, first out, so
    // the first arrival of each message is in the order it was sent. Later
    // arrivals are the duplicates counted below.
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<u32> =
        got.iter().filter(|id| seen.insert(id.as_str())).filter_map(|id| sequence_number(id)).collect();
    if let Some(w) = firsts.windows(2).find(|w| w[0] >= w[1]) {
        panic!("out of order downstream: {} arrived (first) before {}", control_id(w[0]), control_id(w[1]));
    }

    // (c) Duplicates. Delivery is at-least-once, and two sources of them are
    // legitimate:
    // - the engine: a kill while a message is with the receiver, before the
    //   reply is recorded, leaves it `delivering`; after the restart it is
    //   delivered again. At most `pipeline_depth` messages are with the
    //   receiver at a time, so at most that many duplicates per kill.
    // - the sender: a kill after a message was stored but before its ACK
    //   went out makes the sender send it again, and the engine rightly
    //   stores the second copy as a new message (it cannot know it is the
    //   same one) and delivers both. Every such resend may add one more.
    //   Resends are counted per attempt, including attempts that reached
    //   nothing (a connection the dying engine's kernel accepted and then
    //   reset), so this is an upper bound.
    // A negative ACK means nothing was stored, so resends after one add
    // nothing. Anything beyond this is a message delivered twice for no
    // reason.
    let per_kill = pipeline_depth as u64;
    let allowed = kill_times.len() as u64 * per_kill + report.resends_without_reply;
    assert!(
        duplicates as u64 <= allowed,
        "{duplicates} duplicates downstream, but at most {allowed} can be explained ({} kills, {per_kill} each, {} resends)",
        kill_times.len(),
        report.resends_without_reply
    );
    assert!(
        engine_duplicates as u64 <= kill_times.len() as u64 * per_kill,
        "{engine_duplicates} duplicates of messages sent only once, but only {} kills of {per_kill} each",
        kill_times.len()
    );
    drop(engine);
    drop(dir);
}
