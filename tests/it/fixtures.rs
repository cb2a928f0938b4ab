//! Every fixture in `tests/fixtures` parses with exactly the facts listed in
//! `tests/fixtures/README.md`, and every invalid one fails with a typed error
//! at a byte position (or is accepted where the README says so).

use std::path::PathBuf;

use switchboard::hl7::{
    AckBuilder, AckCode, Batch, EscapeError, HeaderError, Message, MessageBuf, ParseError, Path, Reply, check_header,
    split_batch,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(msg: &Message<'_>, path: &str) -> Option<String> {
    msg.text(path).unwrap()
}

fn raw<'m>(msg: &'m Message<'_>, path: &str) -> Option<&'m [u8]> {
    msg.get(&path.parse::<Path>().unwrap())
}

fn repetitions(msg: &Message<'_>, segment: &str, field: usize) -> usize {
    msg.segment(segment, 1).unwrap().field(field).unwrap().repetitions().len()
}

fn ids<'m>(msg: &'m Message<'_>) -> Vec<&'m str> {
    msg.segments().map(|s| s.id()).collect()
}

#[test]
fn adt_a01() {
    let bytes = fixture("valid/adt_a01.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(ids(&msg), ["MSH", "EVN", "PID", "PV1", "AL1"]);
    assert_eq!(text(&msg, "MSH-9").as_deref(), Some("ADT^A01^ADT_A01"));
    assert_eq!(text(&msg, "MSH-9.1").as_deref(), Some("ADT"));
    assert_eq!(text(&msg, "MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(text(&msg, "MSH-10").as_deref(), Some("MSG00001"));
    assert_eq!(text(&msg, "MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(text(&msg, "MSH-15").as_deref(), Some("AL"));
    assert_eq!(text(&msg, "MSH-18").as_deref(), Some("UNICODE UTF-8"));
    assert_eq!(repetitions(&msg, "PID", 3), 2);
    assert_eq!(text(&msg, "PID-3[2].1").as_deref(), Some("987-65-4320"));
    assert_eq!(text(&msg, "PID-5.1").as_deref(), Some("DOE"));
    assert_eq!(text(&msg, "PID-5.2").as_deref(), Some("JOHN"));
    assert_eq!(text(&msg, "PID-7").as_deref(), Some("19800115"));
    assert_eq!(text(&msg, "PV1-3.1").as_deref(), Some("ICU"));
    assert_eq!(text(&msg, "PV1-44").as_deref(), Some("20261128094000"));
    assert_eq!(text(&msg, "MSH-1").as_deref(), Some("|"));
    assert_eq!(text(&msg, "MSH-2").as_deref(), Some("^~\\&"));
    assert_eq!(msg.raw(), &bytes[..]);
    assert_eq!(check_header(&msg), Ok(()));
}

#[test]
fn oru_r01_escapes() {
    let bytes = fixture("valid/oru_r01_escapes.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.segments().filter(|s| s.id() == "OBX").count(), 3);
    assert_eq!(text(&msg, "OBX-5").as_deref(), Some("212"));
    // `\.br\` is rendered as a line break; see the `escape` module docs.
    assert_eq!(
        text(&msg, "OBX[3]-5").as_deref(),
        Some("Fasting sample | hemolysed\nRepeat advised: ratio 1^2 & retest ~ call \\ lab")
    );
    let nte = text(&msg, "NTE-3").unwrap();
    assert_eq!(nte, "Reference range per lab policy 4.2 \r\n see portal");
    // Raw access keeps the escapes.
    assert!(raw(&msg, "NTE-3").unwrap().windows(5).any(|w| w == b"\\X0D\\"));
    assert_eq!(msg.check_escapes(), Ok(()));
}

#[test]
fn custom_delimiters() {
    let bytes = fixture("valid/custom_delimiters.hl7");
    let msg = Message::parse(&bytes).unwrap();
    let d = msg.delimiters();
    assert_eq!((d.field, d.component, d.repetition, d.escape, d.subcomponent), (b'#', b'*', b'~', b'\\', b'%'));
    assert_eq!(text(&msg, "MSH-9.1").as_deref(), Some("ADT"));
    assert_eq!(text(&msg, "MSH-9.2").as_deref(), Some("A08"));
    assert_eq!(text(&msg, "MSH-10").as_deref(), Some("CTRL-77"));
    assert_eq!(text(&msg, "PID-3.1").as_deref(), Some("778899"));
    assert_eq!(text(&msg, "PID-3.5").as_deref(), Some("MR"));
    assert_eq!(text(&msg, "PID-5.2").as_deref(), Some("MAX"));
}

#[test]
fn repetitions_and_subcomponents() {
    let bytes = fixture("valid/repetitions_subcomponents.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(repetitions(&msg, "PID", 3), 2);
    assert_eq!(text(&msg, "PID-3[1].4.1").as_deref(), Some("H1"));
    assert_eq!(text(&msg, "PID-3[1].4.2").as_deref(), Some("1.2.3.4"));
    assert_eq!(text(&msg, "PID-3[2].4.2").as_deref(), Some("5.6.7.8"));
    assert_eq!(repetitions(&msg, "PID", 5), 2);
    assert_eq!(text(&msg, "PID-5[2].2").as_deref(), Some("JOHNNY"));
    assert_eq!(ids(&msg).last(), Some(&"ZXT"));
    assert_eq!(repetitions(&msg, "ZXT", 3), 2);
    assert_eq!(text(&msg, "ZXT-4.2.2").as_deref(), Some("sub"));
    // Absent is not the same as empty.
    assert_eq!(text(&msg, "PID-3[3]"), None);
    assert_eq!(text(&msg, "PID-3.2").as_deref(), Some(""));
}

#[test]
fn lf_and_crlf_endings_are_accepted() {
    for (file, id) in [("valid/lf_terminated.hl7", "LF-1"), ("valid/crlf_terminated.hl7", "CRLF-1")] {
        let bytes = fixture(file);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(ids(&msg), ["MSH", "PID"], "{file}");
        assert_eq!(text(&msg, "MSH-10").as_deref(), Some(id), "{file}");
        assert_eq!(msg.raw(), &bytes[..]);
    }
}

#[test]
fn latin1_is_decoded_on_access_and_kept_raw() {
    let bytes = fixture("valid/latin1_8859.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(text(&msg, "MSH-18").as_deref(), Some("8859/1"));
    assert_eq!(text(&msg, "PID-5.1").as_deref(), Some("Müller"));
    assert_eq!(text(&msg, "PID-5.2").as_deref(), Some("Jürgen"));
    assert_eq!(raw(&msg, "PID-5.1"), Some(&b"M\xfcller"[..]));
    // Editing elsewhere leaves the Latin-1 bytes alone, and new text is
    // written in Latin-1.
    let mut buf = MessageBuf::new(bytes.clone()).unwrap();
    buf.set("PID-5.3", "Günther").unwrap();
    assert_eq!(buf.message().get(&"PID-5.1".parse().unwrap()), Some(&b"M\xfcller"[..]));
    assert_eq!(buf.message().get(&"PID-5.3".parse().unwrap()), Some(&b"G\xfcnther"[..]));
}

#[test]
fn acks_are_read() {
    let bytes = fixture("valid/minimal_ack_aa.hl7");
    let reply = Reply::read(&Message::parse(&bytes).unwrap());
    assert_eq!(reply.acknowledgment_code(), Some("AA"));
    assert_eq!(reply.acknowledged_control_id(), Some("MSG00001"));
    assert!(reply.is_positive());
    assert_eq!(reply.message_code, "ACK");

    let bytes = fixture("valid/ack_ae_with_err.hl7");
    let reply = Reply::read(&Message::parse(&bytes).unwrap());
    assert_eq!(reply.acknowledgment_code(), Some("AE"));
    assert_eq!(reply.acknowledged_control_id(), Some("MSG00002"));
    assert_eq!(reply.text(), Some("Date of birth in PID.7 must not be empty"));
    assert_eq!(reply.errors.len(), 1);
    assert_eq!(reply.errors[0].location.as_deref(), Some("PID^1^7"));
    assert_eq!(reply.errors[0].code.as_deref(), Some("101"));
    assert_eq!(reply.errors[0].severity.as_deref(), Some("E"));
}

#[test]
fn batch_is_split() {
    let bytes = fixture("valid/batch.hl7");
    // As a single message it is rejected: it does not start with MSH.
    assert!(matches!(Message::parse(&bytes), Err(ParseError::MissingMsh { position: 0, .. })));
    let batch: Batch<'_> = split_batch(&bytes).unwrap();
    assert!(batch.file_header.is_some());
    assert_eq!(batch.batch_headers.len(), 1);
    let ids: Vec<String> =
        batch.messages.iter().map(|m| text(&Message::parse(m).unwrap(), "MSH-10").unwrap()).collect();
    assert_eq!(ids, ["B1-1", "B1-2"]);
    assert_eq!(batch.declared_messages, Some(2));
    assert_eq!(batch.declared_batches, Some(1));
    assert!(!batch.counts_mismatch());
    // The messages are the file's own bytes.
    let second = Message::parse(batch.messages[1]).unwrap();
    assert_eq!(ids_of(&second), ["MSH", "PID"]);
}

fn ids_of(msg: &Message<'_>) -> Vec<String> {
    msg.segments().map(|s| s.id().to_owned()).collect()
}

#[test]
fn every_valid_fixture_round_trips_byte_for_byte() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let messages = split_batch(&bytes).unwrap().messages;
        for m in messages {
            let msg = Message::parse(m).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rebuilt: Vec<u8> = MessageBuf::new(msg.raw().to_vec()).unwrap().into_bytes();
            assert_eq!(rebuilt, m);
            // Concatenating every segment with its original terminators
            // gives back the input.
            let joined: usize = msg.segments().map(|s| s.raw().len()).sum();
            assert!(joined <= m.len());
        }
        seen += 1;
    }
    assert_eq!(seen, 10);
}

#[test]
fn invalid_fixtures_give_typed_errors_with_positions() {
    assert_eq!(Message::parse(&fixture("invalid/empty.hl7")).unwrap_err(), ParseError::Empty);
    match Message::parse(&fixture("invalid/no_msh.hl7")) {
        Err(ParseError::MissingMsh { position: 0, found }) => assert_eq!(found, "PID"),
        other => panic!("no_msh: {other:?}"),
    }
    match Message::parse(&fixture("invalid/truncated_msh.hl7")) {
        Err(e @ ParseError::TruncatedHeader { .. }) => assert_eq!(e.position(), 6),
        other => panic!("truncated_msh: {other:?}"),
    }
    match Message::parse(&fixture("invalid/binary_garbage.bin")) {
        Err(ParseError::MissingMsh { position: 0, found }) => assert_eq!(found, "\\x00\\x01\\x02"),
        other => panic!("binary_garbage: {other:?}"),
    }
    // Well-formed structure, but a receiver must reject it.
    let bytes = fixture("invalid/msh_missing_control_id.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(check_header(&msg), Err(HeaderError::MissingControlId));
    let nack = AckBuilder::new(&msg, AckCode::AR)
        .text(HeaderError::MissingControlId.to_string())
        .error(HeaderError::MissingControlId.ack_error())
        .build();
    let reply = Reply::read(&Message::parse(&nack).unwrap());
    assert_eq!(reply.acknowledgment_code(), Some("AR"));
    assert_eq!(reply.acknowledged_control_id(), Some(""));
    assert_eq!(reply.errors[0].location.as_deref(), Some("MSH^1^10"));

    // Lenient: the unterminated escape is kept as text; strict: its position.
    let bytes = fixture("invalid/bad_escape.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(text(&msg, "OBX-5").as_deref(), Some("unterminated \\X0D escape"));
    let expected = bytes.windows(4).position(|w| w == b"\\X0D").unwrap();
    assert_eq!(msg.check_escapes(), Err(EscapeError::Unterminated { position: expected }));
    assert_eq!(msg.text_strict(&"OBX-5".parse().unwrap()), Some(Err(EscapeError::Unterminated { position: expected })));

    // Parses; PID-7 is empty (for routing rules and ReplyCodeActions tests).
    let bytes = fixture("invalid/dob_missing.hl7");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(text(&msg, "PID-7").as_deref(), Some(""));
    assert_eq!(check_header(&msg), Ok(()));
}
