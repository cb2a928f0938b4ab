//! Finding messages and events for the viewer, and sending messages again,
//! on a real store: every filter and combinations of them checked against
//! every header read one by one, paging while messages arrive, searches
//! that stop at their budget and go on, copies sent again, the migration
//! from the schema before searches.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use switchboard::store::{
    Durability, Event, EventLevel, EventQuery, Finished, InlineRoute, MAX_PAGE, MessageDetail, MessagePage,
    MessageQuery, NewInbound, RouteDecision, RoutedOutput, SearchBudget, Status, Store, StoreError, StoreOptions,
};

const TYPES: [&str; 5] = ["ADT^A01", "ADT^A08", "ORU^R01", "ADT", "SIU^S12"];
const NAMES: [&str; 6] = ["Smith", "SMITHERS", "smyth", "O'Neil", "Doe_J", "100%"];

fn open(dir: &tempfile::TempDir) -> Store {
    let options = StoreOptions { durability: Durability::Normal, ..StoreOptions::default() };
    Store::open(&dir.path().join("store.db"), options).unwrap().0
}

/// The body of message `n` of production `production`: its type, control
/// id `C<n>`, patient `P<n % 7>` with a family name, and a note holding
/// `word<n % 5>`.
fn body(n: usize) -> String {
    let (kind, name) = (TYPES[n % TYPES.len()], NAMES[n % NAMES.len()]);
    format!(
        "MSH|^~\\&|A|B|C|D|20261128||{kind}|C{n}|P|2.5\rPID|1||P{}^^^H^MR~X{n}||{name}^JO\rNTE|1||word{} end\r",
        n % 7,
        n % 5
    )
}

/// Message `n` as a service receives it, for `targets`: a router
/// (`Router`, which decides on receipt and sends it to `Out` and to
/// `Archive`) or operations directly.
fn inbound(production: &str, n: usize, targets: &[&str]) -> NewInbound {
    let outputs = vec![
        RoutedOutput { target: "Out".into(), body: None, control_id: None },
        RoutedOutput { target: "Archive".into(), body: None, control_id: None },
    ];
    NewInbound {
        production: production.into(),
        service: "In".into(),
        origin: "127.0.0.1:5000".into(),
        body: Bytes::from(body(n)),
        control_id: Some(format!("C{n}")),
        message_type: Some(TYPES[n % TYPES.len()].into()),
        patient_id: Some(format!("P{}", n % 7)),
        patient_name: Some(NAMES[n % NAMES.len()].into()),
        targets: targets.iter().map(ToString::to_string).collect(),
        routed: vec![InlineRoute {
            router: "Router".into(),
            decision: RouteDecision { status: Status::Completed, error: None, outputs },
        }],
    }
}

fn finished(production: &str, item: &str, header_id: i64, status: Status) -> Finished {
    Finished {
        header_id,
        production: production.into(),
        item: item.into(),
        status,
        attempts: 1,
        reply: (status == Status::Completed).then(|| Bytes::from_static(b"MSH|^~\\&|||||||ACK|R|P|2.5\rMSA|AA|x")),
        error: (status != Status::Completed).then(|| "refused".to_owned()),
    }
}

/// A store with messages `0..n` of two productions, in batches a few
/// milliseconds apart (so that creation times differ), each routed to
/// `Out` and `Archive`; the deliveries of `Out` end completed, failed,
/// suspended or discarded, some stay queued and some delivering.
async fn populated(dir: &tempfile::TempDir, n: usize) -> Store {
    let store = open(dir);
    for batch in (0..n).collect::<Vec<_>>().chunks(10) {
        let commits = batch.iter().map(|&i| {
            let production = if i % 4 == 3 { "lab" } else { "adt" };
            store.commit_inbound(inbound(production, i, &["Router"]))
        });
        for c in futures_util::future::join_all(commits).await {
            c.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for production in ["adt", "lab"] {
        let queued = store.fetch_queue(production, "Out", n).unwrap();
        let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
        store.mark_delivering(ids.clone()).await.unwrap();
        for (k, id) in ids.into_iter().enumerate() {
            let status = match k % 8 {
                0 => Status::Error,
                1 => Status::Suspended,
                2 => Status::Discarded,
                3 => continue, // left delivering
                _ => Status::Completed,
            };
            store.finish(finished(production, "Out", id, status)).await.unwrap();
        }
        // Half of them back in the queue, as after a stop.
        let delivering: Vec<i64> = all(&store)
            .iter()
            .filter(|d| d.summary.production == production && d.summary.status == Status::Delivering)
            .map(|d| d.summary.id)
            .step_by(2)
            .collect();
        store.requeue(delivering).await.unwrap();
    }
    store
}

/// Every header, newest first, read one by one: the oracle.
fn all(store: &Store) -> Vec<MessageDetail> {
    let mut found = Vec::new();
    let mut misses = 0;
    for id in 1..1_000_000 {
        match store.message_detail(id).unwrap() {
            Some(d) => {
                misses = 0;
                found.push(d);
            }
            None if misses > 50 => break,
            None => misses += 1,
        }
    }
    found.reverse();
    found
}

/// Does `d` match `q`? The meaning of each filter, written plainly.
fn matches(q: &MessageQuery, d: &MessageDetail) -> bool {
    let s = &d.summary;
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let eq = |v: &Option<String>, field: &Option<String>| given(v).is_none_or(|v| field.as_deref() == Some(&*v));
    q.from.is_none_or(|t| s.created_at >= t)
        && q.to.is_none_or(|t| s.created_at < t)
        && given(&q.production).is_none_or(|p| s.production == p)
        && given(&q.item).is_none_or(|i| s.target == i)
        && q.status.is_none_or(|st| s.status == st)
        && given(&q.message_type).is_none_or(|t| {
            let stored = s.message_type.clone().unwrap_or_default();
            if t.contains('^') { stored == t } else { stored == t || stored.starts_with(&format!("{t}^")) }
        })
        && eq(&q.control_id, &s.control_id)
        && eq(&q.patient_id, &s.patient_id)
        && given(&q.patient_name).is_none_or(|prefix| {
            s.patient_name.as_deref().is_some_and(|n| n.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()))
        })
        && given(&q.text).is_none_or(|t| d.body.windows(t.len()).any(|w| w == t.as_bytes()))
}

/// Every page of a search, until it says nothing is left: the headers in
/// the order given, and the pages. Checks what holds for every page.
fn every_page(store: &Store, q: &MessageQuery, limit: usize, budget: SearchBudget) -> (Vec<i64>, Vec<MessagePage>) {
    let (mut ids, mut pages) = (Vec::new(), Vec::new());
    let mut before = None;
    for _ in 0..100_000 {
        let page = store.search_messages_within(q, before, limit, budget).unwrap();
        assert!(page.messages.len() <= limit, "{} messages for a limit of {limit}", page.messages.len());
        assert!(
            page.scanned as usize <= budget.headers,
            "{} examined for a budget of {}",
            page.scanned,
            budget.headers
        );
        ids.extend(page.messages.iter().map(|m| m.id));
        if let (Some(next), Some(last)) = (page.next, page.messages.last()) {
            assert!(next <= last.id, "the next page starts below this one");
        }
        before = page.next;
        pages.push(page);
        if before.is_none() {
            return (ids, pages);
        }
    }
    panic!("the search never ended");
}

fn ids_of(details: &[MessageDetail], q: &MessageQuery) -> Vec<i64> {
    details.iter().filter(|d| matches(q, d)).map(|d| d.summary.id).collect()
}

fn query(edit: impl FnOnce(&mut MessageQuery)) -> MessageQuery {
    let mut q = MessageQuery::default();
    edit(&mut q);
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_and_combination_finds_what_it_names_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 120).await;
    let details = all(&store);
    let times: Vec<i64> = details.iter().map(|d| d.summary.created_at).collect();
    let (newest, oldest) = (times[0], times[times.len() - 1]);
    assert!(newest > oldest, "creation times differ");
    let middle = times[times.len() / 2];
    let s = |v: &str| Some(v.to_owned());
    let queries = vec![
        MessageQuery::default(),
        query(|q| q.from = Some(middle)),
        query(|q| q.to = Some(middle)),
        query(|q| (q.from, q.to) = (Some(oldest + 2), Some(middle + 1))),
        query(|q| q.production = s("lab")),
        query(|q| q.item = s("Out")),
        query(|q| q.item = s("In")),
        query(|q| q.status = Some(Status::Completed)),
        query(|q| q.status = Some(Status::Error)),
        query(|q| q.status = Some(Status::Suspended)),
        query(|q| q.status = Some(Status::Discarded)),
        query(|q| q.status = Some(Status::Queued)),
        query(|q| q.status = Some(Status::Delivering)),
        query(|q| q.message_type = s("ADT")),
        query(|q| q.message_type = s("ADT^A08")),
        query(|q| q.message_type = s("AD")),
        query(|q| q.message_type = s("SIU^S12")),
        query(|q| q.control_id = s("C17")),
        query(|q| q.control_id = s("C999")),
        query(|q| q.patient_id = s("P3")),
        query(|q| q.patient_name = s("smi")),
        query(|q| q.patient_name = s("SMITHERS")),
        query(|q| q.patient_name = s("Doe_")),
        query(|q| q.patient_name = s("Doe%")),
        query(|q| q.patient_name = s("100%")),
        query(|q| q.text = s("word3")),
        query(|q| q.text = s("X17|")),
        query(|q| q.text = s("nowhere")),
        // Combinations.
        query(|q| (q.production, q.item, q.status) = (s("adt"), s("Out"), Some(Status::Error))),
        query(|q| (q.item, q.status) = (s("Out"), Some(Status::Queued))),
        query(|q| (q.production, q.status) = (s("lab"), Some(Status::Delivering))),
        query(|q| (q.status, q.message_type) = (Some(Status::Suspended), s("ADT"))),
        query(|q| (q.control_id, q.item) = (s("C42"), s("Archive"))),
        query(|q| (q.patient_id, q.status, q.from) = (s("P2"), Some(Status::Completed), Some(middle))),
        query(|q| (q.patient_id, q.text) = (s("P4"), s("word1"))),
        query(|q| (q.patient_name, q.message_type, q.item) = (s("o'n"), s("ADT"), s("Router"))),
        query(|q| (q.text, q.status, q.to) = (s("word2"), Some(Status::Queued), Some(middle))),
        query(|q| (q.control_id, q.patient_id) = (s("C10"), s("P3"))),
        // Empty strings are filters not given.
        query(|q| (q.item, q.text, q.control_id) = (s(""), s(""), s(""))),
        query(|q| (q.from, q.to) = (Some(middle), Some(middle))),
    ];
    let small = SearchBudget { headers: 37, bodies: 11, body_bytes: 4096, blocks: 1 };
    for q in &queries {
        let want = ids_of(&details, q);
        for (limit, budget) in [(1000, SearchBudget::default()), (7, SearchBudget::default()), (5, small)] {
            let (got, _) = every_page(&store, q, limit, budget);
            assert_eq!(got, want, "{q:?}, limit {limit}, {budget:?}");
        }
        if want.len() <= MAX_PAGE {
            let page = store.search_messages(q, None, MAX_PAGE).unwrap();
            assert_eq!(page.next, None, "{q:?}: everything on one page");
            for m in &page.messages {
                let d = details.iter().find(|d| d.summary.id == m.id).unwrap();
                assert_eq!(&d.summary, m, "a page shows what the detail shows");
            }
        }
    }
    // A few filters match nothing: the test would not see a filter ignored.
    assert!(ids_of(&details, &queries[18]).is_empty() && !ids_of(&details, &queries[17]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_neither_skip_nor_repeat_while_messages_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 60).await;
    let queries = [
        MessageQuery::default(),
        query(|q| q.item = Some("Out".into())),
        query(|q| q.patient_id = Some("P1".into())),
        query(|q| q.text = Some("word4".into())),
        query(|q| q.status = Some(Status::Queued)),
    ];
    let mut n = 1000;
    for q in &queries {
        let before_any = all(&store);
        let want = ids_of(&before_any, q);
        let mut got = Vec::new();
        let mut before = None;
        for _ in 0..1000 {
            let page = store.search_messages(q, before, 4).unwrap();
            got.extend(page.messages.iter().map(|m| m.id));
            // Between two pages, more messages come in, for every filter.
            for _ in 0..3 {
                store.commit_inbound(inbound("adt", n, &["Router"])).await.unwrap();
                n += 1;
            }
            before = page.next;
            if before.is_none() {
                break;
            }
        }
        assert_eq!(got, want, "{q:?}");
        let unique: HashSet<i64> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "{q:?}: a header repeated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_search_goes_on_step_by_step_until_everything_is_searched() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 80).await;
    let details = all(&store);
    let q = query(|q| q.text = Some("C7|".into()));
    let want = ids_of(&details, &q);
    assert!(!want.is_empty());
    let budget = SearchBudget { headers: 1_000, bodies: 8, body_bytes: 1 << 20, blocks: 16 };
    let (got, pages) = every_page(&store, &q, 50, budget);
    assert_eq!(got, want);
    assert!(pages.len() > 5, "the bodies budget cut the search in steps: {}", pages.len());
    let empty_steps = pages.iter().filter(|p| p.messages.is_empty() && p.next.is_some()).count();
    assert!(empty_steps > 0, "some steps found nothing and said where to go on");
    // Each step went further back, and says how far.
    let reached: Vec<i64> = pages.iter().map(|p| p.scanned_back_to.unwrap()).collect();
    assert!(reached.windows(2).all(|w| w[1] <= w[0]), "{reached:?}");
    assert_eq!(*reached.last().unwrap(), details.last().unwrap().summary.created_at, "searched back to the oldest");
    assert_eq!(pages.iter().map(|p| p.scanned).sum::<u64>(), details.len() as u64, "every header examined once");

    // A byte budget stops a step too (at least one body is searched).
    let bytes = SearchBudget { body_bytes: 1, ..SearchBudget::default() };
    let (got, pages) = every_page(&store, &q, 50, bytes);
    assert_eq!(got, want);
    assert!(pages.len() > details.len() / 4, "one body per step: {} steps", pages.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_an_index_walks_blocks_of_ids_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // One message of a rare patient in each of five rounds of 300, three
    // headers each: more than four blocks of 1,024 ids.
    let mut n = 0;
    for round in 0..5 {
        let commits: Vec<_> = (0..300)
            .map(|_| {
                n += 1;
                let mut m = inbound("adt", n, &["Out", "Archive"]);
                m.routed.clear();
                m.patient_id = Some(if n % 300 == 7 { "RARE".into() } else { format!("P{round}") });
                store.commit_inbound(m)
            })
            .collect();
        for c in futures_util::future::join_all(commits).await {
            c.unwrap();
        }
    }
    let details = all(&store);
    assert!(details[0].summary.id > 4 * 1024, "spans five blocks: {}", details[0].summary.id);
    let q = query(|q| q.patient_id = Some("RARE".into()));
    let want = ids_of(&details, &q);
    assert_eq!(want.len(), 5 * 3);
    let one_block = SearchBudget { blocks: 1, ..SearchBudget::default() };
    let (got, pages) = every_page(&store, &q, 100, one_block);
    assert_eq!(got, want);
    assert!(pages.len() >= 5, "one block per step: {} steps", pages.len());
    let (got, pages) = every_page(&store, &q, 100, SearchBudget::default());
    assert_eq!((got, pages.len()), (want.clone(), 1));
    // Paged three at a time, across blocks.
    let (got, _) = every_page(&store, &q, 3, SearchBudget::default());
    assert_eq!(got, want);
    let q = query(|q| q.control_id = Some("C7".into()));
    assert_eq!(every_page(&store, &q, 2, one_block).0, ids_of(&details, &q));
}

/// The indexes name one header per received message and find the others
/// written with it through it; headers written later (a router's outputs
/// after a backlog, copies), outputs with a control id of their own and
/// the headers of a message for very many targets are indexed themselves.
/// Every way is found, in order, whatever the budget and the page size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_written_with_a_message_or_after_it_are_all_found_by_control_and_patient_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for round in 0..6 {
        // Decided on receipt: one output keeps the control id, one has its
        // own (transformed).
        let commits: Vec<_> = (0..60)
            .map(|_| {
                let i = next();
                let mut m = inbound("adt", i, &["Router", "Copy"]);
                m.patient_id = Some(format!("P{}", i % 3));
                m.routed[0].decision.outputs[1] = RoutedOutput {
                    target: "Archive".into(),
                    body: Some(Bytes::from(format!("MSH|^~\\&|X||||||ADT^A01|T{i}|P|2.5\r"))),
                    control_id: Some(format!("T{i}")),
                };
                store.commit_inbound(m)
            })
            .collect();
        for c in futures_util::future::join_all(commits).await {
            c.unwrap();
        }
        // A backlog at a second router: its outputs are written later.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let i = next();
            let mut m = inbound("adt", i, &["Slow"]);
            m.routed.clear();
            m.patient_id = Some(format!("P{}", i % 3));
            waiting.push(store.commit_inbound(m).await.unwrap().queued[0]);
        }
        for id in waiting {
            let outputs = vec![RoutedOutput { target: "Out".into(), body: None, control_id: None }];
            let decision = RouteDecision { status: Status::Completed, error: None, outputs };
            store.commit_routed(switchboard::store::Routed { header_id: id, decision }).await.unwrap();
        }
        // A message for more targets than a group holds.
        if round == 2 {
            let i = next();
            let targets: Vec<String> = (0..600).map(|t| format!("T{t}")).collect();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let mut m = inbound("adt", i, &targets);
            m.routed.clear();
            m.patient_id = Some("P1".into());
            store.commit_inbound(m).await.unwrap();
        }
        // Copies of a few.
        let some = store.search_messages(&query(|q| q.item = Some("Out".into())), None, 2).unwrap();
        for m in some.messages {
            store.resend_copy(m.id, "Out", None).await.unwrap();
        }
    }
    let details = all(&store);
    assert!(details[0].summary.id > 2 * 1024, "spans blocks: {}", details[0].summary.id);
    let mut queries: Vec<MessageQuery> = (0..3).map(|p| query(|q| q.patient_id = Some(format!("P{p}")))).collect();
    // Decided on receipt, transformed, routed later, the 600 targets.
    for c in ["C5", "T5", "C62", "C124", "C200", "T300", "C127", "C190"] {
        queries.push(query(|q| q.control_id = Some(c.into())));
    }
    queries.push(query(|q| (q.patient_id, q.item) = (Some("P1".into()), Some("Out".into()))));
    queries.push(query(|q| (q.control_id, q.status) = (Some("C62".into()), Some(Status::Queued))));
    for q in &queries {
        let want = ids_of(&details, q);
        assert!(!want.is_empty(), "{q:?}");
        for (limit, blocks) in [(1000, 16_384), (7, 1), (1, 2), (50, 3)] {
            let budget = SearchBudget { blocks, ..SearchBudget::default() };
            let (got, _) = every_page(&store, q, limit, budget);
            assert_eq!(got, want, "{q:?}, limit {limit}, {blocks} blocks a step");
        }
    }
    // The message for 600 targets (the 190th) is there whole.
    let big = store.search_messages(&query(|q| q.control_id = Some("C190".into())), None, 1000).unwrap();
    assert_eq!(big.messages.len(), 601);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_shows_body_reply_trace_and_counts_by_status_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 40).await;
    let details = all(&store);
    let done = details.iter().find(|d| d.summary.target == "Out" && d.summary.status == Status::Completed).unwrap();
    assert_eq!(done.body, Bytes::from(body(done.summary.control_id.as_deref().unwrap()[1..].parse().unwrap())));
    assert!(done.reply.as_ref().is_some_and(|(at, data)| *at >= done.summary.created_at && data.ends_with(b"AA|x")));
    let targets: Vec<&str> = done.trace.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["In", "Router", "Out", "Archive"]);
    assert!(done.trace.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(done.trace[2], done.summary);
    assert_eq!(done.trace[0].parent_id, None);
    assert!(
        done.trace[1..].iter().all(|s| s.session_id == done.trace[0].id && s.patient_id == done.summary.patient_id)
    );
    assert!(done.resends.is_empty() && done.summary.resent_from.is_none());
    assert_eq!(store.message_detail(1_000_000).unwrap(), None);
    assert_eq!(store.message_detail(-1).unwrap(), None);

    let counts = store.counts_by_status().unwrap();
    assert_eq!(counts.len(), Status::ALL.len());
    for (status, n) in counts {
        let want = details.iter().filter(|d| d.summary.status == status).count() as u64;
        assert_eq!(n, want, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_queued_for_the_same_or_another_target_or_edited_and_the_original_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 16).await;
    let details = all(&store);
    let original = details.iter().find(|d| d.summary.target == "Out" && d.summary.status == Status::Error).unwrap();
    let id = original.summary.id;
    let out_depth = store.queue_depth(&original.summary.production, "Out");
    let archive_depth = store.queue_depth(&original.summary.production, "Archive");

    let same = store.resend_copy(id, "Out", None).await.unwrap();
    let other = store.resend_copy(id, "Archive", None).await.unwrap();
    let edited_body = "MSH|^~\\&|A|B|C|D|20261128||ADT^A08|EDIT1|P|2.5\rPID|1||NEWPAT^^^H||NEWNAME^X\r";
    let edited = store.resend_copy(id, "Out", Some(Bytes::from(edited_body))).await.unwrap();
    assert!(same < other && other < edited && same > details[0].summary.id);

    let after = store.message_detail(id).unwrap().unwrap();
    assert_eq!(after.summary, original.summary, "the original is left as it was");
    assert_eq!(after.resends, [same, other, edited]);
    let production = original.summary.production.as_str();
    assert_eq!(store.queue_depth(production, "Out"), out_depth + 2);
    assert_eq!(store.queue_depth(production, "Archive"), archive_depth + 1);

    for (copy, target) in [(same, "Out"), (other, "Archive"), (edited, "Out")] {
        let d = store.message_detail(copy).unwrap().unwrap();
        let s = &d.summary;
        assert_eq!((s.resent_from, s.status, s.target.as_str()), (Some(id), Status::Queued, target));
        assert_eq!((s.session_id, s.parent_id), (original.summary.session_id, original.summary.parent_id));
        assert_eq!((s.attempts, s.error.as_deref(), d.reply.as_ref()), (0, None, None));
        assert!(d.trace.iter().any(|t| t.id == copy), "the copy is in the session's trace");
        assert!(d.trace.iter().any(|t| t.id == id));
    }
    let copied = store.message_detail(same).unwrap().unwrap();
    assert_eq!(copied.body, original.body);
    assert_eq!(
        (copied.summary.control_id.clone(), copied.summary.patient_id.clone()),
        (original.summary.control_id.clone(), original.summary.patient_id.clone())
    );
    let edited_detail = store.message_detail(edited).unwrap().unwrap();
    assert_eq!(edited_detail.body, Bytes::from(edited_body));
    let s = &edited_detail.summary;
    assert_eq!(
        (s.control_id.as_deref(), s.message_type.as_deref(), s.patient_id.as_deref(), s.patient_name.as_deref()),
        (Some("EDIT1"), Some("ADT^A08"), Some("NEWPAT"), Some("NEWNAME"))
    );
    // Found by what the edited body says; queued with it for the operation.
    let found = store.search_messages(&query(|q| q.patient_id = Some("NEWPAT".into())), None, 10).unwrap();
    assert_eq!(found.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [edited]);
    let queue = store.fetch_queue(production, "Out", 1000).unwrap();
    let queued = queue.iter().find(|q| q.id == edited).expect("the edited copy is queued");
    assert_eq!((queued.control_id.as_deref(), &queued.body[..]), (Some("EDIT1"), edited_body.as_bytes()));

    // A copy of a copy names the copy.
    let again = store.resend_copy(same, "Out", None).await.unwrap();
    assert_eq!(store.message_detail(again).unwrap().unwrap().summary.resent_from, Some(same));
    assert_eq!(store.message_detail(same).unwrap().unwrap().resends, [again]);

    // What cannot be sent again is refused with a reason of its own, and
    // nothing is queued.
    let depth = store.queue_depth(production, "Out");
    let missing = store.resend_copy(987_654, "Out", None).await.unwrap_err();
    assert!(matches!(missing, StoreError::NoSuchMessage { id: 987_654 }), "{missing:?}");
    let garbled = store.resend_copy(id, "Out", Some(Bytes::from_static(b"not a message"))).await.unwrap_err();
    assert!(matches!(garbled, StoreError::EditedBody(_)), "{garbled:?}");
    let empty = store.resend_copy(id, "Out", Some(Bytes::new())).await.unwrap_err();
    assert!(matches!(empty, StoreError::EditedBody(_)), "{empty:?}");
    let nowhere = store.resend_copy(id, "", None).await.unwrap_err();
    assert!(matches!(nowhere, StoreError::Invalid(_)), "{nowhere:?}");
    assert_eq!(store.queue_depth(production, "Out"), depth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_all_queues_the_suspended_and_failed_of_one_item_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 48).await;
    let details = all(&store);
    let of = |production: &str, status: Status| {
        details
            .iter()
            .filter(|d| d.summary.production == production && d.summary.target == "Out" && d.summary.status == status)
            .map(|d| d.summary.id)
            .collect::<Vec<_>>()
    };
    let (errors, suspended) = (of("adt", Status::Error), of("adt", Status::Suspended));
    assert!(!errors.is_empty() && !suspended.is_empty());
    let (lab_errors, discarded) = (of("lab", Status::Error), of("adt", Status::Discarded));
    assert_eq!(store.count_resendable("adt", "Out").unwrap(), (errors.len() + suspended.len()) as u64);
    assert_eq!(store.count_resendable("adt", "Archive").unwrap(), 0);
    assert_eq!(store.count_resendable("nowhere", "Out").unwrap(), 0);
    let depth = store.queue_depth("adt", "Out");

    let resent = store.resend_all("adt", "Out").await.unwrap();
    assert_eq!(resent, (errors.len() + suspended.len()) as u64);
    assert_eq!(store.count_resendable("adt", "Out").unwrap(), 0);
    assert_eq!(store.queue_depth("adt", "Out"), depth + resent);
    for id in errors.iter().chain(&suspended) {
        let s = store.message_detail(*id).unwrap().unwrap().summary;
        assert_eq!((s.status, s.error), (Status::Queued, None), "{id}");
    }
    // In id order at the head of the queue, with the ones queued before.
    let queue: Vec<i64> = store.fetch_queue("adt", "Out", 1000).unwrap().iter().map(|q| q.id).collect();
    let mut sorted = queue.clone();
    sorted.sort_unstable();
    assert_eq!(queue, sorted);
    assert!(errors.iter().chain(&suspended).all(|id| queue.contains(id)));
    // Other items, productions and statuses are left alone.
    for id in lab_errors.iter().chain(&discarded) {
        let s = store.message_detail(*id).unwrap().unwrap().summary;
        assert_ne!(s.status, Status::Queued, "{id}");
    }
    assert_eq!(store.resend_all("adt", "Out").await.unwrap(), 0);
}

#[tokio::test]
async fn events_are_found_by_level_production_item_and_time_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let levels = [EventLevel::Info, EventLevel::Warning, EventLevel::Error];
    for n in 0..60 {
        store
            .record_event(Event {
                level: levels[n % 3],
                production: (n % 4 != 0).then(|| if n % 2 == 0 { "adt" } else { "lab" }.to_owned()),
                item: (n % 5 == 0).then(|| "Out".to_owned()),
                kind: "test".into(),
                text: format!("event {n}"),
            })
            .await
            .unwrap();
        if n % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let everything = store.events(&EventQuery::default(), None, MAX_PAGE).unwrap();
    assert_eq!((everything.events.len(), everything.next), (60, None));
    assert!(everything.events.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let middle = everything.events[30].at;
    let rank = |level: &str| match level {
        "info" => EventLevel::Info,
        "warning" => EventLevel::Warning,
        _ => EventLevel::Error,
    };
    let queries = [
        EventQuery { level: Some(EventLevel::Warning), ..EventQuery::default() },
        EventQuery { level: Some(EventLevel::Error), production: Some("adt".into()), ..EventQuery::default() },
        EventQuery { level: Some(EventLevel::Info), item: Some("Out".into()), ..EventQuery::default() },
        EventQuery { from: Some(middle), ..EventQuery::default() },
        EventQuery { to: Some(middle), production: Some("lab".into()), ..EventQuery::default() },
        EventQuery { production: Some(String::new()), ..EventQuery::default() },
    ];
    for q in &queries {
        let want: Vec<i64> = everything
            .events
            .iter()
            .filter(|e| {
                q.level.is_none_or(|l| rank(&e.level) >= l)
                    && q.production
                        .as_deref()
                        .filter(|p| !p.is_empty())
                        .is_none_or(|p| e.production.as_deref() == Some(p))
                    && q.item.as_deref().is_none_or(|i| e.item.as_deref() == Some(i))
                    && q.from.is_none_or(|t| e.at >= t)
                    && q.to.is_none_or(|t| e.at < t)
            })
            .map(|e| e.id)
            .collect();
        let mut got = Vec::new();
        let mut before = None;
        for _ in 0..100 {
            let page = store.events(q, before, 4).unwrap();
            assert!(page.events.len() <= 4);
            got.extend(page.events.iter().map(|e| e.id));
            before = page.next;
            if before.is_none() {
                break;
            }
        }
        assert_eq!(got, want, "{q:?}");
    }
}

#[tokio::test]
async fn bad_input_gives_typed_errors_or_empty_pages_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(&dir, 8).await;
    let long = query(|q| q.text = Some("x".repeat(2000)));
    assert!(matches!(store.search_messages(&long, None, 10), Err(StoreError::Invalid(_))));
    // A limit of 0 is one; a huge one is the most a page holds.
    assert_eq!(store.search_messages(&MessageQuery::default(), None, 0).unwrap().messages.len(), 1);
    let all_of_them = store.search_messages(&MessageQuery::default(), None, usize::MAX).unwrap();
    assert_eq!(all_of_them.next, None);
    for before in [Some(i64::MIN), Some(-1), Some(0), Some(1)] {
        let page = store.search_messages(&MessageQuery::default(), before, 10).unwrap();
        assert_eq!((page.messages.len(), page.next), (0, None), "{before:?}");
    }
    let odd = [
        query(|q| (q.from, q.to) = (Some(i64::MAX), Some(i64::MIN))),
        query(|q| (q.from, q.to) = (Some(i64::MIN), Some(i64::MAX))),
        query(|q| q.control_id = Some("'; DROP TABLE header; --".into())),
        query(|q| q.patient_name = Some("%".into())),
        query(|q| q.patient_name = Some("\\".into())),
        query(|q| q.patient_id = Some("\0".into())),
        query(|q| q.message_type = Some("^".into())),
        query(|q| q.message_type = Some("\u{10FFFF}".into())),
        query(|q| q.text = Some("é".into())),
        query(|q| q.patient_id = Some("é".repeat(100))),
    ];
    let details = all(&store);
    for q in &odd {
        let (got, _) = every_page(&store, q, 10, SearchBudget::default());
        assert_eq!(got, ids_of(&details, q), "{q:?}");
    }
    assert_eq!(
        store.events(&EventQuery { from: Some(i64::MAX), ..EventQuery::default() }, None, 0).unwrap().events.len(),
        0
    );
    assert!(store.search_messages(&MessageQuery::default(), Some(i64::MAX), 5).unwrap().messages.len() == 5);
    // Values longer than the store keeps, given through the API: cut as
    // the intake cuts them, and found by the whole value too.
    let mut long = inbound("adt", 99, &["Out"]);
    long.routed.clear();
    long.patient_id = Some("9".repeat(100));
    let header = store.commit_inbound(long).await.unwrap().header_id;
    let kept = store.message_detail(header).unwrap().unwrap().summary.patient_id.unwrap();
    assert_eq!(kept.len(), switchboard::store::MAX_PATIENT_BYTES);
    let found = store.search_messages(&query(|q| q.patient_id = Some("9".repeat(100))), None, 10).unwrap();
    assert_eq!(found.messages.len(), 2);
}

#[tokio::test]
async fn a_store_from_before_searches_is_migrated_and_its_messages_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&dir);
    for n in 0..3 {
        store.commit_inbound(inbound("adt", n, &["Router"])).await.unwrap();
    }
    store.close().await;
    drop(store);
    // Back to version 6, as the previous release wrote it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX header_status;
         DROP INDEX header_control;
         DROP INDEX header_patient;
         ALTER TABLE header DROP COLUMN patient_id;
         ALTER TABLE header DROP COLUMN patient_name;
         ALTER TABLE header DROP COLUMN resent_from;
         ALTER TABLE header DROP COLUMN grouped;
         PRAGMA user_version = 6;",
    )
    .unwrap();
    drop(conn);
    let store = open(&dir);
    let old = store.search_messages(&query(|q| q.control_id = Some("C1".into())), None, 10).unwrap();
    assert_eq!(old.messages.len(), 4, "the received message, its router and two copies");
    assert!(old.messages.iter().all(|m| m.patient_id.is_none() && m.resent_from.is_none()));
    store.commit_inbound(inbound("adt", 3, &["Router"])).await.unwrap();
    let new = store.search_messages(&query(|q| q.patient_id = Some("P3".into())), None, 10).unwrap();
    assert_eq!(new.messages.len(), 4);
    let copy = store.resend_copy(old.messages[0].id, "Out", None).await.unwrap();
    assert_eq!(store.message_detail(old.messages[0].id).unwrap().unwrap().resends, [copy]);
}
