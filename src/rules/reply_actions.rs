//! ReplyCodeActions: what an outbound operation does with the reply to a
//! message it has sent.
//!
//! The setting uses the grammar of InterSystems Ensemble / Health Connect
//! (`EnsLib.HL7.Operation.ReplyStandard`, property `ReplyCodeActions`), so
//! that integration engineers can paste the value from an existing
//! production and get the same behaviour.
//!
//! # Grammar
//!
//! A comma-separated list of `<condition>=<actions>` entries, for example the
//! default [`DEFAULT_REPLY_CODE_ACTIONS`]:
//! `:?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C`.
//!
//! Conditions on the reply (colon prefix):
//!
//! | condition | matches when |
//! |---|---|
//! | `:?A` | MSA-1 is `AA` or `CA` |
//! | `:?E` | MSA-1 is `AE` or `CE` |
//! | `:?R` | MSA-1 is `AR` or `CR` |
//! | `:_` | MSA-1 is empty |
//! | `:XX` | MSA-1 is exactly `XX` (two capital letters, e.g. `:AE`) |
//! | `:*` | the reply has an MSA segment whose MSA-1 no other entry's MSA-1 condition matches |
//! | `:~` | the reply has no MSA segment |
//! | `:I?` | the reply has an MSA segment and MSA-2 differs from the MSH-10 sent |
//! | `:T?` | the reply's MSH-9.1 is not `ACK` |
//!
//! Conditions on the delivery (no colon):
//!
//! | condition | matches when |
//! |---|---|
//! | `E` | the delivery ended in an error status |
//! | `E#<code>` | the error status code is exactly `<code>` |
//! | `E*<text>` | the error text contains `<text>` (case-sensitive) |
//! | `X` | no reply arrived (timeout, or the connection closed first) |
//!
//! A reply whose MSA-1 is `AE`, `AR`, `CE` or `CR` is an error status. Its
//! code is the code of the first ERR segment that has one (ERR-3.1, e.g.
//! `101`), else the MSA-1 code itself; its text is MSA-3, else the text of the
//! first ERR segment that has one ([`Reply::text`]). A delivery that failed
//! after sending ([`DeliveryOutcome::Error`]) is an error status with its own
//! code and text. No reply at all is *not* an error status: only `X` matches
//! it, and conditions on the reply (`:…`) never match it.
//!
//! Actions, one capital letter each, combinable in any order:
//!
//! | action | effect |
//! |---|---|
//! | `C` | complete the message |
//! | `W` | log a warning; alone, it counts as completed if no other entry applies |
//! | `R` | retry every retry interval until the failure timeout, then fail unless another letter says otherwise (`RS`, `RD`, `RC`) |
//! | `S` | suspend the message: kept, visible, resendable; move on |
//! | `D` | disable the operation and put the message back at the front of its queue |
//! | `F` | fail the message and move on |
//!
//! # Choices where Ensemble's documentation is silent
//!
//! - **Several final letters in one entry** (`CS`, `SF`, …): the one that
//!   keeps most attention on the message wins, `D` > `S` > `F` > `C`. With
//!   `R`, that letter is what happens after the failure timeout; `R` alone
//!   (or with only `W`) fails.
//! - **Evaluation.** First, every entry made only of `W` whose condition
//!   matches adds a warning. Then the other entries are tried left to right
//!   and the first match decides (a `W` beside other letters adds a warning
//!   too). If none matches but a `W`-only entry did, the message is completed
//!   (the `W` entry "applies", so the "nothing matched" rule does not);
//!   [`Decision::matched`] then names the first such `W` entry. If nothing at
//!   all matched, the message fails and `matched` is `None`.
//! - **`:*`** looks at every other entry, before or after it, whose condition
//!   is on MSA-1 (`:?A`, `:?E`, `:?R`, `:_`, `:XX`) and is not `W`-only, so
//!   `:*=S,:?A=C` still completes an `AA`. It never matches a reply without
//!   MSA (that is `:~`) or a delivery without a reply.
//! - **Without a reply**, the default setting has no matching entry (it has
//!   no `X` and no `E`), so the message fails; add `X=R` (or `X=RS`, …) to
//!   retry instead.
//! - **Texts and codes.** A comma always ends an entry, so an `E*` text or an
//!   `E#` code cannot contain one. An `E*` text may contain `=`: its actions
//!   follow the *last* `=` of the entry (`E*PID-7=empty=C`); every other
//!   entry splits at its first `=`. Whitespace around entries, conditions and
//!   actions is ignored, as is whitespace after `E#`; inside an `E*` text it
//!   is kept, except at the end.
//! - **Leniency.** Empty entries (a doubled or trailing comma) are ignored,
//!   duplicate entries are kept (the first one decides), and a letter repeated
//!   within an action list counts once. An empty or blank setting means the
//!   default. Letters are case-sensitive, as MSA-1 codes are.
//! - **Errors** give the 1-based character (not byte) position in the
//!   setting and what would be valid there.
//!
//! ```
//! use switchboard::rules::reply_actions::{DeliveryOutcome, FinalAction, ReplyCodeActions};
//! use switchboard::hl7::{Message, Reply};
//!
//! let actions: ReplyCodeActions = "E*must not be empty=C,:?R=RF,:?E=S,:~=S,:?A=C,:*=S".parse()?;
//! let ack = Message::parse(b"MSH|^~\\&|LAB|L|REG|H|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1|PID-7 must not be empty")?;
//! let reply = Reply::read(&ack);
//! let decision = actions.decide(&DeliveryOutcome::Reply { reply: &reply, sent_control_id: "M1" });
//! assert_eq!(decision.then, FinalAction::Complete);
//! assert_eq!(decision.matched.as_deref(), Some("E*must not be empty=C"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hl7::Reply;

/// The setting used when an operation leaves ReplyCodeActions empty — the
/// same as Ensemble's: rejects retried then failed, errors suspended, a
/// missing MSA suspended, accepts completed, any other code suspended, a
/// control-id mismatch warned.
pub const DEFAULT_REPLY_CODE_ACTIONS: &str = ":?R=RF,:?E=S,:~=S,:?A=C,:*=S,:I?=W,:T?=C";

/// What is valid as a condition, for error messages.
const CONDITIONS_HINT: &str =
    "conditions are :?A, :?E, :?R, :_, :*, :~, :I?, :T?, an MSA-1 code such as :AE, E, E#<code>, E*<text>, X";

/// What is valid as an action, for error messages.
const ACTIONS_HINT: &str = "actions are C, W, R, S, D, F";

/// A parsed ReplyCodeActions setting.
///
/// Parsed once when the configuration is loaded, so that a typo is reported
/// with its position before anything is sent, and evaluated with
/// [`ReplyCodeActions::decide`] for every delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyCodeActions {
    entries: Vec<Entry>,
}

/// One `<condition>=<actions>` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    condition: Condition,
    actions: Actions,
}

impl Entry {
    /// What the entry tests.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// What the entry does when its condition matches.
    pub fn actions(&self) -> Actions {
        self.actions
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.condition, self.actions)
    }
}

/// The condition of an entry; see the module documentation for when each
/// one matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// `:?A`: MSA-1 is `AA` or `CA`.
    Accept,
    /// `:?E`: MSA-1 is `AE` or `CE`.
    Error,
    /// `:?R`: MSA-1 is `AR` or `CR`.
    Reject,
    /// `:_`: MSA-1 is empty.
    EmptyCode,
    /// `:XX`: MSA-1 is exactly this two-letter code.
    Code(String),
    /// `:*`: an MSA-1 value that no other entry's MSA-1 condition matches.
    AnyOtherCode,
    /// `:~`: the reply has no MSA segment.
    NoMsa,
    /// `:I?`: MSA-2 differs from the control id sent.
    ControlIdMismatch,
    /// `:T?`: the reply's MSH-9.1 is not `ACK`.
    NotAck,
    /// `E`: the delivery ended in an error status.
    ErrorStatus,
    /// `E#<code>`: the error status code equals this code.
    ErrorCode(String),
    /// `E*<text>`: the error text contains this text.
    ErrorText(String),
    /// `X`: no reply arrived.
    NoReply,
}

impl Condition {
    /// True when this is a condition on MSA-1 and `code` satisfies it. `:*`
    /// is not one of them: it is defined by the others.
    fn matches_code(&self, code: &str) -> bool {
        match self {
            Self::Accept => matches!(code, "AA" | "CA"),
            Self::Error => matches!(code, "AE" | "CE"),
            Self::Reject => matches!(code, "AR" | "CR"),
            Self::EmptyCode => code.is_empty(),
            Self::Code(expected) => code == expected,
            _ => false,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accept => f.write_str(":?A"),
            Self::Error => f.write_str(":?E"),
            Self::Reject => f.write_str(":?R"),
            Self::EmptyCode => f.write_str(":_"),
            Self::Code(code) => write!(f, ":{code}"),
            Self::AnyOtherCode => f.write_str(":*"),
            Self::NoMsa => f.write_str(":~"),
            Self::ControlIdMismatch => f.write_str(":I?"),
            Self::NotAck => f.write_str(":T?"),
            Self::ErrorStatus => f.write_str("E"),
            Self::ErrorCode(code) => write!(f, "E#{code}"),
            Self::ErrorText(text) => write!(f, "E*{text}"),
            Self::NoReply => f.write_str("X"),
        }
    }
}

/// The action letters of an entry, as a set: `RF` and `FR` are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    const COMPLETE: u8 = 1;
    const WARN: u8 = 1 << 1;
    const RETRY: u8 = 1 << 2;
    const SUSPEND: u8 = 1 << 3;
    const DISABLE: u8 = 1 << 4;
    const FAIL: u8 = 1 << 5;

    /// Canonical order of the letters when written out: retry first, then
    /// the final letters by precedence, warning last (`RF`, `SW`).
    const ORDER: [(u8, char); 6] = [
        (Self::RETRY, 'R'),
        (Self::DISABLE, 'D'),
        (Self::SUSPEND, 'S'),
        (Self::FAIL, 'F'),
        (Self::COMPLETE, 'C'),
        (Self::WARN, 'W'),
    ];

    fn bit(letter: char) -> Option<u8> {
        Self::ORDER.iter().find(|(_, l)| *l == letter).map(|(bit, _)| *bit)
    }

    /// `R`: retry until the failure timeout before the final action.
    pub fn retries(self) -> bool {
        self.0 & Self::RETRY != 0
    }

    /// `W`: log a warning when the entry applies.
    pub fn warns(self) -> bool {
        self.0 & Self::WARN != 0
    }

    /// Only `W`: the entry warns whenever it matches and never decides by
    /// itself while another entry applies.
    pub fn is_warning_only(self) -> bool {
        self.0 == Self::WARN
    }

    /// What happens in the end (after retrying, with `R`): the strongest of
    /// `D` > `S` > `F` > `C`; `F` when the entry only retries; `C` for a
    /// `W`-only entry.
    pub fn final_action(self) -> FinalAction {
        if self.0 & Self::DISABLE != 0 {
            FinalAction::Disable
        } else if self.0 & Self::SUSPEND != 0 {
            FinalAction::Suspend
        } else if self.0 & Self::FAIL != 0 {
            FinalAction::Fail
        } else if self.0 & Self::COMPLETE != 0 {
            FinalAction::Complete
        } else if self.retries() {
            FinalAction::Fail
        } else {
            FinalAction::Complete
        }
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, letter) in Self::ORDER {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// Why a ReplyCodeActions setting could not be parsed.
///
/// Configuration errors name the item; this adds where in the setting the
/// problem is and what would be valid there. The setting is configuration,
/// never message content, so the error is safe to log and show.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{reason} at character {position}: {hint}")]
pub struct ReplyCodeActionsError {
    /// 1-based position, in characters (not bytes), of the problem in the
    /// setting.
    pub position: usize,
    /// What is wrong, e.g. `unknown action 'Q'`.
    pub reason: String,
    /// What would be valid, e.g. `actions are C, W, R, S, D, F`.
    pub hint: String,
}

impl ReplyCodeActionsError {
    fn new(setting: &str, byte_offset: usize, reason: impl Into<String>, hint: impl Into<String>) -> Self {
        let position = setting.get(..byte_offset).map_or(0, |before| before.chars().count()) + 1;
        Self { position, reason: reason.into(), hint: hint.into() }
    }
}

impl FromStr for ReplyCodeActions {
    type Err = ReplyCodeActionsError;

    /// Parses a setting; an empty or blank one is the default.
    fn from_str(setting: &str) -> Result<Self, Self::Err> {
        if setting.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut entries = Vec::new();
        let mut offset = 0;
        for piece in setting.split(',') {
            let start = offset;
            offset += piece.len() + 1;
            let entry = piece.trim();
            if entry.is_empty() {
                continue;
            }
            let lead = piece.len() - piece.trim_start().len();
            entries.push(parse_entry(setting, start + lead, entry)?);
        }
        if entries.is_empty() {
            return Err(ReplyCodeActionsError::new(
                setting,
                0,
                "no entries",
                "write <condition>=<actions> entries separated by commas, or leave the setting empty for the default",
            ));
        }
        Ok(Self { entries })
    }
}

/// Parses one trimmed entry that starts at byte `at` of `setting`.
fn parse_entry(setting: &str, at: usize, entry: &str) -> Result<Entry, ReplyCodeActionsError> {
    let is_text = entry.starts_with("E*");
    let equals = if is_text { entry.rfind('=') } else { entry.find('=') };
    let Some(equals) = equals else {
        let mut hint = String::from("an entry is <condition>=<actions>, e.g. :?A=C");
        if is_text {
            hint.push_str("; a comma always ends an entry, so an E* text cannot contain one");
        }
        return Err(ReplyCodeActionsError::new(setting, at, format!("missing '=' in entry '{entry}'"), hint));
    };
    let condition = entry[..equals].trim_end();
    if condition.is_empty() {
        return Err(ReplyCodeActionsError::new(setting, at, "empty condition before '='", CONDITIONS_HINT));
    }
    let condition =
        parse_condition(condition).map_err(|(reason, hint)| ReplyCodeActionsError::new(setting, at, reason, hint))?;

    let after = &entry[equals + 1..];
    let letters = after.trim_start();
    let letters_at = at + equals + 1 + (after.len() - letters.len());
    if letters.is_empty() {
        return Err(ReplyCodeActionsError::new(setting, at + equals, "no action after '='", ACTIONS_HINT));
    }
    let mut bits = 0;
    for (i, letter) in letters.char_indices() {
        let Some(bit) = Actions::bit(letter) else {
            let hint = if Actions::bit(letter.to_ascii_uppercase()).is_some() {
                format!("{ACTIONS_HINT} (capital letters)")
            } else {
                ACTIONS_HINT.to_string()
            };
            return Err(ReplyCodeActionsError::new(
                setting,
                letters_at + i,
                format!("unknown action '{}'", letter.escape_debug()),
                hint,
            ));
        };
        bits |= bit;
    }
    Ok(Entry { condition, actions: Actions(bits) })
}

/// Parses a trimmed, non-empty condition; on error, the reason and hint.
fn parse_condition(text: &str) -> Result<Condition, (String, String)> {
    let condition = match text {
        ":?A" => Condition::Accept,
        ":?E" => Condition::Error,
        ":?R" => Condition::Reject,
        ":_" => Condition::EmptyCode,
        ":*" => Condition::AnyOtherCode,
        ":~" => Condition::NoMsa,
        ":I?" => Condition::ControlIdMismatch,
        ":T?" => Condition::NotAck,
        "E" => Condition::ErrorStatus,
        "X" => Condition::NoReply,
        _ => {
            if let Some(code) = text.strip_prefix("E#") {
                let code = code.trim_start();
                if code.is_empty() {
                    return Err(("E# without a code".into(), "write the error code after E#, e.g. E#101".into()));
                }
                Condition::ErrorCode(code.to_string())
            } else if let Some(needle) = text.strip_prefix("E*") {
                if needle.trim().is_empty() {
                    return Err((
                        "E* without a text".into(),
                        "write the text to look for after E*, e.g. E*must not be empty".into(),
                    ));
                }
                Condition::ErrorText(needle.to_string())
            } else if let Some(code) =
                text.strip_prefix(':').filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                Condition::Code(code.to_string())
            } else {
                let unknown = format!("unknown condition '{}'", text.escape_debug());
                let lowercase_code =
                    text.strip_prefix(':').is_some_and(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()));
                let hint = if lowercase_code {
                    format!("MSA-1 codes are case-sensitive, e.g. :{}", text[1..].to_ascii_uppercase())
                } else {
                    CONDITIONS_HINT.to_string()
                };
                return Err((unknown, hint));
            }
        }
    };
    Ok(condition)
}

impl Default for ReplyCodeActions {
    /// [`DEFAULT_REPLY_CODE_ACTIONS`], built directly (a test checks it
    /// equals the parsed string).
    fn default() -> Self {
        let entry = |condition, bits| Entry { condition, actions: Actions(bits) };
        Self {
            entries: vec![
                entry(Condition::Reject, Actions::RETRY | Actions::FAIL),
                entry(Condition::Error, Actions::SUSPEND),
                entry(Condition::NoMsa, Actions::SUSPEND),
                entry(Condition::Accept, Actions::COMPLETE),
                entry(Condition::AnyOtherCode, Actions::SUSPEND),
                entry(Condition::ControlIdMismatch, Actions::WARN),
                entry(Condition::NotAck, Actions::COMPLETE),
            ],
        }
    }
}

impl fmt::Display for ReplyCodeActions {
    /// Canonical text: entries joined by `,` without spaces, action letters
    /// in the order `R`, `D`, `S`, `F`, `C`, `W`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for ReplyCodeActions {
    /// As the canonical text, so a configuration written back reads the same.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ReplyCodeActions {
    /// From the setting's text, with the parse error (position and what is
    /// valid) as the message.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened on one delivery attempt.
#[derive(Clone, Copy, Debug)]
pub enum DeliveryOutcome<'a> {
    /// A reply arrived. `sent_control_id` is the MSH-10 of the message sent,
    /// for `:I?`.
    Reply {
        /// The acknowledgment parts of the reply.
        reply: &'a Reply,
        /// MSH-10 of the message sent.
        sent_control_id: &'a str,
    },
    /// No reply (condition `X`): the response timeout passed on a live
    /// connection, or transport failures (connection refused, closed or
    /// reset, a failed handshake) went on past the failure timeout.
    NoReply,
    /// A reply arrived but cannot be read as HL7. Handled like a reply
    /// without an MSA segment (`:~`): nothing in it can be trusted, and
    /// its bytes are kept with the message.
    Unreadable,
    /// The attempt failed otherwise after sending (e.g. the reply was
    /// unreadable): an error status for `E`, `E#` and `E*`.
    Error {
        /// A short symbolic status code.
        code: &'a str,
        /// The error text.
        text: &'a str,
    },
}

/// What finally happens to the message (immediately, or after retrying until
/// the failure timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalAction {
    /// `C` (or only `W`): the message is done.
    Complete,
    /// `S`: the message is kept, visible and resendable; the operation moves
    /// on to the next one.
    Suspend,
    /// `D`: the operation is disabled and the message goes back to the front
    /// of its queue.
    Disable,
    /// `F`: the message fails with an error; the operation moves on.
    Fail,
}

impl FinalAction {
    /// A lowercase word for logs and status: `complete`, `suspend`,
    /// `disable`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Suspend => "suspend",
            Self::Disable => "disable",
            Self::Fail => "fail",
        }
    }
}

impl fmt::Display for FinalAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of evaluating the setting against one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `R`: retry every retry interval until the failure timeout, then apply
    /// `then`.
    pub retry: bool,
    /// What to do: immediately if `!retry`, after the failure timeout if
    /// `retry`.
    pub then: FinalAction,
    /// One per matching `W`-only entry, plus one when the deciding entry has
    /// a `W`, e.g. `reply matched :I?=W (MSA-2 differs from the control id
    /// sent)`. They hold no message content other than MSA-1 codes.
    pub warnings: Vec<String>,
    /// The entry that decided, in canonical text (the first matching `W`-only
    /// entry when only such entries matched), or `None` when nothing matched.
    pub matched: Option<String>,
}

/// An error status: the code and text that `E`, `E#` and `E*` look at.
struct ErrorStatus<'a> {
    code: &'a str,
    text: Option<&'a str>,
}

fn error_status<'a>(outcome: &DeliveryOutcome<'a>) -> Option<ErrorStatus<'a>> {
    match *outcome {
        DeliveryOutcome::Reply { reply, .. } => {
            let code = reply.acknowledgment_code().filter(|c| matches!(*c, "AE" | "AR" | "CE" | "CR"))?;
            let code = reply.errors.iter().find_map(|e| e.code.as_deref()).unwrap_or(code);
            Some(ErrorStatus { code, text: reply.text() })
        }
        DeliveryOutcome::Error { code, text } => Some(ErrorStatus { code, text: Some(text) }),
        DeliveryOutcome::NoReply | DeliveryOutcome::Unreadable => None,
    }
}

impl ReplyCodeActions {
    /// The entries, in order (for display and validation).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Decides what to do after one delivery attempt; see the module
    /// documentation for the order of evaluation.
    pub fn decide(&self, outcome: &DeliveryOutcome<'_>) -> Decision {
        let mut warnings = Vec::new();
        let mut first_warning = None;
        for entry in self.entries.iter().filter(|e| e.actions.is_warning_only()) {
            if self.matches(&entry.condition, outcome) {
                warnings.push(warning(entry, outcome));
                first_warning.get_or_insert(entry);
            }
        }
        for entry in self.entries.iter().filter(|e| !e.actions.is_warning_only()) {
            if self.matches(&entry.condition, outcome) {
                if entry.actions.warns() {
                    warnings.push(warning(entry, outcome));
                }
                return Decision {
                    retry: entry.actions.retries(),
                    then: entry.actions.final_action(),
                    warnings,
                    matched: Some(entry.to_string()),
                };
            }
        }
        match first_warning {
            Some(entry) => {
                Decision { retry: false, then: FinalAction::Complete, warnings, matched: Some(entry.to_string()) }
            }
            None => Decision { retry: false, then: FinalAction::Fail, warnings, matched: None },
        }
    }

    fn matches(&self, condition: &Condition, outcome: &DeliveryOutcome<'_>) -> bool {
        let (reply, sent_control_id) = match *outcome {
            DeliveryOutcome::Reply { reply, sent_control_id } => (Some(reply), sent_control_id),
            _ => (None, ""),
        };
        let code = reply.and_then(Reply::acknowledgment_code);
        match condition {
            Condition::Accept | Condition::Error | Condition::Reject | Condition::EmptyCode | Condition::Code(_) => {
                code.is_some_and(|c| condition.matches_code(c))
            }
            Condition::AnyOtherCode => code.is_some_and(|c| {
                !self.entries.iter().any(|e| !e.actions.is_warning_only() && e.condition.matches_code(c))
            }),
            Condition::NoMsa => {
                reply.is_some_and(|r| r.msa.is_none()) || matches!(outcome, DeliveryOutcome::Unreadable)
            }
            Condition::ControlIdMismatch => {
                reply.and_then(Reply::acknowledged_control_id).is_some_and(|id| id != sent_control_id)
            }
            Condition::NotAck => reply.is_some_and(|r| r.message_code != "ACK"),
            Condition::ErrorStatus => error_status(outcome).is_some(),
            Condition::ErrorCode(expected) => error_status(outcome).is_some_and(|s| s.code == expected),
            Condition::ErrorText(needle) => {
                error_status(outcome).and_then(|s| s.text).is_some_and(|t| t.contains(needle.as_str()))
            }
            Condition::NoReply => matches!(outcome, DeliveryOutcome::NoReply),
        }
    }
}

/// The warning for an entry that matched: the entry and why it matched,
/// without message content other than the MSA-1 code.
fn warning(entry: &Entry, outcome: &DeliveryOutcome<'_>) -> String {
    let (subject, code) = match outcome {
        DeliveryOutcome::Reply { reply, .. } => ("reply", reply.acknowledgment_code().unwrap_or_default()),
        DeliveryOutcome::Unreadable => ("reply", ""),
        _ => ("delivery", ""),
    };
    let why = match &entry.condition {
        Condition::Accept | Condition::Error | Condition::Reject | Condition::Code(_) | Condition::AnyOtherCode => {
            format!("MSA-1 is {}", printable_code(code))
        }
        Condition::EmptyCode => "MSA-1 is empty".to_string(),
        Condition::NoMsa if matches!(outcome, DeliveryOutcome::Unreadable) => {
            "the reply cannot be read as HL7".to_string()
        }
        Condition::NoMsa => "the reply has no MSA segment".to_string(),
        Condition::ControlIdMismatch => "MSA-2 differs from the control id sent".to_string(),
        Condition::NotAck => "MSH-9 is not ACK".to_string(),
        Condition::ErrorStatus => "the delivery ended in an error status".to_string(),
        Condition::ErrorCode(_) => "the error status code matches".to_string(),
        Condition::ErrorText(_) => "the error text contains the entry's text".to_string(),
        Condition::NoReply => "no reply was received".to_string(),
    };
    format!("{subject} matched {entry} ({why})")
}

/// An MSA-1 value as it may appear in a log: a code is two letters, so
/// anything longer is cut and control characters are escaped.
fn printable_code(code: &str) -> String {
    const MAX: usize = 8;
    let mut out: String = code.chars().take(MAX).flat_map(char::escape_debug).collect();
    if code.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
