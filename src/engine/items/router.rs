//! `router`: a business process that sends each message on by the first
//! rule whose condition matches, optionally transformed.

use bytes::Bytes;

use super::ItemCtx;
use crate::config::{NoMatch, Problem, RouterConfig, RuleAction, TransformConfig};
use crate::engine::rules::{Condition, Transform, TransformStep};
use crate::hl7::{Message, Path};
use crate::store::{EventLevel, Routed, RoutedOutput, Status};

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
    pub(crate) fn compile(config: &RouterConfig, at: &str) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let here = format!("{at}.rules[{i}]");
            let condition = match &rule.when {
                None => Condition::always(),
                Some(text) => text.parse::<Condition>().unwrap_or_else(|e| {
                    problems.push(Problem {
                        path: format!("{here}.when"),
                        message: format!("{e} (in {text:?})"),
                        position: None,
                    });
                    Condition::always()
                }),
            };
            let mut steps = Vec::new();
            for (j, step) in rule.transform.iter().enumerate() {
                let path = |text: &str, key: &str| {
                    text.parse::<Path>().map_err(|e| Problem {
                        path: format!("{here}.transform[{j}].{key}"),
                        message: format!("{e}; write a path like PID-5.1 or OBX[2]-5"),
                        position: None,
                    })
                };
                let parsed = match step {
                    TransformConfig::Set { path: p, value } => {
                        path(p, "set").map(|p| TransformStep::Set { path: p, value: value.clone() })
                    }
                    TransformConfig::Copy { from, to } => {
                        path(from, "copy").and_then(|from| path(to, "to").map(|to| TransformStep::Copy { from, to }))
                    }
                    TransformConfig::Clear { path: p } => path(p, "clear").map(|p| TransformStep::Clear { path: p }),
                };
                match parsed {
                    Ok(step) => steps.push(step),
                    Err(problem) => problems.push(problem),
                }
            }
            let targets = match &rule.action {
                RuleAction::Send(targets) => Some(targets.clone()),
                RuleAction::Discard => None,
            };
            rules.push(CompiledRule { condition, targets, transform: Transform { steps } });
        }
        if problems.is_empty() { Ok(Self { rules, no_match: config.no_match }) } else { Err(problems) }
    }

    /// What to do with one message.
    fn route(&self, header_id: i64, body: &Bytes, control_id: Option<&str>) -> Routed {
        let routed = |status, error: Option<String>, outputs| Routed { header_id, status, error, outputs };
        let msg = match Message::parse(body) {
            Ok(msg) => msg,
            Err(e) => return routed(Status::Error, Some(format!("message cannot be parsed: {e}")), vec![]),
        };
        let Some((index, rule)) = self.rules.iter().enumerate().find(|(_, r)| r.condition.matches(&msg)) else {
            return match self.no_match {
                NoMatch::Discard => routed(Status::Discarded, Some("no rule matched".into()), vec![]),
                NoMatch::Error => routed(Status::Error, Some("no rule matched".into()), vec![]),
            };
        };
        let Some(targets) = &rule.targets else {
            return routed(Status::Discarded, Some(format!("discarded by rule {index}")), vec![]);
        };
        let body = if rule.transform.is_empty() {
            None
        } else {
            match rule.transform.apply(body) {
                Ok(bytes) => Some(Bytes::from(bytes)),
                Err(e) => return routed(Status::Error, Some(format!("rule {index}: {e}")), vec![]),
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
        routed(Status::Completed, None, outputs)
    }

    pub(crate) async fn run(&self, ctx: &ItemCtx) {
        let stats = &ctx.slot.stats;
        while let Some(batch) = ctx.next_batch(BATCH).await {
            stats.bump(&stats.received, batch.len() as u64);
            let decisions: Vec<Routed> =
                batch.iter().map(|q| self.route(q.id, &q.body, q.control_id.as_deref())).collect();
            let mut warnings = Vec::new();
            for d in &decisions {
                match d.status {
                    Status::Completed => stats.bump(&stats.sent, d.outputs.len() as u64),
                    Status::Discarded => {
                        if d.error.as_deref() == Some("no rule matched") {
                            warnings.push(d.header_id);
                        }
                    }
                    _ => {
                        stats.bump(&stats.errors, 1);
                        ctx.event(
                            EventLevel::Error,
                            "routing",
                            format!("message {}: {}", d.header_id, d.error.clone().unwrap_or_default()),
                        );
                    }
                }
            }
            for id in warnings {
                tracing::warn!(
                    production = ctx.production_id(),
                    item = ctx.name(),
                    header = id,
                    "no rule matched; message discarded"
                );
            }
            let results = ctx.store().commit_routed_all(decisions).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                ctx.fail(format!("cannot store routing results: {e}"));
                if ctx.sleep(std::time::Duration::from_secs(1)).await.is_err() {
                    return;
                }
            } else {
                ctx.recovered();
            }
        }
    }
}
