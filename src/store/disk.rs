//! How the store meets the disk: the settings of its SQLite connections,
//! the thread that fsyncs the write-ahead log before answering the writes
//! that must survive a power cut, the checkpoints (on a connection and a
//! thread of their own), and the CPU priority of the background threads.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::StoreError;
use super::protocol::Done;

/// How long a connection of the store waits for a lock another holds.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Must be set before the first table exists to take effect.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Whatever the durability, commits are made durable by the store's
    // logs and its own sync thread (see the writer module), so SQLite
    // itself never waits for the disk at commit.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The bundled SQLite enforces foreign keys by default. The store keeps
    // its references itself (a body goes only once no header of its
    // session uses it), and nothing indexes `header.body_id` since
    // migration 5, so enforcing them made every purged body scan the whole
    // header table, and a purge batch hold the writer for seconds.
    conn.pragma_update(None, "foreign_keys", false)?;
    // After a burst the log is cut back to this size when it restarts.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    Ok(conn)
}

/// fsyncs the write-ahead log for every batch of answers it receives
/// (taking all that are waiting at once), then sends them.
pub(super) fn sync_loop(wal: &Path, rx: &std::sync::mpsc::Receiver<Vec<Done>>) {
    let mut file: Option<(File, u64)> = None;
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        sync_and_answer(wal, &mut file, batch);
    }
}

/// Syncs the log, then answers every operation of `batch`.
pub(super) fn sync_and_answer(wal: &Path, file: &mut Option<(File, u64)>, batch: Vec<Done>) {
    let result = sync_wal(wal, file);
    if let Err(e) = &result {
        tracing::error!(error = %e, "fsync of the write-ahead log failed; {} commits reported as failed", batch.len());
    }
    let failure = result.err().map(|e| format!("fsync failed: {e}"));
    for done in batch {
        done.send(failure.as_deref());
    }
}

/// fdatasync on any descriptor of a file flushes all of its written data;
/// the descriptor is reopened if SQLite replaced the file.
pub(super) fn sync_wal(wal: &Path, file: &mut Option<(File, u64)>) -> std::io::Result<()> {
    let inode = std::fs::metadata(wal)?.ino();
    match file {
        Some((_, ino)) if *ino == inode => {}
        _ => *file = Some((File::open(wal)?, inode)),
    }
    match file {
        Some((f, _)) => f.sync_data(),
        None => Ok(()),
    }
}

/// The nice value of the writer and checkpoint threads: the lowest CPU
/// priority, kept where the idle scheduling class is refused.
pub(super) const BACKGROUND_NICE: i32 = 19;

/// Gives the calling thread the lowest CPU priority: Linux's idle
/// scheduling class (`SCHED_IDLE`), and the highest nice value.
///
/// A received message is acknowledged once the inbound log has it, so with
/// `ack_mode: immediate` no sender waits for the writer's commits or the
/// checkpoints (with `application` a sender waits for the downstream
/// reply, which takes far longer than the commit before it). At normal
/// priority they take a core from the connection tasks just when a batch of
/// ACKs must go out and the next messages be read, and fewer messages then
/// make it into each sync of the log; at the lowest they run in the gaps.
///
/// The idle class does what a nice value alone does not: a core running
/// only idle-class threads counts as idle when a woken thread is placed,
/// so a connection task woken by the log's sync runs there at once instead
/// of waiting behind the other core's queue; with nice 19 alone the writer
/// still held its core until its time slice ran out or the scheduler
/// balanced the load (durable inbound at 64 connections: 81, 89 and 82 % of
/// the group reference at nice 19, 97, 92 and 97 % in the idle class, in
/// turns).
///
/// They cannot fall behind without bound: past the bytes allowed in flight,
/// acknowledgments wait for the writer, the connection tasks go idle and
/// the writer gets the CPU. Programs in other containers (or other login
/// sessions, through autogroups) share the CPU with this process as a
/// whole, whatever the priorities inside it; a CPU-bound program in the
/// same one can leave these threads too little, which is what
/// `store.background_priority: normal` is for.
pub(super) fn run_in_background() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        // Sets the class, and a nice value of its own choosing, which the
        // next call replaces.
        if let Err(e) = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            idle,
        ) {
            tracing::debug!(error = %e, "cannot put a store thread in the idle scheduling class");
        }
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE) {
            // Only a policy forbidding it (seccomp) refuses a lower
            // priority; the store works the same at any.
            tracing::debug!(error = %e, "cannot lower the priority of a store thread");
        }
    }
}

/// How long the checkpoint thread lets commits accumulate before it copies
/// them into the database: a few checkpoints a second under load, none when
/// idle.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(200);

/// Log frames (pages) beyond which the log is restarted from its beginning.
const RESTART_FRAMES: i64 = 4096;

/// How long after a failed checkpoint it is tried again, nudged or not.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// How often a checkpoint that keeps failing the same way is logged again.
const CHECKPOINT_FAILURE_LOG: Duration = Duration::from_secs(60);

/// Copies committed pages from the log into the database after each nudge
/// from the writer, until the writer is gone.
///
/// A passive checkpoint does the bulk of the copying without blocking
/// anyone, but under steady traffic the writer keeps appending meanwhile, so
/// it never catches up and the log would grow without bound. Once the log
/// is long, a restart checkpoint copies the few frames added since (holding
/// commits back only for that), after which the writer starts the log from
/// the beginning again.
///
/// A checkpoint that failed (a full disk: the database cannot grow) is
/// tried again every [`CHECKPOINT_RETRY`] even when nothing is committed,
/// since the log cannot start over until one succeeds; its warning is
/// logged once, then once a minute while it keeps failing.
pub(super) fn checkpoint_loop(conn: &Connection, nudged: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    // While checkpoints fail: the error, when it is logged next, and how
    // many failed since it was.
    let mut failing: Option<(String, std::time::Instant, u64)> = None;
    loop {
        let woken = match failing {
            None => nudged.recv().is_ok(),
            Some(_) => !matches!(nudged.recv_timeout(CHECKPOINT_RETRY), Err(RecvTimeoutError::Disconnected)),
        };
        if !woken {
            return;
        }
        std::thread::sleep(CHECKPOINT_DELAY);
        while nudged.try_recv().is_ok() {}
        let result = checkpoint(conn, "PASSIVE").and_then(|frames| match frames > RESTART_FRAMES {
            true => checkpoint(conn, "RESTART").map(drop),
            false => Ok(()),
        });
        match (result, &mut failing) {
            (Ok(()), failing) => {
                if let Some((error, _, repeats)) = failing.take() {
                    tracing::info!(%error, "checkpoints of the write-ahead log succeed again after {repeats} more failures");
                }
            }
            (Err(e), Some((error, log_at, repeats)))
                if *error == e.to_string() && std::time::Instant::now() < *log_at =>
            {
                *repeats += 1;
            }
            (Err(e), failing) => {
                let repeats = failing.as_ref().map_or(0, |f| f.2);
                tracing::warn!(error = %e, "checkpoint of the write-ahead log failed ({repeats} more since the last warning); tried again every {CHECKPOINT_RETRY:?}");
                *failing = Some((e.to_string(), std::time::Instant::now() + CHECKPOINT_FAILURE_LOG, 0));
            }
        }
    }
}

/// Runs one checkpoint; returns the length of the log in frames.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
}

/// Returns up to `pages` free pages to the file system; when none are left,
/// checkpoints the write-ahead log so the main file actually shrinks.
pub(super) fn incremental_vacuum(conn: &Connection, pages: u32) -> rusqlite::Result<u64> {
    let free_before: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let free_after: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let freed = (free_before - free_after).max(0) as u64;
    if freed == 0 {
        // The checkpoint thread may be running a checkpoint of its own, in
        // which case this one reports busy at once: try again shortly.
        for _ in 0..50 {
            let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(freed)
}
