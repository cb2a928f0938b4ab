//! Reads the delivery log as the store does when it opens after a crash,
//! whatever the file holds: torn or truncated records, zeros, flipped bits,
//! lengths that claim gigabytes.
//!
//! Input: the file's bytes.
//!
//! Checked beyond "no panic" (and beyond libFuzzer's memory limit, which
//! catches an allocation sized by a corrupt length):
//! - every result read fits in the file: there are no more results than
//!   the file has room for, and their replies together are no longer than
//!   the file.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::store::read_delivery_log;

/// The fixed part of a record and its CRC-32.
const MIN_RECORD: usize = 22 + 4;

/// The database path the log is named after: one scratch folder per
/// process, in `TMPDIR`.
fn db() -> &'static (PathBuf, PathBuf) {
    static DB: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchboard-fuzz-deliveries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder in TMPDIR");
        (dir.join("store.db"), dir.join("store.db-deliveries"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (db, log) = db();
    std::fs::write(log, data).expect("the scratch file can be written");
    let noted = match read_delivery_log(db) {
        Ok(noted) => noted,
        Err(e) => panic!("reading the log failed: {e}"),
    };
    assert!(noted.len() <= data.len() / MIN_RECORD, "{} results from {} bytes", noted.len(), data.len());
    let replies: usize = noted.iter().filter_map(|&(_, reply)| reply).sum();
    assert!(replies <= data.len(), "{replies} bytes of replies from {} bytes", data.len());
});
