//! How long deliveries take, per operation, as a histogram for `/metrics`:
//! from the first attempt at a message to its final result (an `mllp_out`
//! waits for the reply, retries included; a `file_out` writes and syncs
//! the file).
//!
//! Kept in atomics beside the item's counters, so a delivery adds three
//! relaxed increments and no lock; not part of the status snapshot, which
//! Home Assistant and the UI receive on every change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: a local lab system answers in
/// a few milliseconds, a remote one over TLS in tens, a struggling one in
/// seconds.
pub const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A histogram of delivery times.
#[derive(Debug, Default)]
pub struct Latency {
    /// One count per bucket, and the last for anything slower.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a [`Latency`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Per bucket of [`BUCKETS`] (not cumulative), then the rest.
    pub counts: Vec<u64>,
    /// Every delivery counted.
    pub count: u64,
    /// Their total time, in seconds.
    pub sum_seconds: f64,
}

impl Latency {
    /// Counts one delivery that took `took`.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        LatencySnapshot {
            count: counts.iter().sum(),
            counts,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_land_in_their_buckets() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(500));
        latency.observe(Duration::from_millis(1));
        latency.observe(Duration::from_millis(40));
        latency.observe(Duration::from_secs(60));
        let s = latency.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.counts[0], 2, "up to 1 ms, bounds included");
        assert_eq!(s.counts[5], 1, "25 to 50 ms");
        assert_eq!(s.counts[BUCKETS.len()], 1, "slower than the last bound");
        assert!((s.sum_seconds - 60.0415).abs() < 1e-6, "{}", s.sum_seconds);
    }
}
