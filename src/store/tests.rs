//! Unit tests of a whole store: what it promises across a crash, a failed
//! commit or a restart.

use std::time::Duration;

use bytes::Bytes;

use super::model::BOOKKEEPING_BYTES;
use super::read::FETCH_QUEUE_SQL;
use super::*;

/// A received ADT^A01 with control id `M<n>` for the operation `Out`.
pub(super) fn inbound(n: usize) -> NewInbound {
    NewInbound {
        production: "p".into(),
        service: "In".into(),
        origin: "test".into(),
        body: Bytes::from(format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M{n}|P|2.5\r")),
        control_id: Some(format!("M{n}")),
        message_type: Some("ADT^A01".into()),
        patient_id: None,
        patient_name: None,
        targets: ["Out".to_owned()].into(),
        routed: Vec::new(),
    }
}

/// The first delivery of `header_id` by `Out`, completed without a
/// reply.
pub(super) fn completed(header_id: i64) -> Finished {
    Finished {
        header_id,
        production: "p".into(),
        item: "Out".into(),
        status: Status::Completed,
        attempts: 1,
        reply: None,
        error: None,
    }
}

/// A message in flight weighs its body, the bodies a router
/// transformed, and its bookkeeping; untransformed outputs share the
/// body and weigh nothing more.
#[test]
fn a_message_in_flight_weighs_its_bodies_and_its_bookkeeping() {
    let mut m = inbound(1);
    let body = m.body.len();
    assert_eq!(m.weight(), body + BOOKKEEPING_BYTES);
    let output = |body: Option<&'static [u8]>| RoutedOutput {
        target: "Out".into(),
        body: body.map(Bytes::from_static),
        control_id: None,
    };
    m.routed.push(InlineRoute {
        router: "Router".into(),
        decision: RouteDecision {
            status: Status::Completed,
            error: None,
            outputs: vec![output(None), output(Some(b"MSH|x")), output(Some(b"MSH|yy"))],
        },
    });
    assert_eq!(m.weight(), body + 5 + 6 + BOOKKEEPING_BYTES);
}

/// Messages acknowledged from the inbound log whose commit never
/// happened (the process was killed or the machine lost power in
/// between) are committed when the store opens, and only those.
/// A purged body is deleted without SQLite looking through every header
/// for one still pointing to it. The bundled SQLite enforces foreign keys
/// unless told not to, and no index on `header.body_id` has existed since
/// migration 5, so each body cost a scan of the whole table: a purge batch
/// of 500 headers took 13.2 s on a store of 531,498 headers, holding every
/// commit behind it (5 ms without the checks).
#[test]
fn deleting_a_body_does_not_look_for_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_connection(&dir.path().join("s.db")).unwrap();
    schema::migrate(&mut conn).unwrap();
    let program: Vec<String> = conn
        .prepare("EXPLAIN DELETE FROM body WHERE id = ?1")
        .unwrap()
        .query_map([1], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!program.iter().any(|op| op.starts_with("Fk")), "{program:?}");
}

#[tokio::test]
async fn messages_logged_but_not_committed_are_committed_at_open_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    for n in 0..2 {
        store.commit_inbound(inbound(n)).await.unwrap();
    }
    store.close().await;
    drop(store);
    let applied = || -> i64 {
        let conn = Connection::open(&path).unwrap();
        conn.query_row("SELECT applied FROM inbound_log", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(applied(), 2);
    // As the log's thread leaves the files when the writer never got
    // to commit: an older record (already committed) in one file, the
    // two after it in the other.
    let write = |n: usize, records: &[(u64, usize)]| {
        let mut bytes = Vec::new();
        for &(seq, message) in records {
            inbound_log::encode(seq, &inbound(message), &mut bytes);
        }
        std::fs::write(inbound_log::segment_path(&path, n), bytes).unwrap();
    };
    write(0, &[(2, 1)]);
    write(1, &[(3, 2), (4, 3)]);
    // What the log's files hold after it (zeros, or older records) is
    // not read as records.
    let zeros = vec![0; 1000];
    for n in 0..2 {
        let mut file = std::fs::OpenOptions::new().append(true).open(inbound_log::segment_path(&path, n)).unwrap();
        std::io::Write::write_all(&mut file, &zeros).unwrap();
    }
    for _ in 0..2 {
        let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.queue_depth("p", "Out"), 4);
        let ids: Vec<_> =
            store.fetch_queue("p", "Out", 10).unwrap().into_iter().map(|q| q.control_id.unwrap()).collect();
        assert_eq!(ids, ["M0", "M1", "M2", "M3"]);
        assert_eq!(applied(), 4);
        // Killed again before the files were written over: nothing is
        // committed twice.
        drop(store);
        write(1, &[(3, 2), (4, 3)]);
    }
}

/// Every committed message gives its room back: more than the bound
/// on bytes in flight goes through, one message after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_give_their_room_in_flight_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    let big = Bytes::from(vec![b'x'; 1024 * 1024]);
    let all = async {
        for n in 0..12 {
            let mut m = inbound(n);
            m.body = big.clone();
            store.commit_inbound(m).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("a commit waited for room that never came");
    assert_eq!(store.queue_depth("p", "Out"), 12);
}

/// An operation reads its queue for every batch it sends, with
/// different starting points and limits; the read stays compiled.
#[tokio::test]
async fn reading_a_queue_does_not_compile_its_statement_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    for n in 0..6 {
        store.commit_inbound(inbound(n)).await.unwrap();
    }
    let mut after = 0;
    for limit in [2, 2, 3, 1, 10] {
        let batch = store.fetch_queue_after("p", "Out", after, limit).unwrap();
        after = batch.last().map_or(0, |q| q.id);
    }
    assert_eq!(store.fetch_queue("p", "Out", 10).unwrap().len(), 6);
    let prepared_again = store
        .read(|c| Ok(c.prepare_cached(FETCH_QUEUE_SQL)?.get_status(rusqlite::StatementStatus::RePrepare)))
        .unwrap();
    assert_eq!(prepared_again, 0);
}

/// A database that refuses the header of message `M{n}` (a stand-in
/// for a full disk or a damaged file), and the statement that lifts it.
fn refuse_message(path: &Path, n: usize) -> &'static str {
    let refuse = format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON header WHEN NEW.control_id = 'M{n}'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;"
    );
    Connection::open(path).unwrap().execute_batch(&refuse).unwrap();
    "DROP TRIGGER refuse"
}

/// The control ids queued for `Out`, in order.
fn queued(store: &Store) -> Vec<String> {
    store.fetch_queue("p", "Out", 10).unwrap().into_iter().map(|q| q.control_id.unwrap()).collect()
}

/// A store with M1 committed, M2 refused (held) and M3 received after
/// it; returns the pending commits of M2 and M3 and the statement that
/// lifts the refusal.
async fn m2_refused(path: &Path) -> (Store, Pending<Committed>, Pending<Committed>, &'static str) {
    let (store, _) = Store::open(path, StoreOptions::default()).unwrap();
    store.commit_inbound(inbound(1)).await.unwrap();
    let lift = refuse_message(path, 2);
    let m2 = store.receive_inbound(inbound(2)).await.expect("durable in the log: acknowledged");
    let m3 = store.receive_inbound(inbound(3)).await.expect("durable in the log: acknowledged");
    tokio::time::sleep(Duration::from_millis(300)).await;
    (store, m2, m3, lift)
}

/// A caller that does not wait for the commit hears of it, once, on the
/// writer's thread: at once when it commits, and only when it finally
/// does for a message held back by a commit that failed.
#[tokio::test]
async fn a_function_given_with_a_received_message_is_called_once_at_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let told = |n: usize| {
        let tx = tx.clone();
        move |outcome: Result<Committed, StoreError>| {
            let _ = tx.send((n, outcome.map(|c| c.queued.len()).map_err(|e| e.to_string())));
        }
    };
    store.receive_inbound_then(inbound(1), told(1)).await.unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (1, Ok(1)));
    let lift = refuse_message(&path, 2);
    store.receive_inbound_then(inbound(2), told(2)).await.expect("durable in the log: acknowledged");
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err(), "told of a commit that was refused");
    Connection::open(&path).unwrap().execute_batch(lift).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (2, Ok(1)));
    store.close().await;
    assert!(rx.try_recv().is_err(), "told twice");
    assert_eq!(queued(&store), ["M1", "M2"]);
}

/// A received message the writer cannot commit (its sender has the
/// ACK) is tried again until it is committed, and the messages received
/// after it wait behind it instead of overtaking it.
#[tokio::test]
async fn a_received_message_that_cannot_be_committed_is_retried_and_not_overtaken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, m2, m3, lift) = m2_refused(&path).await;
    assert_eq!(queued(&store), ["M1"], "a message overtook the one held back");
    Connection::open(&path).unwrap().execute_batch(lift).unwrap();
    let wait = Duration::from_secs(10);
    tokio::time::timeout(wait, m2.wait()).await.expect("M2 was not retried").unwrap();
    tokio::time::timeout(wait, m3.wait()).await.expect("M3 was not committed").unwrap();
    assert_eq!(queued(&store), ["M1", "M2", "M3"]);
    store.close().await;
    drop(store);
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(queued(&store), ["M1", "M2", "M3"], "the next start applied a message again");
}

/// A transaction that fails as a whole (here the update of how far the
/// inbound log is committed) loses none of its received messages: they
/// are committed before those received after them.
#[tokio::test]
async fn a_failed_commit_of_a_whole_group_loses_no_received_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    store.commit_inbound(inbound(1)).await.unwrap();
    let refuse = "CREATE TRIGGER refuse BEFORE UPDATE ON inbound_log BEGIN SELECT RAISE(ABORT, 'refused'); END;";
    Connection::open(&path).unwrap().execute_batch(refuse).unwrap();
    let m2 = store.receive_inbound(inbound(2)).await.expect("durable in the log: acknowledged");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Connection::open(&path).unwrap().execute_batch("DROP TRIGGER refuse").unwrap();
    let wait = Duration::from_secs(10);
    let m3 = tokio::time::timeout(wait, store.commit_inbound(inbound(3))).await.expect("M3 was not committed");
    m3.unwrap();
    tokio::time::timeout(wait, m2.wait()).await.expect("M2 was not retried").unwrap();
    assert_eq!(queued(&store), ["M1", "M2", "M3"]);
    store.close().await;
    drop(store);
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(queued(&store), ["M1", "M2", "M3"]);
}

/// While a received message cannot be committed, the ones after it fill
/// the bound in flight and acknowledgments wait; the store still closes
/// promptly, and the next start commits every message that was
/// acknowledged, in order and once.
#[tokio::test]
async fn a_store_that_cannot_commit_stops_acknowledging_and_still_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let options = StoreOptions { durability: Durability::Normal, ..StoreOptions::default() };
    let (store, _) = Store::open(&path, options).unwrap();
    store.commit_inbound(inbound(1)).await.unwrap();
    let lift = refuse_message(&path, 2);
    let store = Arc::new(store);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let sender = {
        let (store, acknowledged) = (store.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for n in 2..200 {
                // 64 KiB each: the 4 MiB bound is reached after about 64.
                let body = format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M{n}|P|2.5\r{}", "x".repeat(64 * 1024));
                let message = NewInbound { body: Bytes::from(body), ..inbound(n) };
                if store.receive_inbound(message).await.is_err() {
                    break;
                }
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled = acknowledged.load(Ordering::SeqCst);
    assert!((32..150).contains(&stalled), "{stalled} acknowledged: the bound in flight did not hold them back");
    tokio::time::timeout(Duration::from_secs(10), store.close()).await.expect("the store did not close");
    tokio::time::timeout(Duration::from_secs(10), sender).await.expect("the sender still waits").unwrap();
    let acknowledged = acknowledged.load(Ordering::SeqCst) as usize;
    drop(store);
    Connection::open(&path).unwrap().execute_batch(lift).unwrap();
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    // The whole queue (a batch taken from it holds 4 MiB at most).
    let all: Vec<String> = store
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT control_id FROM header WHERE target = 'Out' AND status = 'queued' ORDER BY id")?;
            let ids = stmt.query_map([], |r| r.get(0))?;
            ids.collect()
        })
        .unwrap();
    let expected: Vec<String> = (1..=acknowledged + 1).map(|n| format!("M{n}")).collect();
    assert_eq!(all[..expected.len()], expected[..], "an acknowledged message is missing or out of order");
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a message was committed twice");
}

/// Messages still held back when the store closes are in the inbound
/// log, and the next start commits them, in order and once.
#[tokio::test]
async fn messages_held_back_at_close_are_committed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, m2, m3, lift) = m2_refused(&path).await;
    store.close().await;
    assert!(m2.wait().await.is_err(), "M2 cannot have been committed");
    assert!(m3.wait().await.is_err(), "M3 was committed ahead of M2");
    drop(store);
    Connection::open(&path).unwrap().execute_batch(lift).unwrap();
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(queued(&store), ["M1", "M2", "M3"]);
}

/// The writer and the checkpoints run at the lowest CPU priority; the
/// inbound log's thread, which acknowledgments wait for, does not.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_background_threads_run_at_the_lowest_priority() {
    // The nice value and the scheduling policy of each of this
    // process's threads with this name.
    fn priority_of(name: &str) -> Vec<(i64, i64)> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the name in parentheses: the nice value is
            // the 19th field of the line, the policy the 41st.
            let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
            if comm.trim_end() == name {
                let field = |n: usize| rest.split(' ').nth(n - 3).unwrap().parse().unwrap();
                found.push((field(19), field(41)));
            }
        }
        found
    }
    const SCHED_OTHER: i64 = 0;
    const SCHED_IDLE: i64 = 5;
    // Whether this machine lets a thread enter the idle class (a
    // seccomp policy could refuse it; the store then keeps nice 19).
    let idle_allowed = std::thread::spawn(|| {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, idle)
            .is_ok()
    })
    .join()
    .unwrap();
    let lowest = (i64::from(disk::BACKGROUND_NICE), if idle_allowed { SCHED_IDLE } else { SCHED_OTHER });
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    // Each thread names itself and lowers its own priority as it starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let background = ["store-writer", "store-checkpoin"];
    while background.iter().any(|name| !priority_of(name).contains(&lowest)) || priority_of("store-inbound").is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            ["store-inbound", background[0], background[1]].map(priority_of)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = priority_of("store-inbound");
    assert!(
        !log.is_empty() && log.iter().all(|&(nice, policy)| nice < lowest.0 && policy == SCHED_OTHER),
        "the inbound log's thread: {log:?}"
    );
    store.close().await;
}

/// An inbound log that cannot be read is an error naming it, never
/// taken for an empty one.
#[test]
fn an_unreadable_inbound_log_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    std::fs::create_dir(inbound_log::segment_path(&path, 1)).unwrap();
    let error = Store::open(&path, StoreOptions::default()).err().expect("the store must not open");
    assert!(
        matches!(&error, StoreError::Path { path: p, .. } if p.to_string_lossy().ends_with("store.db-inbound-1")),
        "{error}"
    );
}

/// A logged message that cannot be committed at open stops the store
/// from opening, with the log kept, rather than being dropped.
#[tokio::test]
async fn a_logged_message_that_cannot_be_committed_keeps_the_store_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    store.commit_inbound(inbound(0)).await.unwrap();
    store.close().await;
    drop(store);
    let mut bytes = Vec::new();
    inbound_log::encode(2, &inbound(1), &mut bytes);
    inbound_log::encode(3, &inbound(2), &mut bytes);
    std::fs::write(inbound_log::segment_path(&path, 1), bytes).unwrap();
    // A database that refuses the second message (a stand-in for a
    // full disk or a damaged file).
    let refuse = "CREATE TRIGGER refuse BEFORE INSERT ON header WHEN NEW.control_id = 'M2'
                      BEGIN SELECT RAISE(ABORT, 'refused'); END;";
    Connection::open(&path).unwrap().execute_batch(refuse).unwrap();
    let error = Store::open(&path, StoreOptions::default()).err().expect("the store must not open");
    assert!(matches!(&error, StoreError::InboundLog { seq: 3, reason } if reason.contains("refused")), "{error}");
    assert!(error.to_string().contains("message 3 of the inbound log"), "{error}");
    let conn = Connection::open(&path).unwrap();
    let m1: i64 = conn.query_row("SELECT COUNT(*) FROM header WHERE control_id = 'M1'", [], |r| r.get(0)).unwrap();
    assert_eq!(m1, 0, "the failed open committed part of the log");
    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    drop(conn);
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    let ids: Vec<_> = store.fetch_queue("p", "Out", 10).unwrap().into_iter().map(|q| q.control_id.unwrap()).collect();
    assert_eq!(ids, ["M0", "M1", "M2"], "the log was kept and applied by the next open");
}

/// A delivery result whose commit fails as a whole (here the update of
/// the queue depth it changes) is held: its message is not read from
/// the queue again while it waits, and a restart meanwhile applies it
/// from the delivery log.
#[tokio::test]
async fn a_result_that_cannot_be_committed_keeps_its_message_out_of_the_queue_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.extend(store.commit_inbound(inbound(n)).await.unwrap().queued);
    }
    let refuse = "CREATE TRIGGER refuse BEFORE UPDATE ON queue_depth BEGIN SELECT RAISE(ABORT, 'refused'); END;";
    Connection::open(&path).unwrap().execute_batch(refuse).unwrap();
    store.note_finished(completed(ids[0])).await.expect("noted in the delivery log");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.header(ids[0]).unwrap().unwrap().status, Status::Queued, "the commit was refused");
    assert_eq!(queued(&store), ["M2"], "a delivered message was offered again");
    store.close().await;
    drop(store);
    Connection::open(&path).unwrap().execute_batch("DROP TRIGGER refuse").unwrap();
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.header(ids[0]).unwrap().unwrap().status, Status::Completed);
    assert_eq!(queued(&store), ["M2"]);
    assert_eq!(store.queue_depth("p", "Out"), 1);
}

/// A result noted in the delivery log whose commit never happened (the
/// process was killed in between) is applied when the store opens.
#[tokio::test]
async fn results_noted_but_not_committed_are_applied_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    let mut queued = Vec::new();
    for n in 0..3 {
        queued.extend(store.commit_inbound(inbound(n)).await.unwrap().queued);
    }
    store.mark_delivering(queued[..2].to_vec()).await.unwrap();
    store.close().await;
    drop(store);
    let ack = Bytes::from_static(b"MSH|^~\\&|R|R|S|S|20261128||ACK|9|P|2.5\rMSA|AA|M0\r");
    {
        let (log, _) = DeliveryLog::open(&path).unwrap();
        let noted = |header_id, status, attempts, reply, error| Noted { header_id, status, attempts, reply, error };
        log.note(&noted(queued[0], Status::Completed, 1, Some(ack.clone()), None)).unwrap();
        log.note(&noted(queued[1], Status::Suspended, 2, None, Some("no reply (:~=S)".into()))).unwrap();
    }
    let (store, recovered) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(recovered, 0, "the noted results are applied before delivering messages are requeued");
    let first = store.header(queued[0]).unwrap().unwrap();
    assert_eq!((first.status, first.attempts), (Status::Completed, 1));
    assert_eq!(first.error, None);
    assert_eq!(store.reply(queued[0]).unwrap(), Some(ack), "the reply is recorded with its status");
    let second = store.header(queued[1]).unwrap().unwrap();
    assert_eq!((second.status, second.error.as_deref()), (Status::Suspended, Some("no reply (:~=S)")));
    assert_eq!(store.header(queued[2]).unwrap().unwrap().status, Status::Queued);
    assert_eq!(store.queue_depth("p", "Out"), 1);
    let log = std::fs::metadata(beside(&path, "deliveries")).unwrap();
    assert_eq!(log.len(), 0, "the log is emptied once applied");
    store.close().await;
    let (store, _) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.queue_depth("p", "Out"), 1, "the persisted depth matches");
}

/// The commanded state is stored as text: what is written reads back the
/// same, and a value this version does not know (written by another one)
/// counts as running, which leaves `autostart` to decide, rather than
/// failing the start.
#[tokio::test]
async fn a_commanded_state_reads_back_and_an_unknown_one_counts_as_running() {
    assert_eq!(Commanded::parse(Commanded::Running.as_str()), Commanded::Running);
    assert_eq!(Commanded::parse(Commanded::Stopped.as_str()), Commanded::Stopped);
    assert_eq!(Commanded::parse("paused"), Commanded::Running);
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    assert_eq!(store.commanded_state("adt").unwrap(), None);
    store.set_commanded_state("adt", Commanded::Stopped).await.unwrap();
    assert_eq!(store.commanded_state("adt").unwrap(), Some(Commanded::Stopped));
    store.set_commanded_state("adt", Commanded::Running).await.unwrap();
    assert_eq!(store.commanded_state("adt").unwrap(), Some(Commanded::Running));
    store.close().await;
}

/// `resend_all` works in batches; with batches of two, each batch takes
/// the lowest ids left of either status, and the last says it is done.
#[tokio::test]
async fn suspended_and_failed_messages_are_queued_again_in_batches_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(store.commit_inbound(inbound(n)).await.unwrap().queued[0]);
    }
    let statuses = [Status::Error, Status::Suspended, Status::Completed, Status::Suspended, Status::Suspended];
    for (id, status) in ids.iter().zip(statuses.iter().chain([Status::Error, Status::Discarded].iter())) {
        store.finish(Finished { status: *status, ..completed(*id) }).await.unwrap();
    }
    let mut after = 0;
    let mut batches = Vec::new();
    for _ in 0..10 {
        let batch = ResendBatch { production: "p".into(), item: "Out".into(), after, limit: 2 };
        let step = store.submit(|reply| Op::ResendBatch(batch, reply)).await.unwrap();
        batches.push((step.resent, step.after, step.done));
        after = step.after;
        if step.done {
            break;
        }
    }
    assert_eq!(batches, [(2, ids[1], false), (2, ids[4], false), (1, ids[5], true)]);
    let queued: Vec<i64> = store.fetch_queue("p", "Out", 10).unwrap().iter().map(|q| q.id).collect();
    assert_eq!(queued, [ids[0], ids[1], ids[3], ids[4], ids[5]]);
    assert_eq!(store.queue_depth("p", "Out"), 5);
}
