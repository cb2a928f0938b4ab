//! Reads the inbound log's two files as the store does when it opens after
//! a crash, whatever they hold: torn or truncated records, zeros, an
//! earlier round's leftovers, flipped bits, lengths that claim gigabytes.
//!
//! Input layout: byte 0 chooses the sequence number the store has applied
//! (`0..=254`, or 255 for `u64::MAX`), bytes 1–2 (little-endian) how many
//! of the remaining bytes go to `inbound-0`; the rest is `inbound-1`.
//!
//! Checked beyond "no panic" (and beyond libFuzzer's memory limit, which
//! catches an allocation sized by a corrupt length):
//! - the records come back in sequence order, all after the applied one;
//! - every record fits in its file: there are no more records than the
//!   files have room for, and no body is longer than the files.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::store::read_inbound_log;

/// Magic, sequence number and length, then the CRC-32 after the payload.
const MIN_RECORD: usize = 13 + 4;

/// The database path the log files are named after: one scratch folder
/// per process, in `TMPDIR`.
fn db() -> &'static PathBuf {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchboard-fuzz-inbound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder in TMPDIR");
        dir.join("store.db")
    })
}

fn beside(db: &PathBuf, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(format!("-{suffix}"));
    PathBuf::from(name)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[applied, split_lo, split_hi], files)) = data.split_first_chunk::<3>() else {
        return;
    };
    let applied = if applied == u8::MAX { u64::MAX } else { u64::from(applied) };
    let split = usize::from(u16::from_le_bytes([split_lo, split_hi])).min(files.len());
    let (first, second) = files.split_at(split);

    let db = db();
    std::fs::write(beside(db, "inbound-0"), first).expect("the scratch file can be written");
    std::fs::write(beside(db, "inbound-1"), second).expect("the scratch file can be written");

    let records = match read_inbound_log(db, applied) {
        Ok(records) => records,
        Err(e) => panic!("reading the log failed: {e}"),
    };
    assert!(records.len() <= files.len() / MIN_RECORD, "{} records from {} bytes", records.len(), files.len());
    let mut previous = None;
    for &(seq, body) in &records {
        assert!(seq > applied, "record {seq} was applied already ({applied})");
        assert!(previous <= Some(seq), "records out of order: {previous:?} then {seq}");
        assert!(body <= files.len(), "a body of {body} bytes from {} bytes", files.len());
        previous = Some(seq);
    }
});
