//! Parses arbitrary bytes as an HL7 v2 message (and as a batch file) and,
//! when they parse, reads everything the read-only API offers.
//!
//! Checked beyond "no panic":
//! - parsing never copies or alters the bytes (`raw() == data`);
//! - the structural iterators and path lookups agree on every element;
//! - when `check_escapes` accepts the message, strict decoding of any field
//!   (other than MSH-1/MSH-2) succeeds too;
//! - an ACK built for any parsable message parses, answers with the code it
//!   was built with and carries the original MSH-10 in MSA-2.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::hl7::{AckBuilder, AckCode, Message, Path, Reply, check_header, split_batch};

/// Upper bound on path lookups cross-checked per input: each lookup scans
/// the segment list, so checking every element of a large input would be
/// quadratic and slow the fuzzer down for no extra coverage.
const MAX_PATH_CHECKS: usize = 512;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        exercise(&msg, data);
    }
    if let Ok(batch) = split_batch(data) {
        let _ = batch.counts_mismatch();
        for raw in &batch.messages {
            if let Ok(msg) = Message::parse(raw) {
                assert_eq!(msg.raw(), *raw);
                let _ = check_header(&msg);
                let _ = Reply::read(&msg);
            }
        }
    }
});

fn exercise(msg: &Message<'_>, data: &[u8]) {
    assert_eq!(msg.raw(), data, "parsing must not alter the bytes");

    let _ = msg.delimiters().encoding_characters();
    let _ = msg.charset();
    let _ = (msg.control_id(), msg.message_code(), msg.trigger_event(), msg.version());
    let escapes_ok = msg.check_escapes().is_ok();

    let mut checks = 0usize;
    let mut occurrences: Vec<([u8; 3], usize)> = Vec::new();
    assert_eq!(msg.segments().len(), msg.segment_count());
    for (seg_idx, seg) in msg.segments().enumerate() {
        let id = seg.id();
        assert_eq!(id.len(), 3);
        let _ = (seg.raw(), seg.position());
        let occurrence = {
            let key: [u8; 3] = id.as_bytes().try_into().unwrap();
            match occurrences.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    occurrences.push((key, 1));
                    1
                }
            }
        };
        let field_count = seg.field_count();
        let mut last = 0;
        for (n, field) in seg.fields() {
            last = n;
            let _ = field.text();
            let _ = field.position();
            assert_eq!(seg.field(n).map(|f| f.raw()), Some(field.raw()));
            let header = seg_idx == 0 && n <= 2;
            let base = Path::field(id, n).occurrence(occurrence);
            if checks < MAX_PATH_CHECKS {
                checks += 1;
                assert_eq!(msg.get(&base), Some(field.raw()), "{base}");
                if escapes_ok && !header {
                    let strict = msg.text_strict(&base).expect("the field exists");
                    assert!(strict.is_ok(), "check_escapes accepted the message but {base} fails: {strict:?}");
                }
            }
            for (r, rep) in field.repetitions().enumerate() {
                let _ = rep.text();
                let _ = rep.position();
                let rep_path = base.repetition(r + 1);
                if checks < MAX_PATH_CHECKS {
                    checks += 1;
                    assert_eq!(msg.get(&rep_path), Some(rep.raw()), "{rep_path}");
                }
                for (c, comp) in rep.components().enumerate() {
                    let _ = comp.text();
                    let _ = comp.position();
                    let comp_path = rep_path.component(c + 1);
                    if checks < MAX_PATH_CHECKS {
                        checks += 1;
                        assert_eq!(msg.get(&comp_path), Some(comp.raw()), "{comp_path}");
                    }
                    for (s, sub) in comp.subcomponents().enumerate() {
                        let _ = msg.decode(sub);
                        let sub_path = comp_path.subcomponent(s + 1);
                        if checks < MAX_PATH_CHECKS {
                            checks += 1;
                            assert_eq!(msg.get(&sub_path), Some(sub), "{sub_path}");
                        }
                    }
                }
            }
        }
        assert_eq!(last, field_count, "fields() and field_count() disagree in {id}");
        assert!(seg.field(field_count + 1).is_none());
        assert!(seg.field(0).is_none());
    }

    let _ = msg.text("PID-3[2].4.2").expect("valid path notation");
    let _ = msg.text("MSH-9.2").expect("valid path notation");
    let _ = msg.text("OBX[2]-5").expect("valid path notation");
    let _ = msg.text_strict(&Path::field("OBX", 5).repetition(1).component(1));
    let _ = msg.segment("PID", 1);
    let _ = check_header(msg);
    let reply = Reply::read(msg);
    let _ = (reply.acknowledgment_code(), reply.acknowledged_control_id(), reply.text(), reply.is_positive());

    let ack = AckBuilder::new(msg, AckCode::AE).text("x").build();
    let parsed = Message::parse(&ack);
    assert!(parsed.is_ok(), "ACK does not parse: {:?}\n{:?}", parsed.err(), String::from_utf8_lossy(&ack));
    let ack_msg = parsed.unwrap();
    assert_eq!(ack_msg.delimiters(), msg.delimiters());
    let ack_reply = Reply::read(&ack_msg);
    assert_eq!(ack_reply.acknowledgment_code(), Some("AE"));
    let original_id = msg.text("MSH-10").expect("valid path notation").unwrap_or_default();
    assert_eq!(ack_reply.acknowledged_control_id(), Some(original_id.as_str()));
    assert_eq!(ack_reply.msa.as_ref().and_then(|(_, _, text)| text.as_deref()), Some("x"));
}
