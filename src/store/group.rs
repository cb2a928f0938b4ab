//! One group of operations applied inside the writer's open transaction:
//! each operation's SQL in turn (in a savepoint of its own when the group
//! is redone after a failure), the queue depth changes they add up to, and
//! how far the inbound log is committed with them. The writer begins and
//! commits the transaction around it; the store runs it once at open for
//! the inbound log's records left by the previous run.

use rusqlite::Connection;

use super::error::StoreError;
use super::faults::FaultHook;
use super::protocol::{Op, Outcome};
use super::queues::{Deltas, Depths, Queues};
use super::sql::{HeaderIds, Statements, apply, update_depths};

/// How a group's operations are kept apart inside its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Isolation {
    /// No savepoints; one failure abandons the whole transaction.
    Shared,
    /// A savepoint per operation.
    PerOperation,
}

/// What a committed transaction produced.
pub(super) struct Applied {
    pub(super) outcomes: Vec<Outcome>,
    pub(super) deltas: Deltas,
    /// How far the inbound log is committed with this transaction.
    pub(super) log: LogProgress,
}

/// Applies `ops` inside the open transaction (see
/// [`Writer::transaction`](super::writer::Writer::transaction)).
///
/// Fails, with nothing applied, when SQLite has rolled the whole
/// transaction back itself. It does that when a statement fails with
/// `SQLITE_FULL`, `SQLITE_IOERR` or `SQLITE_NOMEM` (a full disk: the page
/// cache spills into the write-ahead log and the write is refused), unless
/// the statement keeps a journal of its own; the connection is then back in
/// autocommit mode. Going on would run the rest of the group outside any
/// transaction, a statement at a time, each committed alone; and the
/// failing operation's error is the cause to report, not the error of the
/// `ROLLBACK` or `ROLLBACK TO` that would follow it.
pub(super) fn apply_all(
    tx: &Connection,
    ops: &[Op],
    isolation: Isolation,
    queues: &Queues,
    log: LogProgress,
    faults: &FaultHook,
) -> Result<Option<Applied>, StoreError> {
    let mut ids = HeaderIds::next_free(tx)?;
    let mut applied = Applied { outcomes: Vec::with_capacity(ops.len()), deltas: Deltas::default(), log };
    let mut op_deltas = Deltas::default();
    let mut statements = Statements::new(tx);
    for op in ops {
        if applied.log.stuck && matches!(op, Op::Inbound(..)) {
            // Not applied behind the one that failed: that would commit
            // them out of order and pass over it in the log.
            applied.outcomes.push(Outcome::Held);
            continue;
        }
        if isolation == Isolation::PerOperation {
            tx.prepare_cached("SAVEPOINT op")?.execute([])?;
        }
        op_deltas.reset();
        let depths = Depths { committed: queues, pending: &applied.deltas };
        let mut outcome = apply(&mut statements, op, &mut ids, &depths, &mut op_deltas);
        if let Some(error) = faults.check(tx, op) {
            outcome = outcome.refused(error.into());
        }
        if !outcome.ok() && tx.is_autocommit() {
            return Err(outcome.into_error());
        }
        match (outcome.ok(), isolation) {
            (true, Isolation::Shared) => {}
            (true, Isolation::PerOperation) => {
                tx.prepare_cached("RELEASE op")?.execute([])?;
            }
            // The caller rolls the whole transaction back.
            (false, Isolation::Shared) => return Ok(None),
            (false, Isolation::PerOperation) => {
                tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
            }
        }
        if outcome.ok() {
            applied.deltas.merge(&op_deltas);
        }
        if let Op::Inbound(.., seq) = op {
            applied.log.record(*seq, outcome.ok());
        }
        applied.outcomes.push(outcome);
    }
    drop(statements);
    update_depths(tx, &applied.deltas)?;
    if applied.log.applied != log.applied {
        tx.prepare_cached("UPDATE inbound_log SET applied = ?1 WHERE id = 0")?.execute([applied.log.applied as i64])?;
    }
    Ok(Some(applied))
}

/// How far the inbound log's records are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogProgress {
    /// Every record up to this one is committed.
    pub(super) applied: u64,
    /// A record failed to commit in this transaction: the records after it
    /// are not applied in it either.
    pub(super) stuck: bool,
}

impl LogProgress {
    fn record(&mut self, seq: u64, ok: bool) {
        if self.stuck {
            return;
        }
        if ok {
            self.applied = self.applied.max(seq);
        } else {
            self.stuck = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::store::pending::CommitNotice;
    use crate::store::{InlineRoute, NewInbound, RouteDecision, RoutedOutput, Status, schema};

    /// A message for the router `Router`, decided on receipt or not.
    fn inbound(n: usize, route: bool) -> NewInbound {
        let routed = route.then(|| InlineRoute {
            router: "Router".into(),
            decision: RouteDecision {
                status: Status::Completed,
                error: None,
                outputs: vec![RoutedOutput { target: "Out".into(), body: None, control_id: None }],
            },
        });
        NewInbound {
            targets: ["Router".to_owned()].into(),
            routed: routed.into_iter().collect(),
            ..super::super::tests::inbound(n)
        }
    }

    /// A connection to a new store with its schema, for applying groups
    /// by hand.
    fn migrated(dir: &std::path::Path) -> Connection {
        let mut conn = super::super::disk::open_connection(&dir.join("s.db")).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn
    }

    /// Within one group, a message queued for a router by an earlier
    /// operation is a backlog the next message's decision must wait behind,
    /// although the committed depth still says the queue is empty.
    #[test]
    fn a_decision_waits_behind_a_message_queued_earlier_in_the_same_group() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(dir.path());
        let queues = Queues::default();
        let reply = CommitNotice::nobody;
        let ops = vec![
            Op::Inbound(inbound(1, true), reply(), 1),
            Op::Inbound(inbound(2, false), reply(), 2),
            Op::Inbound(inbound(3, true), reply(), 3),
        ];
        conn.execute_batch("BEGIN").unwrap();
        let applied = apply_all(&conn, &ops, Isolation::Shared, &queues, LogProgress::default(), &FaultHook::default())
            .unwrap()
            .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let routed: Vec<Vec<String>> = applied.outcomes.into_iter().map(|o| o.committed().unwrap().routed).collect();
        assert_eq!(routed, [vec!["Router".to_owned()], vec![], vec![]]);
        let depth = |item: &str| applied.deltas.get("p", item);
        assert_eq!((depth("Router"), depth("Out")), (2, 1));
    }

    /// A group that finishes one message of a queue and queues another
    /// there leaves its depth as it was, and still reports the queue, so
    /// that its item is woken for the new one.
    #[test]
    fn a_queue_whose_depth_a_group_leaves_as_it_was_is_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(dir.path());
        let queues = Queues::default();
        let first = vec![Op::Inbound(super::super::tests::inbound(1), CommitNotice::nobody(), 1)];
        conn.execute_batch("BEGIN").unwrap();
        let applied =
            apply_all(&conn, &first, Isolation::Shared, &queues, LogProgress::default(), &FaultHook::default())
                .unwrap()
                .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let queued = applied.outcomes.into_iter().next().unwrap().committed().unwrap().queued[0];
        queues.adjust("p", "Out", 1);
        let ops = vec![
            Op::Finish(super::super::tests::completed(queued), oneshot::channel().0),
            Op::Inbound(super::super::tests::inbound(2), CommitNotice::nobody(), 2),
        ];
        conn.execute_batch("BEGIN").unwrap();
        let applied = apply_all(
            &conn,
            &ops,
            Isolation::Shared,
            &queues,
            LogProgress { applied: 1, stuck: false },
            &FaultHook::default(),
        )
        .unwrap()
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(applied.deltas.iter().collect::<Vec<_>>(), [("p", "Out", 0)]);
    }
}
