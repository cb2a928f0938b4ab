//! Downstream systems that misbehave, against an `mllp_out` one message at
//! a time and sending ahead: replies that are not HL7, bytes outside MLLP
//! frames, a reply naming another message, every reply sent twice, a reply
//! that comes after the response timeout.
//!
//! The downstream here is written by hand on a real socket, so that a test
//! says exactly which bytes it writes and when. What is checked is what
//! the store records (each message's status and the reply kept with it,
//! which must name that message) and what the downstream received (each
//! message, how often, in which order), and that the operation goes on
//! delivering afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use switchboard::engine::{CommandSource, Engine};
use switchboard::hl7::{AckBuilder, AckCode, Message};
use switchboard::mllp::{MllpCodec, MllpFrame};
use switchboard::store::{MessageSummary, Status, Store};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

/// The default reply code actions, for settings that add an entry to them.
const DEFAULT_ACTIONS: &str = ":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C";

/// One step of what the downstream writes back for a message.
#[derive(Clone, Debug)]
enum Say {
    /// An AA naming the message.
    Accept,
    /// An AE naming the message: taken for another message's reply, it
    /// would show as that message suspended.
    Refuse,
    /// An AA whose MSA-2 is this control id.
    AcceptNaming(String),
    /// A frame holding these bytes.
    Frame(&'static [u8]),
    /// These bytes as they are, outside any frame.
    Raw(&'static [u8]),
    /// Waits this long before the next step (and the next message).
    Pause(Duration),
}

/// What the downstream says to each arrival of a message: its control id,
/// and how many times it has arrived (1 the first time).
type Script = Arc<dyn Fn(&str, usize) -> Vec<Say> + Send + Sync>;

/// A downstream system on 127.0.0.1 that reads one message at a time and
/// writes what its script says, in order, before reading the next.
struct Downstream {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Downstream {
    async fn start(script: impl Fn(&str, usize) -> Vec<Say> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the downstream");
        let port = listener.local_addr().expect("its address").port();
        let script: Script = Arc::new(script);
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                open.spawn(serve(stream, script.clone(), seen.clone()));
                while open.try_join_next().is_some() {}
            }
        });
        Self { port, received, connections, task }
    }

    /// Control ids in order of arrival, repeats included.
    fn ids(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self, control_id: &str) -> usize {
        self.ids().iter().filter(|id| *id == control_id).count()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        // Its connections are in the task's join set, dropped with it.
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, script: Script, received: Arc<Mutex<Vec<String>>>) {
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::new(read, MllpCodec::new());
    while let Some(Ok(read)) = frames.next().await {
        let MllpFrame::Message(payload) = read else { continue };
        let Ok(msg) = Message::parse(&payload) else { continue };
        let id = msg.control_id().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let nth = {
            let mut received = received.lock().unwrap();
            received.push(id.clone());
            received.iter().filter(|r| **r == id).count()
        };
        for say in script(&id, nth) {
            let bytes = match say {
                Say::Accept => frame(&AckBuilder::new(&msg, AckCode::AA).build()),
                Say::Refuse => {
                    frame(&AckBuilder::new(&msg, AckCode::AE).text("refused by the test downstream").build())
                }
                Say::AcceptNaming(other) => frame(
                    format!("MSH|^~\\&|RCV|R|SWB|S|20260101120000||ACK^A01^ACK|R9|P|2.5\rMSA|AA|{other}\r").as_bytes(),
                ),
                Say::Frame(bytes) => frame(bytes),
                Say::Raw(bytes) => bytes.to_vec(),
                Say::Pause(pause) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            // The engine may have closed the connection (after a timeout).
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

/// An engine delivering to `downstream` from an `mllp_in` on a free port,
/// its `mllp_out` ("Out") disabled until [`queue_then_enable`]; `extra` are
/// more settings of the operation.
struct Setup {
    engine: Engine,
    in_port: u16,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new(downstream: &Downstream, depth: usize, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let in_port = free_port();
        let mut out = format!(
            "      - name: Out\n        kind: mllp_out\n        host: 127.0.0.1\n        port: {}\n        \
             enabled: false\n        pipeline_depth: {depth}\n        connect_timeout: 500ms\n        \
             retry_interval: 50ms\n        failure_timeout: 3s\n",
            downstream.port
        );
        if !extra.iter().any(|e| e.starts_with("response_timeout")) {
            out.push_str("        response_timeout: 3s\n");
        }
        for line in extra {
            out.push_str(&format!("        {line}\n"));
        }
        let yaml = format!(
            "productions:\n  {PRODUCTION}:\n    name: Test feed\n    autostart: true\n    stop_timeout: 2s\n    items:\n\
             \x20     - name: In\n        kind: mllp_in\n        host: 127.0.0.1\n        port: {in_port}\n        \
             targets: [Out]\n{out}"
        );
        let engine = start_engine(dir.path(), &yaml).await;
        Self { engine, in_port, _dir: dir }
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// Receives `ids` (accepted), then enables the operation, so that a
    /// window can be sent ahead at once.
    async fn queue_then_enable(&self, ids: &[String]) {
        for id in ids {
            self.send(id).await;
        }
        let n = ids.len() as u64;
        assert!(self.engine.wait_for(WAIT, |s| s.item(PRODUCTION, "Out").unwrap().queue_depth == n).await);
        self.engine.set_item_enabled(PRODUCTION, "Out", true, CommandSource::Api).await.unwrap();
    }

    async fn send(&self, id: &str) {
        let ack = reply(&send(self.in_port, &hl7("ADT^A01", id)).await);
        assert_eq!(ack.acknowledgment_code(), Some("AA"), "{ack:?}");
    }

    /// Waits for `id`'s final `status`, and checks that the reply kept
    /// with it is its own (MSA-2 names it), or, for `unreadable`, is that.
    async fn settled(&self, id: &str, status: Status) -> MessageSummary {
        let h = wait_status(self.store(), "Out", id, status, WAIT).await;
        let kept = self.store().reply(h.id).unwrap();
        if let Some(kept) = kept.as_deref()
            && Message::parse(kept).is_ok()
        {
            assert_eq!(reply(kept).acknowledged_control_id(), Some(id), "the reply kept with {id} is another's");
        }
        h
    }

    /// Warning events of the operation whose text contains `needle`.
    fn warnings(&self, needle: &str) -> Vec<String> {
        let events = self.store().recent_events(500).unwrap();
        events
            .into_iter()
            .filter(|e| e.level == "warning" && e.item.as_deref() == Some("Out") && e.text.contains(needle))
            .map(|e| e.text)
            .collect()
    }

    async fn warned(&self, needle: &str) -> Vec<String> {
        eventually(WAIT, || !self.warnings(needle).is_empty()).await;
        self.warnings(needle)
    }

    /// After whatever went before, a well-behaved message still goes
    /// through, on its own reply.
    async fn still_delivers(&self, downstream: &Downstream, id: &str) {
        self.send(id).await;
        let h = self.settled(id, Status::Completed).await;
        assert_eq!(h.attempts, 1, "{h:?}");
        assert_eq!(downstream.count(id), 1);
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// No event text holds the patient's data from the test messages.
fn assert_no_patient_data(store: &Store) {
    for e in store.recent_events(500).unwrap() {
        assert!(!e.text.contains("DOE") && !e.text.contains("19800101"), "patient data in an event: {}", e.text);
    }
}

/// Every reply sent twice (and an AE among them): each duplicate is passed
/// over, so no message is completed on the reply to the one before, none
/// is sent twice, and the warnings about it are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_answers_twice_never_acknowledges_the_next_message() {
    for depth in [1, 4] {
        let refused = |id: &str| id.ends_with('3') || id.ends_with('7');
        let downstream = Downstream::start(move |id, _| match refused(id) {
            true => vec![Say::Refuse, Say::Refuse],
            false => vec![Say::Accept, Say::Accept],
        })
        .await;
        let setup = Setup::new(&downstream, depth, &[]).await;
        let all = ids(&format!("TWICE{depth}-"), 24);
        setup.queue_then_enable(&all).await;
        for id in &all {
            let want = if refused(id) { Status::Suspended } else { Status::Completed };
            let h = setup.settled(id, want).await;
            assert_eq!(h.attempts, 1, "depth {depth}: {h:?}");
        }
        assert_eq!(downstream.ids(), all, "depth {depth}: each message once, in order");
        // A duplicate is passed over when it is read as the next reply, or
        // found on the idle connection before the next message (which then
        // goes on a new connection, at no cost).
        let warned = setup.warnings("passed over");
        assert!(!warned.is_empty() || downstream.connections() > 1, "depth {depth}: neither warned nor reconnected");
        assert!(warned.len() <= 6, "depth {depth}: {} warnings: {warned:?}", warned.len());
        setup.still_delivers(&downstream, &format!("AFTER{depth}")).await;
        assert_no_patient_data(setup.store());
        setup.engine.shutdown().await;
    }
}

/// A downstream that repeats every reply many times: past a few stale
/// replies in a row the connection is dropped and the message awaited sent
/// again on a new one; still every message completes on its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_keeps_repeating_replies_is_reconnected_not_believed() {
    for depth in [1, 4] {
        let downstream = Downstream::start(|_, _| vec![Say::Accept; 8]).await;
        let setup = Setup::new(&downstream, depth, &[]).await;
        let all = ids(&format!("REPEAT{depth}-"), 10);
        setup.queue_then_enable(&all).await;
        for id in &all {
            setup.settled(id, Status::Completed).await;
            assert!(downstream.count(id) <= 1 + depth, "depth {depth}: {id} sent {} times", downstream.count(id));
        }
        assert_no_patient_data(setup.store());
        setup.engine.shutdown().await;
    }
}

/// The reply to a message comes after the response timeout: that message
/// is judged `X` (the default fails it; `X=R` sends it again), and the late
/// reply, on a connection already closed, never reaches the next message,
/// whose own reply (an AE) is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_after_the_response_timeout_never_acknowledges_a_later_message() {
    for depth in [1, 4] {
        for retry in [false, true] {
            let late = Duration::from_millis(600);
            let downstream = Downstream::start(move |id, nth| match (id.ends_with("-1"), nth) {
                (true, 1) => vec![Say::Pause(late), Say::Accept],
                (true, _) => vec![Say::Accept],
                (false, _) => vec![Say::Refuse],
            })
            .await;
            let actions = format!("reply_code_actions: \"X=RF,{DEFAULT_ACTIONS}\"");
            let mut extra = vec!["response_timeout: 300ms"];
            if retry {
                extra.push(&actions);
            }
            let setup = Setup::new(&downstream, depth, &extra).await;
            let all = ids(&format!("LATE{depth}{retry}-"), 4);
            setup.queue_then_enable(&all).await;
            let first = if retry {
                let h = setup.settled(&all[0], Status::Completed).await;
                assert_eq!(h.attempts, 2, "depth {depth}: {h:?}");
                h
            } else {
                let h = setup.settled(&all[0], Status::Error).await;
                assert!(h.error.as_deref().unwrap_or_default().contains("no reply"), "{h:?}");
                assert!(setup.store().reply(h.id).unwrap().is_none(), "a reply kept with a message that had none");
                h
            };
            for id in &all[1..] {
                let h = setup.settled(id, Status::Suspended).await;
                assert!(h.error.as_deref().unwrap_or_default().contains("refused by the test downstream"), "{h:?}");
            }
            assert_eq!(downstream.count(&all[0]), 1 + usize::from(retry), "depth {depth} retry {retry}");
            let mut last_copies = downstream.ids();
            last_copies.dedup();
            assert_eq!(last_copies.last(), all.last(), "depth {depth}: {:?}", downstream.ids());
            assert!(downstream.connections() >= 2, "the timed-out connection was kept: {first:?}");
            setup.engine.shutdown().await;
        }
    }
}

/// A frame that is not HL7 is the message's reply (`:~`, suspended by the
/// default, its bytes kept), but the connection is dropped after it: the
/// real ACK that follows it never acknowledges the next message, whose own
/// AE is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_frame_suspends_its_message_and_drops_the_connection() {
    const GARBAGE: &[u8] = b"\x00\x01 not HL7 at all \xff";
    for depth in [1, 4] {
        let downstream = Downstream::start(|id, _| match id {
            id if id.ends_with("-2") => vec![Say::Frame(GARBAGE), Say::Accept],
            id if id.ends_with("-3") => vec![Say::Refuse],
            _ => vec![Say::Accept],
        })
        .await;
        let setup = Setup::new(&downstream, depth, &[]).await;
        let all = ids(&format!("GARBLED{depth}-"), 5);
        setup.queue_then_enable(&all).await;
        setup.settled(&all[0], Status::Completed).await;
        let garbled = setup.settled(&all[1], Status::Suspended).await;
        assert_eq!(setup.store().reply(garbled.id).unwrap().as_deref(), Some(GARBAGE), "depth {depth}");
        let error = garbled.error.unwrap_or_default();
        assert!(error.starts_with("unreadable reply") && error.ends_with("(:~=S)"), "depth {depth}: {error}");
        setup.settled(&all[2], Status::Suspended).await;
        for id in &all[3..] {
            setup.settled(id, Status::Completed).await;
        }
        assert!(downstream.connections() >= 2, "depth {depth}: the connection was kept after garbage");
        let mut last_copies = downstream.ids();
        last_copies.dedup();
        assert!(last_copies.ends_with(&all[1..]), "depth {depth}: {:?}", downstream.ids());
        assert!(!setup.warned("cannot be read; the connection is closed").await.is_empty());
        setup.still_delivers(&downstream, &format!("AFTER{depth}")).await;
        assert_no_patient_data(setup.store());
        setup.engine.shutdown().await;
    }
}

/// Bytes outside MLLP frames around a reply (a stray CR LF, text, an end
/// block, the start of a frame never finished) are dropped with a capped
/// warning; the reply around them is read and the connection kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_outside_frames_are_dropped_with_a_warning() {
    for depth in [1, 4] {
        let downstream = Downstream::start(|_, _| {
            vec![Say::Raw(b"\r\nnoise\x1c\r"), Say::Raw(b"\x0bhalf a frame, abandoned"), Say::Accept, Say::Raw(b"\n")]
        })
        .await;
        let setup = Setup::new(&downstream, depth, &[]).await;
        let all = ids(&format!("JUNK{depth}-"), 12);
        setup.queue_then_enable(&all).await;
        for id in &all {
            let h = setup.settled(id, Status::Completed).await;
            assert_eq!(h.attempts, 1, "depth {depth}: {h:?}");
        }
        assert_eq!(downstream.ids(), all, "depth {depth}");
        let warned = setup.warned("outside MLLP frames").await;
        assert!(!warned.is_empty() && warned.len() <= 6, "depth {depth}: {warned:?}");
        setup.engine.shutdown().await;
    }
}

/// A reply naming another control id is judged by `:I?`: with `:I?=S` the
/// message is suspended and its reply kept, whichever depth; no other
/// message is completed on it, and the operation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_naming_another_message_is_judged_by_the_reply_code_actions() {
    for depth in [1, 4] {
        let downstream = Downstream::start(|id, _| match id.ends_with("-3") {
            true => vec![Say::AcceptNaming("SOMETHING-ELSE".into())],
            false => vec![Say::Accept],
        })
        .await;
        let actions = format!("reply_code_actions: \":I?=S,{DEFAULT_ACTIONS}\"");
        let setup = Setup::new(&downstream, depth, &[&actions]).await;
        let all = ids(&format!("NAMING{depth}-"), 6);
        setup.queue_then_enable(&all).await;
        for (i, id) in all.iter().enumerate() {
            if i == 2 {
                let h = wait_status(setup.store(), "Out", id, Status::Suspended, WAIT).await;
                let kept = reply(&setup.store().reply(h.id).unwrap().expect("its reply is kept"));
                assert_eq!(kept.acknowledged_control_id(), Some("SOMETHING-ELSE"));
                assert!(h.error.as_deref().unwrap_or_default().contains(":I?=S"), "{h:?}");
            } else {
                setup.settled(id, Status::Completed).await;
            }
        }
        setup.still_delivers(&downstream, &format!("AFTER{depth}")).await;
        setup.engine.shutdown().await;
    }
}
