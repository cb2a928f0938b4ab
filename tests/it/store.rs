//! The durable store on a real SQLite file: queues, group commit, replies
//! with their status, recovery after a crash, purge.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use switchboard::store::{
    Commanded, Durability, Event, EventLevel, Finished, InlineRoute, NewInbound, Refuse, RouteDecision, Routed,
    RoutedOutput, Status, Store, StoreOptions,
};

/// Message `n` (control id `M<n>`) as `ADT in` of production `adt`
/// receives it, for `targets`.
pub(crate) fn inbound(n: usize, targets: &[&str]) -> NewInbound {
    NewInbound {
        production: "adt".into(),
        service: "ADT in".into(),
        origin: "127.0.0.1:5000".into(),
        body: Bytes::from(format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M{n}|P|2.5\rPID|1||{n}\r")),
        control_id: Some(format!("M{n}")),
        message_type: Some("ADT^A01".into()),
        patient_id: None,
        patient_name: None,
        targets: targets.iter().map(ToString::to_string).collect(),
        routed: Vec::new(),
    }
}

/// `tasks` tasks, each committing `each` messages for "Out" one after the
/// other, all at once.
fn commit_concurrently(store: &Store, tasks: usize, each: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    store.commit_inbound(inbound(n * each + i, &["Out"])).await.unwrap();
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn a_batch_taken_from_a_queue_holds_a_bounded_size_of_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Three messages of 1.5 MiB (documents inside the message), then a
    // small one, then one larger than the bound on its own.
    let sized = |n: usize, len: usize| {
        let mut m = inbound(n, &["Out"]);
        let mut body = m.body.to_vec();
        body.extend(std::iter::repeat_n(b'A', len));
        m.body = Bytes::from(body);
        m
    };
    for n in 0..3 {
        store.commit_inbound(sized(n, 3 << 19)).await.unwrap();
    }
    store.commit_inbound(inbound(3, &["Out"])).await.unwrap();
    store.commit_inbound(sized(4, 5 << 20)).await.unwrap();
    let ids =
        |batch: Vec<switchboard::store::Queued>| batch.into_iter().map(|q| q.control_id.unwrap()).collect::<Vec<_>>();
    // Two fit in 4 MiB, a third would not.
    assert_eq!(ids(store.fetch_queue("adt", "Out", 10).unwrap()), ["M0", "M1"]);
    assert_eq!(ids(store.fetch_queue("adt", "Out", 1).unwrap()), ["M0"]);
    // A message larger than the bound still comes, alone.
    let all = store.fetch_queue("adt", "Out", 10).unwrap();
    store.mark_delivering(all.iter().map(|q| q.id).collect()).await.unwrap();
    assert_eq!(ids(store.fetch_queue("adt", "Out", 10).unwrap()), ["M2", "M3"]);
    let rest = store.fetch_queue("adt", "Out", 10).unwrap();
    store.mark_delivering(rest.iter().map(|q| q.id).collect()).await.unwrap();
    assert_eq!(ids(store.fetch_queue("adt", "Out", 10).unwrap()), ["M4"]);
}

/// Reading on after a batch taken: the headers up to it are left out,
/// whatever their status says, and a header put back behind the point read
/// from is found again from the head.
#[tokio::test]
async fn a_queue_is_read_on_after_the_batch_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for n in 0..5 {
        store.commit_inbound(inbound(n, &["Out"])).await.unwrap();
    }
    let ids =
        |batch: &[switchboard::store::Queued]| batch.iter().map(|q| q.control_id.clone().unwrap()).collect::<Vec<_>>();
    let first = store.fetch_queue("adt", "Out", 2).unwrap();
    assert_eq!(ids(&first), ["M0", "M1"]);
    let last = first[1].id;
    // Not marked yet: from the head, the same two again; after them, the next.
    assert_eq!(ids(&store.fetch_queue("adt", "Out", 2).unwrap()), ["M0", "M1"]);
    assert_eq!(ids(&store.fetch_queue_after("adt", "Out", last, 2).unwrap()), ["M2", "M3"]);
    assert_eq!(ids(&store.fetch_queue_after("adt", "Out", last, 10).unwrap()), ["M2", "M3", "M4"]);
    store.mark_delivering(first.iter().map(|q| q.id).collect()).await.unwrap();
    assert_eq!(ids(&store.fetch_queue("adt", "Out", 2).unwrap()), ["M2", "M3"]);
    store.requeue(vec![first[0].id]).await.unwrap();
    assert_eq!(ids(&store.fetch_queue("adt", "Out", 2).unwrap()), ["M0", "M2"]);
    assert_eq!(ids(&store.fetch_queue_after("adt", "Out", last, 2).unwrap()), ["M2", "M3"]);
}

/// A first delivery by "Out" that completed, without a reply.
pub(crate) fn completed(header_id: i64) -> Finished {
    Finished {
        header_id,
        production: "adt".into(),
        item: "Out".into(),
        status: Status::Completed,
        attempts: 1,
        reply: None,
        error: None,
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap().0
}

#[tokio::test]
async fn inbound_is_queued_per_target_in_order_with_one_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut sessions = Vec::new();
    for n in 0..5 {
        let c = store.commit_inbound(inbound(n, &["ADT router", "Archive"])).await.unwrap();
        assert_eq!(c.queued.len(), 2);
        sessions.push(c);
    }
    assert_eq!(store.queue_depth("adt", "ADT router"), 5);
    assert_eq!(store.queue_depth("adt", "Archive"), 5);
    assert_eq!(store.queue_depth("adt", "ADT in"), 0);
    let head = store.fetch_queue("adt", "ADT router", 3).unwrap();
    let ids: Vec<_> = head.iter().map(|q| q.control_id.clone().unwrap()).collect();
    assert_eq!(ids, ["M0", "M1", "M2"]);
    // Both targets' headers share the session and the body bytes.
    let trace = store.session(sessions[0].session_id).unwrap();
    assert_eq!(trace.len(), 3);
    assert_eq!(trace[0].status, Status::Completed);
    assert_eq!(trace[0].target, "ADT in");
    assert_eq!(store.body(trace[1].id).unwrap(), store.body(trace[2].id).unwrap());
}

/// A router's outputs: the message as it came to "Lab out", and a
/// transformed one to "Archive".
fn lab_and_archive(archive_body: Bytes, control_id: Option<String>) -> Vec<RoutedOutput> {
    vec![
        RoutedOutput { target: "Lab out".into(), body: None, control_id: None },
        RoutedOutput { target: "Archive".into(), body: Some(archive_body), control_id },
    ]
}

/// `inbound` with a routing decision of "ADT router" already made: send to
/// "Lab out" and to "Archive" (transformed).
fn inbound_routed(n: usize, targets: &[&str]) -> NewInbound {
    let mut m = inbound(n, targets);
    m.routed = vec![InlineRoute {
        router: "ADT router".into(),
        decision: RouteDecision {
            status: Status::Completed,
            error: None,
            outputs: lab_and_archive(
                Bytes::from(format!("MSH|^~\\&|X||||||ADT^A01|T{n}|P|2.5\r")),
                Some(format!("T{n}")),
            ),
        },
    }];
    m
}

#[tokio::test]
async fn a_decision_made_on_receipt_is_applied_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c = store.commit_inbound(inbound_routed(1, &["ADT router", "Copy"])).await.unwrap();
    assert_eq!(c.routed, ["ADT router"]);
    assert_eq!(store.queue_depth("adt", "ADT router"), 0);
    assert_eq!((store.queue_depth("adt", "Lab out"), store.queue_depth("adt", "Archive")), (1, 1));
    assert_eq!(store.queue_depth("adt", "Copy"), 1, "a target that is not a router is queued as ever");

    // The trace is the one the router would have left from its queue.
    let trace = store.session(c.session_id).unwrap();
    let by_target = |t: &str| trace.iter().find(|h| h.target == t).unwrap().clone();
    let router = by_target("ADT router");
    assert_eq!(router.id, c.queued[0]);
    assert_eq!((router.status, router.attempts, router.parent_id), (Status::Completed, 1, Some(c.header_id)));
    for out in ["Lab out", "Archive"] {
        let h = by_target(out);
        assert_eq!((h.status, h.parent_id, h.source.as_str()), (Status::Queued, Some(router.id), "ADT router"));
    }
    assert_eq!(by_target("Lab out").control_id.as_deref(), Some("M1"));
    assert_eq!(by_target("Archive").control_id.as_deref(), Some("T1"));
    assert_eq!(store.body(by_target("Lab out").id).unwrap(), store.body(c.header_id).unwrap());
    assert_eq!(
        store.body(by_target("Archive").id).unwrap().unwrap(),
        Bytes::from_static(b"MSH|^~\\&|X||||||ADT^A01|T1|P|2.5\r")
    );

    // A decision to discard finishes the router's header and queues nothing.
    let mut discarded = inbound(2, &["ADT router"]);
    discarded.routed = vec![InlineRoute {
        router: "ADT router".into(),
        decision: RouteDecision { status: Status::Discarded, error: Some("no rule matched".into()), outputs: vec![] },
    }];
    let c = store.commit_inbound(discarded).await.unwrap();
    let h = store.header(c.queued[0]).unwrap().unwrap();
    assert_eq!((h.status, h.error.as_deref()), (Status::Discarded, Some("no rule matched")));
    assert_eq!(store.queue_depth("adt", "Lab out"), 1);
}

#[tokio::test]
async fn a_decision_made_on_receipt_waits_behind_the_routers_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.commit_inbound(inbound(1, &["ADT router"])).await.unwrap();
    // Submitted together, so they may share a commit with each other: the
    // first is queued for the router, and the second must then wait behind
    // it however the group is cut.
    let (second, third) = tokio::join!(
        store.commit_inbound(inbound_routed(2, &["ADT router"])),
        store.commit_inbound(inbound_routed(3, &["ADT router"]))
    );
    let (second, third) = (second.unwrap(), third.unwrap());
    assert!(second.routed.is_empty() && third.routed.is_empty(), "routed past a backlog");
    assert_eq!(store.queue_depth("adt", "ADT router"), 3);
    assert_eq!(store.queue_depth("adt", "Lab out"), 0);
    let queued: Vec<_> = store.fetch_queue("adt", "ADT router", 10).unwrap().iter().map(|q| q.id).collect();
    assert_eq!(queued, [first.queued[0], second.queued[0], third.queued[0]]);

    // Once the router has worked through its queue, decisions apply again,
    // and every output is queued after those of the backlog.
    for id in queued {
        let to_lab = vec![RoutedOutput { target: "Lab out".into(), body: None, control_id: None }];
        store
            .commit_routed(Routed {
                header_id: id,
                decision: RouteDecision { status: Status::Completed, error: None, outputs: to_lab },
            })
            .await
            .unwrap();
    }
    let fourth = store.commit_inbound(inbound_routed(4, &["ADT router"])).await.unwrap();
    assert_eq!(fourth.routed, ["ADT router"]);
    let at_lab: Vec<_> =
        store.fetch_queue("adt", "Lab out", 10).unwrap().into_iter().map(|q| q.control_id.unwrap()).collect();
    assert_eq!(at_lab, ["M1", "M2", "M3", "M4"]);
}

#[tokio::test]
async fn routing_and_delivery_record_status_and_reply_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c = store.commit_inbound(inbound(1, &["ADT router"])).await.unwrap();
    let router_header = c.queued[0];
    let out = store
        .commit_routed(Routed {
            header_id: router_header,
            decision: RouteDecision {
                status: Status::Completed,
                error: None,
                outputs: lab_and_archive(Bytes::from_static(b"MSH|^~\\&|X"), None),
            },
        })
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(store.queue_depth("adt", "ADT router"), 0);
    assert_eq!(store.queue_depth("adt", "Lab out"), 1);
    assert_eq!(store.body(out[1]).unwrap().unwrap(), Bytes::from_static(b"MSH|^~\\&|X"));

    // Routing the same header twice does nothing the second time.
    let again = store
        .commit_routed(Routed {
            header_id: router_header,
            decision: RouteDecision { status: Status::Completed, error: None, outputs: vec![] },
        })
        .await
        .unwrap();
    assert!(again.is_empty());

    store.mark_delivering(vec![out[0]]).await.unwrap();
    assert_eq!(store.queue_depth("adt", "Lab out"), 1, "delivering still counts as pending");
    assert!(store.fetch_queue("adt", "Lab out", 10).unwrap().is_empty(), "taken messages are not handed out twice");
    let reply = Bytes::from_static(b"MSH|^~\\&|LAB|L|A|B|20261128||ACK^A01^ACK|1|P|2.5\rMSA|AE|M1|bad\r");
    store
        .finish(Finished {
            header_id: out[0],
            production: "adt".into(),
            item: "Lab out".into(),
            status: Status::Suspended,
            attempts: 1,
            reply: Some(reply.clone()),
            error: Some("AE: bad".into()),
        })
        .await
        .unwrap();
    let h = store.header(out[0]).unwrap().unwrap();
    assert_eq!((h.status, h.attempts, h.error.as_deref()), (Status::Suspended, 1, Some("AE: bad")));
    assert_eq!(store.reply(out[0]).unwrap(), Some(reply));
    assert_eq!(store.queue_depth("adt", "Lab out"), 0);

    // A resend puts it back in the queue.
    assert!(store.resend(out[0]).await.unwrap());
    assert_eq!(store.queue_depth("adt", "Lab out"), 1);
    assert!(!store.resend(out[0]).await.unwrap(), "only finished messages can be resent");
}

#[tokio::test]
async fn concurrent_commits_share_groups_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tasks = commit_concurrently(&store, 64, 20);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.queue_depth("adt", "Out"), 64 * 20);
    store.close().await;
    let (reopened, recovered) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    assert_eq!(recovered, 0);
    assert_eq!(reopened.queue_depth("adt", "Out"), 64 * 20, "depth is rebuilt from the file");
    assert!(reopened.commit_inbound(inbound(0, &[])).await.is_ok());
    store.commit_inbound(inbound(0, &[])).await.expect_err("a closed store refuses writes");
}

#[tokio::test]
async fn a_failing_operation_is_undone_alone_and_its_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Submitted together, so they share groups with the failing one.
    let commits = futures_util::future::join_all((0..32).map(|n| store.commit_inbound(inbound(n, &["Out"]))));
    let bad = store.commit_routed(Routed {
        header_id: 987_654,
        decision: RouteDecision { status: Status::Completed, error: None, outputs: vec![] },
    });
    let (commits, bad) = tokio::join!(commits, bad);
    bad.expect_err("routing a header that does not exist fails");
    let mut ids = Vec::new();
    for c in commits {
        ids.extend(c.expect("the other operations of the group commit").queued);
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 32, "every header got its own id");
    assert_eq!(store.queue_depth("adt", "Out"), 32);
    let queued: Vec<i64> = store.fetch_queue("adt", "Out", 100).unwrap().iter().map(|q| q.id).collect();
    assert_eq!(queued, unique);
    for id in &ids {
        let header = store.header(*id).unwrap().unwrap();
        let service = store.header(header.session_id).unwrap().unwrap();
        assert_eq!(
            (service.id, service.target.as_str()),
            (header.session_id, "ADT in"),
            "session id is the service's header"
        );
    }
}

/// The fault hook fails exactly the commits it names, with SQLite's own
/// full-disk error, undoes them alone, and lets everything through once
/// cleared.
#[tokio::test]
async fn the_fault_hook_refuses_what_it_names_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.commit_inbound(inbound(1, &["Out"])).await.unwrap().queued[0];
    store.fault_hook().refuse(Refuse::Results);
    let error = store.finish(completed(first)).await.unwrap_err().to_string();
    assert!(error.contains("database or disk is full"), "{error}");
    store.commit_inbound(inbound(2, &["Out"])).await.expect("a received message is not a result");
    assert_eq!(store.header(first).unwrap().unwrap().status, Status::Queued, "the refused result is undone");

    store.fault_hook().refuse(Refuse::Message { control_id: "M3".into() });
    store.finish(completed(first)).await.expect("results are let through again");
    let refused = store.receive_inbound(inbound(3, &["Out"])).await.expect("durable in the inbound log");
    let behind = store.receive_inbound(inbound(4, &["Out"])).await.expect("durable in the inbound log");
    let waited = tokio::time::timeout(Duration::from_millis(1500), behind.wait()).await;
    assert!(waited.is_err(), "a message received later was committed ahead of the refused one");
    store.fault_hook().clear();
    // Held by the writer and committed on its next try, about a second on.
    let committed = tokio::time::timeout(Duration::from_secs(10), refused.wait()).await.expect("committed in time");
    assert!(committed.is_ok(), "{committed:?}");
    // M2, M3 and M4 (M1 is completed), in the order received.
    for _ in 0..100 {
        if store.queue_depth("adt", "Out") == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued: Vec<Option<String>> =
        store.fetch_queue("adt", "Out", 10).unwrap().into_iter().map(|q| q.control_id).collect();
    assert_eq!(queued, [Some("M2".into()), Some("M3".into()), Some("M4".into())]);
}

#[tokio::test]
async fn queue_depths_are_kept_in_the_file_and_rebuilt_by_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&dir);
    for n in 0..5 {
        store.commit_inbound(inbound(n, &["Out", "Archive"])).await.unwrap();
    }
    let head = store.fetch_queue("adt", "Out", 2).unwrap();
    for q in &head {
        store.finish(completed(q.id)).await.unwrap();
    }
    store.close().await;
    let depth = |conn: &rusqlite::Connection, item: &str| -> i64 {
        conn.query_row("SELECT depth FROM queue_depth WHERE production = 'adt' AND item = ?1", [item], |r| r.get(0))
            .unwrap()
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!((depth(&conn, "Out"), depth(&conn, "Archive")), (3, 5));
    // A store written before the counters existed: the migration counts.
    conn.execute_batch(
        "DROP TABLE queue_depth;
         DROP TABLE inbound_log;
         DROP INDEX header_status;
         DROP INDEX header_control;
         DROP INDEX header_patient;
         ALTER TABLE header DROP COLUMN patient_id;
         ALTER TABLE header DROP COLUMN patient_name;
         ALTER TABLE header DROP COLUMN resent_from;
         ALTER TABLE header DROP COLUMN grouped;
         CREATE INDEX header_created ON header(created_at);
         CREATE INDEX header_body ON header(body_id);
         CREATE INDEX body_created ON body(created_at);
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    // Nor did it have an inbound log.
    for n in 0..2 {
        std::fs::remove_file(format!("{}-inbound-{n}", path.display())).unwrap();
    }
    let reopened = Store::open(&path, StoreOptions::default()).unwrap().0;
    assert_eq!(reopened.queue_depth("adt", "Out"), 3);
    assert_eq!(reopened.queue_depth("adt", "Archive"), 5);
    reopened.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE '%created' OR name = 'header_body'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "the indexes the purge no longer needs are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let wal = dir.path().join("store.db-wal");
    let store =
        Store::open(&path, StoreOptions { durability: Durability::Normal, ..StoreOptions::default() }).unwrap().0;
    let writers = commit_concurrently(&store, 8, 5000);
    let mut largest = 0;
    while !writers.iter().all(tokio::task::JoinHandle::is_finished) {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(store.queue_depth("adt", "Out"), 40_000);
    // Written without checkpoints, the log would hold every page of every
    // commit: more than 300 MB here.
    assert!(largest < 128 << 20, "the log is checkpointed and restarted while writes go on: {largest} bytes");
    // Once traffic pauses, the log is copied and then cut back.
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.commit_inbound(inbound(100_000 + n, &["Out"])).await.unwrap();
    }
    let after = std::fs::metadata(&wal).unwrap().len();
    assert!(after <= 17 << 20, "the log is truncated to journal_size_limit after a burst: {after} bytes");
}

/// Once `close` returns, no connection of the store is open, even with a
/// checkpoint just nudged by the last commit: the files are at rest for a
/// backup or a copy, and SQLite lets the file leave WAL mode at once.
#[tokio::test]
async fn close_returns_with_every_connection_of_the_store_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    for round in 0..3 {
        let store = open(&dir);
        for n in 0..20 {
            store.commit_inbound(inbound(round * 100 + n, &["Out"])).await.unwrap();
        }
        store.close().await;
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "round {round}: another connection is still open");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    }
}

#[tokio::test]
async fn delivering_messages_return_to_the_head_of_the_queue_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store =
        Store::open(&path, StoreOptions { durability: Durability::Normal, ..StoreOptions::default() }).unwrap().0;
    for n in 0..4 {
        store.commit_inbound(inbound(n, &["Out"])).await.unwrap();
    }
    let head: Vec<i64> = store.fetch_queue("adt", "Out", 2).unwrap().iter().map(|q| q.id).collect();
    store.mark_delivering(head.clone()).await.unwrap();
    assert_eq!(store.fetch_queue("adt", "Out", 10).unwrap().len(), 2);
    // No graceful stop: the process just goes away.
    drop(store);
    let (store, recovered) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(recovered, 2);
    let again: Vec<i64> = store.fetch_queue("adt", "Out", 10).unwrap().iter().map(|q| q.id).collect();
    assert_eq!(&again[..2], &head[..], "recovered messages are first again");
    assert_eq!(again.len(), 4);
}

#[tokio::test]
async fn commanded_state_item_flags_and_events_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.commanded_state("adt").unwrap(), None);
    store.set_commanded_state("adt", Commanded::Stopped).await.unwrap();
    store.set_commanded_state("adt", Commanded::Running).await.unwrap();
    store.set_item_enabled("adt", "Lab out", false).await.unwrap();
    store
        .record_event(Event {
            level: EventLevel::Info,
            production: Some("adt".into()),
            item: None,
            kind: "start".into(),
            text: "started by mqtt".into(),
        })
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir);
    assert_eq!(store.commanded_state("adt").unwrap(), Some(Commanded::Running));
    assert_eq!(store.item_enabled("adt", "Lab out").unwrap(), Some(false));
    assert_eq!(store.item_enabled("adt", "ADT in").unwrap(), None);
    let events = store.recent_events(10).unwrap();
    assert_eq!(events[0].text, "started by mqtt");
}

/// A purge of many messages keeps the write-ahead log bounded. Its
/// batches follow each other so closely that the checkpoint thread seldom
/// gets the write lock it needs to start the log over, so the log grew
/// with every batch: in the one-hour soak, a purge of 170,000 headers took
/// it to 144 MB. The writer now starts it over itself, between two
/// commits, once it is past 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_purge_keeps_the_write_ahead_log_bounded() {
    const MESSAGES: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { durability: Durability::Normal, ..StoreOptions::default() };
    let store = Store::open(&dir.path().join("store.db"), options).unwrap().0;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in (t..MESSAGES).step_by(8) {
                    let id = store.commit_inbound(inbound(n, &["Out"])).await.unwrap().queued[0];
                    store.finish(completed(id)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("{MESSAGES} messages in {:?}", started.elapsed());
    let wal = dir.path().join("store.db-wal");
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (wal, largest, done) = (wal.clone(), largest.clone(), done.clone());
        std::thread::spawn(move || {
            // Bounded: the purge takes seconds.
            for _ in 0..60_000 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
                largest.fetch_max(len, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let purging = std::time::Instant::now();
    let stats = store.purge(SystemTime::now() + Duration::from_secs(1), 500).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("purged {} headers in {:?}; the log reached {largest} bytes", stats.headers, purging.elapsed());
    assert_eq!(stats.headers, 2 * MESSAGES as u64);
    // At most a batch past the 32 MiB (23 to 34 MiB seen, alone and three
    // at once beside a busy loop); without the writer's own truncation,
    // 129 MiB.
    assert!(largest < 48 << 20, "the write-ahead log reached {} MiB", largest >> 20);
    store.close().await;
}

#[tokio::test]
async fn purge_removes_finished_history_keeps_pending_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let big = "X".repeat(4000);
    let mut finished = Vec::new();
    for n in 0..2000 {
        let mut m = inbound(n, &["Out"]);
        m.body = Bytes::from(format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M{n}|P|2.5\rNTE|1||{big}\r"));
        finished.push(store.commit_inbound(m).await.unwrap().queued[0]);
    }
    let pending = store.commit_inbound(inbound(9999, &["Out"])).await.unwrap().queued[0];
    for id in &finished {
        store
            .finish(Finished {
                header_id: *id,
                production: "adt".into(),
                item: "Out".into(),
                status: Status::Completed,
                attempts: 1,
                reply: Some(Bytes::from_static(b"MSH|^~\\&\rMSA|AA|x")),
                error: None,
            })
            .await
            .unwrap();
    }
    store.log_event(Event {
        level: EventLevel::Info,
        production: None,
        item: None,
        kind: "x".into(),
        text: "y".into(),
    });
    // Let the WAL settle into the main file before measuring.
    store.purge(SystemTime::UNIX_EPOCH, 100).await.unwrap();
    let before = store.size_on_disk();
    let stats = store.purge(SystemTime::now() + Duration::from_secs(1), 100).await.unwrap();
    let after = store.size_on_disk();
    assert_eq!(stats.headers, 2 * 2000 + 1, "the service headers and the finished deliveries");
    assert_eq!(stats.bodies, 2000);
    assert!(stats.events >= 1);
    // The inbound log's two files (16 MiB, written over in place) count in
    // the size and stay; the database gives back what the bodies took.
    assert!(after >= 16 * 1024 * 1024, "the inbound log counts: {after} bytes");
    let bodies = 2000 * big.len() as u64;
    assert!(before - after >= bodies * 3 / 4, "the store should shrink by the bodies: {before} -> {after} bytes");
    // The pending message, its body and its queue position survive.
    assert_eq!(store.queue_depth("adt", "Out"), 1);
    assert_eq!(store.fetch_queue("adt", "Out", 10).unwrap()[0].id, pending);
    assert!(store.body(pending).unwrap().is_some());
    assert!(store.reply(finished[0]).unwrap().is_none(), "replies go with their headers");
}

#[tokio::test]
async fn purge_stops_at_the_cutoff_and_keeps_bodies_still_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let finish = completed;
    // Old: one finished message, one still pending (its body is shared
    // with its finished service header).
    let done = store.commit_inbound(inbound(1, &["Out"])).await.unwrap().queued[0];
    store.finish(finish(done)).await.unwrap();
    let pending = store.commit_inbound(inbound(2, &["Out"])).await.unwrap().queued[0];
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Young: finished, but after the cutoff.
    let young = store.commit_inbound(inbound(3, &["Out"])).await.unwrap().queued[0];
    store.finish(finish(young)).await.unwrap();

    // A batch of one header at a time walks the whole table.
    let stats = store.purge(cutoff, 1).await.unwrap();
    assert_eq!((stats.headers, stats.bodies), (3, 1), "two service headers and one delivery; one body");
    assert!(store.header(done).unwrap().is_none());
    assert!(store.body(pending).unwrap().is_some(), "a pending message keeps its body");
    assert!(store.header(young).unwrap().is_some() && store.body(young).unwrap().is_some());
    store.finish(finish(pending)).await.unwrap();
    let stats = store.purge(cutoff, 100).await.unwrap();
    assert_eq!((stats.headers, stats.bodies), (1, 1), "the body goes with the last header using it");
}
