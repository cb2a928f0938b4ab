//! Editing: an owned message whose values can be set, copied and cleared by
//! path.

use thiserror::Error;

use super::charset::EncodeError;
use super::message::Insertion;
use super::{Delimiters, Message, ParseError, Path, PathError, escape};

/// Why an edit was refused. The message is left unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EditError {
    /// The path is not valid notation.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The message has no such segment; edits do not create segments.
    #[error("the message has no segment {0}")]
    NoSuchSegment(String),
    /// A path built in code with a 0 or with a subcomponent but no
    /// component (see [`Path::is_valid`]).
    #[error("{0} is not a valid path: numbers start at 1 and a subcomponent needs a component")]
    InvalidPath(String),
    /// MSH-1 and MSH-2 define the delimiters and cannot be edited by path.
    #[error("{0} holds the message's delimiters and cannot be edited")]
    Delimiters(String),
    /// A raw value holds a line ending or a delimiter of the level it is
    /// written to (or a higher one), which would change the structure.
    #[error("raw value for {path} contains a segment ending or a delimiter that would split {path}")]
    RawValueBreaksStructure {
        /// The target path.
        path: String,
    },
    /// The text cannot be written in the message's character set.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The edit produced bytes that no longer parse (cannot happen for
    /// values that passed the checks above; kept so that it is never a panic).
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// An owned, editable message.
///
/// Every edit splices the bytes of one value and leaves all other bytes as
/// they were, so an edited message differs from the original only where it
/// was edited. Missing fields, repetitions, components and subcomponents are
/// created with empty siblings; missing segments are not.
///
/// ```
/// use switchboard::hl7::MessageBuf;
///
/// let mut buf = MessageBuf::new(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1".to_vec())?;
/// buf.set("PID-5[2].2", "JOHNNY")?;
/// buf.set("MSH-10", "2")?;
/// assert_eq!(buf.as_bytes(), b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|2|P|2.5\rPID|1||||~^JOHNNY");
/// # Ok::<(), switchboard::hl7::EditError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MessageBuf {
    raw: Vec<u8>,
    delimiters: Delimiters,
}

impl MessageBuf {
    /// Takes ownership of a message's bytes, checking that they parse.
    pub fn new(raw: Vec<u8>) -> Result<Self, ParseError> {
        let delimiters = *Message::parse(&raw)?.delimiters();
        Ok(Self { raw, delimiters })
    }

    /// A parsed view of the current bytes.
    pub fn message(&self) -> Message<'_> {
        // Invariant: `new` checks that the bytes parse, and every edit parses
        // its result before it replaces them.
        Message::parse(&self.raw).expect("MessageBuf always holds a parsable message")
    }

    /// The current bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes, consuming the buffer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.raw
    }

    /// Sets the value at `path` to `text`, escaping delimiters and encoding
    /// it in the message's character set.
    pub fn set(&mut self, path: &str, text: &str) -> Result<(), EditError> {
        let path: Path = path.parse()?;
        self.set_path(&path, text)
    }

    /// [`set`](Self::set) with a parsed path.
    pub fn set_path(&mut self, path: &Path, text: &str) -> Result<(), EditError> {
        let encoded = {
            let msg = Message::parse(&self.raw)?;
            let bytes = msg.charset().encode(text)?;
            escape::escape(&bytes, &self.delimiters)
        };
        self.splice(path, &encoded)
    }

    /// Sets raw (already escaped) bytes at `path`, e.g. to copy a composite
    /// value between fields. Refuses bytes that would change the structure
    /// around the target.
    pub fn set_raw(&mut self, path: &Path, raw: &[u8]) -> Result<(), EditError> {
        let d = self.delimiters;
        let forbidden: &[u8] = match (path.repetition, path.component, path.subcomponent) {
            (_, _, Some(_)) => &[d.field, d.repetition, d.component, d.subcomponent],
            (_, Some(_), None) => &[d.field, d.repetition, d.component],
            (Some(_), None, None) => &[d.field, d.repetition],
            (None, None, None) => &[d.field],
        };
        if raw.iter().any(|b| *b == b'\r' || *b == b'\n' || forbidden.contains(b)) {
            return Err(EditError::RawValueBreaksStructure { path: path.to_string() });
        }
        self.splice(path, raw)
    }

    /// Copies the raw value at `from` to `to` (an absent source clears the
    /// target).
    pub fn copy(&mut self, from: &Path, to: &Path) -> Result<(), EditError> {
        let value = Message::parse(&self.raw)?.get(from).map(<[u8]>::to_vec).unwrap_or_default();
        self.set_raw(to, &value)
    }

    /// Empties the value at `path`; a value that is absent stays absent.
    pub fn clear(&mut self, path: &Path) -> Result<(), EditError> {
        if Message::parse(&self.raw)?.get(path).is_some() { self.splice(path, b"") } else { Ok(()) }
    }

    fn splice(&mut self, path: &Path, value: &[u8]) -> Result<(), EditError> {
        if !path.is_valid() {
            return Err(EditError::InvalidPath(path.to_string()));
        }
        if path.segment_id() == "MSH" && path.field <= 2 {
            return Err(EditError::Delimiters(path.to_string()));
        }
        let insertion = Message::parse(&self.raw)?
            .insertion_point(path)
            .ok_or_else(|| EditError::NoSuchSegment(format!("{}[{}]", path.segment_id(), path.segment_occurrence)))?;
        let d = self.delimiters;
        let mut edited = Vec::with_capacity(self.raw.len() + value.len() + 8);
        match insertion {
            Insertion::Replace(span) => {
                edited.extend_from_slice(&self.raw[..span.start as usize]);
                edited.extend_from_slice(value);
                edited.extend_from_slice(&self.raw[span.end as usize..]);
            }
            Insertion::Append { at, missing } => {
                edited.extend_from_slice(&self.raw[..at]);
                for (sep, n) in [d.field, d.repetition, d.component, d.subcomponent].into_iter().zip(missing) {
                    edited.extend(std::iter::repeat_n(sep, n));
                }
                edited.extend_from_slice(value);
                edited.extend_from_slice(&self.raw[at..]);
            }
        }
        Message::parse(&edited)?;
        self.raw = edited;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &[u8] = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||X^^^H^MR||DOE^JOHN\rOBX|1\rOBX|2";

    fn edited(path: &str, value: &str) -> String {
        let mut buf = MessageBuf::new(BASE.to_vec()).unwrap();
        buf.set(path, value).unwrap();
        String::from_utf8(buf.into_bytes()).unwrap()
    }

    #[test]
    fn set_replaces_and_creates() {
        assert!(edited("PID-5.1", "ROE").contains("PID|1||X^^^H^MR||ROE^JOHN\r"));
        assert!(edited("PID-5", "A^B").contains("||A\\S\\B\r"));
        assert!(edited("PID-8", "M").ends_with("PID|1||X^^^H^MR||DOE^JOHN|||M\rOBX|1\rOBX|2"));
        assert!(edited("PID-3[3].4.2", "9.9").contains("PID|1||X^^^H^MR~~^^^&9.9||"));
        assert!(edited("PID-3.4.3", "ISO").contains("X^^^H&&ISO^MR"));
        assert!(edited("PID-3.7", "Z").contains("X^^^H^MR^^Z"));
        assert!(edited("OBX[2]-5", "v").ends_with("OBX|1\rOBX|2||||v"));
        assert!(edited("MSH-10", "NEW").contains("|ADT^A01|NEW|P|"));
    }

    #[test]
    fn refuses_what_would_break_structure() {
        let mut buf = MessageBuf::new(BASE.to_vec()).unwrap();
        assert!(matches!(buf.set("MSH-2", "x"), Err(EditError::Delimiters(_))));
        assert!(matches!(buf.set("ZZZ-1", "x"), Err(EditError::NoSuchSegment(_))));
        for bad in [
            Path::field("PID", 5).repetition(0),
            Path::field("PID", 9).component(0),
            Path::field("PID", 9).subcomponent(2),
        ] {
            assert!(matches!(buf.set_path(&bad, "x"), Err(EditError::InvalidPath(_))), "{bad:?}");
        }
        let path: Path = "PID-5.1".parse().unwrap();
        assert!(matches!(buf.set_raw(&path, b"A^B"), Err(EditError::RawValueBreaksStructure { .. })));
        assert!(matches!(buf.set_raw(&path, b"A\rB"), Err(EditError::RawValueBreaksStructure { .. })));
        assert_eq!(buf.as_bytes(), BASE);
    }

    #[test]
    fn copy_and_clear() {
        let mut buf = MessageBuf::new(BASE.to_vec()).unwrap();
        buf.copy(&"PID-5".parse().unwrap(), &"PID-9".parse().unwrap()).unwrap();
        buf.clear(&"PID-5.2".parse().unwrap()).unwrap();
        buf.clear(&"PID-30".parse().unwrap()).unwrap();
        let msg = buf.message();
        assert_eq!(msg.get(&"PID-9".parse().unwrap()), Some(&b"DOE^JOHN"[..]));
        assert_eq!(msg.get(&"PID-5".parse().unwrap()), Some(&b"DOE^"[..]));
        assert_eq!(msg.get(&"PID-30".parse().unwrap()), None);
    }
}
