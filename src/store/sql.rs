//! The SQL of each write, run by the writer inside its transaction:
//! [`apply`] takes one operation of the write protocol to the statements it
//! needs and returns its outcome. Nothing here begins or ends a
//! transaction; the writer does (see the writer module).

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{CachedStatement, Connection, OptionalExtension as _, params};

use super::facts::{MessageFacts, cut};
use super::model::{Committed, Event, Finished, NewInbound, PurgeStep, ResendStep, Routed, RoutedOutput, Status};
use super::protocol::{Op, Outcome, ResendBatch, ResendCopy};
use super::queues::{Deltas, Depths};

pub(super) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Header ids are chosen by the writer, not by SQLite, so that a session's
/// first header can carry its own id as the session id in one insert.
/// The writer is the only one inserting headers, so the largest id read at
/// the start of a transaction stays the largest until it ends.
pub(super) struct HeaderIds {
    next: i64,
}

impl HeaderIds {
    pub(super) fn next_free(tx: &Connection) -> rusqlite::Result<Self> {
        let max: i64 = tx.prepare_cached("SELECT IFNULL(MAX(id), 0) FROM header")?.query_row([], |r| r.get(0))?;
        Ok(Self { next: max + 1 })
    }

    fn take(&mut self) -> i64 {
        let id = self.next;
        self.next += 1;
        id
    }
}

/// The most headers one received message may write and still be found
/// through its first one.
///
/// The control id and patient id indexes (migration 7) name one header per
/// received message, not every header: the service's own header stands for
/// the others its commit writes with it (its targets and the outputs of the
/// routers that decided on receipt, which have the same control id and
/// patient), marked `grouped`. A search finds them through the session of
/// the header it finds. Every other header (a router's outputs written
/// later, an output with a control id of its own, a copy sent again) is
/// indexed itself. This takes two index entries off every header but the
/// first, on the path of every received message.
///
/// A group's ids follow its first header's, so a group no larger than this
/// reaches at most one block of the indexes past its first header's,
/// which is as far as a search looks back; a larger one (a message for
/// hundreds of targets) is indexed header by header.
pub(super) const GROUP_MAX: usize = 512;

/// The statements run for every message, each taken from rusqlite's
/// statement cache once per transaction instead of once per message:
/// taking one hashes its text twice and copies it into a new allocation.
pub(super) struct Statements<'c> {
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
    "INSERT INTO header (id, session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at, attempts, error_text, patient_id, patient_name, grouped)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15, ?16)",
    "INSERT INTO header (id, session_id, parent_id, body_id, production, source, target, status, control_id, message_type, created_at, updated_at, patient_id, patient_name, resent_from, grouped)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14)",
    "UPDATE header SET status = ?1, attempts = ?2, error_text = ?3, updated_at = ?4
     WHERE id = ?5 AND status IN ('queued', 'delivering')",
    "INSERT INTO reply (header_id, received_at, data) VALUES (?1, ?2, ?3)
     ON CONFLICT(header_id) DO UPDATE SET received_at = excluded.received_at, data = excluded.data",
];

impl<'c> Statements<'c> {
    pub(super) fn new(tx: &'c Connection) -> Self {
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

pub(super) fn apply(
    st: &mut Statements<'_>,
    op: &Op,
    ids: &mut HeaderIds,
    depths: &Depths<'_>,
    deltas: &mut Deltas,
) -> Outcome {
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
        Op::ResendCopy(copy, _) => Outcome::Id(resend_copy_tx(st, copy, ids, deltas).map_err(Into::into)),
        Op::ResendBatch(batch, _) => Outcome::Resent(resend_batch_tx(tx, batch, deltas).map_err(Into::into)),
        Op::Event(event, _) => unit(event_tx(tx, event)),
        Op::Commanded(production, state, _) => unit(
            tx.execute(
                "INSERT INTO production_state (production, commanded, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(production) DO UPDATE SET commanded = excluded.commanded, at = excluded.at",
                params![production, state.as_str(), now_millis()],
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
    // The headers written here are found through the first (see
    // `GROUP_MAX`), unless there could be too many of them.
    let most = 1 + inbound.targets.len() + inbound.routed.iter().map(|r| r.decision.outputs.len()).sum::<usize>();
    let grouped = (most <= GROUP_MAX).then_some(1);
    // Cut as the intake cuts them, whoever made the record.
    let (patient_id, patient_name) = (inbound.patient_id.as_deref().map(cut), inbound.patient_name.as_deref().map(cut));
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
        None::<&str>,
        patient_id,
        patient_name,
        None::<i64>
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
            error,
            patient_id,
            patient_name,
            grouped
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
                    patient_id,
                    patient_name,
                    grouped: grouped.is_some(),
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
    /// Inherited by every output, transformed or not.
    patient_id: Option<&'a str>,
    patient_name: Option<&'a str>,
    /// The outputs are written with the received message, and found
    /// through its header when they keep its control id (see `GROUP_MAX`).
    grouped: bool,
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
        let grouped = (parent.grouped && control == parent.control_id).then_some(1);
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
            now,
            parent.patient_id,
            parent.patient_name,
            None::<i64>,
            grouped
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
    let source = tx
        .prepare_cached(
            "SELECT session_id, body_id, production, target, control_id, message_type, patient_id, patient_name
             FROM header WHERE id = ?1",
        )?
        .query_row([routed.header_id], Source::row)?;
    let Source { session_id, body_id, production, target: router, control_id, message_type, patient_id, patient_name } =
        source;
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
        patient_id: patient_id.as_deref(),
        patient_name: patient_name.as_deref(),
        grouped: false,
    };
    queue_outputs(st, &parent, &routed.decision.outputs, now, ids, deltas)
}

/// The header a router's outputs or a copy come from, as read back.
struct Source {
    session_id: i64,
    body_id: i64,
    production: String,
    target: String,
    control_id: Option<String>,
    message_type: Option<String>,
    patient_id: Option<String>,
    patient_name: Option<String>,
}

impl Source {
    /// Reads the columns in the order of the struct.
    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            session_id: r.get(0)?,
            body_id: r.get(1)?,
            production: r.get(2)?,
            target: r.get(3)?,
            control_id: r.get(4)?,
            message_type: r.get(5)?,
            patient_id: r.get(6)?,
            patient_name: r.get(7)?,
        })
    }
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

/// Queues a copy of a header for `copy.target`: the same session and
/// parent, the original's body or an edited one, and `resent_from` naming
/// the original, which is left as it was. `None` when there is no such
/// header.
fn resend_copy_tx(
    st: &mut Statements<'_>,
    copy: &ResendCopy,
    ids: &mut HeaderIds,
    deltas: &mut Deltas,
) -> rusqlite::Result<Option<i64>> {
    let tx = st.tx;
    let original = tx
        .prepare_cached(
            "SELECT session_id, body_id, production, target, control_id, message_type, patient_id, patient_name,
                    parent_id, source
             FROM header WHERE id = ?1",
        )?
        .query_row([copy.id], |r| Ok((Source::row(r)?, r.get::<_, Option<i64>>(8)?, r.get::<_, String>(9)?)))
        .optional()?;
    let Some((original, parent_id, source)) = original else { return Ok(None) };
    let now = now_millis();
    let (body_id, facts) = match &copy.edited {
        Some((body, facts)) => {
            st.get(Hot::InsertBody)?.execute(params![now, &body[..]])?;
            (tx.last_insert_rowid(), facts.clone())
        }
        None => (
            original.body_id,
            MessageFacts {
                control_id: original.control_id,
                message_type: original.message_type,
                patient_id: original.patient_id,
                patient_name: original.patient_name,
            },
        ),
    };
    let id = ids.take();
    st.get(Hot::InsertOutput)?.execute(params![
        id,
        original.session_id,
        parent_id,
        body_id,
        original.production,
        source,
        copy.target,
        facts.control_id,
        facts.message_type,
        now,
        facts.patient_id,
        facts.patient_name,
        copy.id,
        None::<i64>
    ])?;
    deltas.add(&original.production, &copy.target, 1);
    Ok(Some(id))
}

/// Puts up to `limit` suspended or failed headers of one item with ids
/// after `after` back in their queue: the lowest ids first, so that one
/// batch after the other the item gets them in id order.
fn resend_batch_tx(tx: &Connection, batch: &ResendBatch, deltas: &mut Deltas) -> rusqlite::Result<ResendStep> {
    let limit = batch.limit.max(1);
    let mut found = Vec::with_capacity(2 * limit);
    // A status with `limit` found may have more after them.
    let mut more = false;
    // One status at a time, each in id order along the index of rare
    // statuses (the literal status is what lets the planner take it).
    for status in RESENDABLE {
        let select = format!(
            "SELECT id FROM header WHERE status = '{}' AND production = ?1 AND target = ?2 AND id > ?3
             ORDER BY id LIMIT ?4",
            status.as_str()
        );
        let mut stmt = tx.prepare_cached(&select)?;
        let rows = stmt.query_map(params![batch.production, batch.item, batch.after, limit as i64], |r| r.get(0))?;
        let before = found.len();
        for id in rows {
            found.push(id?);
        }
        more |= found.len() - before == limit;
    }
    found.sort_unstable();
    let done = !more && found.len() <= limit;
    found.truncate(limit);
    let mut update = tx.prepare_cached(
        "UPDATE header SET status = 'queued', error_text = NULL, updated_at = ?1
         WHERE id = ?2 AND (status = 'suspended' OR status = 'error')",
    )?;
    let now = now_millis();
    let mut step = ResendStep { resent: 0, after: batch.after, done };
    for id in found {
        step.resent += update.execute(params![now, id])? as u64;
        step.after = id;
    }
    deltas.add(&batch.production, &batch.item, step.resent as i64);
    Ok(step)
}

/// The statuses [`Store::resend_all`](super::Store::resend_all) takes back.
pub(super) const RESENDABLE: [Status; 2] = [Status::Suspended, Status::Error];

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

/// Adds a group's queue depth changes to the persisted counters, one
/// statement per queue touched.
pub(super) fn update_depths(tx: &Connection, sums: &Deltas) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO queue_depth (production, item, depth) VALUES (?1, ?2, ?3)
         ON CONFLICT(production, item) DO UPDATE SET depth = depth + excluded.depth",
    )?;
    for (production, item, delta) in sums.iter().filter(|s| s.2 != 0) {
        stmt.execute(params![production, item, delta])?;
    }
    Ok(())
}
