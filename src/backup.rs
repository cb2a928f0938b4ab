//! Backups of the message store: a consistent copy taken while the engine
//! runs, and what becomes of it at the next start.
//!
//! Home Assistant backs up the add-on's data folder (`/data`) while the
//! add-on runs, file by file. Copied that way, the store would not restore:
//! the database, its write-ahead log and the inbound and delivery logs
//! change under the copy, each at a different moment. So the add-on's
//! `config.yaml` leaves the live files out of backups (`backup_exclude`:
//! `switchboard.db` and `switchboard.db-*`) and, before each backup
//! (`backup_pre`), `switchboard backup` writes one file,
//! `switchboard-backup.db`, with everything acknowledged up to that moment;
//! after the backup (`backup_post`), `switchboard backup --remove` deletes
//! it again.
//!
//! # The copy
//!
//! [`copy`] works from outside the process that writes the store, as the
//! Supervisor's `backup_pre` runs it, and never stops it:
//!
//! 1. The store's logs (every `switchboard.db-*` file but SQLite's own) are
//!    copied first. A message acknowledged before this moment is in the
//!    inbound log, which keeps a record until the database holds it, so it
//!    is either in the copied log or already in the database.
//! 2. Then the database, with SQLite's online backup API in one step: one
//!    read transaction, a consistent snapshot that the store's writer goes
//!    on committing beside (readers and the writer do not block each other
//!    in WAL mode). Everything committed before step 1 is in it.
//! 3. The copied database is opened as a store, beside its copied logs:
//!    the store's own recovery commits what the logs hold and the database
//!    does not (each inbound record once, by its sequence number; each
//!    delivery result only on a message still waiting for it), exactly as
//!    after a crash. Messages that were being delivered go back to their
//!    queue.
//! 4. The result is folded into one file (write-ahead log checkpointed,
//!    rollback journal mode), checked with `PRAGMA quick_check`, synced,
//!    and renamed into place, so a backup never holds half a copy.
//!
//! A message acknowledged before the copy started is in it; one
//! acknowledged while it runs may be. Delivery results noted after step 1
//! are missing, so their messages are delivered again after a restore
//! (at least once, as after a crash). While step 2 runs, the store's
//! checkpoints cannot pass the snapshot, so its write-ahead log grows by
//! the traffic of those seconds. The copy needs as much free disk as the
//! database, plus the logs (32 MiB), for as long as the backup runs.
//!
//! # After a restore, and while stopped
//!
//! A restored data folder holds `switchboard-backup.db` and none of the
//! live files: [`restore_from_copy`], at the start of `switchboard run`,
//! makes the copy the store. When both exist, the live store is the newer
//! and the copy is removed. A backup taken while the add-on is stopped runs
//! no `backup_pre`, and the live files are left out of it; so after a
//! graceful stop, [`keep_copy_at_rest`] gives the store's file its second
//! name, `switchboard-backup.db` (a hard link: no space, no time), once the
//! write-ahead log is folded into it. A backup taken while the add-on is
//! stopped after a crash holds no store: start the add-on once (it recovers
//! the store) before such a backup.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::store::{Durability, Store, StoreError, StoreOptions};

/// The store's database in a data folder, as `switchboard run` names it.
pub const STORE_FILE: &str = "switchboard.db";
/// The consistent copy that backups hold.
pub const COPY_FILE: &str = "switchboard-backup.db";
/// Where [`copy`] works: beside the store, under a name that backups leave
/// out (`switchboard.db-*`), so that a copy cut short never reaches one.
const WORK_DIR: &str = "switchboard.db-backup";
/// Held while a copy is taken, so that two never share the work folder.
const LOCK_FILE: &str = "switchboard.db-backup.lock";
/// The at-rest link's name before it replaces an older copy.
const LINK_FILE: &str = "switchboard.db-backup.link";
/// Files beside the database that SQLite itself keeps: the database copy
/// takes what they hold, so they are not copied.
const SQLITE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// How long the copy waits for SQLite's locks in all.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Why a backup step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be read, written, renamed or removed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The copy could not be opened as a store, or its logs not committed.
    #[error("the copy {path} does not open as a store: {source}")]
    Store {
        /// The copy.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The copy failed its check.
    #[error("the copy {path} failed its check: {report}")]
    Check {
        /// The copy.
        path: PathBuf,
        /// What `PRAGMA quick_check` said.
        report: String,
    },
    /// SQLite stayed busy.
    #[error("{path}: the database stayed busy for {waited:?}")]
    Busy {
        /// The database.
        path: PathBuf,
        /// How long it was given.
        waited: Duration,
    },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::File { path: path.to_owned(), source }
}

fn sqlite_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite { path: path.to_owned(), source }
}

/// What [`copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Copied {
    /// The copy was written.
    Written {
        /// Its path.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
        /// How long it took.
        elapsed: Duration,
    },
    /// There is no store in the folder yet: nothing to back up.
    NoStore,
    /// The store exists only as its copy (restored, not yet started), which
    /// a backup takes as it is.
    OnlyTheCopy(PathBuf),
}

/// Writes `switchboard-backup.db` in `data_dir`: a consistent copy of the
/// store, taken without stopping whoever writes it (see the module doc).
pub async fn copy(data_dir: &Path) -> Result<Copied, BackupError> {
    let data_dir = data_dir.to_owned();
    let db = data_dir.join(STORE_FILE);
    let target = data_dir.join(COPY_FILE);
    if !db.exists() {
        return Ok(if target.exists() { Copied::OnlyTheCopy(target) } else { Copied::NoStore });
    }
    let started = Instant::now();
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(file_error(&lock_path))?;
    let lock = blocking(&lock_path, move || lock.lock().map(|()| lock)).await?.map_err(file_error(&lock_path))?;
    let work = data_dir.join(WORK_DIR);
    let result = async {
        let copied = blocking(&work, {
            let (db, work) = (db.clone(), work.clone());
            move || snapshot(&db, &work)
        })
        .await??;
        fold_logs_in(&copied).await?;
        blocking(&target, {
            let target = target.clone();
            move || finish(&copied, &target)
        })
        .await?
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    drop(lock);
    Ok(Copied::Written { path: target, bytes: result?, elapsed: started.elapsed() })
}

/// Runs blocking file and SQLite work off the async threads.
async fn blocking<T: Send + 'static>(path: &Path, work: impl FnOnce() -> T + Send + 'static) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::File { path: path.to_owned(), source: std::io::Error::other(e) })
}

/// Steps 1 and 2: the logs, then the database, into a fresh work folder.
/// Returns the copied database.
fn snapshot(db: &Path, work: &Path) -> Result<PathBuf, BackupError> {
    match std::fs::remove_dir_all(work) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(work)(e)),
    }
    std::fs::create_dir_all(work).map_err(file_error(work))?;
    for log in store_logs(db)? {
        let to = work.join(log.file_name().unwrap_or_default());
        std::fs::copy(&log, &to).map_err(file_error(&log))?;
    }
    let copied = work.join(STORE_FILE);
    let from = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite_error(db))?;
    from.busy_timeout(Duration::from_secs(10)).map_err(sqlite_error(db))?;
    let mut to = Connection::open(&copied).map_err(sqlite_error(&copied))?;
    let backup = Backup::new(&from, &mut to).map_err(sqlite_error(&copied))?;
    let deadline = Instant::now() + BUSY_WAIT;
    // All pages in one step: one read transaction, so the copy is one
    // snapshot. Stepping a few pages at a time would start over at every
    // commit of the running store and might never end.
    loop {
        match backup.step(-1).map_err(sqlite_error(db))? {
            StepResult::Done => break,
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            StepResult::Busy | StepResult::Locked => {
                return Err(BackupError::Busy { path: db.to_owned(), waited: BUSY_WAIT });
            }
            _ => {}
        }
    }
    Ok(copied)
}

/// The store's logs beside `db`: every `<db>-*` file but SQLite's own and
/// the backup's.
fn store_logs(db: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let prefix = format!("{}-", db.file_name().unwrap_or_default().to_string_lossy());
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(file_error(dir))? {
        let entry = entry.map_err(file_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == LOCK_FILE || name == LINK_FILE;
        let sqlite = SQLITE_SUFFIXES.iter().any(|s| name.ends_with(s));
        if name.starts_with(&prefix) && !ours && !sqlite && entry.file_type().is_ok_and(|t| t.is_file()) {
            logs.push(entry.path());
        }
    }
    logs.sort();
    Ok(logs)
}

/// Step 3: the store's recovery commits what the copied logs hold.
async fn fold_logs_in(copied: &Path) -> Result<(), BackupError> {
    let options = StoreOptions { durability: Durability::Full, low_background_priority: false };
    let (store, _) =
        Store::open(copied, options).map_err(|source| BackupError::Store { path: copied.to_owned(), source })?;
    store.close().await;
    drop(store);
    Ok(())
}

/// Step 4: one checked file, synced and renamed into place. Returns its size.
fn finish(copied: &Path, target: &Path) -> Result<u64, BackupError> {
    {
        let conn = Connection::open(copied).map_err(sqlite_error(copied))?;
        conn.busy_timeout(Duration::from_secs(1)).map_err(sqlite_error(copied))?;
        fold_wal(&conn, copied, BUSY_WAIT)?;
        // Out of WAL mode only once no other connection is open. The
        // store's are all closed by now (its close joins its threads, and
        // its last handle is dropped); the wait covers another program
        // that has the copy open, such as someone looking into it.
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            match conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get::<_, String>(0)) {
                Ok(mode) if mode.eq_ignore_ascii_case("delete") => break,
                Ok(_) => {}
                Err(e) if is_busy(&e) => {}
                Err(e) => return Err(sqlite_error(copied)(e)),
            }
            if Instant::now() >= deadline {
                return Err(BackupError::Busy { path: copied.to_owned(), waited: BUSY_WAIT });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let report: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sqlite_error(copied))?;
        if report != "ok" {
            return Err(BackupError::Check { path: copied.to_owned(), report });
        }
    }
    let file = File::open(copied).map_err(file_error(copied))?;
    file.sync_all().map_err(file_error(copied))?;
    let bytes = file.metadata().map_err(file_error(copied))?.len();
    std::fs::rename(copied, target).map_err(file_error(target))?;
    sync_dir(target)?;
    Ok(bytes)
}

/// Copies the whole write-ahead log into the database and empties it, so
/// that the database file alone holds everything. A checkpoint held up by
/// another connection's checkpoint or reader reports busy, and is tried
/// again for a while: another program may have the file open for a
/// moment.
fn fold_wal(conn: &Connection, db: &Path, wait: Duration) -> Result<(), BackupError> {
    let deadline = Instant::now() + wait;
    loop {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if is_busy(&e) => {}
            Err(e) => return Err(sqlite_error(db)(e)),
        }
        if Instant::now() >= deadline {
            return Err(BackupError::Busy { path: db.to_owned(), waited: wait });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SQLite's "busy" and "locked": another connection holds what is needed
/// for now.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Makes a rename or a removal in `path`'s folder durable.
fn sync_dir(path: &Path) -> Result<(), BackupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(file_error(dir))
}

/// Removes the copy after the backup has taken it (`backup_post`): it is
/// stale from now on and takes as much space as the store. Kept when the
/// store exists only as the copy. Returns whether it removed it.
pub fn remove_copy(data_dir: &Path) -> Result<bool, BackupError> {
    let copy = data_dir.join(COPY_FILE);
    if !data_dir.join(STORE_FILE).exists() || !copy.exists() {
        return Ok(false);
    }
    std::fs::remove_file(&copy).map_err(file_error(&copy))?;
    Ok(true)
}

/// What [`restore_from_copy`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restored {
    /// No copy: nothing to do.
    Nothing,
    /// The store came back from a backup: the copy is the store now.
    FromCopy,
    /// The live store is newer than the copy, which was removed (a
    /// `backup_post` that never ran, or the link of a graceful stop).
    CopyRemoved,
}

/// At start, before the store opens: a data folder restored from a backup
/// holds the copy and no live store, and the copy becomes the store. Files
/// of an earlier store left beside it (its logs) cannot belong to the copy,
/// which holds everything itself, and are removed so that they are not
/// replayed into it.
pub fn restore_from_copy(data_dir: &Path) -> Result<Restored, BackupError> {
    let db = data_dir.join(STORE_FILE);
    let copy = data_dir.join(COPY_FILE);
    if !copy.exists() {
        return Ok(Restored::Nothing);
    }
    if db.exists() {
        std::fs::remove_file(&copy).map_err(file_error(&copy))?;
        return Ok(Restored::CopyRemoved);
    }
    let prefix = format!("{STORE_FILE}-");
    for entry in std::fs::read_dir(data_dir).map_err(file_error(data_dir))? {
        let entry = entry.map_err(file_error(data_dir))?;
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(file_error(&path))?;
    }
    std::fs::rename(&copy, &db).map_err(file_error(&db))?;
    sync_dir(&db)?;
    Ok(Restored::FromCopy)
}

/// After a graceful stop, with the store closed and everything it took
/// committed: folds the write-ahead log into the database and gives the
/// database file its second name, `switchboard-backup.db`, so that a backup
/// taken while the add-on is stopped holds the store.
pub fn keep_copy_at_rest(data_dir: &Path) -> Result<(), BackupError> {
    let db = data_dir.join(STORE_FILE);
    {
        let conn =
            Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(sqlite_error(&db))?;
        conn.busy_timeout(Duration::from_secs(1)).map_err(sqlite_error(&db))?;
        // Within the add-on's stop timeout.
        fold_wal(&conn, &db, Duration::from_secs(5))?;
    }
    let link = data_dir.join(LINK_FILE);
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(&db, &link).map_err(file_error(&link))?;
    let copy = data_dir.join(COPY_FILE);
    std::fs::rename(&link, &copy).map_err(file_error(&copy))?;
    sync_dir(&copy)
}
