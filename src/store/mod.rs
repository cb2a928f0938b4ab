//! The durable store: SQLite in WAL mode, written by one thread that commits
//! concurrent requests together (group commit), read through a separate
//! connection.
//!
//! Data model: a message **body** (the raw bytes) is stored once; a
//! **header** per target points at it and carries the status, so one inbound
//! message routed to three operations is one body and four headers (the
//! service's own, already completed, and one queued per target). All headers
//! caused by one inbound message share a **session** id. A **queue** is the
//! set of pending headers (`queued` or `delivering`) of a target in id order;
//! its depth is kept as a counter, so reading it never scans.
//!
//! Every write goes through the writer thread: callers send an operation and
//! await its result, which arrives only after the transaction holding it has
//! been committed (and, where it must survive a power cut, fsynced). While
//! one group is being synced the next one gathers, so many connections share
//! one fsync. A received message takes a shorter way to the disk, the
//! inbound log, and is committed after it is acknowledged (see
//! [`Store::receive_inbound`]).
//!
//! # Inside the store
//!
//! A received message goes to the inbound log's thread (`inbound_log`),
//! which appends it to the log, syncs it with `durability: full`, lets the
//! caller acknowledge it, and hands it to the writer. Acknowledging after a
//! commit would put the whole commit in front of every ACK; this way an ACK
//! waits only for an append and an fdatasync shared by everything received
//! meanwhile. The bound on bytes handed over and not yet committed, and how
//! far the writer has committed the log, are shared through `progress`.
//!
//! Every write reaches the writer thread (`writer`) as an operation of the
//! write protocol (`protocol`). SQLite takes one writer at a time, so one
//! thread writes: it gathers whatever is waiting into a group, applies the
//! group in one transaction (`group`, with each operation's SQL in `sql`),
//! commits once, moves the queue depth counters (`queues`) and answers
//! each caller, at once or, for a write that must survive a power cut,
//! after the sync thread has synced the write-ahead log (`disk`). Many
//! callers thus share one transaction and one fsync. If one operation
//! fails, the group is redone with a savepoint per operation; a received
//! message or a delivery result that still cannot be committed is held and
//! tried again, in order.
//!
//! A delivery result can also be noted in the delivery log
//! (`delivery_log`), so that an operation need not wait its turn in the
//! writer behind groups of received messages before it sends the next
//! message; the writer commits it in the background, and queue reads leave
//! out the messages whose results are noted and not yet committed.
//!
//! Reads (`read`) run on a connection of their own and never wait for the
//! writer. Checkpoints run on another, in their own thread (`disk`), so that
//! copying the write-ahead log into the database never holds up a commit.
//! When the store opens, what the previous run noted or acknowledged
//! without committing it is committed before anything else runs
//! (`recovery`); damage found in the logs' files is reported and read
//! past, and a damaged database is refused with what SQLite found
//! (`damage`). Searches for the message viewer (`search`) run on a
//! third connection, so that a long one never holds up a queue read. The
//! rest: the public types (`model`, `error`), what is recorded of a
//! message's content for searches (`facts`), the answers to pending
//! commits (`pending`), the names of the files (`files`), the schema with
//! its migrations (`schema`) and the fault hook (`faults`).
//!
//! # What the store offers
//!
//! These operations make up the store for its callers, so they are what a
//! second backend would have to provide:
//!
//! - receiving: [`Store::receive_inbound`], [`Store::receive_inbound_then`],
//!   [`Store::commit_inbound`];
//! - taking the next batch of a queue: [`Store::fetch_queue`],
//!   [`Store::fetch_queue_after`], [`Store::mark_delivering`],
//!   [`Store::begin_mark_delivering`], with [`Store::queue_depth`],
//!   [`Store::queued_notification`], [`Store::queue_depths_changed`] and
//!   [`Store::wake`];
//! - routing and finishing: [`Store::commit_routed`],
//!   [`Store::commit_routed_all`], [`Store::finish`],
//!   [`Store::note_finished`], [`Store::requeue`], [`Store::requeue_item`],
//!   [`Store::resend`];
//! - message search and detail, for the viewer (`search`, on a
//!   connection of its own): [`Store::search_messages`] (and
//!   [`Store::search_messages_within`] with a [`SearchBudget`]),
//!   [`Store::message_detail`], [`Store::counts_by_status`],
//!   [`Store::count_resendable`]; and for the engine and tests,
//!   [`Store::header`], [`Store::session`], [`Store::body`],
//!   [`Store::reply`], [`Store::count_by_status`];
//! - sending again: [`Store::resend_copy`] (as it was, to another item,
//!   or edited), [`Store::resend_all`];
//! - events: [`Store::record_event`], [`Store::log_event`],
//!   [`Store::recent_events`], [`Store::events`];
//! - operator state: [`Store::set_commanded_state`],
//!   [`Store::commanded_state`], [`Store::set_item_enabled`],
//!   [`Store::item_enabled`], and the MQTT bridge's memory of what it
//!   published, [`Store::published_topics`];
//! - keeping the store: [`Store::open`], [`Store::close`], [`Store::purge`],
//!   [`Store::size_on_disk`], [`Store::commit_trouble`], [`Store::damage`],
//!   [`Store::health`];
//! - for tests and fault drills, [`Store::fault_hook`]: commits refused as
//!   a full disk would refuse them.

mod damage;
mod delivery_log;
mod disk;
mod error;
mod facts;
mod faults;
mod files;
mod group;
mod inbound_log;
mod log_files;
mod model;
mod pending;
mod progress;
mod protocol;
mod published;
mod queues;
mod read;
mod recovery;
mod schema;
mod search;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use delivery_log::{DeliveryLog, Noted};
use disk::open_connection;
use files::beside;
use inbound_log::InboundLog;
use pending::CommitNotice;
use progress::Progress;
use protocol::{Op, ResendBatch, ResendCopy};
use queues::Queues;
use sql::now_millis;
use writer::Writer;

use crate::rate_limit::RateLimit;
use crate::sync::LockExt as _;
pub use error::StoreError;
pub use facts::MAX_PATIENT_BYTES;
pub(crate) use facts::MessageFacts;
pub use faults::{FaultHook, Refuse};
#[doc(hidden)]
pub use log_files::{read_delivery_log, read_inbound_log};
pub use model::{
    Commanded, Committed, Durability, Event, EventLevel, EventPage, EventQuery, Finished, InlineRoute, MessageDetail,
    MessagePage, MessageQuery, MessageSummary, NewInbound, PurgeStats, Queued, Recovered, RouteDecision, Routed,
    RoutedOutput, Status, StoreHealth, StoreOptions, StoredEvent,
};
pub use pending::Pending;
pub use published::PublishedTopics;
pub use read::FETCH_MAX_BYTES;
pub use schema::SCHEMA_VERSION;
pub use search::{MAX_PAGE, MAX_SEARCH_TEXT, SearchBudget};

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    ops: mpsc::Sender<Op>,
    /// The inbound log's thread.
    log: mpsc::Sender<inbound_log::Request>,
    log_thread: Mutex<Option<std::thread::JoinHandle<u64>>>,
    /// Shared by the log's thread and the writer.
    progress: Arc<Progress>,
    deliveries: Arc<DeliveryLog>,
    reader: Mutex<Connection>,
    /// Searches for the viewer, on a connection of their own so that the
    /// operations' queue reads never wait behind one (see `search`).
    searcher: Mutex<Connection>,
    queues: Arc<Queues>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    faults: FaultHook,
    /// Event entries dropped while the writer is saturated: one warning a
    /// minute with the count, not one per entry.
    dropped_events: RateLimit,
    /// What the check of the database after opening found.
    damage: damage::BackgroundCheck,
}

impl Store {
    /// Opens (creating if needed) the store at `path`, applies migrations,
    /// puts messages left `delivering` back in their queues and starts the
    /// writer thread. Returns how many messages were recovered.
    /// A database SQLite finds damaged is an error saying what was found
    /// ([`StoreError::Damaged`]).
    pub fn open(path: &Path, options: StoreOptions) -> Result<(Self, Recovered), StoreError> {
        Self::open_files(path, options).map_err(|e| damage::check(path, e))
    }

    fn open_files(path: &Path, options: StoreOptions) -> Result<(Self, Recovered), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|reason| StoreError::Path { path: dir.to_owned(), reason })?;
        }
        let mut conn = open_connection(path)?;
        schema::migrate(&mut conn)?;
        let log_error = |reason| StoreError::Path { path: beside(path, "deliveries"), reason };
        let (deliveries, noted) = DeliveryLog::open(path).map_err(log_error)?;
        recovery::apply_noted(&mut conn, &noted)?;
        deliveries.clear().map_err(log_error)?;
        let recovered = conn.execute(
            "UPDATE header SET status = 'queued', updated_at = ?1 WHERE status = 'delivering'",
            params![now_millis()],
        )? as u64;
        let queues = Arc::new(Queues::default());
        {
            let mut stmt = conn.prepare("SELECT production, item, depth FROM queue_depth")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
            for row in rows {
                let (production, target, n) = row?;
                queues.get(&production, &target).depth.store(n, Ordering::Relaxed);
            }
        }
        // Messages acknowledged but not committed before the last stop,
        // whatever the durability now; synced before the log's files are
        // written over.
        let wal = beside(path, "wal");
        let path_error = |reason| StoreError::Path { path: path.to_owned(), reason };
        let applied: i64 = conn.query_row("SELECT applied FROM inbound_log WHERE id = 0", [], |r| r.get(0))?;
        let applied = applied.max(0) as u64;
        let records = inbound_log::read(path, applied)?;
        let applied = recovery::replay(&conn, records, &queues, applied)?;
        disk::sync_wal(&wal, &mut None).map_err(path_error)?;
        let progress = Arc::new(Progress { applied: AtomicU64::new(applied), ..Default::default() });
        let sync = options.durability == Durability::Full;
        let log = InboundLog::create(path, progress.clone(), sync)?;
        // Checkpoints run on their own connection (see the writer module).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = open_connection(path)?;
        let reader = open_connection(path)?;
        let searcher = open_connection(path)?;
        let (tx, rx) = mpsc::channel(4096);
        let faults = FaultHook::default();
        let shared = writer::Shared { queues: queues.clone(), progress: progress.clone(), faults: faults.clone() };
        let writer = Writer::new(conn, checkpoints, rx, &options, wal, shared).map_err(path_error)?;
        let handle = std::thread::Builder::new().name("store-writer".into()).spawn(move || writer.run());
        let handle = handle.map_err(path_error)?;
        let (log_tx, log_rx) = mpsc::channel(4096);
        let ops = tx.clone();
        let log_thread = std::thread::Builder::new().name("store-inbound".into()).spawn(move || log.run(log_rx, ops));
        let log_thread = Some(log_thread.map_err(path_error)?);
        let inner = Inner {
            path: path.to_owned(),
            ops: tx,
            log: log_tx,
            deliveries: Arc::new(deliveries),
            reader: Mutex::new(reader),
            searcher: Mutex::new(searcher),
            queues,
            writer: Mutex::new(Some(handle)),
            log_thread: Mutex::new(log_thread),
            progress,
            faults,
            dropped_events: RateLimit::new(1, Duration::from_secs(60)),
            damage: damage::BackgroundCheck::start(path, options.low_background_priority),
        };
        Ok((Self { inner: Arc::new(inner) }, recovered))
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.ops.send(make(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits a received message: its body, the service's header and one
    /// queued header per target. Returns once durable and committed.
    pub async fn commit_inbound(&self, inbound: NewInbound) -> Result<Committed, StoreError> {
        self.receive_inbound(inbound).await?.wait().await
    }

    /// Stores a received message and returns as soon as it is durable, so
    /// that it can be acknowledged; the commit into the queues may still be
    /// under way, and the returned [`Pending`] tells how it went. The
    /// message is durable once it is written to the inbound log (see the
    /// `inbound_log` module) and, with `durability: full`, synced.
    pub async fn receive_inbound(&self, inbound: NewInbound) -> Result<Pending<Committed>, StoreError> {
        let (committed, pending) = oneshot::channel();
        self.append_inbound(inbound, CommitNotice::Pending(committed)).await?;
        Ok(Pending(pending))
    }

    /// [`receive_inbound`](Self::receive_inbound) for a caller that does not
    /// wait for the commit: `then` is called with its outcome on the
    /// store's writer thread, right after it, so it must be quick and must
    /// not block (counting, say). Nothing has to be woken to hear of it.
    pub async fn receive_inbound_then(
        &self,
        inbound: NewInbound,
        then: impl FnOnce(Result<Committed, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.append_inbound(inbound, CommitNotice::Call(Box::new(then))).await
    }

    async fn append_inbound(&self, inbound: NewInbound, committed: CommitNotice) -> Result<(), StoreError> {
        let (durable, is_durable) = oneshot::channel();
        let entry = inbound_log::Entry { inbound, durable, committed };
        self.inner.log.send(inbound_log::Request::Append(Box::new(entry))).await.map_err(|_| StoreError::Closed)?;
        is_durable.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a router's result for one header and queues its outputs, in
    /// one transaction. Returns the new headers' ids.
    pub async fn commit_routed(&self, routed: Routed) -> Result<Vec<i64>, StoreError> {
        let mut ids = self.commit_routed_all(vec![routed]).await?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// [`commit_routed`](Self::commit_routed) for several headers, in
    /// order, all or none: if one cannot be committed (a full disk), none
    /// is, so that the router routes them all again in order rather than
    /// have later ones overtake it. The new headers' ids, per input.
    pub async fn commit_routed_all(&self, all: Vec<Routed>) -> Result<Vec<Vec<i64>>, StoreError> {
        self.submit(|reply| Op::Routed(all, reply)).await
    }

    /// Marks headers as taken by their target.
    pub async fn mark_delivering(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.begin_mark_delivering(ids).await?.wait().await
    }

    /// Submits [`mark_delivering`](Self::mark_delivering) without waiting
    /// for its commit, so that an operation can start delivering the batch
    /// at once and wait before it reads its queue again. Operations
    /// submitted later (the batch's delivery results) are committed after
    /// it.
    pub async fn begin_mark_delivering(&self, ids: Vec<i64>) -> Result<Pending<()>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.ops.send(Op::MarkDelivering(ids, tx)).await.map_err(|_| StoreError::Closed)?;
        Ok(Pending(rx))
    }

    /// Records the end of a delivery: status, attempts, reply and error in
    /// one transaction.
    pub async fn finish(&self, finished: Finished) -> Result<(), StoreError> {
        self.submit(|reply| Op::Finish(finished, reply)).await
    }

    /// Records the end of a delivery without waiting for its commit: the
    /// status is noted in the delivery log (once this returns it survives a
    /// crash of the process, as a commit would) and the writer commits it,
    /// reply included, in the background. Lets an operation send its next
    /// message at once; see the `delivery_log` module. Use
    /// [`finish`](Self::finish) for results that put a message back in its
    /// queue.
    pub async fn note_finished(&self, finished: Finished) -> Result<(), StoreError> {
        self.inner
            .faults
            .check_append()
            .and_then(|()| self.inner.deliveries.note(&Noted::of(&finished)))
            .map_err(|reason| StoreError::Path { path: self.inner.deliveries.path().to_owned(), reason })?;
        let deliveries = self.inner.deliveries.clone();
        self.inner.ops.send(Op::FinishNoted(finished, deliveries)).await.map_err(|_| StoreError::Closed)
    }

    /// Puts `delivering` headers back in their queue (a graceful stop).
    pub async fn requeue(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.submit(|reply| Op::Requeue(ids, reply)).await
    }

    /// Puts every `delivering` header of one item back in its queue (the item
    /// stopped without finishing them).
    pub async fn requeue_item(&self, production: &str, item: &str) -> Result<(), StoreError> {
        let (p, i) = (production.to_owned(), item.to_owned());
        self.submit(|reply| Op::RequeueItem(p, i, reply)).await
    }

    /// Puts a suspended or failed header back in its queue, for a resend.
    pub async fn resend(&self, header_id: i64) -> Result<bool, StoreError> {
        self.submit(|reply| Op::Resend(header_id, reply)).await
    }

    /// Queues a copy of header `id` for `target`, with `body` (an edited
    /// message) or the original's body, and returns the copy's id once it
    /// is durable. The original is left as it was; the copy joins its
    /// session with the same parent, names it in `resent_from`, and is
    /// listed in the original's [`MessageDetail::resends`]. An edited body
    /// is parsed here (its control id, type and patient are the copy's);
    /// one that does not parse is refused with
    /// [`StoreError::EditedBody`], and a header that does not exist with
    /// [`StoreError::NoSuchMessage`].
    ///
    /// The store does not know the configuration: the caller checks that
    /// `target` is an item of the production that takes messages (the
    /// same one as before, or another operation or router). Its item is
    /// woken by the commit.
    pub async fn resend_copy(&self, id: i64, target: &str, body: Option<Bytes>) -> Result<i64, StoreError> {
        if target.is_empty() {
            return Err(StoreError::Invalid("the target item is empty"));
        }
        let edited = match body {
            Some(body) => {
                let facts = MessageFacts::of(&crate::hl7::Message::parse(&body).map_err(StoreError::EditedBody)?);
                Some((body, facts))
            }
            None => None,
        };
        let copy = Box::new(ResendCopy { id, target: target.to_owned(), edited });
        self.submit(|reply| Op::ResendCopy(copy, reply)).await?.ok_or(StoreError::NoSuchMessage { id })
    }

    /// Puts every suspended or failed message of an item back in its queue,
    /// in id order, and returns how many ([`count_resendable`] tells
    /// beforehand). Done in batches of a thousand, each its own commit, so
    /// traffic keeps flowing however many there are, and the item gets
    /// them oldest first.
    ///
    /// [`count_resendable`]: Self::count_resendable
    pub async fn resend_all(&self, production: &str, item: &str) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut after = 0;
        loop {
            let batch = ResendBatch { production: production.to_owned(), item: item.to_owned(), after, limit: 1000 };
            let step = self.submit(|reply| Op::ResendBatch(batch, reply)).await?;
            total += step.resent;
            after = step.after;
            if step.done {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Appends to the event log and waits until it is stored.
    pub async fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.submit(|reply| Op::Event(event, Some(reply))).await
    }

    /// Appends to the event log without waiting; dropped (and traced) if the
    /// writer is saturated, so logging can never stall message traffic.
    pub fn log_event(&self, event: Event) {
        if self.inner.ops.try_send(Op::Event(event, None)).is_err()
            && let Some(pass) = self.inner.dropped_events.check()
        {
            let suffix = pass.suffix();
            tracing::warn!("event log entry dropped: the store writer is saturated or closed{suffix}");
        }
    }

    /// Remembers the last state an operator commanded for a production.
    pub async fn set_commanded_state(&self, production: &str, state: Commanded) -> Result<(), StoreError> {
        let p = production.to_owned();
        self.submit(|reply| Op::Commanded(p, state, reply)).await
    }

    /// Remembers an item's enabled flag set at run time.
    pub async fn set_item_enabled(&self, production: &str, item: &str, enabled: bool) -> Result<(), StoreError> {
        let (p, i) = (production.to_owned(), item.to_owned());
        self.submit(|reply| Op::ItemEnabled(p, i, enabled, reply)).await
    }

    /// Whether the store is closed (its writer has stopped).
    pub fn is_closed(&self) -> bool {
        self.inner.ops.is_closed()
    }

    /// The switch that makes chosen commits fail as a full disk would, for
    /// tests and fault drills (see [`FaultHook`]).
    pub fn fault_hook(&self) -> &FaultHook {
        &self.inner.faults
    }

    /// The Home Assistant discovery topics the MQTT bridge published last:
    /// the one part of the store the bridge writes.
    pub fn published_topics(&self) -> PublishedTopics {
        PublishedTopics::new(self.clone())
    }

    /// Why the store cannot commit received messages or delivery results
    /// (a full disk, a damaged file), while it cannot; `None` otherwise.
    /// They are safe in the inbound and delivery logs and tried again
    /// every second; acknowledgments stop once 4 MiB of received messages
    /// wait, so the MLLP services show this as their error.
    pub fn commit_trouble(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.progress.trouble.subscribe()
    }

    /// What is wrong with the store now: [`damage`](Self::damage) and
    /// [`commit_trouble`](Self::commit_trouble) together.
    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            damage: self.inner.damage.found.borrow().clone(),
            commit_trouble: self.inner.progress.trouble.borrow().clone(),
        }
    }

    /// Damage `PRAGMA quick_check` found in the database after the store
    /// opened (it runs in the background, see the `damage` module); `None`
    /// while it runs and when the file is sound.
    pub fn damage(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.damage.found.clone()
    }

    /// The number of pending messages of a queue; O(1).
    pub fn queue_depth(&self, production: &str, item: &str) -> u64 {
        self.inner.queues.depth(production, item).max(0) as u64
    }

    /// Waits until something is queued for this item (or returns at once if
    /// a wake-up is pending). Callers re-check the queue after waking.
    pub async fn queued_notification(&self, production: &str, item: &str) {
        let q = self.inner.queues.get(production, item);
        q.notify.notified().await;
    }

    /// Resolves once a queue depth has changed since the last time it
    /// resolved. Depths change when the writer commits, which may be after
    /// whatever the engine reports about the same messages (a delivery
    /// result is committed after the operation has counted it), so whoever
    /// publishes depths must also listen here.
    pub async fn queue_depths_changed(&self) {
        self.inner.queues.changed.notified().await;
    }

    /// Wakes the item draining this queue (e.g. after a resend or a restart).
    pub fn wake(&self, production: &str, item: &str) {
        self.inner.queues.get(production, item).notify.notify_one();
    }

    /// Removes finished headers (with replies), unreferenced bodies and
    /// events older than `older_than`, `batch` rows per transaction so
    /// traffic keeps flowing between batches, then returns freed pages to the
    /// file system. Pending messages are never purged, whatever their age.
    pub async fn purge(&self, older_than: SystemTime, batch: usize) -> Result<PurgeStats, StoreError> {
        let cutoff = older_than.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut total = PurgeStats::default();
        let mut after = 0;
        loop {
            let step = self.submit(|reply| Op::PurgeBatch { cutoff, after, limit: batch, reply }).await?;
            total.headers += step.stats.headers;
            total.bodies += step.stats.bodies;
            total.events += step.stats.events;
            after = step.after;
            if step.headers_done && step.stats.events == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            let freed = self.submit(|reply| Op::Vacuum { pages: 512, reply }).await?;
            if freed == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Bytes the store takes on disk: the database, its write-ahead log,
    /// the inbound log's two files (a fixed 16 MiB) and the delivery log,
    /// so the figure is what the disk must hold, not only the database.
    pub fn size_on_disk(&self) -> u64 {
        let path = &self.inner.path;
        let files = [
            path.clone(),
            beside(path, "wal"),
            inbound_log::segment_path(path, 0),
            inbound_log::segment_path(path, 1),
            beside(path, "deliveries"),
        ];
        files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Stops the writer after the operations already submitted and waits for
    /// it and its threads, and stops the background check; later writes
    /// fail with [`StoreError::Closed`]. Once it returns, nothing writes
    /// the files and only the handles' read connections stay open, until
    /// the last handle is dropped.
    pub async fn close(&self) {
        // The inbound log first: what it holds goes to the writer before
        // the writer is told to stop.
        self.inner.progress.in_flight.close();
        let _ = self.inner.log.send(inbound_log::Request::Shutdown).await;
        let thread = self.inner.log_thread.lock_unpoisoned().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let _ = self.inner.ops.send(Op::Shutdown).await;
        let handle = self.inner.writer.lock_unpoisoned().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Some(check) = self.inner.damage.stop() {
            let _ = tokio::task::spawn_blocking(move || check.join()).await;
        }
    }
}

#[cfg(test)]
mod tests;
