//! `mllp_out`: an operation that delivers its queue over MLLP in order and
//! acts on each reply by its ReplyCodeActions: one message at a time, or
//! with `pipeline_depth`, several sent ahead of their replies.
//!
//! Transport failures are not replies. A connection that cannot be opened
//! (refused, timed out, a failed TLS handshake), a write that fails, or a
//! connection closed or reset while a reply is awaited says nothing about
//! the message: it is sent again on a new connection, counted as an
//! attempt, every `retry_interval` until `failure_timeout`, and only then
//! judged as `X` (no reply). A kept-open connection that the receiver
//! closed while idle is noticed before the next write and reopened without
//! costing an attempt. Only a response timeout on a live connection is `X`
//! at once. Once transport failures have gone on for the failure timeout
//! the item is put in error (its production shows as troubled) until the
//! receiver answers again.

mod connection;
mod pipeline;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ItemCtx;
use crate::config::MllpOutConfig;
use crate::hl7::{Message, Reply};
use crate::mllp::ClientError;
use crate::rate_limit::RateLimit;
use crate::rules::reply_actions::{DeliveryOutcome, FinalAction, ReplyCodeActions};
use crate::store::{EventLevel, Finished, Pending, Queued, Status};
use connection::{Attempt, Connection, Failure, STALE_LIMIT, Transport, Trouble, can_frame};

/// Messages taken from the queue at a time, one at a time.
const BATCH: usize = 32;

/// Messages taken from the queue at a time when several are sent ahead:
/// the window empties at the end of each batch (the next is read and marked
/// then), so a batch of several windows keeps it full most of the time.
/// The store caps a batch's bodies at
/// [`FETCH_MAX_BYTES`](crate::store::FETCH_MAX_BYTES).
const PIPELINED_BATCH: usize = 4 * MllpOutConfig::MAX_PIPELINE_DEPTH;

/// How often a kept-open connection is checked for a close from the
/// receiver while there is nothing to send.
const IDLE_PROBE: Duration = Duration::from_secs(2);

pub(super) async fn run(ctx: &ItemCtx, config: &MllpOutConfig, actions: &ReplyCodeActions) {
    let tls = match config.tls.as_deref().map(|name| ctx.tls(name)).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            // Nothing can be delivered: the queue is kept until the TLS
            // configuration is fixed and the item restarted.
            ctx.fail(format!("cannot use TLS: {error}"));
            return;
        }
    };
    let mut conn = Connection::new(config, tls);
    let batch_size = if config.pipeline_depth > 1 { PIPELINED_BATCH } else { BATCH };
    let mut unconfirmed = None;
    // A store that cannot commit (a full disk) fails every mark, once a
    // second: said once a minute, with the count.
    let mark_failures = RateLimit::new(1, Duration::from_secs(60));
    'batches: loop {
        // While the queue is empty, a kept-open connection is checked now
        // and then, so that one the receiver closed shows as disconnected.
        let batch = loop {
            tokio::select! {
                batch = next_batch(ctx, batch_size, &mut unconfirmed, &mark_failures) => break batch,
                () = tokio::time::sleep(IDLE_PROBE), if conn.is_open() => conn.check_idle(ctx),
            }
        };
        let Some(batch) = batch else { break };
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
async fn next_batch(
    ctx: &ItemCtx,
    limit: usize,
    unconfirmed: &mut Option<Unconfirmed>,
    failures: &RateLimit,
) -> Option<Vec<Queued>> {
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
                    () = ctx.cancelled() => return None,
                    marked = last.mark.wait_mut() => marked,
                }
            }
        };
        *unconfirmed = None;
        if let Err(e) = marked {
            // The messages delivered are not taken again: their results
            // wait in the delivery log, and a store that cannot commit them
            // shows on the production's services.
            if let Some(pass) = failures.check() {
                tracing::warn!(item = ctx.name(), error = %e, "cannot mark messages as being delivered{}", pass.suffix());
            }
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

/// Where the delivery of one batch stands.
#[derive(Default)]
struct Progress {
    /// Messages of the batch sent at least once: each is counted once,
    /// however often it is sent.
    counted: usize,
    /// Replies that a receiver sent ahead of their turn, matched to their
    /// messages by MSA-2 (by index in the batch); each is judged when its
    /// message's turn comes, without sending it again.
    held: HashMap<usize, Returned>,
    /// The attempts so far at the message a transport failure cut a
    /// pipeline at (by index), carried over to its next attempt.
    head: Option<(usize, Tries)>,
}

impl Progress {
    /// Counts the messages up to `sent` (exclusive) as sent.
    fn count_sent(&mut self, ctx: &ItemCtx, sent: usize) {
        if sent > self.counted {
            ctx.stats().bump(&ctx.stats().received, (sent - self.counted) as u64);
            self.counted = sent;
        }
    }

    /// The attempts at message `index` so far.
    fn tries(&mut self, index: usize, message: &Queued) -> Tries {
        match self.head.take() {
            Some((at, tries)) if at == index => tries,
            other => {
                self.head = other;
                Tries::of(message)
            }
        }
    }
}

/// Delivers a batch taken from the queue, in order: one message at a time,
/// or with `pipeline_depth` above 1 several sent ahead of their replies
/// while the connection is up and the receiver answers in order.
async fn deliver_batch(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    batch: &[Queued],
) -> Delivered {
    let mut progress = Progress::default();
    let mut next = 0;
    while next < batch.len() {
        let message = &batch[next];
        if let Some(reply) = progress.held.remove(&next) {
            // Its reply came back ahead of its turn.
            let tries = progress.tries(next, message);
            match settle(ctx, config, actions, conn, message, Reached::Reply(reply), tries, &mut progress).await {
                Ok(Settled::Judged) => {
                    conn.answered(message.control_id.as_deref());
                    next += 1;
                }
                Ok(Settled::SentAgain) => next += 1,
                Err(stopped) => return stopped,
            }
            continue;
        }
        let ahead = config.pipeline_depth > 1
            && !conn.one_at_a_time
            && progress.held.is_empty()
            && batch.len() - next > 1
            && can_frame(&message.body);
        if ahead {
            // A window goes out only on a connection known to be usable.
            conn.check_idle(ctx);
        }
        if ahead && conn.is_open() {
            match pipeline::run(ctx, config, actions, conn, batch, next, &mut progress).await {
                Ok(finished) if finished > next || !conn.is_open() || conn.one_at_a_time => {
                    next = finished;
                    continue;
                }
                // Nothing went ahead: this one goes alone, below.
                Ok(_) => {}
                Err(stopped) => return stopped,
            }
        }
        // One at a time; this also opens the connection and waits out a
        // receiver that cannot be reached.
        progress.count_sent(ctx, next + 1);
        match deliver(ctx, config, actions, conn, message, progress.tries(next, message)).await {
            Delivered::Done => next += 1,
            stopped => return stopped,
        }
        if !config.stay_connected {
            conn.close(ctx);
        }
    }
    Delivered::Done
}

/// How [`settle`] ended for a message that has its final result.
enum Settled {
    /// Judged by the reply it had.
    Judged,
    /// Retried, on a new connection: whatever was in flight behind it is
    /// gone with the old one.
    SentAgain,
}

/// Judges `message` by what came back for it and, if the reply code
/// actions say retry, delivers it again: everything sent behind it is sent
/// again after it (their replies unread), so that the last copy of each
/// reaches the receiver in order.
#[allow(clippy::too_many_arguments)]
async fn settle(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    message: &Queued,
    reached: Reached,
    mut tries: Tries,
    progress: &mut Progress,
) -> Result<Settled, Delivered> {
    tries.attempts += 1;
    match judge(ctx, config, actions, message, reached, &mut tries).await {
        Judged::Done(Delivered::Done) => Ok(Settled::Judged),
        Judged::Done(stopped) => Err(stopped),
        Judged::Retry => {
            conn.close(ctx);
            progress.held.clear();
            if ctx.sleep(config.retry_interval).await.is_err() {
                return Err(Delivered::Cancelled);
            }
            match deliver(ctx, config, actions, conn, message, tries).await {
                Delivered::Done => Ok(Settled::SentAgain),
                stopped => Err(stopped),
            }
        }
    }
}

/// Attempts at one message so far.
struct Tries {
    /// Attempts recorded, this one's included once it is made.
    attempts: u32,
    /// The first attempt of this delivery, for `failure_timeout`.
    first: Instant,
    /// A kept-open connection found broken has been reopened at once for
    /// this message (after that, attempts wait `retry_interval`).
    reopened: bool,
}

impl Tries {
    fn of(message: &Queued) -> Self {
        Self { attempts: message.attempts, first: Instant::now(), reopened: false }
    }
}

/// Delivers one message, sending it again after transport failures and as
/// its reply code actions and the failure timeout say, and records the
/// result.
async fn deliver(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    message: &Queued,
    mut tries: Tries,
) -> Delivered {
    loop {
        if ctx.is_cancelled() {
            return Delivered::Cancelled;
        }
        let reused = conn.is_open();
        let started = Instant::now();
        let attempt = match conn.attempt(ctx, config, &message.body).await {
            Attempt::Reply(bytes) => own_reply(ctx, config, conn, message, Returned::read(bytes), started).await,
            Attempt::Failed(failure) => Err(failure),
        };
        tries.attempts += 1;
        let reached = match attempt {
            Ok(reply) => Reached::Reply(reply),
            Err(Failure::Transport(failure)) => {
                conn.transport_failed(ctx, config, &failure, tries.first);
                if past_failure_timeout(config, tries.first) {
                    Reached::Transport(failure)
                } else {
                    // A kept-open connection found broken is most often a
                    // receiver that closed it or restarted: reopened at
                    // once, the first time.
                    let pause = match reused && !tries.reopened {
                        true => Duration::ZERO,
                        false => config.retry_interval,
                    };
                    tries.reopened |= reused;
                    if ctx.sleep(pause).await.is_err() {
                        return Delivered::Cancelled;
                    }
                    continue;
                }
            }
            Err(Failure::NoReply(text)) => Reached::NoReply(text),
            Err(Failure::Unreadable(text)) => Reached::Unreadable(text),
            Err(Failure::Unsendable(text)) => Reached::Unsendable(text),
        };
        match judge(ctx, config, actions, message, reached, &mut tries).await {
            Judged::Done(delivered) => return delivered,
            Judged::Retry => {
                if ctx.sleep(config.retry_interval).await.is_err() {
                    return Delivered::Cancelled;
                }
            }
        }
    }
}

/// The reply to `message`, one at a time, among what comes back for it.
///
/// A reply that names a message already answered on this connection is a
/// receiver answering twice, or a reply that came late: taken for this
/// message's, it would complete a message whose real reply (perhaps an AE)
/// is still to come, and every reply after it would be one message behind.
/// It is passed over with a warning and the next one is read, within what
/// is left of the response timeout; after [`STALE_LIMIT`] of them in a row
/// the connection is dropped and the message sent again on a new one (a
/// transport failure). A reply that names no message sent on this
/// connection is this message's, judged by `:I?` as Ensemble does.
///
/// A reply that cannot be read is this message's too, but nothing after it
/// can be trusted to be in step (was it the reply, or noise before it?), so
/// the connection is closed after it.
async fn own_reply(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    conn: &mut Connection,
    message: &Queued,
    first: Returned,
    started: Instant,
) -> Result<Returned, Failure> {
    let sent_id = message.control_id.as_deref();
    let mut reply = first;
    for passed in 1..=STALE_LIMIT {
        conn.note_junk(ctx);
        let names = reply.acknowledged();
        if names == sent_id || !conn.was_answered(names) {
            if reply.read.is_err() {
                conn.warn(ctx, Trouble::Unreadable, || {
                    format!("the reply to message {} cannot be read; the connection is closed", message.id)
                });
                conn.close(ctx);
            } else {
                conn.answered(sent_id);
            }
            return Ok(reply);
        }
        conn.warn(ctx, Trouble::Stale, || {
            format!(
                "a reply repeating one to an earlier message (a duplicate or a late reply) was passed over \
                 while awaiting the reply to message {}",
                message.id
            )
        });
        if passed == STALE_LIMIT {
            break;
        }
        let left = config.response_timeout.saturating_sub(started.elapsed());
        let Some(client) = conn.client() else { return Err(Failure::closed()) };
        match client.receive(left).await {
            Ok(bytes) => reply = Returned::read(bytes),
            Err(e) => {
                conn.close(ctx);
                return Err(match e {
                    ClientError::ReplyTimeout(_) => {
                        Failure::NoReply(ClientError::ReplyTimeout(config.response_timeout).to_string())
                    }
                    other => Failure::from_client(other),
                });
            }
        }
    }
    conn.close(ctx);
    Err(Failure::out_of_step())
}

fn past_failure_timeout(config: &MllpOutConfig, since: Instant) -> bool {
    config.failure_timeout.is_some_and(|limit| since.elapsed() >= limit)
}

/// A reply as it came back, read once.
struct Returned {
    bytes: Bytes,
    /// Its acknowledgment parts, or why it cannot be read.
    read: Result<Reply, String>,
}

impl Returned {
    fn read(bytes: Bytes) -> Self {
        let read = Message::parse(&bytes).map(|msg| Reply::read(&msg)).map_err(|e| e.to_string());
        Self { bytes, read }
    }

    /// MSA-2: the control id it acknowledges, if it can be read.
    fn acknowledged(&self) -> Option<&str> {
        self.read.as_ref().ok().and_then(Reply::acknowledged_control_id)
    }
}

/// What an attempt that is judged by the reply code actions produced.
enum Reached {
    /// This came back.
    Reply(Returned),
    /// No reply on a live connection within the response timeout (`X`).
    NoReply(String),
    /// Transport failures went on past the failure timeout (`X`).
    Transport(Transport),
    /// What came back cannot be read (`:~`).
    Unreadable(String),
    /// The message cannot be sent at all (an error status).
    Unsendable(String),
}

/// What the reply code actions make of one attempt.
enum Judged {
    /// Try the message again after `retry_interval`.
    Retry,
    /// Its final result is recorded (or the item stops).
    Done(Delivered),
}

/// What was seen of a reply, kept for the error text.
enum Seen {
    Reply(Reply),
    Unreadable(String),
    Nothing(String),
}

impl Seen {
    /// What the receiver did, for the message's own record (its error
    /// column, shown with the message): the reply's text included.
    fn describe(&self, tries: &Tries) -> String {
        match self {
            Seen::Reply(r) => {
                let text = format!("{} {}", r.acknowledgment_code().unwrap_or("(no MSA)"), r.text().unwrap_or(""));
                text.trim().to_owned()
            }
            _ => self.summarize(tries),
        }
    }

    /// The same for the log and the event log, which must hold no patient
    /// data: a receiver's reply text (MSA-3, ERR) may quote the message
    /// ("no patient DOE^JOHN"), so only its code is said.
    fn summarize(&self, tries: &Tries) -> String {
        match self {
            Seen::Reply(r) => {
                let code = r.acknowledgment_code().unwrap_or("(no MSA)");
                match r.text() {
                    Some(_) => format!("{code}, with a text (shown with the message)"),
                    None => code.to_owned(),
                }
            }
            Seen::Unreadable(e) => format!("unreadable reply: {e}"),
            Seen::Nothing(why) => {
                let plural = if tries.attempts == 1 { "" } else { "s" };
                format!("{why} ({} attempt{plural} in {:.1?})", tries.attempts, tries.first.elapsed())
            }
        }
    }
}

/// Decides what an attempt means for `message` by the reply code actions,
/// and records a final result.
async fn judge(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    message: &Queued,
    attempt: Reached,
    tries: &mut Tries,
) -> Judged {
    let sent_id = message.control_id.as_deref().unwrap_or_default();
    let (reply_bytes, seen, decision) = match attempt {
        Reached::Reply(Returned { bytes, read }) => match read {
            Ok(reply) => {
                let decision = actions.decide(&DeliveryOutcome::Reply { reply: &reply, sent_control_id: sent_id });
                (Some(bytes), Seen::Reply(reply), decision)
            }
            // Kept: the receiver's bytes are the evidence.
            Err(e) => (Some(bytes), Seen::Unreadable(e), actions.decide(&DeliveryOutcome::Unreadable)),
        },
        Reached::NoReply(text) => {
            (None, Seen::Nothing(format!("no reply: {text}")), actions.decide(&DeliveryOutcome::NoReply))
        }
        Reached::Transport(failure) => {
            (None, Seen::Nothing(format!("no reply: {failure}")), actions.decide(&DeliveryOutcome::NoReply))
        }
        Reached::Unreadable(text) => (None, Seen::Unreadable(text), actions.decide(&DeliveryOutcome::Unreadable)),
        Reached::Unsendable(text) => {
            let decision = actions.decide(&DeliveryOutcome::Error { code: "CannotSend", text: &text });
            (None, Seen::Nothing(format!("cannot be sent: {text}")), decision)
        }
    };
    for warning in &decision.warnings {
        tracing::warn!(production = ctx.production_id(), item = ctx.name(), header = message.id, "{warning}");
        ctx.event(EventLevel::Warning, "reply", format!("message {}: {warning}", message.id));
    }
    if decision.retry && !past_failure_timeout(config, tries.first) {
        return Judged::Retry;
    }
    let why = decision.matched.clone().unwrap_or_else(|| "no reply code action matched".into());
    let describe = || format!("{} ({why})", seen.describe(tries));
    let (status, error) = match decision.then {
        FinalAction::Complete => (Status::Completed, None),
        FinalAction::Suspend => (Status::Suspended, Some(describe())),
        FinalAction::Fail => (Status::Error, Some(describe())),
        FinalAction::Disable => (Status::Queued, Some(describe())),
    };
    if let (Some(reply), Seen::Reply(_)) = (&reply_bytes, &seen) {
        ctx.post_reply(message.session_id, reply.clone());
    }
    let summary = format!("{} ({why})", seen.summarize(tries));
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
    if ctx.record_result(&finished, decision.then == FinalAction::Disable).await.is_err() {
        // Stopped first: the message stays `delivering` and is delivered
        // again after a restart, at-least-once, never lost.
        return Judged::Done(Delivered::Cancelled);
    }
    let stats = ctx.stats();
    match decision.then {
        FinalAction::Complete => {
            stats.latency.observe(tries.first.elapsed());
            stats.bump(&stats.sent, 1);
        }
        FinalAction::Disable => {
            stats.bump(&stats.errors, 1);
            let text = format!("disabled by reply code action: message {}: {summary}", message.id);
            ctx.event(EventLevel::Error, "disabled", text.clone());
            tracing::error!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.disable_self();
            return Judged::Done(Delivered::Disabled);
        }
        FinalAction::Suspend | FinalAction::Fail => {
            stats.bump(&stats.errors, 1);
            let text = format!("message {} {}: {summary}", message.id, status.as_str());
            tracing::warn!(production = ctx.production_id(), item = ctx.name(), "{text}");
            ctx.event(EventLevel::Error, "delivery", text);
        }
    }
    Judged::Done(Delivered::Done)
}
