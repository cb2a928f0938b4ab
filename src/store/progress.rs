//! What the inbound log's thread and the writer share, kept apart from
//! both so that neither needs the other: how far the writer has committed
//! the log's records (the log writes over one of its files only once all
//! of it is committed), the bound on bytes handed to the writer and not yet
//! committed, and why the writer cannot commit, while it cannot.

use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use crate::sync::LockExt as _;
use tokio::sync::watch;

/// Bytes of received messages the writer has been handed and not yet
/// committed, at most, counted by
/// [`NewInbound::weight`](super::model::NewInbound::weight) (bodies and
/// bookkeeping). Acknowledgments no longer wait for the commit, so
/// without a bound a writer held up (a long checkpoint, a slow disk) would
/// let messages pile up in memory; with it, they wait for their
/// acknowledgment instead.
const IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;

/// What the log's thread, the writer and the store's handle share.
pub(super) struct Progress {
    /// The last record the writer has committed.
    pub(super) applied: AtomicU64,
    /// Bytes handed to the writer and not yet committed.
    pub(super) in_flight: InFlight,
    /// Why the writer cannot commit what it holds, while it cannot (see
    /// [`Store::commit_trouble`](super::Store::commit_trouble)).
    pub(super) trouble: watch::Sender<Option<String>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self { applied: AtomicU64::default(), in_flight: InFlight::default(), trouble: watch::Sender::new(None) }
    }
}

/// The bytes in flight between the log's thread and the writer.
#[derive(Default)]
pub(super) struct InFlight {
    state: Mutex<InFlightState>,
    space: Condvar,
}

#[derive(Default)]
struct InFlightState {
    bytes: usize,
    /// The store is closing: nothing waits for room any more.
    closing: bool,
}

impl InFlight {
    /// Waits until `n` more bytes fit; a batch always fits when nothing
    /// else is in flight.
    pub(super) fn reserve(&self, n: usize) {
        let mut state = self.state.lock_unpoisoned();
        while state.bytes > 0 && state.bytes + n > IN_FLIGHT_BYTES && !state.closing {
            state = self.space.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.bytes += n;
    }

    /// Called by the writer once messages of `n` bytes are committed.
    pub(super) fn release(&self, n: usize) {
        let mut state = self.state.lock_unpoisoned();
        state.bytes = state.bytes.saturating_sub(n);
        self.space.notify_all();
    }

    /// Lets a batch waiting for room go on, so that the log's thread can
    /// finish when the store closes while the writer cannot commit (its
    /// messages then wait in the log for the next start).
    pub(super) fn close(&self) {
        let mut state = self.state.lock_unpoisoned();
        state.closing = true;
        self.space.notify_all();
    }

    /// Bytes in flight now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.state.lock_unpoisoned().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_bytes_in_flight_are_bounded() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.reserve(IN_FLIGHT_BYTES * 2); // alone, a batch always fits
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || {
                in_flight.reserve(1);
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "reserved past the bound");
        in_flight.release(IN_FLIGHT_BYTES * 2);
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("released space is handed out");
        waiting.join().unwrap();
    }
}
