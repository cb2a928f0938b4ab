//! `mllp_in`: a business service that listens for MLLP connections, stores
//! each message and acknowledges it.
//!
//! The ACK is sent only after the message is stored durably, in the
//! store's inbound log, from which it is committed (invariant 1). A
//! message that cannot be read or lacks what an ACK needs is rejected with
//! AR (CR in enhanced mode) and an ERR segment; a message that cannot be
//! stored gets AE (CE).
//!
//! Nothing a peer does may lock the listener or stall another connection
//! (invariant 4): a connection must say something within the first-byte
//! timeout (on a TLS port, finish its handshake by then), finish a started
//! frame within the read timeout and deliver a message within the idle
//! timeout; frames and junk are size limited; and when the listener or a
//! peer address is at its connection limit, the longest-idle connection
//! makes room for the new one (see [`registry`]). The warnings a peer can
//! cause are summed per connection and rate limited per item, so a flood
//! cannot fill the log or the event table. A listener whose port is taken
//! tries again with backoff until it gets it.

mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::ItemCtx;
use crate::config::{AckMode, MllpInConfig, format_duration};
use crate::engine::intake::{InlineDecided, Intake};
use crate::engine::status::{ItemState, ItemStats};
use crate::hl7::{AckBuilder, AckCode, AckError, Hl7ErrorCode, Message, Severity, check_header};
use crate::mllp::{MllpCodec, MllpError, MllpFrame, START_BLOCK, Stream};
use crate::rate_limit::RateLimit;
use crate::store::{Committed, EventLevel, Pending, StoreError};
use crate::tls::TlsConfigHandle;
use registry::{Evicted, Limit, Registry, Ticket};
use tokio_rustls::server::TlsStream;

/// Junk (bytes outside frames) tolerated per connection before it is closed.
const MAX_JUNK: usize = 64 * 1024;
/// Time allowed to write an ACK.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause before a listener tries its port again; it doubles
/// after each failure, up to [`BIND_RETRY_MAX`].
const BIND_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between two tries of a port: a port freed is taken
/// within this time.
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);
/// While a port stays taken for the same reason, how often the event log
/// says so again (the item's status always shows the latest try).
const BIND_REPORT_EVERY: Duration = Duration::from_secs(600);
/// Warnings of one kind an item writes per [`WARN_INTERVAL`]; the next one
/// says how many were held back. At 5 a minute for each of a handful of
/// kinds, a sustained attack adds megabytes a day to the event log, not
/// gigabytes (and the retention purge takes them away).
const WARN_BURST: u32 = 5;
/// See [`WARN_BURST`].
const WARN_INTERVAL: Duration = Duration::from_secs(60);

pub(super) async fn run(ctx: &ItemCtx, config: &MllpInConfig, targets: &[String]) {
    let tls = match config.tls.as_deref().map(|name| ctx.tls(name)).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            let error = format!("cannot use TLS: {error}");
            ctx.event(EventLevel::Error, "tls", error.clone());
            ctx.ready(Err(error));
            return;
        }
    };
    let Some(listener) = bind(ctx, config).await else { return };
    let registry = Registry::new(config.max_connections, config.max_connections_per_peer);
    let troubles = Arc::new(Troubles::new(ctx));
    // Shared by every connection: a flood of them costs no copies.
    let intake = ctx.intake(targets);
    let config = Arc::new(config.clone());
    let mut connections = tokio::task::JoinSet::new();
    let mut trouble = ctx.store().commit_trouble();
    let cause = trouble.borrow_and_update().clone();
    if cause.is_some() {
        ctx.store_trouble(cause.as_deref());
    }
    loop {
        let accepted = tokio::select! {
            () = ctx.cancelled() => break,
            Ok(()) = trouble.changed() => {
                let cause = trouble.borrow_and_update().clone();
                ctx.store_trouble(cause.as_deref());
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off, keep listening.
                troubles.report(Trouble::Accept, || format!("cannot accept a connection: {e}"));
                let _ = ctx.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let (ticket, evicted) = registry.admit(peer, accepted_at);
        for evicted in evicted {
            troubles.report(Trouble::Evicted, || evicted.describe(peer));
        }
        let conn = Connection {
            ctx: ctx.clone(),
            config: config.clone(),
            intake: intake.clone(),
            peer,
            origin: peer.to_string().into(),
            troubles: troubles.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move { conn.open(stream, tls.as_deref(), ticket, accepted_at).await });
        while connections.try_join_next().is_some() {}
    }
    // Stop taking messages: close every connection. A message whose commit
    // is in flight is either committed and acknowledged or not acknowledged.
    connections.shutdown().await;
    troubles.flush();
}

/// Binds the listener, trying again with backoff while the port is taken
/// (or the address is not there yet), so that an item whose port is freed
/// later starts by itself. Meanwhile the item is in error (its production
/// troubled) with the reason and the next try in its status, and the event
/// log hears of it when it starts, when the reason changes and every
/// [`BIND_REPORT_EVERY`]. `None` once the item is stopped.
async fn bind(ctx: &ItemCtx, config: &MllpInConfig) -> Option<TcpListener> {
    let addr = format!("{}:{}", config.host, config.port);
    let mut pause = BIND_RETRY_FIRST;
    let mut failures = 0u32;
    let mut reported: Option<(String, Instant)> = None;
    loop {
        let error = match TcpListener::bind((config.host.as_str(), config.port)).await {
            Ok(listener) => {
                tracing::info!(production = ctx.production_id(), item = ctx.name(), %addr, "listening");
                if failures == 0 {
                    ctx.ready(Ok(()));
                } else {
                    ctx.event(EventLevel::Info, "listen", format!("listening on {addr} after {failures} failed tries"));
                    ctx.recovered();
                }
                return Some(listener);
            }
            Err(e) => e,
        };
        failures += 1;
        let reason = format!("cannot listen on {addr}: {error}");
        let status = format!("{reason}; trying again in {}", format_duration(pause));
        let now = Instant::now();
        let report = match &reported {
            None => true,
            Some((last, at)) => *last != reason || now.duration_since(*at) >= BIND_REPORT_EVERY,
        };
        if report {
            let text = match failures {
                1 => format!(
                    "{reason}; trying again in {}, then every {} at most until the port is free",
                    format_duration(pause),
                    format_duration(BIND_RETRY_MAX)
                ),
                n => format!("{reason} ({n} tries so far); trying again in {}", format_duration(pause)),
            };
            tracing::warn!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.event(EventLevel::Error, "listen", text);
            reported = Some((reason, now));
        } else {
            tracing::debug!(production = ctx.production_id(), item = ctx.name(), "{status}");
        }
        if failures == 1 {
            // The production's start goes on, with this item in error.
            ctx.ready(Err(status));
        } else {
            ctx.set_state(ItemState::Error, Some(status));
        }
        ctx.sleep(pause).await.ok()?;
        pause = (pause * 2).min(BIND_RETRY_MAX);
    }
}

/// The kinds of warning a peer can cause. Each is rate limited on its own,
/// so a flood of one kind neither hides the others nor is hidden by them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// Bytes outside MLLP frames.
    Junk,
    /// Frames that are not usable messages (unreadable, incomplete header,
    /// too large).
    Rejected,
    /// Failed TLS handshakes.
    Handshake,
    /// The wrong protocol: plaintext on a TLS port, TLS on a plain one.
    WrongProtocol,
    /// Connections that said nothing within the first-byte timeout.
    Silent,
    /// Connections closed to make room for new ones.
    Evicted,
    /// Connections that failed while reading or writing.
    Failed,
    /// `accept` itself failed (out of file descriptors...).
    Accept,
}

impl Trouble {
    const ALL: [Trouble; 8] = [
        Trouble::Junk,
        Trouble::Rejected,
        Trouble::Handshake,
        Trouble::WrongProtocol,
        Trouble::Silent,
        Trouble::Evicted,
        Trouble::Failed,
        Trouble::Accept,
    ];

    /// The event kind it is logged under.
    fn kind(self) -> &'static str {
        match self {
            Trouble::Junk | Trouble::Rejected => "inbound",
            Trouble::Handshake | Trouble::WrongProtocol => "tls",
            Trouble::Silent | Trouble::Evicted | Trouble::Failed | Trouble::Accept => "connection",
        }
    }

    /// What its warnings are about, for the count left when the item stops.
    fn about(self) -> &'static str {
        match self {
            Trouble::Junk => "bytes outside MLLP frames",
            Trouble::Rejected => "rejected messages",
            Trouble::Handshake => "failed TLS handshakes",
            Trouble::WrongProtocol => "connections using the wrong protocol",
            Trouble::Silent => "connections that sent nothing",
            Trouble::Evicted => "connections closed to make room",
            Trouble::Failed => "failed connections",
            Trouble::Accept => "failed accepts",
        }
    }
}

/// The warnings of one listener, limited per kind of [`Trouble`]: each
/// goes to the log and, as a warning, to the event log.
struct Troubles {
    ctx: ItemCtx,
    limits: [RateLimit; Trouble::ALL.len()],
}

impl Troubles {
    fn new(ctx: &ItemCtx) -> Self {
        Self { ctx: ctx.clone(), limits: Trouble::ALL.map(|_| RateLimit::new(WARN_BURST, WARN_INTERVAL)) }
    }

    fn limit(&self, trouble: Trouble) -> &RateLimit {
        // `ALL` lists every kind in declaration order.
        &self.limits[trouble as usize]
    }

    /// Writes the warning `text` makes, unless too many of its kind were
    /// written lately (then it is only counted, and not even formatted).
    fn report(&self, trouble: Trouble, text: impl FnOnce() -> String) {
        let Some(pass) = self.limit(trouble).check() else { return };
        self.write(trouble, format!("{}{}", text(), pass.suffix()));
    }

    /// Says how many warnings were held back and not reported yet.
    fn flush(&self) {
        for trouble in Trouble::ALL {
            let held = self.limit(trouble).take_suppressed();
            if held > 0 {
                self.write(trouble, format!("{held} more warnings about {} were suppressed", trouble.about()));
            }
        }
    }

    fn write(&self, trouble: Trouble, text: String) {
        tracing::warn!(production = %self.ctx.production_id(), item = %self.ctx.name(), "{text}");
        self.ctx.event(EventLevel::Warning, trouble.kind(), text);
    }
}

impl Evicted {
    /// The warning for a connection closed to make room for one from
    /// `newcomer`.
    fn describe(&self, newcomer: SocketAddr) -> String {
        let state = if self.delivered { "idle" } else { "no message yet," };
        let limit = match self.limit {
            Limit::Peer(n) => format!("{} had {n} connections (max_connections_per_peer)", newcomer.ip()),
            Limit::Listener(n) => format!("the listener had {n} connections (max_connections)"),
        };
        format!(
            "closed the connection from {} ({state} {}) to make room for one from {newcomer}: {limit}",
            self.peer,
            format_idle(self.idle)
        )
    }
}

/// `1.234s`, `12ms`: idle times in warnings.
fn format_idle(d: Duration) -> String {
    match d.as_millis() {
        ms @ 0..1000 => format!("{ms}ms"),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// A TLS handshake record (`0x16`, then version `0x03`).
    Tls,
    /// An MLLP start block, or an HL7 header sent without framing.
    Mllp,
    /// Anything else.
    Other,
}

impl Opening {
    fn of(head: &[u8]) -> Self {
        match head {
            [0x16] | [0x16, 0x03, ..] => Opening::Tls,
            [START_BLOCK, ..] => Opening::Mllp,
            head if !head.is_empty() && (b"MSH".starts_with(head) || head.starts_with(b"MSH")) => Opening::Mllp,
            _ => Opening::Other,
        }
    }
}

struct Connection {
    ctx: ItemCtx,
    config: Arc<MllpInConfig>,
    /// Shared with the counting of each message routed on receipt.
    intake: Intake,
    peer: SocketAddr,
    /// `peer` as each message stored records it, formatted once.
    origin: Arc<str>,
    troubles: Arc<Troubles>,
}

/// A connection counted in its item's gauge from its accept to its end,
/// however it ends (a task aborted when the item stops included).
struct Counted(Arc<ItemStats>);

impl Counted {
    fn open(stats: &Arc<ItemStats>) -> Self {
        stats.connection(true);
        Self(stats.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connection(false);
    }
}

/// Where a reply goes.
enum Answer {
    Send(Vec<u8>),
    Nothing,
}

/// Why a connection ended.
enum Closed {
    Stopping,
    Evicted,
    ByPeer,
    Silent,
    Idle,
    ReadTimeout,
    TooMuchJunk,
    ReadError(String),
    WriteError(String),
    WriteTimeout,
}

impl Closed {
    fn as_str(&self) -> &str {
        match self {
            Closed::Stopping => "the item is stopping",
            Closed::Evicted => "closed to make room for a new connection",
            Closed::ByPeer => "closed by peer",
            Closed::Silent => "nothing received within the first-byte timeout",
            Closed::Idle => "idle timeout",
            Closed::ReadTimeout => "read timeout: a frame was started but not finished",
            Closed::TooMuchJunk => "too much data outside frames",
            Closed::ReadError(_) => "read error",
            Closed::WriteError(_) => "write error",
            Closed::WriteTimeout => "write timeout",
        }
    }
}

impl Connection {
    /// Runs the connection from its accept: first bytes, TLS handshake,
    /// then messages. `ticket` is its place in the listener's registry.
    async fn open(self, stream: TcpStream, tls: Option<&TlsConfigHandle>, ticket: Ticket, accepted: Instant) {
        let _counted = Counted::open(self.ctx.stats());
        let _ = stream.set_nodelay(true);
        // Silent connections go before a TLS handshake costs anything.
        let deadline = accepted + self.first_byte_limit().0;
        let Some(opening) = self.first_bytes(&stream, &ticket, deadline).await else { return };
        match (tls, opening) {
            (None, Opening::Tls) => self.troubles.report(Trouble::WrongProtocol, || {
                format!(
                    "TLS on a plaintext port from {}: the sender must not use TLS here, or the item needs a `tls` \
                     configuration",
                    self.peer
                )
            }),
            (None, _) => self.serve(stream, &ticket, accepted, true).await,
            (Some(_), Opening::Mllp) => self.troubles.report(Trouble::WrongProtocol, || {
                format!("plaintext on a TLS port from {}: the sender must use TLS", self.peer)
            }),
            (Some(_), Opening::Other) => self.troubles.report(Trouble::Handshake, || {
                format!("TLS handshake with {} failed: the first bytes are not a TLS handshake", self.peer)
            }),
            (Some(tls), Opening::Tls) => {
                if let Some(stream) = self.handshake(tls, stream, &ticket, deadline).await {
                    // The first byte of a message is awaited anew.
                    self.serve(stream, &ticket, Instant::now(), false).await;
                }
            }
        }
    }

    /// Waits for the connection's first bytes, without reading them, until
    /// `deadline`. `None` when it ends first: closed by the peer, closed to
    /// make room, silent past the first-byte timeout, or the item stops.
    async fn first_bytes(&self, stream: &TcpStream, ticket: &Ticket, deadline: Instant) -> Option<Opening> {
        let mut head = [0u8; 3];
        let peeked = tokio::select! {
            () = self.ctx.cancelled() => return None,
            () = ticket.evicted() => return None,
            peeked = tokio::time::timeout_at(deadline, stream.peek(&mut head)) => peeked,
        };
        match peeked {
            Err(_) => {
                self.report_silent();
                None
            }
            Ok(Ok(0)) => None,
            Ok(Err(e)) => {
                tracing::debug!(item = %self.ctx.name(), peer = %self.peer, error = %e, "connection failed");
                None
            }
            Ok(Ok(n)) => Some(Opening::of(&head[..n.min(head.len())])),
        }
    }

    /// Completes the server side of a TLS handshake by `deadline` (the
    /// first-byte timeout after the accept). A failure (untrusted or
    /// missing client certificate, a handshake that stalls...) is reported
    /// with its reason and closes only this connection.
    async fn handshake(
        &self,
        tls: &TlsConfigHandle,
        stream: TcpStream,
        ticket: &Ticket,
        deadline: Instant,
    ) -> Option<TlsStream<TcpStream>> {
        let failed = |reason: String| {
            self.troubles.report(Trouble::Handshake, || format!("TLS handshake with {} failed: {reason}", self.peer));
        };
        // A fresh acceptor per connection: a renewed certificate applies to
        // the next handshake.
        let acceptor = match tls.acceptor() {
            Ok(a) => a,
            Err(e) => {
                failed(e.to_string());
                return None;
            }
        };
        let accepted = tokio::select! {
            () = self.ctx.cancelled() => return None,
            () = ticket.evicted() => return None,
            accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => accepted,
        };
        match accepted {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                failed(e.to_string());
                None
            }
            Err(_) => {
                let (limit, setting) = self.first_byte_limit();
                failed(format!("not complete within {} ({setting})", format_duration(limit)));
                None
            }
        }
    }

    /// Reads and answers messages until the connection ends. `ready` is
    /// when it could first send a message; `heard` whether it has sent a
    /// byte of one yet.
    async fn serve<S: Stream>(&self, stream: S, ticket: &Ticket, ready: Instant, mut heard: bool) {
        let stats = self.ctx.stats().clone();
        let item = self.ctx.name();
        tracing::debug!(%item, peer = %self.peer, "connection opened");
        let codec = MllpCodec::new().with_max_frame_size(self.config.max_message_size);
        let mut framed = Framed::new(stream, codec);
        let mut junk = 0usize;
        // Idle time runs from the last complete frame: junk and a frame
        // trickled in but never finished do not hold the connection open.
        let mut last_frame = ready;
        let first_byte = self.first_byte_limit().0;
        let step = (self.config.read_timeout.min(first_byte) / 4).max(Duration::from_millis(10));
        let closed = 'connection: loop {
            // A frame that has started must finish within the read timeout;
            // between frames the idle timeout applies, and the first-byte
            // timeout before anything arrived. Bytes of a frame can arrive
            // while waiting for the next frame, so the wait is cut into
            // short steps (reading a frame is cancel safe) and the deadline
            // is reconsidered after each.
            let mut frame_started = None;
            let frame = loop {
                if frame_started.is_none() && (framed.codec().in_frame() || !framed.read_buffer().is_empty()) {
                    frame_started = Some(Instant::now());
                    heard = true;
                }
                let deadline = match (frame_started, heard) {
                    (Some(at), _) => at + self.config.read_timeout,
                    (None, false) => last_frame + first_byte,
                    (None, true) => last_frame + self.config.idle_timeout,
                };
                if Instant::now() >= deadline {
                    break Err(());
                }
                tokio::select! {
                    () = self.ctx.cancelled() => break 'connection Closed::Stopping,
                    () = ticket.evicted() => break 'connection Closed::Evicted,
                    frame = tokio::time::timeout_at(deadline.min(Instant::now() + step), framed.next()) => {
                        if let Ok(frame) = frame {
                            break Ok(frame);
                        }
                    }
                }
            };
            // A frame read whole in one go was never seen half-way: it
            // counts as heard all the same, so that the idle timeout, not
            // the first-byte timeout, applies from now on.
            if matches!(frame, Ok(Some(Ok(_)))) {
                heard = true;
            }
            let answer = match frame {
                Err(()) => {
                    break match (frame_started, heard) {
                        (Some(_), _) => Closed::ReadTimeout,
                        (None, false) => Closed::Silent,
                        (None, true) => Closed::Idle,
                    };
                }
                Ok(None) => break Closed::ByPeer,
                // A TLS peer that closes without close_notify between
                // messages has simply hung up.
                Ok(Some(Err(MllpError::Io(e))))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && frame_started.is_none() =>
                {
                    break Closed::ByPeer;
                }
                Ok(Some(Err(e))) => break Closed::ReadError(e.to_string()),
                Ok(Some(Ok(MllpFrame::Discarded { bytes }))) => {
                    // Summed, and reported once when the connection closes.
                    junk = junk.saturating_add(bytes);
                    if junk > MAX_JUNK {
                        break Closed::TooMuchJunk;
                    }
                    continue;
                }
                Ok(Some(Ok(MllpFrame::Oversized { len, head }))) => {
                    last_frame = Instant::now();
                    ticket.touch(false);
                    stats.bump(&stats.errors, 1);
                    let text =
                        format!("message of {len} bytes exceeds the limit of {} bytes", self.config.max_message_size);
                    self.troubles
                        .report(Trouble::Rejected, || format!("rejected a message from {}: {text}", self.peer));
                    Answer::Send(reject(&head, &text, Hl7ErrorCode::ValueTooLong))
                }
                Ok(Some(Ok(MllpFrame::Message(payload)))) => {
                    last_frame = Instant::now();
                    self.receive(payload, ticket).await
                }
            };
            if let Answer::Send(ack) = answer {
                match tokio::time::timeout(WRITE_TIMEOUT, framed.send(&ack[..])).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Closed::WriteError(e.to_string()),
                    Err(_) => break Closed::WriteTimeout,
                }
            }
        };
        tracing::debug!(%item, peer = %self.peer, reason = closed.as_str(), junk, "connection closed");
        self.report_close(&closed, junk);
    }

    /// How long a connection may stay silent, and the setting that says
    /// so: the first-byte timeout, or the idle timeout if that is shorter.
    fn first_byte_limit(&self) -> (Duration, &'static str) {
        match self.config.first_byte_timeout <= self.config.idle_timeout {
            true => (self.config.first_byte_timeout, "first_byte_timeout"),
            false => (self.config.idle_timeout, "idle_timeout"),
        }
    }

    fn report_silent(&self) {
        let (limit, setting) = self.first_byte_limit();
        self.troubles.report(Trouble::Silent, || {
            format!(
                "closed the connection from {}: nothing received within {} ({setting})",
                self.peer,
                format_duration(limit)
            )
        });
    }

    /// One warning for what went wrong on the connection, if anything: the
    /// junk it sent is summed over its life rather than reported per read.
    fn report_close(&self, closed: &Closed, junk: usize) {
        let peer = self.peer;
        match closed {
            Closed::TooMuchJunk => self.troubles.report(Trouble::Junk, || {
                format!("closed the connection from {peer}: more than {MAX_JUNK} bytes outside MLLP frames")
            }),
            _ if junk > 0 => self.troubles.report(Trouble::Junk, || {
                format!("dropped {junk} bytes outside MLLP frames from {peer} (connection {})", closed.as_str())
            }),
            _ => {}
        }
        match closed {
            Closed::Silent => self.report_silent(),
            Closed::ReadError(e) => {
                self.troubles.report(Trouble::Failed, || format!("connection from {peer} failed: {e}"));
            }
            Closed::WriteError(e) => {
                self.troubles.report(Trouble::Failed, || format!("cannot send an ACK to {peer}: {e}"));
            }
            Closed::WriteTimeout => self.troubles.report(Trouble::Failed, || {
                format!("cannot send an ACK to {peer}: not written within {}", format_duration(WRITE_TIMEOUT))
            }),
            _ => {}
        }
    }

    /// Validates, stores and acknowledges one message. Routing decisions
    /// made on receipt are counted once their commit is known, which may be
    /// after the ACK.
    async fn receive(&self, payload: Bytes, ticket: &Ticket) -> Answer {
        let stats = self.ctx.stats();
        let parsed = Message::parse(&payload);
        // Before the commit: a connection storing a message is the last a
        // full listener would close.
        ticket.touch(parsed.is_ok());
        let msg = match parsed {
            Ok(msg) => msg,
            Err(e) => {
                stats.bump(&stats.errors, 1);
                let text = format!("message cannot be parsed: {e}");
                self.troubles.report(Trouble::Rejected, || format!("rejected a message from {}: {text}", self.peer));
                return Answer::Send(reject(&payload, &text, Hl7ErrorCode::SegmentSequenceError));
            }
        };
        let enhanced = AcceptAck::of(&msg);
        if let Err(e) = check_header(&msg) {
            stats.bump(&stats.errors, 1);
            self.troubles.report(Trouble::Rejected, || format!("rejected a message from {}: {e}", self.peer));
            let ack =
                AckBuilder::new(&msg, enhanced.code(AckCode::AR)).text(e.to_string()).error(e.ack_error()).build();
            return if enhanced.wants(false) { Answer::Send(ack) } else { Answer::Nothing };
        }
        let (inbound, decided) = self.intake.inbound(&msg, payload.clone(), self.origin.clone());
        let store = self.ctx.store();
        if self.config.ack_mode == AckMode::Application {
            // The reply is found by the session the commit opens.
            return match store.receive_inbound(inbound).await {
                Ok(committed) => {
                    stats.bump(&stats.received, 1);
                    self.relay_reply(&msg, committed, &decided).await
                }
                Err(e) => self.not_stored(&msg, enhanced, &e),
            };
        }
        // Routing decisions are counted on the store's thread once
        // committed: nothing here waits for the commit. With none to count,
        // the commit is heard of by nobody (a closure that captures
        // nothing takes no allocation, unlike a channel).
        let stored = match decided.is_empty() {
            true => store.receive_inbound_then(inbound, |_| {}).await,
            false => {
                let intake = self.intake.clone();
                let count = move |committed: Result<Committed, StoreError>| {
                    if let Ok(committed) = committed {
                        intake.account(&committed, &decided);
                    }
                };
                store.receive_inbound_then(inbound, count).await
            }
        };
        if let Err(e) = stored {
            return self.not_stored(&msg, enhanced, &e);
        }
        stats.bump(&stats.received, 1);
        match self.config.ack_mode == AckMode::Immediate && enhanced.wants(true) {
            true => Answer::Send(AckBuilder::new(&msg, enhanced.code(AckCode::AA)).build()),
            false => Answer::Nothing,
        }
    }

    /// AE (CE): the message could not be stored.
    fn not_stored(&self, msg: &Message<'_>, enhanced: AcceptAck, e: &StoreError) -> Answer {
        let stats = self.ctx.stats();
        stats.bump(&stats.errors, 1);
        tracing::error!(item = %self.ctx.name(), error = %e, "message not stored; negative ACK sent");
        let ack = AckBuilder::new(msg, enhanced.code(AckCode::AE))
            .text("the message could not be stored; send it again")
            .error(AckError { location: None, code: Hl7ErrorCode::ApplicationInternalError, severity: Severity::Error })
            .build();
        if enhanced.wants(false) { Answer::Send(ack) } else { Answer::Nothing }
    }

    /// `ack_mode: application`: the first operation's reply, or AE once the
    /// timeout passes.
    async fn relay_reply(&self, msg: &Message<'_>, committed: Pending<Committed>, decided: &[InlineDecided]) -> Answer {
        let committed = match committed.wait().await {
            Ok(committed) => committed,
            Err(e) => {
                let text = format!("stored, but its downstream reply cannot be relayed: {e}");
                return Answer::Send(AckBuilder::new(msg, AckCode::AE).text(text).build());
            }
        };
        self.intake.account(&committed, decided);
        match self.ctx.wait_reply(committed.session_id, self.config.application_ack_timeout).await {
            Some(reply) => Answer::Send(reply.to_vec()),
            None => {
                let text = format!(
                    "stored, but no reply from downstream within {:?}; it will be delivered",
                    self.config.application_ack_timeout
                );
                Answer::Send(AckBuilder::new(msg, AckCode::AE).text(text).build())
            }
        }
    }
}

/// MSH-15 (accept acknowledgment type): present means enhanced mode, where
/// commit ACKs use CA/CE/CR and are sent only when MSH-15 asks.
#[derive(Clone, Copy)]
enum AcceptAck {
    Original,
    Always,
    Never,
    OnError,
    OnSuccess,
}

impl AcceptAck {
    fn of(msg: &Message<'_>) -> Self {
        match msg.get(&crate::hl7::Path::field("MSH", 15)).unwrap_or_default() {
            b"" => Self::Original,
            b"NE" => Self::Never,
            b"ER" => Self::OnError,
            b"SU" => Self::OnSuccess,
            _ => Self::Always,
        }
    }

    fn code(self, original: AckCode) -> AckCode {
        match (self, original) {
            (Self::Original, code) => code,
            (_, AckCode::AA) => AckCode::CA,
            (_, AckCode::AE) => AckCode::CE,
            (_, AckCode::AR) => AckCode::CR,
            (_, code) => code,
        }
    }

    fn wants(self, success: bool) -> bool {
        match self {
            Self::Original | Self::Always => true,
            Self::Never => false,
            Self::OnError => !success,
            Self::OnSuccess => success,
        }
    }
}

/// A reject for bytes that are not a usable message. When the start of the
/// message can still be read, the reject names its control id and uses its
/// delimiters; otherwise a standard header is used and MSA-2 stays empty.
fn reject(bytes: &[u8], text: &str, code: Hl7ErrorCode) -> Vec<u8> {
    const FALLBACK: &[u8] = b"MSH|^~\\&|||||||||P|2.5";
    // Only the MSH segment: the rest may be cut off mid-segment.
    let msh_end = bytes.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(bytes.len());
    let msh = &bytes[..msh_end];
    let error = AckError { location: None, code, severity: Severity::Error };
    match Message::parse(msh) {
        Ok(msg) => AckBuilder::new(&msg, AcceptAck::of(&msg).code(AckCode::AR)).text(text).error(error).build(),
        Err(_) => match Message::parse(FALLBACK) {
            Ok(msg) => AckBuilder::new(&msg, AckCode::AR).text(text).error(error).build(),
            // The fallback header is a constant that parses.
            Err(_) => Vec::new(),
        },
    }
}
