//! Helpers shared by the engine tests: a scripted MLLP receiver standing in
//! for a downstream system, an engine on a temporary store, HL7 messages,
//! and polling with deadlines.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use switchboard::engine::{Engine, EngineStatus, ItemState, ProductionState};
use switchboard::hl7::{AckBuilder, AckCode, Message, Reply};
use switchboard::mllp::{MllpClient, MllpCodec, MllpFrame};
use switchboard::store::{MessageSummary, Status, Store, StoreOptions};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::ports::free_port;

/// The production id every test configuration uses.
pub(crate) const PRODUCTION: &str = "p";

/// What the receiver does with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Answer AA.
    Accept,
    /// Answer AE with this text in MSA-3.
    Error(String),
    /// Answer AR.
    Reject,
    /// Answer with an ACK that has no MSA segment.
    NoMsa,
    /// Answer AA, but with MSA-2 naming another message.
    WrongControlId,
    /// Answer with a message that is not an ACK (MSH-9 `ORR^O02`, MSA AA).
    NotAck,
    /// Never answer; keep the connection open.
    Silent,
    /// Close the connection without answering.
    Close,
    /// Send the first half of an AA, then reset the connection.
    ResetMidReply,
    /// Answer with a frame that is not HL7.
    Garbage,
}

type Script = Box<dyn Fn(&str) -> Behaviour + Send + Sync>;

struct Shared {
    script: Mutex<Script>,
    delay: Mutex<Duration>,
    received: Mutex<Vec<(String, Bytes)>>,
    connections: AtomicUsize,
    most_waiting: AtomicUsize,
    /// Close a connection that has been idle this long.
    idle_close: Mutex<Option<Duration>>,
    /// Answer the messages waiting on a connection last first.
    out_of_order: std::sync::atomic::AtomicBool,
}

/// An MLLP receiver on 127.0.0.1 whose answer to each message is scripted by
/// its control id (MSH-10). It records every message it receives, in order,
/// and can be stopped and started again on the same port.
pub(crate) struct Receiver {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Shared>,
    running: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    /// With this, it answers over TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Receiver {
    /// A receiver that answers AA, listening on a free port.
    pub(crate) async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A receiver that answers AA over TLS, with this acceptor's
    /// certificate and client verification.
    pub(crate) async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let shared = Arc::new(Shared {
            script: Mutex::new(Box::new(|_| Behaviour::Accept)),
            delay: Mutex::new(Duration::ZERO),
            received: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            most_waiting: AtomicUsize::new(0),
            idle_close: Mutex::new(None),
            out_of_order: std::sync::atomic::AtomicBool::new(false),
        });
        let receiver = Self { port, shared, running: Mutex::new(None), tls };
        receiver.serve(listener);
        receiver
    }

    /// A port where nothing listens yet; [`restart`](Self::restart) opens it.
    pub(crate) async fn down() -> Self {
        let receiver = Self::start().await;
        receiver.stop().await;
        receiver
    }

    fn serve(&self, listener: TcpListener) {
        let cancel = CancellationToken::new();
        let shared = self.shared.clone();
        let stop = cancel.clone();
        let tls = self.tls.clone();
        let handle = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                match tls.clone() {
                    None => connections.spawn(answer(stream, shared)),
                    Some(tls) => connections.spawn(async move {
                        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), tls.accept(stream)).await {
                            answer(stream, shared).await;
                        }
                    }),
                };
                while connections.try_join_next().is_some() {}
            }
            drop(listener);
            connections.shutdown().await;
        });
        *self.running.lock().unwrap() = Some((cancel, handle));
    }

    /// Stops listening and closes every connection.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((cancel, handle)) = running {
            cancel.cancel();
            handle.await.expect("receiver task");
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restart(&self) {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver cannot bind port {} yet: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("receiver cannot bind port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// Answers every message the same way.
    pub(crate) fn set_behaviour(&self, behaviour: Behaviour) {
        self.set_script(move |_| behaviour.clone());
    }

    /// Answers each message as `script` says for its control id.
    pub(crate) fn set_script(&self, script: impl Fn(&str) -> Behaviour + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Box::new(script);
    }

    /// Waits this long before answering each message.
    pub(crate) fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Closes each connection once it has been idle for `idle` (as many
    /// receivers do), or never.
    pub(crate) fn set_idle_close(&self, idle: Option<Duration>) {
        *self.shared.idle_close.lock().unwrap() = idle;
    }

    /// Answers the messages that arrived together last first, as a
    /// receiver that answers from a pool of threads may.
    pub(crate) fn set_out_of_order(&self, out_of_order: bool) {
        self.shared.out_of_order.store(out_of_order, Ordering::Relaxed);
    }

    /// Control ids of the messages received, in order of arrival.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.shared.received.lock().unwrap().iter().map(|(id, _)| id.clone()).collect()
    }

    /// Messages received (control id and exact bytes), in order of arrival.
    pub(crate) fn messages(&self) -> Vec<(String, Bytes)> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many times the message with this control id arrived.
    pub(crate) fn count(&self, control_id: &str) -> usize {
        self.shared.received.lock().unwrap().iter().filter(|(id, _)| id == control_id).count()
    }

    /// How many messages arrived.
    pub(crate) fn len(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The most messages that had started to arrive behind one not yet
    /// answered: 0 for a sender that waits for each reply.
    pub(crate) fn most_waiting(&self) -> usize {
        self.shared.most_waiting.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` messages arrived.
    pub(crate) async fn wait_len(&self, n: usize, timeout: Duration) -> bool {
        eventually(timeout, || self.len() >= n).await
    }
}

/// A connection the receiver can reset rather than close.
trait Resettable: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
    /// Makes closing the connection reset it (a zero linger time).
    fn reset_on_close(&self) -> std::io::Result<()>;
}

impl Resettable for TcpStream {
    fn reset_on_close(&self) -> std::io::Result<()> {
        self.set_zero_linger()
    }
}

impl Resettable for tokio_rustls::server::TlsStream<TcpStream> {
    fn reset_on_close(&self) -> std::io::Result<()> {
        self.get_ref().0.set_zero_linger()
    }
}

async fn answer<S: Resettable>(stream: S, shared: Arc<Shared>) {
    let mut framed = Framed::new(stream, MllpCodec::new());
    loop {
        let idle = *shared.idle_close.lock().unwrap();
        let frame = match idle {
            None => framed.next().await,
            Some(idle) => match tokio::time::timeout(idle, framed.next()).await {
                Ok(frame) => frame,
                Err(_) => break,
            },
        };
        let Some(frame) = frame else { break };
        let payload = match frame {
            Ok(MllpFrame::Message(payload)) => payload,
            Ok(_) => continue,
            Err(_) => break,
        };
        // Start blocks already read behind this message: sent before its reply.
        let waiting = framed.read_buffer().iter().filter(|&&b| b == 0x0b).count();
        shared.most_waiting.fetch_max(waiting, Ordering::Relaxed);
        let mut payloads = vec![payload];
        if shared.out_of_order.load(Ordering::Relaxed) {
            use futures_util::FutureExt as _;
            while let Some(Some(Ok(MllpFrame::Message(more)))) = framed.next().now_or_never() {
                payloads.push(more);
            }
            payloads.reverse();
        }
        for payload in payloads {
            if !answer_one(&mut framed, &shared, payload).await {
                return;
            }
        }
    }
}

/// Records and answers one message; `false` once the connection is done.
async fn answer_one<S: Resettable>(framed: &mut Framed<S, MllpCodec>, shared: &Shared, payload: Bytes) -> bool {
    let Ok(msg) = Message::parse(&payload) else { return true };
    let id = msg.control_id().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    shared.received.lock().unwrap().push((id.clone(), payload.clone()));
    let behaviour = (shared.script.lock().unwrap())(&id);
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = match behaviour {
        Behaviour::Accept => AckBuilder::new(&msg, AckCode::AA).build(),
        Behaviour::Error(text) => AckBuilder::new(&msg, AckCode::AE).text(text).build(),
        Behaviour::Reject => AckBuilder::new(&msg, AckCode::AR).text("rejected by the test receiver").build(),
        Behaviour::NoMsa => b"MSH|^~\\&|RCV|R|SWB|S|20260101120000||ACK^A01^ACK|R1|P|2.5\r".to_vec(),
        Behaviour::WrongControlId => {
            format!("MSH|^~\\&|RCV|R|SWB|S|20260101120000||ACK^A01^ACK|R2|P|2.5\rMSA|AA|NOT-{id}\r").into_bytes()
        }
        Behaviour::NotAck => {
            format!("MSH|^~\\&|RCV|R|SWB|S|20260101120000||ORR^O02|R3|P|2.5\rMSA|AA|{id}\r").into_bytes()
        }
        Behaviour::Garbage => GARBAGE_REPLY.to_vec(),
        Behaviour::Silent => return true,
        Behaviour::Close => return false,
        Behaviour::ResetMidReply => {
            use tokio::io::AsyncWriteExt as _;
            let ack = AckBuilder::new(&msg, AckCode::AA).build();
            let mut half = vec![0x0b];
            half.extend_from_slice(&ack[..ack.len() / 2]);
            let stream = framed.get_mut();
            let _ = stream.write_all(&half).await;
            let _ = stream.flush().await;
            let _ = stream.reset_on_close();
            return false;
        }
    };
    framed.send(&reply[..]).await.is_ok()
}

/// What [`Behaviour::Garbage`] answers.
pub(crate) const GARBAGE_REPLY: &[u8] = b"this is not an HL7 message";

/// An HL7 message of type `message_type` (`ADT^A01`) with MSH-10 `control_id`.
pub(crate) fn hl7(message_type: &str, control_id: &str) -> Vec<u8> {
    hl7_with_accept_ack(message_type, control_id, "")
}

/// Like [`hl7`], with MSH-15 (accept acknowledgment type) set; empty leaves
/// MSH-15 out (original mode).
pub(crate) fn hl7_with_accept_ack(message_type: &str, control_id: &str, msh15: &str) -> Vec<u8> {
    let enhanced = if msh15.is_empty() { String::new() } else { format!("|||{msh15}|NE") };
    format!(
        "MSH|^~\\&|SENDER|FAC|SWB|FAC|20260101120000||{message_type}|{control_id}|P|2.5{enhanced}\r\
         EVN|A01|20260101120000\r\
         PID|1||{control_id}^^^FAC^MR||DOE^JOHN||19800101|M\r"
    )
    .into_bytes()
}

/// A fixture file's bytes.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Reads an ACK.
pub(crate) fn reply(bytes: &[u8]) -> Reply {
    Reply::read(&Message::parse(bytes).unwrap_or_else(|e| panic!("unreadable reply: {e}")))
}

/// Parses `yaml` as a productions file in `dir` and creates the test
/// certificates of its TLS configurations marked `create_if_missing`, as
/// `switchboard run` does at start.
pub(crate) fn create_test_certificates(dir: &Path, yaml: &str) -> switchboard::config::Config {
    let config = switchboard::config::parse(&dir.join("productions.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    switchboard::tls::create_missing(&config).expect("test certificates");
    config
}

/// Builds an engine from `yaml` on a store in `dir`; nothing runs yet.
pub(crate) fn open_engine(dir: &Path, yaml: &str) -> Engine {
    let config = switchboard::config::parse(&dir.join("productions.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let (store, _) = Store::open(&dir.join("store.db"), StoreOptions::default()).expect("open the store");
    Engine::new(config, store).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds and starts an engine; waits until the production runs.
pub(crate) async fn start_engine(dir: &Path, yaml: &str) -> Engine {
    let engine = open_engine(dir, yaml);
    engine.start().await;
    assert!(
        engine.wait_for(Duration::from_secs(5), |s| production_state(s) == ProductionState::Running).await,
        "the production did not start: {:?}",
        engine.status()
    );
    engine
}

/// The state of the test production.
pub(crate) fn production_state(status: &EngineStatus) -> ProductionState {
    status.production(PRODUCTION).expect("production").state
}

/// The state of one item of the test production.
pub(crate) fn item_state(status: &EngineStatus, item: &str) -> ItemState {
    status.item(PRODUCTION, item).expect("item").state
}

/// Sends one message over a new connection and returns the reply.
pub(crate) async fn send(port: u16, message: &[u8]) -> Bytes {
    let mut client = connect(port).await;
    client.exchange(message, Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("no reply: {e}"))
}

/// An MLLP client connection to the engine.
pub(crate) async fn connect(port: u16) -> MllpClient {
    MllpClient::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}"))
}

/// A framed raw connection, for tests that write bytes outside the client's
/// request/reply pattern.
pub(crate) async fn raw(port: u16) -> TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("cannot connect: {e}"));
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Wraps `message` in an MLLP frame.
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(0x0B);
    out.extend_from_slice(message);
    out.extend_from_slice(&[0x1C, 0x0D]);
    out
}

/// Waits until the peer closes `stream` (EOF or reset) and returns how long
/// that took, or `None` if it stays open for `timeout`. Data the peer sends
/// meanwhile is read and dropped.
pub(crate) async fn closed_within(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub(crate) async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every header in the store, in id order.
pub(crate) fn all_headers(store: &Store) -> Vec<MessageSummary> {
    let mut headers = Vec::new();
    let mut misses = 0;
    for id in 1..1_000_000 {
        match store.header(id).expect("read a header") {
            Some(h) => {
                misses = 0;
                headers.push(h);
            }
            None => {
                misses += 1;
                if misses > 100 {
                    break;
                }
            }
        }
    }
    headers
}

/// The headers whose target is `item`, in id (queue) order.
pub(crate) fn headers_for(store: &Store, item: &str) -> Vec<MessageSummary> {
    all_headers(store).into_iter().filter(|h| h.production == PRODUCTION && h.target == item).collect()
}

/// The header for `item` of the message with this control id.
pub(crate) fn header(store: &Store, item: &str, control_id: &str) -> MessageSummary {
    headers_for(store, item)
        .into_iter()
        .find(|h| h.control_id.as_deref() == Some(control_id))
        .unwrap_or_else(|| panic!("no header for {item} with control id {control_id}"))
}

/// Waits until the header for `item` of `control_id` has `status`; returns it.
pub(crate) async fn wait_status(
    store: &Store,
    item: &str,
    control_id: &str,
    status: Status,
    timeout: Duration,
) -> MessageSummary {
    let deadline = Instant::now() + timeout;
    loop {
        let found = headers_for(store, item).into_iter().find(|h| h.control_id.as_deref() == Some(control_id));
        match found {
            Some(h) if h.status == status => return h,
            other if Instant::now() >= deadline => {
                panic!("header for {item} / {control_id} did not become {status:?}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
