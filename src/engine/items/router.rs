//! `router`: a business process that sends each message on by the first
//! rule whose condition matches, optionally transformed.

use bytes::Bytes;

use super::ItemCtx;
use crate::config::{NoMatch, RouterConfig, RuleAction};
use crate::hl7::Message;
use crate::rules::route::{Condition, Transform};
use crate::store::{RouteDecision, Routed, RoutedOutput, Status};

/// Messages routed per batch (and per commit).
const BATCH: usize = 64;

/// A router's rules, compiled at load time.
pub(crate) struct CompiledRouter {
    rules: Vec<CompiledRule>,
    no_match: NoMatch,
}

struct CompiledRule {
    condition: Condition,
    targets: Option<Vec<String>>,
    transform: Transform,
}

impl CompiledRouter {
    /// The router of `config`, whose conditions and paths the loader has
    /// compiled and checked already.
    pub(crate) fn compile(config: &RouterConfig) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let targets = match &rule.action {
                    RuleAction::Send(targets) => Some(targets.clone()),
                    RuleAction::Discard => None,
                };
                CompiledRule {
                    condition: rule.when.clone().unwrap_or_else(Condition::always),
                    targets,
                    transform: Transform { steps: rule.transform.clone() },
                }
            })
            .collect();
        Self { rules, no_match: config.no_match }
    }

    /// What to do with one message, read from its queue.
    fn route(&self, header_id: i64, body: &Bytes, control_id: Option<&str>) -> Routed {
        let decision = match Message::parse(body) {
            Ok(msg) => self.decide(&msg, body, control_id),
            Err(e) => failed(format!("message cannot be parsed: {e}")),
        };
        Routed { header_id, decision }
    }

    /// What to do with one message: the first rule that matches picks the
    /// targets and the transform. `body` is the text `msg` was parsed from.
    pub(crate) fn decide(&self, msg: &Message<'_>, body: &Bytes, control_id: Option<&str>) -> RouteDecision {
        let decided = |status, error: Option<String>| RouteDecision { status, error, outputs: Vec::new() };
        let Some((index, rule)) = self.rules.iter().enumerate().find(|(_, r)| r.condition.matches(msg)) else {
            return match self.no_match {
                NoMatch::Discard => decided(Status::Discarded, Some(NO_RULE_MATCHED.into())),
                NoMatch::Error => decided(Status::Error, Some(NO_RULE_MATCHED.into())),
            };
        };
        let Some(targets) = &rule.targets else {
            return decided(Status::Discarded, Some(format!("discarded by rule {index}")));
        };
        let body = if rule.transform.is_empty() {
            None
        } else {
            match rule.transform.apply(body) {
                Ok(bytes) => Some(Bytes::from(bytes)),
                Err(e) => return failed(format!("rule {index}: {e}")),
            }
        };
        let new_control_id = body.as_ref().and_then(|b| {
            let msg = Message::parse(b).ok()?;
            let id = msg.control_id().map(|v| msg.decode(v).into_owned());
            (id.as_deref() != control_id).then_some(id).flatten()
        });
        let outputs = targets
            .iter()
            .map(|target| RoutedOutput {
                target: target.clone(),
                body: body.clone(),
                control_id: new_control_id.clone(),
            })
            .collect();
        RouteDecision { status: Status::Completed, error: None, outputs }
    }

    pub(crate) async fn run(&self, ctx: &ItemCtx) {
        while let Some(batch) = ctx.next_batch(BATCH).await {
            let decisions: Vec<Routed> =
                batch.iter().map(|q| self.route(q.id, &q.body, q.control_id.as_deref())).collect();
            // Counted once committed: a batch that cannot be committed
            // stays queued and is routed (and counted) again.
            let outcomes: Vec<_> = decisions
                .iter()
                .map(|r| (r.header_id, r.decision.status, r.decision.error.clone(), r.decision.outputs.len()))
                .collect();
            match ctx.store().commit_routed_all(decisions).await {
                Ok(_) => {
                    for ((header_id, status, error, outputs), queued) in outcomes.into_iter().zip(&batch) {
                        let control_id = queued.control_id.as_deref();
                        ctx.count_routed(header_id, control_id, status, error.as_deref(), outputs);
                    }
                    ctx.recovered();
                }
                Err(e) => {
                    ctx.fail(format!("cannot store routing results: {e}"));
                    if ctx.sleep(std::time::Duration::from_secs(1)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Why a message was discarded or failed when no rule matched it.
pub(crate) const NO_RULE_MATCHED: &str = "no rule matched";

/// A message the router cannot route.
fn failed(error: String) -> RouteDecision {
    RouteDecision { status: Status::Error, error: Some(error), outputs: Vec::new() }
}
