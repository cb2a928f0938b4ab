//! Queue depths. Every queue's depth is a counter kept in memory, so that
//! reading it never touches the database, next to a wake-up for the item
//! that drains the queue. The writer changes the counters after each
//! commit, by what the committed transaction changed (its [`Deltas`]); the
//! same changes are persisted in the `queue_depth` table within that
//! transaction, from which the counters are loaded when the store opens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

/// Per-queue state kept in memory: the depth counter and a wake-up for the
/// item that drains it.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(super) depth: AtomicI64,
    pub(super) notify: Notify,
}

/// Queues by production, then by item: nested so that a lookup borrows the
/// names instead of building an owned key, since the writer looks queues up
/// for every message it commits.
type QueueMap = HashMap<String, HashMap<String, Arc<QueueState>>>;

#[derive(Debug, Default)]
pub(crate) struct Queues {
    map: RwLock<QueueMap>,
    /// Signalled whenever a depth changes (see
    /// [`Store::queue_depths_changed`](super::Store::queue_depths_changed)).
    pub(super) changed: Notify,
}

impl Queues {
    pub(super) fn get(&self, production: &str, item: &str) -> Arc<QueueState> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get(production).and_then(|items| items.get(item)) {
            return q.clone();
        }
        drop(map);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(production.to_owned()).or_default().entry(item.to_owned()).or_default().clone()
    }

    /// The committed depth of a queue.
    pub(crate) fn depth(&self, production: &str, item: &str) -> i64 {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(production).and_then(|items| items.get(item)).map_or(0, |q| q.depth.load(Ordering::Relaxed))
    }

    pub(crate) fn adjust(&self, production: &str, item: &str, delta: i64) {
        let q = self.get(production, item);
        q.depth.fetch_add(delta, Ordering::Relaxed);
        // A queue that shrank can show messages too: a read leaves out the
        // messages whose results are noted and not yet committed, and they
        // can fill its limit while the ones behind them wait.
        q.notify.notify_one();
        self.changed.notify_one();
    }
}

/// Queue depth changes, one entry per queue: those of one operation, or
/// of a group so far. A group touches a handful of queues however many
/// messages it holds, so looking one up stays cheap, and a queue's names
/// are copied once per group, not once per message.
#[derive(Default)]
pub(super) struct Deltas(Vec<(String, String, i64)>);

impl Deltas {
    pub(super) fn add(&mut self, production: &str, item: &str, delta: i64) {
        match self.0.iter_mut().find(|(p, i, _)| p == production && i == item) {
            Some(entry) => entry.2 += delta,
            None => self.0.push((production.to_owned(), item.to_owned(), delta)),
        }
    }

    pub(super) fn get(&self, production: &str, item: &str) -> i64 {
        self.0.iter().find(|(p, i, _)| p == production && i == item).map_or(0, |s| s.2)
    }

    /// Adds every entry of `other`. An entry whose sum comes to zero stays:
    /// its queue's item is woken for every entry after the commit, and a
    /// result committed next to a new message leaves the depth as it was
    /// while both change what the item can read.
    pub(super) fn merge(&mut self, other: &Deltas) {
        for (production, item, delta) in &other.0 {
            self.add(production, item, *delta);
        }
    }

    /// Zeroes every entry, keeping the queues for the next operation.
    pub(super) fn reset(&mut self) {
        for entry in &mut self.0 {
            entry.2 = 0;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.0.iter().map(|(p, i, d)| (p.as_str(), i.as_str(), *d))
    }
}

/// Queue depths as this transaction sees them: committed, plus the changes
/// of the operations before the current one.
pub(super) struct Depths<'a> {
    pub(super) committed: &'a Queues,
    pub(super) pending: &'a Deltas,
}

impl Depths<'_> {
    pub(super) fn is_empty(&self, production: &str, item: &str) -> bool {
        self.committed.depth(production, item) + self.pending.get(production, item) <= 0
    }
}
