//! The delivery log: a small append-only file where an operation notes the
//! final result of a delivery before it sends the next message, so that it
//! need not wait for the store's writer to commit the result.
//!
//! An operation sends one message at a time so that a crash repeats at most
//! one delivery (with `pipeline_depth`, at most that many). That needs each
//! result to be safe from a crash of the process before the next message
//! goes out (before the one that many places behind it); a commit is safe
//! from that but must wait its turn in the writer behind whole groups of
//! received messages. An append to this file is just as safe (the bytes are
//! in the operating system's cache once `write` returns, like a commit with
//! `synchronous=NORMAL`) and costs one system call. The result itself is
//! committed by the writer shortly after; once every noted result has been
//! committed the file is cut back to nothing. A result the writer cannot
//! commit (a full disk) is tried again until it is, and until then its
//! message is not taken from its queue again, whatever its status in the
//! database says. When the store opens, results noted but never committed
//! are applied before anything else runs.
//!
//! Everything the commit would record is noted (status, attempts, reply,
//! error text), so a result applied from the log at start is recorded
//! exactly as the commit would have recorded it: status and reply in one
//! transaction.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::files::{beside, set_aside};
use super::model::{Finished, Status};
use crate::sync::LockExt as _;

/// Fixed part of a record: magic, status, attempts (u32), header id (i64),
/// reply length and error length (u32, `u32::MAX` for none). The reply and
/// the error text follow, then a CRC-32 of everything before it.
const HEAD: usize = 22;
/// First byte of every record; a record not starting with it (a torn or
/// zero-filled tail after a power cut) ends the log.
const MAGIC: u8 = 0xD1;
const NONE: u32 = u32::MAX;
/// The file is cut back once it is at least this long and nothing noted in
/// it is waiting for a commit.
const CUT_BACK_AT: u64 = 1024 * 1024;

/// One noted result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Noted {
    pub(super) header_id: i64,
    pub(super) status: Status,
    pub(super) attempts: u32,
    pub(super) reply: Option<Bytes>,
    pub(super) error: Option<String>,
}

impl Noted {
    pub(super) fn of(finished: &Finished) -> Self {
        Self {
            header_id: finished.header_id,
            status: finished.status,
            attempts: finished.attempts,
            reply: finished.reply.clone(),
            error: finished.error.clone(),
        }
    }
}

struct State {
    file: File,
    len: u64,
    /// Headers whose results are noted, with how many of their results
    /// wait for the writer's commit. An entry at 0 is committed but kept
    /// until the next queue read begins (see
    /// [`forget_committed`](DeliveryLog::forget_committed)).
    pending: HashMap<i64, u32>,
    /// Entries of `pending` that reached 0, to be forgotten.
    committed: Vec<i64>,
    /// Entries of `pending` above 0.
    waiting: usize,
}

/// The open log; shared by the operations and the writer.
pub(super) struct DeliveryLog {
    path: PathBuf,
    state: Mutex<State>,
}

pub(super) fn status_code(status: Status) -> u8 {
    match status {
        Status::Queued => 1,
        Status::Delivering => 2,
        Status::Completed => 3,
        Status::Error => 4,
        Status::Suspended => 5,
        Status::Discarded => 6,
    }
}

pub(super) fn code_status(code: u8) -> Option<Status> {
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

fn encode(noted: &Noted) -> Vec<u8> {
    let reply = noted.reply.as_deref();
    let error = noted.error.as_deref().map(str::as_bytes);
    // Lengths past u32 cannot come from a frame the codec accepted; kept
    // out of the log rather than wrapped.
    let len = |b: Option<&[u8]>| b.and_then(|b| u32::try_from(b.len()).ok().filter(|&n| n != NONE));
    let (reply_len, error_len) = (len(reply), len(error));
    let mut record = Vec::with_capacity(HEAD + 4 + reply.map_or(0, <[u8]>::len) + error.map_or(0, <[u8]>::len));
    record.push(MAGIC);
    record.push(status_code(noted.status));
    record.extend_from_slice(&noted.attempts.to_le_bytes());
    record.extend_from_slice(&noted.header_id.to_le_bytes());
    record.extend_from_slice(&reply_len.unwrap_or(NONE).to_le_bytes());
    record.extend_from_slice(&error_len.unwrap_or(NONE).to_le_bytes());
    if reply_len.is_some() {
        record.extend_from_slice(reply.unwrap_or_default());
    }
    if error_len.is_some() {
        record.extend_from_slice(error.unwrap_or_default());
    }
    let crc = crc32fast::hash(&record);
    record.extend_from_slice(&crc.to_le_bytes());
    record
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes the record at the start of `bytes`; returns it and its length,
/// or `None` where the log ends (end of file, torn or corrupt record).
fn decode(bytes: &[u8]) -> Option<(Noted, usize)> {
    if bytes.len() < HEAD || bytes[0] != MAGIC {
        return None;
    }
    let status = code_status(bytes[1])?;
    let attempts = u32_at(bytes, 2)?;
    let header_id = i64::from_le_bytes(bytes.get(6..14)?.try_into().ok()?);
    let part_len = |at| u32_at(bytes, at).map(|n| (n != NONE).then_some(n as usize));
    let (reply_len, error_len) = (part_len(14)?, part_len(18)?);
    let reply_end = HEAD.checked_add(reply_len.unwrap_or(0))?;
    let end = reply_end.checked_add(error_len.unwrap_or(0))?;
    if u32_at(bytes, end)? != crc32fast::hash(&bytes[..end]) {
        return None;
    }
    let reply = reply_len.map(|_| Bytes::copy_from_slice(&bytes[HEAD..reply_end]));
    let error = error_len.map(|_| String::from_utf8_lossy(&bytes[reply_end..end]).into_owned());
    Some((Noted { header_id, status, attempts, reply, error }, end + 4))
}

/// The records of a log and what else it held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Read {
    noted: Vec<Noted>,
    /// Stretches that do not read as records, with records after them:
    /// offset, length and the records read after it.
    gaps: Vec<(usize, usize, usize)>,
    /// What follows the last record without reading as one: offset and
    /// length.
    torn: Option<(usize, usize)>,
}

/// Reads every record of the log. A stretch that does not read as a
/// record does not end it: the records after it are found by their magic
/// byte and checksum and read too, since a result dropped there would
/// send its message again.
fn read_all(bytes: &[u8]) -> Read {
    let mut read = Read::default();
    let mut at = 0;
    let mut broken: Option<usize> = None;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Some((record, len)) => {
                if let Some(from) = broken.take() {
                    read.gaps.push((from, at - from, 0));
                }
                if let Some(gap) = read.gaps.last_mut() {
                    gap.2 += 1;
                }
                read.noted.push(record);
                at += len;
            }
            None => {
                broken.get_or_insert(at);
                at += 1 + bytes[at + 1..].iter().position(|&b| b == MAGIC).unwrap_or(bytes.len() - at - 1);
            }
        }
    }
    read.torn = broken.map(|from| (from, bytes.len() - from));
    read
}

/// Logs what the log held besides its records, and copies a damaged file
/// aside (it is cut back to nothing once its records are applied).
fn report(path: &Path, read: &Read) {
    let file = path.display();
    for &(offset, bytes, after) in &read.gaps {
        tracing::error!(
            %file,
            offset,
            bytes,
            after,
            "the delivery log is damaged: {bytes} bytes at offset {offset} do not read as records; the {after} results after them are read and applied; a result noted in them and not yet committed is lost, and its message is delivered again"
        );
    }
    if let Some((offset, bytes)) = read.torn {
        tracing::warn!(
            %file,
            offset,
            bytes,
            "the last record of the delivery log ({bytes} bytes at offset {offset}) is incomplete: the previous run ended while writing it (or it was damaged since); the {} results before it are applied, and the delivery it noted, unless committed, is made again",
            read.noted.len()
        );
    }
    if !read.gaps.is_empty() {
        set_aside(path);
    }
}

impl DeliveryLog {
    /// The file, for errors that name it.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating) the log next to the database and returns what it
    /// holds from the previous run; the caller applies that and then calls
    /// [`clear`](Self::clear).
    pub(super) fn open(db: &Path) -> std::io::Result<(Self, Vec<Noted>)> {
        let path = beside(db, "deliveries");
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let read = read_all(&bytes);
        report(&path, &read);
        let noted = read.noted;
        let len = bytes.len() as u64;
        let state = State { file, len, pending: HashMap::new(), committed: Vec::new(), waiting: 0 };
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
        let record = encode(noted);
        let mut state = self.lock();
        if let Err(e) = state.file.write_all(&record) {
            // A full disk can take part of a record: cut it off, or it
            // would end the log for the records noted after it (cutting
            // a file back frees space, so this does not fail for want of
            // it).
            let _ = state.file.set_len(state.len);
            return Err(e);
        }
        state.len += record.len() as u64;
        let waiting = state.pending.entry(noted.header_id).or_default();
        *waiting += 1;
        if *waiting == 1 {
            state.waiting += 1;
        }
        Ok(())
    }

    /// Has this header a result noted that was not committed when the
    /// current queue read began? Its message has been delivered, even if
    /// the read's snapshot still shows it queued.
    ///
    /// A result committed while a read's query runs is not yet in that
    /// query's snapshot, so its entry must outlive the query: entries are
    /// forgotten only by [`forget_committed`](Self::forget_committed), at
    /// the start of the next read. (Dropped at once, such a header looked
    /// undelivered and `file_out`, which reads its queue from the head,
    /// delivered it again.)
    pub(super) fn delivered(&self, header_id: i64) -> bool {
        self.lock().pending.contains_key(&header_id)
    }

    /// Forgets the entries whose results are all committed. Called with
    /// the store's reader held, before a queue read's query: what was
    /// committed before then is in that query's snapshot.
    pub(super) fn forget_committed(&self) {
        let mut state = self.lock();
        let State { pending, committed, .. } = &mut *state;
        for id in committed.drain(..) {
            if pending.get(&id) == Some(&0) {
                pending.remove(&id);
            }
        }
    }

    /// Called by the writer once it has committed a noted result.
    pub(super) fn settle(&self, header_id: i64) {
        let mut state = self.lock();
        if let Some(waiting) = state.pending.get_mut(&header_id)
            && *waiting > 0
        {
            *waiting -= 1;
            if *waiting == 0 {
                state.waiting -= 1;
                state.committed.push(header_id);
            }
        }
        if state.waiting == 0 && state.len >= CUT_BACK_AT {
            // Appends go to the end of the file, wherever that now is.
            match state.file.set_len(0) {
                Ok(()) => state.len = 0,
                Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cannot cut back the delivery log"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(header_id: i64) -> Noted {
        Noted { header_id, status: Status::Completed, attempts: 1, reply: None, error: None }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let (log, noted) = DeliveryLog::open(&db).unwrap();
        assert!(noted.is_empty());
        let a = completed(42);
        let b = Noted {
            header_id: i64::MAX - 1,
            status: Status::Suspended,
            attempts: 7,
            reply: Some(Bytes::from_static(b"MSH|^~\\&\rMSA|AE|1|bad")),
            error: Some("AE bad (matched :?E=S)".into()),
        };
        let c = Noted { reply: Some(Bytes::new()), error: Some(String::new()), ..completed(3) };
        for n in [&a, &b, &c] {
            log.note(n).unwrap();
        }
        drop(log);
        // Half a record, as a power cut may leave.
        let path = dir.path().join("s.db-deliveries");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&encode(&b)[..30]).unwrap();
        drop(file);
        let (log, noted) = DeliveryLog::open(&db).unwrap();
        assert_eq!(noted, vec![a.clone(), b.clone(), c]);
        log.clear().unwrap();
        drop(log);
        assert_eq!(DeliveryLog::open(&db).unwrap().1, vec![]);
        assert_eq!(decode(&[0u8; 64]), None, "a zero-filled block");
        let mut flipped = encode(&b);
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped), None, "a corrupt record");
    }

    /// A damaged record does not end the log: the records after it are
    /// read; what follows the last record is a torn tail.
    #[test]
    fn records_after_a_damaged_one_are_read() {
        let records: Vec<Noted> = (1..=4).map(completed).collect();
        let mut bytes: Vec<u8> = records.iter().flat_map(encode).collect();
        let one = encode(&records[0]).len();
        bytes[one + 7] ^= 1;
        bytes.extend_from_slice(&encode(&completed(5))[..9]);
        let read = read_all(&bytes);
        assert_eq!(read.noted, [records[0].clone(), records[2].clone(), records[3].clone()]);
        assert_eq!(read.gaps, [(one, one, 2)]);
        assert_eq!(read.torn, Some((4 * one, 9)));
        assert_eq!(read_all(&[]), Read::default());
        assert_eq!(read_all(&[0; 40]).torn, Some((0, 40)));
    }

    /// A log in a temp folder filled just past the cut-back size, one
    /// result per header from 1; returns the length of one record and how
    /// many were noted.
    fn filled_log() -> (tempfile::TempDir, DeliveryLog, u64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = DeliveryLog::open(&dir.path().join("s.db")).unwrap();
        let record = encode(&completed(1)).len() as u64;
        let records = CUT_BACK_AT.div_ceil(record) as i64;
        for id in 1..=records {
            log.note(&completed(id)).unwrap();
        }
        (dir, log, record, records)
    }

    #[test]
    fn the_file_is_cut_back_only_when_everything_noted_is_committed() {
        let (_dir, log, record, records) = filled_log();
        for id in 2..=records {
            log.settle(id);
        }
        assert_eq!(log.lock().len, records as u64 * record, "one result still waits for its commit");
        log.forget_committed();
        assert!(log.delivered(1) && !log.delivered(2));
        log.settle(1);
        assert_eq!(log.lock().len, 0);
        assert!(log.delivered(1), "kept until the next read begins");
        log.forget_committed();
        assert!(!log.delivered(1));
        log.note(&completed(1)).unwrap();
        assert_eq!(log.lock().file.metadata().unwrap().len(), record, "appends start again at the beginning");
    }

    /// A header noted twice (delivered again after a resend) waits until
    /// both results are committed.
    #[test]
    fn a_header_noted_twice_is_pending_until_both_are_committed() {
        let (_dir, log, _, _) = filled_log();
        log.note(&completed(1)).unwrap();
        log.settle(1);
        log.forget_committed();
        assert!(log.delivered(1));
        log.settle(1);
        log.forget_committed();
        assert!(!log.delivered(1));
    }
}
