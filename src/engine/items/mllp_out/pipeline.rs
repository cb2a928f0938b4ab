//! Sending ahead: up to `pipeline_depth` messages on the connection before
//! the reply to the first has come back.
//!
//! Each reply is matched to its message by MSA-2 (the control id it
//! acknowledges), never by its position alone: a receiver that answers
//! from a pool of threads may answer out of order, and a reply recorded on
//! the wrong message would put an AE or AR on a message that was accepted.
//! A reply that arrives ahead of its turn is held and judged when its
//! message's turn comes, so results are still recorded in queue order. A
//! receiver seen answering out of order, or answering with a reply that
//! matches no message in flight, is not sent ahead to again: the operation
//! falls back to one message at a time until it is restarted. A reply
//! naming a message already answered on the connection (a receiver that
//! answers twice) is passed over, as one at a time (`own_reply`).
//! A reply that cannot be read is its message's only when that message is
//! the only one in flight; the connection is closed after it.

use bytes::Bytes;

use super::connection::{Failure, STALE_LIMIT, Trouble, can_frame};
use super::{Delivered, Progress, Reached, Returned, Settled, Tries, settle};
use crate::config::MllpOutConfig;
use crate::engine::items::ItemCtx;
use crate::rules::reply_actions::ReplyCodeActions;
use crate::store::Queued;

use super::connection::Connection;

/// Sends messages of `batch` from `first` on ahead of their replies over
/// the open connection, and settles each as its reply comes back.
///
/// Returns the first message without its final result (`batch.len()` when
/// all have one). Stops early when the connection is lost: the messages in
/// flight go again, in order, from the first without a result, on the next
/// connection (the attempts at that one carried in `progress`). When a
/// message is to be retried, the messages sent behind it are sent again
/// after it (their replies are not read), so that the last copy of each
/// reaches the receiver in order.
pub(super) async fn run(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    batch: &[Queued],
    first: usize,
    progress: &mut Progress,
) -> Result<usize, Delivered> {
    let (mut sent, mut finished) = (first, first);
    // Replies in a row naming messages already answered.
    let mut stale = 0;
    while finished < batch.len() {
        if ctx.is_cancelled() {
            return Err(Delivered::Cancelled);
        }
        let ahead = !conn.one_at_a_time;
        let Some(client) = conn.client() else { return Ok(finished) };
        // The window is topped up once half of it is answered, so that
        // messages go out many to a write rather than one per reply read;
        // not at all once the receiver has answered out of order. A
        // message that cannot be framed is left to go alone.
        if ahead && sent - finished <= config.pipeline_depth / 2 {
            let mut fed = Ok(());
            while fed.is_ok()
                && sent < batch.len()
                && sent - finished < config.pipeline_depth
                && can_frame(&batch[sent].body)
            {
                fed = client.feed(&batch[sent].body, config.response_timeout).await;
                sent += 1;
            }
            progress.count_sent(ctx, sent);
            if let Err(e) = match fed {
                Ok(()) => client.flush(config.response_timeout).await,
                Err(e) => Err(e),
            } {
                conn.close(ctx);
                return lost(ctx, config, actions, conn, batch, finished, Failure::from_client(e), progress).await;
            }
        }
        if sent == finished {
            return Ok(finished);
        }
        let reply = match client_receive(conn, config).await {
            Ok(reply) => Returned::read(reply),
            Err(failure) => {
                conn.close(ctx);
                return lost(ctx, config, actions, conn, batch, finished, failure, progress).await;
            }
        };
        conn.reached(ctx, false);
        conn.note_junk(ctx);
        let control_id = |i: usize| batch[i].control_id.as_deref().unwrap_or_default();
        let answers = reply.acknowledged();
        let matched =
            answers.and_then(|id| (finished..sent).find(|&i| !progress.held.contains_key(&i) && control_id(i) == id));
        if matched.is_none() && conn.was_answered(answers) {
            // A duplicate of a reply already judged, or a late one: never
            // another message's (see `own_reply`).
            stale += 1;
            conn.warn(ctx, Trouble::Stale, || {
                format!(
                    "a reply repeating one to an earlier message (a duplicate or a late reply) was passed over \
                     while awaiting the reply to message {}",
                    batch[finished].id
                )
            });
            if stale < STALE_LIMIT {
                continue;
            }
            conn.fall_back(ctx, "the receiver kept repeating replies to messages already answered".to_owned());
            conn.close(ctx);
            return lost(ctx, config, actions, conn, batch, finished, Failure::out_of_step(), progress).await;
        }
        stale = 0;
        let unreadable = reply.read.is_err().then_some(batch[finished].id);
        match matched {
            Some(i) if i != finished => {
                let why =
                    format!("the receiver answered message {} before message {}", batch[i].id, batch[finished].id);
                conn.fall_back(ctx, why);
                progress.held.insert(i, reply);
                continue;
            }
            // With one message in flight the reply is its own, whatever
            // its MSA-2 says (`:I?` judges a mismatch).
            None if sent - finished > 1 => {
                let why = format!(
                    "a reply that matches none of the {} messages in flight (MSA-2 {})",
                    sent - finished,
                    answers.map_or_else(|| "missing".to_owned(), |id| format!("{id:?}")),
                );
                conn.fall_back(ctx, why);
                // Unread, everything in flight goes again, one at a time.
                conn.close(ctx);
                return Ok(finished);
            }
            _ => {}
        }
        // Its reply, then replies that came back ahead of their turn.
        let mut next = Some(reply);
        while let Some(reply) = next {
            let tries = progress.tries(finished, &batch[finished]);
            match settle(ctx, config, actions, conn, &batch[finished], Reached::Reply(reply), tries, progress).await {
                Ok(Settled::Judged) => {
                    conn.answered(batch[finished].control_id.as_deref());
                    finished += 1;
                }
                Ok(Settled::SentAgain) => return Ok(finished + 1),
                Err(stopped) => return Err(stopped),
            }
            next = progress.held.remove(&finished);
        }
        if let Some(id) = unreadable {
            // Judged as its message's (the only one in flight), but what
            // follows it cannot be trusted to be in step.
            conn.warn(ctx, Trouble::Unreadable, || {
                format!("the reply to message {id} cannot be read; the connection is closed")
            });
            conn.close(ctx);
            return Ok(finished);
        }
    }
    Ok(finished)
}

/// Waits for the next reply on the open connection.
async fn client_receive(conn: &mut Connection, config: &MllpOutConfig) -> Result<Bytes, Failure> {
    let Some(client) = conn.client() else { return Err(Failure::closed()) };
    client.receive(config.response_timeout).await.map_err(Failure::from_client)
}

/// The connection was lost (or timed out) with messages in flight. A
/// transport failure sends them all again from the first without a result;
/// a response timeout is that message's `X`, and those behind it go again.
#[allow(clippy::too_many_arguments)]
async fn lost(
    ctx: &ItemCtx,
    config: &MllpOutConfig,
    actions: &ReplyCodeActions,
    conn: &mut Connection,
    batch: &[Queued],
    finished: usize,
    failure: Failure,
    progress: &mut Progress,
) -> Result<usize, Delivered> {
    let message = &batch[finished];
    let reached = match failure {
        Failure::Transport(transport) => {
            let mut tries: Tries = progress.tries(finished, message);
            conn.transport_failed(ctx, config, &transport, tries.first);
            tries.attempts += 1;
            progress.head = Some((finished, tries));
            return Ok(finished);
        }
        Failure::NoReply(text) => Reached::NoReply(text),
        Failure::Unreadable(text) => Reached::Unreadable(text),
        Failure::Unsendable(text) => Reached::Unsendable(text),
    };
    let tries = progress.tries(finished, message);
    settle(ctx, config, actions, conn, message, reached, tries, progress).await.map(|_| finished + 1)
}
