//! The store's backup copy: taken by `switchboard backup` while the real
//! binary takes MLLP traffic on several connections and delivers it,
//! restored into an empty folder, checked, and run on; what only the
//! store's logs hold is in it; and the rules for a
//! copy beside a store (removed after the backup, removed when the store
//! is newer, the store when it is alone, a second name after a stop).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::backup::{self, Copied, Restored};
use switchboard::engine::Engine;
use switchboard::hl7::{Message, Reply};
use switchboard::mllp::MllpClient;
use switchboard::store::{MessageSummary, Refuse, Status, Store, StoreOptions};
use tokio::time::Instant;

use crate::common::{self, PRODUCTION, Receiver, all_headers, free_port, hl7};
use crate::mqtt_support::{KillOnDrop, spawn_switchboard};

/// mllp_in → mllp_out to `out_port`, production `p`.
fn pipeline(in_port: u16, out_port: u16) -> String {
    format!(
        "productions:
  {PRODUCTION}:
    stop_timeout: 2s
    items:
      - name: In
        kind: mllp_in
        host: 127.0.0.1
        port: {in_port}
        targets: [Out]
      - name: Out
        kind: mllp_out
        host: 127.0.0.1
        port: {out_port}
        failure_timeout: forever
"
    )
}

/// Control ids acknowledged, with when each acknowledgment arrived.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

/// Sends on one connection until `stop`, a count or a deadline; records
/// every positive acknowledgment.
async fn sender(port: u16, n: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut client =
        MllpClient::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await.expect("connect a sender");
    let deadline = Instant::now() + Duration::from_secs(180);
    for i in 0..100_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let id = format!("L{n}-{i}");
        let reply = client.exchange(&hl7("ADT^A01", &id), Duration::from_secs(30)).await.expect("an ACK");
        let reply = Reply::read(&Message::parse(&reply).expect("the ACK parses"));
        assert_eq!(reply.msa.map(|m| m.0).as_deref(), Some("AA"), "{id} not accepted");
        acked.lock().unwrap().push((id, Instant::now()));
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    assert!(common::eventually(timeout, &mut check).await, "timed out waiting for {what}");
}

/// SIGTERM, as the Supervisor stops the add-on; waits for a clean exit.
async fn stop_engine(engine: &mut KillOnDrop) {
    let mut child = engine.0.take().expect("a running engine");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Every control id in the store.
fn control_ids(store: &Store) -> HashSet<String> {
    all_headers(store).into_iter().filter_map(|h| h.control_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_taken_under_load_restores_every_message_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let config = dir.path().join("productions.yaml");
    std::fs::write(&config, pipeline(in_port, receiver.port)).unwrap();
    let mut engine = KillOnDrop(Some(spawn_switchboard(&config, &data, &[], &[])));
    let deadline = Instant::now() + Duration::from_secs(60);
    while MllpClient::connect(&format!("127.0.0.1:{in_port}"), Duration::from_secs(1)).await.is_err() {
        assert!(Instant::now() < deadline, "the listener did not open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4).map(|n| tokio::spawn(sender(in_port, n, acked.clone(), stop.clone()))).collect();
    wait_for("traffic", Duration::from_secs(60), || acked.lock().unwrap().len() >= 1000).await;

    // The copy, as backup_pre runs it: another process, while the
    // senders go on.
    let started = Instant::now();
    let data_arg = data.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("backup").arg("--data-dir").arg(&data_arg).output()
    })
    .await
    .unwrap()
    .expect("run switchboard backup");
    let ended = Instant::now();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("wrote ") && stdout.contains("switchboard-backup.db"), "{stdout}");
    wait_for("traffic after the copy", Duration::from_secs(60), || {
        acked.lock().unwrap().iter().filter(|(_, at)| *at > ended).count() >= 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("a sender failed");
    }
    let acked = acked.lock().unwrap().clone();
    let before: Vec<&String> = acked.iter().filter(|(_, at)| *at < started).map(|(id, _)| id).collect();
    let during = acked.iter().filter(|(_, at)| *at >= started && *at <= ended).count();
    eprintln!(
        "backup: {} ms; {} messages acknowledged before it, {during} while it ran, {} after",
        (ended - started).as_millis(),
        before.len(),
        acked.len() - before.len() - during
    );

    stop_engine(&mut engine).await;

    // Restored as the Supervisor restores a backup: the copy alone in an
    // empty data folder.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(data.join(backup::COPY_FILE), restored.join(backup::COPY_FILE)).unwrap();
    {
        let conn = rusqlite::Connection::open(restored.join(backup::COPY_FILE)).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "the copy needs no write-ahead log beside it");
    }
    // `switchboard run` makes the copy the store, and runs on it.
    let config = dir.path().join("restored.yaml");
    std::fs::write(&config, pipeline(free_port(), receiver.port)).unwrap();
    let mut engine = KillOnDrop(Some(spawn_switchboard(&config, &restored, &[], &[])));
    wait_for("the copy to become the store", Duration::from_secs(60), || {
        restored.join("switchboard.db-inbound-0").exists() && !restored.join(backup::COPY_FILE).exists()
    })
    .await;
    stop_engine(&mut engine).await;
    let (store, _) = Store::open(&restored.join(backup::STORE_FILE), StoreOptions::default()).expect("open the copy");
    let ids = control_ids(&store);
    let missing: Vec<&&String> = before.iter().filter(|id| !ids.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing from the copy, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    store.close().await;
}

/// An engine on `dir/switchboard.db`, as `switchboard run` names it.
async fn engine_in(dir: &Path, yaml: &str) -> Engine {
    let config = switchboard::config::parse(&dir.join("productions.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let (store, _) = Store::open(&dir.join(backup::STORE_FILE), StoreOptions::default()).expect("open the store");
    let engine = Engine::new(config, store).unwrap_or_else(|e| panic!("{e}"));
    engine.start().await;
    engine
}

/// The headers of the store a copy restores to, restored into a folder of
/// its own under `dir`.
async fn restore(copy: &Path, dir: &Path, name: &str) -> Vec<MessageSummary> {
    let folder = dir.join(name);
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(copy, folder.join(backup::COPY_FILE)).unwrap();
    assert_eq!(backup::restore_from_copy(&folder).unwrap(), Restored::FromCopy);
    let (store, _) = Store::open(&folder.join(backup::STORE_FILE), StoreOptions::default()).expect("open the copy");
    let headers = all_headers(&store);
    store.close().await;
    headers
}

fn status_of(headers: &[MessageSummary], target: &str, control_id: &str) -> Option<Status> {
    headers.iter().find(|h| h.target == target && h.control_id.as_deref() == Some(control_id)).map(|h| h.status)
}

/// What the store holds only in its logs when the copy is taken is in the
/// copy: delivery results the database has not committed (a full disk,
/// here refused by the store's fault hook), and received messages
/// acknowledged and not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_holds_what_only_the_logs_hold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = engine_in(&data, &pipeline(in_port, receiver.port)).await;
    let faults = engine.store().fault_hook().clone();

    faults.refuse(Refuse::Results);
    for i in 0..5 {
        crate::mqtt_support::send_ok(in_port, &format!("R{i}")).await;
    }
    assert!(receiver.wait_len(5, Duration::from_secs(20)).await, "not delivered");
    let Copied::Written { path, .. } = backup::copy(&data).await.unwrap() else { panic!("no copy") };
    let headers = restore(&path, dir.path(), "results").await;
    for i in 0..5 {
        assert_eq!(status_of(&headers, "Out", &format!("R{i}")), Some(Status::Completed), "R{i}");
    }

    faults.refuse(Refuse::Message { control_id: "HELD".into() });
    for id in ["HELD", "H1", "H2"] {
        crate::mqtt_support::send_ok(in_port, id).await;
    }
    let Copied::Written { path, .. } = backup::copy(&data).await.unwrap() else { panic!("no copy") };
    let headers = restore(&path, dir.path(), "held").await;
    for id in ["HELD", "H1", "H2"] {
        assert!(status_of(&headers, "Out", id).is_some(), "{id} is not in the copy");
    }
    faults.clear();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_beside_the_store_is_removed_or_becomes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert_eq!(backup::copy(data).await.unwrap(), Copied::NoStore);
    assert_eq!(backup::restore_from_copy(data).unwrap(), Restored::Nothing);

    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = engine_in(data, &pipeline(in_port, receiver.port)).await;
    for i in 0..20 {
        crate::mqtt_support::send_ok(in_port, &format!("S{i}")).await;
    }
    // Taken from an engine that runs, in this process.
    let Copied::Written { path, bytes, .. } = backup::copy(data).await.unwrap() else { panic!("no copy") };
    assert_eq!(path, data.join(backup::COPY_FILE));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
    assert!(!data.join("switchboard.db-backup").exists(), "the work folder is left behind");
    engine.shutdown().await;

    // backup_post: removed while the store is there.
    assert!(backup::remove_copy(data).unwrap());
    assert!(!path.exists());
    assert!(!backup::remove_copy(data).unwrap());

    // A copy older than the store: the store wins at start.
    assert!(matches!(backup::copy(data).await.unwrap(), Copied::Written { .. }));
    assert_eq!(backup::restore_from_copy(data).unwrap(), Restored::CopyRemoved);
    assert!(!path.exists() && data.join(backup::STORE_FILE).exists());

    // After a stop: the store's file under both names, its log folded in.
    backup::keep_copy_at_rest(data).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let (a, b) = (std::fs::metadata(&path).unwrap(), std::fs::metadata(data.join(backup::STORE_FILE)).unwrap());
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "not a second name of the store's file");
    assert_eq!(std::fs::metadata(data.join("switchboard.db-wal")).map(|m| m.len()).unwrap_or(0), 0);

    // The copy alone, as a backup taken then restores it; the logs of an
    // older store beside it are not replayed into it.
    let only = dir.path().join("only");
    std::fs::create_dir(&only).unwrap();
    std::fs::copy(&path, only.join(backup::COPY_FILE)).unwrap();
    std::fs::write(only.join("switchboard.db-inbound-0"), b"an older store's log").unwrap();
    assert_eq!(backup::copy(&only).await.unwrap(), Copied::OnlyTheCopy(only.join(backup::COPY_FILE)));
    assert!(!backup::remove_copy(&only).unwrap(), "the only copy of a store was removed");
    assert_eq!(backup::restore_from_copy(&only).unwrap(), Restored::FromCopy);
    assert!(!only.join("switchboard.db-inbound-0").exists());
    let (store, _) = Store::open(&only.join(backup::STORE_FILE), StoreOptions::default()).unwrap();
    let ids = control_ids(&store);
    assert!((0..20).all(|i| ids.contains(&format!("S{i}"))), "{ids:?}");
    store.close().await;
}
