//! Locks that outlive a panic.
//!
//! A task that panics while it holds a `Mutex` poisons it. Every lock in
//! Switchboard guards plain data (counters, maps, a connection) that stays
//! consistent at each step, so the data is still good: taking the lock
//! anyway keeps one failed task from stopping the whole engine.

use std::sync::{Mutex, MutexGuard};

/// [`Mutex::lock`], recovering the guard from a poisoned lock.
pub(crate) trait LockExt<T> {
    /// Locks, whether or not another thread panicked holding the lock.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
