//! The read side of the store: queries on its own connection, which never
//! waits for the writer (SQLite's write-ahead log lets readers see the last
//! commit while the next one is written).

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::Store;
use super::error::StoreError;
use super::model::{Commanded, MessageSummary, Queued, Status, StoredEvent};
use crate::sync::LockExt as _;

/// The most bytes of bodies [`Store::fetch_queue`] hands out at a time, so
/// that a queue of large messages (images or documents inside ORU) is not
/// read into memory a whole batch at once.
pub const FETCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The read of a queue, from the header after `?4` on.
///
/// Every parameter is written `+?n`. SQLite plans this query with the
/// values bound (the partial indexes and the limit depend on them) and
/// marks such a statement to be prepared again whenever its parameters are
/// cleared, which rusqlite's statement cache does each time it takes the
/// statement back: the read was compiled anew for every batch. A unary plus
/// keeps the values out of the plan, which is the same for any of them:
/// the queue's index, in id order.
pub(super) const FETCH_QUEUE_SQL: &str = "SELECT h.id, h.session_id, b.data, h.control_id, h.attempts
     FROM header h JOIN body b ON b.id = h.body_id
     WHERE h.production = +?1 AND h.target = +?2 AND h.status IN ('queued', 'delivering') AND h.status = 'queued'
     AND h.id > +?4 ORDER BY h.id LIMIT +?3";

impl Store {
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.inner.reader.lock_unpoisoned();
        Ok(f(&conn)?)
    }

    /// The last commanded state of a production, if any.
    pub fn commanded_state(&self, production: &str) -> Result<Option<Commanded>, StoreError> {
        let text: Option<String> = self.read(|c| {
            c.query_row("SELECT commanded FROM production_state WHERE production = ?1", [production], |r| r.get(0))
                .optional()
        })?;
        Ok(text.as_deref().map(Commanded::parse))
    }

    /// An item's enabled flag set at run time, if any.
    pub fn item_enabled(&self, production: &str, item: &str) -> Result<Option<bool>, StoreError> {
        self.read(|c| {
            c.query_row("SELECT enabled FROM item_state WHERE production = ?1 AND item = ?2", [production, item], |r| {
                r.get::<_, i64>(0).map(|v| v != 0)
            })
            .optional()
        })
    }

    /// Up to `limit` headers at the head of a queue that are `queued` (not
    /// already taken), in order, with their bodies, and no more bodies than
    /// [`FETCH_MAX_BYTES`] hold (always at least one message, whatever its
    /// size). Headers whose delivery result is noted and not yet committed
    /// are left out: they have been delivered (see the `delivery_log`
    /// module).
    pub fn fetch_queue(&self, production: &str, item: &str, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.fetch_queue_after(production, item, 0, limit)
    }

    /// [`fetch_queue`](Self::fetch_queue) from the first header after
    /// `after` on: for an operation that has taken the headers up to
    /// `after` and reads on before its mark of them is committed (they
    /// would still look `queued`).
    pub fn fetch_queue_after(
        &self,
        production: &str,
        item: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let deliveries = &self.inner.deliveries;
        self.read(|c| {
            // Under the reader, before the query: see `DeliveryLog::delivered`.
            deliveries.forget_committed();
            let mut stmt = c.prepare_cached(FETCH_QUEUE_SQL)?;
            let rows = stmt.query_map(params![production, item, limit as i64, after], |r| {
                Ok(Queued {
                    id: r.get(0)?,
                    session_id: r.get(1)?,
                    body: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    control_id: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                })
            })?;
            let mut batch = Vec::new();
            let mut bytes = 0;
            for row in rows {
                let row = row?;
                bytes += row.body.len();
                if bytes > FETCH_MAX_BYTES && !batch.is_empty() {
                    break;
                }
                batch.push(row);
            }
            // Still under the reader: a later read would forget results
            // committed while this query ran.
            batch.retain(|q| !deliveries.delivered(q.id));
            Ok(batch)
        })
    }

    /// One header, for inspection.
    pub fn header(&self, id: i64) -> Result<Option<MessageSummary>, StoreError> {
        self.read(|c| c.query_row(&format!("{SUMMARY_SELECT} WHERE id = ?1"), [id], summary_row).optional())
    }

    /// All headers of a session, in order: the trace of one inbound message.
    pub fn session(&self, session_id: i64) -> Result<Vec<MessageSummary>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("{SUMMARY_SELECT} WHERE session_id = ?1 ORDER BY id"))?;
            let rows = stmt.query_map([session_id], summary_row)?;
            rows.collect()
        })
    }

    /// The body a header points at.
    pub fn body(&self, header_id: i64) -> Result<Option<Bytes>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT b.data FROM header h JOIN body b ON b.id = h.body_id WHERE h.id = ?1",
                [header_id],
                |r| r.get::<_, Vec<u8>>(0).map(Bytes::from),
            )
            .optional()
        })
    }

    /// The reply stored with a header, if any.
    pub fn reply(&self, header_id: i64) -> Result<Option<Bytes>, StoreError> {
        self.read(|c| {
            c.query_row("SELECT data FROM reply WHERE header_id = ?1", [header_id], |r| {
                r.get::<_, Vec<u8>>(0).map(Bytes::from)
            })
            .optional()
        })
    }

    /// The most recent events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT id, at, level, production, item, kind, text FROM event ORDER BY id DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], event_row)?;
            rows.collect()
        })
    }

    /// Counts headers by status (for tests and the UI).
    pub fn count_by_status(&self, production: &str, item: &str, status: Status) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM header WHERE production = ?1 AND target = ?2 AND status = ?3",
                params![production, item, status.as_str()],
                |r| r.get::<_, i64>(0).map(|n| n as u64),
            )
        })
    }
}

/// An event from `SELECT id, at, level, production, item, kind, text`.
pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        level: r.get(2)?,
        production: r.get(3)?,
        item: r.get(4)?,
        kind: r.get(5)?,
        text: r.get(6)?,
    })
}

/// The columns of a [`MessageSummary`], in the order [`summary_row`] reads
/// them. Every read of whole headers (one by id, a session's trace, a
/// search's page and a message's detail) selects these and reads them
/// with [`summary_row`], so that a list, a detail page and an inspection
/// show the same fields, and a column added is added to all of them.
pub(super) const SUMMARY_SELECT: &str =
    "SELECT id, session_id, parent_id, production, source, target, status, control_id,
     message_type, patient_id, patient_name, attempts, error_text, created_at, updated_at, resent_from FROM header";

/// A header from [`SUMMARY_SELECT`]. A status this version does not know
/// reads as `error`, so that one odd row does not fail a whole page.
pub(super) fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageSummary> {
    let status: String = r.get(6)?;
    Ok(MessageSummary {
        id: r.get(0)?,
        session_id: r.get(1)?,
        parent_id: r.get(2)?,
        production: r.get(3)?,
        source: r.get(4)?,
        target: r.get(5)?,
        status: Status::parse(&status).unwrap_or(Status::Error),
        control_id: r.get(7)?,
        message_type: r.get(8)?,
        patient_id: r.get(9)?,
        patient_name: r.get(10)?,
        attempts: r.get::<_, i64>(11)?.clamp(0, i64::from(u32::MAX)) as u32,
        error: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        resent_from: r.get(15)?,
    })
}
