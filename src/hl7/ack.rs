//! Acknowledgments: building ACKs for received messages and reading the
//! ACKs that downstream systems send back.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use time::OffsetDateTime;

use super::{Message, Path, escape};

/// MSA-1: the acknowledgment code.
///
/// Original mode answers with `A*` codes after the receiver has processed
/// the message; enhanced mode (MSH-15/16) answers with `C*` commit codes
/// once the message is safely stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the message was understood but not processed.
    AE,
    /// Application reject: the message was refused (bad header, unsupported).
    AR,
    /// Commit accept.
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
            Self::CA => "CA",
            Self::CE => "CE",
            Self::CR => "CR",
        }
    }

    /// True for `AA` and `CA`.
    pub fn is_positive(self) -> bool {
        matches!(self, Self::AA | Self::CA)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HL7 table 0516: how serious an ERR entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `E`: the message was not processed.
    Error,
    /// `W`: processed, with a warning.
    Warning,
    /// `I`: for information.
    Information,
    /// `F`: the receiver cannot continue.
    Fatal,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Self::Error => "E",
            Self::Warning => "W",
            Self::Information => "I",
            Self::Fatal => "F",
        }
    }
}

/// HL7 table 0357: message error condition codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Hl7ErrorCode {
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    ValueTooLong,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    UnknownKeyIdentifier,
    DuplicateKeyIdentifier,
    ApplicationRecordLocked,
    ApplicationInternalError,
}

impl Hl7ErrorCode {
    /// The numeric code and its standard text.
    pub fn code_and_text(self) -> (u16, &'static str) {
        match self {
            Self::SegmentSequenceError => (100, "Segment sequence error"),
            Self::RequiredFieldMissing => (101, "Required field missing"),
            Self::DataTypeError => (102, "Data type error"),
            Self::TableValueNotFound => (103, "Table value not found"),
            Self::ValueTooLong => (104, "Value too long"),
            Self::UnsupportedMessageType => (200, "Unsupported message type"),
            Self::UnsupportedEventCode => (201, "Unsupported event code"),
            Self::UnsupportedProcessingId => (202, "Unsupported processing id"),
            Self::UnsupportedVersionId => (203, "Unsupported version id"),
            Self::UnknownKeyIdentifier => (204, "Unknown key identifier"),
            Self::DuplicateKeyIdentifier => (205, "Duplicate key identifier"),
            Self::ApplicationRecordLocked => (206, "Application record locked"),
            Self::ApplicationInternalError => (207, "Application internal error"),
        }
    }
}

/// One ERR segment of an ACK being built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckError {
    /// ERR-2: where in the original message the problem is.
    pub location: Option<Path>,
    /// ERR-3: what kind of problem.
    pub code: Hl7ErrorCode,
    /// ERR-4.
    pub severity: Severity,
}

/// Builds an ACK for a received message, in the message's own delimiters.
///
/// MSH-3/4 and MSH-5/6 are swapped, MSH-9 is `ACK^<trigger>^ACK`, MSH-11,
/// MSH-12 and MSH-18 are copied, MSA-2 is the original MSH-10.
///
/// ```
/// use switchboard::hl7::{AckBuilder, AckCode, AckError, Hl7ErrorCode, Message, Severity};
///
/// let msg = Message::parse(b"MSH|^~\\&|REG|H|LAB|L|20260101||ADT^A01|M1|P|2.5\rPID|1||1||DOE")?;
/// let ack = AckBuilder::new(&msg, AckCode::AE)
///     .text("Date of birth in PID.7 must not be empty")
///     .error(AckError {
///         location: Some("PID-7".parse()?),
///         code: Hl7ErrorCode::RequiredFieldMissing,
///         severity: Severity::Error,
///     })
///     .control_id("A1")
///     .build();
/// let text = String::from_utf8(ack)?;
/// assert!(text.starts_with("MSH|^~\\&|LAB|L|REG|H|"));
/// assert!(text.contains("|ACK^A01^ACK|A1|P|2.5\rMSA|AE|M1|Date of birth in PID.7 must not be empty\r"));
/// assert!(text.ends_with("ERR||PID^1^7|101^Required field missing^HL70357|E\r"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct AckBuilder<'m> {
    original: &'m Message<'m>,
    code: AckCode,
    text: Option<String>,
    errors: Vec<AckError>,
    control_id: Option<String>,
    timestamp: Option<OffsetDateTime>,
}

impl<'m> AckBuilder<'m> {
    /// An ACK with code `code` for `original`.
    pub fn new(original: &'m Message<'m>, code: AckCode) -> Self {
        Self { original, code, text: None, errors: Vec::new(), control_id: None, timestamp: None }
    }

    /// MSA-3: a text for people reading the ACK. It is escaped and written in
    /// the original's character set (characters it cannot hold become `?`).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Adds an ERR segment.
    pub fn error(mut self, error: AckError) -> Self {
        self.errors.push(error);
        self
    }

    /// MSH-10 of the ACK; by default a process-unique id.
    pub fn control_id(mut self, id: impl Into<String>) -> Self {
        self.control_id = Some(id.into());
        self
    }

    /// MSH-7 of the ACK; by default now (UTC).
    pub fn timestamp(mut self, at: OffsetDateTime) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// The ACK's bytes, segments ending in CR.
    pub fn build(self) -> Vec<u8> {
        let msg = self.original;
        let d = *msg.delimiters();
        let field = |n: usize| msg.get(&Path::field("MSH", n)).unwrap_or_default();
        // Everything is written straight into one buffer, sized for a
        // typical ACK and its texts.
        let texts = self.text.as_ref().map_or(0, String::len) + self.control_id.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(256 + 2 * texts + 64 * self.errors.len());
        out.extend_from_slice(b"MSH");
        out.push(d.field);
        out.extend_from_slice(&[d.component, d.repetition, d.escape, d.subcomponent]);
        out.extend(d.truncation);
        for n in [5, 6, 3, 4] {
            out.push(d.field);
            out.extend_from_slice(field(n));
        }
        out.push(d.field);
        push_timestamp(&mut out, self.timestamp.unwrap_or_else(OffsetDateTime::now_utc));
        out.push(d.field);
        out.push(d.field);
        out.extend_from_slice(b"ACK");
        if let Some(trigger) = msg.trigger_event() {
            out.push(d.component);
            out.extend_from_slice(trigger);
            out.push(d.component);
            out.extend_from_slice(b"ACK");
        }
        out.push(d.field);
        match &self.control_id {
            Some(id) => self.push_escaped(&mut out, id),
            None => push_control_id(&mut out),
        }
        for n in [11, 12] {
            out.push(d.field);
            out.extend_from_slice(field(n));
        }
        let charset = field(18);
        if !charset.is_empty() {
            out.extend(std::iter::repeat_n(d.field, 6));
            out.extend_from_slice(charset);
        }
        out.extend_from_slice(b"\rMSA");
        out.push(d.field);
        out.extend_from_slice(self.code.as_str().as_bytes());
        out.push(d.field);
        out.extend_from_slice(msg.control_id().unwrap_or_default());
        if let Some(text) = &self.text {
            out.push(d.field);
            self.push_escaped(&mut out, text);
        }
        out.push(b'\r');
        for error in &self.errors {
            out.extend_from_slice(b"ERR");
            out.push(d.field);
            out.push(d.field);
            if let Some(path) = &error.location {
                push_error_location(&mut out, path, d.component);
            }
            out.push(d.field);
            let (code, text) = error.code.code_and_text();
            push_number(&mut out, code.into());
            out.push(d.component);
            out.extend_from_slice(text.as_bytes());
            out.push(d.component);
            out.extend_from_slice(b"HL70357");
            out.push(d.field);
            out.extend_from_slice(error.severity.code().as_bytes());
            out.push(b'\r');
        }
        out
    }

    fn push_escaped(&self, out: &mut Vec<u8>, text: &str) {
        let d = self.original.delimiters();
        match self.original.charset().encode(text) {
            Ok(bytes) => escape::escape_into(&bytes, d, out),
            Err(_) => {
                let bytes: Vec<u8> = text.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }).collect();
                escape::escape_into(&bytes, d, out);
            }
        }
    }
}

/// ERR-2 (ERL): `segment^sequence^field^repetition^component^subcomponent`,
/// trailing empty parts left off.
fn push_error_location(out: &mut Vec<u8>, path: &Path, component: u8) {
    out.extend_from_slice(path.segment_id().as_bytes());
    let tail = [path.repetition.or(path.component.map(|_| 1)), path.component, path.subcomponent];
    for n in [Some(path.segment_occurrence), Some(path.field)].into_iter().chain(tail).flatten() {
        out.push(component);
        push_number(out, n);
    }
}

fn push_number(out: &mut Vec<u8>, n: usize) {
    let width = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    push_padded(out, n as u64, width);
}

/// MSH-7 in UTC: `YYYYMMDDHHMMSS+0000`, written digit by digit like the
/// control id (a year outside 0–9999, which HL7's DTM cannot hold, leaves
/// MSH-7 empty; the ACK is still built).
fn push_timestamp(out: &mut Vec<u8>, at: OffsetDateTime) {
    let at = at.to_offset(time::UtcOffset::UTC);
    let Ok(year) = u64::try_from(at.year()) else { return };
    if year > 9999 {
        return;
    }
    push_padded(out, year, 4);
    for part in [u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second()] {
        push_padded(out, u64::from(part), 2);
    }
    out.extend_from_slice(b"+0000");
}

/// Appends a process-unique control id of 20 digits (the MSH-10 length of
/// v2.3–2.6): milliseconds since the epoch (13 digits) and a counter (7).
/// Written digit by digit: every ACK the engine sends carries one, and
/// `format!` with padding took about a third of the ACK's build time (see
/// `ack/build/AA_generated_id` in BENCHMARKS.md).
fn push_control_id(out: &mut Vec<u8>) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000_000;
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = since_epoch.as_secs().wrapping_mul(1000).wrapping_add(u64::from(since_epoch.subsec_millis()));
    push_padded(out, millis % 10_000_000_000_000, 13);
    push_padded(out, n, 7);
}

/// Appends `n` in decimal, zero-padded to `width` digits (the lowest
/// `width` digits if it has more).
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A header problem that makes a received message unacceptable: the
/// receiver must reject it (AR/CR) because it cannot be processed or even
/// acknowledged properly.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// MSH-9.1 is empty.
    #[error("MSH-9 (message type) is empty")]
    MissingMessageType,
    /// MSH-10 is empty: an ACK could not reference the message.
    #[error("MSH-10 (message control id) is empty")]
    MissingControlId,
}

impl HeaderError {
    /// The ERR segment describing this problem.
    pub fn ack_error(&self) -> AckError {
        let field = match self {
            Self::MissingMessageType => 9,
            Self::MissingControlId => 10,
        };
        AckError {
            location: Some(Path::field("MSH", field)),
            code: Hl7ErrorCode::RequiredFieldMissing,
            severity: Severity::Error,
        }
    }
}

/// Checks what a receiver needs from MSH before it can accept a message.
pub fn check_header(msg: &Message<'_>) -> Result<(), HeaderError> {
    if msg.message_code().is_none() {
        return Err(HeaderError::MissingMessageType);
    }
    if msg.control_id().is_none() {
        return Err(HeaderError::MissingControlId);
    }
    Ok(())
}

/// One ERR segment of a received ACK.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrDetail {
    /// ERR-2 (v2.5+) or the location part of ERR-1 (v2.3/2.4), as written.
    pub location: Option<String>,
    /// ERR-3.1 (or ERR-1.4.1): the error code.
    pub code: Option<String>,
    /// ERR-3.2 (or ERR-1.4.2): the error text; ERR-8 (user message) when
    /// present.
    pub text: Option<String>,
    /// ERR-4: the severity code.
    pub severity: Option<String>,
}

/// What a downstream system answered, read from its ACK.
///
/// All values are decoded text; an absent MSA is kept as absent (the
/// ReplyCodeActions condition `:~` depends on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// MSH-9 as written (e.g. `ACK^A01^ACK`).
    pub message_type: String,
    /// MSH-9.1.
    pub message_code: String,
    /// MSA-1, MSA-2, MSA-3, when the reply has an MSA segment.
    pub msa: Option<(String, String, Option<String>)>,
    /// The ERR segments.
    pub errors: Vec<ErrDetail>,
}

impl Reply {
    /// Reads the acknowledgment parts of a reply message.
    pub fn read(msg: &Message<'_>) -> Self {
        let text = |path: Path| msg.get(&path).filter(|v| !v.is_empty()).map(|v| msg.decode(v).into_owned());
        let msa = msg.segment("MSA", 1).map(|_| {
            (
                text(Path::field("MSA", 1)).unwrap_or_default(),
                text(Path::field("MSA", 2)).unwrap_or_default(),
                text(Path::field("MSA", 3)),
            )
        });
        let errors = (1..)
            .map_while(|n| msg.segment("ERR", n).map(|_| n))
            .map(|n| {
                let err = |field: usize| Path::field("ERR", field).occurrence(n);
                let v2_5 = text(err(2)).is_some() || text(err(3)).is_some();
                if v2_5 {
                    ErrDetail {
                        location: text(err(2)),
                        code: text(err(3).component(1)),
                        text: text(err(8)).or_else(|| text(err(3).component(2))),
                        severity: text(err(4)),
                    }
                } else {
                    let location = msg.get(&err(1).repetition(1)).map(|raw| {
                        let d = msg.delimiters();
                        let parts: Vec<&[u8]> = raw.split(|b| *b == d.component).take(3).collect();
                        msg.decode(&parts.join(&d.component)).into_owned()
                    });
                    ErrDetail {
                        location: location.filter(|l| !l.is_empty()),
                        code: text(err(1).component(4).subcomponent(1)),
                        text: text(err(1).component(4).subcomponent(2)),
                        severity: None,
                    }
                }
            })
            .collect();
        Self {
            message_type: text(Path::field("MSH", 9)).unwrap_or_default(),
            message_code: text(Path::field("MSH", 9).component(1)).unwrap_or_default(),
            msa,
            errors,
        }
    }

    /// MSA-1, e.g. `AA`.
    pub fn acknowledgment_code(&self) -> Option<&str> {
        self.msa.as_ref().map(|(code, _, _)| code.as_str())
    }

    /// MSA-2: the control id of the message this acknowledges.
    pub fn acknowledged_control_id(&self) -> Option<&str> {
        self.msa.as_ref().map(|(_, id, _)| id.as_str())
    }

    /// MSA-3, or else the text of the first ERR segment.
    pub fn text(&self) -> Option<&str> {
        self.msa
            .as_ref()
            .and_then(|(_, _, text)| text.as_deref())
            .or_else(|| self.errors.iter().find_map(|e| e.text.as_deref()))
    }

    /// True when MSA-1 is `AA` or `CA`.
    pub fn is_positive(&self) -> bool {
        matches!(self.acknowledgment_code(), Some("AA" | "CA"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh7_is_utc_with_offset_and_control_ids_fit_msh10() {
        let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|M1|P|2.5").unwrap();
        let at = time::macros::datetime!(2026-01-02 04:04:05 +01:00);
        let ack = String::from_utf8(AckBuilder::new(&msg, AckCode::AA).timestamp(at).build()).unwrap();
        assert!(ack.contains("|20260102030405+0000||ACK^A01^ACK|"), "{ack}");
        let early = AckBuilder::new(&msg, AckCode::AA).timestamp(time::macros::datetime!(0009-03-04 05:06:07 UTC));
        assert!(String::from_utf8(early.build()).unwrap().contains("|00090304050607+0000||"));
        let bc = AckBuilder::new(&msg, AckCode::AA).timestamp(time::macros::datetime!(-0001-01-01 00:00:00 UTC));
        let bc = String::from_utf8(bc.build()).unwrap();
        assert!(bc.starts_with("MSH|^~\\&|C|D|A|B|||ACK^A01^ACK|"), "MSH-7 left empty: {bc}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_control_id(&mut a);
        push_control_id(&mut b);
        assert!(a.len() == 20 && a.iter().all(u8::is_ascii_digit) && a != b, "{a:?} {b:?}");
        let mut padded = Vec::new();
        push_padded(&mut padded, 42, 5);
        push_padded(&mut padded, 1_234_567, 3);
        for n in [0, 7, 10, 123] {
            push_number(&mut padded, n);
        }
        assert_eq!(padded, b"000425670710123");
    }
}
