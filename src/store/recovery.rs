//! What the previous run left to commit, applied when the store opens
//! before anything else runs: delivery results noted in the delivery log
//! but not committed, and received messages acknowledged from the inbound
//! log but not committed. Each is committed as the writer would have
//! committed it.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::delivery_log::Noted;
use super::error::StoreError;
use super::faults::FaultHook;
use super::group::{Isolation, LogProgress, apply_all};
use super::inbound_log::Record;
use super::pending::CommitNotice;
use super::protocol::{Op, Outcome};
use super::queues::Queues;
use super::sql::{now_millis, store_reply};

/// Applies delivery results noted but not committed before the previous
/// run ended, with their queue depth changes.
pub(super) fn apply_noted(conn: &mut Connection, noted: &[Noted]) -> Result<(), StoreError> {
    if noted.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut update = tx.prepare(
            "UPDATE header SET status = ?1, attempts = ?2, updated_at = ?3, error_text = ?4
             WHERE id = ?5 AND status IN ('queued', 'delivering') RETURNING production, target",
        )?;
        let mut depth = tx.prepare("UPDATE queue_depth SET depth = depth - 1 WHERE production = ?1 AND item = ?2")?;
        let now = now_millis();
        for n in noted.iter().filter(|n| !n.status.is_pending()) {
            let queue: Option<(String, String)> = update
                .query_row(params![n.status.as_str(), n.attempts as i64, now, n.error, n.header_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((production, target)) = queue else { continue };
            depth.execute(params![production, target])?;
            if let Some(data) = &n.reply {
                store_reply(&tx, n.header_id, now, data)?;
            }
        }
    }
    tx.commit()?;
    tracing::info!(results = noted.len(), "delivery results from the previous run recorded");
    Ok(())
}

/// Commits the records of the inbound log after `applied` (acknowledged,
/// but not committed before the previous run ended) in one transaction, as
/// the writer would have; returns the last record now applied. Fails, with
/// nothing committed, if any record cannot be.
pub(super) fn replay(
    conn: &Connection,
    records: Vec<Record>,
    queues: &Queues,
    applied: u64,
) -> Result<u64, StoreError> {
    let ops: Vec<Op> = records
        .into_iter()
        .filter(|r| r.seq > applied)
        .map(|r| Op::Inbound(r.inbound, CommitNotice::nobody(), r.seq))
        .collect();
    if ops.is_empty() {
        return Ok(applied);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let refuse = |seq, reason| {
        let _ = conn.execute_batch("ROLLBACK");
        Err(StoreError::InboundLog { seq, reason })
    };
    let progress = LogProgress { applied, stuck: false };
    let done = match apply_all(conn, &ops, Isolation::PerOperation, queues, progress, &FaultHook::default()) {
        Ok(Some(done)) => done,
        // Not reached: the per-operation pass never gives up.
        Ok(None) => return refuse(applied + 1, "the transaction failed".to_owned()),
        Err(e) => return refuse(applied + 1, e.to_string()),
    };
    // The first record that cannot be committed, and why.
    for (outcome, op) in done.outcomes.iter().zip(&ops) {
        if let (Outcome::Committed(Err(e)), Op::Inbound(.., seq)) = (outcome, op) {
            return refuse(*seq, e.to_string());
        }
    }
    conn.execute_batch("COMMIT")?;
    for (production, item, delta) in done.deltas.iter() {
        queues.adjust(production, item, delta);
    }
    tracing::info!(messages = ops.len(), "received messages committed from the inbound log");
    Ok(done.log.applied)
}
