//! What the store says when SQLite finds its database file damaged.
//!
//! A damaged database cannot be repaired in place without guessing at what
//! it held: rows on a bad page are gone, and an index that disagrees with
//! its table would send messages twice or never. So when SQLite calls the
//! file corrupt while the store opens, the store refuses to open, names the
//! file, says what SQLite's own check found there, and points at the way
//! back: the last backup.
//!
//! Opening reads only a few pages, so damage elsewhere (a table's page
//! that no query at start touches) shows only when something reads it.
//! Checking every page before `ready` would hold a large store's start up
//! for seconds, so the check runs once the store is open, in the
//! background ([`BackgroundCheck`]); what it finds is logged and
//! offered as [`Store::damage`](super::Store::damage), and a close stops it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use tokio::sync::watch;

use super::disk::run_in_background;
use super::error::StoreError;
use crate::sync::LockExt as _;

/// How long the background check waits for a lock another connection
/// holds for a moment.
const CHECK_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Lines of `PRAGMA integrity_check` reported; the first few say where.
const FINDINGS: usize = 10;

/// Turns an error met while opening the store into
/// [`StoreError::Damaged`] when SQLite called the file corrupt or not a
/// database, with what its integrity check finds; other errors pass.
pub(super) fn check(path: &Path, error: StoreError) -> StoreError {
    let StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, ref message)) = error else { return error };
    if !matches!(failure.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) {
        return error;
    }
    let mut found = vec![message.clone().unwrap_or_else(|| failure.to_string())];
    match integrity_check(path) {
        Ok(lines) => found.extend(lines),
        Err(e) => found.push(format!("PRAGMA integrity_check cannot run: {e}")),
    }
    tracing::error!(file = %path.display(), found = %found.join("; "), "the message store is damaged");
    StoreError::Damaged { path: path.to_owned(), found: found.join("; ") }
}

/// The first findings of `PRAGMA integrity_check`, on a read-only
/// connection that changes nothing.
fn integrity_check(path: &Path) -> rusqlite::Result<Vec<String>> {
    let conn = open_read_only(path)?;
    let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({FINDINGS})"))?;
    let lines = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.into_iter().map(|line| format!("integrity_check: {line}")).collect())
}

/// The check that runs after the store opened: what it found, and the
/// way to stop it when the store closes.
pub(super) struct BackgroundCheck {
    /// What it found once it found damage; `None` until then and when
    /// the file is sound.
    pub(super) found: watch::Receiver<Option<String>>,
    running: Mutex<Option<(InterruptHandle, std::thread::JoinHandle<()>)>>,
}

impl BackgroundCheck {
    /// Starts `PRAGMA quick_check` on a read-only connection and a thread
    /// of its own (at the lowest priority with `low_priority`).
    pub(super) fn start(path: &Path, low_priority: bool) -> Self {
        let (tx, found) = watch::channel(None);
        // A checkpoint that truncates the write-ahead log turns readers
        // away for a moment; the check waits rather than giving up.
        let conn = match open_read_only(path).and_then(|conn| conn.busy_timeout(CHECK_BUSY_WAIT).map(|()| conn)) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "the check of the message store cannot open the file");
                return Self { found, running: Mutex::new(None) };
            }
        };
        let interrupt = conn.get_interrupt_handle();
        let path = path.to_owned();
        let spawned = std::thread::Builder::new().name("store-check".into()).spawn(move || {
            if low_priority {
                run_in_background();
            }
            if let Some(found) = findings(&conn, &path) {
                let _ = tx.send(Some(found));
            }
        });
        let running = match spawned {
            Ok(thread) => Some((interrupt, thread)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot start the check of the message store");
                None
            }
        };
        Self { found, running: Mutex::new(running) }
    }

    /// Interrupts the check if it still runs and waits for its thread, so
    /// that its connection (and the read transaction a check holds, which
    /// keeps checkpoints from finishing) is gone once the store is closed.
    pub(super) fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        let (interrupt, thread) = self.running.lock_unpoisoned().take()?;
        interrupt.interrupt();
        Some(thread)
    }
}

/// What `PRAGMA quick_check` finds wrong, logged; `None` when the file is
/// sound or the check did not finish (interrupted by a close).
fn findings(conn: &Connection, path: &Path) -> Option<String> {
    let found = match quick_check(conn) {
        Ok(lines) if lines.iter().all(|line| line == "ok") => return None,
        Ok(lines) => lines.join("; "),
        Err(rusqlite::Error::SqliteFailure(failure, message))
            if matches!(failure.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            message.unwrap_or_else(|| failure.to_string())
        }
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => return None,
        Err(e) => {
            tracing::info!(error = %e, "the check of the message store for damage did not finish");
            return None;
        }
    };
    tracing::error!(
        file = %path.display(),
        %found,
        "the message store is damaged: PRAGMA quick_check found: {found}. Messages on the damaged pages cannot be read or changed; restore the last backup (see the error Switchboard gives when it cannot open a damaged store)"
    );
    Some(found)
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({FINDINGS})"))?;
    stmt.query_map([], |r| r.get::<_, String>(0))?.collect()
}
