//! How a caller hears that its write is committed: a [`Pending`] it holds
//! and waits on, or, for a received message, a [`CommitNotice`] that the
//! writer answers once the transaction holding the message is committed.

use tokio::sync::oneshot;

use super::error::StoreError;
use super::model::Committed;

/// A write submitted to the store whose commit has not been waited for.
#[must_use = "a pending write's failure is only seen by waiting for it"]
#[derive(Debug)]
pub struct Pending<T>(pub(super) oneshot::Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Waits for the commit.
    pub async fn wait(self) -> Result<T, StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }

    /// The commit's result if it has come, without waiting. Not to be
    /// called again once it has returned one.
    pub fn try_take(&mut self) -> Option<Result<T, StoreError>> {
        match self.0.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }

    /// Waits for the commit without giving the `Pending` up, so that the
    /// wait can be one branch of a `select!` (cancel safe). Not to be
    /// called again once it has returned.
    pub async fn wait_mut(&mut self) -> Result<T, StoreError> {
        (&mut self.0).await.map_err(|_| StoreError::Closed)?
    }
}

/// Who hears how a received message's commit went.
pub(crate) enum CommitNotice {
    /// The caller, through a [`Pending`].
    Pending(oneshot::Sender<Result<Committed, StoreError>>),
    /// A function called on the writer's thread (see
    /// [`Store::receive_inbound_then`](super::Store::receive_inbound_then)).
    Call(Box<dyn FnOnce(Result<Committed, StoreError>) + Send>),
}

impl CommitNotice {
    /// Nobody: a message applied again from the inbound log at start.
    pub(crate) fn nobody() -> Self {
        Self::Call(Box::new(|_| {}))
    }

    pub(crate) fn send(self, outcome: Result<Committed, StoreError>) {
        match self {
            // Nobody waiting any more is not an error.
            Self::Pending(tx) => drop(tx.send(outcome)),
            Self::Call(then) => then(outcome),
        }
    }
}
