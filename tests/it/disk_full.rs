//! A full disk, again and again, under load: received messages are
//! acknowledged only once durable, nothing acknowledged is lost, the
//! status says the disk is full, and once there is space again the engine
//! resumes by itself and delivers everything, each message once and in
//! order.
//!
//! Two ways to fill the disk. The store's fault hook
//! ([`Refuse::DiskFull`]) refuses every commit and every append to the
//! delivery log as a full disk does, with SQLite's transaction already
//! rolled back, and runs everywhere. A real tmpfs, mounted for the test and
//! filled with a file, gives SQLite, its write-ahead log, its checkpoints
//! and the `file_out` folder a real `ENOSPC`; mounting needs root (or
//! `CAP_SYS_ADMIN`), so those tests say so and pass without it, unless
//! `SWITCHBOARD_TEST_REQUIRE_TMPFS=1` makes that a failure.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchboard::engine::{Engine, ItemState, ProductionState};
use switchboard::mllp::MllpClient;
use switchboard::store::{NewInbound, Refuse, Status, Store, StoreOptions};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
/// Fill and free cycles of each load test.
const CYCLES: usize = 3;
/// Connections sending at once.
const SENDERS: usize = 4;
/// Most messages one sender sends in a test: a bound, far above what a
/// test sends.
const MOST_PER_SENDER: usize = 50_000;

// ---------------------------------------------------------------------------
// Productions

fn mllp_in_to(port: u16, target: &str) -> String {
    format!(
        "      - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        port: {port}\n        targets: [{target}]\n"
    )
}

fn production(items: &[String]) -> String {
    format!(
        "productions:\n  {PRODUCTION}:\n    name: Test feed\n    autostart: true\n    stop_timeout: 2s\n    items:\n{}",
        items.concat()
    )
}

/// mllp_in → mllp_out.
fn pipeline(in_port: u16, out_port: u16) -> String {
    let out = format!(
        "      - name: Out\n        kind: mllp_out\n        host: 127.0.0.1\n        port: {out_port}\n        retry_interval: 50ms\n        failure_timeout: 2s\n"
    );
    production(&[mllp_in_to(in_port, "Out"), out])
}

/// mllp_in → file_out writing into `dir`.
fn to_files(in_port: u16, dir: &Path) -> String {
    let out = format!(
        "      - name: Files\n        kind: file_out\n        path: \"{}\"\n        filename: \"{{control_id}}-{{seq}}.hl7\"\n",
        dir.display()
    );
    production(&[mllp_in_to(in_port, "Files"), out])
}

fn last_error(engine: &Engine, item: &str) -> String {
    engine.status().item(PRODUCTION, item).and_then(|i| i.last_error.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Load: senders that keep what was acknowledged

/// What one connection sent.
#[derive(Default)]
struct Sent {
    /// Control ids acknowledged with AA, in the order sent.
    acked: Vec<String>,
    /// Control ids answered with a negative ACK.
    refused: Vec<String>,
}

/// [`SENDERS`] connections sending one message after another (each waits
/// for its ACK, then `pace`) until stopped. A message without an answer (a timeout, a
/// closed connection) is neither acknowledged nor refused: it may or may
/// not have been stored, and the next one goes out on a new connection.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    senders: tokio::task::JoinSet<Sent>,
}

impl Load {
    fn start(port: u16, prefix: &str, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut senders = tokio::task::JoinSet::new();
        for c in 0..SENDERS {
            let (stop, acked, prefix) = (stop.clone(), acked.clone(), prefix.to_owned());
            senders.spawn(async move {
                let mut sent = Sent::default();
                let mut client: Option<MllpClient> = None;
                for n in 0..MOST_PER_SENDER {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(pace).await;
                    let id = format!("{prefix}{c}-{n}");
                    if client.is_none() {
                        client = MllpClient::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).await.ok();
                    }
                    let answer = match client.as_mut() {
                        Some(conn) => conn.exchange(&hl7("ADT^A01", &id), Duration::from_secs(3)).await.ok(),
                        None => None,
                    };
                    match answer.map(|bytes| reply(&bytes).acknowledgment_code().map(str::to_owned)) {
                        Some(Some(code)) if code == "AA" => {
                            sent.acked.push(id);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => sent.refused.push(id),
                        None => {
                            client = None;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                sent
            });
        }
        Self { stop, acked, senders }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` messages beyond those acknowledged now are.
    async fn wait_more(&self, more: usize) -> bool {
        let target = self.acked() + more;
        eventually(WAIT, || self.acked() >= target).await
    }

    async fn finish(mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(sent) = self.senders.join_next().await {
            all.push(sent.expect("a sender panicked"));
        }
        all
    }
}

/// Checks what arrived downstream (control ids in arrival order) against
/// what was sent: every acknowledged message once, in the order each
/// connection sent them, and no refused one.
fn check_delivered(sent: &[Sent], arrived: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (at, id) in arrived.iter().enumerate() {
        if let Some(first) = seen.insert(id, at) {
            panic!("{id} arrived twice (at {first} and {at}); repeats are allowed only after a crash");
        }
    }
    for connection in sent {
        let mut last = None;
        for id in &connection.acked {
            let at = *seen.get(id.as_str()).unwrap_or_else(|| panic!("{id} was acknowledged and never delivered"));
            assert!(last < Some(at), "{id} arrived before a message its connection sent first");
            last = Some(at);
        }
        for id in &connection.refused {
            assert!(!seen.contains_key(id.as_str()), "{id} got a negative ACK and was delivered");
        }
    }
}

fn acked_ids(sent: &[Sent]) -> HashSet<String> {
    sent.iter().flat_map(|s| s.acked.iter().cloned()).collect()
}

// ---------------------------------------------------------------------------
// The store alone, with the fault hook

fn inbound(control_id: &str) -> NewInbound {
    NewInbound {
        production: PRODUCTION.into(),
        service: "In".into(),
        origin: "127.0.0.1".into(),
        targets: ["Out".to_owned()].into(),
        control_id: Some(control_id.into()),
        message_type: Some("ADT^A01".into()),
        body: hl7("ADT^A01", control_id).into(),
        patient_id: None,
        patient_name: None,
        routed: Vec::new(),
    }
}

/// A commit refused by a full disk (SQLite has rolled the transaction
/// back already) is reported as a full disk, not as the failed rollback
/// after it, and a write that waits for its commit fails; received
/// messages wait in the inbound log and are committed, in order and once,
/// when there is space again. Three times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reports_each_full_disk_and_commits_what_waited_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    let mut trouble = store.commit_trouble();
    let mut queued = 0;
    for cycle in 0..CYCLES {
        store.fault_hook().refuse(Refuse::DiskFull);
        let mut pending = Vec::new();
        for n in 0..5 {
            // Durable in the inbound log: the sender may be acknowledged.
            pending.push(store.receive_inbound(inbound(&format!("C{cycle}-{n}"))).await.unwrap());
        }
        let error = store.mark_delivering(vec![1]).await.expect_err("a commit on a full disk");
        assert!(error.to_string().contains("disk is full"), "{error}");
        let cause = tokio::time::timeout(WAIT, trouble.wait_for(Option::is_some)).await.unwrap().unwrap().clone();
        let cause = cause.unwrap_or_default();
        assert!(cause.contains("disk is full") && !cause.contains("rollback"), "{cause}");
        // Tried again every second meanwhile, and refused again.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(pending.iter_mut().all(|p| p.try_take().is_none()), "committed on a full disk");
        assert_eq!(store.queue_depth(PRODUCTION, "Out"), queued);
        store.fault_hook().clear();
        for p in pending {
            tokio::time::timeout(WAIT, p.wait()).await.expect("committed once there is space").unwrap();
        }
        queued += 5;
        assert_eq!(store.queue_depth(PRODUCTION, "Out"), queued);
        tokio::time::timeout(WAIT, trouble.wait_for(Option::is_none)).await.unwrap().unwrap();
    }
    let ids: Vec<String> = store
        .fetch_queue(PRODUCTION, "Out", 100)
        .unwrap()
        .into_iter()
        .map(|q| q.control_id.unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..CYCLES).flat_map(|c| (0..5).map(move |n| format!("C{c}-{n}"))).collect();
    assert_eq!(ids, expected, "each message once, in the order received");
    store.close().await;
}

// ---------------------------------------------------------------------------
// The engine under load, with the fault hook

/// Fills the disk and frees it again [`CYCLES`] times while `load` sends,
/// once `traffic` more messages were acknowledged each time: the service
/// names the full disk while it lasts (and not a failed rollback), and
/// once it is freed the production runs again and everything acknowledged
/// is delivered without a restart. Returns what was sent, after the load
/// stopped and the queue drained.
async fn full_disk_cycles(
    engine: &Engine,
    receiver: &Receiver,
    load: Load,
    traffic: usize,
    fill: impl Fn(),
    free: impl Fn(),
) -> Vec<Sent> {
    for cycle in 0..CYCLES {
        assert!(load.wait_more(traffic).await, "cycle {cycle}: no traffic before the disk fills");
        fill();
        let troubled = engine
            .wait_for(WAIT, |s| {
                production_state(s) == ProductionState::Troubled && item_state(s, "In") == ItemState::Error
            })
            .await;
        assert!(troubled, "cycle {cycle}: {:?}", engine.status());
        let error = last_error(engine, "In");
        assert!(error.contains("disk is full") && !error.contains("rollback"), "cycle {cycle}: {error}");
        // Full for a few retries of what the store holds.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        free();
        let freed = Instant::now();
        let acked = load.acked();
        let running = engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await;
        assert!(running, "cycle {cycle}: {:?}", engine.status());
        // Everything acknowledged until the disk was freed is delivered
        // without a restart.
        assert!(receiver.wait_len(acked, WAIT).await, "cycle {cycle}: {} of {acked} delivered", receiver.len());
        eprintln!("cycle {cycle}: {acked} acknowledged, delivered {:?} after the disk was freed", freed.elapsed());
    }
    let sent = load.finish().await;
    let acked = acked_ids(&sent);
    assert!(
        eventually(WAIT, || receiver.ids().iter().filter(|id| acked.contains(*id)).count() == acked.len()).await,
        "{} of {} acknowledged messages delivered",
        receiver.len(),
        acked.len()
    );
    assert!(engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == 0).await);
    sent
}

/// The disk fills up and is freed again, [`CYCLES`] times, while four
/// connections send without pause and the operation delivers: the
/// service names the full disk while it lasts, the operation waits with its
/// results instead of stopping, and after each cycle everything
/// acknowledged is delivered without a restart, each message once, in the
/// order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_full_disks_under_load_lose_nothing_and_the_engine_resumes_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(dir.path(), &pipeline(in_port, receiver.port)).await;
    let load = Load::start(in_port, "L", Duration::ZERO);
    let hook = engine.store().fault_hook();
    let sent = full_disk_cycles(&engine, &receiver, load, 50, || hook.refuse(Refuse::DiskFull), || hook.clear()).await;
    check_delivered(&sent, &receiver.ids());
    assert_eq!(item_state(&engine.status(), "Out"), ItemState::Running);
    let done = engine.store().count_by_status(PRODUCTION, "Out", Status::Completed).unwrap();
    assert_eq!(done as usize, receiver.len(), "every delivered message is recorded as completed");
    engine.shutdown().await;
}

/// A full disk is shown where someone would look: the overview and the
/// store page of the web UI, the store API, the metrics and Home
/// Assistant's store problem sensor; and all of it clears once the disk
/// has room again and what waited is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_shown_in_the_web_ui_metrics_and_home_assistant_until_it_clears() {
    use switchboard::ha::discovery::StateValue;
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let engine = start_engine(dir.path(), &to_files(in_port, &dir.path().join("out"))).await;
    let web = switchboard::web::start(engine.clone(), crate::web::open_options()).await.unwrap();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let get = |path: &str| {
        let request = http.get(format!("http://{}{path}", web.local_addr()));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let sensor = |status: &switchboard::engine::EngineStatus, value: StateValue| {
        switchboard::ha::states::payload(&value, status, 0).unwrap()
    };
    assert!(!get("/").await.contains("role=\"alert\""), "a sound store shows no alert");
    assert!(get("/metrics").await.contains("switchboard_store_commits_failing 0"));
    assert_eq!(sensor(&engine.status(), StateValue::EngineStoreProblem), "OFF");

    engine.store().fault_hook().refuse(Refuse::DiskFull);
    let ack = reply(&send(in_port, &hl7("ADT^A01", "W1")).await);
    assert_eq!(ack.acknowledgment_code(), Some("AA"), "durable in the inbound log");
    let shown = engine.wait_for(WAIT, |s| s.store.commit_trouble.is_some()).await;
    assert!(shown, "{:?}", engine.status());
    let store: serde_json::Value = serde_json::from_str(&get("/api/v1/store").await).unwrap();
    let trouble = store["health"]["commit_trouble"].as_str().unwrap_or_default().to_owned();
    assert!(trouble.contains("disk is full"), "{store}");
    for page in ["/", "/store"] {
        let html = get(page).await;
        assert!(html.contains("role=\"alert\"") && html.contains("The store cannot commit"), "{page}: {html}");
    }
    assert!(get("/metrics").await.contains("switchboard_store_commits_failing 1"));
    let status = engine.status();
    assert_eq!(sensor(&status, StateValue::EngineStoreProblem), "ON");
    let attributes: serde_json::Value =
        serde_json::from_str(&sensor(&status, StateValue::EngineStoreAttributes)).unwrap();
    assert_eq!(attributes["commit_trouble"].as_str(), Some(trouble.as_str()));

    engine.store().fault_hook().clear();
    let cleared = engine.wait_for(WAIT, |s| !s.store.has_problem()).await;
    assert!(cleared, "{:?}", engine.status());
    assert!(!get("/").await.contains("role=\"alert\""));
    assert!(get("/metrics").await.contains("switchboard_store_commits_failing 0"));
    assert!(eventually(WAIT, || std::fs::read_dir(dir.path().join("out")).is_ok_and(|d| d.count() == 1)).await);
    web.shutdown().await;
    engine.shutdown().await;
}

/// An operation that cannot note a result (the delivery log cannot grow)
/// says why, tries again, and delivers the rest once it can, with no
/// message delivered twice; before, it stopped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_cannot_record_a_result_waits_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(dir.path(), &pipeline(in_port, receiver.port)).await;
    // Time to fill the disk between a message's arrival and its reply.
    receiver.set_delay(Duration::from_millis(500));
    engine.store().fault_hook().refuse(Refuse::DiskFull);
    for id in ["R1", "R2", "R3"] {
        let ack = reply(&send(in_port, &hl7("ADT^A01", id)).await);
        assert_eq!(ack.acknowledgment_code(), Some("AA"), "durable in the inbound log");
    }
    // Nothing is committed, so nothing is queued yet: let the first
    // message through, then fill the disk again before its result.
    engine.store().fault_hook().clear();
    assert!(receiver.wait_len(1, WAIT).await);
    engine.store().fault_hook().refuse(Refuse::DiskFull);
    let waiting = engine.wait_for(WAIT, |s| item_state(s, "Out") == ItemState::Error).await;
    assert!(waiting, "{:?}", engine.status());
    let error = last_error(&engine, "Out");
    assert!(error.contains("cannot record the delivery result") && error.contains("No space left"), "{error}");
    let delivered = receiver.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(receiver.len(), delivered, "a message went out before the last one's result was safe");
    engine.store().fault_hook().clear();
    assert!(receiver.wait_len(3, WAIT).await, "{:?}", receiver.ids());
    for id in ["R1", "R2", "R3"] {
        wait_status(engine.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert!(engine.wait_for(WAIT, |s| item_state(s, "Out") == ItemState::Running).await);
    assert_eq!(receiver.ids(), ["R1", "R2", "R3"]);
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// A real small file system

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path`, or says why it cannot and
    /// returns `None` (the caller skips its test), unless
    /// `SWITCHBOARD_TEST_REQUIRE_TMPFS=1`.
    fn mount(path: &Path, mib: u32) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(out) if out.status.success() => Some(Self { path: path.to_owned() }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("SWITCHBOARD_TEST_REQUIRE_TMPFS").as_deref() != Ok("1"),
                    "cannot mount a tmpfs ({why}) and SWITCHBOARD_TEST_REQUIRE_TMPFS=1"
                );
                eprintln!("skipped: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {why}");
                None
            }
        }
    }

    /// Fills what is left of it with a file, until the file system says
    /// there is no space.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0xA5u8; 64 * 1024];
        // Bounded by the size of the file system (at most 1 GiB).
        for _ in 0..16 * 1024 {
            if filler.write_all(&block).is_err() {
                break;
            }
        }
        // Whatever part of a block is left.
        for _ in 0..64 {
            if filler.write_all(&block[..1024]).is_err() {
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file still open (a test that failed with the engine
        // running) does not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The store's folder on a tmpfs that fills up and is freed [`CYCLES`]
/// times under load. SQLite's writes fail with `SQLITE_FULL` (the
/// transaction rolled back by SQLite itself), its checkpoints cannot copy
/// the write-ahead log into a database that cannot grow, the delivery log
/// cannot grow; the inbound log, whose files never grow, keeps taking
/// messages until its bound on what waits for a commit, and then the
/// acknowledgments wait. After each cycle everything acknowledged is
/// delivered without a restart, and after the last, a restart on the same
/// files finds every message completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_file_system_that_fills_up_resumes_after_each_cycle() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the inbound log (16 MiB), a write-ahead log of up to 16 MiB
    // and the messages of a paced load: the filler, not the messages,
    // fills it.
    let Some(fs) = Tmpfs::mount(&dir.path().join("data"), 64) else { return };
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let yaml = pipeline(in_port, receiver.port);
    let engine = start_engine(&fs.path, &yaml).await;
    let load = Load::start(in_port, "T", Duration::from_millis(20));
    let sent = full_disk_cycles(&engine, &receiver, load, 200, || fs.fill(), || fs.free()).await;
    check_delivered(&sent, &receiver.ids());
    engine.shutdown().await;
    drop(engine);
    // What the checkpoints could not copy is read back from the log.
    let (store, _) = Store::open(&fs.path.join("store.db"), StoreOptions::default()).unwrap();
    let done = store.count_by_status(PRODUCTION, "Out", Status::Completed).unwrap();
    assert_eq!(done as usize, receiver.len(), "every delivered message is recorded as completed");
    assert_eq!(store.queue_depth(PRODUCTION, "Out"), 0);
    store.close().await;
}

/// The folder a `file_out` writes to fills up: the item names the full
/// disk, leaves no half-written file behind, tries again, and once there is
/// space writes every message, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_out_whose_folder_fills_up_says_so_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("out"), 1) else { return };
    let files = fs.path.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let in_port = free_port();
    let engine = start_engine(dir.path(), &to_files(in_port, &files)).await;
    fs.fill();
    let ids: Vec<String> = (1..=5).map(|n| format!("F{n}")).collect();
    for id in &ids {
        let ack = reply(&send(in_port, &hl7("ADT^A01", id)).await);
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    let troubled = engine.wait_for(WAIT, |s| item_state(s, "Files") == ItemState::Error).await;
    assert!(troubled, "{:?}", engine.status());
    let error = last_error(&engine, "Files");
    assert!(error.contains("No space left on device"), "{error}");
    // A few tries (one every five seconds) while full.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let names = || -> Vec<String> {
        std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names(), Vec::<String>::new(), "written on a full disk, or a temporary file left behind");
    fs.free();
    for id in &ids {
        wait_status(engine.store(), "Files", id, Status::Completed, WAIT).await;
    }
    assert!(engine.wait_for(WAIT, |s| item_state(s, "Files") == ItemState::Running).await);
    let mut written: Vec<String> = names();
    written.sort();
    assert_eq!(written.len(), ids.len(), "{written:?}");
    for (name, id) in written.iter().zip(&ids) {
        assert!(name.starts_with(&format!("{id}-")) && name.ends_with(".hl7"), "{written:?}");
    }
    engine.shutdown().await;
}
