//! The names of the files the store keeps, all next to its database. Kept
//! apart so that the logs and the facade can name them without importing
//! each other.

use std::path::{Path, PathBuf};

/// A file kept next to the database, `<db>-<suffix>`: SQLite's `-wal`, the
/// inbound log's `-inbound-0` and `-inbound-1`, the delivery log's
/// `-deliveries`.
pub(super) fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-");
    name.push(suffix);
    PathBuf::from(name)
}
