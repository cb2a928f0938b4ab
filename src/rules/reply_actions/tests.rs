use super::*;
use crate::hl7::Message;

/// A reply as a downstream system would send it.
fn reply(raw: &str) -> Reply {
    Reply::read(&Message::parse(raw.as_bytes()).unwrap())
}

const MSH_ACK: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ACK^A01^ACK|A1|P|2.5\r";
const MSH_ORU: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ORU^R01|A1|P|2.5\r";
const DOB: &str = "Date of birth in PID.7 must not be empty";

/// How a test case's outcome is built.
#[derive(Clone, Copy, Debug)]
enum Given {
    /// An ACK with MSA-1, MSA-2 and optional MSA-3 after `MSH_ACK`.
    Ack(&'static str, &'static str, Option<&'static str>),
    /// Raw reply bytes (segments separated by CR).
    Raw(&'static str),
    NoReply,
    /// A reply that cannot be read as HL7.
    Unreadable,
    Error(&'static str, &'static str),
}

fn raw_of(given: Given) -> Option<String> {
    match given {
        Given::Ack(code, id, text) => {
            let text = text.map(|t| format!("|{t}")).unwrap_or_default();
            Some(format!("{MSH_ACK}MSA|{code}|{id}{text}\r"))
        }
        Given::Raw(raw) => Some(raw.to_string()),
        _ => None,
    }
}

fn decide(setting: &str, given: Given) -> Decision {
    let actions: ReplyCodeActions = setting.parse().unwrap();
    let raw = raw_of(given);
    let parsed = raw.as_deref().map(reply);
    let outcome = match (given, &parsed) {
        (Given::NoReply, _) => DeliveryOutcome::NoReply,
        (Given::Unreadable, _) => DeliveryOutcome::Unreadable,
        (Given::Error(code, text), _) => DeliveryOutcome::Error { code, text },
        (_, Some(reply)) => DeliveryOutcome::Reply { reply, sent_control_id: "M1" },
        _ => unreachable!(),
    };
    actions.decide(&outcome)
}

use FinalAction::{Complete, Disable, Fail, Suspend};

struct Case {
    setting: &'static str,
    given: Given,
    retry: bool,
    then: FinalAction,
    matched: Option<&'static str>,
    warnings: &'static [&'static str],
}

const fn case(
    setting: &'static str,
    given: Given,
    retry: bool,
    then: FinalAction,
    matched: Option<&'static str>,
) -> Case {
    Case { setting, given, retry, then, matched, warnings: &[] }
}

const fn warned(mut c: Case, warnings: &'static [&'static str]) -> Case {
    c.warnings = warnings;
    c
}

fn check(cases: &[Case]) {
    for (i, c) in cases.iter().enumerate() {
        let got = decide(c.setting, c.given);
        let want = Decision {
            retry: c.retry,
            then: c.then,
            warnings: c.warnings.iter().map(|w| w.to_string()).collect(),
            matched: c.matched.map(str::to_string),
        };
        assert_eq!(got, want, "case {i}: {:?} with {:?}", c.setting, c.given);
    }
}

const D: &str = DEFAULT_REPLY_CODE_ACTIONS;
const ERR_101: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1\rERR||PID^1^7|101^Required field missing^HL70357|E\r";
const ERR_ONLY_TEXT: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1\rERR||PID^1^7|101^Date of birth in PID.7 must not be empty^HL70357|E\r";
const NO_MSA: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ACK^A01^ACK|A1|P|2.5\r";
const ORU_AA: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ORU^R01|A1|P|2.5\rMSA|AA|M1\r";
const ORU_AA_M9: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ORU^R01|A1|P|2.5\rMSA|AA|M9\r";
const ORU_NO_MSA: &str = "MSH|^~\\&|LAB|L|REG|H|20260101120000||ORU^R01|A1|P|2.5\rOBR|1\r";
const MISMATCH: &str = "reply matched :I?=W (MSA-2 differs from the control id sent)";
const UNREADABLE_WARNED: &str = "reply matched :~=W (the reply cannot be read as HL7)";

#[test]
fn default_setting() {
    check(&[
        case(D, Given::Ack("AA", "M1", None), false, Complete, Some(":?A=C")),
        case(D, Given::Ack("CA", "M1", None), false, Complete, Some(":?A=C")),
        case(D, Given::Ack("AE", "M1", Some("bad")), false, Suspend, Some(":?E=S")),
        case(D, Given::Ack("CE", "M1", None), false, Suspend, Some(":?E=S")),
        case(D, Given::Ack("AR", "M1", None), true, Fail, Some(":?R=RF")),
        case(D, Given::Ack("CR", "M1", None), true, Fail, Some(":?R=RF")),
        case(D, Given::Raw(NO_MSA), false, Suspend, Some(":~=S")),
        warned(case(D, Given::Ack("AA", "OTHER", None), false, Complete, Some(":?A=C")), &[MISMATCH]),
        warned(case(D, Given::Ack("AA", "", None), false, Complete, Some(":?A=C")), &[MISMATCH]),
        warned(case(D, Given::Ack("AE", "OTHER", None), false, Suspend, Some(":?E=S")), &[MISMATCH]),
        // `:?A=C` comes before `:T?=C`: an AA in a non-ACK reply completes there.
        case(D, Given::Raw(ORU_AA), false, Complete, Some(":?A=C")),
        // Without MSA, `:~=S` comes before `:T?=C`.
        case(D, Given::Raw(ORU_NO_MSA), false, Suspend, Some(":~=S")),
        case(D, Given::Ack("ZZ", "M1", None), false, Suspend, Some(":*=S")),
        case(D, Given::Ack("", "M1", None), false, Suspend, Some(":*=S")),
        // No `X` and no `E` in the default: nothing matches, the message fails.
        case(D, Given::NoReply, false, Fail, None),
        case(D, Given::Error("BadReply", "reply is not HL7"), false, Fail, None),
        // An unreadable reply is handled like one without MSA.
        case(D, Given::Unreadable, false, Suspend, Some(":~=S")),
        // An empty setting is the default.
        case("", Given::Ack("AR", "M1", None), true, Fail, Some(":?R=RF")),
        case("  \t", Given::Ack("AA", "M1", None), false, Complete, Some(":?A=C")),
    ]);
}

#[test]
fn error_text_before_the_default() {
    const S: &str = "E*Date of birth in PID.7 must not be empty=C,:?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C";
    const E: Option<&str> = Some("E*Date of birth in PID.7 must not be empty=C");
    check(&[
        case(S, Given::Ack("AE", "M1", Some(DOB)), false, Complete, E),
        case(S, Given::Ack("CE", "M1", Some("Error: Date of birth in PID.7 must not be empty.")), false, Complete, E),
        case(S, Given::Ack("AE", "M1", Some("Unknown patient")), false, Suspend, Some(":?E=S")),
        case(S, Given::Ack("AE", "M1", None), false, Suspend, Some(":?E=S")),
        // The text of the first ERR segment when MSA-3 is empty.
        case(S, Given::Raw(ERR_ONLY_TEXT), false, Complete, E),
        // An AA is not an error status, whatever its text.
        case(S, Given::Ack("AA", "M1", Some(DOB)), false, Complete, Some(":?A=C")),
        // Case-sensitive.
        case(
            S,
            Given::Ack("AE", "M1", Some("date of birth in pid.7 must not be empty")),
            false,
            Suspend,
            Some(":?E=S"),
        ),
        // A delivery error's text.
        case(S, Given::Error("Validation", DOB), false, Complete, E),
    ]);
}

#[test]
fn every_condition() {
    check(&[
        // :?A, :?E, :?R
        case(":?A=S", Given::Ack("AA", "M1", None), false, Suspend, Some(":?A=S")),
        case(":?A=S", Given::Ack("CA", "M1", None), false, Suspend, Some(":?A=S")),
        case(":?A=S", Given::Ack("AE", "M1", None), false, Fail, None),
        case(":?E=D", Given::Ack("AE", "M1", None), false, Disable, Some(":?E=D")),
        case(":?E=D", Given::Ack("CE", "M1", None), false, Disable, Some(":?E=D")),
        case(":?E=D", Given::Ack("AR", "M1", None), false, Fail, None),
        case(":?R=C", Given::Ack("AR", "M1", None), false, Complete, Some(":?R=C")),
        case(":?R=C", Given::Ack("CR", "M1", None), false, Complete, Some(":?R=C")),
        case(":?R=C", Given::Ack("AA", "M1", None), false, Fail, None),
        // :_
        case(":_=F,:*=S", Given::Ack("", "M1", None), false, Fail, Some(":_=F")),
        case(":_=C", Given::Ack("AA", "M1", None), false, Fail, None),
        case(":_=C", Given::Raw(NO_MSA), false, Fail, None),
        // Literal codes.
        case(":AE=D,:?E=S", Given::Ack("AE", "M1", None), false, Disable, Some(":AE=D")),
        case(":AE=D,:?E=S", Given::Ack("CE", "M1", None), false, Suspend, Some(":?E=S")),
        case(":CE=C,:?E=S", Given::Ack("CE", "M1", None), false, Complete, Some(":CE=C")),
        case(":CE=C,:?E=S", Given::Ack("AE", "M1", None), false, Suspend, Some(":?E=S")),
        case(":ZZ=C", Given::Ack("ZZ", "M1", None), false, Complete, Some(":ZZ=C")),
        case(":AA=C", Given::Ack("aa", "M1", None), false, Fail, None),
        // :* does not swallow codes that another entry matches, wherever it is.
        case(":*=S,:?A=C", Given::Ack("AA", "M1", None), false, Complete, Some(":?A=C")),
        case(":*=S,:?A=C", Given::Ack("CA", "M1", None), false, Complete, Some(":?A=C")),
        case(":*=S,:?A=C", Given::Ack("AE", "M1", None), false, Suspend, Some(":*=S")),
        case(":*=S,:AE=C", Given::Ack("AE", "M1", None), false, Complete, Some(":AE=C")),
        case(":*=S,:_=C", Given::Ack("", "M1", None), false, Complete, Some(":_=C")),
        case(":*=S", Given::Ack("", "M1", None), false, Suspend, Some(":*=S")),
        case(":*=S", Given::Raw(NO_MSA), false, Fail, None),
        case(":*=S", Given::NoReply, false, Fail, None),
        // ... but a W-only entry does not count as matching the code.
        warned(
            case(":AE=W,:*=S", Given::Ack("AE", "M1", None), false, Suspend, Some(":*=S")),
            &["reply matched :AE=W (MSA-1 is AE)"],
        ),
        // :~
        case(":~=D", Given::Raw(NO_MSA), false, Disable, Some(":~=D")),
        case(":~=D", Given::Ack("AA", "M1", None), false, Fail, None),
        case(":~=D", Given::NoReply, false, Fail, None),
        case(":~=D", Given::Unreadable, false, Disable, Some(":~=D")),
        case("E=S,:?A=C", Given::Unreadable, false, Fail, None),
        warned(case(":~=W,:*=S", Given::Unreadable, false, Complete, Some(":~=W")), &[UNREADABLE_WARNED]),
        case(":~=D", Given::Error("X", "y"), false, Fail, None),
        // A reply without MSA and without :~: nothing matches.
        case(":?A=C,:?E=S,:*=S", Given::Raw(NO_MSA), false, Fail, None),
        // :I? (needs an MSA segment)
        case(":I?=S,:?A=C", Given::Ack("AA", "M2", None), false, Suspend, Some(":I?=S")),
        case(":I?=S,:?A=C", Given::Ack("AA", "M1", None), false, Complete, Some(":?A=C")),
        case(":I?=S", Given::Raw(NO_MSA), false, Fail, None),
        case(":I?=W,:~=S", Given::Raw(NO_MSA), false, Suspend, Some(":~=S")),
        // :T?
        case(":T?=S,:?A=C", Given::Raw(ORU_AA), false, Suspend, Some(":T?=S")),
        case(":T?=S,:?A=C", Given::Ack("AA", "M1", None), false, Complete, Some(":?A=C")),
        case(":T?=D", Given::Raw(ORU_NO_MSA), false, Disable, Some(":T?=D")),
        case(":T?=D", Given::NoReply, false, Fail, None),
        // E
        case("E=D", Given::Ack("AE", "M1", None), false, Disable, Some("E=D")),
        case("E=D", Given::Ack("AR", "M1", None), false, Disable, Some("E=D")),
        case("E=D", Given::Ack("CE", "M1", None), false, Disable, Some("E=D")),
        case("E=D", Given::Ack("CR", "M1", None), false, Disable, Some("E=D")),
        case("E=D", Given::Ack("AA", "M1", None), false, Fail, None),
        case("E=D", Given::Ack("ZZ", "M1", None), false, Fail, None),
        case("E=D", Given::Raw(NO_MSA), false, Fail, None),
        case("E=D", Given::Error("BadReply", "unreadable"), false, Disable, Some("E=D")),
        case("E=D", Given::NoReply, false, Fail, None),
        // E#: the first ERR code, else MSA-1.
        case("E#101=S,:?E=C", Given::Raw(ERR_101), false, Suspend, Some("E#101=S")),
        case("E#102=S,:?E=C", Given::Raw(ERR_101), false, Complete, Some(":?E=C")),
        case("E#AE=S,:?E=C", Given::Raw(ERR_101), false, Complete, Some(":?E=C")),
        case("E#AE=S,:?E=C", Given::Ack("AE", "M1", None), false, Suspend, Some("E#AE=S")),
        case("E#AR=RD", Given::Ack("AR", "M1", None), true, Disable, Some("E#AR=RD")),
        case("E#BadReply=D", Given::Error("BadReply", "unreadable"), false, Disable, Some("E#BadReply=D")),
        case("E#BadReply=D", Given::Error("Timeout", "unreadable"), false, Fail, None),
        case("E# 101 =S", Given::Raw(ERR_101), false, Suspend, Some("E#101=S")),
        // E*
        case("E*must not=S", Given::Ack("AE", "M1", Some(DOB)), false, Suspend, Some("E*must not=S")),
        case("E*must not=S", Given::Error("X", "field must not be empty"), false, Suspend, Some("E*must not=S")),
        case("E*must not=S", Given::NoReply, false, Fail, None),
        case("E*PID.7=empty=C", Given::Ack("AE", "M1", Some("PID.7=empty")), false, Complete, Some("E*PID.7=empty=C")),
        // X
        case("X=R", Given::NoReply, true, Fail, Some("X=R")),
        case("X=RS", Given::NoReply, true, Suspend, Some("X=RS")),
        case("X=R", Given::Ack("AA", "M1", None), false, Fail, None),
        case("X=R", Given::Error("Timeout", "timed out"), false, Fail, None),
        case("X=RF,:?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C", Given::NoReply, true, Fail, Some("X=RF")),
    ]);
}

#[test]
fn every_action() {
    let aa = Given::Ack("AA", "M1", None);
    check(&[
        case(":?A=C", aa, false, Complete, Some(":?A=C")),
        case(":?A=S", aa, false, Suspend, Some(":?A=S")),
        case(":?A=D", aa, false, Disable, Some(":?A=D")),
        case(":?A=F", aa, false, Fail, Some(":?A=F")),
        case(":?A=R", aa, true, Fail, Some(":?A=R")),
        case(":?A=RF", aa, true, Fail, Some(":?A=RF")),
        case(":?A=FR", aa, true, Fail, Some(":?A=RF")),
        case(":?A=RS", aa, true, Suspend, Some(":?A=RS")),
        case(":?A=RD", aa, true, Disable, Some(":?A=RD")),
        case(":?A=RC", aa, true, Complete, Some(":?A=RC")),
        // Precedence D > S > F > C.
        case(":?A=CS", aa, false, Suspend, Some(":?A=SC")),
        case(":?A=CF", aa, false, Fail, Some(":?A=FC")),
        case(":?A=SF", aa, false, Suspend, Some(":?A=SF")),
        case(":?A=FD", aa, false, Disable, Some(":?A=DF")),
        case(":?A=CSDF", aa, false, Disable, Some(":?A=DSFC")),
        case(":?A=RCF", aa, true, Fail, Some(":?A=RFC")),
        case(":?A=RRCC", aa, true, Complete, Some(":?A=RC")),
        // W beside other letters: a warning, and the other letters decide.
        warned(case(":?A=SW", aa, false, Suspend, Some(":?A=SW")), &["reply matched :?A=SW (MSA-1 is AA)"]),
        warned(case(":?A=WS", aa, false, Suspend, Some(":?A=SW")), &["reply matched :?A=SW (MSA-1 is AA)"]),
        warned(case(":?A=RW", aa, true, Fail, Some(":?A=RW")), &["reply matched :?A=RW (MSA-1 is AA)"]),
        // W alone: a warning, and completed when nothing else applies.
        warned(case(":?A=W", aa, false, Complete, Some(":?A=W")), &["reply matched :?A=W (MSA-1 is AA)"]),
        warned(case(":?A=WW", aa, false, Complete, Some(":?A=W")), &["reply matched :?A=W (MSA-1 is AA)"]),
        warned(
            case("X=W", Given::NoReply, false, Complete, Some("X=W")),
            &["delivery matched X=W (no reply was received)"],
        ),
        // W-only entries all warn, wherever they are, even after the deciding entry.
        warned(
            case(":?A=C,:I?=W,:T?=W", Given::Raw(ORU_AA_M9), false, Complete, Some(":?A=C")),
            &["reply matched :I?=W (MSA-2 differs from the control id sent)", "reply matched :T?=W (MSH-9 is not ACK)"],
        ),
        // A W-only entry that does not match leaves the "nothing matched" rule.
        case(":?E=W", aa, false, Fail, None),
    ]);
}

#[test]
fn warnings_of_every_kind() {
    let got = decide(":?E=W,E#101=W,E*Required=W,E=W,:_=W,:~=W", Given::Raw(ERR_101));
    assert_eq!(
        got.warnings,
        [
            "reply matched :?E=W (MSA-1 is AE)",
            "reply matched E#101=W (the error status code matches)",
            "reply matched E*Required=W (the error text contains the entry's text)",
            "reply matched E=W (the delivery ended in an error status)",
        ]
    );
    assert_eq!(got.then, Complete);
    let got = decide(":_=W,:~=W", Given::Ack("", "M1", None));
    assert_eq!(got.warnings, ["reply matched :_=W (MSA-1 is empty)"]);
    let got = decide(":~=W", Given::Raw(NO_MSA));
    assert_eq!(got.warnings, ["reply matched :~=W (the reply has no MSA segment)"]);
    let got = decide(":*=W", Given::Ack("Z\u{7}Z-long-code-here", "M1", None));
    assert_eq!(got.warnings, ["reply matched :*=W (MSA-1 is Z\\u{7}Z-long…)"]);
}

#[test]
fn message_type_check_uses_msh_9_1() {
    let r = reply(&format!("{MSH_ORU}MSA|AA|M1\r"));
    assert_eq!(r.message_code, "ORU");
    let actions: ReplyCodeActions = ":T?=S".parse().unwrap();
    let d = actions.decide(&DeliveryOutcome::Reply { reply: &r, sent_control_id: "M1" });
    assert_eq!(d.then, Suspend);
}

#[test]
fn default_is_the_default_string() {
    let parsed: ReplyCodeActions = DEFAULT_REPLY_CODE_ACTIONS.parse().unwrap();
    assert_eq!(parsed, ReplyCodeActions::default());
    assert_eq!(ReplyCodeActions::default().to_string(), DEFAULT_REPLY_CODE_ACTIONS);
    assert_eq!("".parse::<ReplyCodeActions>().unwrap(), parsed);
    assert_eq!(" \n ".parse::<ReplyCodeActions>().unwrap(), parsed);
    assert_eq!(parsed.entries().len(), 7);
    assert_eq!(parsed.entries()[0].condition(), &Condition::Reject);
    assert!(parsed.entries()[0].actions().retries());
    assert!(parsed.entries()[5].actions().is_warning_only());
}

#[test]
fn display_round_trip() {
    for (input, canonical) in [
        (DEFAULT_REPLY_CODE_ACTIONS, DEFAULT_REPLY_CODE_ACTIONS),
        (" :?A = C , :?E=S ,", ":?A=C,:?E=S"),
        (":?A=C,,:?E=S", ":?A=C,:?E=S"),
        (":?A=WS,:?E=FR,X=SR", ":?A=SW,:?E=RF,X=RS"),
        (":?A=C,:?A=S", ":?A=C,:?A=S"),
        ("E*Date of birth in PID.7 must not be empty = C", "E*Date of birth in PID.7 must not be empty=C"),
        ("E*a=b=C", "E*a=b=C"),
        ("E* leading space=C", "E* leading space=C"),
        ("E#101=S,E#<Ens>ErrGeneral=D,E=F,X=R", "E#101=S,E#<Ens>ErrGeneral=D,E=F,X=R"),
        (":_=F,:AE=D,:CE=C,:*=S,:~=S,:I?=W,:T?=C", ":_=F,:AE=D,:CE=C,:*=S,:~=S,:I?=W,:T?=C"),
        ("E*Größe=C", "E*Größe=C"),
    ] {
        let parsed: ReplyCodeActions = input.parse().unwrap();
        let text = parsed.to_string();
        assert_eq!(text, canonical, "{input:?}");
        assert_eq!(text.parse::<ReplyCodeActions>().unwrap(), parsed, "{input:?}");
    }
    let parsed: ReplyCodeActions = "E*a=b=C".parse().unwrap();
    assert_eq!(parsed.entries()[0].condition(), &Condition::ErrorText("a=b".into()));
    let parsed: ReplyCodeActions = "E* leading space=C".parse().unwrap();
    assert_eq!(parsed.entries()[0].condition(), &Condition::ErrorText(" leading space".into()));
}

#[test]
fn parse_errors() {
    for (input, position, reason, hint) in [
        (":?A", 1, "missing '=' in entry ':?A'", "an entry is <condition>=<actions>, e.g. :?A=C"),
        (":?A=C,  :?E S", 9, "missing '=' in entry ':?E S'", "an entry is"),
        ("E*Invalid value, expected=C", 1, "missing '='", "an E* text cannot contain one"),
        ("=C", 1, "empty condition before '='", CONDITIONS_HINT),
        (":?A=C, =S", 8, "empty condition before '='", CONDITIONS_HINT),
        (":?Q=C", 1, "unknown condition ':?Q'", CONDITIONS_HINT),
        (":?A=C,:X=S", 7, "unknown condition ':X'", CONDITIONS_HINT),
        (":ABC=S", 1, "unknown condition ':ABC'", CONDITIONS_HINT),
        (":?a=S", 1, "unknown condition ':?a'", CONDITIONS_HINT),
        (":ae=S", 1, "unknown condition ':ae'", "MSA-1 codes are case-sensitive, e.g. :AE"),
        ("e=S", 1, "unknown condition 'e'", CONDITIONS_HINT),
        ("Y=S", 1, "unknown condition 'Y'", CONDITIONS_HINT),
        ("E#=S", 1, "E# without a code", "e.g. E#101"),
        ("X=C,E*=S", 5, "E* without a text", "e.g. E*must not be empty"),
        ("X=C,:?A=Q", 9, "unknown action 'Q'", ACTIONS_HINT),
        (":?A=RQ", 6, "unknown action 'Q'", ACTIONS_HINT),
        (":?A= R F", 7, "unknown action ' '", ACTIONS_HINT),
        (":?A=c", 5, "unknown action 'c'", "actions are C, W, R, S, D, F (capital letters)"),
        (":?A=C=S", 6, "unknown action '='", ACTIONS_HINT),
        ("E*x=y", 5, "unknown action 'y'", ACTIONS_HINT),
        (":?A=", 4, "no action after '='", ACTIONS_HINT),
        (":?A=C,:?E=  ", 10, "no action after '='", ACTIONS_HINT),
        ("E*Größe=C,:?Q=S", 11, "unknown condition ':?Q'", CONDITIONS_HINT),
        ("E*Größe=Ç", 9, "unknown action 'Ç'", ACTIONS_HINT),
        (",, ,", 1, "no entries", "leave the setting empty for the default"),
    ] {
        let err = input.parse::<ReplyCodeActions>().unwrap_err();
        assert_eq!(err.position, position, "{input:?}: {err}");
        assert!(err.reason.starts_with(reason), "{input:?}: {err}");
        assert!(err.hint.contains(hint), "{input:?}: {err}");
    }
    let err = ":?A=C,:~=Q".parse::<ReplyCodeActions>().unwrap_err();
    assert_eq!(err.to_string(), "unknown action 'Q' at character 10: actions are C, W, R, S, D, F");
    let err = "   :?A=Q".parse::<ReplyCodeActions>().unwrap_err();
    assert_eq!(err.to_string(), "unknown action 'Q' at character 8: actions are C, W, R, S, D, F");
}

#[test]
fn serde_as_text() {
    let parsed: ReplyCodeActions = serde_json::from_str("\" :?A = C \"").unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), "\":?A=C\"");
    let default: ReplyCodeActions = serde_json::from_str("\"\"").unwrap();
    assert_eq!(default, ReplyCodeActions::default());
    let err = serde_json::from_str::<ReplyCodeActions>("\":?A=Q\"").unwrap_err();
    assert!(err.to_string().contains("unknown action 'Q' at character 5"), "{err}");
}

#[test]
fn final_action_words() {
    let words: Vec<_> = [Complete, Suspend, Disable, Fail].iter().map(ToString::to_string).collect();
    assert_eq!(words, ["complete", "suspend", "disable", "fail"]);
}
