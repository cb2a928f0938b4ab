//! Edits arbitrary parsable messages by path and checks that every accepted
//! edit leaves a message that parses and holds exactly what was written.
//!
//! Input layout: 7 header bytes choose the operation and the path (segment
//! from a fixed list, occurrence, field, repetition, component,
//! subcomponent) and the length of the value that follows; the remaining
//! bytes are the message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::hl7::{EditError, Message, MessageBuf, Path};

const SEGMENTS: [&str; 4] = ["MSH", "PID", "OBX", "ZZZ"];

fuzz_target!(|data: &[u8]| {
    let Some((&[op, seg, field, rep, comp, sub, len], rest)) = data.split_first_chunk::<7>() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (value, message) = rest.split_at(len);

    // Paths as the text notation can write them: numbers start at 1 and a
    // subcomponent needs a component.
    let mut path = Path::field(SEGMENTS[usize::from(seg % 4)], usize::from(field % 24) + 1)
        .occurrence(usize::from((seg >> 2) % 3) + 1);
    if rep % 5 != 0 {
        path = path.repetition(usize::from(rep % 5));
    }
    if comp % 6 != 0 {
        path = path.component(usize::from(comp % 6));
        if sub % 4 != 0 {
            path = path.subcomponent(usize::from(sub % 4));
        }
    }
    assert_eq!(path.to_string().parse::<Path>().as_ref(), Ok(&path));

    let Ok(mut buf) = MessageBuf::new(message.to_vec()) else {
        return;
    };
    let before = buf.as_bytes().to_vec();
    let old = Message::parse(&before).expect("MessageBuf::new accepted it");
    let delimiter_field = path.segment_id() == "MSH" && path.field <= 2;

    let result = match op % 4 {
        // Text values (the common case gets half of the inputs).
        0 | 1 => {
            let text = String::from_utf8_lossy(value);
            let result = buf.set_path(&path, &text);
            if result.is_ok() {
                let new = check_edited(&old, &buf, &path);
                let stored = new.get(&path).expect("an edited value exists");
                if new.charset() == old.charset() {
                    assert_eq!(
                        new.decode(stored),
                        text,
                        "{path}: value does not read back (stored as {:?})",
                        String::from_utf8_lossy(stored)
                    );
                }
            }
            result
        }
        // Raw (already escaped) values.
        2 => {
            let result = buf.set_raw(&path, value);
            if result.is_ok() {
                let new = check_edited(&old, &buf, &path);
                assert_eq!(new.get(&path), Some(value), "{path}: raw value does not read back");
            }
            result
        }
        _ => {
            let existed = old.get(&path).is_some();
            let result = buf.clear(&path);
            if result.is_ok() {
                if existed {
                    let new = check_edited(&old, &buf, &path);
                    assert_eq!(new.get(&path), Some(&b""[..]), "{path}: not cleared");
                } else {
                    assert_eq!(buf.as_bytes(), before, "{path}: clearing an absent value changed the message");
                }
            }
            result
        }
    };

    match result {
        // Clearing an absent MSH-1/MSH-2 is a no-op; anything else is refused.
        Ok(()) if delimiter_field => {
            assert_eq!(buf.as_bytes(), before, "{path} was edited although it holds the delimiters")
        }
        Ok(()) => {}
        Err(e) => {
            assert!(!matches!(e, EditError::Parse(_)), "{path}: edit produced bytes that do not parse: {e}");
            assert_eq!(buf.as_bytes(), before, "{path}: a refused edit changed the message ({e})");
        }
    }
});

/// Checks what holds after any accepted edit and returns the new message.
fn check_edited<'b>(old: &Message<'_>, buf: &'b MessageBuf, path: &Path) -> Message<'b> {
    let new = Message::parse(buf.as_bytes());
    assert!(new.is_ok(), "{path}: edited message does not parse: {:?}", new.err());
    let new = new.unwrap();
    assert_eq!(new.delimiters(), old.delimiters(), "{path}: edit changed the delimiters");
    // Edits never add, remove or rename segments, and touch only the
    // segment they target.
    assert_eq!(new.segment_count(), old.segment_count(), "{path}: edit changed the segment count");
    let mut changed = 0;
    for (a, b) in old.segments().zip(new.segments()) {
        assert_eq!(a.id(), b.id(), "{path}: edit changed a segment id");
        if a.raw() != b.raw() {
            changed += 1;
            assert_eq!(a.id(), path.segment_id(), "{path}: edit changed another segment");
        }
    }
    assert!(changed <= 1, "{path}: edit changed {changed} segments");
    new
}
