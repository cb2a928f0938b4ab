//! A cap on how often one kind of warning is written.
//!
//! What a peer sends can make the engine warn: junk between frames, a
//! failed TLS handshake, a connection that says nothing. A peer that does
//! so on purpose, thousands of times a second, must not fill the log or
//! the event table (which lives in the store, on the same disk as the
//! messages) with one line per attempt (invariant 4). So each kind of
//! warning gets a [`RateLimit`]: a few lines per interval go through, the
//! rest are counted, and the next line that goes through says how many
//! were left out. Nothing is lost but the repetition.
//!
//! The store uses one too: a warning that the event log dropped an entry
//! repeats for as long as its writer is saturated.

use crate::sync::LockExt as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` lines per `interval`; the others are counted and
/// reported with the next line let through.
#[derive(Debug)]
pub(crate) struct RateLimit {
    burst: u32,
    interval: Duration,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the current interval began; `None` before the first line.
    started: Option<Instant>,
    /// Lines let through in the current interval.
    passed: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

/// A line that may be written, with the count of similar lines held back
/// since the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) suppressed: u64,
}

impl Pass {
    /// ` (N similar suppressed)` to append to the line, or nothing.
    pub(crate) fn suffix(self) -> String {
        match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} similar suppressed)"),
        }
    }
}

impl RateLimit {
    /// `burst` lines per `interval` (a `burst` of 0 is taken as 1: a kind
    /// of warning is never silenced entirely).
    pub(crate) const fn new(burst: u32, interval: Duration) -> Self {
        let burst = if burst == 0 { 1 } else { burst };
        Self { burst, interval, window: Mutex::new(Window { started: None, passed: 0, suppressed: 0 }) }
    }

    /// Whether a line may be written now.
    pub(crate) fn check(&self) -> Option<Pass> {
        self.check_at(Instant::now())
    }

    /// [`check`](Self::check) at a given time, so that tests need no clock.
    pub(crate) fn check_at(&self, now: Instant) -> Option<Pass> {
        let mut window = self.window.lock_unpoisoned();
        if window.started.is_none_or(|started| now.saturating_duration_since(started) >= self.interval) {
            window.started = Some(now);
            window.passed = 0;
        }
        if window.passed < self.burst {
            window.passed += 1;
            Some(Pass { suppressed: std::mem::take(&mut window.suppressed) })
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
            None
        }
    }

    /// Takes the count of lines held back and not yet reported, for a last
    /// line when the source of the warnings goes away.
    pub(crate) fn take_suppressed(&self) -> u64 {
        std::mem::take(&mut self.window.lock_unpoisoned().suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn lets_a_burst_through_then_counts_what_it_holds_back() {
        let limit = RateLimit::new(3, 10 * SECOND);
        let t0 = Instant::now();
        let passed: Vec<_> = (0..10).map(|i| limit.check_at(t0 + i * Duration::from_millis(10))).collect();
        assert_eq!(passed[..3], [Some(Pass { suppressed: 0 }); 3]);
        assert!(passed[3..].iter().all(Option::is_none), "{passed:?}");
        // The next interval's first line carries the count.
        let next = limit.check_at(t0 + 10 * SECOND);
        assert_eq!(next, Some(Pass { suppressed: 7 }));
        assert_eq!(next.map(Pass::suffix).as_deref(), Some(" (7 similar suppressed)"));
        assert_eq!(limit.check_at(t0 + 10 * SECOND), Some(Pass { suppressed: 0 }));
    }

    #[test]
    fn a_flood_writes_burst_lines_per_interval() {
        let limit = RateLimit::new(5, 60 * SECOND);
        let t0 = Instant::now();
        // A million warnings over ten minutes, one every 600 µs.
        let mut written = 0u64;
        let mut reported = 0u64;
        for i in 0..1_000_000u32 {
            if let Some(pass) = limit.check_at(t0 + i * Duration::from_micros(600)) {
                written += 1;
                reported += pass.suppressed;
            }
        }
        assert_eq!(written, 50, "5 lines in each of 10 intervals");
        assert_eq!(reported + written + limit.take_suppressed(), 1_000_000, "every warning is accounted for");
        assert_eq!(limit.take_suppressed(), 0);
    }

    #[test]
    fn the_suffix_is_empty_when_nothing_was_held_back() {
        assert_eq!(Pass { suppressed: 0 }.suffix(), "");
        assert_eq!(Pass { suppressed: 1 }.suffix(), " (1 similar suppressed)");
    }

    #[test]
    fn a_burst_of_zero_still_lets_one_line_through() {
        let limit = RateLimit::new(0, SECOND);
        let t0 = Instant::now();
        assert!(limit.check_at(t0).is_some());
        assert!(limit.check_at(t0).is_none());
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_reopen_the_window() {
        let limit = RateLimit::new(1, SECOND);
        let t0 = Instant::now() + 10 * SECOND;
        assert!(limit.check_at(t0).is_some());
        assert!(limit.check_at(t0 - 5 * SECOND).is_none());
    }
}
