//! What a running item has at hand: its name, counters and state, the
//! store, its production's TLS configurations and reply board, and its
//! cancellation. Items reach their production only through these methods,
//! never through its fields, so what an item may do is written down here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::intake::Intake;
use super::items::ItemSpec;
use super::production::{ItemSlot, ProductionShared};
use super::status::{ItemState, ItemStats};
use crate::store::{EventLevel, Finished, Queued, Status, Store, StoreError};
use crate::sync::LockExt as _;
use crate::tls::TlsConfigHandle;

/// How often an operation tries again to record a delivery result the
/// store could not take.
const RECORD_RETRY: Duration = Duration::from_secs(1);

/// Tells the production that the item has started (a service listens) or
/// could not.
type Ready = Arc<Mutex<Option<oneshot::Sender<Result<(), String>>>>>;

/// A running item's context. Cheap to clone: a listener hands one to each
/// of its connections.
#[derive(Clone)]
pub(crate) struct ItemCtx {
    production: Arc<ProductionShared>,
    slot: Arc<ItemSlot>,
    cancel: CancellationToken,
    ready: Ready,
}

impl ItemCtx {
    pub(crate) fn new(
        production: Arc<ProductionShared>,
        slot: Arc<ItemSlot>,
        cancel: CancellationToken,
        ready: oneshot::Sender<Result<(), String>>,
    ) -> Self {
        Self { production, slot, cancel, ready: Arc::new(Mutex::new(Some(ready))) }
    }

    pub(crate) fn production_id(&self) -> &str {
        &self.production.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.slot.name
    }

    /// The item's settings, compiled.
    pub(crate) fn spec(&self) -> Arc<ItemSpec> {
        self.slot.spec.clone()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.production.store
    }

    /// The item's counters and connection gauge.
    pub(crate) fn stats(&self) -> &Arc<ItemStats> {
        &self.slot.stats
    }

    /// The TLS configuration `name`, or why it cannot be used.
    pub(crate) fn tls(&self, name: &str) -> Result<Arc<TlsConfigHandle>, String> {
        self.production.tls(name)
    }

    /// Hands a downstream reply to the service waiting for it in
    /// `ack_mode: application`, if one is.
    pub(crate) fn post_reply(&self, session: i64, reply: Bytes) {
        self.production.replies.post(session, reply);
    }

    /// Waits up to `timeout` for the first downstream reply to the
    /// message that opened `session` (`ack_mode: application`).
    pub(crate) async fn wait_reply(&self, session: i64, timeout: Duration) -> Option<Bytes> {
        self.production.replies.wait(session, timeout).await
    }

    /// Disables this item once its current message is finished (a reply
    /// code action said so).
    pub(crate) fn disable_self(&self) {
        self.production.disable_later(self.name());
    }

    /// The routing on receipt and the accounting of a service that sends
    /// what it receives to `targets`.
    pub(crate) fn intake(&self, targets: &[String]) -> Intake {
        Intake::new(self.production.clone(), self.name(), targets)
    }

    /// Counts a message this router routed from its queue.
    pub(crate) fn count_routed(
        &self,
        header_id: i64,
        control_id: Option<&str>,
        status: Status,
        error: Option<&str>,
        outputs: usize,
    ) {
        super::intake::count_routed(&self.production, &self.slot, header_id, control_id, status, error, outputs);
    }

    /// Whether the item is being stopped.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes once the item is being stopped.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Tells the production that start-up finished (a service listens, or
    /// could not).
    pub(crate) fn ready(&self, result: Result<(), String>) {
        if let Some(tx) = self.ready.lock_unpoisoned().take() {
            let _ = tx.send(result);
        }
    }

    /// Sets the item's state and last error, as its production shows it.
    pub(crate) fn set_state(&self, state: ItemState, error: Option<String>) {
        self.production.item_state(&self.slot, state, error);
    }

    /// Puts the item in error (the production becomes troubled) and logs it.
    pub(crate) fn fail(&self, error: String) {
        if self.slot.stats.state().0 != ItemState::Error {
            self.event(EventLevel::Error, "error", error.clone());
        }
        self.set_state(ItemState::Error, Some(error));
    }

    /// Shows the store's trouble committing (see
    /// [`Store::commit_trouble`]) as this service's error, and its end as
    /// recovery.
    pub(crate) fn store_trouble(&self, cause: Option<&str>) {
        match cause {
            Some(cause) => self.fail(format!(
                "the store cannot commit: {cause}; received messages and delivery results wait in its logs and are tried again"
            )),
            None => self.recovered(),
        }
    }

    /// Back to running after an error.
    pub(crate) fn recovered(&self) {
        if self.slot.stats.state().0 == ItemState::Error {
            self.event(EventLevel::Info, "recovered", "working again".into());
            self.set_state(ItemState::Running, None);
        }
    }

    /// Writes an entry of this item to the event log.
    pub(crate) fn event(&self, level: EventLevel, kind: &str, text: String) {
        self.production.event(level, Some(self.name()), kind, text);
    }

    /// Records the result of a delivery: noted in the delivery log, or,
    /// with `commit`, committed before this returns (a message going back
    /// to its queue must be there before the next read).
    ///
    /// A store that cannot take it (a full disk: the delivery log cannot
    /// grow, the commit is refused) puts the item in error with the reason
    /// and the result is tried again every second until it is taken, when
    /// the item runs again. Nothing else is delivered meanwhile: the next
    /// message goes out only once this one's result is safe. Giving up
    /// instead would stop the operation until a restart, with its queue
    /// growing behind it. `Err` once the item is being stopped (or the store
    /// closes) first; the message is then delivered again after the restart.
    pub(crate) async fn record_result(&self, finished: &Finished, commit: bool) -> Result<(), ()> {
        let mut failed = false;
        loop {
            let recorded = match commit {
                true => self.store().finish(finished.clone()).await,
                false => self.store().note_finished(finished.clone()).await,
            };
            match recorded {
                Ok(()) => {
                    if failed {
                        self.recovered();
                    }
                    return Ok(());
                }
                Err(StoreError::Closed) => return Err(()),
                Err(e) => {
                    self.fail(format!("cannot record the delivery result: {e}; trying again every second"));
                    failed = true;
                }
            }
            self.sleep(RECORD_RETRY).await?;
        }
    }

    /// Waits for up to `limit` queued messages, or `None` once cancelled.
    pub(crate) async fn next_batch(&self, limit: usize) -> Option<Vec<Queued>> {
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            match self.store().fetch_queue(self.production_id(), self.name(), limit) {
                Ok(batch) if !batch.is_empty() => return Some(batch),
                Ok(_) => {
                    tokio::select! {
                        () = self.cancel.cancelled() => return None,
                        () = self.store().queued_notification(self.production_id(), self.name()) => {}
                        // A safety net: never sleep forever on a lost wake-up.
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Err(e) => {
                    self.fail(format!("cannot read the queue: {e}"));
                    if self.sleep(Duration::from_secs(1)).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps unless cancelled first (`Err`).
    pub(crate) async fn sleep(&self, d: Duration) -> Result<(), ()> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(()),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }
}
