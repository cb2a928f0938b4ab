//! The separator and encoding characters a message declares in MSH-1/MSH-2.

use super::ParseError;

/// The characters that give a message its structure.
///
/// HL7 lets every message choose its own: `|^~\&` is only the convention.
/// Version 2.7 added an optional fifth encoding character, the truncation
/// character (`#` by convention), which this type keeps when present so that
/// it can be escaped (`\P\`) when values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Separates fields (MSH-1).
    pub field: u8,
    /// Separates components (first character of MSH-2).
    pub component: u8,
    /// Separates repetitions of a field (second character of MSH-2).
    pub repetition: u8,
    /// Introduces and closes escape sequences (third character of MSH-2).
    pub escape: u8,
    /// Separates subcomponents (fourth character of MSH-2).
    pub subcomponent: u8,
    /// The v2.7+ truncation character (optional fifth character of MSH-2).
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self { field: b'|', component: b'^', repetition: b'~', escape: b'\\', subcomponent: b'&', truncation: None }
    }
}

impl Delimiters {
    /// Reads the delimiters from the start of a header segment (`MSH`, `FHS`
    /// or `BHS`): byte 3 is the field separator, then 4 or 5 encoding
    /// characters up to the next field separator or the end of the segment.
    ///
    /// `segment` is the header segment without its terminator; `offset` is its
    /// position in the message, used for error positions.
    pub(crate) fn from_header(segment: &[u8], offset: usize) -> Result<(Self, usize), ParseError> {
        let Some(&field) = segment.get(3) else {
            return Err(ParseError::TruncatedHeader { position: offset + segment.len() });
        };
        let encoding = &segment[4..];
        let len = encoding.iter().position(|&b| b == field).unwrap_or(encoding.len());
        let chars = &encoding[..len];
        if chars.len() < 4 {
            return Err(ParseError::TruncatedHeader { position: offset + 4 + chars.len() });
        }
        if chars.len() > 5 {
            return Err(ParseError::InvalidDelimiters {
                position: offset + 4 + 5,
                reason: "MSH-2 holds more than 5 encoding characters",
            });
        }
        let delimiters = Self {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
            truncation: chars.get(4).copied(),
        };
        delimiters.validate(offset + 3)?;
        Ok((delimiters, len))
    }

    fn validate(&self, position: usize) -> Result<(), ParseError> {
        let all = self.as_array();
        let used = &all[..if self.truncation.is_some() { 6 } else { 5 }];
        for (i, &b) in used.iter().enumerate() {
            if !(0x21..=0x7e).contains(&b) || b.is_ascii_alphanumeric() {
                return Err(ParseError::InvalidDelimiters {
                    position: position + i,
                    reason: "delimiters must be printable ASCII punctuation",
                });
            }
            if used[..i].contains(&b) {
                return Err(ParseError::InvalidDelimiters {
                    position: position + i,
                    reason: "the same character is declared for two delimiters",
                });
            }
        }
        Ok(())
    }

    fn as_array(&self) -> [u8; 6] {
        [self.field, self.component, self.repetition, self.escape, self.subcomponent, self.truncation.unwrap_or(0)]
    }

    /// MSH-2 as it appears in a message using these delimiters.
    pub fn encoding_characters(&self) -> Vec<u8> {
        let mut v = vec![self.component, self.repetition, self.escape, self.subcomponent];
        v.extend(self.truncation);
        v
    }
}
