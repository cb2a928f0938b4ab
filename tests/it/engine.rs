//! The production engine end to end: real sockets on 127.0.0.1, a real
//! SQLite store in a temporary folder, productions written as YAML per test
//! with short timeouts, and scripted receivers standing in for downstream
//! systems.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use switchboard::engine::{CommandSource, ItemState, ProductionState, StatusChange};
use switchboard::mllp::ClientError;
use switchboard::store::{Refuse, Status, Store, StoreOptions};
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);
/// The reply code actions used when the setting is empty.
const DEFAULT_ACTIONS: &str = ":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C";

// ---------------------------------------------------------------------------
// Productions as YAML

/// One item: its name, kind and `key: value` lines (nested lines indented
/// relative to the item).
fn item(name: &str, kind: &str, settings: &[String]) -> String {
    let mut yaml = format!("      - name: {name}\n        kind: {kind}\n");
    for line in settings {
        yaml.push_str("        ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// `defaults` with every key that `extra` sets replaced by its line there.
fn merged(defaults: &[&str], extra: &[&str]) -> Vec<String> {
    let key = |line: &str| line.split(':').next().unwrap_or_default().trim().to_owned();
    let overridden: BTreeSet<String> = extra.iter().map(|l| key(l)).collect();
    defaults.iter().filter(|l| !overridden.contains(&key(l))).chain(extra).map(ToString::to_string).collect()
}

fn mllp_in(name: &str, port: u16, targets: &str, extra: &[&str]) -> String {
    let (port, targets) = (format!("port: {port}"), format!("targets: [{targets}]"));
    item(name, "mllp_in", &merged(&["host: 127.0.0.1", &port, &targets], extra))
}

fn mllp_out(name: &str, port: u16, extra: &[&str]) -> String {
    let port = format!("port: {port}");
    let defaults = [
        "host: 127.0.0.1",
        &port,
        "connect_timeout: 500ms",
        "response_timeout: 500ms",
        "retry_interval: 50ms",
        "failure_timeout: 500ms",
    ];
    item(name, "mllp_out", &merged(&defaults, extra))
}

fn file_out(name: &str, dir: &std::path::Path, filename: &str) -> String {
    item(name, "file_out", &[format!("path: \"{}\"", dir.display()), format!("filename: \"{filename}\"")])
}

fn production(items: &[String]) -> String {
    format!(
        "productions:\n  {PRODUCTION}:\n    name: Test feed\n    autostart: true\n    stop_timeout: 2s\n    items:\n{}",
        items.concat()
    )
}

/// Makes the engine's store refuse the commits `what` names, as a full
/// disk would, or (`None`) lets them through again.
fn refuse(engine: &switchboard::engine::Engine, what: Option<Refuse>) {
    match what {
        Some(what) => engine.store().fault_hook().refuse(what),
        None => engine.store().fault_hook().clear(),
    }
}

fn message(control_id: &str) -> Option<Refuse> {
    Some(Refuse::Message { control_id: control_id.into() })
}

/// mllp_in → mllp_out, the shape most tests need.
struct Pipeline {
    engine: switchboard::engine::Engine,
    receiver: Receiver,
    in_port: u16,
    dir: tempfile::TempDir,
}

impl Pipeline {
    async fn new(in_extra: &[&str], out_extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start().await;
        let in_port = free_port();
        let yaml = production(&[mllp_in("In", in_port, "Out", in_extra), mllp_out("Out", receiver.port, out_extra)]);
        let engine = start_engine(dir.path(), &yaml).await;
        Self { engine, receiver, in_port, dir }
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// Sends one message and checks that it was accepted.
    async fn send_accepted(&self, message_type: &str, control_id: &str) {
        let ack = reply(&send(self.in_port, &hl7(message_type, control_id)).await);
        assert_eq!(ack.acknowledgment_code(), Some("AA"), "{ack:?}");
        assert_eq!(ack.acknowledged_control_id(), Some(control_id));
    }
}

/// mllp_in → a router that sends everything on → mllp_out.
fn through_a_router(in_port: u16, out_port: u16) -> String {
    let rules = ["rules:".to_owned(), "  - send: [Out]".to_owned()];
    production(&[
        mllp_in("In", in_port, "Router", &[]),
        item("Router", "router", &rules),
        mllp_out("Out", out_port, &[]),
    ])
}

/// An engine running [`through_a_router`] on a fresh store, with its
/// receiver: the store's folder, the receiver, the inbound port, the engine.
async fn started_through_a_router() -> (tempfile::TempDir, Receiver, u16, switchboard::engine::Engine) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let engine = start_engine(dir.path(), &through_a_router(in_port, receiver.port)).await;
    (dir, receiver, in_port, engine)
}

fn actions_setting(actions: &str) -> String {
    format!("reply_code_actions: \"{actions}\"")
}

// ---------------------------------------------------------------------------
// 1. Routing and ordering

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_type_and_keeps_commit_order_at_every_receiver() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 75;
    const TYPES: [&str; 4] = ["ADT^A01", "ORU^R01", "ADT^A08", "SIU^S12"];
    let dir = tempfile::tempdir().unwrap();
    let (adt_receiver, oru_receiver) = (Receiver::start().await, Receiver::start().await);
    let in_port = free_port();
    let archive = dir.path().join("archive");
    let rules = [
        "rules:".to_owned(),
        "  - when: MSH-9.1 = \"ADT\"".to_owned(),
        "    send: [ADT out, Archive]".to_owned(),
        "  - when: MSH-9.1 = \"ORU\"".to_owned(),
        "    send: [ORU out]".to_owned(),
        "no_match: discard".to_owned(),
    ];
    let yaml = production(&[
        mllp_in("In", in_port, "Router", &[]),
        item("Router", "router", &rules),
        mllp_out("ADT out", adt_receiver.port, &[]),
        mllp_out("ORU out", oru_receiver.port, &[]),
        file_out("Archive", &archive, "{message_type}_{control_id}.hl7"),
    ]);
    let engine = start_engine(dir.path(), &yaml).await;

    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        senders.spawn(async move {
            let mut client = connect(in_port).await;
            let mut sent = Vec::with_capacity(PER_SENDER);
            for n in 0..PER_SENDER {
                let (message_type, id) = (TYPES[(n + s) % TYPES.len()], format!("S{s}-{n:03}"));
                let body = hl7(message_type, &id);
                let ack = reply(&client.exchange(&body, Duration::from_secs(5)).await.expect("ACK"));
                assert_eq!(ack.acknowledgment_code(), Some("AA"));
                assert_eq!(ack.acknowledged_control_id(), Some(id.as_str()));
                sent.push((s, id, message_type, body));
            }
            sent
        });
    }
    let mut sent = Vec::new();
    while let Some(result) = senders.join_next().await {
        sent.extend(result.expect("sender"));
    }
    assert_eq!(sent.len(), SENDERS * PER_SENDER);
    let of_code = |code: &str| sent.iter().filter(|m| m.2.starts_with(code)).cloned().collect::<Vec<_>>();
    let (adt, oru, other) = (of_code("ADT"), of_code("ORU"), of_code("SIU"));

    assert!(adt_receiver.wait_len(adt.len(), WAIT).await, "ADT receiver got {}", adt_receiver.len());
    assert!(oru_receiver.wait_len(oru.len(), WAIT).await, "ORU receiver got {}", oru_receiver.len());
    assert!(
        engine.wait_for(WAIT, |s| s.production(PRODUCTION).unwrap().queued == 0).await,
        "queues did not drain: {:?}",
        engine.status()
    );

    // The order in which messages were committed: the router's queue.
    let store = engine.store();
    let commit_rank: HashMap<String, usize> = headers_for(store, "Router")
        .into_iter()
        .enumerate()
        .map(|(rank, h)| (h.control_id.expect("control id"), rank))
        .collect();
    assert_eq!(commit_rank.len(), sent.len());
    let bodies: HashMap<&str, &[u8]> = sent.iter().map(|m| (m.1.as_str(), &m.3[..])).collect();
    for (receiver, expected) in [(&adt_receiver, &adt), (&oru_receiver, &oru)] {
        let got = receiver.messages();
        // Exactly the messages routed there, with their bytes unchanged.
        let got_ids: BTreeSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        let expected_ids: BTreeSet<&str> = expected.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(got_ids, expected_ids);
        assert_eq!(got.len(), expected.len(), "duplicates delivered");
        assert_eq!(receiver.most_waiting(), 0, "sent a message before the reply to the one before");
        for (id, body) in &got {
            assert_eq!(&body[..], bodies[id.as_str()], "body of {id} changed");
        }
        // Global order at the receiver is the commit order...
        let ranks: Vec<usize> = got.iter().map(|(id, _)| commit_rank[id]).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "receiver order differs from commit order");
        // ...so each sender's messages arrive in the order it sent them.
        for s in 0..SENDERS {
            let prefix = format!("S{s}-");
            let arrived: Vec<&str> =
                got.iter().map(|(id, _)| id.as_str()).filter(|id| id.starts_with(&prefix)).collect();
            let sent_order: Vec<&str> = expected.iter().filter(|m| m.0 == s).map(|m| m.1.as_str()).collect();
            assert_eq!(arrived, sent_order, "order of sender {s}");
        }
    }

    // Operations stay connected between messages.
    assert_eq!((adt_receiver.connections(), oru_receiver.connections()), (1, 1));

    // Unrouted types are discarded by the router; the rest completed.
    assert_eq!(store.count_by_status(PRODUCTION, "Router", Status::Discarded).unwrap(), other.len() as u64);
    assert_eq!(store.count_by_status(PRODUCTION, "Router", Status::Completed).unwrap(), (adt.len() + oru.len()) as u64);
    for out in ["ADT out", "ORU out", "Archive"] {
        assert_eq!(store.count_by_status(PRODUCTION, out, Status::Queued).unwrap(), 0);
        assert_eq!(store.count_by_status(PRODUCTION, out, Status::Delivering).unwrap(), 0);
    }
    assert_eq!(store.count_by_status(PRODUCTION, "ADT out", Status::Completed).unwrap(), adt.len() as u64);
    assert_eq!(store.count_by_status(PRODUCTION, "ORU out", Status::Completed).unwrap(), oru.len() as u64);

    // The archive holds one file per ADT message, named by the pattern,
    // with the exact bytes received.
    let files: BTreeSet<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    let expected_files: BTreeSet<String> =
        adt.iter().map(|m| format!("{}_{}.hl7", m.2.replace('^', "_"), m.1)).collect();
    assert_eq!(files, expected_files);
    for m in &adt {
        let written = std::fs::read(archive.join(format!("{}_{}.hl7", m.2.replace('^', "_"), m.1))).unwrap();
        assert_eq!(written, m.3, "archived bytes of {}", m.1);
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routers_backlog_stays_ahead_of_messages_routed_on_receipt() {
    let (_dir, receiver, in_port, engine) = started_through_a_router().await;
    let store = engine.store();
    let ids: Vec<String> = (0..60).map(|n| format!("R{n:02}")).collect();
    let send_all = |ids: Vec<String>| async move {
        let mut client = connect(in_port).await;
        for id in ids {
            let ack = reply(&client.exchange(&hl7("ADT^A01", &id), Duration::from_secs(5)).await.expect("ACK"));
            assert_eq!(ack.acknowledgment_code(), Some("AA"));
        }
    };

    // A decision made on receipt is counted once committed, also while its
    // sender's connection stays open and quiet.
    let mut quiet = connect(in_port).await;
    let ack = reply(&quiet.exchange(&hl7("ADT^A01", "Q1"), Duration::from_secs(5)).await.expect("ACK"));
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    let counted =
        |n: u64| move |s: &switchboard::engine::EngineStatus| s.item(PRODUCTION, "Router").unwrap().received == n;
    assert!(engine.wait_for(WAIT, counted(1)).await, "{:?}", engine.status().item(PRODUCTION, "Router"));
    assert!(receiver.wait_len(1, WAIT).await);

    // A running router with nothing queued routes a message in the commit
    // that stores it: its queue never holds anything.
    let sending = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (store, sending) = (store.clone(), sending.clone());
        tokio::task::spawn_blocking(move || {
            let mut deepest = 0;
            while sending.load(Ordering::Relaxed) {
                deepest = deepest.max(store.queue_depth(PRODUCTION, "Router"));
                std::thread::sleep(Duration::from_micros(50));
            }
            deepest
        })
    };
    let warm_up: Vec<String> = (0..100).map(|n| format!("W{n:02}")).collect();
    send_all(warm_up.clone()).await;
    sending.store(false, Ordering::Relaxed);
    assert_eq!(watcher.await.unwrap(), 0, "messages were queued for a running router with nothing queued");
    assert!(receiver.wait_len(1 + warm_up.len(), WAIT).await);

    // A disabled router gets messages queued...
    engine.set_item_enabled(PRODUCTION, "Router", false, CommandSource::Api).await.unwrap();
    send_all(ids[..20].to_vec()).await;
    assert!(engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Router").unwrap().queue_depth == 20).await);
    // ...and once enabled, messages that keep arriving while it works
    // through them reach the operation after them.
    let late = tokio::spawn(send_all(ids[20..].to_vec()));
    tokio::time::sleep(Duration::from_millis(5)).await;
    engine.set_item_enabled(PRODUCTION, "Router", true, CommandSource::Api).await.unwrap();
    late.await.unwrap();
    assert!(receiver.wait_len(1 + warm_up.len() + ids.len(), WAIT).await, "got {}", receiver.len());
    assert_eq!(receiver.ids(), [vec!["Q1".to_owned()], warm_up, ids].concat());
    assert!(engine.wait_for(WAIT, |s| s.production(PRODUCTION).unwrap().queued == 0).await);
    let router = item_counted(&engine, "Router", 161).await;
    assert_eq!((router.received, router.sent, router.errors), (161, 161, 0), "each message counted once");
    assert_eq!(store.count_by_status(PRODUCTION, "Router", Status::Completed).unwrap(), 161);
    drop(quiet);
    engine.shutdown().await;
}

/// An item's status once it has counted at least `n` messages in and `n`
/// out (sent or failed). Items count a message once its result is safe,
/// which can be a moment after the store shows it (the queue it leaves
/// empty, its status committed); counting one twice would show by then.
async fn item_counted(engine: &switchboard::engine::Engine, item: &str, n: u64) -> switchboard::engine::ItemStatus {
    engine
        .wait_for(WAIT, |s| s.item(PRODUCTION, item).is_some_and(|i| i.received >= n && i.sent + i.errors >= n))
        .await;
    engine.status().item(PRODUCTION, item).unwrap().clone()
}

/// A router whose results cannot be committed (the store's fault hook
/// refuses its output for one message, as a full disk would) routes that message,
/// and the ones after it, again until they can be, so they reach the
/// operation in order, and counts each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_whose_results_cannot_be_committed_routes_again_and_counts_once() {
    let (_dir, receiver, in_port, engine) = started_through_a_router().await;
    // Queued for the router while it is disabled, routed from its queue.
    engine.set_item_enabled(PRODUCTION, "Router", false, CommandSource::Api).await.unwrap();
    let mut client = connect(in_port).await;
    for id in ["RT1", "RT2", "RT3"] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), WAIT).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    // Committed, not only acknowledged, before the router's results for
    // RT2 are refused (refusing RT2 would hold its own commit too).
    assert!(engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Router").unwrap().queue_depth == 3).await);
    refuse(&engine, message("RT2"));
    engine.set_item_enabled(PRODUCTION, "Router", true, CommandSource::Api).await.unwrap();
    let troubled = engine.wait_for(WAIT, |s| item_state(s, "Router") == ItemState::Error).await;
    assert!(troubled, "{:?}", engine.status());
    // Two more tries, a second apart, while the commit is refused.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    refuse(&engine, None);
    assert!(receiver.wait_len(3, WAIT).await, "{:?}", receiver.ids());
    assert!(engine.wait_for(WAIT, |s| s.production(PRODUCTION).unwrap().queued == 0).await);
    let router = item_counted(&engine, "Router", 3).await;
    assert_eq!((router.received, router.sent, router.errors), (3, 3, 0), "each message counted once");
    assert_eq!(receiver.ids(), ["RT1", "RT2", "RT3"], "once each, in order");
    engine.shutdown().await;
}

/// The published status (what the MQTT bridge and the web UI read) shows a
/// queue emptied by its last delivery, although the delivery's result is
/// committed after the operation has counted it as sent: here the commit is
/// held up until long after the count was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_status_shows_a_queue_emptied_by_its_last_delivery() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_delay(Duration::from_millis(300));
    let mut published = p.engine.subscribe();
    p.send_accepted("ADT^A01", "P1").await;
    assert!(p.receiver.wait_len(1, WAIT).await);
    // While the receiver thinks, another connection takes the store's
    // write lock, so the result waits in the delivery log.
    let lock = rusqlite::Connection::open(p.dir.path().join("store.db")).unwrap();
    lock.busy_timeout(WAIT).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let counted = |s: &switchboard::engine::EngineStatus| s.item(PRODUCTION, "Out").is_some_and(|out| out.sent == 1);
    assert!(tokio::time::timeout(WAIT, published.wait_for(|s| counted(s))).await.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.execute_batch("ROLLBACK").unwrap();
    let emptied =
        |s: &switchboard::engine::EngineStatus| s.item(PRODUCTION, "Out").is_some_and(|out| out.queue_depth == 0);
    let seen = tokio::time::timeout(WAIT, published.wait_for(|s| emptied(s))).await.is_ok();
    assert!(seen, "published: {:?}", published.borrow().item(PRODUCTION, "Out"));
    assert_eq!(p.engine.status().item(PRODUCTION, "Out").unwrap().queue_depth, 0);
    p.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. ReplyCodeActions, end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_completes() {
    let p = Pipeline::new(&[], &[]).await;
    p.send_accepted("ADT^A01", "AA1").await;
    let h = wait_status(p.store(), "Out", "AA1", Status::Completed, WAIT).await;
    assert_eq!(h.attempts, 1);
    assert_eq!(h.error, None);
    assert_eq!(p.receiver.ids(), ["AA1"]);
    let stored = p.store().reply(h.id).unwrap().expect("reply stored");
    assert_eq!(reply(&stored).acknowledgment_code(), Some("AA"));
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_error_suspends_with_text_and_reply_and_moves_on() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver
        .set_script(|id| if id == "AE1" { Behaviour::Error("Unknown patient".into()) } else { Behaviour::Accept });
    p.send_accepted("ADT^A01", "AE1").await;
    p.send_accepted("ADT^A01", "AE2").await;
    let h = wait_status(p.store(), "Out", "AE1", Status::Suspended, WAIT).await;
    let error = h.error.clone().expect("error text");
    assert!(error.contains("AE") && error.contains("Unknown patient"), "{error}");
    assert_eq!(h.attempts, 1);
    let stored = p.store().reply(h.id).unwrap().expect("reply stored");
    let stored = reply(&stored);
    assert_eq!(stored.acknowledgment_code(), Some("AE"));
    assert_eq!(stored.text(), Some("Unknown patient"));
    // The event log (shown in Home Assistant's logbook and the web UI's
    // event list) gets the code but not the receiver's text, which may
    // quote patient data; the message's own record keeps it.
    let delivery_event = || {
        p.store().recent_events(100).unwrap().into_iter().find(|e| e.kind == "delivery" && e.text.contains("suspended"))
    };
    assert!(eventually(WAIT, || delivery_event().is_some()).await);
    let text = delivery_event().unwrap().text;
    assert!(text.contains("AE, with a text") && !text.contains("Unknown patient"), "{text}");
    // The next message is delivered after the suspended one.
    wait_status(p.store(), "Out", "AE2", Status::Completed, WAIT).await;
    assert_eq!(p.receiver.ids(), ["AE1", "AE2"]);
    p.engine.shutdown().await;
}

/// A suspended message sent again from the store: a copy as it was and an
/// edited copy reach the receiver while the original stays suspended, until
/// `resend_all` queues the original itself again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_again_from_the_store_are_delivered() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver
        .set_script(|id| if id == "RS1" { Behaviour::Error("Unknown patient".into()) } else { Behaviour::Accept });
    p.send_accepted("ADT^A01", "RS1").await;
    let original = wait_status(p.store(), "Out", "RS1", Status::Suspended, WAIT).await;
    p.receiver.set_behaviour(Behaviour::Accept);
    let copy = p.store().resend_copy(original.id, "Out", None).await.unwrap();
    let edited = Bytes::from(hl7("ADT^A08", "RS1-EDITED"));
    let edited_copy = p.store().resend_copy(original.id, "Out", Some(edited.clone())).await.unwrap();
    assert!(p.receiver.wait_len(3, WAIT).await, "{:?}", p.receiver.ids());
    assert_eq!(p.receiver.ids(), ["RS1", "RS1", "RS1-EDITED"]);
    assert_eq!(p.receiver.messages()[2].1, edited);
    let completed = |id| p.store().header(id).unwrap().is_some_and(|h| h.status == Status::Completed);
    assert!(eventually(WAIT, || completed(copy) && completed(edited_copy)).await);
    assert_eq!(p.store().header(original.id).unwrap().unwrap().status, Status::Suspended);
    assert_eq!(p.store().message_detail(original.id).unwrap().unwrap().resends, [copy, edited_copy]);

    assert_eq!(p.store().count_resendable(PRODUCTION, "Out").unwrap(), 1);
    assert_eq!(p.store().resend_all(PRODUCTION, "Out").await.unwrap(), 1);
    assert!(eventually(WAIT, || completed(original.id)).await);
    assert_eq!(p.receiver.ids(), ["RS1", "RS1", "RS1-EDITED", "RS1"]);
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_is_retried_every_interval_until_the_failure_timeout_then_fails() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_behaviour(Behaviour::Reject);
    let start = Instant::now();
    p.send_accepted("ADT^A01", "AR1").await;
    let h = wait_status(p.store(), "Out", "AR1", Status::Error, WAIT).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "failed after {elapsed:?}, before the failure timeout");
    let attempts = p.receiver.count("AR1");
    // 500 ms of retries every 50 ms: several attempts, but paced.
    assert!((2..=12).contains(&attempts), "{attempts} attempts");
    assert_eq!(h.attempts as usize, attempts);
    assert!(h.error.as_deref().unwrap_or_default().contains("AR"), "{:?}", h.error);
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_without_msa_suspends() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_behaviour(Behaviour::NoMsa);
    p.send_accepted("ADT^A01", "NOMSA1").await;
    let h = wait_status(p.store(), "Out", "NOMSA1", Status::Suspended, WAIT).await;
    assert_eq!(h.attempts, 1);
    assert!(p.store().reply(h.id).unwrap().is_some());
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_that_is_not_an_ack_follows_the_t_condition() {
    let actions = actions_setting(&format!(":T?=S,{DEFAULT_ACTIONS}"));
    let p = Pipeline::new(&[], &[&actions]).await;
    p.receiver.set_behaviour(Behaviour::NotAck);
    p.send_accepted("ADT^A01", "NOTACK1").await;
    wait_status(p.store(), "Out", "NOTACK1", Status::Suspended, WAIT).await;
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_id_mismatch_completes_with_a_warning_event() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_behaviour(Behaviour::WrongControlId);
    p.send_accepted("ADT^A01", "MISMATCH1").await;
    let h = wait_status(p.store(), "Out", "MISMATCH1", Status::Completed, WAIT).await;
    let store = p.store();
    let warned = eventually(WAIT, || {
        store.recent_events(100).unwrap().iter().any(|e| {
            e.level == "warning"
                && e.item.as_deref() == Some("Out")
                && e.text.contains(&format!("message {}", h.id))
                && e.text.contains(":I?=W")
        })
    })
    .await;
    assert!(warned, "no warning event: {:?}", store.recent_events(100).unwrap());
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_with_x_r_is_retried_then_fails() {
    let actions = actions_setting(&format!("X=R,{DEFAULT_ACTIONS}"));
    let p = Pipeline::new(&[], &[&actions, "response_timeout: 150ms"]).await;
    p.receiver.set_behaviour(Behaviour::Silent);
    let start = Instant::now();
    p.send_accepted("ADT^A01", "SILENT1").await;
    let h = wait_status(p.store(), "Out", "SILENT1", Status::Error, WAIT).await;
    assert!(start.elapsed() >= Duration::from_millis(500));
    let attempts = p.receiver.count("SILENT1");
    assert!(attempts >= 2, "{attempts} attempts");
    assert_eq!(h.attempts as usize, attempts);
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_with_the_default_fails_at_once_and_moves_on() {
    let p = Pipeline::new(&[], &["response_timeout: 150ms"]).await;
    p.receiver.set_script(|id| if id == "SILENT2" { Behaviour::Silent } else { Behaviour::Accept });
    p.send_accepted("ADT^A01", "SILENT2").await;
    p.send_accepted("ADT^A01", "AFTER2").await;
    let h = wait_status(p.store(), "Out", "SILENT2", Status::Error, WAIT).await;
    assert_eq!(h.attempts, 1);
    assert_eq!(p.receiver.count("SILENT2"), 1);
    wait_status(p.store(), "Out", "AFTER2", Status::Completed, WAIT).await;
    p.engine.shutdown().await;
}

/// A connection closed before the reply is a transport failure, not a
/// reply: the message is sent again on a new connection and completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_the_reply_is_sent_again_not_failed() {
    let p = Pipeline::new(&[], &[]).await;
    let closed = Arc::new(AtomicBool::new(false));
    let once = closed.clone();
    p.receiver.set_script(move |id| match id == "CLOSE1" && !once.swap(true, Ordering::SeqCst) {
        true => Behaviour::Close,
        false => Behaviour::Accept,
    });
    p.send_accepted("ADT^A01", "CLOSE1").await;
    p.send_accepted("ADT^A01", "AFTER1").await;
    let h = wait_status(p.store(), "Out", "CLOSE1", Status::Completed, WAIT).await;
    assert_eq!(h.attempts, 2);
    wait_status(p.store(), "Out", "AFTER1", Status::Completed, WAIT).await;
    assert_eq!(p.receiver.ids(), ["CLOSE1", "CLOSE1", "AFTER1"]);
    p.engine.shutdown().await;
}

/// A receiver that hangs up on a message every time: sent again every
/// retry interval until the failure timeout, then handled like `X` (the
/// default has none, so it fails), its error naming the transport failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_always_hangs_up_fails_the_message_after_the_failure_timeout() {
    let p = Pipeline::new(&[], &["retry_interval: 100ms", "failure_timeout: 600ms"]).await;
    p.receiver.set_script(|id| if id == "CLOSE2" { Behaviour::Close } else { Behaviour::Accept });
    let sent = Instant::now();
    p.send_accepted("ADT^A01", "CLOSE2").await;
    p.send_accepted("ADT^A01", "AFTER2").await;
    let h = wait_status(p.store(), "Out", "CLOSE2", Status::Error, WAIT).await;
    assert!(sent.elapsed() >= Duration::from_millis(600), "failed before the failure timeout");
    assert!(h.attempts >= 3, "{h:?}");
    let error = h.error.unwrap_or_default();
    assert!(error.contains("transport failure (connection closed)") && error.contains("attempts in"), "{error}");
    assert_eq!(p.receiver.count("CLOSE2"), h.attempts as usize);
    wait_status(p.store(), "Out", "AFTER2", Status::Completed, WAIT).await;
    p.engine.shutdown().await;
}

/// A reset in the middle of the reply: sent again, delivered in order,
/// none left in error; one at a time and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_a_reply_sends_the_message_again() {
    for depth in [1, 8] {
        let depth_setting = format!("pipeline_depth: {depth}");
        let p = Pipeline::new(&[], &[&depth_setting, "enabled: false"]).await;
        let reset = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let seen = reset.clone();
        // Every third message is reset the first time it arrives.
        p.receiver.set_script(move |id| {
            let n: usize = id.trim_start_matches('R').parse().unwrap_or(0);
            match n.is_multiple_of(3) && seen.lock().unwrap().insert(id.to_owned()) {
                true => Behaviour::ResetMidReply,
                false => Behaviour::Accept,
            }
        });
        let ids: Vec<String> = (1..=12).map(|n| format!("R{n}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        queue_then_enable(&p, &refs).await;
        for id in &ids {
            let h = wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
            let n: usize = id[1..].parse().unwrap();
            match depth {
                1 => assert_eq!(h.attempts, if n.is_multiple_of(3) { 2 } else { 1 }, "{h:?}"),
                // A reset discards the replies that had arrived unread, so
                // which message a reset cut is not known: the first in
                // flight is counted, and everything in flight goes again.
                _ => assert!((1..=2).contains(&h.attempts), "depth {depth}: {h:?}"),
            }
        }
        assert_in_order(&p.receiver.ids(), &ids, depth);
        assert_eq!(p.store().count_by_status(PRODUCTION, "Out", Status::Error).unwrap(), 0);
        p.engine.shutdown().await;
    }
}

/// The last copy of each message arrived in queue order, and a message
/// arrived more than once only within the bounded repeat after a broken
/// connection (at most `depth` messages sent ahead go again).
fn assert_in_order(got: &[String], ids: &[String], depth: usize) {
    let last: Vec<&String> = {
        let mut seen = BTreeSet::new();
        let mut last: Vec<&String> = got.iter().rev().filter(|id| seen.insert(id.as_str())).collect();
        last.reverse();
        last
    };
    assert_eq!(last, ids.iter().collect::<Vec<_>>(), "order of the last copies: {got:?}");
    let repeats = got.len() - ids.len();
    assert!(repeats <= ids.len() * depth, "{repeats} repeats: {got:?}");
}

/// Over TLS, the same: a reset in the middle of a reply, a receiver that
/// closes idle connections, and one that restarts are transport failures,
/// never a failed message; one at a time and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_resets_idle_closes_and_restarts_are_transport_failures() {
    for depth in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let tls = |name: &str, role: &str| {
            format!(
                "  {name}:\n    role: {role}\n    ca_file: {0}/ca.crt\n    cert_file: {0}/{name}.crt\n    key_file: {0}/{name}.key\n    create_if_missing: true\n",
                pki.display()
            )
        };
        let in_port = free_port();
        let placeholder = free_port();
        let yaml = |out_port: u16| {
            let items = [
                mllp_in("In", in_port, "Out", &[]),
                mllp_out("Out", out_port, &["tls: out-client", &format!("pipeline_depth: {depth}"), "enabled: false"]),
            ];
            format!("tls:\n{}{}{}", tls("out-client", "client"), tls("rcv-server", "server"), production(&items))
        };
        let config = create_test_certificates(dir.path(), &yaml(placeholder));
        let server = switchboard::tls::TlsConfigHandle::load("rcv-server", &config.tls["rcv-server"]).unwrap();
        let receiver = Receiver::start_tls(server.acceptor().unwrap()).await;
        let engine = start_engine(dir.path(), &yaml(receiver.port)).await;
        let p = Pipeline { engine, receiver, in_port, dir };
        let reset = Arc::new(AtomicBool::new(false));
        let once = reset.clone();
        p.receiver.set_script(move |id| match id == "T3" && !once.swap(true, Ordering::SeqCst) {
            true => Behaviour::ResetMidReply,
            false => Behaviour::Accept,
        });
        let ids: Vec<String> = (1..=9).map(|n| format!("T{n}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        queue_then_enable(&p, &refs).await;
        let closed = through_idle_closes_and_restarts(&p, "T", 6, 2, 3).await;
        let all: Vec<String> = ids.iter().chain(&closed).cloned().collect();
        for id in &all {
            let h = wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
            let expected = if id == "T3" { 2 } else { 1 };
            match depth {
                1 => assert_eq!(h.attempts, expected, "{h:?}"),
                _ => assert!((1..=2).contains(&h.attempts), "{h:?}"),
            }
        }
        assert_in_order(&p.receiver.ids(), &all, depth);
        assert_eq!(p.store().count_by_status(PRODUCTION, "Out", Status::Error).unwrap(), 0);
        p.engine.shutdown().await;
    }
}

/// A message that can never be framed (a transform put an MLLP end block
/// in it) is not sent at all, whatever the depth: it fails naming why,
/// and the messages around it are delivered, in order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_framed_fails_without_holding_the_queue() {
    for depth in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start().await;
        let in_port = free_port();
        let rules = [
            "rules:".to_owned(),
            "  - when: MSH-10 = \"BAD\"".to_owned(),
            "    send: [Out]".to_owned(),
            "    transform:".to_owned(),
            "      - set: PID-5.1".to_owned(),
            "        value: \"A\\x1cB\"".to_owned(),
            "  - send: [Out]".to_owned(),
        ];
        let depth_setting = format!("pipeline_depth: {depth}");
        let yaml = production(&[
            mllp_in("In", in_port, "Router", &[]),
            item("Router", "router", &rules),
            mllp_out("Out", receiver.port, &[&depth_setting, "enabled: false"]),
        ]);
        let engine = start_engine(dir.path(), &yaml).await;
        let p = Pipeline { engine, receiver, in_port, dir };
        queue_then_enable(&p, &["GOOD1", "BAD", "GOOD2", "GOOD3"]).await;
        let bad = wait_status(p.store(), "Out", "BAD", Status::Error, WAIT).await;
        let error = bad.error.unwrap_or_default();
        assert!(error.contains("cannot be sent") && error.contains("framing byte 0x1c"), "depth {depth}: {error}");
        for id in ["GOOD1", "GOOD2", "GOOD3"] {
            wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
        }
        assert_eq!(p.receiver.ids(), ["GOOD1", "GOOD2", "GOOD3"], "depth {depth}");
        p.engine.shutdown().await;
    }
}

/// A reply that is not HL7 is handled like one without MSA (`:~=S` in the
/// default: suspended), and its bytes are kept with the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_reply_is_suspended_and_kept() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_script(|id| if id == "GARBLED" { Behaviour::Garbage } else { Behaviour::Accept });
    p.send_accepted("ADT^A01", "GARBLED").await;
    let h = wait_status(p.store(), "Out", "GARBLED", Status::Suspended, WAIT).await;
    let error = h.error.clone().unwrap_or_default();
    assert!(error.starts_with("unreadable reply: ") && error.ends_with("(:~=S)"), "{error}");
    assert_eq!(p.store().reply(h.id).unwrap().as_deref(), Some(GARBAGE_REPLY));
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_text_condition_completes_only_the_matching_error() {
    const DOB: &str = "Date of birth in PID.7 must not be empty";
    let actions = actions_setting(&format!("E*{DOB}=C,{DEFAULT_ACTIONS}"));
    let p = Pipeline::new(&[], &[&actions]).await;
    p.receiver.set_script(|id| match id {
        "NODOB1" => Behaviour::Error(DOB.into()),
        _ => Behaviour::Error("Patient class is unknown".into()),
    });
    let ack = reply(&send(p.in_port, &fixture("invalid/dob_missing.hl7")).await);
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    p.send_accepted("ADT^A01", "OTHER1").await;
    let dob = wait_status(p.store(), "Out", "NODOB1", Status::Completed, WAIT).await;
    assert_eq!(dob.attempts, 1);
    let other = wait_status(p.store(), "Out", "OTHER1", Status::Suspended, WAIT).await;
    assert!(other.error.unwrap_or_default().contains("Patient class is unknown"));
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_action_switches_the_operation_off_and_keeps_the_message_first() {
    let actions = actions_setting(&format!(":?E=D,{DEFAULT_ACTIONS}"));
    // Disabled at first, so that both messages are queued when it starts.
    let p = Pipeline::new(&[], &[&actions, "enabled: false"]).await;
    assert_eq!(item_state(&p.engine.status(), "Out"), ItemState::Disabled);
    p.receiver.set_behaviour(Behaviour::Error("Receiver is full".into()));
    p.send_accepted("ADT^A01", "D1").await;
    p.send_accepted("ADT^A01", "D2").await;
    assert!(p.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == 2).await);
    p.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
    assert!(p.receiver.wait_len(1, WAIT).await);
    assert!(
        p.engine.wait_for(WAIT, |s| item_state(s, "Out") == ItemState::Disabled).await,
        "not disabled: {:?}",
        p.engine.status()
    );
    let store = p.store();
    assert!(eventually(WAIT, || store.item_enabled(PRODUCTION, "Out").unwrap() == Some(false)).await);
    let status = p.engine.status();
    let out = status.item(PRODUCTION, "Out").unwrap();
    assert!(!out.enabled);
    assert_eq!(out.queue_depth, 2);
    // The production runs on: a disabled item is not an error.
    assert_eq!(production_state(&status), ProductionState::Running);
    // The message is back at the head of the queue, the next one behind it;
    // neither is left marked as being delivered.
    let d1 = header(store, "Out", "D1");
    assert_eq!(d1.status, Status::Queued, "{d1:?}");
    assert!(d1.error.unwrap_or_default().contains("Receiver is full"));
    assert!(eventually(WAIT, || header(store, "Out", "D2").status == Status::Queued).await, "D2 not queued");
    assert_eq!(store.count_by_status(PRODUCTION, "Out", Status::Delivering).unwrap(), 0);
    assert_eq!(p.receiver.ids(), ["D1"]);

    // Enabled again, it delivers the same message first, then the next.
    p.receiver.set_behaviour(Behaviour::Accept);
    p.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
    wait_status(store, "Out", "D2", Status::Completed, WAIT).await;
    assert_eq!(header(store, "Out", "D1").status, Status::Completed);
    assert_eq!(p.receiver.ids(), ["D1", "D1", "D2"]);
    let status = p.engine.status();
    assert_eq!(item_state(&status, "Out"), ItemState::Running);
    assert!(status.item(PRODUCTION, "Out").unwrap().enabled);
    assert_eq!(store.item_enabled(PRODUCTION, "Out").unwrap(), Some(true));
    p.engine.shutdown().await;
}

/// Queues `ids` for a disabled `Out`, then enables it, so that they leave
/// in one batch.
async fn queue_then_enable(p: &Pipeline, ids: &[&str]) {
    for id in ids {
        p.send_accepted("ADT^A01", id).await;
    }
    let n = ids.len() as u64;
    assert!(p.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == n).await);
    p.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stay_connected_each_message_has_its_own_connection() {
    let p = Pipeline::new(&[], &["stay_connected: false", "enabled: false"]).await;
    let ids = ["S1", "S2", "S3"];
    queue_then_enable(&p, &ids).await;
    for id in ids {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert_eq!(p.receiver.ids(), ids);
    assert_eq!(p.receiver.connections(), 3);
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_sends_ahead_within_its_depth_and_keeps_the_order() {
    let p = Pipeline::new(&[], &["pipeline_depth: 4", "enabled: false"]).await;
    // Slow enough that messages sent ahead are seen waiting.
    p.receiver.set_delay(Duration::from_millis(20));
    let ids: Vec<String> = (1..=10).map(|i| format!("P{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    queue_then_enable(&p, &ids).await;
    for id in &ids {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert_eq!(p.receiver.ids(), ids, "each message once, in order");
    let waiting = p.receiver.most_waiting();
    assert!((1..=3).contains(&waiting), "{waiting} messages waited behind one unanswered; the depth is 4");
    assert!(headers_for(p.store(), "Out").iter().all(|h| h.attempts == 1));
    assert_eq!(p.receiver.connections(), 1);
    let out = item_counted(&p.engine, "Out", 10).await;
    assert_eq!((out.received, out.sent, out.errors), (10, 10, 0), "{out:?}");
    p.engine.shutdown().await;
}

/// An operation reads on after the batch it has delivered while its mark
/// of that batch is not committed yet (the store's writer is busy or held
/// up), instead of waiting for it: here another connection holds the
/// database's write lock while three batches go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_delivers_batch_after_batch_while_its_marks_wait_to_be_committed() {
    let p = Pipeline::new(&[], &["enabled: false"]).await;
    p.receiver.set_delay(Duration::from_millis(5));
    // Three batches of one-at-a-time delivery (32 each).
    let ids: Vec<String> = (1..=70).map(|i| format!("B{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    queue_then_enable(&p, &ids).await;
    let lock = rusqlite::Connection::open(p.dir.path().join("store.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let delivered = p.receiver.wait_len(ids.len(), Duration::from_secs(6)).await;
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(delivered, "{} of {} delivered while the store could not commit", p.receiver.ids().len(), ids.len());
    for id in &ids {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert_eq!(p.receiver.ids(), ids, "each message once, in order");
    let out = item_counted(&p.engine, "Out", 70).await;
    assert_eq!((out.received, out.sent, out.errors), (70, 70, 0), "{out:?}");
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_a_pipeline_sends_the_messages_behind_it_again_after_it() {
    let p = Pipeline::new(&[], &["pipeline_depth: 4", "failure_timeout: 5s", "enabled: false"]).await;
    let rejected = Arc::new(AtomicBool::new(false));
    let once = rejected.clone();
    // R3 is rejected (AR: retry) once, then accepted.
    p.receiver.set_script(move |id| match id == "R3" && !once.swap(true, Ordering::SeqCst) {
        true => Behaviour::Reject,
        false => Behaviour::Accept,
    });
    let ids = ["R1", "R2", "R3", "R4", "R5", "R6"];
    queue_then_enable(&p, &ids).await;
    for id in ids {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert!(rejected.load(Ordering::SeqCst));
    let got = p.receiver.ids();
    assert_eq!(p.receiver.count("R3"), 2, "{got:?}");
    // The last copy of each message arrived in queue order, so whatever
    // the receiver did with a copy that overtook R3 is done again after it.
    let mut last_copies: Vec<(usize, &str)> =
        ids.iter().map(|id| (got.iter().rposition(|g| g == id).expect("delivered"), *id)).collect();
    last_copies.sort();
    assert_eq!(last_copies.iter().map(|c| c.1).collect::<Vec<_>>(), ids, "{got:?}");
    // Nothing sent ahead of R3's retry was counted as done before it.
    assert_eq!(header(p.store(), "Out", "R3").attempts, 2);
    let r3_again = got.iter().rposition(|g| g == "R3").unwrap();
    assert!(got[r3_again + 1..].iter().any(|g| g == "R4"), "R4 not sent again after R3: {got:?}");
    assert!(got[..r3_again].iter().any(|g| g == "R4"), "R4 was not sent ahead of R3's reply: {got:?}");
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_action_in_a_pipeline_puts_every_message_sent_ahead_back_in_the_queue() {
    let actions = actions_setting(&format!(":?E=D,{DEFAULT_ACTIONS}"));
    let p = Pipeline::new(&[], &[&actions, "pipeline_depth: 4", "enabled: false"]).await;
    let refused = Arc::new(AtomicBool::new(false));
    let once = refused.clone();
    // The receiver is full at D2, once.
    p.receiver.set_script(move |id| match id == "D2" && !once.swap(true, Ordering::SeqCst) {
        true => Behaviour::Error("Receiver is full".into()),
        false => Behaviour::Accept,
    });
    let ids = ["D1", "D2", "D3", "D4", "D5", "D6"];
    queue_then_enable(&p, &ids).await;
    assert!(p.engine.wait_for(WAIT, |s| item_state(s, "Out") == ItemState::Disabled).await, "{:?}", p.engine.status());
    let store = p.store();
    // D2 first in the queue again, and nothing left marked as being
    // delivered, although D3 to D5 went out behind it.
    assert!(
        eventually(WAIT, || store.count_by_status(PRODUCTION, "Out", Status::Delivering).unwrap() == 0).await,
        "messages left delivering"
    );
    assert_eq!(header(store, "Out", "D1").status, Status::Completed);
    let queued: Vec<String> = headers_for(store, "Out")
        .into_iter()
        .filter(|h| h.status == Status::Queued)
        .map(|h| h.control_id.unwrap())
        .collect();
    assert_eq!(queued, ["D2", "D3", "D4", "D5", "D6"]);
    assert!(p.receiver.ids().starts_with(&["D1".to_owned(), "D2".to_owned()]), "{:?}", p.receiver.ids());
    // Enabled again, the queue goes out from D2, in order.
    p.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
    wait_status(store, "Out", "D6", Status::Completed, WAIT).await;
    let got = p.receiver.ids();
    let resumed = got.iter().rposition(|g| g == "D2").unwrap();
    assert_eq!(got[resumed..], ["D2", "D3", "D4", "D5", "D6"], "{got:?}");
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_cut_by_a_closed_connection_delivers_everything_in_order() {
    let p = Pipeline::new(&[], &["pipeline_depth: 8", "enabled: false"]).await;
    let closed = Arc::new(AtomicBool::new(false));
    let once = closed.clone();
    // The receiver hangs up instead of answering C4, once.
    p.receiver.set_script(move |id| match id == "C4" && !once.swap(true, Ordering::SeqCst) {
        true => Behaviour::Close,
        false => Behaviour::Accept,
    });
    let ids = ["C1", "C2", "C3", "C4", "C5", "C6", "C7"];
    queue_then_enable(&p, &ids).await;
    // A closed connection is a transport failure: C4 goes again.
    let c4 = wait_status(p.store(), "Out", "C4", Status::Completed, WAIT).await;
    assert_eq!(c4.attempts, 2);
    for id in ids.iter().filter(|id| **id != "C4") {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    let got = p.receiver.ids();
    let first_c4 = got.iter().position(|g| g == "C4").unwrap();
    assert_eq!(got[..=first_c4], ["C1", "C2", "C3", "C4"], "{got:?}");
    // C4 and those sent behind it on the closed connection go again, in
    // order, on the next one.
    assert_eq!(got[first_c4 + 1..], ["C4", "C5", "C6", "C7"], "{got:?}");
    assert_eq!(p.receiver.connections(), 2);
    // Counted once each, however often sent.
    let out = item_counted(&p.engine, "Out", 7).await;
    assert_eq!((out.received, out.sent, out.errors), (7, 7, 0), "{out:?}");
    p.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Start and stop

/// The next state change of the test production, within `timeout`.
async fn next_production_state(
    changes: &mut tokio::sync::broadcast::Receiver<StatusChange>,
    timeout: Duration,
) -> Option<ProductionState> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => return None,
            Ok(Err(e)) => panic!("change stream: {e}"),
            Ok(Ok(StatusChange::Production { id, state })) if id == PRODUCTION => return Some(state),
            Ok(Ok(_)) => {}
        }
    }
}

/// Production states announced until (and including) `last`.
async fn states_until(
    changes: &mut tokio::sync::broadcast::Receiver<StatusChange>,
    last: ProductionState,
) -> Vec<ProductionState> {
    let mut states = Vec::new();
    while let Some(state) = next_production_state(changes, WAIT).await {
        states.push(state);
        if state == last || states.len() > 10 {
            break;
        }
    }
    states
}

async fn assert_refused(port: u16) {
    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("port {port} still accepts connections"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_go_through_their_states_and_persist() {
    use ProductionState::{Running, Starting, Stopped, Stopping};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let in_port = free_port();
    let yaml = production(&[mllp_in("In", in_port, "Out", &[]), mllp_out("Out", receiver.port, &[])]);
    let engine = start_engine(dir.path(), &yaml).await;
    let mut changes = engine.changes();
    assert_eq!(reply(&send(in_port, &hl7("ADT^A01", "SS1")).await).acknowledgment_code(), Some("AA"));

    engine.stop_production(PRODUCTION, CommandSource::Api).await.unwrap();
    assert_eq!(states_until(&mut changes, Stopped).await, [Stopping, Stopped]);
    assert_eq!(production_state(&engine.status()), Stopped);
    // Snapshot readers see it too.
    let mut snapshots = engine.subscribe();
    let seen = tokio::time::timeout(WAIT, snapshots.wait_for(|s| production_state(s) == Stopped)).await;
    assert!(matches!(seen, Ok(Ok(_))), "the snapshot never showed the stop");
    assert!(engine.status().production(PRODUCTION).unwrap().items.iter().all(|i| i.state == ItemState::Stopped));
    assert_refused(in_port).await;

    // Stopping a stopped production changes nothing: the next announced
    // states are those of the start that follows.
    engine.stop_production(PRODUCTION, CommandSource::Api).await.unwrap();
    engine.start_production(PRODUCTION, CommandSource::Api).await.unwrap();
    assert_eq!(states_until(&mut changes, Running).await, [Starting, Running]);
    assert_eq!(reply(&send(in_port, &hl7("ADT^A01", "SS2")).await).acknowledgment_code(), Some("AA"));
    assert!(receiver.wait_len(2, WAIT).await);

    // The last command was "stop": a new engine on the same store keeps the
    // production stopped although it has autostart.
    engine.stop_production(PRODUCTION, CommandSource::Api).await.unwrap();
    engine.shutdown().await;
    drop(engine);
    let engine = open_engine(dir.path(), &yaml);
    engine.start().await;
    assert_eq!(production_state(&engine.status()), Stopped);
    assert_refused(in_port).await;

    // Started again by command, it stays started across the next restart.
    engine.start_production(PRODUCTION, CommandSource::Api).await.unwrap();
    assert_eq!(production_state(&engine.status()), Running);
    engine.shutdown().await;
    drop(engine);
    let engine = start_engine(dir.path(), &yaml).await;
    assert_eq!(reply(&send(in_port, &hl7("ADT^A01", "SS3")).await).acknowledgment_code(), Some("AA"));
    assert!(receiver.wait_len(3, WAIT).await);
    assert_eq!(receiver.ids(), ["SS1", "SS2", "SS3"]);
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Outage, then drain

/// An outage shorter than the failure timeout: the queue grows, the
/// message at its head is tried every retry interval (each try counted),
/// and everything drains in order once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_within_the_failure_timeout_queues_then_drains_in_order() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::down().await;
    let in_port = free_port();
    let out = mllp_out("Out", receiver.port, &["retry_interval: 100ms", "failure_timeout: 20s"]);
    let engine = start_engine(dir.path(), &production(&[mllp_in("In", in_port, "Out", &[]), out])).await;
    let mut client = connect(in_port).await;
    let ids: Vec<String> = (0..N).map(|n| format!("OUT{n:02}")).collect();
    for id in &ids {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), Duration::from_secs(5)).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    assert!(
        engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == N as u64).await,
        "queue depth: {:?}",
        engine.status()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.restart().await;
    assert!(
        engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == 0).await,
        "did not drain: {:?}",
        engine.status()
    );
    assert_eq!(receiver.ids(), ids);
    let first = wait_status(engine.store(), "Out", "OUT00", Status::Completed, WAIT).await;
    assert!(first.attempts >= 3, "every connection attempt counts: {first:?}");
    assert_eq!(engine.store().count_by_status(PRODUCTION, "Out", Status::Completed).unwrap(), N as u64);
    let logged =
        || engine.store().recent_events(50).unwrap().iter().any(|e| e.text.contains("transport failure (connect)"));
    assert!(eventually(WAIT, logged).await, "{:?}", engine.store().recent_events(50));
    engine.shutdown().await;
}

/// An outage past the failure timeout: the production is troubled, the
/// message at the head is handled like `X` (failed by the default) with
/// the connect failure as its error, and the rest drain in order once the
/// receiver is back, the item running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_failure_timeout_troubles_the_production_and_fails_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::down().await;
    let in_port = free_port();
    let out = mllp_out("Out", receiver.port, &["retry_interval: 100ms", "failure_timeout: 700ms"]);
    let engine = start_engine(dir.path(), &production(&[mllp_in("In", in_port, "Out", &[]), out])).await;
    let start = Instant::now();
    let mut client = connect(in_port).await;
    let ids: Vec<String> = (0..5).map(|n| format!("DOWN{n}")).collect();
    for id in &ids {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), Duration::from_secs(5)).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    let troubled = engine
        .wait_for(WAIT, |s| {
            item_state(s, "Out") == ItemState::Error && production_state(s) == ProductionState::Troubled
        })
        .await;
    assert!(troubled, "not troubled: {:?}", engine.status());
    assert!(start.elapsed() >= Duration::from_millis(700), "troubled before the failure timeout");
    let failed = wait_status(engine.store(), "Out", "DOWN0", Status::Error, WAIT).await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("transport failure (connect)") && error.contains("Connection refused"), "{error}");
    assert!(failed.attempts >= 3, "{failed:?}");
    receiver.restart().await;
    let recovered = engine
        .wait_for(WAIT, |s| {
            s.item(PRODUCTION, "Out").unwrap().queue_depth == 0
                && item_state(s, "Out") == ItemState::Running
                && production_state(s) == ProductionState::Running
        })
        .await;
    assert!(recovered, "did not drain: {:?}", engine.status());
    let got = receiver.ids();
    let failed: Vec<String> = ids.iter().filter(|id| !got.contains(id)).cloned().collect();
    assert!(!failed.is_empty() && got.iter().all(|id| !failed.contains(id)));
    assert_eq!(&ids[failed.len()..], &got[..], "the rest in order");
    let errors = engine.store().count_by_status(PRODUCTION, "Out", Status::Error).unwrap();
    assert_eq!(errors as usize, failed.len());
    engine.shutdown().await;
}

/// Sends `ids` one burst at a time, pausing `pause` between bursts of
/// `burst`, each burst delivered before the pause.
async fn send_in_bursts(p: &Pipeline, ids: &[String], burst: usize, pause: Duration) {
    for chunk in ids.chunks(burst) {
        for id in chunk {
            p.send_accepted("ADT^A01", id).await;
        }
        let last = chunk.last().unwrap();
        wait_status(p.store(), "Out", last, Status::Completed, WAIT).await;
        tokio::time::sleep(pause).await;
    }
}

/// Sends `idle` messages in bursts of `burst` to a receiver that closes
/// connections idle for 150 ms, pausing longer between bursts, then
/// `restarts` messages, the receiver restarting after each. Returns the
/// control ids sent, in order (`{prefix}I{n}`, then `{prefix}R{n}`).
async fn through_idle_closes_and_restarts(
    p: &Pipeline,
    prefix: &str,
    idle: usize,
    burst: usize,
    restarts: usize,
) -> Vec<String> {
    p.receiver.set_idle_close(Some(Duration::from_millis(150)));
    let idle: Vec<String> = (1..=idle).map(|n| format!("{prefix}I{n}")).collect();
    send_in_bursts(p, &idle, burst, Duration::from_millis(400)).await;
    p.receiver.set_idle_close(None);
    let restarts: Vec<String> = (1..=restarts).map(|n| format!("{prefix}R{n}")).collect();
    for id in &restarts {
        p.send_accepted("ADT^A01", id).await;
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
        p.receiver.restart().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.into_iter().chain(restarts).collect()
}

/// A kept-open connection shows as connected while the receiver keeps it
/// open, and as disconnected soon after the receiver closes it, even with
/// nothing to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_open_connection_closed_by_the_receiver_shows_as_disconnected() {
    let p = Pipeline::new(&[], &["response_timeout: 5s"]).await;
    p.receiver.set_idle_close(Some(Duration::from_millis(700)));
    p.send_accepted("ADT^A01", "IDLE1").await;
    wait_status(p.store(), "Out", "IDLE1", Status::Completed, WAIT).await;
    let connections = || p.engine.status().item(PRODUCTION, "Out").unwrap().connections;
    assert_eq!(connections(), 1, "the kept-open connection is up");
    let closed = eventually(Duration::from_secs(5), || connections() == 0).await;
    assert!(closed, "the connection the receiver closed still shows as open");
    // The next message opens a new one, at no cost.
    p.send_accepted("ADT^A01", "IDLE2").await;
    let h = wait_status(p.store(), "Out", "IDLE2", Status::Completed, WAIT).await;
    assert_eq!(h.attempts, 1, "{h:?}");
    assert_eq!(connections(), 1);
}

/// A receiver that closes connections idle for a moment, and one that
/// restarts between messages: the kept-open connection is found closed
/// before the next write and opened again, so no message costs a second
/// attempt, none fails, and each arrives once, in order; one at a time
/// and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_open_connection_closed_by_the_receiver_is_reopened_without_an_attempt() {
    for depth in [1, 8] {
        let depth_setting = format!("pipeline_depth: {depth}");
        let p = Pipeline::new(&[], &[&depth_setting, "response_timeout: 5s", "failure_timeout: 10s"]).await;
        let all = through_idle_closes_and_restarts(&p, &format!("D{depth}-"), 12, 3, 4).await;
        assert_eq!(p.receiver.ids(), all, "depth {depth}: each once, in order");
        for id in &all {
            let h = wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
            assert_eq!(h.attempts, 1, "depth {depth}: {h:?}");
        }
        assert!(p.receiver.connections() >= 4 + 4, "depth {depth}: {} connections", p.receiver.connections());
        p.engine.shutdown().await;
    }
}

/// A receiver that answers a pipelined window out of order: every reply is
/// recorded on the message it acknowledges, and the operation falls back
/// to one message at a time with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_answered_out_of_order_are_matched_to_their_messages() {
    let p = Pipeline::new(&[], &["pipeline_depth: 8", "enabled: false", "response_timeout: 5s"]).await;
    p.receiver.set_out_of_order(true);
    // AE for every third message: an AE recorded on the wrong message would
    // show.
    p.receiver.set_script(|id| match id.trim_start_matches('Q').parse::<usize>().unwrap_or(0) % 3 {
        0 => Behaviour::Error(format!("rejected {id}")),
        _ => Behaviour::Accept,
    });
    let ids: Vec<String> = (1..=40).map(|n| format!("Q{n}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    queue_then_enable(&p, &refs).await;
    assert!(p.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == 0).await);
    for id in &ids {
        let n: usize = id[1..].parse().unwrap();
        let want = if n.is_multiple_of(3) { Status::Suspended } else { Status::Completed };
        let h = wait_status(p.store(), "Out", id, want, WAIT).await;
        let stored = reply(&p.store().reply(h.id).unwrap().expect("a reply is stored"));
        assert_eq!(stored.acknowledged_control_id(), Some(id.as_str()), "the reply stored on {id} is another's");
    }
    assert!(p.receiver.most_waiting() > 0, "the window was used before the fall-back");
    let logged =
        || p.store().recent_events(50).unwrap().iter().any(|e| e.text.contains("sending one message at a time"));
    assert!(eventually(WAIT, logged).await, "{:?}", p.store().recent_events(50));
    p.engine.shutdown().await;
}

/// A pipelined reply that matches no message in flight (a receiver that
/// puts something else in MSA-2): nothing is recorded on a guess; the
/// window goes again one message at a time, where `:I?` judges each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_reply_that_matches_no_message_makes_the_operation_go_one_at_a_time() {
    let p = Pipeline::new(&[], &["pipeline_depth: 8", "enabled: false", "response_timeout: 5s"]).await;
    p.receiver.set_behaviour(Behaviour::WrongControlId);
    let ids: Vec<String> = (1..=12).map(|n| format!("W{n}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    queue_then_enable(&p, &refs).await;
    for id in &ids {
        let h = wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
        assert!(h.attempts <= 2, "{h:?}");
    }
    assert_in_order(&p.receiver.ids(), &ids, 8);
    assert!(p.receiver.ids().len() > ids.len(), "the first window goes again");
    let logged = || p.store().recent_events(100).unwrap().iter().any(|e| e.text.contains("matches none of the"));
    assert!(eventually(WAIT, logged).await, "{:?}", p.store().recent_events(100));
    p.engine.shutdown().await;
}

/// The demo productions (examples/demo.yaml) on free ports, with the lab's
/// listener closing idle connections after `lab_idle` and `Lab out`
/// sending `depth` ahead.
async fn demo(dir: &std::path::Path, lab_idle: &str, depth: usize) -> (switchboard::engine::Engine, u16) {
    let (adt_port, lab_port) = (free_port(), free_port());
    let demo =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.yaml")).unwrap();
    for expected in ["port: 2575", "port: 6661", "tls: lab-server", "pipeline_depth: 1"] {
        assert!(demo.contains(expected), "the demo no longer has {expected:?}");
    }
    let demo = demo
        .replace("port: 2575", &format!("port: {adt_port}"))
        .replace("port: 6661", &format!("port: {lab_port}"))
        .replace("tls: lab-server", &format!("tls: lab-server\n        idle_timeout: {lab_idle}"))
        .replace("pipeline_depth: 1", &format!("pipeline_depth: {depth}"));
    create_test_certificates(dir, &demo);
    let engine = open_engine(dir, &demo);
    engine.start().await;
    let up = |s: &switchboard::engine::EngineStatus| {
        ["demo", "lab"].iter().all(|p| s.production(p).is_some_and(|p| p.state == ProductionState::Running))
    };
    assert!(engine.wait_for(WAIT, up).await, "{:?}", engine.status());
    (engine, adt_port)
}

/// Sends ADT A01s with control ids `{prefix}{n}` for `n` in `range`.
async fn send_admissions(port: u16, prefix: &str, range: std::ops::Range<usize>) {
    let mut client = connect(port).await;
    for n in range {
        let id = format!("{prefix}{n}");
        let ack = reply(&client.exchange(&hl7("ADT^A01", &id), WAIT).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"), "{id}");
    }
}

/// The demo over its mutual-TLS hop: the lab closes idle connections, and
/// is stopped while 200 messages are sent, then started; every message
/// arrives in the lab's inbox, none failed, none sent twice.
async fn the_demo_delivers_across_lab_idle_closes_and_a_stop(depth: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, adt_port) = demo(dir.path(), "500ms", depth).await;
    let inbox = dir.path().join("demo-data/lab-inbox");
    let arrived = || std::fs::read_dir(&inbox).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    // Bursts with pauses longer than the lab's idle timeout.
    for burst in 0..3 {
        send_admissions(adt_port, &format!("IDLE{burst}-"), 0..4).await;
        assert!(eventually(WAIT, || arrived() == 4 * (burst + 1)).await, "{} arrived", arrived());
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    engine.stop_production("lab", CommandSource::Api).await.unwrap();
    send_admissions(adt_port, "STOPPED-", 0..200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.start_production("lab", CommandSource::Api).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || arrived() == 212).await, "{} of 212 arrived", arrived());
    let store = engine.store();
    assert_eq!(store.count_by_status("demo", "Lab out", Status::Error).unwrap(), 0);
    assert_eq!(store.count_by_status("demo", "Lab out", Status::Completed).unwrap(), 212);
    let lab =
        engine.wait_for(WAIT, |s| s.production("demo").is_some_and(|p| p.state == ProductionState::Running)).await;
    assert!(lab, "{:?}", engine.status());
    // The lab's inbox is named by control id, so a repeat would not show
    // there: the lab's own headers count what it received.
    let received = || store.count_by_status("lab", "Lab inbox", Status::Completed).unwrap();
    assert!(eventually(WAIT, || received() >= 212).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(), 212, "a message reached the lab twice");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_delivers_across_lab_idle_closes_and_a_stop_one_at_a_time() {
    the_demo_delivers_across_lab_idle_closes_and_a_stop(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_delivers_across_lab_idle_closes_and_a_stop_pipelined() {
    the_demo_delivers_across_lab_idle_closes_and_a_stop(8).await;
}

/// A `file_out` whose results cannot be committed (the store's fault hook
/// refuses every result, as a full disk would) writes each file
/// once and keeps running; the results are committed once the store can.
/// A read of a queue leaves out the messages whose results are noted and
/// not yet committed; when they fill its limit, the item waits, and the
/// commit of those results wakes it for the messages behind them (no
/// waiting for the five-second safety net).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_out_goes_on_as_soon_as_the_results_filling_its_batch_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let files = dir.path().join("files");
    let file_out = format!("{}        enabled: false\n", file_out("Files", &files, "{control_id}.hl7"));
    let engine = start_engine(dir.path(), &production(&[mllp_in("In", in_port, "Files", &[]), file_out])).await;
    let mut client = connect(in_port).await;
    // A batch of 32, and 8 behind it.
    for n in 1..=40 {
        let ack = reply(&client.exchange(&hl7("ADT^A01", &format!("G{n}")), WAIT).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    assert!(engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Files").unwrap().queue_depth == 40).await);
    refuse(&engine, Some(Refuse::Results));
    engine.set_item_enabled(PRODUCTION, "Files", true, CommandSource::Api).await.unwrap();
    let written = || std::fs::read_dir(&files).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    assert!(eventually(WAIT, || written() == 32).await, "{} files", written());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(written(), 32, "the first batch's results are not committed: a read finds only them");
    refuse(&engine, None);
    // The results are tried again within a second.
    let dropped = Instant::now();
    assert!(eventually(WAIT, || written() == 40).await, "{} files", written());
    let waited = dropped.elapsed();
    assert!(waited < Duration::from_millis(2500), "the rest waited {waited:?} after the results could be committed");
    for n in 1..=40 {
        wait_status(engine.store(), "Files", &format!("G{n}"), Status::Completed, WAIT).await;
    }
    assert_eq!(written(), 40, "each file once");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_out_whose_results_cannot_be_committed_writes_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let files = dir.path().join("files");
    let yaml = production(&[mllp_in("In", in_port, "Files", &[]), file_out("Files", &files, "{control_id}-{seq}.hl7")]);
    let engine = start_engine(dir.path(), &yaml).await;
    refuse(&engine, Some(Refuse::Results));
    let mut client = connect(in_port).await;
    for id in ["F1", "F2"] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), WAIT).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    let written = || std::fs::read_dir(&files).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    assert!(eventually(WAIT, || written() == 2).await, "{} files", written());
    let troubled = engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Troubled).await;
    assert!(troubled, "{:?}", engine.status());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(written(), 2, "a file was written again");
    refuse(&engine, None);
    for id in ["F1", "F2"] {
        wait_status(engine.store(), "Files", id, Status::Completed, WAIT).await;
    }
    assert_eq!(written(), 2);
    let running = engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await;
    assert!(running, "{:?}", engine.status());
    assert_eq!(item_state(&engine.status(), "Files"), ItemState::Running);
    engine.shutdown().await;
}

/// Sends `count` messages with control ids `{prefix}{n}` to `port` over
/// `connections` connections at once; every one must be accepted.
async fn send_concurrently(port: u16, prefix: &str, count: usize, connections: usize) {
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..connections {
        let prefix = prefix.to_owned();
        senders.spawn(async move {
            let mut client = connect(port).await;
            for n in (c..count).step_by(connections) {
                let id = format!("{prefix}{n}");
                let ack = reply(&client.exchange(&hl7("ADT^A01", &id), WAIT).await.unwrap());
                assert_eq!(ack.acknowledgment_code(), Some("AA"), "{id}");
            }
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent.unwrap();
    }
}

/// Control ids of the files in `dir` named `{control_id}-{seq}.hl7`, with
/// how often each was written.
fn files_by_control_id(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut written = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((id, _)) = name.rsplit_once('-') {
            *written.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    written
}

/// Nothing is delivered twice while nothing crashes, whatever the kind of
/// operation, alone or beside another target: 5,000 messages from 8
/// connections into `file_out`, into `mllp_out`, and into both at once.
/// (A queue read could see a message as queued in its snapshot after its
/// result had left the delivery log's pending set, and `file_out` wrote
/// some files twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_kind_delivers_each_message_once_alone_and_fanned_out() {
    const COUNT: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let (alone, fanned) = (Receiver::start().await, Receiver::start().await);
    let ports = [free_port(), free_port(), free_port()];
    let (files, fanned_files) = (dir.path().join("files"), dir.path().join("fanned"));
    let yaml = production(&[
        mllp_in("To files", ports[0], "Files", &[]),
        mllp_in("To out", ports[1], "Out", &[]),
        mllp_in("To both", ports[2], "Fanned files, Fanned out", &[]),
        file_out("Files", &files, "{control_id}-{seq}.hl7"),
        mllp_out("Out", alone.port, &["failure_timeout: 30s", "response_timeout: 10s"]),
        file_out("Fanned files", &fanned_files, "{control_id}-{seq}.hl7"),
        mllp_out("Fanned out", fanned.port, &["failure_timeout: 30s", "response_timeout: 10s", "pipeline_depth: 8"]),
    ]);
    let engine = start_engine(dir.path(), &yaml).await;
    tokio::join!(
        send_concurrently(ports[0], "F", COUNT, 8),
        send_concurrently(ports[1], "M", COUNT, 8),
        send_concurrently(ports[2], "B", COUNT, 8),
    );
    let long = Duration::from_secs(120);
    let drained = engine
        .wait_for(long, |s| {
            ["Files", "Out", "Fanned files", "Fanned out"]
                .iter()
                .all(|i| s.item(PRODUCTION, i).unwrap().queue_depth == 0)
        })
        .await;
    assert!(drained, "{:?}", engine.status());
    assert!(alone.wait_len(COUNT, long).await && fanned.wait_len(COUNT, long).await);
    assert!(eventually(long, || files_by_control_id(&files).len() == COUNT).await);
    assert!(eventually(long, || files_by_control_id(&fanned_files).len() == COUNT).await);
    // Anything delivered twice would have arrived by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (what, written) in
        [("Files", files_by_control_id(&files)), ("Fanned files", files_by_control_id(&fanned_files))]
    {
        let twice: Vec<_> = written.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{what} wrote {} files twice: {:?}", twice.len(), &twice[..twice.len().min(5)]);
        assert_eq!(written.len(), COUNT, "{what}");
    }
    for (what, receiver) in [("Out", &alone), ("Fanned out", &fanned)] {
        let ids = receiver.ids();
        let distinct: BTreeSet<_> = ids.iter().collect();
        assert_eq!((ids.len(), distinct.len()), (COUNT, COUNT), "{what} delivered a message twice");
    }
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Bad input over MLLP

/// mllp_in → file_out, for tests of the inbound side alone.
async fn inbound_only(dir: &tempfile::TempDir, in_extra: &[&str]) -> (switchboard::engine::Engine, u16) {
    let in_port = free_port();
    let yaml = production(&[
        mllp_in("In", in_port, "Files", in_extra),
        file_out("Files", &dir.path().join("files"), "{control_id}.hl7"),
    ]);
    (start_engine(dir.path(), &yaml).await, in_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_messages_are_rejected_with_err() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["max_message_size: 1KiB"]).await;
    let mut client = connect(port).await;
    let timeout = Duration::from_secs(5);

    // Not HL7 at all.
    let ack = reply(&client.exchange(&fixture("invalid/no_msh.hl7"), timeout).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AR"));
    assert!(!ack.errors.is_empty(), "{ack:?}");

    // No control id: rejected, with the field named in ERR-2.
    let ack = reply(&client.exchange(&fixture("invalid/msh_missing_control_id.hl7"), timeout).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AR"));
    assert_eq!(ack.errors.first().and_then(|e| e.location.as_deref()), Some("MSH^1^10"), "{ack:?}");

    // Too large: rejected with the size, addressed to its control id.
    let mut big = hl7("ADT^A01", "BIG1");
    big.extend(std::iter::repeat_n(b'X', 2000));
    big.push(b'\r');
    let ack = reply(&client.exchange(&big, timeout).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AR"));
    assert_eq!(ack.acknowledged_control_id(), Some("BIG1"));
    let text = ack.text().unwrap_or_default().to_owned();
    assert!(text.contains(&big.len().to_string()) && text.contains("1024"), "{text}");

    // Nothing of these was stored.
    assert_eq!(engine.store().count_by_status(PRODUCTION, "In", Status::Completed).unwrap(), 0);

    // Junk before a frame is dropped; the frame is acknowledged.
    let mut stream = raw(port).await;
    let mut bytes = b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n".to_vec();
    bytes.extend(frame(&hl7("ADT^A01", "AFTERJUNK")));
    stream.write_all(&bytes).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(stream, switchboard::mllp::MllpCodec::new());
    let ack = match tokio::time::timeout(timeout, framed.next()).await.expect("an ACK").expect("open").unwrap() {
        switchboard::mllp::MllpFrame::Message(payload) => reply(&payload),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    assert_eq!(ack.acknowledged_control_id(), Some("AFTERJUNK"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_frame_is_closed_after_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["read_timeout: 300ms", "idle_timeout: 5s"]).await;
    let mut stream = raw(port).await;
    let message = hl7("ADT^A01", "STALL1");
    let mut started = vec![0x0B];
    started.extend_from_slice(&message[..20]);
    stream.write_all(&started).await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await.expect("still open after 3 s");
    assert!(closed >= Duration::from_millis(250), "closed after {closed:?}");
    assert!(closed < Duration::from_millis(1500), "closed after {closed:?}, not at the read timeout");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_oversized_frame_is_closed_after_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) =
        inbound_only(&dir, &["read_timeout: 300ms", "idle_timeout: 5s", "max_message_size: 1KiB"]).await;
    let mut stream = raw(port).await;
    // Past the limit, the codec drains instead of buffering: the stall must
    // still be noticed.
    let mut started = vec![0x0B];
    started.extend_from_slice(&hl7("ADT^A01", "BIGSTALL"));
    started.resize(4096, b'X');
    stream.write_all(&started).await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await.expect("still open after 3 s");
    assert!(closed >= Duration::from_millis(250), "closed after {closed:?}");
    assert!(closed < Duration::from_millis(1500), "closed after {closed:?}, not at the read timeout");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["read_timeout: 5s", "idle_timeout: 300ms"]).await;
    // Idle from the start, and idle after a message.
    let mut stream = raw(port).await;
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await.expect("still open after 3 s");
    assert!(closed >= Duration::from_millis(250) && closed < Duration::from_millis(1500), "closed after {closed:?}");
    let mut client = connect(port).await;
    let ack = reply(&client.exchange(&hl7("ADT^A01", "IDLE1"), Duration::from_secs(5)).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    let err = client.exchange(&hl7("ADT^A01", "IDLE2"), Duration::from_secs(3)).await;
    // The second exchange is written well within the idle time, so it works.
    assert!(err.is_ok(), "{err:?}");
    let mut stream = raw(port).await;
    stream.write_all(&frame(&hl7("ADT^A01", "IDLE3"))).await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await.expect("still open after 3 s");
    assert!(closed >= Duration::from_millis(250) && closed < Duration::from_millis(1500), "closed after {closed:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_closes_its_longest_idle_connection_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["max_connections: 2"]).await;
    let timeout = Duration::from_secs(5);
    let (mut first, mut second) = (connect(port).await, connect(port).await);
    for (client, id) in [(&mut first, "LIM1"), (&mut second, "LIM2")] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), timeout).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    // A third connection is served; the first, idle the longest, makes room.
    let mut third = connect(port).await;
    let ack = reply(&third.exchange(&hl7("ADT^A01", "LIM3"), timeout).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    let closed = first.receive(Duration::from_secs(2)).await;
    assert!(matches!(&closed, Err(e) if !matches!(e, ClientError::ReplyTimeout(_))), "{closed:?}");
    for (client, id) in [(&mut second, "LIM4"), (&mut third, "LIM5")] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), timeout).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    let two = eventually(timeout, || engine.status().item(PRODUCTION, "In").unwrap().connections == 2).await;
    assert!(two, "{:?}", engine.status().item(PRODUCTION, "In"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_does_not_delay_acks_on_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = stop.clone();
    let flood = tokio::spawn(async move {
        let junk = vec![b'x'; 16 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut written = 0usize;
        // Reconnects whenever the engine closes the flooding connection.
        for _ in 0..10_000 {
            if flooding.load(Ordering::Relaxed) || Instant::now() >= deadline {
                break;
            }
            let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { break };
            for _ in 0..1_000 {
                if flooding.load(Ordering::Relaxed) || stream.write_all(&junk).await.is_err() {
                    break;
                }
                written += junk.len();
            }
        }
        written
    });
    let mut client = connect(port).await;
    for n in 0..20 {
        let id = format!("CALM{n}");
        let start = Instant::now();
        let ack = client.exchange(&hl7("ADT^A01", &id), Duration::from_secs(5)).await.unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "ACK {n} took {took:?}");
        assert_eq!(reply(&ack).acknowledged_control_id(), Some(id.as_str()));
    }
    stop.store(true, Ordering::Relaxed);
    let written = tokio::time::timeout(Duration::from_secs(10), flood).await.expect("flood ends").unwrap();
    assert!(written > 64 * 1024, "the flood wrote only {written} bytes");
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Acknowledgment modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_mode_follows_msh15() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &[]).await;
    let mut client = connect(port).await;
    let ack =
        reply(&client.exchange(&hl7_with_accept_ack("ADT^A01", "ENH1", "AL"), Duration::from_secs(5)).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("CA"));
    assert_eq!(ack.acknowledged_control_id(), Some("ENH1"));
    // The fixture asks for commit ACKs too (MSH-15 = AL).
    let ack = reply(&client.exchange(&fixture("valid/adt_a01.hl7"), Duration::from_secs(5)).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("CA"));

    // NE: stored, but no ACK at all.
    let silent = client.exchange(&hl7_with_accept_ack("ADT^A01", "ENH2", "NE"), Duration::from_millis(300)).await;
    assert!(matches!(silent, Err(ClientError::ReplyTimeout(_))), "{silent:?}");
    // The connection is still in step: the next ACK is for the next message.
    let ack =
        reply(&client.exchange(&hl7_with_accept_ack("ADT^A01", "ENH3", "AL"), Duration::from_secs(5)).await.unwrap());
    assert_eq!(ack.acknowledged_control_id(), Some("ENH3"));
    let files = dir.path().join("files");
    assert!(eventually(WAIT, || files.join("ENH2.hl7").exists()).await, "ENH2 not delivered");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_mode_never_answers_nothing_but_stores_and_delivers() {
    let p = Pipeline::new(&["ack_mode: never"], &[]).await;
    let mut client = connect(p.in_port).await;
    let silent = client.exchange(&hl7("ADT^A01", "NEVER1"), Duration::from_millis(300)).await;
    assert!(matches!(silent, Err(ClientError::ReplyTimeout(_))), "{silent:?}");
    wait_status(p.store(), "Out", "NEVER1", Status::Completed, WAIT).await;
    assert_eq!(p.receiver.ids(), ["NEVER1"]);
    p.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_mode_application_relays_the_receiver_reply() {
    let p = Pipeline::new(&["ack_mode: application", "application_ack_timeout: 5s"], &[]).await;
    p.receiver.set_script(|id| match id {
        "APP1" => Behaviour::Error("Bed not available".into()),
        _ => Behaviour::Accept,
    });
    let ack = reply(&send(p.in_port, &hl7("ADT^A01", "APP1")).await);
    assert_eq!(ack.acknowledgment_code(), Some("AE"));
    assert_eq!(ack.acknowledged_control_id(), Some("APP1"));
    assert_eq!(ack.text(), Some("Bed not available"));
    let ack = reply(&send(p.in_port, &hl7("ADT^A01", "APP2")).await);
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    assert_eq!(ack.acknowledged_control_id(), Some("APP2"));
    wait_status(p.store(), "Out", "APP1", Status::Suspended, WAIT).await;
    wait_status(p.store(), "Out", "APP2", Status::Completed, WAIT).await;
    p.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. Restarting and disabling an operation with a queue

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_disable_keep_every_queued_message_in_order() {
    let p = Pipeline::new(&[], &[]).await;
    p.receiver.set_delay(Duration::from_millis(40));
    let ids: Vec<String> = (0..40).map(|n| format!("Q{n:02}")).collect();
    let mut client = connect(p.in_port).await;
    for id in &ids[..30] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), Duration::from_secs(5)).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    assert!(p.receiver.wait_len(5, WAIT).await);
    p.engine.restart_item(PRODUCTION, "Out", CommandSource::Api).await.unwrap();
    assert!(p.receiver.wait_len(12, WAIT).await);
    p.engine.set_item_enabled(PRODUCTION, "Out", false, CommandSource::Api).await.unwrap();
    let delivered = p.receiver.len();
    let status = p.engine.status();
    assert_eq!(item_state(&status, "Out"), ItemState::Disabled);
    assert!(delivered < 30, "everything was delivered before the item was disabled");
    assert_eq!(p.store().count_by_status(PRODUCTION, "Out", Status::Delivering).unwrap(), 0);
    for id in &ids[30..] {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), Duration::from_secs(5)).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    // Acknowledged messages are durable at once and queued a moment later.
    let depth = (40 - delivered) as u64;
    assert!(p.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == depth).await);
    assert_eq!(p.receiver.len(), delivered, "a disabled item delivered");

    p.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
    assert!(p.receiver.wait_len(40, WAIT).await, "got {}", p.receiver.len());
    assert!(p.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == 0).await);
    assert_eq!(p.receiver.ids(), ids);
    assert_eq!(p.store().count_by_status(PRODUCTION, "Out", Status::Completed).unwrap(), 40);
    p.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 8. file_in

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_in_commits_and_archives_files_and_sets_unreadable_ones_aside() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let first = hl7("ADT^A01", "F1");
    let second = [hl7("ADT^A01", "F2"), hl7("ORU^R01", "F3")].concat();
    std::fs::write(inbox.join("001.hl7"), &first).unwrap();
    std::fs::write(inbox.join("002.hl7"), &second).unwrap();
    std::fs::write(inbox.join("003.hl7"), fixture("invalid/binary_garbage.bin")).unwrap();
    std::fs::write(inbox.join("004.hl7"), fixture("invalid/truncated_msh.hl7")).unwrap();
    std::fs::write(inbox.join("notes.txt"), b"not picked up").unwrap();
    let receiver = Receiver::start().await;
    let file_in = item(
        "Files in",
        "file_in",
        &[
            format!("path: \"{}\"", inbox.display()),
            "pattern: \"*.hl7\"".into(),
            "poll_interval: 100ms".into(),
            "targets: [Out]".into(),
        ],
    );
    let yaml = production(&[file_in, mllp_out("Out", receiver.port, &[])]);
    let engine = start_engine(dir.path(), &yaml).await;

    assert!(receiver.wait_len(3, WAIT).await);
    // A file that arrives while the service runs, written under another name first.
    std::fs::write(inbox.join("005.tmp"), hl7("ADT^A08", "F4")).unwrap();
    std::fs::rename(inbox.join("005.tmp"), inbox.join("005.hl7")).unwrap();
    assert!(receiver.wait_len(4, WAIT).await);
    assert_eq!(receiver.ids(), ["F1", "F2", "F3", "F4"]);
    // Bytes as in the files.
    let messages = receiver.messages();
    assert_eq!(messages[0].1, Bytes::from(first));
    assert_eq!([&messages[1].1[..], &messages[2].1[..]].concat(), second);

    let archive = inbox.join("archive");
    let rejected = inbox.join("error");
    assert!(eventually(WAIT, || archive.join("005.hl7").exists()).await);
    for name in ["001.hl7", "002.hl7", "005.hl7"] {
        assert!(archive.join(name).exists(), "{name} not archived");
        assert!(!inbox.join(name).exists(), "{name} left in the inbox");
    }
    for name in ["003.hl7", "004.hl7"] {
        assert!(rejected.join(name).exists(), "{name} not in the error folder");
        assert!(!inbox.join(name).exists() && !archive.join(name).exists(), "{name} not set aside");
    }
    assert!(inbox.join("notes.txt").exists());
    assert_eq!(engine.store().count_by_status(PRODUCTION, "Files in", Status::Completed).unwrap(), 4);
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 9. A graceful stop leaves nothing in flight

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_no_message_delivering() {
    const N: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(50));
    let in_port = free_port();
    let rules = ["rules:".to_owned(), "  - send: [Out, Files]".to_owned()];
    let yaml = production(&[
        mllp_in("In", in_port, "Router", &[]),
        item("Router", "router", &rules),
        mllp_out("Out", receiver.port, &[]),
        file_out("Files", &dir.path().join("files"), "{control_id}.hl7"),
    ]);
    let engine = start_engine(dir.path(), &yaml).await;
    let ids: Vec<String> = (0..N).map(|n| format!("G{n:02}")).collect();
    let mut client = connect(in_port).await;
    for id in &ids {
        let ack = reply(&client.exchange(&hl7("ADT^A01", id), Duration::from_secs(5)).await.unwrap());
        assert_eq!(ack.acknowledgment_code(), Some("AA"));
    }
    assert!(receiver.wait_len(3, WAIT).await);
    engine.stop_production(PRODUCTION, CommandSource::Api).await.unwrap();
    let store = engine.store();
    for item in ["Router", "Out", "Files"] {
        assert_eq!(store.count_by_status(PRODUCTION, item, Status::Delivering).unwrap(), 0, "{item}");
    }
    let delivered = receiver.len();
    assert!(delivered < N, "everything was delivered before the stop");
    assert_eq!(store.count_by_status(PRODUCTION, "Out", Status::Completed).unwrap(), delivered as u64);
    assert_eq!(store.count_by_status(PRODUCTION, "Out", Status::Queued).unwrap(), (N - delivered) as u64);

    // After a shutdown, the store has nothing to recover.
    engine.start_production(PRODUCTION, CommandSource::Api).await.unwrap();
    assert!(receiver.wait_len(delivered + 2, WAIT).await);
    engine.shutdown().await;
    drop(engine);
    let (store, recovered) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    assert_eq!(recovered, 0);
    for item in ["Router", "Out", "Files"] {
        assert_eq!(store.count_by_status(PRODUCTION, item, Status::Delivering).unwrap(), 0, "{item}");
    }
    store.close().await;

    // And the rest is delivered after the next start, in order, once each.
    let engine = start_engine(dir.path(), &yaml).await;
    assert!(receiver.wait_len(N, WAIT).await);
    assert!(engine.wait_for(WAIT, |s| s.production(PRODUCTION).unwrap().queued == 0).await);
    assert_eq!(receiver.ids(), ids);
    engine.shutdown().await;
}

/// A store that cannot commit received messages (the store's fault hook
/// refuses one, as a full disk would) troubles the production, naming the
/// cause on the service; acknowledged messages wait in the inbound log, and
/// once the store can commit again they are delivered in order and the
/// production runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_troubles_the_production_until_it_can() {
    let p = Pipeline::new(&[], &[]).await;
    refuse(&p.engine, message("FULL2"));
    // Durable in the inbound log, so acknowledged.
    for id in ["FULL1", "FULL2", "FULL3"] {
        p.send_accepted("ADT^A01", id).await;
    }
    let troubled = p
        .engine
        .wait_for(WAIT, |s| production_state(s) == ProductionState::Troubled && item_state(s, "In") == ItemState::Error)
        .await;
    assert!(troubled, "{:?}", p.engine.status());
    let error = p.engine.status().item(PRODUCTION, "In").unwrap().last_error.clone().unwrap_or_default();
    assert!(error.contains("cannot commit") && error.contains("disk is full"), "{error}");
    assert!(p.receiver.wait_len(1, WAIT).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.receiver.ids(), ["FULL1"], "a message overtook the one the store could not commit");
    refuse(&p.engine, None);
    assert!(p.receiver.wait_len(3, WAIT).await, "{:?}", p.receiver.ids());
    assert_eq!(p.receiver.ids(), ["FULL1", "FULL2", "FULL3"]);
    let running = p.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await;
    assert!(running, "{:?}", p.engine.status());
    p.engine.shutdown().await;
}

/// An operation whose results cannot be committed (the store's fault hook
/// refuses every result, as a full disk would) delivers each message
/// once: the results are safe in the delivery log, so the messages are not
/// taken from the queue again, and the production is troubled; once the
/// store can commit, the results are recorded and it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_results_cannot_be_committed_delivers_each_message_once() {
    let p = Pipeline::new(&[], &[]).await;
    refuse(&p.engine, Some(Refuse::Results));
    for id in ["ONCE1", "ONCE2"] {
        p.send_accepted("ADT^A01", id).await;
    }
    assert!(p.receiver.wait_len(2, WAIT).await, "{:?}", p.receiver.ids());
    let troubled = p.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Troubled).await;
    assert!(troubled, "{:?}", p.engine.status());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(p.receiver.ids(), ["ONCE1", "ONCE2"], "a message was delivered again");
    refuse(&p.engine, None);
    // The results are tried again and committed while the engine runs.
    for id in ["ONCE1", "ONCE2"] {
        wait_status(p.store(), "Out", id, Status::Completed, WAIT).await;
    }
    assert!(p.engine.wait_for(WAIT, |s| s.production(PRODUCTION).unwrap().queued == 0).await);
    let running = p.engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await;
    assert!(running, "{:?}", p.engine.status());
    p.engine.shutdown().await;
    assert_eq!(p.receiver.ids(), ["ONCE1", "ONCE2"]);
}

/// mllp_in → file_out on a port someone else holds (the listener returned
/// holds it): the start does not wait for the port, and the production is
/// troubled with its listener in error.
async fn behind_a_taken_port(dir: &std::path::Path) -> (switchboard::engine::Engine, u16, std::net::TcpListener) {
    let port = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let yaml =
        production(&[mllp_in("In", port, "Files", &[]), file_out("Files", &dir.join("files"), "{control_id}.hl7")]);
    let engine = open_engine(dir, &yaml);
    tokio::time::timeout(Duration::from_secs(5), engine.start()).await.expect("the start returned");
    let troubled = engine
        .wait_for(WAIT, |s| production_state(s) == ProductionState::Troubled && item_state(s, "In") == ItemState::Error)
        .await;
    assert!(troubled, "{:?}", engine.status());
    (engine, port, squatter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_troubles_the_production_and_recovers_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port, squatter) = behind_a_taken_port(dir.path()).await;
    let error = engine.status().productions[0].items[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("cannot listen") && error.contains(&port.to_string()), "{error}");
    // The port is freed; restarting the item brings the production back.
    drop(squatter);
    engine.restart_item("p", "In", CommandSource::Api).await.unwrap();
    let running = engine.wait_for(Duration::from_secs(5), |s| production_state(s) == ProductionState::Running).await;
    assert!(running, "{:?}", engine.status());
    let ack = reply(&connect(port).await.exchange(&hl7("ADT^A01", "BOUND1"), Duration::from_secs(5)).await.unwrap());
    assert_eq!(ack.acknowledgment_code(), Some("AA"));
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// 10. Listeners that a flood cannot lock

/// A connection to `port` from the loopback address 127.0.0.`from`, so that
/// one test can play several peers.
async fn raw_from(from: u8, port: u16) -> tokio::net::TcpStream {
    let stream = try_raw_from(from, port).await.unwrap_or_else(|e| panic!("cannot connect from 127.0.0.{from}: {e}"));
    stream.set_nodelay(true).expect("nodelay");
    stream
}

async fn try_raw_from(from: u8, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, from], 0).into())?;
    socket.connect(([127, 0, 0, 1], port).into()).await
}

/// Sends one message on `client` and checks that it was accepted.
async fn exchange_accepted<S: switchboard::mllp::Stream>(
    client: &mut switchboard::mllp::MllpClient<S>,
    control_id: &str,
) {
    let ack = client.exchange(&hl7("ADT^A01", control_id), Duration::from_secs(5)).await;
    let ack = reply(&ack.unwrap_or_else(|e| panic!("no ACK for {control_id}: {e}")));
    assert_eq!(ack.acknowledgment_code(), Some("AA"), "{ack:?}");
    assert_eq!(ack.acknowledged_control_id(), Some(control_id));
}

/// The texts of the events of `item`, oldest first.
fn event_texts(store: &Store, item: &str) -> Vec<String> {
    let mut events = store.recent_events(10_000).expect("events");
    events.retain(|e| e.item.as_deref() == Some(item));
    events.into_iter().rev().map(|e| e.text).collect()
}

/// Waits until an event of `item` contains every one of `words`; returns it.
async fn event_naming(store: &Store, item: &str, words: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let texts = event_texts(store, item);
        if let Some(text) = texts.iter().find(|t| words.iter().all(|w| t.contains(w))) {
            return text.clone();
        }
        assert!(Instant::now() < deadline, "no event of {item} names {words:?}: {texts:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_writes_a_bounded_number_of_events() {
    const CONNECTIONS: usize = 20;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &[]).await;
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..CONNECTIONS {
        flood.spawn(async move {
            let junk = vec![b'x'; 16 * 1024];
            for _ in 0..ROUNDS {
                let mut stream = raw_from(2 + (n % 5) as u8, port).await;
                // 80 KiB: past the 64 KiB allowed, so the engine closes it.
                for _ in 0..5 {
                    if stream.write_all(&junk).await.is_err() {
                        break;
                    }
                }
                let _ = closed_within(&mut stream, Duration::from_secs(5)).await;
            }
        });
    }
    let mut client = connect(port).await;
    exchange_accepted(&mut client, "CALM1").await;
    let flooded = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(done) = flood.join_next().await {
            done.expect("flood");
        }
    })
    .await;
    assert!(flooded.is_ok(), "the flood did not end");
    exchange_accepted(&mut client, "CALM2").await;
    // 100 connections closed for junk: 5 events, then silence.
    let junk = |texts: &[String]| texts.iter().filter(|t| t.contains("outside MLLP frames")).count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts = event_texts(engine.store(), "In");
    assert_eq!(junk(&texts), 5, "{texts:#?}");
    assert!(texts.len() <= 10, "{texts:#?}");
    // What was held back is counted when the listener stops.
    engine.stop_production(PRODUCTION, CommandSource::Api).await.unwrap();
    let summary = event_naming(engine.store(), "In", &["more warnings about bytes outside MLLP frames"]).await;
    let held: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_default();
    assert_eq!(held, CONNECTIONS * ROUNDS - 5, "{summary}");
    engine.shutdown().await;
}

/// A `tls:` section with a server configuration `server` whose test
/// certificates are made in `dir` at start.
fn tls_server_section(dir: &std::path::Path) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    format!(
        "tls:\n  server:\n    role: server\n    ca_file: \"{}\"\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    \
         create_if_missing: true\n",
        file("ca.crt"),
        file("server.crt"),
        file("server.key")
    )
}

/// Makes the test certificates, then builds and starts the engine.
async fn start_engine_with_tls(dir: &std::path::Path, yaml: &str) -> switchboard::engine::Engine {
    create_test_certificates(dir, yaml);
    start_engine(dir, yaml).await
}

/// TLS client settings trusting the CA that [`tls_server_section`] makes.
fn tls_client(dir: &std::path::Path) -> switchboard::mllp::ClientTls {
    use switchboard::config::{TlsConfig, TlsRole, TlsVersion, VerifyPeer};
    let config = TlsConfig {
        role: TlsRole::Client,
        ca_file: Some(dir.join("ca.crt")),
        cert_file: None,
        key_file: None,
        key_password_env: None,
        key_password_file: None,
        verify_peer: VerifyPeer::Require,
        verify_host: true,
        server_name: None,
        min_version: TlsVersion::Tls12,
        create_if_missing: false,
    };
    let handle = switchboard::tls::TlsConfigHandle::load("client", &config).expect("client configuration");
    switchboard::mllp::ClientTls {
        connector: handle.connector().expect("connector"),
        server_name: handle.server_name("localhost").expect("server name"),
    }
}

/// The start of a TLS ClientHello: a handshake record header announcing
/// 512 bytes, and the first few of them. A server waits for the rest.
const HALF_A_CLIENT_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_first_byte_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["first_byte_timeout: 300ms", "read_timeout: 5s"]).await;
    let mut silent = raw(port).await;
    let closed = closed_within(&mut silent, Duration::from_secs(3)).await.expect("still open after 3 s");
    assert!(closed >= Duration::from_millis(250), "closed after {closed:?}");
    assert!(closed < Duration::from_millis(1500), "closed after {closed:?}, not at the first-byte timeout");
    // Once a sender has spoken, only the idle timeout (300 s) applies.
    let mut client = connect(port).await;
    exchange_accepted(&mut client, "FIRST1").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    exchange_accepted(&mut client, "FIRST2").await;
    event_naming(engine.store(), "In", &["nothing received within 300ms", "first_byte_timeout"]).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_after_the_first_byte_timeout_and_plaintext_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "{}{}",
        tls_server_section(dir.path()),
        production(&[
            mllp_in("Secure in", port, "Files", &["tls: server", "first_byte_timeout: 500ms", "read_timeout: 5s"]),
            file_out("Files", &dir.path().join("files"), "{control_id}.hl7"),
        ])
    );
    let engine = start_engine_with_tls(dir.path(), &yaml).await;
    // Half a ClientHello, then nothing; and nothing at all.
    let mut stalled = raw(port).await;
    stalled.write_all(&HALF_A_CLIENT_HELLO).await.unwrap();
    let mut silent = raw(port).await;
    let opened = Instant::now();
    for (stream, what) in [(&mut stalled, "the stalled handshake"), (&mut silent, "the silent connection")] {
        assert!(closed_within(stream, Duration::from_secs(3)).await.is_some(), "{what} is open");
        let closed = opened.elapsed();
        assert!(closed >= Duration::from_millis(400), "{what} closed after {closed:?}");
        assert!(closed < Duration::from_millis(2000), "{what} closed after {closed:?}, not at the timeout");
    }
    // A plaintext MLLP sender is told nothing and named as such.
    let mut plain = raw(port).await;
    plain.write_all(&frame(&hl7("ADT^A01", "PLAIN1"))).await.unwrap();
    let closed = closed_within(&mut plain, Duration::from_secs(3)).await.expect("the plaintext sender is open");
    assert!(closed < Duration::from_millis(400), "closed after {closed:?}");
    // A TLS sender is served.
    let tls = tls_client(dir.path());
    let addr = format!("127.0.0.1:{port}");
    let mut client = switchboard::mllp::MllpClient::connect_with(&addr, Duration::from_secs(2), Some(&tls))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    exchange_accepted(&mut client, "TLS1").await;
    // Once it has sent a message, the idle timeout applies, not the
    // first-byte timeout: the kept-open connection is still served.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    exchange_accepted(&mut client, "TLS2").await;
    let store = engine.store();
    event_naming(store, "Secure in", &["TLS handshake with 127.0.0.1:", "not complete within 500ms"]).await;
    event_naming(store, "Secure in", &["nothing received within 500ms"]).await;
    let text = event_naming(store, "Secure in", &["plaintext on a TLS port from 127.0.0.1:"]).await;
    assert!(text.ends_with("the sender must use TLS"), "{text}");
    assert!(!event_texts(store, "Secure in").iter().any(|t| t.contains("InvalidContentType")));
    assert_eq!(engine.status().item(PRODUCTION, "Secure in").unwrap().received, 2);
    engine.shutdown().await;
}

/// An MLLP client from 127.0.0.`from`.
async fn client_from(from: u8, port: u16) -> switchboard::mllp::MllpClient<tokio::net::TcpStream> {
    switchboard::mllp::MllpClient::new(raw_from(from, port).await, switchboard::mllp::MllpCodec::new())
}

/// Waits until the peer closes `client`'s connection; panics if it stays
/// open for `timeout`.
async fn assert_closed<S: switchboard::mllp::Stream>(
    client: &mut switchboard::mllp::MllpClient<S>,
    timeout: Duration,
    what: &str,
) {
    match client.receive(timeout).await {
        Err(ClientError::ReplyTimeout(_)) => panic!("{what} is still open after {timeout:?}"),
        Err(_) => {}
        Ok(bytes) => panic!("{what} got {bytes:?} instead of being closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_its_limit_loses_its_own_longest_idle_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["max_connections_per_peer: 2"]).await;
    // Two connections of 127.0.0.2; the first delivers last, so the
    // second (a ghost, say) is the peer's longest idle.
    let (mut first, mut ghost) = (client_from(2, port).await, client_from(2, port).await);
    exchange_accepted(&mut ghost, "PEER1").await;
    exchange_accepted(&mut first, "PEER2").await;
    let mut other = client_from(3, port).await;
    exchange_accepted(&mut other, "OTHER1").await;
    // A third connection of 127.0.0.2 is served; the ghost makes room.
    let mut third = client_from(2, port).await;
    exchange_accepted(&mut third, "PEER3").await;
    assert_closed(&mut ghost, Duration::from_secs(2), "the peer's longest-idle connection").await;
    exchange_accepted(&mut first, "PEER4").await;
    exchange_accepted(&mut other, "OTHER2").await;
    let text = event_naming(engine.store(), "In", &["to make room for one from 127.0.0.2:"]).await;
    assert!(text.contains("127.0.0.2 had 2 connections (max_connections_per_peer)"), "{text}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_closes_connections_that_delivered_nothing_first() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port) = inbound_only(&dir, &["max_connections: 3"]).await;
    let mut sender = client_from(2, port).await;
    exchange_accepted(&mut sender, "FULL1").await;
    // Two silent connections, newer than the sender's last message.
    let mut silent = [raw_from(3, port).await, raw_from(4, port).await];
    // Each newcomer closes the oldest silent connection, never the sender.
    let mut newcomers = Vec::new();
    for (n, old) in silent.iter_mut().enumerate() {
        newcomers.push(raw_from(5 + n as u8, port).await);
        let closed = closed_within(old, Duration::from_secs(2)).await;
        assert!(closed.is_some(), "silent connection {n} is still open");
        exchange_accepted(&mut sender, &format!("FULL{}", n + 2)).await;
    }
    // A well-behaved newcomer is served too: the older newcomer makes room.
    let mut second = client_from(7, port).await;
    exchange_accepted(&mut second, "FULL4").await;
    assert!(closed_within(&mut newcomers[0], Duration::from_secs(2)).await.is_some());
    exchange_accepted(&mut sender, "FULL5").await;
    let text = event_naming(engine.store(), "In", &["no message yet", "(max_connections)"]).await;
    assert!(text.contains("the listener had 3 connections"), "{text}");
    engine.shutdown().await;
}

/// Connects from 127.0.0.`from` again and again until `stop`, each time
/// doing `attack` on the connection and waiting for the engine to close
/// it; bounded in rounds. Returns the rounds done.
async fn attacker<F, Fut>(from: u8, port: u16, stop: Arc<AtomicBool>, pause: Duration, attack: F) -> usize
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = ()>,
{
    const ROUNDS: usize = 200;
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0..ROUNDS {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return round;
        }
        // A listener whose backlog is full drops SYNs: give up on a
        // connection that is not made within a second, and try again.
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), try_raw_from(from, port)).await {
            attack(stream, stop.clone()).await;
        }
        tokio::time::sleep(pause).await;
    }
    ROUNDS
}

/// Holds `stream` without writing until the engine closes it or `stop`.
async fn hold(mut stream: tokio::net::TcpStream, stop: Arc<AtomicBool>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 256];
    for _ in 0..1_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return;
        }
    }
}

/// Writes a frame one byte every 50 ms, never finishing it.
async fn trickle(mut stream: tokio::net::TcpStream, stop: Arc<AtomicBool>) {
    let bytes = [&[0x0B][..], &hl7("ADT^A01", "SLOW")].concat();
    for byte in bytes.iter().take(1_000) {
        if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hold(stream, stop).await;
}

/// Starts a TLS handshake and stalls in it.
async fn half_handshake(mut stream: tokio::net::TcpStream, stop: Arc<AtomicBool>) {
    if stream.write_all(&HALF_A_CLIENT_HELLO).await.is_ok() {
        hold(stream, stop).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_half_open_and_slow_connections_never_locks_out_a_sender() {
    const IDLE: usize = 1_000;
    const HALF_OPEN: usize = 200;
    const SLOW: usize = 50;
    const MESSAGES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (port, secure_port) = (free_port(), free_port());
    let timeouts = ["first_byte_timeout: 1s", "read_timeout: 1s", "idle_timeout: 5s"];
    let yaml = format!(
        "{}{}",
        tls_server_section(dir.path()),
        production(&[
            mllp_in("In", port, "Files", &timeouts),
            mllp_in("Secure in", secure_port, "Files", &[&timeouts[..], &["tls: server"]].concat()),
            file_out("Files", &dir.path().join("files"), "{control_id}.hl7"),
        ])
    );
    let engine = start_engine_with_tls(dir.path(), &yaml).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    // Ten addresses for the idle connections, ten for the handshakes, five
    // for the slow senders; each attacker reconnects when it is closed.
    for n in 0..IDLE {
        let stop = stop.clone();
        flood.spawn(attacker(10 + (n % 10) as u8, port, stop, Duration::from_millis(100), hold));
    }
    for n in 0..HALF_OPEN {
        let stop = stop.clone();
        flood.spawn(attacker(30 + (n % 10) as u8, secure_port, stop, Duration::from_millis(100), half_handshake));
    }
    for n in 0..SLOW {
        let stop = stop.clone();
        flood.spawn(attacker(50 + (n % 5) as u8, port, stop, Duration::from_millis(100), trickle));
    }
    // The flood is under way before the senders connect.
    let full = eventually(WAIT, || engine.status().item(PRODUCTION, "In").unwrap().connections >= 90).await;
    assert!(full, "the flood did not fill the listener: {:?}", engine.status().item(PRODUCTION, "In"));

    let plain = tokio::spawn(async move {
        let mut client = connect(port).await;
        for n in 0..MESSAGES {
            exchange_accepted(&mut client, &format!("GOOD{n:03}")).await;
        }
    });
    let tls = tls_client(dir.path());
    let secure = tokio::spawn(async move {
        let addr = format!("127.0.0.1:{secure_port}");
        let connected = switchboard::mllp::MllpClient::connect_with(&addr, Duration::from_secs(5), Some(&tls)).await;
        let mut client = connected.unwrap_or_else(|e| panic!("{e}"));
        for n in 0..MESSAGES {
            exchange_accepted(&mut client, &format!("SAFE{n:03}")).await;
        }
    });
    let (plain, secure) = tokio::join!(plain, secure);
    stop.store(true, Ordering::Relaxed);
    plain.expect("every message of the plaintext sender is acknowledged");
    secure.expect("every message of the TLS sender is acknowledged");
    let mut rounds = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = flood.join_next().await {
            rounds += done.expect("attacker");
        }
    })
    .await;
    assert!(ended.is_ok(), "the attackers did not stop");
    assert!(rounds >= IDLE + HALF_OPEN + SLOW, "only {rounds} attacks");
    let status = engine.status();
    assert_eq!(status.item(PRODUCTION, "In").unwrap().received, MESSAGES as u64);
    assert_eq!(status.item(PRODUCTION, "Secure in").unwrap().received, MESSAGES as u64);
    // Thousands of closed connections, a few lines each.
    for item in ["In", "Secure in"] {
        let texts = event_texts(engine.store(), item);
        assert!(texts.len() <= 8 * 5, "{} events of {item}: {texts:#?}", texts.len());
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_port_is_taken_listens_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, port, squatter) = behind_a_taken_port(dir.path()).await;
    let error = engine.status().item(PRODUCTION, "In").unwrap().last_error.clone().unwrap_or_default();
    assert!(error.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{error}");
    assert!(error.contains("trying again in"), "{error}");
    // Tries at 1 s and 3 s fail without a new event each.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let listen_events = |engine: &switchboard::engine::Engine| {
        event_texts(engine.store(), "In").into_iter().filter(|t| t.contains("cannot listen")).count()
    };
    assert_eq!(listen_events(&engine), 1, "{:#?}", event_texts(engine.store(), "In"));
    let error = engine.status().item(PRODUCTION, "In").unwrap().last_error.clone().unwrap_or_default();
    assert!(error.contains("trying again in 4s"), "{error}");
    drop(squatter);
    // The next try, at 7 s, takes the port.
    let running = engine.wait_for(WAIT, |s| production_state(s) == ProductionState::Running).await;
    assert!(running, "{:?}", engine.status());
    event_naming(engine.store(), "In", &[&format!("listening on 127.0.0.1:{port} after 3 failed tries")]).await;
    let mut client = connect(port).await;
    exchange_accepted(&mut client, "BOUND2").await;
    engine.shutdown().await;
}
