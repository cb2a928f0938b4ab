//! HL7 batch files: `FHS` / `BHS` … messages … `BTS` / `FTS`.

use memchr::memchr2;
use thiserror::Error;

use super::{Delimiters, ParseError};

/// The messages of a batch file, with the counts its trailers declare.
///
/// Also accepts a plain file of several messages back to back (no batch
/// headers), which is what most systems write when they "batch".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The `FHS` segment, if any.
    pub file_header: Option<&'a [u8]>,
    /// The `BHS` segments in order.
    pub batch_headers: Vec<&'a [u8]>,
    /// Each message's raw bytes, including its segment terminators.
    pub messages: Vec<&'a [u8]>,
    /// The byte offset of each message in the file (parallel to `messages`).
    pub offsets: Vec<usize>,
    /// The sum of `BTS-1` (message counts) over all batches, if declared.
    pub declared_messages: Option<usize>,
    /// `FTS-1` (batch count), if declared.
    pub declared_batches: Option<usize>,
}

impl Batch<'_> {
    /// True when the trailers declare counts that do not match what the file
    /// holds (a truncated or hand-edited file).
    pub fn counts_mismatch(&self) -> bool {
        self.declared_messages.is_some_and(|n| n != self.messages.len())
            || self.declared_batches.is_some_and(|n| n != self.batch_headers.len())
    }
}

/// Why a batch file could not be split.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// The file has no message at all.
    #[error("no MSH segment found: the file holds no message")]
    NoMessages,
    /// A segment outside any message that is not a batch header or trailer.
    #[error("segment at byte {position} is outside any message and is not FHS, BHS, BTS or FTS")]
    StraySegment {
        /// Offset of the segment.
        position: usize,
    },
    /// A trailer count that is not a number.
    #[error("{segment}-1 at byte {position} is not a count")]
    BadCount {
        /// `BTS` or `FTS`.
        segment: &'static str,
        /// Offset of the segment.
        position: usize,
    },
    /// A header segment with unusable delimiters.
    #[error(transparent)]
    Header(#[from] ParseError),
}

/// Splits a batch file (or a file of messages back to back) into messages.
///
/// Each message is returned as a slice of the input, so its bytes are
/// exactly those of the file.
pub fn split_batch(raw: &[u8]) -> Result<Batch<'_>, BatchError> {
    let mut batch = Batch::default();
    let mut delimiters = Delimiters::default();
    let mut current: Option<usize> = None;
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr2(b'\r', b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i);
        let next = (end + 1).min(raw.len());
        let segment = &raw[pos..end];
        let id = segment.get(..3).unwrap_or(segment);
        match id {
            b"" => {}
            b"MSH" => {
                if let Some(start) = current.take() {
                    batch.messages.push(&raw[start..pos]);
                    batch.offsets.push(start);
                }
                current = Some(pos);
            }
            b"FHS" | b"BHS" => {
                if let Some(start) = current.take() {
                    batch.messages.push(&raw[start..pos]);
                    batch.offsets.push(start);
                }
                delimiters = Delimiters::from_header(segment, pos)?.0;
                if id == b"FHS" {
                    batch.file_header = Some(segment);
                } else {
                    batch.batch_headers.push(segment);
                }
            }
            b"BTS" | b"FTS" => {
                if let Some(start) = current.take() {
                    batch.messages.push(&raw[start..pos]);
                    batch.offsets.push(start);
                }
                let name = if id == b"BTS" { "BTS" } else { "FTS" };
                let count = first_field(segment, delimiters.field, delimiters.component)
                    .map(|v| {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse::<usize>().ok())
                            .ok_or(BatchError::BadCount { segment: name, position: pos })
                    })
                    .transpose()?;
                if name == "BTS" {
                    if let Some(n) = count {
                        let total = batch.declared_messages.unwrap_or(0).checked_add(n);
                        batch.declared_messages =
                            Some(total.ok_or(BatchError::BadCount { segment: name, position: pos })?);
                    }
                } else {
                    batch.declared_batches = count;
                }
            }
            _ if current.is_some() => {}
            _ => return Err(BatchError::StraySegment { position: pos }),
        }
        pos = next;
    }
    if let Some(start) = current {
        batch.messages.push(&raw[start..]);
        batch.offsets.push(start);
    }
    if batch.messages.is_empty() {
        return Err(BatchError::NoMessages);
    }
    Ok(batch)
}

/// The first component of field 1 of a trailer segment, if not empty.
fn first_field(segment: &[u8], field: u8, component: u8) -> Option<&[u8]> {
    let rest = segment.get(4..)?;
    let value = rest.split(|&b| b == field).next()?;
    let value = value.split(|&b| b == component).next()?;
    (!value.is_empty()).then_some(value)
}
