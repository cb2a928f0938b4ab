//! The inbound log: a received message is made durable by appending it to
//! this log (and, with `durability: full`, syncing it), and is acknowledged
//! then; the writer commits it into the queues right after, without
//! waiting for the disk.
//!
//! Acknowledging after a commit of the store would put the whole commit
//! (the inserts, the log pages SQLite writes for them) in front of every
//! fdatasync, and every ACK behind both. Here the ACK waits only for an
//! append of the message's bytes and one fdatasync shared by everything
//! received meanwhile, the least a durable ACK can cost; the commit happens
//! next to it.
//!
//! Each record carries a sequence number. The writer stores the last number
//! it has applied in the same transaction as the messages, so when the
//! store opens, the records after it (received and acknowledged, but not
//! committed before a crash or a power cut) are applied before anything
//! else runs, and none twice.
//!
//! The log is two files used in turn. Once the one being written is past
//! [`SEGMENT_BYTES`], writing starts again at the beginning of the other,
//! but only when everything in the other has been committed and the
//! store's write-ahead log synced after that commit: from then on the store
//! alone holds those messages durably.
//!
//! Both files are filled with zeros once, when they are created, and then
//! only overwritten, never grown: an fdatasync of a file whose size and
//! blocks do not change flushes the data alone, without the file's
//! metadata, which on the disks measured took 25 to 40 % off every sync.
//! What follows the records of the current round (zeros, or records of an
//! earlier round, all committed long since) is told apart by the sequence
//! numbers and checksums.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::delivery_log;
use super::disk::sync_wal;
use super::error::StoreError;
use super::facts::MessageFacts;
use super::files::{beside, set_aside};
use super::model::{InlineRoute, NewInbound, RouteDecision, RoutedOutput};
use super::pending::CommitNotice;
use super::progress::Progress;
use super::protocol::Op;

/// Size past which writing moves to the other file, once that can be
/// written over.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Most messages written and synced together.
const MAX_BATCH: usize = 1024;
/// First byte of every record: a record that does not start with it ends
/// the file (a torn or zero-filled tail).
const MAGIC: u8 = 0xA7;
/// Magic, sequence number (u64) and payload length (u32).
const HEAD: usize = 13;

/// A received message on its way into the log.
pub(super) struct Entry {
    pub(super) inbound: NewInbound,
    /// Answered once the message is durable.
    pub(super) durable: oneshot::Sender<Result<(), StoreError>>,
    /// Told by the writer once it is committed.
    pub(super) committed: CommitNotice,
}

/// What the log thread is asked to do.
pub(super) enum Request {
    Append(Box<Entry>),
    /// Finish what is pending, hand it to the writer, and end.
    Shutdown,
}

/// A record read back at open.
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) inbound: NewInbound,
}

pub(super) fn segment_path(db: &Path, n: usize) -> PathBuf {
    beside(db, &format!("inbound-{n}"))
}

/// Reads the intact records after `applied` from both files, in sequence
/// order. The files are read a record at a time, so memory holds the
/// records wanted, not the files, up to the first record that does not
/// read; the rest of that file is then searched for records written after
/// it (see [`rest`]). What was found besides records is logged (see
/// [`report`]).
pub(super) fn read(db: &Path, applied: u64) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    let mut found = Vec::new();
    let mut record = Vec::new();
    for n in 0..2 {
        let path = segment_path(db, n);
        let failed = |reason| StoreError::Path { path: path.clone(), reason };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        };
        let size = file.metadata().map_err(failed)?.len();
        let mut left = size;
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        let mut previous = 0;
        loop {
            // The head says how long the record is; a length past the end
            // of the file is a torn or corrupt record, not a reason to
            // allocate it.
            record.resize(HEAD, 0);
            if left < HEAD as u64 {
                break;
            }
            reader.read_exact(&mut record).map_err(failed)?;
            // Numbers rise within a round; a smaller one starts what is
            // left of an earlier round, all of it committed long since.
            let seq = u64::from_le_bytes([
                record[1], record[2], record[3], record[4], record[5], record[6], record[7], record[8],
            ]);
            if record[0] != MAGIC || seq < previous {
                break;
            }
            let len = u32::from_le_bytes([record[9], record[10], record[11], record[12]]) as u64 + 4;
            if len > left - HEAD as u64 {
                break;
            }
            record.resize(HEAD + len as usize, 0);
            reader.read_exact(&mut record[HEAD..]).map_err(failed)?;
            let Some((found, _)) = decode(&record, applied) else { break };
            previous = seq;
            records.extend(found);
            left -= (HEAD as u64) + len;
        }
        // The rest of the file, at most its fixed size.
        let at = size - left;
        let mut tail = vec![0; usize::try_from(left).map_err(|_| failed(std::io::ErrorKind::FileTooLarge.into()))?];
        reader.get_ref().read_exact_at(&mut tail, at).map_err(failed)?;
        let mut rest = rest(&tail, at, previous, applied);
        records.append(&mut rest.records);
        found.push((n, size, rest));
    }
    records.sort_by_key(|r| r.seq);
    report(db, &found, &records, applied);
    Ok(records)
}

/// Sequence numbers a record found past a damaged one may be ahead of the
/// last one read: more than a round can hold is a chance match in the
/// bytes, not a record.
const RESYNC_WINDOW: u64 = 1 << 32;

/// A stretch of a file that does not read as records, with records of the
/// same round after it: damage, not the end of the round.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Gap {
    /// Where it starts in the file, and how many bytes it spans.
    pub(super) offset: u64,
    pub(super) len: u64,
    /// The first sequence number read after it.
    pub(super) next: u64,
}

/// What follows the records read in turn from the start of a file.
#[derive(Default)]
pub(super) struct Rest {
    /// Records found beyond damage (those after `applied`), in file order.
    pub(super) records: Vec<Record>,
    /// Damage with records of the current round after it.
    pub(super) gaps: Vec<Gap>,
    /// The last record of the round, cut short or damaged (its offset and
    /// sequence number): nothing of the round follows it.
    pub(super) torn: Option<(u64, u64)>,
    /// Records whose checksum holds but whose contents do not read (a
    /// writer's bug, not a torn write): offset and sequence number.
    pub(super) unreadable: Vec<(u64, u64)>,
}

/// Searches `tail`, the bytes of a file after the records read in turn
/// from its start (`tail` starts at `offset`; the last record read had
/// number `previous`, 0 for none), for records of the same round written
/// after one that was damaged since.
///
/// In an intact file, what follows the round is zeros or what an earlier
/// round left: records numbered below the round's (at most `applied` when
/// the round has none in this file), and nothing is found. A record is
/// taken only where its magic byte, a number in the window ahead and its
/// checksum agree: a chance match in a message's bytes would have to get
/// all three right.
pub(super) fn rest(tail: &[u8], offset: u64, previous: u64, applied: u64) -> Rest {
    let mut rest = Rest::default();
    let mut last = previous;
    let mut at = 0;
    // Where the bytes stopped reading as records.
    let mut broken: Option<usize> = None;
    while at < tail.len() {
        let bytes = &tail[at..];
        let floor = if last > 0 { last } else { applied };
        let ahead = |seq: u64| seq > floor && seq - floor <= RESYNC_WINDOW;
        // The number first: the checksum of every old record (or of a
        // chance match's claimed length) is not worth computing.
        match head_seq(bytes).filter(|&seq| ahead(seq)).and_then(|_| checked(bytes)) {
            Some((seq, len)) => {
                if let Some(from) = broken.take() {
                    rest.gaps.push(Gap { offset: offset + from as u64, len: (at - from) as u64, next: seq });
                    rest.torn = None;
                }
                match decode(&bytes[..len], applied) {
                    Some((record, _)) => rest.records.extend(record),
                    None => rest.unreadable.push((offset + at as u64, seq)),
                }
                last = seq;
                at += len;
            }
            None => {
                if broken.is_none() {
                    broken = Some(at);
                    rest.torn = head_seq(bytes).filter(|&seq| ahead(seq)).map(|seq| (offset + at as u64, seq));
                }
                // The next candidate is the next magic byte.
                at += 1 + bytes[1..].iter().position(|&b| b == MAGIC).unwrap_or(bytes.len() - 1);
            }
        }
    }
    rest
}

/// The sequence number in a record head, if `bytes` start with one.
fn head_seq(bytes: &[u8]) -> Option<u64> {
    let head = bytes.get(..HEAD).filter(|head| head[0] == MAGIC)?;
    Some(u64::from_le_bytes(head[1..9].try_into().ok()?))
}

/// The number and length of the record at the start of `bytes`, if it is
/// whole and its checksum holds.
fn checked(bytes: &[u8]) -> Option<(u64, usize)> {
    let seq = head_seq(bytes)?;
    let len = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
    let end = HEAD.checked_add(len)?;
    let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (crc == crc32fast::hash(&bytes[..end])).then_some((seq, end + 4))
}

/// Logs what reading the log found besides its records: damage, with the
/// records kept after it, and the messages it cost (numbers after
/// `applied`, missing between the records read: acknowledged, never
/// committed, and now unreadable); a torn last record; a record that does
/// not read. A damaged file is copied aside first, since the log writes
/// over its files as soon as the store is open.
fn report(db: &Path, found: &[(usize, u64, Rest)], records: &[Record], applied: u64) {
    for (n, size, rest) in found {
        let path = segment_path(db, *n);
        let file = path.display();
        // Damage with only committed records after it cost nothing, and is
        // written over in time: not worth a word at every start till then.
        let gaps: Vec<&Gap> = rest.gaps.iter().filter(|gap| gap.next > applied).collect();
        let damaged = !gaps.is_empty() || !rest.unreadable.is_empty();
        for gap in &gaps {
            tracing::error!(
                %file,
                offset = gap.offset,
                bytes = gap.len,
                next = gap.next,
                "the inbound log is damaged: {} bytes at offset {} do not read as records; the records after them, from number {}, are read and kept",
                gap.len,
                gap.offset,
                gap.next
            );
        }
        if !gaps.is_empty() {
            let kept = rest.records.len();
            tracing::warn!(%file, records = kept, "{kept} records of the inbound log not yet committed read past the damage");
        }
        for (offset, seq) in &rest.unreadable {
            tracing::error!(
                %file,
                offset,
                number = seq,
                "record {seq} of the inbound log at offset {offset} has a valid checksum but does not read (written by a faulty or newer version): left out"
            );
        }
        if let Some((offset, seq)) = rest.torn {
            let cut = match *size < SEGMENT_BYTES {
                true => format!("; the file is {size} bytes, shorter than the {SEGMENT_BYTES} it is made with"),
                false => String::new(),
            };
            tracing::warn!(
                %file,
                offset,
                number = seq,
                "the last record of the inbound log, number {seq} at offset {offset}, is incomplete or damaged{cut}: the previous run ended while writing it (it was never acknowledged) or it was damaged since; left out"
            );
        }
        if damaged {
            set_aside(&path);
        }
    }
    let missing = missing(records, applied);
    if !missing.is_empty() {
        let count = missing.iter().fold(0u64, |n, (a, b)| n.saturating_add((b - a).saturating_add(1)));
        let numbers: Vec<String> =
            missing.iter().take(10).map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        tracing::error!(
            lost = count,
            numbers = %numbers.join(","),
            "{count} messages of the inbound log (numbers {}) were acknowledged but not committed before the last stop, and cannot be read: they are lost; the {} records read are committed",
            numbers.join(", "),
            records.len()
        );
    }
}

/// Ranges of sequence numbers after `applied` missing from `records`
/// (sorted), up to the last one read.
fn missing(records: &[Record], applied: u64) -> Vec<(u64, u64)> {
    let mut missing = Vec::new();
    // Saturating: both numbers come from files a crash or a bad disk may
    // have left anything in.
    let mut expected = applied.saturating_add(1);
    for r in records {
        if r.seq > expected {
            missing.push((expected, r.seq - 1));
        }
        expected = expected.max(r.seq.saturating_add(1));
    }
    missing
}

/// The log while the store is open.
pub(super) struct InboundLog {
    db: PathBuf,
    files: [File; 2],
    /// Bytes in each file, and the last sequence number written to it.
    len: [u64; 2],
    last: [u64; 2],
    active: usize,
    next_seq: u64,
    /// Where the bytes of refused batches may reach in the active file
    /// (0 for nowhere past `len`): a write that fails can still leave some
    /// of its records whole in the file, and they must never be read as
    /// received, since their senders were refused. See
    /// [`wipe_refused`](Self::wipe_refused).
    refused_end: u64,
    /// How far the writer is.
    progress: Arc<Progress>,
    wal: Option<(File, u64)>,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    /// Sync each batch (`durability: full`); without, a message survives
    /// a crash of the process but not of the machine.
    sync: bool,
}

impl InboundLog {
    /// Opens both files, creating them full of zeros; what they hold is
    /// committed already (the caller applied it) and is overwritten.
    /// Sequence numbers continue after `applied`.
    pub(super) fn create(db: &Path, progress: Arc<Progress>, sync: bool) -> Result<Self, StoreError> {
        let open = |n| {
            let path = segment_path(db, n);
            Self::prepare(&path).map_err(|reason| StoreError::Path { path, reason })
        };
        let files = [open(0)?, open(1)?];
        let next_seq = progress.applied.load(Ordering::Acquire) + 1;
        Ok(Self {
            db: db.to_owned(),
            files,
            len: [0; 2],
            last: [0; 2],
            active: 0,
            next_seq,
            refused_end: 0,
            progress,
            wal: None,
            segment_bytes: SEGMENT_BYTES,
            sync,
        })
    }

    /// Opens one file, filling it with zeros up to [`SEGMENT_BYTES`] the
    /// first time.
    fn prepare(path: &Path) -> std::io::Result<File> {
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len < SEGMENT_BYTES {
            let zeros = vec![0; 64 * 1024];
            let mut at = len;
            while at < SEGMENT_BYTES {
                let n = zeros.len().min((SEGMENT_BYTES - at) as usize);
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
        }
        Ok(file)
    }

    /// Appends and syncs every request that is waiting, answers their
    /// senders, and hands the messages to the writer, until shut down;
    /// returns the last sequence number written.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>, writer: mpsc::Sender<Op>) -> u64 {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut bytes = Vec::new();
        loop {
            let Some(mut request) = rx.blocking_recv() else { return self.next_seq - 1 };
            let mut shutdown = false;
            loop {
                match request {
                    Request::Append(entry) => batch.push(*entry),
                    Request::Shutdown => shutdown = true,
                }
                match rx.try_recv() {
                    Ok(next) if batch.len() < MAX_BATCH => request = next,
                    Ok(next) => {
                        self.append(&mut batch, &mut bytes, &writer);
                        request = next;
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.append(&mut batch, &mut bytes, &writer);
            }
            if shutdown {
                return self.next_seq - 1;
            }
        }
    }

    fn append(&mut self, batch: &mut Vec<Entry>, bytes: &mut Vec<u8>, writer: &mpsc::Sender<Op>) {
        // Before the write: while the writer is behind, acknowledgments
        // wait rather than memory grows.
        self.progress.in_flight.reserve(batch.iter().map(|e| e.inbound.weight()).sum());
        bytes.clear();
        let first = self.next_seq;
        for entry in batch.iter() {
            encode(self.next_seq, &entry.inbound, bytes);
            self.next_seq += 1;
        }
        let at = self.len[self.active];
        let records = bytes.len() as u64;
        // Zeros over what a refused batch may have left beyond this one.
        let padded = self.refused_end.saturating_sub(at).max(records);
        bytes.resize(usize::try_from(padded).unwrap_or(bytes.len()), 0);
        let file = &self.files[self.active];
        let written = file.write_all_at(bytes, at).and_then(|()| match self.sync {
            true => file.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the inbound log; {} messages refused", batch.len());
            // The next batch is written at the same place, with the same
            // numbers; whatever part of this one reached the file is
            // wiped now if the disk lets it, else by that next write.
            self.refused_end = self.refused_end.max(at + records);
            self.wipe_refused();
            self.next_seq = first;
            self.progress.in_flight.release(batch.iter().map(|e| e.inbound.weight()).sum());
            let text = format!("cannot write the inbound log: {e}");
            for entry in batch.drain(..) {
                let _ = entry.durable.send(Err(StoreError::CommitFailed(text.clone())));
            }
            return;
        }
        self.refused_end = 0;
        self.len[self.active] += records;
        self.last[self.active] = self.next_seq - 1;
        // Before the answers: the next batch goes where this decides (and
        // a test can tell when that was).
        self.turn();
        // The senders first (their ACKs can go), then the writer, in one
        // piece.
        let mut logged = Vec::with_capacity(batch.len());
        for (seq, entry) in (first..).zip(batch.drain(..)) {
            let _ = entry.durable.send(Ok(()));
            logged.push((entry.inbound, entry.committed, seq));
        }
        if writer.blocking_send(Op::Logged(logged)).is_err() {
            // The writer is gone (the store is closing): the messages are
            // in the log and are applied when the store opens again.
            tracing::warn!(first, "the store writer has stopped; logged messages wait for the next start");
        }
    }

    /// Writes zeros over what refused batches may have left past the end
    /// of the active file's records. Otherwise a refused record, whole in
    /// the file, would be read at the next start as received (after a
    /// shorter batch took its place, as one found past damage), and its
    /// message delivered though its sender was told it was not taken.
    /// On a full disk this can fail too; the next batch's write then
    /// carries the zeros (see [`append`](Self::append)).
    fn wipe_refused(&mut self) {
        let at = self.len[self.active];
        let Some(span) = self.refused_end.checked_sub(at).filter(|&n| n > 0) else { return };
        let zeros = vec![0; usize::try_from(span).unwrap_or(0)];
        let file = &self.files[self.active];
        match file.write_all_at(&zeros, at).and_then(|()| file.sync_data()) {
            Ok(()) => self.refused_end = 0,
            Err(e) => tracing::debug!(error = %e, "cannot wipe a refused batch yet; the next write will"),
        }
    }

    /// Moves writing to the other file once this one is long and the other
    /// can be written over (see the module documentation).
    fn turn(&mut self) {
        let other = 1 - self.active;
        if self.len[self.active] < self.segment_bytes {
            return;
        }
        if self.len[other] > 0 {
            if self.progress.applied.load(Ordering::Acquire) < self.last[other] {
                return; // not all committed yet: keep appending here
            }
            let wal = beside(&self.db, "wal");
            if let Err(e) = sync_wal(&wal, &mut self.wal) {
                tracing::warn!(error = %e, "cannot sync the store before reusing an inbound log file; will try again");
                return;
            }
            self.len[other] = 0;
            self.last[other] = 0;
        }
        self.active = other;
    }
}

// --- records ----------------------------------------------------------------

/// `u32::MAX` as a length means "none".
const NONE: u32 = u32::MAX;

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A frame the codec accepted is far below 4 GiB.
    put_u32(out, u32::try_from(bytes.len()).unwrap_or(NONE - 1));
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => put_bytes(out, b),
        None => put_u32(out, NONE),
    }
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(0));
}

/// Appends the record of one message to `out`.
pub(super) fn encode(seq: u64, m: &NewInbound, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    put_u32(out, 0); // payload length, filled in below
    let payload = out.len();
    for text in [&m.production, &m.service, &m.origin] {
        put_bytes(out, text.as_bytes());
    }
    put_bytes(out, &m.body);
    put_opt(out, m.control_id.as_deref().map(str::as_bytes));
    put_opt(out, m.message_type.as_deref().map(str::as_bytes));
    put_count(out, m.targets.len());
    for target in m.targets.iter() {
        put_bytes(out, target.as_bytes());
    }
    put_count(out, m.routed.len());
    for route in &m.routed {
        put_bytes(out, route.router.as_bytes());
        let decision = &route.decision;
        out.push(delivery_log::status_code(decision.status));
        put_opt(out, decision.error.as_deref().map(str::as_bytes));
        put_count(out, decision.outputs.len());
        for output in &decision.outputs {
            put_bytes(out, output.target.as_bytes());
            put_opt(out, output.body.as_deref());
            put_opt(out, output.control_id.as_deref().map(str::as_bytes));
        }
    }
    // Added after the rest, so that a record written before them still
    // reads (see `decode`) and one written with them reads in a version
    // that stops before them.
    put_opt(out, m.patient_id.as_deref().map(str::as_bytes));
    put_opt(out, m.patient_name.as_deref().map(str::as_bytes));
    let len = u32::try_from(out.len() - payload).unwrap_or(NONE);
    out[payload - 4..payload].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads a payload front to back; every read fails cleanly past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn opt(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            NONE => Some(None),
            n => self.take(n as usize).map(Some),
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.opt()?
    }

    fn text(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    fn opt_text(&mut self) -> Option<Option<String>> {
        Some(self.opt()?.map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    fn count(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        // Every element takes at least four bytes: a count beyond what is
        // left is corruption, not a reason to reserve memory.
        (n <= (self.bytes.len() - self.at) / 4).then_some(n)
    }
}

/// Decodes the record at the start of `bytes`: the record (unless it is
/// one of those up to `applied`, which are only checked) and its length, or
/// `None` where the records end (zeros, a torn or corrupt record).
fn decode(bytes: &[u8], applied: u64) -> Option<(Option<Record>, usize)> {
    if bytes.len() < HEAD || bytes[0] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
    let len = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
    let end = HEAD.checked_add(len)?;
    let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
    if crc != crc32fast::hash(&bytes[..end]) {
        return None;
    }
    if seq <= applied {
        return Some((None, end + 4));
    }
    let mut c = Cursor { bytes: &bytes[HEAD..end], at: 0 };
    let (production, service, origin) = (c.text()?, c.text()?, c.text()?);
    let body = Bytes::copy_from_slice(c.bytes()?);
    let (control_id, message_type) = (c.opt_text()?, c.opt_text()?);
    let targets = (0..c.count()?).map(|_| c.text()).collect::<Option<Vec<_>>>()?;
    let mut routed = Vec::new();
    for _ in 0..c.count()? {
        let router = c.text()?;
        let status = delivery_log::code_status(c.u8()?)?;
        let error = c.opt_text()?;
        let mut outputs = Vec::new();
        for _ in 0..c.count()? {
            let target = c.text()?;
            let body = c.opt()?.map(Bytes::copy_from_slice);
            let control_id = c.opt_text()?;
            outputs.push(RoutedOutput { target, body, control_id });
        }
        routed.push(InlineRoute { router, decision: RouteDecision { status, error, outputs } });
    }
    // A record written before the patient was logged ends here: its
    // patient is read from the body, as the service would have.
    let (patient_id, patient_name) = match c.at < c.bytes.len() {
        true => (c.opt_text()?, c.opt_text()?),
        false => MessageFacts::patient_of(&body),
    };
    let (production, service, origin, targets) = (production.into(), service.into(), origin.into(), targets.into());
    let inbound = NewInbound {
        production,
        service,
        origin,
        body,
        control_id,
        message_type,
        patient_id,
        patient_name,
        targets,
        routed,
    };
    Some((Some(Record { seq, inbound }), end + 4))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::store::Status;

    /// A message with every part a record holds: two targets, a decision
    /// with an error, a shared and a transformed output, and no type.
    fn message(n: u64) -> NewInbound {
        NewInbound {
            message_type: None,
            targets: ["Router".to_owned(), "Copy".to_owned()].into(),
            routed: vec![InlineRoute {
                router: "Router".into(),
                decision: RouteDecision {
                    status: Status::Completed,
                    error: Some("why".into()),
                    outputs: vec![
                        RoutedOutput { target: "Out".into(), body: None, control_id: None },
                        RoutedOutput {
                            target: "Other".into(),
                            body: Some(Bytes::from_static(b"MSH|x")),
                            control_id: Some("T".into()),
                        },
                    ],
                },
            }],
            ..crate::store::tests::inbound(n as usize)
        }
    }

    /// The log's thread with files of about two records, and a stand-in
    /// for the writer that commits what it is told to.
    #[test]
    fn a_file_is_written_over_only_once_all_of_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        // The store's write-ahead log, synced before a file is written over.
        std::fs::write(dir.path().join("s.db-wal"), b"").unwrap();
        let progress = Arc::new(Progress { applied: AtomicU64::new(41), ..Progress::default() });
        let mut log = InboundLog::create(&db, progress.clone(), true).unwrap();
        let mut one = Vec::new();
        encode(1, &message(1), &mut one);
        log.segment_bytes = 2 * one.len() as u64 - 1;
        let (tx, rx) = mpsc::channel(16);
        let (writer, mut committed) = mpsc::channel(16);
        let thread = std::thread::spawn(move || log.run(rx, writer));
        let mut send = |n: u64| {
            let (durable, is_durable) = oneshot::channel();
            let entry = Entry { inbound: message(n), durable, committed: CommitNotice::nobody() };
            tx.blocking_send(Request::Append(Box::new(entry))).unwrap();
            is_durable.blocking_recv().unwrap().unwrap();
            match committed.blocking_recv() {
                Some(Op::Logged(messages)) if messages.len() == 1 => messages[0].2,
                _ => panic!("not handed to the writer"),
            }
        };
        let seqs = |n| read_one(&db, n).iter().map(|r| r.seq).collect::<Vec<_>>();
        // Sequence numbers go on from what the store has applied.
        assert_eq!((send(1), send(2)), (42, 43));
        assert_eq!((seqs(0), seqs(1)), (vec![42, 43], vec![]), "the first file is full, the second unused");
        assert_eq!(send(3), 44);
        assert_eq!(send(4), 45);
        // The first file cannot be written over while 42 and 43 are not committed.
        assert_eq!(send(5), 46);
        assert_eq!((seqs(0), seqs(1)), (vec![42, 43], vec![44, 45, 46]));
        // Once they are, writing starts again at the beginning of the first
        // file, over 42; 43 stays behind it until overwritten, and is
        // skipped when the log is read back.
        progress.applied.store(43, Ordering::Release);
        assert_eq!((send(6), send(7)), (47, 48));
        assert_eq!((seqs(0), seqs(1)), (vec![48, 43], vec![44, 45, 46, 47]));
        assert_eq!(read(&db, 43).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), [44, 45, 46, 47, 48]);
        // Reading stops where an earlier round's leftovers begin.
        assert_eq!(read(&db, 0).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), [44, 45, 46, 47, 48]);
        tx.blocking_send(Request::Shutdown).unwrap();
        assert_eq!(thread.join().unwrap(), 48);
    }

    /// A full disk refuses the batch (its senders get a negative ACK),
    /// gives its room back, and the next batch is written where it would
    /// have been, with the same numbers.
    #[test]
    fn a_failed_write_refuses_the_batch_and_the_next_one_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let progress = Arc::new(Progress::default());
        let mut log = InboundLog::create(&db, progress.clone(), true).unwrap();
        let good = std::mem::replace(&mut log.files[0], OpenOptions::new().write(true).open("/dev/full").unwrap());
        let (writer, mut handed) = mpsc::channel(16);
        let entry = |n| {
            let (durable, is_durable) = oneshot::channel();
            (Entry { inbound: message(n), durable, committed: CommitNotice::nobody() }, is_durable)
        };
        let (first, refused) = entry(1);
        log.append(&mut vec![first], &mut Vec::new(), &writer);
        let error = refused.blocking_recv().unwrap().unwrap_err().to_string();
        assert!(error.contains("cannot write the inbound log"), "{error}");
        assert!(handed.try_recv().is_err(), "a refused message reached the writer");
        assert_eq!(progress.in_flight.bytes(), 0, "the refused batch kept its room");
        log.files[0] = good;
        let (second, accepted) = entry(2);
        log.append(&mut vec![second], &mut Vec::new(), &writer);
        accepted.blocking_recv().unwrap().unwrap();
        assert!(matches!(handed.try_recv(), Ok(Op::Logged(m)) if m[0].2 == 1), "numbered as the refused one was");
        assert_eq!(read(&db, 0).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
    }

    /// A refused batch whose records reached the file whole (a write that
    /// failed part way, a sync that failed after the write) is never read
    /// back as received: neither after a shorter batch took its place nor
    /// when nothing was written after it.
    #[test]
    fn records_of_a_refused_batch_that_reached_the_file_are_never_read_back() {
        let big = |n| NewInbound { body: Bytes::from(vec![b'x'; 600]), ..message(n) };
        let (writer, _handed) = mpsc::channel(16);
        let entry = |inbound| {
            let (durable, is_durable) = oneshot::channel();
            (Entry { inbound, durable, committed: CommitNotice::nobody() }, is_durable)
        };
        let refuse = |log: &mut InboundLog| {
            let good = std::mem::replace(&mut log.files[0], OpenOptions::new().write(true).open("/dev/full").unwrap());
            let (entries, answers): (Vec<_>, Vec<_>) = (1..=3).map(|n| entry(big(n))).unzip();
            log.append(&mut entries.into_iter().collect(), &mut Vec::new(), &writer);
            for answer in answers {
                assert!(answer.blocking_recv().unwrap().is_err());
            }
            // What the failed write left: all three records, whole.
            let mut left = Vec::new();
            for n in 1..=3 {
                encode(n, &big(n), &mut left);
            }
            good.write_all_at(&left, 0).unwrap();
            log.files[0] = good;
        };
        let seqs = |db: &Path| read(db, 0).unwrap().iter().map(|r| (r.seq, r.inbound.body.len())).collect::<Vec<_>>();

        // A shorter batch takes the place: its write carries the zeros.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut log = InboundLog::create(&db, Arc::new(Progress::default()), true).unwrap();
        refuse(&mut log);
        let (short, accepted) = entry(message(1));
        log.append(&mut vec![short], &mut Vec::new(), &writer);
        accepted.blocking_recv().unwrap().unwrap();
        assert_eq!(seqs(&db), [(1, message(1).body.len())], "only the accepted message");

        // Nothing written after: the wipe clears them once it can.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut log = InboundLog::create(&db, Arc::new(Progress::default()), true).unwrap();
        refuse(&mut log);
        assert_eq!(seqs(&db).len(), 3, "the refused records are in the file");
        log.wipe_refused();
        assert_eq!(seqs(&db), [], "the refused records are gone");
        assert_eq!(log.refused_end, 0);
    }

    fn read_one(db: &Path, n: usize) -> Vec<Record> {
        let bytes = std::fs::read(segment_path(db, n)).unwrap();
        let mut records = Vec::new();
        let mut at = 0;
        while let Some((record, len)) = decode(&bytes[at..], 0) {
            records.extend(record);
            at += len;
        }
        records
    }

    proptest::proptest! {
        /// Whatever the files hold after a power cut or a bad disk, reading
        /// them back never panics.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode(&bytes, 0);
        }

        /// A record whose checksum holds but whose contents are nonsense
        /// (a bug in a writer, not a torn write) is refused cleanly.
        #[test]
        fn nonsense_contents_are_refused(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut bytes = vec![MAGIC];
            bytes.extend_from_slice(&9u64.to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&payload);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(&bytes, 0);
        }

        /// A record with any one byte changed is refused, never read as
        /// another message.
        #[test]
        fn a_changed_byte_is_caught(at in 0usize..1000, flip in 1u8..=255) {
            let mut bytes = Vec::new();
            encode(5, &message(5), &mut bytes);
            let at = at % bytes.len();
            bytes[at] ^= flip;
            proptest::prop_assert!(decode(&bytes, 0).is_none());
        }
    }

    /// A record as the version before the patient fields wrote it: the
    /// same payload without its last two values (and its own length and
    /// checksum). It still reads, with the patient taken from the body.
    #[test]
    fn a_record_written_before_the_patient_fields_reads_with_them_from_the_body() {
        let mut m = message(3);
        m.body = Bytes::from_static(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|M3|P|2.5\rPID|1||42^^^H||DOE^JANE");
        (m.patient_id, m.patient_name) = (Some("stale".into()), None);
        let mut bytes = Vec::new();
        encode(3, &m, &mut bytes);
        // The checksum, the patient id (length and bytes) and the absent
        // name's marker.
        let tail = 4 + (4 + "stale".len()) + 4;
        let end = bytes.len() - tail;
        let mut old = bytes[..end].to_vec();
        let len = (old.len() - HEAD) as u32;
        old[9..13].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let (record, read) = decode(&old, 0).unwrap();
        let record = record.unwrap();
        assert_eq!(read, old.len());
        assert_eq!(record.inbound.patient_id.as_deref(), Some("42"));
        assert_eq!(record.inbound.patient_name.as_deref(), Some("DOE"));
        assert_eq!(record.inbound.control_id, m.control_id);
        // Written now, the values given are the values read.
        let (record, _) = decode(&bytes, 0).unwrap();
        assert_eq!(record.unwrap().inbound.patient_id.as_deref(), Some("stale"));
    }

    fn encoded(seqs: impl IntoIterator<Item = u64>) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for seq in seqs {
            starts.push(bytes.len());
            encode(seq, &message(seq), &mut bytes);
        }
        (bytes, starts)
    }

    fn seqs(rest: &Rest) -> Vec<u64> {
        rest.records.iter().map(|r| r.seq).collect()
    }

    /// What follows the round in an intact file is not taken for records:
    /// zeros, and what an earlier round left, torn at any byte.
    #[test]
    fn zeros_and_an_earlier_rounds_leftovers_are_not_records() {
        let (old, _) = encoded(1..=6);
        for cut in [0, 1, 13, 40, old.len() / 2] {
            let mut tail = old[cut..].to_vec();
            tail.extend([0; 300]);
            for (previous, applied) in [(9, 9), (0, 6)] {
                let rest = rest(&tail, 100, previous, applied);
                assert!(rest.records.is_empty() && rest.gaps.is_empty(), "cut {cut}");
                assert_eq!((rest.torn, rest.unreadable.len()), (None, 0), "cut {cut}");
            }
        }
    }

    /// Records written after a damaged one are found and kept; the gap is
    /// where the damage is, and a torn last record is told apart.
    #[test]
    fn records_past_damage_are_found_and_the_damage_placed() {
        let (mut bytes, starts) = encoded(5..=9);
        // The tail starts at the damaged record 6, as the reader leaves it.
        bytes[starts[1] + 30] ^= 4;
        let tail = &bytes[starts[1]..];
        let rest = rest(tail, 1000, 5, 4);
        assert_eq!(seqs(&rest), [7, 8, 9]);
        assert_eq!(rest.gaps, [Gap { offset: 1000, len: (starts[2] - starts[1]) as u64, next: 7 }]);
        assert_eq!(rest.torn, None);
        // Records after damage that are committed already are found, not
        // returned.
        let rest = self::rest(tail, 1000, 5, 8);
        assert_eq!((seqs(&rest), rest.gaps.len()), (vec![9], 1));
        // The last record cut short: torn, not a gap.
        let cut = &bytes[starts[4]..bytes.len() - 1];
        let rest = self::rest(cut, 2000, 8, 4);
        assert_eq!((rest.torn, rest.gaps.len(), rest.records.len()), (Some((2000, 9)), 0, 0));
        // Its head damaged: no number to tell, and nothing follows.
        let mut zeros = bytes[starts[4]..].to_vec();
        zeros[0] = 0;
        let rest = self::rest(&zeros, 2000, 8, 4);
        assert_eq!((rest.torn, rest.gaps.len()), (None, 0));
    }

    #[test]
    fn missing_numbers_are_listed_as_ranges() {
        let records = |seqs: &[u64]| seqs.iter().map(|&seq| Record { seq, inbound: message(seq) }).collect::<Vec<_>>();
        assert_eq!(missing(&records(&[3, 4, 7, 9]), 2), [(5, 6), (8, 8)]);
        assert_eq!(missing(&records(&[5]), 2), [(3, 4)]);
        assert!(missing(&records(&[3, 4]), 2).is_empty());
        // Numbers at the top of the range, as a damaged file may hold.
        assert!(missing(&records(&[u64::MAX]), u64::MAX).is_empty());
        assert_eq!(missing(&records(&[u64::MAX]), u64::MAX - 3), [(u64::MAX - 2, u64::MAX - 1)]);
        assert_eq!(missing(&records(&[u64::MAX - 1, u64::MAX]), 0), [(1, u64::MAX - 2)]);
    }

    fn same(a: &NewInbound, b: &NewInbound) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn records_read_back_as_written_and_a_torn_tail_ends_the_file() {
        let mut bytes = Vec::new();
        encode(7, &message(7), &mut bytes);
        let first = bytes.len();
        encode(8, &message(8), &mut bytes);
        let (record, len) = decode(&bytes, 0).unwrap();
        let record = record.unwrap();
        assert_eq!((record.seq, len), (7, first));
        assert!(same(&record.inbound, &message(7)));
        let (record, _) = decode(&bytes[first..], 0).unwrap();
        assert!(same(&record.unwrap().inbound, &message(8)));
        assert!(matches!(decode(&bytes, 7), Some((None, len)) if len == first), "a committed record is skipped");
        for cut in first + 1..bytes.len() {
            assert!(decode(&bytes[first..cut], 0).is_none(), "a record cut at {cut} was read");
        }
        let mut flipped = bytes.clone();
        flipped[first + 40] ^= 1;
        assert!(decode(&flipped[first..], 0).is_none(), "a corrupt record was read");
        assert!(decode(&[0; 64], 0).is_none(), "zeros were read as a record");
    }
}
