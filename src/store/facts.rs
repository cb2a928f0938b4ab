//! What the store records about a message's content, beside its bytes, so
//! that it can be found without reading bodies: MSH-9 and MSH-10 (which
//! operations also need, to match replies) and the patient, PID-3's first
//! identifier and PID-5's family name.
//!
//! They are read where a message is already parsed: a service's intake
//! (`engine::intake`) fills [`NewInbound`](super::NewInbound) with them, and
//! routed copies inherit them from the header they come from. The store
//! itself parses a body only when it must: an edited body sent again with
//! [`Store::resend_copy`](super::Store::resend_copy), and a received
//! message replayed from an inbound log written before these fields were
//! logged.

use crate::hl7::{Message, Path};

/// The longest patient id or name kept, in bytes. A peer may put anything
/// in PID-3 and PID-5, and every header and an index carry the values;
/// longer ones are cut (at a character boundary), and so is a search for
/// them, so an exact search still finds them.
pub const MAX_PATIENT_BYTES: usize = 64;

/// The facts of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageFacts {
    /// MSH-10.
    pub(crate) control_id: Option<String>,
    /// MSH-9 as `ADT^A01` (or `ADT` alone without a trigger event).
    pub(crate) message_type: Option<String>,
    /// PID-3, first repetition, component 1: the patient's first identifier.
    pub(crate) patient_id: Option<String>,
    /// PID-5, first repetition, component 1 (subcomponent 1): the family name.
    pub(crate) patient_name: Option<String>,
}

impl MessageFacts {
    /// Reads the facts of a parsed message. Values are decoded (escapes,
    /// character set); empty ones count as absent.
    pub(crate) fn of(msg: &Message<'_>) -> Self {
        let text = |path: Path| msg.get(&path).filter(|v| !v.is_empty()).map(|v| msg.decode(v).into_owned());
        let code = text(Path::field("MSH", 9).component(1));
        let event = text(Path::field("MSH", 9).component(2));
        let message_type = match (code, event) {
            (Some(c), Some(e)) => Some(format!("{c}^{e}")),
            (c, _) => c,
        };
        let patient = |path: Path| text(path).map(|v| cut(&v).to_owned()).filter(|v| !v.is_empty());
        Self {
            control_id: msg.control_id().map(|v| msg.decode(v).into_owned()),
            message_type,
            patient_id: patient(Path::field("PID", 3).repetition(1).component(1)),
            patient_name: patient(Path::field("PID", 5).repetition(1).component(1).subcomponent(1)),
        }
    }

    /// The patient facts of raw bytes, or none when they do not parse.
    pub(crate) fn patient_of(body: &[u8]) -> (Option<String>, Option<String>) {
        match Message::parse(body) {
            Ok(msg) => {
                let facts = Self::of(&msg);
                (facts.patient_id, facts.patient_name)
            }
            Err(_) => (None, None),
        }
    }
}

/// `value` cut to at most [`MAX_PATIENT_BYTES`], at a character boundary.
pub(crate) fn cut(value: &str) -> &str {
    if value.len() <= MAX_PATIENT_BYTES {
        return value;
    }
    let mut end = MAX_PATIENT_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(raw: &str) -> MessageFacts {
        MessageFacts::of(&Message::parse(raw.as_bytes()).unwrap())
    }

    #[test]
    fn the_first_identifier_and_the_family_name_are_taken() {
        let f = facts(
            "MSH|^~\\&|A|B|C|D|20261128||ADT^A01^ADT_A01|M1|P|2.5\r\
             PID|1||12345^^^HOSP^MR~999^^^SSA||O'BRIEN&VAN^JOHN~SMITH^J",
        );
        assert_eq!(f.control_id.as_deref(), Some("M1"));
        assert_eq!(f.message_type.as_deref(), Some("ADT^A01"));
        assert_eq!(f.patient_id.as_deref(), Some("12345"));
        assert_eq!(f.patient_name.as_deref(), Some("O'BRIEN"));
    }

    #[test]
    fn escapes_are_decoded_and_missing_or_empty_values_are_none() {
        let f = facts("MSH|^~\\&|A|B|C|D|20261128||ORU|M2|P|2.5\rPID|1||^^^HOSP||D\\T\\J^X");
        assert_eq!(f.message_type.as_deref(), Some("ORU"));
        assert_eq!((f.patient_id, f.patient_name.as_deref()), (None, Some("D&J")));
        let f = facts("MSH|^~\\&|A|B|C|D|20261128||ACK^A01|M3|P|2.5\rMSA|AA|M1");
        assert_eq!((f.patient_id, f.patient_name), (None, None));
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(40);
        let f = facts(&format!("MSH|^~\\&|A|B|C|D|20261128||ADT^A01|M4|P|2.5\rPID|1||{long}"));
        let id = f.patient_id.unwrap();
        assert!(id.len() <= MAX_PATIENT_BYTES && long.starts_with(&id), "{id}");
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn bytes_that_do_not_parse_have_no_patient() {
        assert_eq!(MessageFacts::patient_of(b"not hl7"), (None, None));
        assert_eq!(
            MessageFacts::patient_of(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|M|P|2.5\rPID|1||7||DOE"),
            (Some("7".into()), Some("DOE".into()))
        );
    }
}
