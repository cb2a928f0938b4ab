//! `mllp_in`: a business service that listens for MLLP connections, stores
//! each message and acknowledges it.
//!
//! The ACK is sent only after the message is stored durably, in the
//! store's inbound log, from which it is committed (invariant 1). A
//! message that cannot be read or lacks what an ACK needs is rejected with
//! AR (CR in enhanced mode) and an ERR segment; a message that cannot be
//! stored gets AE (CE). Peers are held to an idle timeout, a read timeout
//! for a started frame, a frame size limit and a connection limit, and one
//! peer's trouble never reaches another's connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::{InlineDecided, InlineRouters, ItemCtx, header_facts};
use crate::config::{AckMode, MllpInConfig};
use crate::hl7::{AckBuilder, AckCode, AckError, Hl7ErrorCode, Message, Severity, check_header};
use crate::mllp::{MllpCodec, MllpError, MllpFrame, Stream};
use crate::store::{Committed, EventLevel, NewInbound, Pending, StoreError};
use crate::tls::TlsConfigHandle;
use tokio_rustls::server::TlsStream;

/// Junk (bytes outside frames) tolerated per connection before it is closed.
const MAX_JUNK: usize = 64 * 1024;
/// Time allowed to write an ACK.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(ctx: &ItemCtx, config: &MllpInConfig, targets: &[String]) {
    let addr = format!("{}:{}", config.host, config.port);
    let tls = match config.tls.as_deref().map(|name| ctx.production.tls(name)).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            let error = format!("cannot use TLS: {error}");
            ctx.event(EventLevel::Error, "tls", error.clone());
            ctx.ready(Err(error));
            return;
        }
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            let error = format!("cannot listen on {addr}: {e}");
            ctx.event(EventLevel::Error, "listen", error.clone());
            ctx.ready(Err(error));
            return;
        }
    };
    tracing::info!(production = ctx.production_id(), item = ctx.name(), %addr, "listening");
    ctx.ready(Ok(()));
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let routers = InlineRouters::of(&ctx.production, targets);
    let mut connections = tokio::task::JoinSet::new();
    let mut trouble = ctx.store().commit_trouble();
    let cause = trouble.borrow_and_update().clone();
    if cause.is_some() {
        ctx.store_trouble(cause.as_deref());
    }
    loop {
        let accepted = tokio::select! {
            () = ctx.cancel.cancelled() => break,
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
                tracing::warn!(item = ctx.name(), error = %e, "accept failed");
                let _ = ctx.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(item = ctx.name(), %peer, limit = config.max_connections, "connection refused: too many connections");
            ctx.event(
                EventLevel::Warning,
                "connection",
                format!("refused {peer}: more than {} connections", config.max_connections),
            );
            drop(stream);
            continue;
        };
        let conn = Connection {
            ctx: ItemHandle::of(ctx),
            config: config.clone(),
            targets: targets.into(),
            routers: routers.clone(),
            peer,
            service: ctx.name().into(),
            origin: peer.to_string().into(),
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => conn.serve(stream).await,
                Some(tls) => {
                    if let Some(stream) = conn.handshake(&tls, stream).await {
                        conn.serve(stream).await;
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // Stop taking messages: close every connection. A message whose commit
    // is in flight is either committed and acknowledged or not acknowledged.
    connections.shutdown().await;
}

/// What a connection task needs from its item (owned, for `spawn`).
#[derive(Clone)]
struct ItemHandle {
    production: Arc<crate::engine::production::ProductionShared>,
    slot: Arc<crate::engine::production::ItemSlot>,
    cancel: tokio_util::sync::CancellationToken,
}

impl ItemHandle {
    fn of(ctx: &ItemCtx) -> Self {
        Self { production: ctx.production.clone(), slot: ctx.slot.clone(), cancel: ctx.cancel.clone() }
    }
}

struct Connection {
    ctx: ItemHandle,
    config: MllpInConfig,
    /// Shared with the counting of each message routed on receipt.
    targets: Arc<[String]>,
    routers: InlineRouters,
    peer: SocketAddr,
    /// The item's name, shared by every message stored.
    service: Arc<str>,
    /// `peer` as each message stored records it, formatted once.
    origin: Arc<str>,
}

/// Where a reply goes.
enum Answer {
    Send(Vec<u8>),
    Nothing,
}

impl Connection {
    /// Completes the server side of a TLS handshake within the read
    /// timeout. A failure (plaintext client, untrusted or missing client
    /// certificate, ...) is logged with its reason and closes only this
    /// connection.
    async fn handshake(&self, tls: &TlsConfigHandle, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let failed = |reason: String| {
            tracing::warn!(item = %self.ctx.slot.name, peer = %self.peer, %reason, "TLS handshake failed");
            self.event(EventLevel::Warning, format!("TLS handshake with {} failed: {reason}", self.peer));
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
        match tokio::time::timeout(self.config.read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                failed(e.to_string());
                None
            }
            Err(_) => {
                failed(format!("no handshake within {:?}", self.config.read_timeout));
                None
            }
        }
    }

    async fn serve<S: Stream>(&self, stream: S) {
        let stats = self.ctx.slot.stats.clone();
        stats.connection(true);
        let item = self.ctx.slot.name.clone();
        tracing::debug!(%item, peer = %self.peer, "connection opened");
        let codec = MllpCodec::new().with_max_frame_size(self.config.max_message_size);
        let mut framed = Framed::new(stream, codec);
        let mut junk = 0usize;
        let reason = 'connection: loop {
            // A frame that has started must finish within the read timeout;
            // between frames the idle timeout applies. Bytes of a frame can
            // arrive while waiting for the next frame, so the wait is cut
            // into short steps (reading a frame is cancel safe) and the
            // deadline is reconsidered after each.
            let waiting_since = Instant::now();
            let step = (self.config.read_timeout / 4).max(Duration::from_millis(10));
            let mut frame_started = None;
            let frame = loop {
                if frame_started.is_none() && (framed.codec().in_frame() || !framed.read_buffer().is_empty()) {
                    frame_started = Some(Instant::now());
                }
                let deadline = match frame_started {
                    Some(at) => at + self.config.read_timeout,
                    None => waiting_since + self.config.idle_timeout,
                };
                if Instant::now() >= deadline {
                    break Err(());
                }
                tokio::select! {
                    () = self.ctx.cancel.cancelled() => break 'connection "the item is stopping",
                    frame = tokio::time::timeout_at(deadline.min(Instant::now() + step), framed.next()) => {
                        if let Ok(frame) = frame {
                            break Ok(frame);
                        }
                    }
                }
            };
            let answer = match frame {
                Err(_) if frame_started.is_none() => break "idle timeout",
                Err(_) => break "read timeout: a frame was started but not finished",
                Ok(None) => break "closed by peer",
                // A TLS peer that closes without close_notify between
                // messages has simply hung up.
                Ok(Some(Err(MllpError::Io(e))))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && frame_started.is_none() =>
                {
                    break "closed by peer";
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(%item, peer = %self.peer, error = %e, "connection error");
                    break "read error";
                }
                Ok(Some(Ok(MllpFrame::Discarded { bytes }))) => {
                    junk += bytes;
                    tracing::warn!(%item, peer = %self.peer, bytes, "bytes outside MLLP frames dropped");
                    if junk > MAX_JUNK {
                        self.event(
                            EventLevel::Warning,
                            format!("closed {}: more than {MAX_JUNK} bytes outside MLLP frames", self.peer),
                        );
                        break "too much data outside frames";
                    }
                    continue;
                }
                Ok(Some(Ok(MllpFrame::Oversized { len, head }))) => {
                    stats.bump(&stats.errors, 1);
                    let text =
                        format!("message of {len} bytes exceeds the limit of {} bytes", self.config.max_message_size);
                    self.event(EventLevel::Warning, format!("rejected a message from {}: {text}", self.peer));
                    Answer::Send(reject(&head, &text, Hl7ErrorCode::ValueTooLong))
                }
                Ok(Some(Ok(MllpFrame::Message(payload)))) => self.receive(payload).await,
            };
            if let Answer::Send(ack) = answer {
                match tokio::time::timeout(WRITE_TIMEOUT, framed.send(&ack[..])).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(%item, peer = %self.peer, error = %e, "cannot send ACK");
                        break "write error";
                    }
                    Err(_) => break "write timeout",
                }
            }
        };
        tracing::debug!(%item, peer = %self.peer, reason, "connection closed");
        stats.connection(false);
    }

    fn event(&self, level: EventLevel, text: String) {
        self.ctx.production.event(level, Some(&self.ctx.slot.name), "inbound", text);
    }

    /// Validates, stores and acknowledges one message. Routing decisions
    /// made on receipt are counted once their commit is known, which may be
    /// after the ACK.
    async fn receive(&self, payload: Bytes) -> Answer {
        let stats = &self.ctx.slot.stats;
        let msg = match Message::parse(&payload) {
            Ok(msg) => msg,
            Err(e) => {
                stats.bump(&stats.errors, 1);
                let text = format!("message cannot be parsed: {e}");
                self.event(EventLevel::Warning, format!("rejected a message from {}: {text}", self.peer));
                return Answer::Send(reject(&payload, &text, Hl7ErrorCode::SegmentSequenceError));
            }
        };
        let enhanced = AcceptAck::of(&msg);
        if let Err(e) = check_header(&msg) {
            stats.bump(&stats.errors, 1);
            self.event(EventLevel::Warning, format!("rejected a message from {}: {e}", self.peer));
            let ack =
                AckBuilder::new(&msg, enhanced.code(AckCode::AR)).text(e.to_string()).error(e.ack_error()).build();
            return if enhanced.wants(false) { Answer::Send(ack) } else { Answer::Nothing };
        }
        let (control_id, message_type) = header_facts(&msg);
        let (routed, decided) = self.routers.decide(&msg, &payload, control_id.as_deref());
        let inbound = NewInbound {
            production: self.ctx.production.id.clone(),
            service: self.service.clone(),
            origin: self.origin.clone(),
            body: payload.clone(),
            control_id,
            message_type,
            targets: self.targets.clone(),
            routed,
        };
        let store = &self.ctx.production.store;
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
                let (routers, production, targets) =
                    (self.routers.clone(), self.ctx.production.clone(), self.targets.clone());
                let count = move |committed: Result<Committed, StoreError>| {
                    if let Ok(committed) = committed {
                        routers.account(&production, &targets, &committed, &decided);
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
        let stats = &self.ctx.slot.stats;
        stats.bump(&stats.errors, 1);
        tracing::error!(item = %self.ctx.slot.name, error = %e, "message not stored; negative ACK sent");
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
        self.routers.account(&self.ctx.production, &self.targets, &committed, decided);
        let replies = &self.ctx.production.replies;
        match replies.wait(committed.session_id, self.config.application_ack_timeout).await {
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
