//! Compiles arbitrary text as a router condition (`when:` of a router
//! rule) and evaluates what compiles against fixed messages and against a
//! message taken from the input.
//!
//! Input layout: the condition text, then optionally a NUL byte and the
//! bytes of a message to evaluate it on.
//!
//! Checked beyond "no panic":
//! - an error points at a character of the text (or just past its end);
//! - the canonical form (`Display`) compiles back to the same condition
//!   and writes itself unchanged;
//! - `not (<condition>)` matches exactly the messages the condition does
//!   not, whenever the extra level of nesting is allowed;
//! - every HL7 path the text could hold parses back from its own notation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::hl7::{Message, Path};
use switchboard::rules::route::Condition;

/// Messages every compiled condition is evaluated on: escapes, repetitions,
/// subcomponents, a repeated segment, an empty field, custom delimiters.
const MESSAGES: [&[u8]; 3] = [
    b"MSH|^~\\&|REG|GOOD HOSPITAL|LAB|LAB|20261128094512||ADT^A01|MSG1|P|2.5.1\rPID|1||123^^^H^MR~456^^^X||DOE^JOHN||19700101|M\rOBX|1|ST|1^2||1\\S\\2 hemolysed\rOBX|2|ST|||\rNOT|x",
    b"MSH#$%*@#A#B#C#D#20260101##ORU$R01#M2#P#2.3\rPID#1##7$$$H##",
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1|PID-7 must not be empty\rERR|||101&x",
];

fuzz_target!(|data: &[u8]| {
    let (text, message) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };

    // Paths are read by the same notation inside conditions and transforms.
    if let Ok(path) = text.trim().parse::<Path>() {
        assert_eq!(path.to_string().parse::<Path>().as_ref(), Ok(&path), "{path}");
    }

    let condition = match text.parse::<Condition>() {
        Ok(condition) => condition,
        Err(e) => {
            assert!(e.position <= text.chars().count(), "error past the end: {e}");
            assert!(!e.reason.is_empty());
            return;
        }
    };
    let canonical = condition.to_string();
    let again = canonical.parse::<Condition>();
    assert_eq!(again.as_ref(), Ok(&condition), "canonical form {canonical:?} compiles to another condition");
    assert_eq!(again.map(|c| c.to_string()).as_deref(), Ok(canonical.as_str()), "canonical form is not stable");

    let negated = format!("not ({canonical})").parse::<Condition>().ok();
    let parsed_message = message.and_then(|m| Message::parse(m).ok());
    for msg in MESSAGES.iter().map(|m| Message::parse(m).expect("a fixed message parses")).chain(parsed_message) {
        let matches = condition.matches(&msg);
        if let Some(negated) = &negated {
            assert_eq!(negated.matches(&msg), !matches, "not ({canonical})");
        }
    }
});
