//! The writer thread: takes every queued write operation, applies them all
//! in one transaction, commits once, and only then answers each caller. If
//! one operation fails, the group is redone with each operation in its own
//! savepoint, so that one failure does not undo the others.
//!
//! Header ids are chosen by the writer (the only one inserting them),
//! queue depth counters are updated in the same transaction as the headers
//! they count, and checkpoints run on a thread of their own.
//!
//! Durability is pipelined. SQLite runs with `synchronous=NORMAL`, so a
//! commit is a `write` to the write-ahead log: it survives a crash of the
//! process at once, but not a power cut. Received messages are durable
//! before they get here (the inbound log, see that module), and the last of
//! their records committed is stored with them; one that cannot be
//! committed is held and tried again, every later one behind it (see
//! [`Writer::hold`]). Other operations that must
//! survive a power cut before they are answered (a commanded state, a
//! resend) are handed to a second thread that fsyncs the write-ahead log and
//! then answers them, while the writer already builds the next group. Status
//! changes (a delivery finished, a message routed) are answered right after
//! the commit: losing one to a power cut means the message is delivered
//! again, which at-least-once delivery allows.
//!
//! This module is the loop alone: what goes into a group, when it is
//! committed, how each caller is answered and what is held back. Applying
//! a group is in `group`, the SQL of each operation in `sql`, and the sync
//! and checkpoint threads it starts in `disk`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::fs::File;
use std::path::PathBuf;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::disk::{checkpoint_loop, incremental_vacuum, run_in_background, sync_and_answer, sync_loop};
use super::error::StoreError;
use super::faults::FaultHook;
use super::group::{Applied, Isolation, LogProgress, apply_all};
use super::model::{Durability, StoreOptions};
use super::progress::Progress;
use super::protocol::{Done, Op, Outcome, settle};
use super::queues::Queues;

/// Most operations taken into one transaction.
const MAX_GROUP: usize = 1024;

/// How long a group of operations nobody waits for is held open for more.
const LAZY_DELAY: Duration = Duration::from_millis(1);

/// How often received messages and delivery results that could not be
/// committed are tried again (see [`Writer::hold`]).
const HELD_RETRY: Duration = Duration::from_secs(1);

/// How often a commit that keeps failing the same way is logged again: it
/// is tried every [`HELD_RETRY`] while the disk stays full.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Size of the write-ahead log past which the writer empties it itself
/// (see [`Writer::restart_starved_log`]): twice what the checkpoint thread
/// lets it reach.
const STARVED_LOG_BYTES: u64 = 32 * 1024 * 1024;
/// How long the writer waits, at most, for the log to be free to empty
/// then (commits wait meanwhile), and for a reader each try.
const STARVED_LOG_WAIT: Duration = Duration::from_millis(500);
const STARVED_LOG_READERS: Duration = Duration::from_millis(50);
/// When it tries again after readers kept it from emptying the log.
const STARVED_LOG_RETRY: Duration = Duration::from_millis(100);
/// How often the writer looks at the size of the log at most.
const STARVED_LOG_CHECK: Duration = Duration::from_millis(20);

pub(super) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    queues: Arc<Queues>,
    syncer: Option<std::sync::mpsc::Sender<Vec<Done>>>,
    /// The log and the writer's own descriptor on it, for syncing here when
    /// there is nothing else to do.
    wal: PathBuf,
    wal_file: Option<(File, u64)>,
    checkpointer: std::sync::mpsc::SyncSender<()>,
    /// The sync and checkpoint threads, joined when the writer ends: once
    /// [`Store::close`](super::Store::close) returns, no connection of the
    /// store is open, and a backup or a copy of the files sees them at
    /// rest.
    helpers: Vec<std::thread::JoinHandle<()>>,
    /// How far the inbound log is committed, and the same figure for the
    /// log's thread, which writes over a file once all of it is committed.
    log: LogProgress,
    progress: Arc<Progress>,
    /// Received messages that could not be committed, in the order
    /// received, with every one received after them, and delivery results
    /// that could not be committed (see [`Writer::hold`]).
    held: Vec<Op>,
    /// When what is held is tried next.
    retry_at: Instant,
    /// Messages have been held since they were last all committed.
    holding: bool,
    /// The last failed commit, while commits fail (see
    /// [`Writer::log_failure`]).
    failing: Option<Failing>,
    /// Run at [`BACKGROUND_NICE`](super::disk::BACKGROUND_NICE).
    low_priority: bool,
    /// When the writer next looks at the size of the log (see
    /// [`Writer::restart_starved_log`]).
    next_log_check: Instant,
    faults: FaultHook,
}

/// What the writer shares with the rest of the store.
pub(super) struct Shared {
    pub(super) queues: Arc<Queues>,
    pub(super) progress: Arc<Progress>,
    pub(super) faults: FaultHook,
}

impl Writer {
    /// `checkpoints` is a second connection to the same file: checkpoints
    /// run on it in their own thread, so copying the log into the database
    /// (and the fsyncs that go with it) never holds up a commit.
    pub(super) fn new(
        conn: Connection,
        checkpoints: Connection,
        rx: mpsc::Receiver<Op>,
        options: &StoreOptions,
        wal: PathBuf,
        shared: Shared,
    ) -> std::io::Result<Self> {
        let Shared { queues, progress, faults } = shared;
        let low_priority = options.low_background_priority;
        let mut helpers = Vec::with_capacity(2);
        let syncer = match options.durability {
            Durability::Normal => None,
            Durability::Full => {
                let (tx, rx) = std::sync::mpsc::channel();
                let wal = wal.clone();
                helpers
                    .push(std::thread::Builder::new().name("store-sync".into()).spawn(move || sync_loop(&wal, &rx))?);
                Some(tx)
            }
        };
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        helpers.push(std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || {
            if low_priority {
                run_in_background();
            }
            checkpoint_loop(&checkpoints, &nudged);
        })?);
        let log = LogProgress { applied: progress.applied.load(Ordering::Acquire), stuck: false };
        Ok(Self {
            conn,
            rx,
            queues,
            syncer,
            wal,
            wal_file: None,
            checkpointer: nudge,
            helpers,
            log,
            progress,
            held: Vec::new(),
            retry_at: Instant::now(),
            holding: false,
            failing: None,
            low_priority,
            next_log_check: Instant::now(),
            faults,
        })
    }

    /// Commits what it is sent until told to stop or until every sender
    /// is gone, then stops its helper threads.
    pub(super) fn run(mut self) {
        self.serve();
        let Self { checkpointer, syncer, helpers, .. } = self;
        // Their channels closed, each finishes what it has and returns.
        drop((checkpointer, syncer));
        for thread in helpers {
            let _ = thread.join();
        }
    }

    fn serve(&mut self) {
        if self.low_priority {
            run_in_background();
        }
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            if self.held.is_empty() {
                let Some(first) = self.rx.blocking_recv() else { return };
                push(&mut group, first);
            } else {
                // Held messages are tried again at `retry_at`, with
                // whatever has arrived by then.
                std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()));
                match self.rx.try_recv() {
                    Ok(first) => push(&mut group, first),
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            self.take_waiting(&mut group);
            if !group.is_empty() && group.len() < MAX_GROUP && group.iter().all(Op::can_wait) {
                // Nobody waits for these: let more gather so that they
                // share a commit instead of taking one each.
                std::thread::sleep(LAZY_DELAY);
                self.take_waiting(&mut group);
            }
            let shutdown = group.iter().any(|op| matches!(op, Op::Shutdown));
            self.apply_group(&mut group);
            if shutdown {
                return;
            }
        }
    }

    fn take_waiting(&mut self, group: &mut Vec<Op>) {
        while group.len() < MAX_GROUP {
            match self.rx.try_recv() {
                Ok(op) => push(group, op),
                Err(_) => break,
            }
        }
    }

    fn apply_group(&mut self, group: &mut Vec<Op>) {
        let mut vacuum = Vec::new();
        let mut ops = Vec::with_capacity(group.len());
        for op in group.drain(..) {
            match op {
                // Incremental vacuum cannot run inside a transaction.
                Op::Vacuum { pages, reply } => vacuum.push((pages, reply)),
                Op::Shutdown => {}
                op => ops.push(op),
            }
        }
        // Held messages were received before anything in this group: they
        // go first (`run` waited for their retry), and if one fails again
        // the messages after it are held behind it. Held results go with
        // them.
        let retry = !self.held.is_empty();
        if retry {
            ops.splice(0..0, std::mem::take(&mut self.held));
        }
        if retry && let Err(e) = self.checkpoint_before_retry() {
            // No room for the checkpoint: nothing is committed this time.
            self.answer(ops, Err(e));
        } else if !ops.is_empty() {
            // The whole group in one transaction without savepoints (they
            // cost a copy of every page touched); if any operation fails the
            // transaction is rolled back and the group is redone with each
            // operation in its own savepoint, so the failure is undone alone
            // and the rest of the group commits.
            let result = match self.transaction(&ops, Isolation::Shared) {
                Ok(None) => self.transaction(&ops, Isolation::PerOperation),
                other => other,
            };
            self.answer(ops, result);
        }
        for (pages, reply) in vacuum {
            let freed = incremental_vacuum(&self.conn, pages);
            let _ = reply.send(freed.map_err(StoreError::from));
        }
        self.restart_starved_log();
    }

    /// Empties the write-ahead log between two commits once it is past
    /// [`STARVED_LOG_BYTES`].
    ///
    /// The checkpoint thread starts the log over at a quarter of that, but
    /// it needs the write lock for it, and transactions that follow each
    /// other without a pause (a purge's batches, a burst of traffic) can
    /// keep it from ever getting it: the log then grew with every batch, to
    /// 144 MB for a purge of 170,000 headers. The writer holds the lock
    /// already, so here only the checkpoint thread's own copying and
    /// readers can be in the way; they get [`STARVED_LOG_WAIT`] and no
    /// more, since commits wait meanwhile, and a log still busy is tried
    /// again after [`STARVED_LOG_RETRY`].
    fn restart_starved_log(&mut self) {
        let now = Instant::now();
        if now < self.next_log_check {
            return;
        }
        // Not a file system call for every commit: a log growing as fast
        // as a purge grows it passes the mark by a few MiB in that time.
        self.next_log_check = now + STARVED_LOG_CHECK;
        let Ok(len) = std::fs::metadata(&self.wal).map(|m| m.len()) else { return };
        if len <= STARVED_LOG_BYTES {
            return;
        }
        // Busy at once while the checkpoint thread copies frames of its
        // own: the log is emptied as soon as it is done, within a bound.
        let deadline = Instant::now() + STARVED_LOG_WAIT;
        let result = self.conn.busy_timeout(STARVED_LOG_READERS).and_then(|()| {
            let busy = loop {
                match self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
                    Ok(busy) if busy != 0 && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    other => break other,
                }
            };
            self.conn.busy_timeout(super::disk::BUSY_TIMEOUT)?;
            busy
        });
        match result {
            Ok(0) => tracing::debug!(bytes = len, "the write-ahead log was emptied between two commits"),
            Ok(_) => {
                self.next_log_check = Instant::now() + STARVED_LOG_RETRY;
                tracing::debug!(bytes = len, "the write-ahead log stayed busy; tried again shortly");
            }
            Err(e) => {
                self.next_log_check = Instant::now() + STARVED_LOG_RETRY;
                tracing::debug!(error = %e, bytes = len, "cannot empty the write-ahead log between two commits");
            }
        }
    }

    /// Copies the write-ahead log into the database and empties it before
    /// what is held is tried again, and fails if there is no room for
    /// that.
    ///
    /// When the disk fills up, checkpoints fail as commits do (the
    /// database cannot grow), so the log keeps everything committed
    /// since the last one. Committing the held messages first, once
    /// there is space again, would grow the log into that space and leave
    /// none for the checkpoint, which alone lets the log start over: the
    /// disk would stay full with nothing but the store's own files on it,
    /// however long the engine waited. A truncating checkpoint first puts
    /// the freed space to the database and gives the log's back to the
    /// file system. A checkpoint held up by a reader (busy) is no reason
    /// to wait: it does not mean the disk is full.
    fn checkpoint_before_retry(&self) -> Result<(), StoreError> {
        match self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint before committing what is held failed");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// Applies `ops` in one transaction and commits it. With
    /// [`Isolation::Shared`], returns `None` (everything rolled back) as
    /// soon as one operation fails.
    ///
    /// A failed transaction is rolled back here only while it is still
    /// open: on a full disk SQLite rolls it back itself, the failing
    /// statement's or the `COMMIT`'s error is the one returned, and a
    /// `ROLLBACK` then would only fail again ("no transaction is active"),
    /// hiding the cause from the log and the status.
    fn transaction(&mut self, ops: &[Op], isolation: Isolation) -> Result<Option<Applied>, StoreError> {
        // Immediate: the write lock is taken at the start, waiting (busy
        // timeout) while a checkpoint holds it; a deferred transaction would
        // fail instead of waiting when it upgrades from reading to writing.
        // The statements are cached: parsing them for every group costs
        // more than the small groups of a quiet moment do. A transaction
        // still open here is one whose rollback failed: it goes first.
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("ROLLBACK")?.execute([])?;
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let result = match apply_all(&self.conn, ops, isolation, &self.queues, self.log, &self.faults) {
            Ok(Some(applied)) => match self.conn.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])) {
                Ok(_) => return Ok(Some(applied)),
                // A failed COMMIT may leave the transaction open.
                Err(e) => Err(e.into()),
            },
            other => other,
        };
        if !self.conn.is_autocommit() {
            let rolled_back = self.conn.prepare_cached("ROLLBACK").and_then(|mut rollback| rollback.execute([]));
            if let (Ok(None), Err(e)) = (&result, rolled_back) {
                // The group cannot be redone inside a transaction left open.
                return Err(e.into());
            }
        }
        result
    }

    /// Answers every operation once its transaction is committed (or has
    /// failed), handing those that must be on disk first to the sync thread.
    fn answer(&mut self, ops: Vec<Op>, result: Result<Option<Applied>, StoreError>) {
        let mut committed_weight = 0;
        let applied = match result {
            Ok(Some(applied)) => applied,
            failed => {
                let text = match failed {
                    Err(e) => e.to_string(),
                    // Not reached: the per-operation pass never gives up.
                    // Kept as an answer rather than a panic.
                    Ok(_) => "the transaction could not be applied".to_owned(),
                };
                self.log_failure(&text, ops.len());
                for op in ops {
                    match op {
                        Op::Inbound(..) | Op::FinishNoted(..) => self.hold(op, &text),
                        op => settle(op, Outcome::Failed).send(Some(&text)),
                    }
                }
                return;
            }
        };
        if let Some(failing) = self.failing.take()
            && failing.repeats > 0
        {
            tracing::info!(
                error = %failing.text,
                "store commits succeed again after {} more failed tries",
                failing.repeats
            );
        }
        for (production, item, delta) in applied.deltas.iter() {
            self.queues.adjust(production, item, delta);
        }
        // A failure in this transaction held back the records after it;
        // the next one tries them again.
        self.log = LogProgress { stuck: false, ..applied.log };
        self.progress.applied.store(self.log.applied, Ordering::Release);
        let mut durable = Vec::new();
        for (op, outcome) in ops.into_iter().zip(applied.outcomes) {
            if let Op::Inbound(inbound, ..) = &op {
                match &outcome {
                    Outcome::Committed(Ok(_)) => committed_weight += inbound.weight(),
                    Outcome::Committed(Err(e)) => {
                        let cause = e.to_string();
                        self.hold(op, &cause);
                        continue;
                    }
                    _ => {
                        self.hold(op, "a message received before it could not be committed");
                        continue;
                    }
                }
            }
            if let (Op::FinishNoted(..), Outcome::Unit(Err(e))) = (&op, &outcome) {
                let cause = e.to_string();
                self.hold(op, &cause);
                continue;
            }
            let done = settle(op, outcome);
            if done.durable() && self.syncer.is_some() {
                durable.push(done);
            } else {
                done.send(None);
            }
        }
        if !durable.is_empty() {
            if self.rx.is_empty() {
                // Nothing else to commit meanwhile: sync here and save the
                // hop through the sync thread (a quiet moment, or one
                // connection).
                sync_and_answer(&self.wal, &mut self.wal_file, durable);
            } else if let Some(syncer) = &self.syncer
                && let Err(std::sync::mpsc::SendError(lost)) = syncer.send(durable)
            {
                for done in lost {
                    done.send(Some("the sync thread has stopped"));
                }
            }
        }
        self.progress.in_flight.release(committed_weight);
        if self.holding && self.held.is_empty() {
            self.holding = false;
            self.progress.trouble.send_replace(None);
            tracing::info!("the messages and results held back are committed");
        }
        // Full means a checkpoint is already due.
        let _ = self.checkpointer.try_send(());
    }

    /// Logs a failed commit: the first, one with another cause, and then
    /// one a minute with the count of the failures in between, so that a
    /// disk that stays full does not fill the log with a line a second.
    fn log_failure(&mut self, text: &str, operations: usize) {
        let now = Instant::now();
        if let Some(failing) = &mut self.failing
            && failing.text == text
            && now < failing.log_at
        {
            failing.repeats += 1;
            return;
        }
        let repeats = self.failing.as_ref().filter(|f| f.text == text).map_or(0, |f| f.repeats);
        if repeats > 0 {
            tracing::error!(error = %text, "store commit failed {repeats} more times; {operations} operations rejected");
        } else {
            tracing::error!(error = %text, "store commit failed; {operations} operations rejected");
        }
        self.failing = Some(Failing { text: text.to_owned(), log_at: now + FAILURE_LOG_INTERVAL, repeats: 0 });
    }

    /// Keeps a received message or a delivery result that could not be
    /// committed (a full disk, a damaged file), to try again every
    /// [`HELD_RETRY`].
    ///
    /// A received message's sender has the ACK and the inbound log has it,
    /// so it must reach the queues, and without overtaking: every message
    /// received after it is held behind it, in order. Committing later
    /// messages while it waits would break the order, and the log's record
    /// of what is committed (the last record applied) could then pass over
    /// it. Held messages count against the bound on messages in flight, so
    /// while the store cannot commit, acknowledgments soon wait instead of
    /// the log growing.
    ///
    /// A delivery result is safe in the delivery log, which keeps its
    /// message from being taken from the queue again until it is
    /// committed.
    fn hold(&mut self, op: Op, cause: &str) {
        if !self.holding {
            self.holding = true;
            self.progress.trouble.send_replace(Some(cause.to_owned()));
            tracing::error!(
                %cause,
                "the store cannot commit; received messages and delivery results are kept in their logs and tried again every {HELD_RETRY:?}"
            );
        }
        self.held.push(op);
        self.retry_at = Instant::now() + HELD_RETRY;
    }
}

/// A commit that failed, and how often it failed the same way since it
/// was last logged.
struct Failing {
    text: String,
    log_at: Instant,
    repeats: u64,
}

/// Adds an operation to a group, taking a batch of logged messages apart.
fn push(group: &mut Vec<Op>, op: Op) {
    match op {
        Op::Logged(messages) => {
            group.extend(messages.into_iter().map(|(inbound, reply, seq)| Op::Inbound(inbound, reply, seq)));
        }
        op => group.push(op),
    }
}
