//! The store's error type.

use std::path::PathBuf;

use thiserror::Error;

/// Store failures. None carries message content.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer Switchboard.
    #[error(
        "the store has schema version {found}, newer than the {supported} this version understands; upgrade Switchboard or use another data directory"
    )]
    NewerSchema {
        /// Version in the file.
        found: usize,
        /// Version this build writes.
        supported: usize,
    },
    /// The transaction holding this operation could not be committed; the
    /// operation did not take effect.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The writer thread has stopped (the store is closing).
    #[error("the store is closed")]
    Closed,
    /// A message acknowledged by the previous run could not be committed
    /// from the inbound log; the store does not open, so that it is not
    /// lost.
    #[error(
        "message {seq} of the inbound log (received and acknowledged before the last stop) cannot be committed: {reason}; the log is kept, fix the cause and start again"
    )]
    InboundLog {
        /// Its sequence number in the log.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// SQLite found the database damaged (corrupt, or not a database);
    /// the store does not open, and the file is left as it is.
    #[error(
        "the message store {path} is damaged, so it is not opened and left as it is: {found}. Restore the last backup: stop Switchboard, move {path} and the files named like it with a suffix (-wal, -inbound-0, -inbound-1, -deliveries) out of the data folder, put the backup's switchboard-backup.db there (restoring a Home Assistant backup of the add-on does both) and start again: the copy becomes the store"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite said, and what its integrity check found.
        found: String,
    },
    /// No header has this id (never stored, or purged).
    #[error("no message has id {id}")]
    NoSuchMessage {
        /// The id asked for.
        id: i64,
    },
    /// An edited message to send again does not parse; nothing was
    /// queued. The error gives a byte position, never content.
    #[error("the edited message does not parse: {0}")]
    EditedBody(#[source] crate::hl7::ParseError),
    /// A request the store cannot act on (an empty target, a search text
    /// longer than the store searches for); says which.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The data directory could not be prepared.
    #[error("cannot use {path}: {reason}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
}
