//! A switch that makes chosen commits fail the way a full disk does, for
//! tests and fault drills.
//!
//! What the engine does when the store cannot commit (hold received
//! messages in order, keep delivery results in the delivery log, trouble
//! the production, resume by itself) is behaviour worth testing, but a real
//! full disk cannot pick one message out of a stream, and changing the
//! schema under a running store tests a store that does not exist. The
//! hook refuses an operation inside the writer's transaction, after its
//! SQL ran, with SQLite's own "database or disk is full" error, so the
//! writer takes exactly the path a full disk sends it down: the
//! transaction (or the operation's savepoint) is rolled back and the
//! operation is answered, held or kept for later as usual.
//!
//! [`Refuse::DiskFull`] goes further, for the whole store: every commit
//! fails, and SQLite's transaction is rolled back under the writer as SQLite
//! itself rolls it back when a write to a full disk fails, and appends to
//! the delivery log fail with `ENOSPC`. That is what a full disk does to
//! the store while its inbound log (whose files never grow) still takes
//! messages, without needing a small file system to fill.
//!
//! Disarmed, it costs the writer one atomic load per operation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ffi};

use super::protocol::Op;
use crate::sync::LockExt as _;

/// Which commits to refuse (see [`FaultHook::refuse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refuse {
    /// Committing a received message, or a router's results for a
    /// message, whose control id (MSH-10) is this.
    Message {
        /// The control id to refuse.
        control_id: String,
    },
    /// Committing any delivery result: a message completed, failed,
    /// suspended, or put back in its queue for another attempt.
    Results,
    /// Everything, as a full disk refuses it: every commit, with the
    /// transaction rolled back by the time the writer hears of it (SQLite
    /// rolls a transaction back itself when a write fails with
    /// `SQLITE_FULL`), and every append to the delivery log.
    DiskFull,
}

/// Makes the store's commits fail on demand; see the module doc. Cloned
/// handles share one switch.
#[derive(Clone, Default)]
pub struct FaultHook {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    armed: AtomicBool,
    refuse: Mutex<Option<Refuse>>,
}

impl FaultHook {
    /// From now on, refuses the commits `what` names, until [`clear`]ed.
    /// Replaces what was refused before.
    ///
    /// [`clear`]: FaultHook::clear
    pub fn refuse(&self, what: Refuse) {
        *self.inner.refuse.lock_unpoisoned() = Some(what);
        self.inner.armed.store(true, Ordering::Release);
    }

    /// Lets every commit through again.
    pub fn clear(&self) {
        self.inner.armed.store(false, Ordering::Release);
        *self.inner.refuse.lock_unpoisoned() = None;
    }

    /// The error to fail `op` with, if it is refused. `tx` is the writer's
    /// open transaction, used to look up a routed message's control id.
    pub(super) fn check(&self, tx: &Connection, op: &Op) -> Option<rusqlite::Error> {
        if !self.inner.armed.load(Ordering::Acquire) {
            return None;
        }
        let refuse = self.inner.refuse.lock_unpoisoned().clone()?;
        let refused = match (&refuse, op) {
            (Refuse::Message { control_id }, Op::Inbound(inbound, ..)) => {
                inbound.control_id.as_deref() == Some(control_id)
            }
            (Refuse::Message { control_id }, Op::Routed(all, _)) => all.iter().any(|routed| {
                let source: Option<String> = tx
                    .query_row("SELECT control_id FROM header WHERE id = ?1", [routed.header_id], |r| r.get(0))
                    .ok()
                    .flatten();
                source.as_deref() == Some(control_id)
                    || routed.decision.outputs.iter().any(|o| o.control_id.as_deref() == Some(control_id))
            }),
            (Refuse::Results, Op::Finish(..) | Op::FinishNoted(..)) => true,
            (Refuse::DiskFull, _) => {
                // What SQLite does after a write that the disk refused.
                if !tx.is_autocommit() {
                    let _ = tx.execute_batch("ROLLBACK");
                }
                true
            }
            _ => false,
        };
        refused.then(|| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_FULL),
                Some("database or disk is full (refused by the store's fault hook)".to_owned()),
            )
        })
    }

    /// Fails with `ENOSPC` while [`Refuse::DiskFull`] is armed: called
    /// before an append to the delivery log.
    pub(super) fn check_append(&self) -> std::io::Result<()> {
        if !self.inner.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        match *self.inner.refuse.lock_unpoisoned() {
            Some(Refuse::DiskFull) => Err(std::io::Error::from(rustix::io::Errno::NOSPC)),
            _ => Ok(()),
        }
    }
}
