//! Damaged files of a real store, closed after real traffic: an inbound log
//! record with a bit flipped or cut short, a delivery log with a torn last
//! record or a damaged one in the middle, a database SQLite finds damaged.
//! The store must say what it found, keep every record it can still read
//! (those after the damage included), set a damaged log file aside under a
//! name it logs, refuse a damaged database with the way back, and never
//! panic.
//!
//! The records left uncommitted are made with the store's fault hook:
//! commits refused as a full disk refuses them, so the messages (or the
//! delivery results) exist only in the logs when the store closes, as
//! after a crash.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::store::{Refuse, Status, Store, StoreError, StoreOptions};

use crate::store::{completed, inbound};

/// Magic byte and head length of an inbound log record (see
/// `src/store/inbound_log.rs`): magic, sequence number (u64), payload
/// length (u32); a CRC-32 follows the payload.
const INBOUND_MAGIC: u8 = 0xA7;
const INBOUND_HEAD: usize = 13;

/// What the store logs while `f` runs on this thread, as text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (out, text)
}

fn open_logged(path: &Path) -> (Result<Store, StoreError>, String) {
    logged(|| Store::open(path, StoreOptions::default()).map(|(store, _)| store))
}

fn queued_ids(store: &Store) -> Vec<String> {
    store.fetch_queue("adt", "Out", 100).unwrap().into_iter().filter_map(|q| q.control_id).collect()
}

fn ids(range: impl IntoIterator<Item = usize>) -> Vec<String> {
    range.into_iter().map(|n| format!("M{n}")).collect()
}

/// Copies set aside next to `file`.
fn set_aside(file: &Path) -> Vec<PathBuf> {
    let name = format!("{}.damaged-", file.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
        .collect()
}

/// A store that received M1 to M10 (numbers 1 to 10 in its inbound log)
/// and committed only M1 and M2: M3 is refused, and everything after it
/// waits behind it, acknowledged and only in the log, when the store
/// closes. Returns the database's path and where each record starts in
/// the log's first file.
async fn store_with_uncommitted_messages(dir: &Path) -> (PathBuf, Vec<u64>) {
    let path = dir.join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    for n in 1..=2 {
        store.commit_inbound(inbound(n, &["Out"])).await.unwrap();
    }
    store.fault_hook().refuse(Refuse::Message { control_id: "M3".into() });
    for n in 3..=10 {
        // Durable in the log once this returns: what an ACK stands for.
        drop(store.receive_inbound(inbound(n, &["Out"])).await.unwrap());
    }
    store.close().await;
    drop(store);
    let bytes = std::fs::read(inbound_file(&path)).unwrap();
    let mut starts = Vec::new();
    let mut at = 0;
    while bytes[at] == INBOUND_MAGIC {
        starts.push(at as u64);
        let len = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        at += INBOUND_HEAD + len + 4;
    }
    assert_eq!(starts.len(), 10, "M1 to M10 in the first file of the log");
    (path, starts)
}

fn inbound_file(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-inbound-0", db.display()))
}

fn flip_bit(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test]
async fn a_bit_flipped_inbound_record_costs_that_message_only_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (path, starts) = store_with_uncommitted_messages(dir.path()).await;
    let log = inbound_file(&path);
    // In the body of M6, the fourth of the uncommitted messages.
    let damaged_at = starts[5];
    flip_bit(&log, damaged_at + INBOUND_HEAD as u64 + 40);
    let found = std::fs::read(&log).unwrap();

    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens");
    // Every record that still reads is committed, those after the damage
    // included, in order.
    assert_eq!(queued_ids(&store), ids([1, 2, 3, 4, 5, 7, 8, 9, 10]), "{text}");
    let record = starts[6] - starts[5];
    for said in [
        format!("{} bytes at offset {damaged_at} do not read as records", record),
        "the records after them, from number 7, are read and kept".to_owned(),
        "1 messages of the inbound log (numbers 6) were acknowledged but not committed".to_owned(),
        "the damaged file is copied to".to_owned(),
    ] {
        assert!(text.contains(&said), "the log does not say {said:?}:\n{text}");
    }
    assert!(text.contains(&log.display().to_string()), "the file is not named:\n{text}");
    let aside = set_aside(&log);
    assert_eq!(aside.len(), 1, "one copy set aside: {aside:?}");
    assert!(text.contains(&aside[0].display().to_string()), "the copy is not named:\n{text}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), found, "the copy is the file as it was found");
    store.close().await;

    // Opened again, nothing more is said or applied twice.
    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens again");
    assert_eq!(queued_ids(&store), ids([1, 2, 3, 4, 5, 7, 8, 9, 10]));
    assert!(!text.contains("damaged"), "a second open reports damage again:\n{text}");
    store.close().await;
}

#[tokio::test]
async fn a_flipped_head_of_an_inbound_record_is_read_past() {
    let dir = tempfile::tempdir().unwrap();
    let (path, starts) = store_with_uncommitted_messages(dir.path()).await;
    let log = inbound_file(&path);
    // The magic byte of M4: the record's start cannot be told any more.
    flip_bit(&log, starts[3]);
    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens");
    assert_eq!(queued_ids(&store), ids([1, 2, 3, 5, 6, 7, 8, 9, 10]), "{text}");
    assert!(text.contains(&format!("at offset {} do not read as records", starts[3])), "{text}");
    assert!(text.contains("(numbers 4)"), "{text}");
    store.close().await;
}

#[tokio::test]
async fn a_truncated_inbound_log_keeps_the_records_before_the_cut_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let (path, starts) = store_with_uncommitted_messages(dir.path()).await;
    let log = inbound_file(&path);
    // Cut in the middle of M7.
    let cut = starts[6] + 20;
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(cut).unwrap();
    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens");
    assert_eq!(queued_ids(&store), ids(1..=6), "{text}");
    let said = format!(
        "the last record of the inbound log, number 7 at offset {}, is incomplete or damaged; the file is {cut} bytes, shorter than",
        starts[6]
    );
    assert!(text.contains(&said), "the log does not say {said:?}:\n{text}");
    store.close().await;
}

/// A store whose delivery log holds results for M1 to M6 that were never
/// committed (results refused as a full disk refuses them). Returns the
/// database's path, the headers in queue order and where each record of
/// the delivery log starts.
async fn store_with_uncommitted_results(dir: &Path) -> (PathBuf, Vec<i64>, Vec<u64>) {
    let path = dir.join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    for n in 1..=8 {
        store.commit_inbound(inbound(n, &["Out"])).await.unwrap();
    }
    let headers: Vec<i64> = store.fetch_queue("adt", "Out", 100).unwrap().iter().map(|q| q.id).collect();
    store.mark_delivering(headers[..6].to_vec()).await.unwrap();
    store.fault_hook().refuse(Refuse::Results);
    let log = deliveries_file(&path);
    let mut starts = Vec::new();
    for &id in &headers[..6] {
        starts.push(std::fs::metadata(&log).unwrap().len());
        store.note_finished(completed(id)).await.unwrap();
    }
    store.close().await;
    drop(store);
    assert_eq!(std::fs::metadata(&log).unwrap().len() / starts[1], 6, "six records of one size");
    (path, headers, starts)
}

fn deliveries_file(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-deliveries", db.display()))
}

#[tokio::test]
async fn a_torn_last_delivery_record_is_reported_and_its_message_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let (path, headers, starts) = store_with_uncommitted_results(dir.path()).await;
    let log = deliveries_file(&path);
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len - 3).unwrap();
    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens");
    for (n, &id) in headers.iter().enumerate() {
        let status = store.header(id).unwrap().unwrap().status;
        let expected = if n < 5 { Status::Completed } else { Status::Queued };
        assert_eq!(status, expected, "M{}:\n{text}", n + 1);
    }
    assert_eq!(queued_ids(&store), ids(6..=8));
    let said = format!(
        "the last record of the delivery log ({} bytes at offset {}) is incomplete",
        len - 3 - starts[5],
        starts[5]
    );
    assert!(text.contains(&said), "the log does not say {said:?}:\n{text}");
    assert!(text.contains("the 5 results before it are applied"), "{text}");
    assert!(set_aside(&log).is_empty(), "a torn tail is what a crash leaves, not damage to keep");
    store.close().await;
}

#[tokio::test]
async fn a_damaged_delivery_record_does_not_hide_the_results_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, headers, starts) = store_with_uncommitted_results(dir.path()).await;
    let log = deliveries_file(&path);
    // M3's header id.
    flip_bit(&log, starts[2] + 8);
    let (store, text) = open_logged(&path);
    let store = store.expect("the store opens");
    for (n, &id) in headers.iter().enumerate() {
        let status = store.header(id).unwrap().unwrap().status;
        let expected = if n < 6 && n != 2 { Status::Completed } else { Status::Queued };
        assert_eq!(status, expected, "M{}:\n{text}", n + 1);
    }
    let said = format!(
        "the delivery log is damaged: {} bytes at offset {} do not read as records; the 3 results after them are read and applied",
        starts[3] - starts[2],
        starts[2]
    );
    assert!(text.contains(&said), "the log does not say {said:?}:\n{text}");
    let aside = set_aside(&log);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(text.contains(&aside[0].display().to_string()), "the copy is not named:\n{text}");
    assert_eq!(std::fs::metadata(&aside[0]).unwrap().len(), starts[1] * 6, "the copy is the file as found");
    store.close().await;
}

/// A store with traffic, closed; returns its path.
async fn closed_store(dir: &Path) -> PathBuf {
    let path = dir.join("switchboard.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    for n in 0..200 {
        store.commit_inbound(inbound(n, &["Out"])).await.unwrap();
    }
    store.close().await;
    drop(store);
    // Everything folded into the database file itself.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(conn);
    path
}

/// Overwrites page `page` (from 1) of a database with garbage.
fn scribble_page(path: &Path, page: u64) {
    let page_size = {
        let bytes = std::fs::read(path).unwrap();
        u64::from(u16::from_be_bytes([bytes[16], bytes[17]]))
    };
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start((page - 1) * page_size)).unwrap();
    file.write_all(&vec![0x5A; page_size as usize]).unwrap();
}

fn root_page(path: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT rootpage FROM sqlite_schema WHERE name = ?1", [table], |r| r.get::<_, i64>(0)).unwrap()
        as u64
}

#[tokio::test]
async fn a_damaged_database_is_refused_with_what_was_found_and_the_way_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_store(dir.path()).await;
    // Page 1 past the file's header: the schema, read by every open.
    let mut bytes = std::fs::read(&path).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    bytes[100..page_size].fill(0x5A);
    std::fs::write(&path, &bytes).unwrap();
    let (result, text) = open_logged(&path);
    let error = result.err().expect("a damaged database must not open");
    assert!(matches!(&error, StoreError::Damaged { path: p, .. } if *p == path), "{error:?}");
    let message = error.to_string();
    for said in [
        format!("the message store {} is damaged", path.display()),
        "malformed".to_owned(),
        "integrity_check".to_owned(),
        "switchboard-backup.db".to_owned(),
    ] {
        assert!(message.contains(&said), "the error does not say {said:?}: {message}");
    }
    assert!(text.contains("the message store is damaged"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the damaged file is left as it was");
}

/// Damage no query at open reads (a table's page) is found by the check
/// that runs once the store is open.
#[tokio::test]
async fn damage_past_what_opening_reads_is_found_by_the_check_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = closed_store(dir.path()).await;
    scribble_page(&path, root_page(&path, "header"));
    let (store, _) = Store::open(&path, StoreOptions::default()).expect("the schema reads; the store opens");
    let mut damage = store.damage();
    let found = tokio::time::timeout(Duration::from_secs(30), damage.wait_for(Option::is_some))
        .await
        .expect("the check reports within 30 s")
        .expect("the check reports")
        .clone()
        .unwrap();
    assert!(found.contains("page"), "the finding says where: {found}");
    // Shown where someone would look, not only in the log.
    let config = switchboard::config::parse(&dir.path().join("productions.yaml"), "productions: {}\n").unwrap();
    let engine = switchboard::engine::Engine::new(config, store.clone()).unwrap();
    engine.start().await;
    assert!(engine.wait_for(Duration::from_secs(10), |s| s.store.damage.as_ref() == Some(&found)).await);
    let web = switchboard::web::start(engine.clone(), crate::web::open_options()).await.unwrap();
    let get = |path: &str| {
        let url = format!("http://{}{path}", web.local_addr());
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let info: serde_json::Value = serde_json::from_str(&get("/api/v1/store").await).unwrap();
    assert_eq!(info["health"]["damage"].as_str(), Some(found.as_str()));
    for page in ["/", "/store"] {
        let html = get(page).await;
        assert!(
            html.contains("The store&#39;s database is damaged") || html.contains("The store's database is damaged"),
            "{page}: {html}"
        );
    }
    assert!(get("/metrics").await.contains("switchboard_store_damaged 1"));
    web.shutdown().await;
    engine.shutdown().await;
    store.close().await;

    // A sound store: the check finds nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = closed_store(dir.path()).await;
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*store.damage().borrow(), None);
    store.close().await;
}

/// What `switchboard run` says and does on a database whose header is
/// gone: exits with an error naming the file, never a panic.
#[tokio::test]
async fn switchboard_run_refuses_a_damaged_database_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = closed_store(&data).await;
    // The header: "SQLite format 3\0" and the page size.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..100].fill(0xA5);
    std::fs::write(&path, bytes).unwrap();
    let config = dir.path().join("productions.yaml");
    std::fs::write(&config, "productions: {}\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("SWITCHBOARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: an engine that opened the store would run for good.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && output.status.code() != Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for said in [format!("the message store {} is damaged", path.display()), "not a database".to_owned()] {
        assert!(stderr.contains(&said), "the error does not say {said:?}:\n{stderr}");
    }
}
