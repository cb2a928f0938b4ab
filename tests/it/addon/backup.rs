//! The store's backup copy: what only the store's logs hold is in it, and
//! the rules for a copy beside a store (removed after the backup, removed
//! when the store is newer, the store when it is alone, a second name after
//! a stop).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use switchboard::backup::{self, Copied, Restored};
use switchboard::engine::Engine;
use switchboard::store::{Header, Refuse, Status, Store, StoreOptions};

use crate::common::{PRODUCTION, Receiver, all_headers, free_port};

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

/// Every control id in the store.
fn control_ids(store: &Store) -> HashSet<String> {
    all_headers(store).into_iter().filter_map(|h| h.control_id).collect()
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
async fn restore(copy: &Path, dir: &Path, name: &str) -> Vec<Header> {
    let folder = dir.join(name);
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(copy, folder.join(backup::COPY_FILE)).unwrap();
    assert_eq!(backup::restore_from_copy(&folder).unwrap(), Restored::FromCopy);
    let (store, _) = Store::open(&folder.join(backup::STORE_FILE), StoreOptions::default()).expect("open the copy");
    let headers = all_headers(&store);
    store.close().await;
    headers
}

fn status_of(headers: &[Header], target: &str, control_id: &str) -> Option<Status> {
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
