//! The connection an `mllp_out` delivers over, and what one attempt at a
//! message produced: a reply, or why there is none.
//!
//! The line drawn here decides whether a message is repeated or judged:
//! a transport failure (the connection could not be opened, or was lost
//! while a reply was awaited) says nothing about the message and is
//! retried; only a reply, a response timeout on a live connection, or a
//! message that can never be sent is judged by the reply code actions.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::ItemCtx;
use crate::config::MllpOutConfig;
use crate::mllp::{ClientError, ClientTls, MllpClient, MllpCodec, MllpError, Stream};
use crate::rate_limit::RateLimit;
use crate::store::EventLevel;
use crate::tls::TlsConfigHandle;

/// How long a kept-open connection must have been idle before it is
/// checked for a close from the receiver before the next write. A receiver
/// closes idle connections after seconds, not milliseconds, and one busy
/// with back-to-back messages is not worth a system call per message (a
/// close in that gap is still caught, as a transport failure).
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(20);

/// How long transport failures may go on before the item is put in error
/// when `failure_timeout` is `forever` (the file's default otherwise).
const FOREVER_TROUBLED_AFTER: Duration = Duration::from_secs(15);

/// How many control ids of messages answered on a connection are kept to
/// recognise a reply that comes again: a receiver that repeats a reply
/// does so at once, so the last few messages are enough (a window of the
/// largest `pipeline_depth`, twice).
const ANSWERED_KEPT: usize = 2 * MllpOutConfig::MAX_PIPELINE_DEPTH;

/// Replies naming a message already answered that are passed over while
/// one reply is awaited; past this the receiver's replies are taken to be
/// out of step with the messages, and the connection is dropped.
pub(super) const STALE_LIMIT: usize = 4;

/// Warnings of one kind a receiver can cause, per [`WARN_INTERVAL`].
const WARN_BURST: u32 = 5;
/// See [`WARN_BURST`].
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// What one attempt at a message produced.
pub(super) enum Attempt {
    /// A reply frame came back.
    Reply(Bytes),
    /// No reply.
    Failed(Failure),
}

/// Why an attempt brought no reply.
pub(super) enum Failure {
    /// The transport failed: sent again on a new connection.
    Transport(Transport),
    /// The connection is up, but no reply came within the response timeout
    /// (or the receiver stopped reading): `X`.
    NoReply(String),
    /// Something came back that cannot be read (a reply larger than the
    /// frame limit): handled like a reply without MSA.
    Unreadable(String),
    /// The message can never be sent (larger than a frame may be, or it
    /// holds MLLP framing bytes): an error status.
    Unsendable(String),
}

impl Failure {
    /// Sorts a failure on a connection that was already open.
    pub(super) fn from_client(error: ClientError) -> Self {
        classify(error, false)
    }

    /// The connection is gone.
    pub(super) fn closed() -> Self {
        Failure::Transport(Transport { kind: TransportKind::Closed, detail: "not connected".to_owned() })
    }

    /// The receiver's replies no longer match the messages sent: what
    /// comes next on the connection cannot be trusted to answer anything.
    pub(super) fn out_of_step() -> Self {
        let detail = format!("{STALE_LIMIT} replies in a row named messages already answered");
        Failure::Transport(Transport { kind: TransportKind::OutOfStep, detail })
    }
}

/// Which part of the transport failed; named in the message's error text
/// and in the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TransportKind {
    /// The TCP connection could not be opened (refused, unreachable, timed
    /// out).
    Connect,
    /// The TLS handshake failed.
    Handshake,
    /// Writing the message failed.
    Write,
    /// The receiver closed the connection before its reply was complete.
    Closed,
    /// The connection was reset or broke otherwise.
    Reset,
    /// The receiver kept answering messages already answered: the
    /// connection was dropped, since the reply awaited cannot be told from
    /// the stale ones.
    OutOfStep,
}

impl TransportKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Handshake => "TLS handshake",
            Self::Write => "write",
            Self::Closed => "connection closed",
            Self::Reset => "connection reset",
            Self::OutOfStep => "replies out of step",
        }
    }
}

/// A transport failure: which kind, and what the system said.
#[derive(Clone, Debug)]
pub(super) struct Transport {
    pub(super) kind: TransportKind,
    detail: String,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transport failure ({}): {}", self.kind.as_str(), self.detail)
    }
}

/// Sorts a failed exchange. `fresh`: the connection was opened for this
/// attempt, so a TLS alert at the first read is the handshake failing
/// (TLS 1.3 servers refuse a client certificate only then).
fn classify(error: ClientError, fresh: bool) -> Failure {
    let transport = |kind| Failure::Transport(Transport { kind, detail: error.to_string() });
    match &error {
        ClientError::Connect { .. } | ClientError::ConnectTimeout { .. } => transport(TransportKind::Connect),
        ClientError::Tls { .. } => transport(TransportKind::Handshake),
        ClientError::TlsSession(_) if fresh => transport(TransportKind::Handshake),
        ClientError::TlsSession(_) => transport(TransportKind::Reset),
        ClientError::Closed | ClientError::Unsolicited | ClientError::Mllp(MllpError::Incomplete { .. }) => {
            transport(TransportKind::Closed)
        }
        ClientError::Mllp(MllpError::Io(e)) => match e.kind() {
            std::io::ErrorKind::BrokenPipe => transport(TransportKind::Write),
            std::io::ErrorKind::UnexpectedEof => transport(TransportKind::Closed),
            _ => transport(TransportKind::Reset),
        },
        ClientError::ReplyTimeout(_) | ClientError::SendTimeout(_) => Failure::NoReply(error.to_string()),
        ClientError::OversizedReply { .. } => Failure::Unreadable(error.to_string()),
        ClientError::Mllp(MllpError::FrameTooLarge { .. } | MllpError::PayloadContainsFraming { .. }) => {
            Failure::Unsendable(error.to_string())
        }
    }
}

/// Can `body` be sent in one frame at all? (Checked before a message joins
/// a pipeline, so that one that cannot never cuts a window short.)
pub(super) fn can_frame(body: &[u8]) -> bool {
    MllpCodec::new().check_payload(body).is_ok()
}

/// The connection to the receiver, opened when needed and kept open with
/// `stay_connected`.
pub(super) struct Connection {
    client: Option<MllpClient<Box<dyn Stream>>>,
    pub(super) addr: String,
    host: String,
    tls: Option<Arc<TlsConfigHandle>>,
    /// When transport failures began, while they go on.
    down_since: Option<Instant>,
    /// When the connection was last used (written to or read from).
    last_used: Instant,
    /// Set once the receiver answered a pipelined message out of order, or
    /// with a reply that matches no message in flight: from then on,
    /// until the item restarts, one message at a time.
    pub(super) one_at_a_time: bool,
    /// Control ids of the messages answered on this connection, newest
    /// last (at most [`ANSWERED_KEPT`]): a reply that names one of them
    /// again is a duplicate, or a reply that came late, and never the reply
    /// to the message now awaited. Emptied with each new connection, since
    /// a reply never crosses connections.
    answered: VecDeque<String>,
    /// Bytes outside frames on this connection already warned about.
    junk_reported: usize,
    /// Warnings a misbehaving receiver causes, capped per kind.
    limits: [RateLimit; Trouble::ALL.len()],
}

/// What a receiver did that is warned about, each kind rate-limited: a
/// receiver that does it for every message must not flood the log or the
/// event table (invariant 4).
#[derive(Clone, Copy, Debug)]
pub(super) enum Trouble {
    /// A reply naming a message already answered (a duplicate or a late
    /// reply), passed over.
    Stale,
    /// A reply that cannot be read: the connection is dropped after it.
    Unreadable,
    /// Bytes outside MLLP frames, dropped.
    Junk,
}

impl Trouble {
    const ALL: [Trouble; 3] = [Trouble::Stale, Trouble::Unreadable, Trouble::Junk];
}

impl Connection {
    pub(super) fn new(config: &MllpOutConfig, tls: Option<Arc<TlsConfigHandle>>) -> Self {
        Self {
            client: None,
            addr: format!("{}:{}", config.host, config.port),
            host: config.host.clone(),
            tls,
            down_since: None,
            last_used: Instant::now(),
            one_at_a_time: false,
            answered: VecDeque::with_capacity(ANSWERED_KEPT),
            junk_reported: 0,
            limits: Trouble::ALL.map(|_| RateLimit::new(WARN_BURST, WARN_INTERVAL)),
        }
    }

    /// The open connection, about to be used.
    pub(super) fn client(&mut self) -> Option<&mut MllpClient<Box<dyn Stream>>> {
        self.last_used = Instant::now();
        self.client.as_mut()
    }

    pub(super) fn is_open(&self) -> bool {
        self.client.is_some()
    }

    pub(super) fn close(&mut self, ctx: &ItemCtx) {
        self.answered.clear();
        if self.client.take().is_some() {
            ctx.stats().connection(false);
        }
    }

    /// Notes that the message with this control id has had its reply on
    /// this connection.
    pub(super) fn answered(&mut self, control_id: Option<&str>) {
        let Some(id) = control_id else { return };
        if self.answered.len() == ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back(id.to_owned());
    }

    /// Whether a reply naming `control_id` (MSA-2) names a message already
    /// answered on this connection. The caller has checked first that it
    /// names none of the messages awaiting their replies: a control id that
    /// comes again (a sender's resend) is answered as the message awaited.
    pub(super) fn was_answered(&self, control_id: Option<&str>) -> bool {
        control_id.is_some_and(|id| self.answered.iter().any(|a| a == id))
    }

    /// Warns about what the receiver did, unless too many warnings of its
    /// kind were written lately (then it is only counted). The text names
    /// messages by their id in the store, never by their content.
    pub(super) fn warn(&self, ctx: &ItemCtx, trouble: Trouble, text: impl FnOnce() -> String) {
        let Some(pass) = self.limits[trouble as usize].check() else { return };
        let text = format!("{}{}", text(), pass.suffix());
        tracing::warn!(production = ctx.production_id(), item = ctx.name(), addr = %self.addr, "{text}");
        ctx.event(EventLevel::Warning, "reply", text);
    }

    /// Warns when the receiver sent bytes outside MLLP frames since the
    /// last call: they are dropped, and the frames around them are read as
    /// usual.
    pub(super) fn note_junk(&mut self, ctx: &ItemCtx) {
        let Some(client) = self.client.as_ref() else { return };
        let junk = client.discarded_bytes().saturating_sub(self.junk_reported);
        self.junk_reported = client.discarded_bytes();
        if junk > 0 {
            self.warn(ctx, Trouble::Junk, || {
                format!("the receiver sent {junk} bytes outside MLLP frames; they were dropped")
            });
        }
    }

    /// Closes a kept-open connection that the receiver closed, reset or
    /// wrote on while it was idle, so that the next message goes out on a
    /// new one without costing an attempt.
    pub(super) fn check_idle(&mut self, ctx: &ItemCtx) {
        if self.last_used.elapsed() < CHECK_IDLE_AFTER {
            return;
        }
        if let Some(client) = self.client.as_mut()
            && let Err(e) = client.check_idle()
        {
            tracing::debug!(item = ctx.name(), addr = %self.addr, reason = %e, "reopening the connection");
            self.close(ctx);
        }
    }

    /// Opens the connection: TCP, and the TLS handshake if configured.
    async fn open(&mut self, ctx: &ItemCtx, config: &MllpOutConfig) -> Result<(), Failure> {
        // Built per connection, so a renewed certificate is used at once.
        let tls = match &self.tls {
            None => None,
            Some(handle) => match handle.connector().and_then(|c| Ok((c, handle.server_name(&self.host)?))) {
                Ok((connector, server_name)) => Some(ClientTls { connector, server_name }),
                Err(e) => {
                    let detail = e.to_string();
                    return Err(Failure::Transport(Transport { kind: TransportKind::Handshake, detail }));
                }
            },
        };
        let client = MllpClient::connect_with(&self.addr, config.connect_timeout, tls.as_ref())
            .await
            .map_err(|e| classify(e, true))?;
        self.client = Some(client);
        self.answered.clear();
        self.junk_reported = 0;
        ctx.stats().connection(true);
        Ok(())
    }

    /// Sends `body` and waits for its reply, opening the connection first
    /// if it is not open (or no longer usable).
    pub(super) async fn attempt(&mut self, ctx: &ItemCtx, config: &MllpOutConfig, body: &[u8]) -> Attempt {
        self.check_idle(ctx);
        let fresh = self.client.is_none();
        if fresh && let Err(failure) = self.open(ctx, config).await {
            return Attempt::Failed(failure);
        }
        let Some(client) = self.client() else {
            let detail = "not connected".to_owned();
            return Attempt::Failed(Failure::Transport(Transport { kind: TransportKind::Connect, detail }));
        };
        let result = client.exchange(body, config.response_timeout).await;
        self.last_used = Instant::now();
        let attempt = match result {
            Ok(reply) => Attempt::Reply(reply),
            Err(e) => {
                // The connection's state is unknown after any failure.
                self.close(ctx);
                Attempt::Failed(classify(e, fresh))
            }
        };
        if !matches!(attempt, Attempt::Failed(Failure::Transport(_))) {
            self.reached(ctx, fresh);
        }
        attempt
    }

    /// The receiver answered, or at least kept the connection up: the end
    /// of an outage, if there was one.
    pub(super) fn reached(&mut self, ctx: &ItemCtx, fresh: bool) {
        let was_down = self.down_since.take().is_some();
        if was_down {
            ctx.event(EventLevel::Info, "connected", format!("delivering to {} again", self.addr));
        }
        if was_down || fresh {
            ctx.recovered();
        }
    }

    /// Notes a transport failure at a message first tried at `first`: the
    /// first failure of a run is logged and goes to the event log; once
    /// they have gone on for the failure timeout (which is also when the
    /// message is given up) the item is put in error (its production shows
    /// as troubled) until the receiver answers again.
    pub(super) fn transport_failed(
        &mut self,
        ctx: &ItemCtx,
        config: &MllpOutConfig,
        failure: &Transport,
        first: Instant,
    ) {
        let since = match self.down_since {
            Some(since) => since,
            None => {
                let text = format!("{failure}; sending again every {:?}", config.retry_interval);
                tracing::warn!(production = ctx.production_id(), item = ctx.name(), addr = %self.addr, "{text}");
                ctx.event(EventLevel::Warning, "transport", text);
                *self.down_since.insert(Instant::now())
            }
        };
        if since.min(first).elapsed() >= config.failure_timeout.unwrap_or(FOREVER_TROUBLED_AFTER) {
            ctx.fail(format!("cannot deliver to {}: {failure}", self.addr));
        } else {
            tracing::debug!(item = ctx.name(), %failure, "will send again");
        }
    }

    /// Stops sending ahead for the rest of the item's run, with a warning.
    pub(super) fn fall_back(&mut self, ctx: &ItemCtx, why: String) {
        if !self.one_at_a_time {
            self.one_at_a_time = true;
            let text = format!("{why}: sending one message at a time until the item is restarted");
            tracing::warn!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.event(EventLevel::Warning, "pipeline", text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(error: ClientError, fresh: bool) -> Option<TransportKind> {
        match classify(error, fresh) {
            Failure::Transport(t) => Some(t.kind),
            _ => None,
        }
    }

    fn io(kind: std::io::ErrorKind) -> ClientError {
        ClientError::Mllp(MllpError::Io(std::io::Error::from(kind)))
    }

    /// Only a timeout on a live connection, an unreadable reply and a
    /// message that cannot be framed are judged; everything that loses the
    /// connection is a transport failure, sent again.
    #[test]
    fn failures_are_sorted_into_transport_and_judged() {
        use std::io::ErrorKind;
        assert_eq!(kind(ClientError::Closed, false), Some(TransportKind::Closed));
        assert_eq!(kind(ClientError::Unsolicited, false), Some(TransportKind::Closed));
        assert_eq!(kind(ClientError::Mllp(MllpError::Incomplete { buffered: 4 }), false), Some(TransportKind::Closed));
        assert_eq!(kind(io(ErrorKind::ConnectionReset), false), Some(TransportKind::Reset));
        assert_eq!(kind(io(ErrorKind::BrokenPipe), false), Some(TransportKind::Write));
        let alert = || ClientError::TlsSession(std::io::Error::other("alert"));
        assert_eq!(kind(alert(), true), Some(TransportKind::Handshake));
        assert_eq!(kind(alert(), false), Some(TransportKind::Reset));
        let refused =
            ClientError::Connect { addr: "a:1".into(), reason: std::io::Error::from(ErrorKind::ConnectionRefused) };
        assert_eq!(kind(refused, true), Some(TransportKind::Connect));
        assert!(matches!(classify(ClientError::ReplyTimeout(Duration::from_secs(1)), false), Failure::NoReply(_)));
        assert!(matches!(classify(ClientError::SendTimeout(Duration::from_secs(1)), false), Failure::NoReply(_)));
        assert!(matches!(classify(ClientError::OversizedReply { len: 9 }, false), Failure::Unreadable(_)));
        let framing = ClientError::Mllp(MllpError::PayloadContainsFraming { byte: 0x1c, offset: 3 });
        assert!(matches!(classify(framing, false), Failure::Unsendable(_)));
    }

    #[test]
    fn a_transport_failure_names_its_kind() {
        let t =
            Transport { kind: TransportKind::Closed, detail: "the peer closed the connection before replying".into() };
        assert_eq!(
            t.to_string(),
            "transport failure (connection closed): the peer closed the connection before replying"
        );
        assert!(can_frame(b"MSH|^~\\&|A"));
        assert!(!can_frame(b"MSH|\x1c"));
    }
}
