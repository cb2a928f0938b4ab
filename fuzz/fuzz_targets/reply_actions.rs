//! Parses arbitrary text as a ReplyCodeActions setting and evaluates what
//! parses against every kind of delivery outcome, including a reply taken
//! from the input.
//!
//! Input layout: the setting, then optionally a NUL byte and the bytes of
//! a reply message.
//!
//! Checked beyond "no panic":
//! - an error's 1-based character position lies within the setting (or
//!   just past its end) and the error says what would be valid;
//! - a blank setting is the default;
//! - the canonical form (`Display`) parses back to the same setting and
//!   writes itself unchanged;
//! - a decision names an entry of the setting, or none only when it fails
//!   the message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::hl7::{Message, Reply};
use switchboard::rules::reply_actions::{DeliveryOutcome, FinalAction, ReplyCodeActions};

/// Replies every parsed setting is evaluated on: accept, error with an ERR
/// code, reject, a mismatched control id, no MSA, not an ACK.
const REPLIES: [&[u8]; 5] = [
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|AA|M1",
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1|PID-7 must not be empty\rERR|||101^x",
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|CR|M9",
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5",
    b"MSH|^~\\&|LAB|L|REG|H|20260101||ORU^R01|A1|P|2.5\rMSA|ZZ|M1",
];

fuzz_target!(|data: &[u8]| {
    let (text, reply) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let Ok(setting) = std::str::from_utf8(text) else {
        return;
    };
    let actions = match setting.parse::<ReplyCodeActions>() {
        Ok(actions) => actions,
        Err(e) => {
            let chars = setting.chars().count();
            assert!(e.position >= 1 && e.position <= chars + 1, "position {} in {chars} characters: {e}", e.position);
            assert!(!e.reason.is_empty() && !e.hint.is_empty(), "{e}");
            return;
        }
    };
    assert!(!actions.entries().is_empty());
    if setting.trim().is_empty() {
        assert_eq!(actions, ReplyCodeActions::default());
    }
    let canonical = actions.to_string();
    let again = canonical.parse::<ReplyCodeActions>();
    assert_eq!(again.as_ref(), Ok(&actions), "canonical form {canonical:?} parses to another setting");
    assert_eq!(again.map(|a| a.to_string()).as_deref(), Ok(canonical.as_str()), "canonical form is not stable");

    let entries: Vec<String> = actions.entries().iter().map(ToString::to_string).collect();
    let check = |outcome: DeliveryOutcome<'_>| {
        let decision = actions.decide(&outcome);
        match &decision.matched {
            Some(entry) => assert!(entries.contains(entry), "{entry} is not an entry of {canonical}"),
            None => assert_eq!((decision.then, decision.retry), (FinalAction::Fail, false), "{outcome:?}"),
        }
    };
    check(DeliveryOutcome::NoReply);
    check(DeliveryOutcome::Unreadable);
    check(DeliveryOutcome::Error { code: "101", text: "PID-7 must not be empty" });
    let from_input = reply.and_then(|r| Message::parse(r).ok());
    for msg in REPLIES.iter().map(|r| Message::parse(r).expect("a fixed reply parses")).chain(from_input) {
        let reply = Reply::read(&msg);
        check(DeliveryOutcome::Reply { reply: &reply, sent_control_id: "M1" });
    }
});
