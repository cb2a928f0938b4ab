//! The kinds of items and what they share: a context with their production,
//! counters and cancellation, and the loop that takes batches from a queue.

mod file_in;
mod file_out;
mod mllp_in;
mod mllp_out;
mod router;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub(crate) use router::CompiledRouter;

use super::production::{ItemSlot, ProductionShared};
use super::reply_actions::ReplyCodeActions;
use super::status::ItemState;
use crate::config::{FileInConfig, FileOutConfig, ItemConfig, ItemKind, MllpInConfig, MllpOutConfig, Problem};
use crate::hl7::Message;
use crate::store::{Committed, EventLevel, InlineRoute, Queued, Status, Store};

/// An item's settings, with rules and reply code actions compiled.
pub(crate) enum ItemSpec {
    MllpIn { config: MllpInConfig, targets: Vec<String> },
    Router(CompiledRouter),
    MllpOut { config: MllpOutConfig, actions: ReplyCodeActions },
    FileIn { config: FileInConfig, targets: Vec<String> },
    FileOut { config: FileOutConfig },
}

impl ItemSpec {
    /// Compiles an item; problems name their path under `at` (e.g.
    /// `productions.adt.items[1]`).
    pub(crate) fn compile(item: &ItemConfig, at: &str) -> Result<Self, Vec<Problem>> {
        Ok(match &item.kind {
            ItemKind::MllpIn(c) => Self::MllpIn { config: c.clone(), targets: item.targets.clone() },
            ItemKind::Router(c) => Self::Router(CompiledRouter::compile(c, at)?),
            ItemKind::MllpOut(c) => {
                let actions = c.reply_code_actions.parse::<ReplyCodeActions>().map_err(|e| {
                    vec![Problem {
                        path: format!("{at}.reply_code_actions"),
                        message: format!(
                            "{e}; the default is \"{}\"",
                            super::reply_actions::DEFAULT_REPLY_CODE_ACTIONS
                        ),
                        position: None,
                    }]
                })?;
                Self::MllpOut { config: c.clone(), actions }
            }
            ItemKind::FileIn(c) => Self::FileIn { config: c.clone(), targets: item.targets.clone() },
            ItemKind::FileOut(c) => Self::FileOut { config: c.clone() },
        })
    }
}

/// What a running item has at hand.
pub(crate) struct ItemCtx {
    pub(crate) production: Arc<ProductionShared>,
    pub(crate) slot: Arc<ItemSlot>,
    pub(crate) cancel: CancellationToken,
    pub(crate) ready: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

impl ItemCtx {
    pub(crate) fn production_id(&self) -> &str {
        &self.production.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.slot.name
    }

    pub(crate) fn store(&self) -> &Store {
        &self.production.store
    }

    /// Tells the production that start-up finished (a service listens, or
    /// could not).
    pub(crate) fn ready(&self, result: Result<(), String>) {
        if let Some(tx) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(result);
        }
    }

    /// Puts the item in error (the production becomes troubled) and logs it.
    pub(crate) fn fail(&self, error: String) {
        if self.slot.stats.state().0 != ItemState::Error {
            self.event(EventLevel::Error, "error", error.clone());
        }
        self.production.item_state(&self.slot, ItemState::Error, Some(error));
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
            self.production.item_state(&self.slot, ItemState::Running, None);
        }
    }

    pub(crate) fn event(&self, level: EventLevel, kind: &str, text: String) {
        self.production.event(level, Some(self.name()), kind, text);
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

/// Runs an item until it is cancelled.
pub(crate) async fn run(ctx: ItemCtx) {
    let spec = ctx.slot.spec.clone();
    match &*spec {
        ItemSpec::MllpIn { config, targets } => mllp_in::run(&ctx, config, targets).await,
        ItemSpec::FileIn { config, targets } => {
            ctx.ready(Ok(()));
            file_in::run(&ctx, config, targets).await;
        }
        ItemSpec::Router(router) => {
            ctx.ready(Ok(()));
            router.run(&ctx).await;
        }
        ItemSpec::MllpOut { config, actions } => {
            ctx.ready(Ok(()));
            mllp_out::run(&ctx, config, actions).await;
        }
        ItemSpec::FileOut { config } => {
            ctx.ready(Ok(()));
            file_out::run(&ctx, config).await;
        }
    }
}

/// The routers among a service's targets. A running router decides on a
/// message in the task that received it (which has parsed it already), and
/// the store applies that decision in the message's own commit when the
/// router has nothing queued: a queue read, a parse and a commit saved per
/// message, and the same result as if the router had taken it from its
/// queue.
#[derive(Clone, Default)]
pub(crate) struct InlineRouters {
    /// Shared: every message routed on receipt takes a handle to it for
    /// counting at commit.
    routers: Arc<[Arc<ItemSlot>]>,
}

/// What is needed to account for a decision once it is committed.
pub(crate) struct InlineDecided {
    router: usize,
    /// MSH-10, kept only for a decision that is logged (not for a message
    /// routed on), so that the common case copies nothing.
    control_id: Option<String>,
    status: Status,
    error: Option<String>,
    outputs: usize,
}

impl InlineRouters {
    pub(crate) fn of(production: &ProductionShared, targets: &[String]) -> Self {
        let routers = production
            .slots
            .iter()
            .filter(|slot| targets.contains(&slot.name) && matches!(*slot.spec, ItemSpec::Router(_)))
            .cloned()
            .collect();
        Self { routers }
    }

    /// The decisions of the routers that are running; a stopped, disabled
    /// or failing router gets the message queued instead.
    pub(crate) fn decide(
        &self,
        msg: &Message<'_>,
        body: &bytes::Bytes,
        control_id: Option<&str>,
    ) -> (Vec<InlineRoute>, Vec<InlineDecided>) {
        let mut routes = Vec::new();
        let mut decided = Vec::new();
        for (index, slot) in self.routers.iter().enumerate() {
            let ItemSpec::Router(router) = &*slot.spec else { continue };
            if !slot.is_enabled() || slot.stats.state().0 != ItemState::Running {
                continue;
            }
            let decision = router.decide(msg, body, control_id);
            decided.push(InlineDecided {
                router: index,
                control_id: control_id.filter(|_| decision.status != Status::Completed).map(str::to_owned),
                status: decision.status,
                error: decision.error.clone(),
                outputs: decision.outputs.len(),
            });
            routes.push(InlineRoute { router: slot.name.clone(), decision });
        }
        (routes, decided)
    }

    /// Counts the decisions the store applied in the routers' statistics.
    pub(crate) fn account(
        &self,
        production: &ProductionShared,
        targets: &[String],
        committed: &Committed,
        decided: &[InlineDecided],
    ) {
        for d in decided {
            let Some(slot) = self.routers.get(d.router) else { continue };
            if !committed.routed.contains(&slot.name) {
                continue;
            }
            let header = targets.iter().position(|t| *t == slot.name).and_then(|i| committed.queued.get(i));
            router::account(
                production,
                slot,
                header.copied().unwrap_or_default(),
                d.control_id.as_deref(),
                d.status,
                d.error.as_deref(),
                d.outputs,
            );
        }
    }
}

/// `MSH-9` as `ADT^A01` and MSH-10, for the store's header columns.
pub(crate) fn header_facts(msg: &crate::hl7::Message<'_>) -> (Option<String>, Option<String>) {
    let text = |path: crate::hl7::Path| msg.get(&path).filter(|v| !v.is_empty()).map(|v| msg.decode(v).into_owned());
    let code = text(crate::hl7::Path::field("MSH", 9).component(1));
    let event = text(crate::hl7::Path::field("MSH", 9).component(2));
    let message_type = match (code, event) {
        (Some(c), Some(e)) => Some(format!("{c}^{e}")),
        (c, _) => c,
    };
    (msg.control_id().map(|v| msg.decode(v).into_owned()), message_type)
}
