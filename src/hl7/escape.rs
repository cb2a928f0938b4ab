//! HL7 escape sequences.
//!
//! Decoding (`\X\` below stands for the message's escape character):
//!
//! | sequence | becomes |
//! |---|---|
//! | `\F\` `\S\` `\T\` `\R\` `\E\` | the field, component, subcomponent, repetition and escape characters |
//! | `\P\` | the truncation character (v2.7+; `#` when the message declares none) |
//! | `\Xhh..\` | the bytes `hh..` in the message's character set |
//! | `\.br\` and `\.sp\` | a line break (`\n`): both start a new output line |
//! | `\.in\`, `\.ti\`, `\.sk\`, `\.ce\`, `\.fi\`, `\.nf\`, `\H\`, `\N\` | removed: they are layout and highlight hints for formatted text, not content |
//! | `\Cxxyy\`, `\Mxxyyzz\` | removed: ISO 2022 character-set switches, which the byte-level decoder does not follow |
//! | `\Z..\` | kept as written: a locally defined sequence, legal HL7 whose meaning only its sender knows |
//! | anything else | kept as written |
//!
//! A sequence that is unknown or never closed is kept as written by the
//! lenient decoder ([`unescape`]) and reported with its position by the
//! strict one ([`unescape_strict`]). `\Z..\` is not reported: the standard
//! allows it, and a check that warned about it would warn about every
//! message of a sender that uses one.
//!
//! Encoding ([`escape`]) turns each delimiter into its sequence and CR / LF
//! into `\X0D\` / `\X0A\`, so that `unescape(escape(text)) == text` for any
//! text.

use std::borrow::Cow;

use memchr::memchr;
use thiserror::Error;

use super::Delimiters;

/// A malformed escape sequence.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EscapeError {
    /// An escape character without a closing one.
    #[error("escape sequence at byte {position} is never closed")]
    Unterminated {
        /// Byte offset of the opening escape character.
        position: usize,
    },
    /// A sequence that is not defined by HL7 (or a `\X\` with bad hex).
    #[error("unknown or malformed escape sequence at byte {position}")]
    Unknown {
        /// Byte offset of the opening escape character.
        position: usize,
    },
}

impl EscapeError {
    /// The byte offset of the sequence.
    pub fn position(&self) -> usize {
        match *self {
            Self::Unterminated { position } | Self::Unknown { position } => position,
        }
    }

    pub(crate) fn shifted(self, by: usize) -> Self {
        match self {
            Self::Unterminated { position } => Self::Unterminated { position: position + by },
            Self::Unknown { position } => Self::Unknown { position: position + by },
        }
    }
}

/// Replaces escape sequences, keeping malformed ones as written.
pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    match decode(raw, d, false) {
        Ok(v) => v,
        // The lenient decoder never fails; fall back to the raw bytes.
        Err(_) => Cow::Borrowed(raw),
    }
}

/// Replaces escape sequences and reports the first malformed one.
pub fn unescape_strict<'a>(raw: &'a [u8], d: &Delimiters) -> Result<Cow<'a, [u8]>, EscapeError> {
    decode(raw, d, true)
}

fn decode<'a>(raw: &'a [u8], d: &Delimiters, strict: bool) -> Result<Cow<'a, [u8]>, EscapeError> {
    let Some(first) = memchr(d.escape, raw) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut pos = first;
    while pos < raw.len() {
        let Some(close) = memchr(d.escape, &raw[pos + 1..]).map(|i| pos + 1 + i) else {
            if strict {
                return Err(EscapeError::Unterminated { position: pos });
            }
            out.extend_from_slice(&raw[pos..]);
            break;
        };
        let body = &raw[pos + 1..close];
        if !expand(body, d, &mut out) {
            if strict {
                return Err(EscapeError::Unknown { position: pos });
            }
            out.extend_from_slice(&raw[pos..=close]);
        }
        pos = close + 1;
        let next = memchr(d.escape, &raw[pos..]).map_or(raw.len(), |i| pos + i);
        out.extend_from_slice(&raw[pos..next]);
        pos = next;
    }
    Ok(Cow::Owned(out))
}

/// Appends what one sequence stands for; false when it is not understood.
fn expand(body: &[u8], d: &Delimiters, out: &mut Vec<u8>) -> bool {
    match body {
        b"F" => out.push(d.field),
        b"S" => out.push(d.component),
        b"T" => out.push(d.subcomponent),
        b"R" => out.push(d.repetition),
        b"E" => out.push(d.escape),
        b"P" => out.push(d.truncation.unwrap_or(b'#')),
        b"H" | b"N" => {}
        [b'X', hex @ ..] => {
            if hex.is_empty() || hex.len() % 2 != 0 {
                return false;
            }
            let start = out.len();
            for pair in hex.chunks_exact(2) {
                match (hex_digit(pair[0]), hex_digit(pair[1])) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => {
                        out.truncate(start);
                        return false;
                    }
                }
            }
        }
        // Locally defined: legal, but only the sender knows what it
        // stands for, so the text keeps it for a reader to interpret.
        [b'Z', ..] => {
            out.push(d.escape);
            out.extend_from_slice(body);
            out.push(d.escape);
        }
        [b'C' | b'M', rest @ ..] if !rest.is_empty() && rest.iter().all(u8::is_ascii_hexdigit) => {}
        [b'.', cmd @ ..] => match cmd.get(..2) {
            Some(b"br") if cmd.len() == 2 => out.push(b'\n'),
            Some(b"sp") => out.push(b'\n'),
            Some(b"in" | b"ti" | b"sk") => {}
            Some(b"ce" | b"fi" | b"nf") if cmd.len() == 2 => {}
            _ => return false,
        },
        _ => return false,
    }
    true
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

/// Escapes text bytes (already in the message's character set) so that
/// they can stand as one value.
pub fn escape(text: &[u8], d: &Delimiters) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    escape_into(text, d, &mut out);
    out
}

/// [`escape`] appending to `out`, for writers that build a message in one
/// buffer.
pub(crate) fn escape_into(text: &[u8], d: &Delimiters, out: &mut Vec<u8>) {
    for &b in text {
        let seq: &[u8] = match b {
            _ if b == d.field => b"F",
            _ if b == d.component => b"S",
            _ if b == d.subcomponent => b"T",
            _ if b == d.repetition => b"R",
            _ if b == d.escape => b"E",
            _ if Some(b) == d.truncation => b"P",
            b'\r' => b"X0D",
            b'\n' => b"X0A",
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(d.escape);
        out.extend_from_slice(seq);
        out.push(d.escape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        String::from_utf8(unescape(s.as_bytes(), &Delimiters::default()).into_owned()).unwrap()
    }

    #[test]
    fn decodes_each_sequence() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
        assert_eq!(un(r"x\X0D0A\y"), "x\r\ny");
        assert_eq!(un(r"line\.br\next\.sp\end"), "line\nnext\nend");
        assert_eq!(un(r"\H\bold\N\ \.in+4\\.ce\\C2842\ok"), "bold ok");
        assert_eq!(un(r"\P\"), "#");
        assert_eq!(un(r"keep \Zlocal\ as is"), r"keep \Zlocal\ as is");
        assert_eq!(un(r"plain"), "plain");
    }

    #[test]
    fn lenient_keeps_malformed_strict_reports_position() {
        let d = Delimiters::default();
        assert_eq!(un(r"open \X0D never"), r"open \X0D never");
        assert_eq!(unescape_strict(br"open \X0D never", &d), Err(EscapeError::Unterminated { position: 5 }));
        assert_eq!(unescape_strict(br"ab\XZZ\", &d), Err(EscapeError::Unknown { position: 2 }));
        assert_eq!(unescape_strict(br"ab\X0\", &d), Err(EscapeError::Unknown { position: 2 }));
        assert_eq!(un(r"ab\XZZ\cd"), r"ab\XZZ\cd");
    }

    #[test]
    fn local_escapes_are_legal_and_kept_as_written() {
        let d = Delimiters::default();
        let kept = |raw: &[u8]| unescape_strict(raw, &d).map(|v| String::from_utf8_lossy(&v).into_owned());
        assert_eq!(kept(br"a\Zcustom\b"), Ok(r"a\Zcustom\b".to_owned()));
        assert_eq!(kept(br"\Z\\F\"), Ok(r"\Z\|".to_owned()));
        // With the message's own escape character.
        let hash = Delimiters { escape: b'#', ..Delimiters::default() };
        assert_eq!(unescape_strict(b"#Zx1#", &hash).as_deref(), Ok(&b"#Zx1#"[..]));
        // Other unknown sequences are still reported.
        assert_eq!(unescape_strict(br"a\Qx\", &d), Err(EscapeError::Unknown { position: 1 }));
        // The message-wide check (what `parse` warns with) accepts it too.
        let raw = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rOBX|1|TX|||see \\Zcustom\\ here";
        let msg = crate::hl7::Message::parse(raw).unwrap();
        assert_eq!(msg.check_escapes(), Ok(()));
        assert_eq!(msg.text("OBX-5").unwrap().as_deref(), Some(r"see \Zcustom\ here"));
    }

    #[test]
    fn escape_encodes_delimiters_and_line_breaks() {
        let d = Delimiters { truncation: Some(b'#'), ..Delimiters::default() };
        assert_eq!(escape(b"a|b^c&d~e\\f#g\r\n", &d), br"a\F\b\S\c\T\d\R\e\E\f\P\g\X0D\\X0A\".to_vec());
    }
}
