//! Finding messages and events for a viewer: a search with filters, newest
//! first, a page at a time; the detail of one message with its trace;
//! counts by status.
//!
//! Searches run on a connection of their own, not on the reader the
//! operations take their queues from: a search may take tens of
//! milliseconds, and no delivery should wait for one. Each call reads one
//! snapshot (a read transaction), so its page is consistent while the
//! writer commits.
//!
//! # How a search finds its page
//!
//! Pages are keyset pages over header ids, which grow with time: a page is
//! the newest matching headers with ids below `before`, and the next page
//! starts below its last one, so paging neither skips nor repeats a header
//! while new messages arrive (they only ever come in above).
//!
//! A time range becomes an id range by a binary search over ids (about
//! twenty lookups on the table's own key) instead of an index on creation
//! times, which every commit would have to update. After a clock step
//! backwards, headers near the step may fall outside the range found; the
//! times are still checked on every header, so none outside the range is
//! shown.
//!
//! Within that range, one source gives the candidates, newest first, and
//! the other filters are checked on each: the most selective one there is.
//!
//! - A control id or a patient id: its index, a block of 1,024 ids at a
//!   time (see migration 7 in `schema`), skipping empty stretches of ids;
//!   a received message's header found there brings the headers its
//!   commit wrote with it (see `GROUP_MAX` in `sql`).
//! - A status other than `completed`: `error`, `suspended` and `discarded`
//!   from their partial index; `queued` and `delivering` from the queues'
//!   index, one queue at a time, merged in id order.
//! - Anything else (a time range, a production, an item, a message type, a
//!   patient name, `completed`, text): the headers themselves, newest first.
//!   Items and types are common enough that the newest headers fill a page
//!   quickly; an index on them would cost every commit.
//!
//! Every call is bounded: it examines at most [`SearchBudget::headers`]
//! candidates, searches at most [`SearchBudget::bodies`] bodies for text
//! (and [`SearchBudget::body_bytes`] bytes) and looks at most
//! [`SearchBudget::blocks`] blocks up. Where a budget runs out the call
//! returns what it found with `next` set where it stopped, so the viewer
//! can offer to search further; a search for something rare never holds
//! the connection for long, however large the store.
//!
//! Text is searched in the raw bytes of bodies (`memchr`'s substring
//! search), each body once however many headers share it.

use std::collections::HashMap;

use memchr::memmem::Finder;
use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension as _, params, params_from_iter};

use super::Store;
use super::error::StoreError;
use super::facts::cut;
use super::model::{EventLevel, EventPage, EventQuery, MessageDetail, MessagePage, MessageQuery, Status};
use super::read::{SUMMARY_SELECT, summary_row};
use super::schema::BLOCK_BITS;
use super::sql::RESENDABLE;
use crate::sync::LockExt as _;

/// The most headers or events one page holds; a larger `limit` is cut to
/// this.
pub const MAX_PAGE: usize = 1000;

/// The longest text a search looks for, in bytes.
pub const MAX_SEARCH_TEXT: usize = 1024;

/// How much one call of [`Store::search_messages_within`] may examine
/// before it returns what it found with `next` set. The default keeps
/// each call under about 100 ms on a store of a million messages (see
/// BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchBudget {
    /// Candidate headers examined.
    pub headers: usize,
    /// Bodies searched for text.
    pub bodies: usize,
    /// Bytes of bodies searched for text (at least one body is, whatever
    /// its size).
    pub body_bytes: usize,
    /// Blocks of 1,024 ids of the control id and patient id indexes looked
    /// up.
    pub blocks: usize,
}

impl Default for SearchBudget {
    fn default() -> Self {
        Self { headers: 100_000, bodies: 20_000, body_bytes: 32 << 20, blocks: 16_384 }
    }
}

/// Events an event search examines per call, as a span of event ids.
const EVENT_BUDGET: i64 = 1 << 20;
/// Event ids examined per query of an event search.
const EVENT_WINDOW: i64 = 1 << 16;

impl Store {
    fn search<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.inner.searcher.lock_unpoisoned();
        // One snapshot for the whole call; a read transaction is only
        // ever rolled back.
        let tx = conn.unchecked_transaction()?;
        Ok(f(&tx)?)
    }

    /// Headers matching `q`, newest first, in keyset pages: `before` is
    /// the id to start below (`None` for the newest), and the page's
    /// `next` is the `before` of the page after it. At most `limit`
    /// headers (1 to [`MAX_PAGE`]), with the default [`SearchBudget`]: a
    /// page can hold fewer than `limit` with `next` set when the search
    /// stopped at its budget (see [`MessagePage`]). Never loads the whole
    /// table.
    pub fn search_messages(
        &self,
        q: &MessageQuery,
        before: Option<i64>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        self.search_messages_within(q, before, limit, SearchBudget::default())
    }

    /// [`search_messages`](Self::search_messages) with a budget of its own
    /// (smaller steps for a viewer that wants to show progress, or tests).
    pub fn search_messages_within(
        &self,
        q: &MessageQuery,
        before: Option<i64>,
        limit: usize,
        budget: SearchBudget,
    ) -> Result<MessagePage, StoreError> {
        let filters = Filters::of(q)?;
        let limit = limit.clamp(1, MAX_PAGE);
        self.search(|c| find(c, &filters, before, limit, budget))
    }

    /// One message with everything its detail page shows, or `None` when
    /// there is no header `id`.
    pub fn message_detail(&self, id: i64) -> Result<Option<MessageDetail>, StoreError> {
        self.search(|c| {
            let Some(summary) = c
                .prepare_cached(&format!("{SUMMARY_SELECT} WHERE id = ?1"))?
                .query_row([id], summary_row)
                .optional()?
            else {
                return Ok(None);
            };
            let body = c
                .prepare_cached("SELECT b.data FROM header h JOIN body b ON b.id = h.body_id WHERE h.id = ?1")?
                .query_row([id], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
                .unwrap_or_default();
            let reply = c
                .prepare_cached("SELECT received_at, data FROM reply WHERE header_id = ?1")?
                .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?.into())))
                .optional()?;
            let trace = c
                .prepare_cached(&format!("{SUMMARY_SELECT} WHERE session_id = ?1 ORDER BY id"))?
                .query_map([summary.session_id], summary_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Copies stay in their original's session.
            let resends = c
                .prepare_cached("SELECT id FROM header WHERE session_id = ?1 AND resent_from = ?2 ORDER BY id")?
                .query_map(params![summary.session_id, id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok(Some(MessageDetail { summary, body: body.into(), reply, trace, resends }))
        })
    }

    /// How many messages of an item are suspended or failed: what
    /// [`resend_all`](Self::resend_all) would queue again, for its
    /// confirmation. Reads the index of rare statuses.
    pub fn count_resendable(&self, production: &str, item: &str) -> Result<u64, StoreError> {
        self.search(|c| {
            let mut total = 0;
            for status in RESENDABLE {
                let sql = format!(
                    "SELECT COUNT(*) FROM header WHERE status = '{}' AND production = ?1 AND target = ?2",
                    status.as_str()
                );
                total += c.prepare_cached(&sql)?.query_row([production, item], |r| r.get::<_, i64>(0))?.max(0) as u64;
            }
            Ok(total)
        })
    }

    /// Headers by status over the whole store, every status listed (in
    /// [`Status::ALL`] order). Counted without reading the table: the
    /// total from the smallest index, the pending ones from the queue
    /// depth counters (kept exact by every commit), the delivering and the
    /// rare ones from their partial indexes, and `completed` as the rest.
    pub fn counts_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        self.search(|c| {
            let one = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64);
            let total = one("SELECT COUNT(*) FROM header")?;
            let pending = one("SELECT IFNULL(SUM(MAX(depth, 0)), 0) FROM queue_depth")?;
            let delivering = one("SELECT COUNT(*) FROM header WHERE status = 'delivering'")?;
            let mut counts: Vec<(Status, u64)> = Status::ALL.iter().map(|&s| (s, 0)).collect();
            let mut set = |status: Status, n: u64| {
                if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == status) {
                    entry.1 = n;
                }
            };
            set(Status::Queued, pending.saturating_sub(delivering));
            set(Status::Delivering, delivering);
            let mut rare = 0;
            for status in [Status::Error, Status::Suspended, Status::Discarded] {
                let n = one(&format!("SELECT COUNT(*) FROM header WHERE status = '{}'", status.as_str()))?;
                set(status, n);
                rare += n;
            }
            set(Status::Completed, total.saturating_sub(pending.max(delivering) + rare));
            Ok(counts)
        })
    }

    /// Events matching `q`, newest first, in keyset pages as for messages
    /// (`before` an event id); at most `limit` (1 to [`MAX_PAGE`]). A call
    /// examines a bounded span of events and returns a short page with
    /// `next` set where it stopped.
    pub fn events(&self, q: &EventQuery, before: Option<i64>, limit: usize) -> Result<EventPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.search(|c| find_events(c, q, before, limit))
    }
}

// --- messages ---------------------------------------------------------------

/// A search's filters, checked and ready for SQL.
struct Filters {
    from: Option<i64>,
    to: Option<i64>,
    production: Option<String>,
    item: Option<String>,
    status: Option<Status>,
    message_type: Option<String>,
    control_id: Option<String>,
    patient_id: Option<String>,
    patient_name: Option<String>,
    text: Option<Vec<u8>>,
}

impl Filters {
    fn of(q: &MessageQuery) -> Result<Self, StoreError> {
        let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let text = given(&q.text);
        if text.as_ref().is_some_and(|t| t.len() > MAX_SEARCH_TEXT) {
            return Err(StoreError::Invalid("the search text is longer than 1024 bytes"));
        }
        Ok(Self {
            from: q.from,
            to: q.to,
            production: given(&q.production),
            item: given(&q.item),
            status: q.status,
            message_type: given(&q.message_type),
            control_id: given(&q.control_id),
            // Cut as stored, so that a long value is still found.
            patient_id: given(&q.patient_id).map(|v| cut(&v).to_owned()),
            patient_name: given(&q.patient_name).map(|v| cut(&v).to_owned()),
            text: text.map(String::into_bytes),
        })
    }
}

/// Where a search takes its candidates from (see the module doc).
enum Source {
    /// Every header.
    Headers,
    /// The partial index of a rare status.
    Rare(Status),
    /// The queues with something pending (production, item).
    Queues(Vec<(String, String)>),
    /// A block index.
    Blocks(Block),
}

/// A value looked up in a block index (see migration 7 in `schema`).
struct Block {
    index: &'static str,
    column: &'static str,
    value: String,
}

/// A candidate: a header the source gave, and whether it passes the
/// filters other than text.
struct Candidate {
    id: i64,
    body_id: i64,
    passes: bool,
}

/// The candidates of ids in `[reached, cursor)`, newest first: all of them.
struct Chunk {
    rows: Vec<Candidate>,
    reached: i64,
}

/// SQL text with its parameters numbered as they are added.
#[derive(Default)]
struct Sql {
    params: Vec<Value>,
}

impl Sql {
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.params.push(value.into());
        format!("?{}", self.params.len())
    }
}

/// A search ready to run: where candidates come from, and the condition
/// (on header `h`) of the filters that source does not apply.
struct Plan {
    source: Source,
    check: String,
    params: Vec<Value>,
}

impl Plan {
    fn new(c: &Connection, f: &Filters) -> rusqlite::Result<Self> {
        let source = if let Some(value) = &f.control_id {
            Source::Blocks(Block { index: "header_control", column: "control_id", value: value.clone() })
        } else if let Some(value) = &f.patient_id {
            Source::Blocks(Block { index: "header_patient", column: "patient_id", value: value.clone() })
        } else {
            match f.status {
                Some(status @ (Status::Error | Status::Suspended | Status::Discarded)) => Source::Rare(status),
                Some(Status::Queued | Status::Delivering) => Source::Queues(pending_queues(c, f)?),
                Some(Status::Completed) | None => Source::Headers,
            }
        };
        let mut sql = Sql::default();
        let mut terms: Vec<String> = Vec::new();
        if let Some(from) = f.from {
            terms.push(format!("h.created_at >= {}", sql.bind(from)));
        }
        if let Some(to) = f.to {
            terms.push(format!("h.created_at < {}", sql.bind(to)));
        }
        if let Some(p) = &f.production {
            terms.push(format!("h.production = {}", sql.bind(p.clone())));
        }
        if let Some(item) = &f.item {
            terms.push(format!("h.target = {}", sql.bind(item.clone())));
        }
        if let Some(status) = f.status
            && !matches!(source, Source::Rare(_))
        {
            terms.push(format!("h.status = '{}'", status.as_str()));
        }
        if let Some(t) = &f.message_type {
            if t.contains('^') {
                terms.push(format!("h.message_type = {}", sql.bind(t.clone())));
            } else {
                // `ADT` alone, or anything from `ADT^` up to (not
                // including) `ADT_`, the character after `^`.
                let (exact, low, high) = (sql.bind(t.clone()), sql.bind(format!("{t}^")), sql.bind(format!("{t}_")));
                terms.push(format!(
                    "(h.message_type = {exact} OR (h.message_type >= {low} AND h.message_type < {high}))"
                ));
            }
        }
        if let Some(v) = &f.control_id
            && !matches!(&source, Source::Blocks(b) if b.column == "control_id")
        {
            terms.push(format!("h.control_id = {}", sql.bind(v.clone())));
        }
        if let Some(v) = &f.patient_id
            && !matches!(&source, Source::Blocks(b) if b.column == "patient_id")
        {
            terms.push(format!("h.patient_id = {}", sql.bind(v.clone())));
        }
        if let Some(name) = &f.patient_name {
            let mut pattern = String::with_capacity(name.len() + 1);
            for ch in name.chars() {
                if matches!(ch, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(ch);
            }
            pattern.push('%');
            terms.push(format!("h.patient_name LIKE {} ESCAPE '\\'", sql.bind(pattern)));
        }
        let check = if terms.is_empty() { "1".to_owned() } else { format!("IFNULL({}, 0)", terms.join(" AND ")) };
        Ok(Self { source, check, params: sql.params })
    }

    /// The candidates below `cursor` (and at or above `lo`), newest first,
    /// about `n` of them; counts the blocks it looks up in `blocks`.
    fn chunk(&self, c: &Connection, cursor: i64, lo: i64, n: usize, blocks: &mut usize) -> rusqlite::Result<Chunk> {
        let n = n.max(1);
        match &self.source {
            Source::Headers => self.range(c, "header h", "", cursor, lo, n),
            Source::Rare(status) => {
                let (from, term) =
                    ("header h INDEXED BY header_status", format!("h.status = '{}' AND", status.as_str()));
                self.range(c, from, &term, cursor, lo, n)
            }
            Source::Queues(queues) => self.queues(c, queues, cursor, lo, n),
            Source::Blocks(block) => self.blocks(c, block, cursor, lo, n, blocks),
        }
    }

    /// The parameters of the check followed by `more`, numbered after it.
    fn with(&self, more: &[Value]) -> Vec<Value> {
        self.params.iter().chain(more).cloned().collect()
    }

    /// The `n` newest candidates of `from` in `[lo, cursor)`, with `term`
    /// (ending in AND) narrowing them.
    fn range(&self, c: &Connection, from: &str, term: &str, cursor: i64, lo: i64, n: usize) -> rusqlite::Result<Chunk> {
        let k = self.params.len();
        let sql = format!(
            "SELECT h.id, h.body_id, {check} FROM {from} WHERE {term} h.id < ?{a} AND h.id >= ?{b}
             ORDER BY h.id DESC LIMIT ?{l}",
            check = self.check,
            a = k + 1,
            b = k + 2,
            l = k + 3,
        );
        let rows = read_candidates(c, &sql, self.with(&[cursor.into(), lo.into(), (n as i64).into()]))?;
        let reached = if rows.len() == n { rows.last().map_or(lo, |r| r.id) } else { lo };
        Ok(Chunk { rows, reached })
    }

    /// Candidates from every queue, merged: each queue gives its `n`
    /// newest, and the merge is complete down to the oldest of those of a
    /// queue that had more.
    fn queues(
        &self,
        c: &Connection,
        queues: &[(String, String)],
        cursor: i64,
        lo: i64,
        n: usize,
    ) -> rusqlite::Result<Chunk> {
        let k = self.params.len();
        let sql = format!(
            "SELECT h.id, h.body_id, {check} FROM header h INDEXED BY header_queue
             WHERE h.production = ?{p} AND h.target = ?{t} AND h.status IN ('queued', 'delivering')
             AND h.id < ?{a} AND h.id >= ?{b} ORDER BY h.id DESC LIMIT ?{l}",
            check = self.check,
            p = k + 1,
            t = k + 2,
            a = k + 3,
            b = k + 4,
            l = k + 5,
        );
        let mut rows = Vec::new();
        let mut reached = lo;
        for (production, item) in queues {
            let more = [production.clone().into(), item.clone().into(), cursor.into(), lo.into(), (n as i64).into()];
            let found = read_candidates(c, &sql, self.with(&more))?;
            if found.len() == n {
                reached = reached.max(found.last().map_or(lo, |r| r.id));
            }
            rows.extend(found);
        }
        rows.retain(|r| r.id >= reached);
        rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
        Ok(Chunk { rows, reached })
    }

    /// Candidates from a block index: a run of blocks below `cursor`,
    /// looked up by one statement (a seek of the index per block), more
    /// blocks each time, until about `n` are found or the budget of blocks
    /// is spent. An empty stretch of ids (purged history) is passed over
    /// at once.
    ///
    /// The index names one header per received message, which stands for
    /// the `grouped` headers of its session written with it (see
    /// `GROUP_MAX` in `sql`): each header found that opens a session brings
    /// those, and so does one found in the block below the run, whose
    /// group may reach into it. A group reaches one block at most.
    fn blocks(
        &self,
        c: &Connection,
        block: &Block,
        cursor: i64,
        lo: i64,
        n: usize,
        blocks: &mut usize,
    ) -> rusqlite::Result<Chunk> {
        let k = self.params.len();
        let found_sql = format!(
            "WITH RECURSIVE b(number) AS (SELECT ?{top} UNION ALL SELECT number - 1 FROM b WHERE number > ?{bottom})
             SELECT h.id, h.body_id, {check}, h.parent_id IS NULL FROM b CROSS JOIN header h INDEXED BY {index}
             WHERE (h.id >> {BLOCK_BITS}) = b.number AND h.grouped IS NULL AND h.{column} = ?{v} AND h.id < ?{a}",
            check = self.check,
            index = block.index,
            column = block.column,
            top = k + 1,
            bottom = k + 2,
            v = k + 3,
            a = k + 4,
        );
        let group_sql = format!(
            "SELECT h.id, h.body_id, {check} FROM header h
             WHERE h.session_id = ?{session} AND h.grouped = 1 AND h.{column} = ?{v} AND h.id < ?{a} AND h.id >= ?{b}",
            check = self.check,
            column = block.column,
            session = k + 1,
            v = k + 2,
            a = k + 3,
            b = k + 4,
        );
        let mut below = c.prepare_cached("SELECT id FROM header WHERE id < ?1 ORDER BY id DESC LIMIT 1")?;
        let mut rows = Vec::new();
        let mut at = cursor;
        let mut step = 64;
        while at > lo && rows.len() < n && *blocks > 0 {
            let Some(top) = below.query_row([at], |r| r.get::<_, i64>(0)).optional()? else {
                at = lo;
                break;
            };
            if top < lo {
                at = lo;
                break;
            }
            let top = top >> BLOCK_BITS;
            let bottom = (top - step.min(*blocks) as i64 + 1).max(lo >> BLOCK_BITS);
            let start = (bottom << BLOCK_BITS).max(lo);
            // One block further down for the groups that reach into the run.
            let more = [top.into(), (bottom - 1).into(), block.value.clone().into(), at.into()];
            let mut stmt = c.prepare_cached(&found_sql)?;
            let found = stmt.query_map(params_from_iter(self.with(&more)), |r| {
                let candidate = Candidate { id: r.get(0)?, body_id: r.get(1)?, passes: r.get::<_, i64>(2)? != 0 };
                Ok((candidate, r.get::<_, bool>(3)?))
            })?;
            let mut run = Vec::new();
            for row in found {
                let (candidate, opens) = row?;
                if opens {
                    let more = [candidate.id.into(), block.value.clone().into(), at.into(), start.into()];
                    run.extend(read_candidates(c, &group_sql, self.with(&more))?);
                }
                if candidate.id >= start {
                    run.push(candidate);
                }
            }
            run.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
            rows.extend(run);
            *blocks = blocks.saturating_sub((top - bottom + 1) as usize);
            at = start;
            step = (step * 4).min(4096);
        }
        Ok(Chunk { rows, reached: at.max(lo) })
    }
}

/// The queues a search for a pending status reads: those with something
/// in them, of the production and item asked for.
fn pending_queues(c: &Connection, f: &Filters) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = c.prepare_cached(
        "SELECT production, item FROM queue_depth WHERE depth > 0
         AND (?1 IS NULL OR production = ?1) AND (?2 IS NULL OR item = ?2) ORDER BY production, item",
    )?;
    let rows = stmt.query_map(params![f.production, f.item], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn read_candidates(c: &Connection, sql: &str, params: Vec<Value>) -> rusqlite::Result<Vec<Candidate>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok(Candidate { id: r.get(0)?, body_id: r.get(1)?, passes: r.get::<_, i64>(2)? != 0 })
    })?;
    rows.collect()
}

/// The text filter: each body searched once per call.
struct TextSearch {
    finder: Finder<'static>,
    seen: HashMap<i64, bool>,
    bodies: usize,
    bytes: usize,
}

impl TextSearch {
    fn new(needle: &[u8]) -> Self {
        Self { finder: Finder::new(needle).into_owned(), seen: HashMap::new(), bodies: 0, bytes: 0 }
    }

    fn matches(&mut self, c: &Connection, body_id: i64) -> rusqlite::Result<bool> {
        if let Some(&found) = self.seen.get(&body_id) {
            return Ok(found);
        }
        let mut stmt = c.prepare_cached("SELECT data FROM body WHERE id = ?1")?;
        let found = stmt
            .query_row([body_id], |r| {
                let data = r
                    .get_ref(0)?
                    .as_bytes()
                    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, e.into()))?;
                Ok((data.len(), self.finder.find(data).is_some()))
            })
            .optional()?;
        let (len, found) = found.unwrap_or((0, false));
        self.bodies += 1;
        self.bytes += len;
        self.seen.insert(body_id, found);
        Ok(found)
    }

    fn spent(&self, budget: &SearchBudget) -> bool {
        self.bodies >= budget.bodies || self.bytes >= budget.body_bytes
    }
}

/// The smallest id whose `column` (a time) is at or after `t`, assuming
/// times grow with ids; `max + 1` when none is. About log2(max - min)
/// lookups on the table's key.
fn first_at_or_after(c: &Connection, table: &str, column: &str, t: i64, min: i64, max: i64) -> rusqlite::Result<i64> {
    let mut stmt = c.prepare_cached(&format!("SELECT id, {column} FROM {table} WHERE id >= ?1 ORDER BY id LIMIT 1"))?;
    let (mut lo, mut hi) = (min, max.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match stmt.query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).optional()? {
            Some((id, at)) if id < hi && at < t => lo = id + 1,
            // At or after `t`, or nothing from `mid` up to `hi`.
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The id range `[lo, hi)` a search covers: below `before`, within the
/// time range, within what the table holds. `None` when it is empty.
fn id_range(
    c: &Connection,
    table: &str,
    column: &str,
    before: Option<i64>,
    from: Option<i64>,
    to: Option<i64>,
) -> rusqlite::Result<Option<(i64, i64)>> {
    // Apart: SQLite reads one end of the key for MIN or MAX alone, and
    // the whole table for both in one query.
    let end = |sql: &str| c.prepare_cached(sql)?.query_row([], |r| r.get::<_, Option<i64>>(0));
    let min = end(&format!("SELECT MIN(id) FROM {table}"))?;
    let max = end(&format!("SELECT MAX(id) FROM {table}"))?;
    let (Some(min), Some(max)) = (min, max) else { return Ok(None) };
    let mut hi = max.saturating_add(1).min(before.unwrap_or(i64::MAX));
    let mut lo = min;
    if let Some(to) = to {
        hi = hi.min(first_at_or_after(c, table, column, to, min, max)?);
    }
    if let Some(from) = from {
        lo = lo.max(first_at_or_after(c, table, column, from, min, max)?);
    }
    Ok((lo < hi).then_some((lo, hi)))
}

/// One page of a message search (see the module doc).
fn find(
    c: &Connection,
    f: &Filters,
    before: Option<i64>,
    limit: usize,
    budget: SearchBudget,
) -> rusqlite::Result<MessagePage> {
    let Some((lo, hi)) = id_range(c, "header", "created_at", before, f.from, f.to)? else {
        return Ok(MessagePage::default());
    };
    let plan = Plan::new(c, f)?;
    let mut text = f.text.as_deref().map(TextSearch::new);
    let mut blocks = budget.blocks.max(1);
    let mut found = Vec::with_capacity(limit);
    let mut scanned = 0usize;
    let mut cursor = hi;
    let mut next = None;
    // Small at first, for a page that fills at once; larger while it does not.
    let mut size = 64usize;
    'search: while cursor > lo {
        let room = budget.headers.saturating_sub(scanned).max(1);
        let chunk = plan.chunk(c, cursor, lo, size.min(room), &mut blocks)?;
        size = (size * 4).min(4096);
        let count = chunk.rows.len();
        for (i, candidate) in chunk.rows.into_iter().enumerate() {
            scanned += 1;
            let matched = candidate.passes
                && match text.as_mut() {
                    Some(text) => text.matches(c, candidate.body_id)?,
                    None => true,
                };
            if matched {
                found.push(candidate.id);
            }
            let spent = scanned >= budget.headers || text.as_ref().is_some_and(|t| t.spent(&budget));
            if found.len() == limit || spent {
                // Nothing left below it: no next page.
                let left = i + 1 < count || chunk.reached > lo;
                next = left.then_some(candidate.id);
                break 'search;
            }
        }
        cursor = chunk.reached;
        if blocks == 0 && cursor > lo {
            next = Some(cursor);
            break;
        }
    }
    let mut summary = c.prepare_cached(&format!("{SUMMARY_SELECT} WHERE id = ?1"))?;
    let mut messages = Vec::with_capacity(found.len());
    for id in found {
        messages.extend(summary.query_row([id], summary_row).optional()?);
    }
    // The oldest header reached: the first one at or above where the
    // search stopped.
    let reached = next.unwrap_or(lo);
    let scanned_back_to = c
        .prepare_cached("SELECT id, created_at FROM header WHERE id >= ?1 ORDER BY id LIMIT 1")?
        .query_row([reached], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()?
        .filter(|(id, _)| *id < hi)
        .map(|(_, at)| at);
    Ok(MessagePage { messages, next, scanned: scanned as u64, scanned_back_to })
}

// --- events -----------------------------------------------------------------

fn find_events(c: &Connection, q: &EventQuery, before: Option<i64>, limit: usize) -> rusqlite::Result<EventPage> {
    let Some((lo, hi)) = id_range(c, "event", "at", before, q.from, q.to)? else {
        return Ok(EventPage::default());
    };
    let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let mut sql = Sql::default();
    let mut terms = Vec::new();
    match q.level {
        Some(EventLevel::Error) => terms.push("level = 'error'".to_owned()),
        Some(EventLevel::Warning) => terms.push("level IN ('warning', 'error')".to_owned()),
        Some(EventLevel::Info) | None => {}
    }
    if let Some(p) = given(&q.production) {
        terms.push(format!("production = {}", sql.bind(p)));
    }
    if let Some(item) = given(&q.item) {
        terms.push(format!("item = {}", sql.bind(item)));
    }
    if let Some(from) = q.from {
        terms.push(format!("at >= {}", sql.bind(from)));
    }
    if let Some(to) = q.to {
        terms.push(format!("at < {}", sql.bind(to)));
    }
    let k = sql.params.len();
    terms.push(format!("id < ?{} AND id >= ?{}", k + 1, k + 2));
    let query = format!(
        "SELECT id, at, level, production, item, kind, text FROM event WHERE {} ORDER BY id DESC LIMIT ?{}",
        terms.join(" AND "),
        k + 3
    );
    let mut stmt = c.prepare_cached(&query)?;
    let mut events = Vec::with_capacity(limit);
    let mut cursor = hi;
    while cursor > lo {
        let floor = cursor.saturating_sub(EVENT_WINDOW).max(lo);
        let mut params = sql.params.clone();
        params.extend([Value::from(cursor), floor.into(), ((limit - events.len()) as i64).into()]);
        let rows = stmt.query_map(params_from_iter(params), super::read::event_row)?;
        for row in rows {
            events.push(row?);
        }
        if events.len() == limit {
            let last = events.last().map_or(lo, |e| e.id);
            return Ok(EventPage { events, next: (last > lo).then_some(last) });
        }
        cursor = floor;
        if hi - cursor >= EVENT_BUDGET && cursor > lo {
            return Ok(EventPage { events, next: Some(cursor) });
        }
    }
    Ok(EventPage { events, next: None })
}
