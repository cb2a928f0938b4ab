//! Character sets named in MSH-18.
//!
//! Raw bytes are always stored and forwarded unchanged; the character set
//! only matters when a value is turned into text (or text into a value).

use std::borrow::Cow;

use thiserror::Error;

/// The character set a message declares in MSH-18.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Charset {
    /// No MSH-18. The standard says ASCII; since senders that leave it empty
    /// routinely send UTF-8, text is decoded as UTF-8 (a superset of ASCII)
    /// with invalid bytes replaced by U+FFFD.
    #[default]
    Unspecified,
    /// `ASCII`.
    Ascii,
    /// `8859/1` (ISO-8859-1, Latin-1).
    Latin1,
    /// `UNICODE UTF-8` (and the common non-standard `UTF-8`).
    Utf8,
    /// Any other name. Decoded like [`Charset::Unspecified`]; the name is
    /// kept so that callers can report it.
    Other(String),
}

/// Text that the message's character set cannot represent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("character U+{code_point:04X} at offset {position} cannot be written in {charset}")]
pub struct EncodeError {
    /// The character that does not fit.
    pub code_point: u32,
    /// Its byte offset in the text.
    pub position: usize,
    /// The MSH-18 name of the character set.
    pub charset: &'static str,
}

impl Charset {
    /// Reads an MSH-18 value (one repetition).
    pub fn from_msh18(value: &[u8]) -> Self {
        match value.trim_ascii() {
            b"" => Self::Unspecified,
            b"ASCII" => Self::Ascii,
            b"8859/1" => Self::Latin1,
            b"UNICODE UTF-8" | b"UTF-8" | b"UTF8" => Self::Utf8,
            other => Self::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// Bytes in this character set to text.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        match self {
            Self::Latin1 if !bytes.is_ascii() => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
            _ => String::from_utf8_lossy(bytes),
        }
    }

    /// Text to bytes in this character set.
    pub fn encode<'a>(&self, text: &'a str) -> Result<Cow<'a, [u8]>, EncodeError> {
        let (limit, name) = match self {
            Self::Latin1 => (0xFF, "8859/1"),
            Self::Ascii => (0x7F, "ASCII"),
            _ => return Ok(Cow::Borrowed(text.as_bytes())),
        };
        if text.is_ascii() {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        text.char_indices()
            .map(|(position, c)| {
                u8::try_from(u32::from(c)).ok().filter(|&b| u32::from(b) <= limit).ok_or(EncodeError {
                    code_point: c.into(),
                    position,
                    charset: name,
                })
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_round_trip_and_limits() {
        let cs = Charset::from_msh18(b"8859/1");
        assert_eq!(cs, Charset::Latin1);
        assert_eq!(cs.decode(b"M\xfcller"), "Müller");
        assert_eq!(cs.encode("Jürgen").unwrap().as_ref(), b"J\xfcrgen");
        assert_eq!(cs.encode("a€").unwrap_err().position, 1);
        assert!(Charset::Ascii.encode("ü").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Charset::from_msh18(b"UNICODE UTF-8"), Charset::Utf8);
        assert_eq!(Charset::from_msh18(b""), Charset::Unspecified);
        assert_eq!(Charset::from_msh18(b"ISO IR87"), Charset::Other("ISO IR87".into()));
    }
}
