//! The store's two logs read on their own, as [`Store::open`](super::Store::open)
//! reads them, without a database.
//!
//! After a crash or a power cut the inbound log and the delivery log hold
//! whatever reached the disk: torn records, zeros, an earlier round's
//! leftovers, flipped bits. Their readers must take every intact record,
//! before and after any damage, never panic, and never allocate what a
//! corrupt length claims. The fuzz targets (`fuzz/fuzz_targets/inbound_log.rs`
//! and `delivery_log.rs`) drive the readers through this entry point over
//! files they write, so that the files are read exactly as at open; it
//! adds no logic of its own.

use std::path::Path;

use super::delivery_log::DeliveryLog;
use super::error::StoreError;
use super::files::beside;
use super::inbound_log;

/// Reads the inbound log's files (`<db>-inbound-0`, `<db>-inbound-1`) as
/// the store does at open: per record after `applied`, in the order they
/// would be applied, its sequence number and the length of its body.
#[doc(hidden)]
pub fn read_inbound_log(db: &Path, applied: u64) -> Result<Vec<(u64, usize)>, StoreError> {
    let records = inbound_log::read(db, applied)?;
    Ok(records.iter().map(|r| (r.seq, r.inbound.body.len())).collect())
}

/// Reads the delivery log (`<db>-deliveries`, created empty when missing)
/// as the store does at open: per result noted, the header it is for and
/// the length of its reply, if any.
#[doc(hidden)]
pub fn read_delivery_log(db: &Path) -> Result<Vec<(i64, Option<usize>)>, StoreError> {
    let (_log, noted) =
        DeliveryLog::open(db).map_err(|reason| StoreError::Path { path: beside(db, "deliveries"), reason })?;
    Ok(noted.iter().map(|n| (n.header_id, n.reply.as_ref().map(|r| r.len()))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_logs_hold_and_nothing_from_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        assert!(read_inbound_log(&db, 0).unwrap().is_empty());
        assert!(read_delivery_log(&db).unwrap().is_empty(), "a missing delivery log is an empty one");

        let mut bytes = Vec::new();
        for seq in [3, 4] {
            inbound_log::encode(seq, &crate::store::tests::inbound(seq as usize), &mut bytes);
        }
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(inbound_log::segment_path(&db, 1), &bytes).unwrap();
        let body = crate::store::tests::inbound(3).body.len();
        assert_eq!(read_inbound_log(&db, 0).unwrap(), [(3, body), (4, body)]);
        assert_eq!(read_inbound_log(&db, 3).unwrap(), [(4, body)], "applied records are skipped");

        let (log, _) = DeliveryLog::open(&db).unwrap();
        for (header_id, reply) in [(7, Some(&b"MSH|^~\\&"[..])), (8, None)] {
            let reply = reply.map(bytes::Bytes::from_static);
            let status = crate::store::Status::Completed;
            log.note(&super::super::delivery_log::Noted { header_id, status, attempts: 1, reply, error: None })
                .unwrap();
        }
        drop(log);
        assert_eq!(read_delivery_log(&db).unwrap(), [(7, Some(8)), (8, None)]);
    }
}
