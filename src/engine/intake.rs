//! What a service does with a message it has received and parsed, the
//! same for every kind of service: the record the store commits
//! ([`NewInbound`], with the facts a search finds it by, read here from
//! the parsed message so that the store need not parse it again), the
//! decisions of the routers among its targets, taken on receipt, and the
//! counting of those decisions once committed.
//!
//! A running router decides on a message in the task that received it
//! (which has parsed it already), and the store applies that decision in
//! the message's own commit when the router has nothing queued: a queue
//! read, a parse and a commit saved per message, and the same result as if
//! the router had taken it from its queue. A stopped, disabled or failing
//! router gets the message queued instead.

use std::sync::Arc;

use bytes::Bytes;

use super::items::{ItemSpec, NO_RULE_MATCHED};
use super::production::{ItemSlot, ProductionShared};
use super::status::ItemState;
use crate::hl7::Message;
use crate::store::{Committed, EventLevel, InlineRoute, MessageFacts, NewInbound, Status};

/// A service's way into the store. Cheap to clone: each message routed on
/// receipt takes one along to be counted at its commit.
#[derive(Clone)]
pub(crate) struct Intake {
    production: Arc<ProductionShared>,
    /// The service's name, shared by every message it stores.
    service: Arc<str>,
    targets: Arc<[String]>,
    /// The routers among the targets.
    routers: Arc<[Arc<ItemSlot>]>,
}

/// What is needed to count a decision once it is committed.
pub(crate) struct InlineDecided {
    router: usize,
    /// MSH-10, kept only for a decision that is logged (not for a message
    /// routed on), so that the common case copies nothing.
    control_id: Option<String>,
    status: Status,
    error: Option<String>,
    outputs: usize,
}

impl Intake {
    pub(super) fn new(production: Arc<ProductionShared>, service: &str, targets: &[String]) -> Self {
        let routers = production
            .slots
            .iter()
            .filter(|slot| targets.contains(&slot.name) && matches!(*slot.spec, ItemSpec::Router(_)))
            .cloned()
            .collect();
        Self { production, service: service.into(), targets: targets.into(), routers }
    }

    /// The record of `msg` (whose bytes are `body`, received from
    /// `origin`) for the store, with the decisions of the running routers
    /// among the targets, to be counted with [`account`](Self::account)
    /// once committed.
    pub(crate) fn inbound(&self, msg: &Message<'_>, body: Bytes, origin: Arc<str>) -> (NewInbound, Vec<InlineDecided>) {
        let MessageFacts { control_id, message_type, patient_id, patient_name } = MessageFacts::of(msg);
        let (routed, decided) = self.decide(msg, &body, control_id.as_deref());
        let inbound = NewInbound {
            production: self.production.id.clone(),
            service: self.service.clone(),
            origin,
            body,
            control_id,
            message_type,
            patient_id,
            patient_name,
            targets: self.targets.clone(),
            routed,
        };
        (inbound, decided)
    }

    fn decide(
        &self,
        msg: &Message<'_>,
        body: &Bytes,
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
    pub(crate) fn account(&self, committed: &Committed, decided: &[InlineDecided]) {
        for d in decided {
            let Some(slot) = self.routers.get(d.router) else { continue };
            if !committed.routed.contains(&slot.name) {
                continue;
            }
            let header = self.targets.iter().position(|t| *t == slot.name).and_then(|i| committed.queued.get(i));
            count_routed(
                &self.production,
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

/// Counts one routed message in the router's statistics, and logs a
/// discarded message (no rule matched) or a routing error, whether the
/// router took the message from its queue or routed it where it was
/// received. `control_id` is the message's MSH-10.
pub(super) fn count_routed(
    production: &ProductionShared,
    router: &ItemSlot,
    header_id: i64,
    control_id: Option<&str>,
    status: Status,
    error: Option<&str>,
    outputs: usize,
) {
    let stats = &router.stats;
    stats.bump(&stats.received, 1);
    match status {
        Status::Completed => stats.bump(&stats.sent, outputs as u64),
        Status::Discarded => {
            if error == Some(NO_RULE_MATCHED) {
                // Named by its control id, which the sender and a message
                // search know it by (never by its content), and quoted,
                // since a sender may put anything in it.
                tracing::warn!(
                    production = %production.id,
                    item = %router.name,
                    control_id = ?control_id.unwrap_or_default(),
                    header = header_id,
                    "no rule matched; message discarded"
                );
            }
        }
        _ => {
            stats.bump(&stats.errors, 1);
            let text = format!("message {header_id}: {}", error.unwrap_or_default());
            production.event(EventLevel::Error, Some(&router.name), "routing", text);
        }
    }
}
