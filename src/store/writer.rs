//! The writer thread: takes every queued write operation, applies them all
//! in one transaction, commits once, and only then answers each caller. If
//! one operation fails, the group is redone with each operation in its own
//! savepoint, so that one failure does not undo the others.
//!
//! Header ids are chosen here (the writer is the only one inserting them),
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::fs::File;
use std::path::PathBuf;

use rusqlite::{CachedStatement, Connection, params};
use tokio::sync::mpsc;

use super::disk::{checkpoint_loop, incremental_vacuum, run_in_background, sync_and_answer, sync_loop};
use super::error::StoreError;
use super::model::{
    Committed, Durability, Event, Finished, NewInbound, PurgeStep, Routed, RoutedOutput, Status, StoreOptions,
};
use super::now_millis;
use super::pending::CommitNotice;
use super::progress::Progress;
use super::protocol::{Done, Op, Outcome, settle};
use super::queues::{Deltas, Depths, Queues};

/// Most operations taken into one transaction.
const MAX_GROUP: usize = 1024;

/// How long a group of operations nobody waits for is held open for more.
const LAZY_DELAY: Duration = Duration::from_millis(1);

/// How often received messages and delivery results that could not be
/// committed are tried again (see [`Writer::hold`]).
const HELD_RETRY: Duration = Duration::from_secs(1);

/// How a group's operations are kept apart inside its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints; one failure abandons the whole transaction.
    Shared,
    /// A savepoint per operation.
    PerOperation,
}

/// What a committed transaction produced.
struct Applied {
    outcomes: Vec<Outcome>,
    deltas: Deltas,
    /// How far the inbound log is committed with this transaction.
    log: LogProgress,
}

/// Header ids are chosen by the writer, not by SQLite, so that a session's
/// first header can carry its own id as the session id in one insert.
/// The writer is the only one inserting headers, so the largest id read at
/// the start of a transaction stays the largest until it ends.
struct HeaderIds {
    next: i64,
}

impl HeaderIds {
    fn next_free(tx: &Connection) -> rusqlite::Result<Self> {
        let max: i64 = tx.prepare_cached("SELECT IFNULL(MAX(id), 0) FROM header")?.query_row([], |r| r.get(0))?;
        Ok(Self { next: max + 1 })
    }

    fn take(&mut self) -> i64 {
        let id = self.next;
        self.next += 1;
        id
    }
}

/// Adds a group's queue depth changes to the persisted counters, one
/// statement per queue touched.
fn update_depths(tx: &Connection, sums: &Deltas) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO queue_depth (production, item, depth) VALUES (?1, ?2, ?3)
         ON CONFLICT(production, item) DO UPDATE SET depth = depth + excluded.depth",
    )?;
    for (production, item, delta) in sums.iter().filter(|s| s.2 != 0) {
        stmt.execute(params![production, item, delta])?;
    }
    Ok(())
}

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
    /// Run at [`BACKGROUND_NICE`](super::disk::BACKGROUND_NICE).
    low_priority: bool,
}

impl Writer {
    /// `checkpoints` is a second connection to the same file: checkpoints
    /// run on it in their own thread, so copying the log into the database
    /// (and the fsyncs that go with it) never holds up a commit.
    pub(super) fn new(
        conn: Connection,
        checkpoints: Connection,
        rx: mpsc::Receiver<Op>,
        queues: Arc<Queues>,
        options: &StoreOptions,
        wal: PathBuf,
        progress: Arc<Progress>,
    ) -> std::io::Result<Self> {
        let low_priority = options.low_background_priority;
        let syncer = match options.durability {
            Durability::Normal => None,
            Durability::Full => {
                let (tx, rx) = std::sync::mpsc::channel();
                let wal = wal.clone();
                std::thread::Builder::new().name("store-sync".into()).spawn(move || sync_loop(&wal, &rx))?;
                Some(tx)
            }
        };
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || {
            if low_priority {
                run_in_background();
            }
            checkpoint_loop(&checkpoints, &nudged);
        })?;
        let log = LogProgress { applied: progress.applied.load(Ordering::Acquire), stuck: false };
        Ok(Self {
            conn,
            rx,
            queues,
            syncer,
            wal,
            wal_file: None,
            checkpointer: nudge,
            log,
            progress,
            held: Vec::new(),
            retry_at: Instant::now(),
            holding: false,
            low_priority,
        })
    }

    pub(super) fn run(mut self) {
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
        if !self.held.is_empty() {
            ops.splice(0..0, std::mem::take(&mut self.held));
        }
        if !ops.is_empty() {
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
    }

    /// Applies `ops` in one transaction and commits it. With
    /// [`Isolation::Shared`], returns `None` (everything rolled back) as
    /// soon as one operation fails.
    fn transaction(&mut self, ops: &[Op], isolation: Isolation) -> rusqlite::Result<Option<Applied>> {
        // Immediate: the write lock is taken at the start, waiting (busy
        // timeout) while a checkpoint holds it; a deferred transaction would
        // fail instead of waiting when it upgrades from reading to writing.
        // The statements are cached: parsing them for every group costs
        // more than the small groups of a quiet moment do.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let applied = apply_all(&self.conn, ops, isolation, &self.queues, self.log);
        let end = match &applied {
            Ok(Some(_)) => "COMMIT",
            Ok(None) | Err(_) => "ROLLBACK",
        };
        match self.conn.prepare_cached(end)?.execute([]) {
            Ok(_) => applied,
            Err(e) => {
                // A failed COMMIT leaves the transaction open.
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Answers every operation once its transaction is committed (or has
    /// failed), handing those that must be on disk first to the sync thread.
    fn answer(&mut self, ops: Vec<Op>, result: rusqlite::Result<Option<Applied>>) {
        let mut committed_weight = 0;
        let applied = match result {
            Ok(Some(applied)) => applied,
            failed => {
                let text = match failed {
                    Err(e) => {
                        tracing::error!(error = %e, "store commit failed; {} operations rejected", ops.len());
                        e.to_string()
                    }
                    // Not reached: the per-operation pass never gives up.
                    // Kept as an answer rather than a panic.
                    Ok(_) => "the transaction could not be applied".to_owned(),
                };
                for op in ops {
                    match op {
                        Op::Inbound(..) | Op::FinishNoted(..) => self.hold(op, &text),
                        op => settle(op, Outcome::Failed).send(Some(&text)),
                    }
                }
                return;
            }
        };
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

/// Adds an operation to a group, taking a batch of logged messages apart.
fn push(group: &mut Vec<Op>, op: Op) {
    match op {
        Op::Logged(messages) => {
            group.extend(messages.into_iter().map(|(inbound, reply, seq)| Op::Inbound(inbound, reply, seq)));
        }
        op => group.push(op),
    }
}

/// The statements run for every message, each taken from rusqlite's
/// statement cache once per transaction instead of once per message:
/// taking one hashes its text twice and copies it into a new allocation.
struct Statements<'c> {
    tx: &'c Connection,
    held: [Option<CachedStatement<'c>>; HOT_SQL.len()],
}

/// Which of [`HOT_SQL`] a statement is.
#[derive(Clone, Copy)]
enum Hot {
    InsertBody,
    InsertHeader,
    InsertOutput,
    FinishHeader,
    InsertReply,
}

const HOT_SQL: [&str; 5] = [
    "INSERT INTO body (created_at, data) VALUES (?1, ?2)",
    "INSERT INTO header (id, session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at, attempts, error_text)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13)",
    "INSERT INTO header (id, session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?10)",
    "UPDATE header SET status = ?1, attempts = ?2, error_text = ?3, updated_at = ?4
     WHERE id = ?5 AND status IN ('queued', 'delivering')",
    "INSERT INTO reply (header_id, received_at, data) VALUES (?1, ?2, ?3)
     ON CONFLICT(header_id) DO UPDATE SET received_at = excluded.received_at, data = excluded.data",
];

impl<'c> Statements<'c> {
    fn new(tx: &'c Connection) -> Self {
        Self { tx, held: Default::default() }
    }

    fn get(&mut self, which: Hot) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.held[which as usize];
        match slot {
            Some(stmt) => Ok(stmt),
            None => Ok(slot.insert(self.tx.prepare_cached(HOT_SQL[which as usize])?)),
        }
    }
}

/// Applies `ops` inside the open transaction (see
/// [`Writer::transaction`]).
fn apply_all(
    tx: &Connection,
    ops: &[Op],
    isolation: Isolation,
    queues: &Queues,
    log: LogProgress,
) -> rusqlite::Result<Option<Applied>> {
    let mut ids = HeaderIds::next_free(tx)?;
    let mut applied = Applied { outcomes: Vec::with_capacity(ops.len()), deltas: Deltas::default(), log };
    let mut op_deltas = Deltas::default();
    let mut statements = Statements::new(tx);
    for op in ops {
        if applied.log.stuck && matches!(op, Op::Inbound(..)) {
            // Not applied behind the one that failed: that would commit
            // them out of order and pass over it in the log.
            applied.outcomes.push(Outcome::Held);
            continue;
        }
        if isolation == Isolation::PerOperation {
            tx.prepare_cached("SAVEPOINT op")?.execute([])?;
        }
        op_deltas.reset();
        let depths = Depths { committed: queues, pending: &applied.deltas };
        let outcome = apply(&mut statements, op, &mut ids, &depths, &mut op_deltas);
        match (outcome.ok(), isolation) {
            (true, Isolation::Shared) => {}
            (true, Isolation::PerOperation) => {
                tx.prepare_cached("RELEASE op")?.execute([])?;
            }
            // The caller rolls the whole transaction back.
            (false, Isolation::Shared) => return Ok(None),
            (false, Isolation::PerOperation) => {
                tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
            }
        }
        if outcome.ok() {
            applied.deltas.merge(&op_deltas);
        }
        if let Op::Inbound(.., seq) = op {
            applied.log.record(*seq, outcome.ok());
        }
        applied.outcomes.push(outcome);
    }
    drop(statements);
    update_depths(tx, &applied.deltas)?;
    if applied.log.applied != log.applied {
        tx.prepare_cached("UPDATE inbound_log SET applied = ?1 WHERE id = 0")?.execute([applied.log.applied as i64])?;
    }
    Ok(Some(applied))
}

/// Commits the records of the inbound log after `applied` (acknowledged,
/// but not committed before the previous run ended) in one transaction, as
/// the writer would have; returns the last record now applied. Fails, with
/// nothing committed, if any record cannot be.
pub(super) fn replay(
    conn: &Connection,
    records: Vec<super::inbound_log::Record>,
    queues: &Queues,
    applied: u64,
) -> Result<u64, StoreError> {
    let ops: Vec<Op> = records
        .into_iter()
        .filter(|r| r.seq > applied)
        .map(|r| Op::Inbound(r.inbound, CommitNotice::nobody(), r.seq))
        .collect();
    if ops.is_empty() {
        return Ok(applied);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let refuse = |seq, reason| {
        let _ = conn.execute_batch("ROLLBACK");
        Err(StoreError::InboundLog { seq, reason })
    };
    let progress = LogProgress { applied, stuck: false };
    let done = match apply_all(conn, &ops, Isolation::PerOperation, queues, progress) {
        Ok(Some(done)) => done,
        // Not reached: the per-operation pass never gives up.
        Ok(None) => return refuse(applied + 1, "the transaction failed".to_owned()),
        Err(e) => return refuse(applied + 1, e.to_string()),
    };
    // The first record that cannot be committed, and why.
    for (outcome, op) in done.outcomes.iter().zip(&ops) {
        if let (Outcome::Committed(Err(e)), Op::Inbound(.., seq)) = (outcome, op) {
            return refuse(*seq, e.to_string());
        }
    }
    conn.execute_batch("COMMIT")?;
    for (production, item, delta) in done.deltas.iter() {
        queues.adjust(production, item, delta);
    }
    tracing::info!(messages = ops.len(), "received messages committed from the inbound log");
    Ok(done.log.applied)
}

/// How far the inbound log's records are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogProgress {
    /// Every record up to this one is committed.
    pub(super) applied: u64,
    /// A record failed to commit in this transaction: the records after it
    /// are not applied in it either.
    pub(super) stuck: bool,
}

impl LogProgress {
    fn record(&mut self, seq: u64, ok: bool) {
        if self.stuck {
            return;
        }
        if ok {
            self.applied = self.applied.max(seq);
        } else {
            self.stuck = true;
        }
    }
}

fn apply(st: &mut Statements<'_>, op: &Op, ids: &mut HeaderIds, depths: &Depths<'_>, deltas: &mut Deltas) -> Outcome {
    let tx = st.tx;
    let unit = |r: rusqlite::Result<()>| Outcome::Unit(r.map_err(Into::into));
    match op {
        Op::Inbound(inbound, ..) => {
            Outcome::Committed(inbound_tx(st, inbound, ids, depths, deltas).map_err(Into::into))
        }
        Op::Routed(all, _) => Outcome::Ids(
            all.iter()
                .map(|routed| routed_tx(st, routed, ids, deltas))
                .collect::<rusqlite::Result<_>>()
                .map_err(Into::into),
        ),
        Op::MarkDelivering(header_ids, _) => unit(set_status(tx, header_ids, "delivering", "queued")),
        Op::Requeue(header_ids, _) => unit(set_status(tx, header_ids, "queued", "delivering")),
        Op::RequeueItem(production, item, _) => unit(
            tx.prepare_cached(
                "UPDATE header SET status = 'queued', updated_at = ?1
                 WHERE production = ?2 AND target = ?3 AND status = 'delivering'",
            )
            .and_then(|mut stmt| stmt.execute(params![now_millis(), production, item]))
            .map(drop),
        ),
        Op::Finish(finished, _) | Op::FinishNoted(finished, _) => unit(finish_tx(st, finished, deltas)),
        Op::Resend(id, _) => Outcome::Bool(resend_tx(tx, *id, deltas).map_err(Into::into)),
        Op::Event(event, _) => unit(event_tx(tx, event)),
        Op::Commanded(production, state, _) => unit(
            tx.execute(
                "INSERT INTO production_state (production, commanded, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(production) DO UPDATE SET commanded = excluded.commanded, at = excluded.at",
                params![production, state, now_millis()],
            )
            .map(drop),
        ),
        Op::ItemEnabled(production, item, enabled, _) => unit(
            tx.execute(
                "INSERT INTO item_state (production, item, enabled, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(production, item) DO UPDATE SET enabled = excluded.enabled, at = excluded.at",
                params![production, item, *enabled as i64, now_millis()],
            )
            .map(drop),
        ),
        Op::DiscoveryTopics(topics, _) => unit(replace_discovery_topics(tx, topics)),
        Op::PurgeBatch { cutoff, after, limit, .. } => {
            Outcome::Purge(purge_tx(tx, *cutoff, *after, *limit).map_err(Into::into))
        }
        Op::Vacuum { .. } | Op::Shutdown | Op::Logged(_) => Outcome::Unit(Ok(())),
    }
}

fn inbound_tx(
    st: &mut Statements<'_>,
    inbound: &NewInbound,
    ids: &mut HeaderIds,
    depths: &Depths<'_>,
    deltas: &mut Deltas,
) -> rusqlite::Result<Committed> {
    let now = now_millis();
    st.get(Hot::InsertBody)?.execute(params![now, &inbound.body[..]])?;
    let body_id = st.tx.last_insert_rowid();
    // The service's own header opens the session; its id is the session id.
    let header_id = ids.take();
    st.get(Hot::InsertHeader)?.execute(params![
        header_id,
        header_id,
        None::<i64>,
        body_id,
        inbound.production,
        inbound.origin,
        inbound.service,
        Status::Completed.as_str(),
        inbound.control_id,
        inbound.message_type,
        now,
        0,
        None::<&str>
    ])?;
    let mut committed = Committed { session_id: header_id, header_id, queued: Vec::new(), routed: Vec::new() };
    for target in inbound.targets.iter() {
        let id = ids.take();
        // A router with nothing queued has routed the message already; one
        // with a backlog gets it queued behind that backlog.
        let route = inbound
            .routed
            .iter()
            .find(|r| &r.router == target)
            .filter(|_| depths.is_empty(&inbound.production, target));
        let (status, attempts, error) = match route {
            Some(r) => (r.decision.status, 1, r.decision.error.as_deref()),
            None => (Status::Queued, 0, None),
        };
        st.get(Hot::InsertHeader)?.execute(params![
            id,
            header_id,
            header_id,
            body_id,
            inbound.production,
            inbound.service,
            target,
            status.as_str(),
            inbound.control_id,
            inbound.message_type,
            now,
            attempts,
            error
        ])?;
        committed.queued.push(id);
        match route {
            Some(route) => {
                let parent = Parent {
                    session_id: header_id,
                    header_id: id,
                    body_id,
                    production: &inbound.production,
                    item: target,
                    control_id: inbound.control_id.as_deref(),
                    message_type: inbound.message_type.as_deref(),
                };
                queue_outputs(st, &parent, &route.decision.outputs, now, ids, deltas)?;
                committed.routed.push(target.clone());
            }
            None => deltas.add(&inbound.production, target, 1),
        }
    }
    Ok(committed)
}

/// The header a router's outputs come from.
struct Parent<'a> {
    session_id: i64,
    header_id: i64,
    body_id: i64,
    production: &'a str,
    /// The router.
    item: &'a str,
    control_id: Option<&'a str>,
    message_type: Option<&'a str>,
}

/// Queues a router's outputs, each with its own body when transformed.
fn queue_outputs(
    st: &mut Statements<'_>,
    parent: &Parent<'_>,
    outputs: &[RoutedOutput],
    now: i64,
    ids: &mut HeaderIds,
    deltas: &mut Deltas,
) -> rusqlite::Result<Vec<i64>> {
    let mut queued = Vec::with_capacity(outputs.len());
    for output in outputs {
        let body = match &output.body {
            Some(bytes) => {
                st.get(Hot::InsertBody)?.execute(params![now, &bytes[..]])?;
                st.tx.last_insert_rowid()
            }
            None => parent.body_id,
        };
        let control = output.control_id.as_deref().or(parent.control_id);
        let id = ids.take();
        st.get(Hot::InsertOutput)?.execute(params![
            id,
            parent.session_id,
            parent.header_id,
            body,
            parent.production,
            parent.item,
            output.target,
            control,
            parent.message_type,
            now
        ])?;
        queued.push(id);
        deltas.add(parent.production, &output.target, 1);
    }
    Ok(queued)
}

fn routed_tx(
    st: &mut Statements<'_>,
    routed: &Routed,
    ids: &mut HeaderIds,
    deltas: &mut Deltas,
) -> rusqlite::Result<Vec<i64>> {
    let (tx, now) = (st.tx, now_millis());
    let (session_id, body_id, production, router, control_id, message_type): (
        i64,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
    ) = tx
        .prepare_cached(
            "SELECT session_id, body_id, production, target, control_id, message_type FROM header WHERE id = ?1",
        )?
        .query_row([routed.header_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
    let changed = tx
        .prepare_cached(
            "UPDATE header SET status = ?1, error_text = ?2, updated_at = ?3, attempts = attempts + 1
             WHERE id = ?4 AND status IN ('queued', 'delivering')",
        )?
        .execute(params![routed.decision.status.as_str(), routed.decision.error, now, routed.header_id])?;
    if changed == 0 {
        // Already finished (e.g. by a concurrent stop): nothing to route.
        return Ok(Vec::new());
    }
    deltas.add(&production, &router, -1);
    let parent = Parent {
        session_id,
        header_id: routed.header_id,
        body_id,
        production: &production,
        item: &router,
        control_id: control_id.as_deref(),
        message_type: message_type.as_deref(),
    };
    queue_outputs(st, &parent, &routed.decision.outputs, now, ids, deltas)
}

fn set_status(tx: &Connection, ids: &[i64], to: &str, from: &str) -> rusqlite::Result<()> {
    let now = now_millis();
    let mut stmt = tx.prepare_cached("UPDATE header SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status = ?4")?;
    for id in ids {
        stmt.execute(params![to, now, id, from])?;
    }
    Ok(())
}

fn finish_tx(st: &mut Statements<'_>, f: &Finished, deltas: &mut Deltas) -> rusqlite::Result<()> {
    let now = now_millis();
    let changed =
        st.get(Hot::FinishHeader)?.execute(params![f.status.as_str(), f.attempts as i64, f.error, now, f.header_id])?;
    if let Some(reply) = &f.reply {
        st.get(Hot::InsertReply)?.execute(params![f.header_id, now, &reply[..]])?;
    }
    if changed > 0 && !f.status.is_pending() {
        deltas.add(&f.production, &f.item, -1);
    }
    Ok(())
}

/// Records the reply to a header's delivery, replacing an earlier one.
pub(super) fn store_reply(tx: &Connection, header_id: i64, at: i64, data: &[u8]) -> rusqlite::Result<()> {
    tx.prepare_cached(HOT_SQL[Hot::InsertReply as usize])?.execute(params![header_id, at, data])?;
    Ok(())
}

fn resend_tx(tx: &Connection, id: i64, deltas: &mut Deltas) -> rusqlite::Result<bool> {
    let row: Option<(String, String)> = tx
        .query_row(
            "SELECT production, target FROM header WHERE id = ?1 AND status IN ('suspended', 'error', 'discarded')",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    let Some((production, target)) = row else { return Ok(false) };
    tx.execute(
        "UPDATE header SET status = 'queued', error_text = NULL, updated_at = ?1 WHERE id = ?2",
        params![now_millis(), id],
    )?;
    deltas.add(&production, &target, 1);
    Ok(true)
}

fn replace_discovery_topics(tx: &Connection, topics: &[String]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM discovery_topic", [])?;
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO discovery_topic (topic, at) VALUES (?1, ?2)")?;
    let now = now_millis();
    for topic in topics {
        insert.execute(params![topic, now])?;
    }
    Ok(())
}

fn event_tx(tx: &Connection, e: &Event) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO event (at, level, production, item, kind, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![now_millis(), e.level.as_str(), e.production, e.item, e.kind, e.text])?;
    Ok(())
}

/// One purge batch: looks at up to `limit` headers after id `after`, in id
/// order, and removes those that are finished and older than `cutoff`, each
/// with its reply, and its body once no header of its session uses it any
/// more; then up to `limit` old events.
///
/// Ids grow with time, so the walk stops at the first header not older
/// than the cutoff and needs no index on creation times (which every
/// commit would have to update). After a clock step backwards a few old
/// headers may wait for a later purge; none younger than the cutoff is
/// ever removed.
fn purge_tx(tx: &Connection, cutoff: i64, after: i64, limit: usize) -> rusqlite::Result<PurgeStep> {
    let limit = limit.max(1);
    let rows: Vec<(i64, i64, i64, i64, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, session_id, body_id, created_at, status FROM header WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut step = PurgeStep { after, headers_done: rows.len() < limit, ..PurgeStep::default() };
    let mut del_reply = tx.prepare_cached("DELETE FROM reply WHERE header_id = ?1")?;
    let mut del_header = tx.prepare_cached("DELETE FROM header WHERE id = ?1")?;
    let mut body_used = tx.prepare_cached("SELECT 1 FROM header WHERE session_id = ?1 AND body_id = ?2 LIMIT 1")?;
    let mut del_body = tx.prepare_cached("DELETE FROM body WHERE id = ?1")?;
    for (id, session_id, body_id, created_at, status) in rows {
        if created_at >= cutoff {
            step.headers_done = true;
            break;
        }
        step.after = id;
        if Status::parse(&status).is_some_and(Status::is_pending) {
            continue;
        }
        del_reply.execute([id])?;
        step.stats.headers += del_header.execute([id])? as u64;
        // Every header using a body belongs to the session it came in with.
        if !body_used.exists(params![session_id, body_id])? {
            step.stats.bodies += del_body.execute([body_id])? as u64;
        }
    }
    step.stats.events = tx.execute(
        "DELETE FROM event WHERE id IN (SELECT id FROM event WHERE at < ?1 ORDER BY id LIMIT ?2)",
        params![cutoff, limit as i64],
    )? as u64;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::store::{InlineRoute, RouteDecision, schema};

    /// A message for the router `Router`, decided on receipt or not.
    fn inbound(n: usize, route: bool) -> NewInbound {
        let routed = route.then(|| InlineRoute {
            router: "Router".into(),
            decision: RouteDecision {
                status: Status::Completed,
                error: None,
                outputs: vec![RoutedOutput { target: "Out".into(), body: None, control_id: None }],
            },
        });
        NewInbound {
            targets: ["Router".to_owned()].into(),
            routed: routed.into_iter().collect(),
            ..super::super::tests::inbound(n)
        }
    }

    /// A connection to a new store with its schema, for applying groups
    /// by hand.
    fn migrated(dir: &std::path::Path) -> Connection {
        let mut conn = super::super::disk::open_connection(&dir.join("s.db")).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn
    }

    /// Within one group, a message queued for a router by an earlier
    /// operation is a backlog the next message's decision must wait behind,
    /// although the committed depth still says the queue is empty.
    #[test]
    fn a_decision_waits_behind_a_message_queued_earlier_in_the_same_group() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(dir.path());
        let queues = Queues::default();
        let reply = CommitNotice::nobody;
        let ops = vec![
            Op::Inbound(inbound(1, true), reply(), 1),
            Op::Inbound(inbound(2, false), reply(), 2),
            Op::Inbound(inbound(3, true), reply(), 3),
        ];
        conn.execute_batch("BEGIN").unwrap();
        let applied = apply_all(&conn, &ops, Isolation::Shared, &queues, LogProgress::default()).unwrap().unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let routed: Vec<Vec<String>> = applied.outcomes.into_iter().map(|o| o.committed().unwrap().routed).collect();
        assert_eq!(routed, [vec!["Router".to_owned()], vec![], vec![]]);
        let depth = |item: &str| applied.deltas.get("p", item);
        assert_eq!((depth("Router"), depth("Out")), (2, 1));
    }

    /// A group that finishes one message of a queue and queues another
    /// there leaves its depth as it was, and still reports the queue, so
    /// that its item is woken for the new one.
    #[test]
    fn a_queue_whose_depth_a_group_leaves_as_it_was_is_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        let conn = migrated(dir.path());
        let queues = Queues::default();
        let first = vec![Op::Inbound(super::super::tests::inbound(1), CommitNotice::nobody(), 1)];
        conn.execute_batch("BEGIN").unwrap();
        let applied = apply_all(&conn, &first, Isolation::Shared, &queues, LogProgress::default()).unwrap().unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let queued = applied.outcomes.into_iter().next().unwrap().committed().unwrap().queued[0];
        queues.adjust("p", "Out", 1);
        let ops = vec![
            Op::Finish(super::super::tests::completed(queued), oneshot::channel().0),
            Op::Inbound(super::super::tests::inbound(2), CommitNotice::nobody(), 2),
        ];
        conn.execute_batch("BEGIN").unwrap();
        let applied = apply_all(&conn, &ops, Isolation::Shared, &queues, LogProgress { applied: 1, stuck: false })
            .unwrap()
            .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(applied.deltas.iter().collect::<Vec<_>>(), [("p", "Out", 0)]);
    }
}
