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
    // 7: finding messages (see the `search` module). The patient is kept
    // on every header, like MSH-9 and MSH-10, so that a search filters on
    // the header row alone and never reads a body it does not need; a
    // body can be a megabyte, a header's two more values are a few bytes.
    // A copy sent again names the header it copies.
    //
    // Three indexes, for the values a search cannot find by walking the
    // newest headers (time ranges become id ranges, item and type filters
    // match too often to need one):
    //
    // - statuses that are rare and stay: a commit that queues or
    //   completes a message never touches it;
    // - control ids and patient ids, each grouped by blocks of 1,024
    //   header ids before the value. A plain index on a value that is
    //   random (a patient id) puts every insert on a page of its own once
    //   the index outgrows the cache, so each commit would write as many
    //   index pages as it inserts headers. Grouped, the inserts of a
    //   commit land among the few pages of the newest block; a search
    //   looks the value up block by block, newest first, which also gives
    //   its results in id order. They hold one header per received
    //   message: the others its commit writes are `grouped`, found
    //   through its session (see `GROUP_MAX` in `sql`). Headers written
    //   before this version are each indexed.
    r#"
    ALTER TABLE header ADD COLUMN patient_id TEXT;
    ALTER TABLE header ADD COLUMN patient_name TEXT;
    ALTER TABLE header ADD COLUMN resent_from INTEGER;
    ALTER TABLE header ADD COLUMN grouped INTEGER;
    CREATE INDEX header_status ON header(status) WHERE status = 'error' OR status = 'suspended' OR status = 'discarded';
    CREATE INDEX header_control ON header(id >> 10, control_id) WHERE grouped IS NULL AND control_id IS NOT NULL;
    CREATE INDEX header_patient ON header(id >> 10, patient_id) WHERE grouped IS NULL AND patient_id IS NOT NULL;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// How many header ids share one block of the control id and patient id
/// indexes, as a shift: `id >> BLOCK_BITS` is the block. Written into the
/// indexes of migration 7, and the queries must use the same expression.
pub(super) const BLOCK_BITS: u32 = 10;

/// Brings the database up to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the database up to `target` (tests start from older versions).
fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let current = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.max(0) as usize;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found: current, supported: SCHEMA_VERSION });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    /// A file of version 6 (before messages could be searched) with a
    /// message in it takes migration 7: the message keeps everything, has
    /// no patient (it was not recorded then) and is found by the new
    /// indexes.
    #[test]
    fn a_file_of_version_6_is_migrated_and_its_messages_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::disk::open_connection(&dir.path().join("s.db")).unwrap();
        migrate_to(&mut conn, 6).unwrap();
        conn.execute_batch(
            "INSERT INTO body (id, created_at, data) VALUES (1, 5, x'4d5348');
             INSERT INTO header (id, session_id, parent_id, body_id, production, source, target, status, control_id,
                                 message_type, created_at, updated_at, attempts, error_text)
             VALUES (1, 1, NULL, 1, 'p', 'peer', 'In', 'completed', 'M1', 'ADT^A01', 5, 5, 0, NULL),
                    (2, 1, 1, 1, 'p', 'In', 'Out', 'error', 'M1', 'ADT^A01', 5, 6, 3, 'refused');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        let row: (String, Option<String>, Option<i64>, i64) = conn
            .query_row("SELECT error_text, patient_id, resent_from, attempts FROM header WHERE id = 2", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, ("refused".to_owned(), None, None, 3));
        let by_control: Vec<i64> = conn
            .prepare(
                "SELECT id FROM header INDEXED BY header_control
                 WHERE (id >> 10) = 0 AND grouped IS NULL AND control_id = ?1",
            )
            .unwrap()
            .query_map(params!["M1"], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(by_control, [1, 2]);
        let errors: i64 = conn
            .query_row("SELECT COUNT(*) FROM header INDEXED BY header_status WHERE status = 'error'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(errors, 1);
    }

    #[test]
    fn the_block_of_the_indexes_is_the_one_the_queries_use() {
        let expression = format!("id >> {BLOCK_BITS}");
        let migration = MIGRATIONS[6];
        assert_eq!(migration.matches(&expression).count(), 2, "{migration}");
    }
}
