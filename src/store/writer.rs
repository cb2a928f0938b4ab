//! The writer thread: takes every queued write operation, applies them all
//! in one transaction (each in its own savepoint, so one failure does not
//! undo the others), commits once, and only then answers each caller.
//!
//! Durability is pipelined. SQLite runs with `synchronous=NORMAL`, so a
//! commit is a `write` to the write-ahead log: it survives a crash of the
//! process at once, but not a power cut. Operations that must survive a
//! power cut before they are answered (a received message, before its ACK)
//! are handed to a second thread that fsyncs the log and then answers them,
//! while the writer already builds the next group. Status changes (a
//! delivery finished, a message routed) are answered right after the commit:
//! losing one to a power cut means the message is delivered again, which
//! at-least-once delivery allows.

use std::sync::Arc;

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Committed, Durability, Event, Finished, NewInbound, PurgeStats, Queues, Routed, Status, StoreError, now_millis,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Most operations taken into one transaction.
const MAX_GROUP: usize = 1024;

pub(super) enum Op {
    Inbound(NewInbound, Reply<Committed>),
    Routed(Routed, Reply<Vec<i64>>),
    MarkDelivering(Vec<i64>, Reply<()>),
    Finish(Finished, Reply<()>),
    Requeue(Vec<i64>, Reply<()>),
    RequeueItem(String, String, Reply<()>),
    Resend(i64, Reply<bool>),
    Event(Event, Option<Reply<()>>),
    Commanded(String, String, Reply<()>),
    ItemEnabled(String, String, bool, Reply<()>),
    DiscoveryTopics(Vec<String>, Reply<()>),
    PurgeBatch { cutoff: i64, limit: usize, reply: Reply<PurgeStats> },
    Vacuum { pages: u32, reply: Reply<u64> },
    Shutdown,
}

/// Queue depth changes of one operation, applied after the commit.
type Deltas = Vec<(String, String, i64)>;

/// The answer to one operation, held until the commit.
enum Done {
    Committed(Reply<Committed>, Result<Committed, StoreError>),
    Ids(Reply<Vec<i64>>, Result<Vec<i64>, StoreError>),
    Unit(Option<Reply<()>>, Result<(), StoreError>),
    /// A status change of a queued message: answered at commit (see above).
    Status(Reply<()>, Result<(), StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    Purge(Reply<PurgeStats>, Result<PurgeStats, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
}

impl Done {
    /// Must this answer wait until the log is on disk?
    fn durable(&self) -> bool {
        matches!(self, Self::Committed(..) | Self::Bool(..)) || matches!(self, Self::Unit(Some(_), _))
    }

    fn ok(&self) -> bool {
        match self {
            Self::Committed(_, r) => r.is_ok(),
            Self::Ids(_, r) => r.is_ok(),
            Self::Unit(_, r) => r.is_ok(),
            Self::Status(_, r) => r.is_ok(),
            Self::Bool(_, r) => r.is_ok(),
            Self::Purge(_, r) => r.is_ok(),
            Self::Count(_, r) => r.is_ok(),
        }
    }

    /// Sends the result, or `failure` when the commit itself failed.
    fn send(self, failure: Option<&str>) {
        let fail = |f: &str| StoreError::CommitFailed(f.to_owned());
        macro_rules! answer {
            ($tx:expr, $r:expr) => {{
                let _ = $tx.send(match failure {
                    Some(f) => Err(fail(f)),
                    None => $r,
                });
            }};
        }
        match self {
            Self::Committed(tx, r) => answer!(tx, r),
            Self::Ids(tx, r) => answer!(tx, r),
            Self::Unit(Some(tx), r) => answer!(tx, r),
            Self::Unit(None, _) => {}
            Self::Status(tx, r) => answer!(tx, r),
            Self::Bool(tx, r) => answer!(tx, r),
            Self::Purge(tx, r) => answer!(tx, r),
            Self::Count(tx, r) => answer!(tx, r),
        }
    }
}

pub(super) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    queues: Arc<Queues>,
    syncer: Option<std::sync::mpsc::Sender<Vec<Done>>>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Op>,
        queues: Arc<Queues>,
        durability: Durability,
        wal: PathBuf,
    ) -> std::io::Result<Self> {
        let syncer = match durability {
            Durability::Normal => None,
            Durability::Full => {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new().name("store-sync".into()).spawn(move || sync_loop(&wal, &rx))?;
                Some(tx)
            }
        };
        Ok(Self { conn, rx, queues, syncer })
    }

    pub(super) fn run(mut self) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            let Some(first) = self.rx.blocking_recv() else { return };
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            let shutdown = group.iter().any(|op| matches!(op, Op::Shutdown));
            self.apply_group(&mut group);
            if shutdown {
                return;
            }
        }
    }

    fn apply_group(&mut self, group: &mut Vec<Op>) {
        let mut answers = Vec::with_capacity(group.len());
        let mut deltas: Deltas = Vec::new();
        let mut vacuum = Vec::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = self.conn.transaction()?;
            for op in group.drain(..) {
                match op {
                    // Incremental vacuum cannot run inside a transaction.
                    Op::Vacuum { pages, reply } => vacuum.push((pages, reply)),
                    Op::Shutdown => {}
                    op => {
                        // Each operation in its own savepoint: a failing one
                        // is undone alone and the rest of the group commits.
                        let mut op_deltas = Vec::new();
                        tx.execute_batch("SAVEPOINT op")?;
                        let done = apply(&tx, op, &mut op_deltas);
                        if done.ok() {
                            tx.execute_batch("RELEASE op")?;
                            deltas.extend(op_deltas);
                        } else {
                            tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                        }
                        answers.push(done);
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                for (production, item, delta) in deltas {
                    self.queues.adjust(&production, &item, delta);
                }
                let mut durable = Vec::new();
                for done in answers {
                    if done.durable() && self.syncer.is_some() {
                        durable.push(done);
                    } else {
                        done.send(None);
                    }
                }
                if let (false, Some(syncer)) = (durable.is_empty(), &self.syncer)
                    && let Err(std::sync::mpsc::SendError(lost)) = syncer.send(durable)
                {
                    for done in lost {
                        done.send(Some("the sync thread has stopped"));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; {} operations rejected", answers.len());
                let text = e.to_string();
                for done in answers {
                    done.send(Some(&text));
                }
            }
        }
        for (pages, reply) in vacuum {
            let freed = incremental_vacuum(&self.conn, pages);
            let _ = reply.send(freed.map_err(StoreError::from));
        }
    }
}

/// fsyncs the write-ahead log for every batch of answers it receives
/// (taking all that are waiting at once), then sends them.
fn sync_loop(wal: &std::path::Path, rx: &std::sync::mpsc::Receiver<Vec<Done>>) {
    let mut file: Option<(File, u64)> = None;
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let result = sync_wal(wal, &mut file);
        if let Err(e) = &result {
            tracing::error!(error = %e, "fsync of the write-ahead log failed; {} commits reported as failed", batch.len());
        }
        let failure = result.err().map(|e| format!("fsync failed: {e}"));
        for done in batch {
            done.send(failure.as_deref());
        }
    }
}

/// fdatasync on any descriptor of a file flushes all of its written data;
/// the descriptor is reopened if SQLite replaced the file.
fn sync_wal(wal: &std::path::Path, file: &mut Option<(File, u64)>) -> std::io::Result<()> {
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

/// Returns up to `pages` free pages to the file system; when none are left,
/// checkpoints the write-ahead log so the main file actually shrinks.
fn incremental_vacuum(conn: &Connection, pages: u32) -> rusqlite::Result<u64> {
    let free_before: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let free_after: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let freed = (free_before - free_after).max(0) as u64;
    if freed == 0 {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(freed)
}

fn apply(tx: &Connection, op: Op, deltas: &mut Deltas) -> Done {
    match op {
        Op::Inbound(inbound, reply) => Done::Committed(reply, inbound_tx(tx, inbound, deltas).map_err(Into::into)),
        Op::Routed(routed, reply) => Done::Ids(reply, routed_tx(tx, routed, deltas).map_err(Into::into)),
        Op::MarkDelivering(ids, reply) => Done::Status(reply, set_status(tx, &ids, "delivering", "queued")),
        Op::Requeue(ids, reply) => Done::Status(reply, set_status(tx, &ids, "queued", "delivering")),
        Op::RequeueItem(production, item, reply) => Done::Status(
            reply,
            tx.execute(
                "UPDATE header SET status = 'queued', updated_at = ?1
                 WHERE production = ?2 AND target = ?3 AND status = 'delivering'",
                params![now_millis(), production, item],
            )
            .map(drop)
            .map_err(Into::into),
        ),
        Op::Finish(finished, reply) => Done::Status(reply, finish_tx(tx, finished, deltas).map_err(Into::into)),
        Op::Resend(id, reply) => Done::Bool(reply, resend_tx(tx, id, deltas).map_err(Into::into)),
        Op::Event(event, reply) => Done::Unit(reply, event_tx(tx, &event).map_err(Into::into)),
        Op::Commanded(production, state, reply) => Done::Unit(
            Some(reply),
            tx.execute(
                "INSERT INTO production_state (production, commanded, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(production) DO UPDATE SET commanded = excluded.commanded, at = excluded.at",
                params![production, state, now_millis()],
            )
            .map(drop)
            .map_err(Into::into),
        ),
        Op::ItemEnabled(production, item, enabled, reply) => Done::Unit(
            Some(reply),
            tx.execute(
                "INSERT INTO item_state (production, item, enabled, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(production, item) DO UPDATE SET enabled = excluded.enabled, at = excluded.at",
                params![production, item, enabled as i64, now_millis()],
            )
            .map(drop)
            .map_err(Into::into),
        ),
        Op::DiscoveryTopics(topics, reply) => {
            Done::Unit(Some(reply), replace_discovery_topics(tx, &topics).map_err(Into::into))
        }
        Op::PurgeBatch { cutoff, limit, reply } => Done::Purge(reply, purge_tx(tx, cutoff, limit).map_err(Into::into)),
        Op::Vacuum { reply, .. } => Done::Count(reply, Ok(0)),
        Op::Shutdown => Done::Unit(None, Ok(())),
    }
}

fn inbound_tx(tx: &Connection, inbound: NewInbound, deltas: &mut Deltas) -> rusqlite::Result<Committed> {
    let now = now_millis();
    let mut body = tx.prepare_cached("INSERT INTO body (created_at, data) VALUES (?1, ?2)")?;
    body.execute(params![now, &inbound.body[..]])?;
    let body_id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO header (session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?;
    // The service's own header opens the session; its id is the session id.
    insert.execute(params![
        0,
        None::<i64>,
        body_id,
        inbound.production,
        inbound.origin,
        inbound.service,
        Status::Completed.as_str(),
        inbound.control_id,
        inbound.message_type,
        now
    ])?;
    let header_id = tx.last_insert_rowid();
    tx.prepare_cached("UPDATE header SET session_id = ?1 WHERE id = ?1")?.execute([header_id])?;
    let mut queued = Vec::with_capacity(inbound.targets.len());
    for target in &inbound.targets {
        insert.execute(params![
            header_id,
            header_id,
            body_id,
            inbound.production,
            inbound.service,
            target,
            Status::Queued.as_str(),
            inbound.control_id,
            inbound.message_type,
            now
        ])?;
        queued.push(tx.last_insert_rowid());
        deltas.push((inbound.production.clone(), target.clone(), 1));
    }
    Ok(Committed { session_id: header_id, header_id, queued })
}

fn routed_tx(tx: &Connection, routed: Routed, deltas: &mut Deltas) -> rusqlite::Result<Vec<i64>> {
    let now = now_millis();
    let (session_id, body_id, production, router, control_id, message_type): (
        i64,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
    ) = tx.query_row(
        "SELECT session_id, body_id, production, target, control_id, message_type FROM header WHERE id = ?1",
        [routed.header_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    let changed = tx
        .prepare_cached(
            "UPDATE header SET status = ?1, error_text = ?2, updated_at = ?3, attempts = attempts + 1
             WHERE id = ?4 AND status IN ('queued', 'delivering')",
        )?
        .execute(params![routed.status.as_str(), routed.error, now, routed.header_id])?;
    if changed == 0 {
        // Already finished (e.g. by a concurrent stop): nothing to route.
        return Ok(Vec::new());
    }
    deltas.push((production.clone(), router.clone(), -1));
    let mut insert = tx.prepare_cached(
        "INSERT INTO header (session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?9)",
    )?;
    let mut ids = Vec::with_capacity(routed.outputs.len());
    for output in routed.outputs {
        let body = match &output.body {
            Some(bytes) => {
                tx.prepare_cached("INSERT INTO body (created_at, data) VALUES (?1, ?2)")?
                    .execute(params![now, &bytes[..]])?;
                tx.last_insert_rowid()
            }
            None => body_id,
        };
        let control = output.control_id.clone().or_else(|| control_id.clone());
        insert.execute(params![
            session_id,
            routed.header_id,
            body,
            production,
            router,
            output.target,
            control,
            message_type,
            now
        ])?;
        ids.push(tx.last_insert_rowid());
        deltas.push((production.clone(), output.target, 1));
    }
    Ok(ids)
}

fn set_status(tx: &Connection, ids: &[i64], to: &str, from: &str) -> Result<(), StoreError> {
    let now = now_millis();
    let mut stmt = tx.prepare_cached("UPDATE header SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status = ?4")?;
    for id in ids {
        stmt.execute(params![to, now, id, from])?;
    }
    Ok(())
}

fn finish_tx(tx: &Connection, f: Finished, deltas: &mut Deltas) -> rusqlite::Result<()> {
    let now = now_millis();
    let changed = tx
        .prepare_cached(
            "UPDATE header SET status = ?1, attempts = ?2, error_text = ?3, updated_at = ?4
             WHERE id = ?5 AND status IN ('queued', 'delivering')",
        )?
        .execute(params![f.status.as_str(), f.attempts as i64, f.error, now, f.header_id])?;
    if let Some(reply) = &f.reply {
        tx.prepare_cached(
            "INSERT INTO reply (header_id, received_at, data) VALUES (?1, ?2, ?3)
             ON CONFLICT(header_id) DO UPDATE SET received_at = excluded.received_at, data = excluded.data",
        )?
        .execute(params![f.header_id, now, &reply[..]])?;
    }
    if changed > 0 && !f.status.is_pending() {
        deltas.push((f.production, f.item, -1));
    }
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
    deltas.push((production, target, 1));
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

fn purge_tx(tx: &Connection, cutoff: i64, limit: usize) -> rusqlite::Result<PurgeStats> {
    let limit = limit.max(1) as i64;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM header WHERE created_at < ?1 AND status NOT IN ('queued', 'delivering') ORDER BY id LIMIT ?2",
        )?;
        stmt.query_map(params![cutoff, limit], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut stats = PurgeStats::default();
    {
        let mut del_reply = tx.prepare_cached("DELETE FROM reply WHERE header_id = ?1")?;
        let mut del_header = tx.prepare_cached("DELETE FROM header WHERE id = ?1")?;
        for id in &ids {
            del_reply.execute([id])?;
            stats.headers += del_header.execute([id])? as u64;
        }
    }
    stats.bodies = tx.execute(
        "DELETE FROM body WHERE id IN (SELECT b.id FROM body b WHERE b.created_at < ?1
             AND NOT EXISTS (SELECT 1 FROM header h WHERE h.body_id = b.id) LIMIT ?2)",
        params![cutoff, limit],
    )? as u64;
    stats.events = tx.execute(
        "DELETE FROM event WHERE id IN (SELECT id FROM event WHERE at < ?1 ORDER BY id LIMIT ?2)",
        params![cutoff, limit],
    )? as u64;
    Ok(stats)
}
