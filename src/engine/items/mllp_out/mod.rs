//! `mllp_out`: an operation that delivers its queue over MLLP in order and
//! acts on each reply by its ReplyCodeActions: one message at a time, or
//! with `pipeline_depth`, several sent ahead of their replies.
//!
//! A downstream that cannot be reached is not a delivery failure: the
//! message stays at the head of the queue and the connection is retried
//! every `retry_interval`; after `failure_timeout` the item is put in error
//! (its production shows as troubled) until a connection succeeds. This
//! keeps an outage from turning a queue into a pile of failed messages.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ItemCtx;
use crate::config::MllpOutConfig;
use crate::engine::reply_actions::{DeliveryOutcome, FinalAction, ReplyCodeActions};
use crate::hl7::{Message, Reply};
use crate::mllp::{ClientError, ClientTls, MllpClient, Stream};
use crate::store::{EventLevel, Finished, Pending, Queued, Status};
use crate::tls::TlsConfigHandle;
use std::sync::Arc;

/// Messages taken from the queue at a time, one at a time.
const BATCH: usize = 32;

/// Messages taken from the queue at a time when several are sent ahead:
/// the window empties at the end of each batch (the next is read and marked
/// then), so a batch of several windows keeps it full most of the time.
/// The store caps a batch's bodies at
/// [`FETCH_MAX_BYTES`](crate::store::FETCH_MAX_BYTES).
const PIPELINED_BATCH: usize = 4 * MllpOutConfig::MAX_PIPELINE_DEPTH;

/// What one attempt produced.
enum Attempt {
    /// Could not connect or send: nothing reached the receiver.
    Unreachable(String),
    /// Sent.
    Reached(Reached),
}

/// An attempt that sent the message.
enum Reached {
    /// This came back.
    Reply(Bytes),
    /// No reply (timeout, connection closed).
    NoReply(String),
}

struct Connection {
    client: Option<MllpClient<Box<dyn Stream>>>,
    addr: String,
    host: String,
    tls: Option<Arc<TlsConfigHandle>>,
    down_since: Option<Instant>,
}

pub(super) async fn run(ctx: &ItemCtx, config: &MllpOutConfig, actions: &ReplyCodeActions) {
    let tls = match config.tls.as_deref().map(|name| ctx.production.tls(name)).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            // Nothing can be delivered: the queue is kept until the TLS
            // configuration is fixed and the item restarted.
            ctx.fail(format!("cannot use TLS: {error}"));
            return;
        }
    };
    let mut conn = Connection {
        client: None,
        addr: format!("{}:{}", config.host, config.port),
        host: config.host.clone(),
        tls,
        down_since: None,
    };
    let batch_size = if config.pipeline_depth > 1 { PIPELINED_BATCH } else { BATCH };
    let mut unconfirmed = None;
    'batches: while let Some(batch) = next_batch(ctx, batch_size, &mut unconfirmed).await {
        let ids: Vec<i64> = batch.iter().map(|q| q.id).collect();
        let last_id = ids.last().copied().unwrap_or_default();
        // Delivery starts while the mark is committed (a result noted
        // meanwhile is committed after it).
        let mark = match ctx.store().begin_mark_delivering(ids).await {
            Ok(mark) => mark,
            Err(e) => {
                ctx.fail(format!("cannot update the queue: {e}"));
                if ctx.sleep(Duration::from_secs(1)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        match deliver_batch(ctx, config, actions, &mut conn, &batch).await {
            Delivered::Done => {}
            Delivered::Cancelled => break 'batches,
            Delivered::Disabled => {
                // Nothing delivers the rest of the batch until the item is
                // enabled again: back to the queue, behind the message that
                // disabled it, rather than left marked as being delivered.
                if let Err(e) = ctx.store().requeue_item(ctx.production_id(), ctx.name()).await {
                    tracing::error!(item = ctx.name(), error = %e, "cannot requeue messages");
                }
                break 'batches;
            }
        }
        unconfirmed = Some(Unconfirmed { last_id, mark });
    }
    conn.close(ctx);
}

/// The mark of the last batch delivered, while its commit may not have
/// come yet.
struct Unconfirmed {
    /// The batch's last message.
    last_id: i64,
    mark: Pending<()>,
}

/// The next batch of the queue, or `None` once cancelled.
///
/// Until the last batch's mark is committed its messages still look
/// `queued` (those whose results are noted are left out of a read, but
/// they can fill a read's limit), so the queue is read on after them
/// instead of waiting: the writer commits received messages first, at a
/// lower priority than the connections, and under load a wait for it
/// stalled every batch. Only when nothing follows them is the mark waited
/// for and the queue read from its head again, where a message put back
/// (a resend) may be waiting.
async fn next_batch(ctx: &ItemCtx, limit: usize, unconfirmed: &mut Option<Unconfirmed>) -> Option<Vec<Queued>> {
    if let Some(last) = unconfirmed.as_mut() {
        let marked = match last.mark.try_take() {
            Some(marked) => marked,
            None => {
                let (production, item) = (ctx.production_id(), ctx.name());
                if let Ok(batch) = ctx.store().fetch_queue_after(production, item, last.last_id, limit)
                    && !batch.is_empty()
                {
                    return Some(batch);
                }
                tokio::select! {
                    () = ctx.cancel.cancelled() => return None,
                    marked = last.mark.wait_mut() => marked,
                }
            }
        };
        *unconfirmed = None;
        if let Err(e) = marked {
            // The messages delivered are not taken again: their results
            // wait in the delivery log, and a store that cannot commit them
            // shows on the production's services.
            tracing::warn!(item = ctx.name(), error = %e, "cannot mark messages as being delivered");
            if ctx.sleep(Duration::from_secs(1)).await.is_err() {
                return None;
            }
        }
    }
    ctx.next_batch(limit).await
}

enum Delivered {
    Done,
    Cancelled,
    Disabled,
}

impl Connection {
    fn close(&mut self, ctx: &ItemCtx) {
        if self.client.take().is_some() {
            ctx.slot.stats.connection(false);
        }
    }

    async fn attempt(&mut self, ctx: &ItemCtx, config: &MllpOutConfig, body: &[u8]) -> Attempt {
        let fresh = self.client.is_none();
        if fresh {
            // Built per connection, so a renewed certificate is used at once.
            let tls = match &self.tls {
                None => None,
                Some(handle) => match handle.connector().and_then(|c| Ok((c, handle.server_name(&self.host)?))) {
                    Ok((connector, server_name)) => Some(ClientTls { connector, server_name }),
                    Err(e) => return Attempt::Unreachable(e.to_string()),
                },
            };
            match MllpClient::connect_with(&self.addr, config.connect_timeout, tls.as_ref()).await {
                Ok(client) => {
                    self.client = Some(client);
                    ctx.slot.stats.connection(true);
                }
                Err(e) => return Attempt::Unreachable(e.to_string()),
            }
        }
        let Some(client) = self.client.as_mut() else { return Attempt::Unreachable("not connected".into()) };
        let result = client.exchange(body, config.response_timeout).await;
        if let (true, Err(e @ ClientError::TlsSession(_))) = (fresh, &result) {
            // TLS 1.3: the server checks our certificate after our side of
            // the handshake is done and refuses it at our first read. It
            // processed nothing: a failed handshake, not a delivery.
            let error = format!("TLS handshake with {} failed: {e}", self.addr);
            self.close(ctx);
            return Attempt::Unreachable(error);
        }
        if fresh {
            if self.down_since.take().is_some() {
                ctx.event(EventLevel::Info, "connected", format!("connected to {}", self.addr));
            }
            ctx.recovered();
        }
        match result {
            Ok(reply) => Attempt::Reached(Reached::Reply(reply)),
            Err(e) => {
                // The frame may not have been written: the receiver may or
                // may not have it, so this is a delivery without reply.
                self.close(ctx);
                Attempt::Reached(Reached::NoReply(e.to_string()))
            }
        }
    }
}

/// Delivers a batch taken from the queue, in order: one message at a time,
/// or with `pipeline_depth` above 1 several sent ahead of their replies
/// while the connection is up.
async fn deliver_batch(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    batch: &[Queued],
) -> Delivered {
    // The first message of the batch not sent yet; each is counted once,
    // however often it is sent.
    let mut unsent = 0;
    let mut next = 0;
    while next < batch.len() {
        if config.pipeline_depth > 1 && conn.client.is_some() && batch.len() - next > 1 {
            match pipeline(ctx, config, actions, conn, batch, next, &mut unsent).await {
                Ok(finished) => next = finished,
                Err(stopped) => return stopped,
            }
            continue;
        }
        // One at a time; this also opens the connection and waits out a
        // receiver that cannot be reached.
        if next == unsent {
            ctx.slot.stats.bump(&ctx.slot.stats.received, 1);
            unsent += 1;
        }
        let message = &batch[next];
        match deliver(ctx, config, actions, conn, message, Tries::of(message)).await {
            Delivered::Done => next += 1,
            stopped => return stopped,
        }
        if !config.stay_connected {
            conn.close(ctx);
        }
    }
    Delivered::Done
}

/// Sends up to `pipeline_depth` messages of `batch`, from `first` on, ahead
/// of their replies over the open connection and acts on each reply in
/// turn. MLLP answers in order, so each reply is the oldest unanswered
/// message's.
///
/// Returns the first message without its final result (`batch.len()` when
/// all have one). Stops early when the connection is lost; the messages
/// sent behind the last one finished go again, in order, on the next
/// connection. When a message is to be retried, the messages sent behind
/// it are sent again after it (their replies are not read), so that the
/// last copy of each reaches the receiver in order.
async fn pipeline(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    batch: &[Queued],
    first: usize,
    unsent: &mut usize,
) -> Result<usize, Delivered> {
    let (mut sent, mut finished) = (first, first);
    while finished < batch.len() {
        if ctx.cancel.is_cancelled() {
            return Err(Delivered::Cancelled);
        }
        let Some(client) = conn.client.as_mut() else { return Ok(finished) };
        // The window is topped up once half of it is answered, so that
        // messages go out many to a write rather than one per reply read.
        let mut fed = Ok(());
        if sent - finished <= config.pipeline_depth / 2 {
            while fed.is_ok() && sent < batch.len() && sent - finished < config.pipeline_depth {
                fed = client.feed(&batch[sent].body, config.response_timeout).await;
                sent += 1;
            }
        }
        if sent > *unsent {
            ctx.slot.stats.bump(&ctx.slot.stats.received, (sent - *unsent) as u64);
            *unsent = sent;
        }
        let received = match fed {
            Ok(()) => match client.flush(config.response_timeout).await {
                Ok(()) => client.receive(config.response_timeout).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let attempt = match received {
            Ok(reply) => Reached::Reply(reply),
            Err(e) => {
                conn.close(ctx);
                Reached::NoReply(e.to_string())
            }
        };
        let message = &batch[finished];
        let mut tries = Tries::of(message);
        match judge(ctx, config, actions, message, attempt, &mut tries).await {
            Judged::Done(Delivered::Done) => finished += 1,
            Judged::Done(stopped) => return Err(stopped),
            Judged::Retry => {
                // Its replies unread, everything sent behind it goes again.
                conn.close(ctx);
                if ctx.sleep(config.retry_interval).await.is_err() {
                    return Err(Delivered::Cancelled);
                }
                return match deliver(ctx, config, actions, conn, message, tries).await {
                    Delivered::Done => Ok(finished + 1),
                    stopped => Err(stopped),
                };
            }
        }
    }
    Ok(finished)
}

/// Attempts at one message so far.
struct Tries {
    /// Attempts recorded, this one's included once it reached the receiver.
    attempts: u32,
    /// The first attempt of this delivery, for `failure_timeout`.
    first: Instant,
}

impl Tries {
    fn of(message: &Queued) -> Self {
        Self { attempts: message.attempts, first: Instant::now() }
    }
}

/// Delivers one message, retrying as its reply code actions and the
/// failure timeout say, and records the result.
async fn deliver(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    message: &Queued,
    mut tries: Tries,
) -> Delivered {
    loop {
        if ctx.cancel.is_cancelled() {
            return Delivered::Cancelled;
        }
        let attempt = match conn.attempt(ctx, config, &message.body).await {
            Attempt::Unreachable(error) => {
                let since = *conn.down_since.get_or_insert_with(Instant::now);
                if past_failure_timeout(config, since) {
                    ctx.fail(format!("cannot deliver to {}: {error}", conn.addr));
                } else {
                    tracing::debug!(item = ctx.name(), %error, "downstream unreachable; will retry");
                }
                if ctx.sleep(config.retry_interval).await.is_err() {
                    return Delivered::Cancelled;
                }
                continue;
            }
            Attempt::Reached(reached) => reached,
        };
        match judge(ctx, config, actions, message, attempt, &mut tries).await {
            Judged::Done(delivered) => return delivered,
            Judged::Retry => {
                if ctx.sleep(config.retry_interval).await.is_err() {
                    return Delivered::Cancelled;
                }
            }
        }
    }
}

fn past_failure_timeout(config: &MllpOutConfig, since: Instant) -> bool {
    config.failure_timeout.is_some_and(|limit| since.elapsed() >= limit)
}

/// What the reply code actions make of one attempt.
enum Judged {
    /// Try the message again after `retry_interval`.
    Retry,
    /// Its final result is recorded (or the item stops).
    Done(Delivered),
}

/// Decides what an attempt that reached the receiver (a reply, or none
/// came) means for `message` by the reply code actions, and records a final
/// result.
async fn judge(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    message: &Queued,
    attempt: Reached,
    tries: &mut Tries,
) -> Judged {
    let sent_id = message.control_id.as_deref().unwrap_or_default();
    let (reply_bytes, decision) = match attempt {
        Reached::Reply(bytes) => {
            tries.attempts += 1;
            let decision = match Message::parse(&bytes) {
                Ok(msg) => {
                    let reply = Reply::read(&msg);
                    actions.decide(&DeliveryOutcome::Reply { reply: &reply, sent_control_id: sent_id })
                }
                Err(e) => {
                    let text = format!("unreadable reply: {e}");
                    actions.decide(&DeliveryOutcome::Error { code: "UnreadableReply", text: &text })
                }
            };
            (Some(bytes), decision)
        }
        Reached::NoReply(error) => {
            tries.attempts += 1;
            tracing::debug!(item = ctx.name(), %error, "no reply");
            (None, actions.decide(&DeliveryOutcome::NoReply))
        }
    };
    for warning in &decision.warnings {
        tracing::warn!(production = ctx.production_id(), item = ctx.name(), header = message.id, "{warning}");
        ctx.event(EventLevel::Warning, "reply", format!("message {}: {warning}", message.id));
    }
    if decision.retry && !past_failure_timeout(config, tries.first) {
        return Judged::Retry;
    }
    let describe = || {
        let why = decision.matched.clone().unwrap_or_else(|| "no reply code action matched".into());
        let reply_text = reply_bytes
            .as_ref()
            .and_then(|b| Message::parse(b).ok().map(|m| Reply::read(&m)))
            .map(|r| format!("{} {}", r.acknowledgment_code().unwrap_or("(no MSA)"), r.text().unwrap_or("")))
            .unwrap_or_else(|| "no reply".into());
        format!("{} ({why})", reply_text.trim())
    };
    let (status, error) = match decision.then {
        FinalAction::Complete => (Status::Completed, None),
        FinalAction::Suspend => (Status::Suspended, Some(describe())),
        FinalAction::Fail => (Status::Error, Some(describe())),
        FinalAction::Disable => (Status::Queued, Some(describe())),
    };
    if let Some(reply) = &reply_bytes {
        ctx.production.replies.post(message.session_id, reply.clone());
    }
    let finished = Finished {
        header_id: message.id,
        production: ctx.production_id().to_owned(),
        item: ctx.name().to_owned(),
        status,
        attempts: tries.attempts,
        reply: reply_bytes,
        error: error.clone(),
    };
    // A final result only needs to be safe from a crash before the next
    // message goes out, which the delivery log gives without waiting
    // for a commit; a message going back to its queue waits for it.
    let recorded = match decision.then {
        FinalAction::Disable => ctx.store().finish(finished).await,
        _ => ctx.store().note_finished(finished).await,
    };
    if let Err(e) = recorded {
        // The message stays `delivering` and is delivered again after a
        // restart: at-least-once, never lost.
        ctx.fail(format!("cannot record the delivery result: {e}"));
        return Judged::Done(Delivered::Cancelled);
    }
    let stats = &ctx.slot.stats;
    match decision.then {
        FinalAction::Complete => stats.bump(&stats.sent, 1),
        FinalAction::Disable => {
            stats.bump(&stats.errors, 1);
            let text = format!("disabled by reply code action: message {}: {}", message.id, error.unwrap_or_default());
            ctx.event(EventLevel::Error, "disabled", text.clone());
            tracing::error!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.production.disable_later(ctx.name());
            return Judged::Done(Delivered::Disabled);
        }
        FinalAction::Suspend | FinalAction::Fail => {
            stats.bump(&stats.errors, 1);
            let text = format!("message {} {}: {}", message.id, status.as_str(), error.unwrap_or_default());
            tracing::warn!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.event(EventLevel::Error, "delivery", text);
        }
    }
    Judged::Done(Delivered::Done)
}
