//! Files of HL7 messages as `parse` and `send` read them.
//!
//! Both commands split a file the same way and report a bad one with the
//! same words (the file, the message, the byte position in the file, what
//! is wrong), so that what `parse` says about a file is what `send` would
//! refuse it for.
//!
//! A line ending of any kind (CR, LF or CR LF) ends a segment and empty
//! lines are skipped, so a message saved by a text editor reads the same
//! as one written with CRs.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;

use crate::hl7::{Batch, Message, split_batch};

/// The file name that means standard input.
const STDIN: &str = "-";

/// A file of messages, read whole.
pub(super) struct Input {
    /// How messages name it: the path as given, or `<stdin>`.
    pub name: String,
    /// What it holds.
    pub bytes: Vec<u8>,
}

impl Input {
    /// Reads `path`, or standard input when it is `-`.
    pub(super) fn read(path: &Path) -> anyhow::Result<Self> {
        if path == Path::new(STDIN) {
            let mut bytes = Vec::new();
            std::io::stdin().lock().read_to_end(&mut bytes).context("cannot read standard input")?;
            return Ok(Self { name: "<stdin>".to_owned(), bytes });
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self { name: path.display().to_string(), bytes })
    }

    /// The messages of the file: one, several back to back, or a batch.
    pub(super) fn messages(&self) -> anyhow::Result<Batch<'_>> {
        match split_batch(&self.bytes) {
            Ok(batch) => Ok(batch),
            // Not a batch either: the single-message parser says best what
            // is wrong (no MSH where one was expected, a broken header).
            Err(e) => match Message::parse(&self.bytes) {
                Err(parse) => anyhow::bail!("{}: {parse}", self.name),
                Ok(_) => anyhow::bail!("{}: {e}", self.name),
            },
        }
    }

    /// Parses message `index` (from 0) of `batch`; the error names the file
    /// and the message, with positions counted from the start of the file.
    pub(super) fn parse<'b>(&self, batch: &Batch<'b>, index: usize) -> anyhow::Result<Message<'b>> {
        let (Some(raw), Some(&offset)) = (batch.messages.get(index), batch.offsets.get(index)) else {
            anyhow::bail!("{}: there is no message {}", self.name, index + 1);
        };
        Message::parse(raw).map_err(|e| anyhow::anyhow!("{}: message {}: {}", self.name, index + 1, e.shifted(offset)))
    }
}
