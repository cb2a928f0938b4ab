//! Hands downstream replies to the services that wait for them
//! (`ack_mode: application`).
//!
//! The first operation to get a reply for a session posts it here; the
//! service that received the session's message takes it and relays it to
//! its sender. A reply that arrives before the service asks for it is kept
//! for a short while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::LockExt as _;
use bytes::Bytes;
use tokio::sync::oneshot;

/// How long an unclaimed reply is kept.
const KEEP: Duration = Duration::from_secs(120);

enum Slot {
    Waiting(oneshot::Sender<Bytes>),
    Arrived(Bytes, Instant),
}

/// Replies by session id.
#[derive(Default)]
pub(crate) struct ReplyBoard {
    slots: Mutex<HashMap<i64, Slot>>,
    /// Only productions with an application-mode service keep replies.
    pub(crate) enabled: bool,
}

impl ReplyBoard {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { slots: Mutex::default(), enabled }
    }

    /// Posts the first reply of a session; later ones are ignored.
    pub(crate) fn post(&self, session: i64, reply: Bytes) {
        if !self.enabled {
            return;
        }
        let mut slots = self.slots.lock_unpoisoned();
        slots.retain(|_, s| !matches!(s, Slot::Arrived(_, at) if at.elapsed() > KEEP));
        match slots.remove(&session) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(reply);
            }
            Some(arrived @ Slot::Arrived(..)) => {
                slots.insert(session, arrived);
            }
            None => {
                slots.insert(session, Slot::Arrived(reply, Instant::now()));
            }
        }
    }

    /// Waits up to `timeout` for the session's first reply.
    pub(crate) async fn wait(&self, session: i64, timeout: Duration) -> Option<Bytes> {
        let rx = {
            let mut slots = self.slots.lock_unpoisoned();
            if let Some(Slot::Arrived(reply, _)) = slots.remove(&session) {
                return Some(reply);
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(session, Slot::Waiting(tx));
            rx
        };
        let reply = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        if reply.is_none() {
            self.slots.lock_unpoisoned().remove(&session);
        }
        reply
    }
}
