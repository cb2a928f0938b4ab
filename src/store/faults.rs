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
            _ => false,
        };
        refused.then(|| {
            rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_FULL),
                Some("database or disk is full (refused by the store's fault hook)".to_owned()),
            )
        })
    }
}
