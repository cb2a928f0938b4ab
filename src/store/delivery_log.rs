//! The delivery log: a small append-only file where an operation notes the
//! final result of a delivery before it sends the next message, so that it
//! need not wait for the store's writer to commit the result.
//!
//! An operation sends one message at a time so that a crash repeats at most
//! one delivery. That needs each result to be safe from a crash of the
//! process before the next message goes out; a commit is safe from that but
//! must wait its turn in the writer behind whole groups of received
//! messages. An append to this file is just as safe (the bytes are in the
//! operating system's cache once `write` returns, like a commit with
//! `synchronous=NORMAL`) and costs one system call. The result itself is
//! committed by the writer shortly after; once every noted result has been
//! committed the file is cut back to nothing. When the store opens, results
//! noted but never committed are applied before anything else runs.
//!
//! Only the header id, the status and the attempt count are noted: a reply
//! and an error text that were not committed before a crash are lost, the
//! status is not.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Status;

/// Size of one record: magic, status, attempts (u32), header id (i64),
/// two reserved bytes.
const RECORD: usize = 16;
/// First byte of every record; a record not starting with it (a torn or
/// zero-filled tail after a power cut) ends the log.
const MAGIC: u8 = 0xD1;
/// The file is cut back once it is at least this long and nothing noted in
/// it is waiting for a commit.
const CUT_BACK_AT: u64 = 256 * 1024;

/// One noted result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Noted {
    pub(super) header_id: i64,
    pub(super) status: Status,
    pub(super) attempts: u32,
}

struct State {
    file: File,
    len: u64,
    /// Results noted and not yet committed by the writer.
    unsettled: u64,
    /// A noted result failed to commit: keep the file until the next start.
    keep: bool,
}

/// The open log; shared by the operations and the writer.
pub(super) struct DeliveryLog {
    path: PathBuf,
    state: Mutex<State>,
}

fn status_code(status: Status) -> u8 {
    match status {
        Status::Queued => 1,
        Status::Delivering => 2,
        Status::Completed => 3,
        Status::Error => 4,
        Status::Suspended => 5,
        Status::Discarded => 6,
    }
}

fn code_status(code: u8) -> Option<Status> {
    Some(match code {
        1 => Status::Queued,
        2 => Status::Delivering,
        3 => Status::Completed,
        4 => Status::Error,
        5 => Status::Suspended,
        6 => Status::Discarded,
        _ => return None,
    })
}

fn encode(noted: &Noted) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[0] = MAGIC;
    record[1] = status_code(noted.status);
    record[2..6].copy_from_slice(&noted.attempts.to_le_bytes());
    record[6..14].copy_from_slice(&noted.header_id.to_le_bytes());
    record
}

fn decode(record: &[u8]) -> Option<Noted> {
    let record: &[u8; RECORD] = record.try_into().ok()?;
    if record[0] != MAGIC || record[14..] != [0, 0] {
        return None;
    }
    let status = code_status(record[1])?;
    let attempts = u32::from_le_bytes([record[2], record[3], record[4], record[5]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&record[6..14]);
    Some(Noted { header_id: i64::from_le_bytes(id), status, attempts })
}

impl DeliveryLog {
    /// Opens (creating) the log next to the database and returns what it
    /// holds from the previous run; the caller applies that and then calls
    /// [`clear`](Self::clear).
    pub(super) fn open(db: &Path) -> std::io::Result<(Self, Vec<Noted>)> {
        let path = PathBuf::from(format!("{}-deliveries", db.display()));
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let noted = bytes.chunks(RECORD).map_while(decode).collect();
        let len = bytes.len() as u64;
        let state = State { file, len, unsettled: 0, keep: false };
        Ok((Self { path, state: Mutex::new(state) }, noted))
    }

    /// Empties the log once what it held has been committed.
    pub(super) fn clear(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        state.file.set_len(0)?;
        state.len = 0;
        Ok(())
    }

    /// Appends one result. When this returns, the result survives a crash
    /// of the process.
    pub(super) fn note(&self, noted: &Noted) -> std::io::Result<()> {
        let mut state = self.lock();
        state.file.write_all(&encode(noted))?;
        state.len += RECORD as u64;
        state.unsettled += 1;
        Ok(())
    }

    /// Called by the writer once it has committed (`committed`) or failed
    /// to commit noted results.
    pub(super) fn settle(&self, count: u64, committed: bool) {
        let mut state = self.lock();
        state.unsettled = state.unsettled.saturating_sub(count);
        if !committed {
            state.keep = true;
        }
        if state.unsettled == 0 && state.len >= CUT_BACK_AT && !state.keep {
            // Appends go to the end of the file, wherever that now is.
            match state.file.set_len(0) {
                Ok(()) => state.len = 0,
                Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot cut back the delivery log"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let (log, noted) = DeliveryLog::open(&db).unwrap();
        assert!(noted.is_empty());
        let a = Noted { header_id: 42, status: Status::Completed, attempts: 1 };
        let b = Noted { header_id: i64::MAX - 1, status: Status::Suspended, attempts: 7 };
        log.note(&a).unwrap();
        log.note(&b).unwrap();
        drop(log);
        // Half a record and a zero-filled block, as a power cut may leave.
        let path = dir.path().join("s.db-deliveries");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&encode(&a)[..9]).unwrap();
        drop(file);
        let (log, noted) = DeliveryLog::open(&db).unwrap();
        assert_eq!(noted, vec![a, b]);
        log.clear().unwrap();
        drop(log);
        assert_eq!(DeliveryLog::open(&db).unwrap().1, vec![]);
        assert_eq!(decode(&[0u8; RECORD]), None);
    }

    #[test]
    fn the_file_is_cut_back_only_when_everything_noted_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = DeliveryLog::open(&dir.path().join("s.db")).unwrap();
        let noted = Noted { header_id: 1, status: Status::Completed, attempts: 1 };
        let records = CUT_BACK_AT / RECORD as u64;
        for _ in 0..records {
            log.note(&noted).unwrap();
        }
        log.settle(records - 1, true);
        assert_eq!(log.lock().len, CUT_BACK_AT, "one result still waits for its commit");
        log.settle(1, true);
        assert_eq!(log.lock().len, 0);
        log.note(&noted).unwrap();
        assert_eq!(log.lock().file.metadata().unwrap().len(), RECORD as u64, "appends start again at the beginning");
    }

    #[test]
    fn a_failed_commit_keeps_the_log_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = DeliveryLog::open(&dir.path().join("s.db")).unwrap();
        let noted = Noted { header_id: 1, status: Status::Completed, attempts: 1 };
        for _ in 0..CUT_BACK_AT / RECORD as u64 {
            log.note(&noted).unwrap();
        }
        log.settle(1, false);
        log.settle(u64::MAX, true);
        assert_eq!(log.lock().len, CUT_BACK_AT);
    }
}
