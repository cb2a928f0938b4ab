//! The write protocol: what is sent to the writer and what comes back.
//!
//! Every write reaches the writer as an [`Op`], which carries the channel
//! its caller waits on. Applied inside a transaction, an operation gives an
//! [`Outcome`]; [`settle`] pairs the two into a [`Done`], the answer held
//! until the transaction is committed (and, for the answers that must
//! survive a power cut, until the write-ahead log is synced: see the writer
//! module). The enums mirror each other, and the `answer!` and
//! `outcome_value!` macros keep the matching between them short: a new
//! kind of write is a variant of `Op`, its SQL in `sql::apply`, and its
//! line in [`settle`].

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::delivery_log::DeliveryLog;
use super::error::StoreError;
use super::facts::MessageFacts;
use super::model::{Commanded, Committed, Event, Finished, NewInbound, PurgeStep, ResendStep, Routed};
use super::pending::CommitNotice;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    /// A received message, durable already in the inbound log as the
    /// record with this sequence number.
    Inbound(NewInbound, CommitNotice, u64),
    /// Messages made durable together in the inbound log, handed over in
    /// one piece: taken apart into `Inbound` operations of one group.
    Logged(Vec<(NewInbound, CommitNotice, u64)>),
    /// A router's results, committed all or none.
    Routed(Vec<Routed>, Reply<Vec<Vec<i64>>>),
    MarkDelivering(Vec<i64>, Reply<()>),
    Finish(Finished, Reply<()>),
    /// A result already in the delivery log: answered by settling it there.
    FinishNoted(Finished, Arc<DeliveryLog>),
    Requeue(Vec<i64>, Reply<()>),
    RequeueItem(String, String, Reply<()>),
    Resend(i64, Reply<bool>),
    /// A copy of a header queued again: answered with its id, or `None`
    /// when there is no such header.
    ResendCopy(Box<ResendCopy>, Reply<Option<i64>>),
    /// One batch of an item's failed messages put back in their queue.
    ResendBatch(ResendBatch, Reply<ResendStep>),
    Event(Event, Option<Reply<()>>),
    Commanded(String, Commanded, Reply<()>),
    ItemEnabled(String, String, bool, Reply<()>),
    DiscoveryTopics(Vec<String>, Reply<()>),
    PurgeBatch {
        cutoff: i64,
        after: i64,
        limit: usize,
        reply: Reply<PurgeStep>,
    },
    Vacuum {
        pages: u32,
        reply: Reply<u64>,
    },
    Shutdown,
}

/// A copy of header `id` to queue for `target`.
pub(super) struct ResendCopy {
    pub(super) id: i64,
    pub(super) target: String,
    /// An edited body with what it says (parsed by the caller, not the
    /// writer), or `None` to share the original's body.
    pub(super) edited: Option<(Bytes, MessageFacts)>,
}

/// Up to `limit` suspended or failed headers of `production`/`item` with
/// ids after `after`, to queue again.
pub(super) struct ResendBatch {
    pub(super) production: String,
    pub(super) item: String,
    pub(super) after: i64,
    pub(super) limit: usize,
}

impl Op {
    /// Nobody awaits this operation's commit.
    pub(super) fn can_wait(&self) -> bool {
        matches!(self, Self::FinishNoted(..) | Self::Event(_, None))
    }
}

/// The answer to one operation, held until the commit.
pub(super) enum Done {
    /// A received message: durable in the inbound log already, so its
    /// commit need not wait for the disk.
    Committed(CommitNotice, Result<Committed, StoreError>),
    Ids(Reply<Vec<Vec<i64>>>, Result<Vec<Vec<i64>>, StoreError>),
    Unit(Option<Reply<()>>, Result<(), StoreError>),
    /// A status change of a queued message: answered at commit (see the
    /// writer module).
    Status(Reply<()>, Result<(), StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    Id(Reply<Option<i64>>, Result<Option<i64>, StoreError>),
    Resent(Reply<ResendStep>, Result<ResendStep, StoreError>),
    Purge(Reply<PurgeStep>, Result<PurgeStep, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
    /// A result noted in the delivery log, for this header.
    Noted(Arc<DeliveryLog>, i64, Result<(), StoreError>),
}

impl Done {
    /// Must this answer wait until the log is on disk?
    pub(super) fn durable(&self) -> bool {
        matches!(self, Self::Bool(..) | Self::Id(..) | Self::Resent(..)) || matches!(self, Self::Unit(Some(_), _))
    }

    /// Sends the result, or `failure` when the commit itself failed.
    pub(super) fn send(self, failure: Option<&str>) {
        let fail = |f: &str| StoreError::CommitFailed(f.to_owned());
        macro_rules! answer {
            ($tx:expr, $r:expr) => {{
                let _ = $tx.send(match failure {
                    Some(f) => Err(fail(f)),
                    None => $r,
                });
            }};
        }
        match self {
            Self::Committed(tx, r) => answer!(tx, r),
            Self::Ids(tx, r) => answer!(tx, r),
            Self::Unit(Some(tx), r) => answer!(tx, r),
            Self::Unit(None, _) => {}
            Self::Status(tx, r) => answer!(tx, r),
            Self::Bool(tx, r) => answer!(tx, r),
            Self::Id(tx, r) => answer!(tx, r),
            Self::Resent(tx, r) => answer!(tx, r),
            Self::Purge(tx, r) => answer!(tx, r),
            Self::Count(tx, r) => answer!(tx, r),
            Self::Noted(log, header_id, r) => {
                if failure.is_none() && r.is_ok() {
                    log.settle(header_id);
                } else {
                    // Not reached: the writer holds a result it cannot
                    // commit (see `Writer::hold`). Left pending, it is
                    // applied from the log at the next start.
                    let error =
                        failure.map_or_else(|| r.err().map(|e| e.to_string()).unwrap_or_default(), str::to_owned);
                    tracing::error!(%error, "a delivery result was not committed; it is applied from the delivery log at the next start");
                }
            }
        }
    }
}

/// The result of one operation inside a transaction, before it is
/// answered.
pub(super) enum Outcome {
    Committed(Result<Committed, StoreError>),
    Ids(Result<Vec<Vec<i64>>, StoreError>),
    Unit(Result<(), StoreError>),
    Bool(Result<bool, StoreError>),
    Id(Result<Option<i64>, StoreError>),
    Resent(Result<ResendStep, StoreError>),
    Purge(Result<PurgeStep, StoreError>),
    /// The transaction failed as a whole; the answer is its failure.
    Failed,
    /// A received message not applied because one received before it
    /// failed: it waits behind that one (see
    /// [`Writer::hold`](super::writer::Writer::hold)).
    Held,
}

macro_rules! outcome_value {
    ($name:ident, $variant:ident, $t:ty) => {
        pub(super) fn $name(self) -> Result<$t, StoreError> {
            match self {
                Self::$variant(result) => result,
                _ => Err(StoreError::CommitFailed("the operation was not applied".into())),
            }
        }
    };
}

impl Outcome {
    pub(super) fn ok(&self) -> bool {
        match self {
            Self::Committed(r) => r.is_ok(),
            Self::Ids(r) => r.is_ok(),
            Self::Unit(r) => r.is_ok(),
            Self::Bool(r) => r.is_ok(),
            Self::Id(r) => r.is_ok(),
            Self::Resent(r) => r.is_ok(),
            Self::Purge(r) => r.is_ok(),
            Self::Failed | Self::Held => false,
        }
    }

    /// The same outcome failed with `error` (see the `faults` module); a
    /// failure stays as it was.
    pub(super) fn refused(self, error: StoreError) -> Self {
        match self {
            Self::Committed(Ok(_)) => Self::Committed(Err(error)),
            Self::Ids(Ok(_)) => Self::Ids(Err(error)),
            Self::Unit(Ok(())) => Self::Unit(Err(error)),
            Self::Bool(Ok(_)) => Self::Bool(Err(error)),
            Self::Id(Ok(_)) => Self::Id(Err(error)),
            Self::Resent(Ok(_)) => Self::Resent(Err(error)),
            Self::Purge(Ok(_)) => Self::Purge(Err(error)),
            other => other,
        }
    }

    /// Why the operation failed; for an outcome that did not, an error
    /// saying so (not reached: asked only of failures).
    pub(super) fn into_error(self) -> StoreError {
        let error = match self {
            Self::Committed(r) => r.err(),
            Self::Ids(r) => r.err(),
            Self::Unit(r) => r.err(),
            Self::Bool(r) => r.err(),
            Self::Id(r) => r.err(),
            Self::Resent(r) => r.err(),
            Self::Purge(r) => r.err(),
            Self::Failed | Self::Held => None,
        };
        error.unwrap_or_else(|| StoreError::CommitFailed("the operation was not applied".into()))
    }

    outcome_value!(committed, Committed, Committed);
    outcome_value!(ids, Ids, Vec<Vec<i64>>);
    outcome_value!(unit, Unit, ());
    outcome_value!(boolean, Bool, bool);
    outcome_value!(id, Id, Option<i64>);
    outcome_value!(resent, Resent, ResendStep);
    outcome_value!(purge, Purge, PurgeStep);
}

/// Pairs an operation's reply channel with its outcome.
pub(super) fn settle(op: Op, outcome: Outcome) -> Done {
    match op {
        Op::Inbound(_, reply, _) => Done::Committed(reply, outcome.committed()),
        Op::Routed(_, reply) => Done::Ids(reply, outcome.ids()),
        Op::MarkDelivering(_, reply) | Op::Requeue(_, reply) | Op::RequeueItem(_, _, reply) | Op::Finish(_, reply) => {
            Done::Status(reply, outcome.unit())
        }
        Op::Resend(_, reply) => Done::Bool(reply, outcome.boolean()),
        Op::ResendCopy(_, reply) => Done::Id(reply, outcome.id()),
        Op::ResendBatch(_, reply) => Done::Resent(reply, outcome.resent()),
        Op::Event(_, reply) => Done::Unit(reply, outcome.unit()),
        Op::Commanded(_, _, reply) | Op::ItemEnabled(_, _, _, reply) | Op::DiscoveryTopics(_, reply) => {
            Done::Unit(Some(reply), outcome.unit())
        }
        Op::FinishNoted(finished, log) => Done::Noted(log, finished.header_id, outcome.unit()),
        Op::PurgeBatch { reply, .. } => Done::Purge(reply, outcome.purge()),
        Op::Vacuum { reply, .. } => Done::Count(reply, Ok(0)),
        // Taken apart when added to a group (see `writer::push`): never
        // settled as one.
        Op::Shutdown | Op::Logged(_) => Done::Unit(None, Ok(())),
    }
}
