//! Versioned schema migrations, applied in order at open.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A migration
//! is never edited once released; changes are new entries.

use rusqlite::Connection;

use super::error::StoreError;

/// Each entry moves the schema one version up.
const MIGRATIONS: &[&str] = &[
    // 1: bodies stored once, headers per target, replies, events, commanded
    // production states and item overrides.
    r#"
    CREATE TABLE body (
        id          INTEGER PRIMARY KEY,
        created_at  INTEGER NOT NULL,
        data        BLOB NOT NULL
    );
    CREATE INDEX body_created ON body(created_at);

    CREATE TABLE header (
        id           INTEGER PRIMARY KEY,
        session_id   INTEGER NOT NULL,
        parent_id    INTEGER,
        body_id      INTEGER NOT NULL REFERENCES body(id),
        production   TEXT NOT NULL,
        source       TEXT NOT NULL,
        target       TEXT NOT NULL,
        status       TEXT NOT NULL,
        control_id   TEXT,
        message_type TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        error_text   TEXT
    );
    -- The queues: only pending headers are indexed, so the index stays as
    -- small as the backlog however large the history grows.
    CREATE INDEX header_queue ON header(production, target, id) WHERE status IN ('queued', 'delivering');
    CREATE INDEX header_session ON header(session_id);
    CREATE INDEX header_body ON header(body_id);
    CREATE INDEX header_created ON header(created_at);

    CREATE TABLE reply (
        header_id    INTEGER PRIMARY KEY REFERENCES header(id),
        received_at  INTEGER NOT NULL,
        data         BLOB NOT NULL
    );

    CREATE TABLE event (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        level       TEXT NOT NULL,
        production  TEXT,
        item        TEXT,
        kind        TEXT NOT NULL,
        text        TEXT NOT NULL
    );
    CREATE INDEX event_at ON event(at);

    CREATE TABLE production_state (
        production  TEXT PRIMARY KEY,
        commanded   TEXT NOT NULL,
        at          INTEGER NOT NULL
    );

    CREATE TABLE item_state (
        production  TEXT NOT NULL,
        item        TEXT NOT NULL,
        enabled     INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        PRIMARY KEY (production, item)
    );
    "#,
    // 2: the Home Assistant discovery topics published, so that entities
    // that no longer exist can be removed at the next start.
    r#"
    CREATE TABLE discovery_topic (
        topic       TEXT PRIMARY KEY,
        at          INTEGER NOT NULL
    );
    "#,
    // 3: the messages being delivered, so that putting them back in their
    // queues at start reads only them instead of every header kept.
    r#"
    CREATE INDEX header_delivering ON header(production, target) WHERE status = 'delivering';
    "#,
    // 4: queue depths kept with the data they count, updated by every
    // commit that changes them, so opening the store reads one row per
    // queue instead of counting the backlog.
    r#"
    CREATE TABLE queue_depth (
        production  TEXT NOT NULL,
        item        TEXT NOT NULL,
        depth       INTEGER NOT NULL,
        PRIMARY KEY (production, item)
    ) WITHOUT ROWID;
    INSERT INTO queue_depth (production, item, depth)
        SELECT production, target, COUNT(*) FROM header
        WHERE status IN ('queued', 'delivering') GROUP BY production, target;
    "#,
    // 5: lighter commits. The purge walks headers in id order (ids grow
    // with time) and finds whether a body is still used through its
    // session, so the indexes on creation times and on body ids, which
    // every commit had to update, go.
    r#"
    DROP INDEX header_created;
    DROP INDEX header_body;
    DROP INDEX body_created;
    "#,
    // 6: the last record of the inbound log committed (see the
    // `inbound_log` module).
    r#"
    CREATE TABLE inbound_log (
        id          INTEGER PRIMARY KEY CHECK (id = 0),
        applied     INTEGER NOT NULL
    );
    INSERT INTO inbound_log (id, applied) VALUES (0, 0);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database up to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.max(0) as usize;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found: current, supported: SCHEMA_VERSION });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
