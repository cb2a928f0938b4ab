//! The names of the files the store keeps, all next to its database, and
//! of the copies it sets aside. Kept apart so that the logs and the facade
//! can name them without importing each other.

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

/// Copies a damaged file to `<file>.damaged-<unix seconds>` and logs the
/// copy's name: the store writes over its logs' files once it is open, and
/// whoever looks into the damage needs them as they were.
pub(super) fn set_aside(path: &Path) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{secs}"));
    let aside = PathBuf::from(aside);
    match std::fs::copy(path, &aside) {
        Ok(_) => {
            tracing::warn!(file = %path.display(), copy = %aside.display(), "the damaged file is copied to {}", aside.display());
        }
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot copy the damaged file aside"),
    }
}
