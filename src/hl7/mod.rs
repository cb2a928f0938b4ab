//! HL7 v2: parsing, path access, escapes, character sets, batches and ACKs.
//!
//! The parser works on raw bytes and never changes them: what was received
//! is what is stored and forwarded. Structure is read from the delimiters the
//! message declares in MSH-1/MSH-2 (custom ones and the v2.7 truncation
//! character included); text is decoded only when a value is asked for, with
//! the character set of MSH-18.
//!
//! ```
//! use switchboard::hl7::{AckBuilder, AckCode, Message, MessageBuf, Reply};
//!
//! let raw = b"MSH|^~\\&|REG|HOSP|LAB|LAB|20261128094512||ADT^A01|MSG1|P|2.5.1\rPID|1||123^^^HOSP^MR||DOE^JOHN";
//! let msg = Message::parse(raw)?;
//! assert_eq!(msg.text("PID-5.2")?.as_deref(), Some("JOHN"));
//!
//! // Edit: values are escaped on the way in.
//! let mut buf = MessageBuf::new(raw.to_vec())?;
//! buf.set("PID-5.2", "JOHN & JANE")?;
//! assert_eq!(buf.message().get(&"PID-5.2".parse()?), Some(&b"JOHN \\T\\ JANE"[..]));
//!
//! // Acknowledge.
//! let ack = AckBuilder::new(&msg, AckCode::AA).build();
//! let reply = Reply::read(&Message::parse(&ack)?);
//! assert_eq!(reply.acknowledgment_code(), Some("AA"));
//! assert_eq!(reply.acknowledged_control_id(), Some("MSG1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ack;
mod batch;
pub mod charset;
mod delimiters;
mod edit;
pub mod escape;
mod message;
mod outline;
mod path;

use thiserror::Error;

pub use ack::{AckBuilder, AckCode, AckError, ErrDetail, HeaderError, Hl7ErrorCode, Reply, Severity, check_header};
pub use batch::{Batch, BatchError, split_batch};
pub use charset::Charset;
pub use delimiters::Delimiters;
pub use edit::{EditError, MessageBuf};
pub use escape::EscapeError;
pub use message::{Component, Field, Message, Repetition, Segment};
pub use outline::{OutlineLine, outline, segment_paths};
pub use path::{Path, PathError};

/// Why bytes are not an HL7 message. Positions are byte offsets into the
/// input; no message content is ever included, so errors are safe to log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// No bytes, or only line endings.
    #[error("message is empty")]
    Empty,
    /// The first segment is not MSH.
    #[error("message must start with an MSH segment, found {found:?} at byte {position}")]
    MissingMsh {
        /// Offset of the first segment.
        position: usize,
        /// Its first (up to three) characters, with non-printable bytes escaped.
        found: String,
    },
    /// MSH ends before the field separator and four encoding characters.
    #[error(
        "MSH segment ends at byte {position} before its encoding characters are complete (MSH-1 and four characters in MSH-2, e.g. MSH|^~\\&)"
    )]
    TruncatedHeader {
        /// Offset where the header ends.
        position: usize,
    },
    /// MSH-1/MSH-2 declare unusable delimiters.
    #[error("invalid delimiter at byte {position}: {reason}")]
    InvalidDelimiters {
        /// Offset of the offending character.
        position: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A segment does not start with three capital letters or digits followed
    /// by the field separator.
    #[error(
        "segment at byte {position} does not start with a 3-character segment id (capital letters and digits) and the field separator"
    )]
    InvalidSegmentId {
        /// Offset of the segment.
        position: usize,
    },
    /// Larger than the index can address: 4 GiB, or about 850 million
    /// subcomponents (a message of little else than delimiters).
    #[error("message of {len} bytes is larger than 4 GiB or has more than 850 million subcomponents")]
    TooLarge {
        /// Size of the input.
        len: usize,
    },
}

impl ParseError {
    /// The byte offset the error refers to (0 for errors about the whole
    /// input).
    pub fn position(&self) -> usize {
        match *self {
            Self::MissingMsh { position, .. }
            | Self::TruncatedHeader { position }
            | Self::InvalidDelimiters { position, .. }
            | Self::InvalidSegmentId { position } => position,
            Self::Empty | Self::TooLarge { .. } => 0,
        }
    }

    /// The same error with its position moved by `by` bytes: for a message
    /// parsed out of a larger file, so that the position is the file's.
    pub fn shifted(self, by: usize) -> Self {
        match self {
            Self::MissingMsh { position, found } => Self::MissingMsh { position: position.saturating_add(by), found },
            Self::TruncatedHeader { position } => Self::TruncatedHeader { position: position.saturating_add(by) },
            Self::InvalidDelimiters { position, reason } => {
                Self::InvalidDelimiters { position: position.saturating_add(by), reason }
            }
            Self::InvalidSegmentId { position } => Self::InvalidSegmentId { position: position.saturating_add(by) },
            Self::Empty | Self::TooLarge { .. } => self,
        }
    }
}

/// The first characters of a segment, made safe to print.
fn printable_id(segment: &[u8]) -> String {
    segment.iter().take(3).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}
