//! The MLLP codec: framing for HL7 v2 over TCP.
//!
//! HL7 v2 messages travel over a plain byte stream, so each message is wrapped
//! in a frame that tells the receiver where it starts and ends:
//!
//! ```text
//! 0x0B <payload> 0x1C 0x0D
//! ```
//!
//! `0x0B` (vertical tab) is the *start block*, `0x1C` (file separator) the
//! *end block*, and the trailing `0x0D` (carriage return) completes the
//! trailer. HL7 v2 payloads are text whose segments are separated by `0x0D`,
//! so a payload may contain carriage returns but never `0x0B` or `0x1C`.
//!
//! [`MllpCodec`] plugs this framing into [`tokio_util::codec`], so a
//! connection can be read as a stream of [`MllpFrame`]s with
//! `Framed::new(stream, MllpCodec::new())`.
//!
//! # Leniency and robustness choices
//!
//! Interface engines talk to many senders, and several of them are not strictly
//! conformant. The decoder is lenient where that costs nothing and strict where
//! leniency would hide data loss:
//!
//! * **End block without CR.** A frame is complete as soon as `0x1C` is seen;
//!   the decoder does not wait for the `0x0D`. Waiting would deadlock against a
//!   sender that omits the CR and then waits for an ACK. If the next byte
//!   (in this read or a later one) is `0x0D`, it is consumed silently as the
//!   rest of the trailer; any other byte is handled normally.
//! * **Junk between frames is reported, never buffered.** Bytes outside a frame
//!   (including a stray `0x1C`, or a `0x0D` not directly after an end block) are
//!   removed from the buffer at once and reported as
//!   [`MllpFrame::Discarded`], so the caller can log them and enforce its own
//!   limit on junk per connection. A peer sending junk therefore cannot make
//!   the decoder hold memory.
//! * **A start block inside a frame restarts framing.** The sender evidently
//!   abandoned the earlier frame (for example after a local timeout), so its
//!   bytes are reported as [`MllpFrame::Discarded`] and the new frame is
//!   decoded normally. Silently splicing the two would corrupt a message.
//! * **Oversized frames are drained, not buffered.** Once a payload exceeds the
//!   configured maximum, only its first [`OVERSIZED_HEAD_LEN`] bytes (at most
//!   the maximum) are kept; the rest is dropped as it arrives while the
//!   decoder looks for the end block. The frame is then reported as
//!   [`MllpFrame::Oversized`] with the head, which normally contains the MSH
//!   segment, so the receiver can still send a negative acknowledgement that
//!   references the message control ID (MSH-10) instead of dropping the
//!   connection. Memory held for one connection is thus bounded by the maximum
//!   frame size plus one read.
//!
//! # Performance
//!
//! The decoder remembers how far it has scanned the current frame, so each
//! received byte is examined once no matter how the stream is split into
//! reads; a 16 MiB frame delivered one byte at a time is decoded in linear
//! time. Searching uses `memchr`.
//!
//! The encoder rejects payloads that would corrupt the stream (containing
//! framing bytes) or that the peer would likely refuse (larger than the
//! maximum frame size) instead of sending them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};
use tokio_util::codec::{Decoder, Encoder};

/// Start block: the byte that opens every MLLP frame (`0x0B`, vertical tab).
pub const START_BLOCK: u8 = 0x0B;

/// End block: the byte that closes an MLLP frame's payload (`0x1C`, file separator).
pub const END_BLOCK: u8 = 0x1C;

/// Carriage return that follows [`END_BLOCK`] to complete a frame's trailer.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Default largest accepted payload, in bytes (16 MiB).
///
/// Generous enough for HL7 messages carrying embedded documents or images
/// (base64 in OBX-5), small enough that a misbehaving peer cannot exhaust
/// memory.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Number of leading payload bytes kept from an oversized frame (capped at the
/// maximum frame size).
///
/// 4 KiB comfortably holds an MSH segment, which is all a receiver needs to
/// address a negative acknowledgement to the rejected message.
pub const OVERSIZED_HEAD_LEN: usize = 4096;

/// Bytes that framing adds around a payload: start block, end block, CR.
const FRAMING_OVERHEAD: usize = 3;

/// One event produced by the [`MllpCodec`] decoder.
///
/// Besides complete messages the decoder reports what it had to drop, so that
/// nothing is lost silently: the caller decides how to log, count and react.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MllpFrame {
    /// A complete payload, without the framing bytes.
    Message(Bytes),
    /// Bytes that were removed from the stream without being delivered.
    ///
    /// This is either junk outside any frame, or a frame that was abandoned
    /// because a new start block arrived before its end block; in the latter
    /// case the count includes the abandoned frame's start block. Junk is
    /// reported as soon as it is seen, so one run of junk split across several
    /// reads may be reported as several events.
    Discarded {
        /// Number of bytes dropped.
        bytes: usize,
    },
    /// A complete frame whose payload exceeded the maximum frame size.
    ///
    /// Only the beginning of the payload is kept, so the receiver can still
    /// identify the message (MSH-10) and reject it with a negative
    /// acknowledgement.
    Oversized {
        /// Total payload length of the frame, in bytes.
        len: usize,
        /// The first `min(OVERSIZED_HEAD_LEN, max_frame_size)` payload bytes.
        head: Bytes,
    },
}

/// Errors from decoding or encoding MLLP frames.
///
/// Messages describe sizes and positions only; they never include payload
/// bytes, which may be protected health information.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MllpError {
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame, so the message is incomplete and must
    /// not be processed or acknowledged.
    #[error("connection closed inside an MLLP frame: {buffered} bytes received since the start block and no end block")]
    Incomplete {
        /// Bytes received for the unterminated frame, including its start block.
        buffered: usize,
    },
    /// An outgoing payload is larger than the configured maximum frame size.
    #[error("outgoing MLLP payload is {len} bytes, exceeding the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// Length of the rejected payload.
        len: usize,
        /// The codec's maximum frame size.
        max: usize,
    },
    /// An outgoing payload contains a start or end block, which would end or
    /// restart the frame early and corrupt the stream for the receiver.
    #[error("outgoing MLLP payload contains framing byte {byte:#04x} at offset {offset}")]
    PayloadContainsFraming {
        /// The offending byte: [`START_BLOCK`] or [`END_BLOCK`].
        byte: u8,
        /// Its position in the payload.
        offset: usize,
    },
}

/// Where the decoder is within the byte stream.
#[derive(Debug)]
enum State {
    /// Outside any frame. Nothing buffered has been examined yet.
    Idle,
    /// Inside a frame whose start block has been consumed. The first `scanned`
    /// buffered bytes are payload already known to contain neither a start
    /// nor an end block, so they are not searched again.
    InFrame { scanned: usize },
    /// Inside a frame whose payload exceeded the maximum. Payload is no longer
    /// buffered: `len` counts it and `head` keeps its beginning.
    Oversized { len: usize, head: Bytes },
}

/// A [`Decoder`] and [`Encoder`] for MLLP frames.
///
/// See the [module documentation](self) for the framing rules and the
/// leniency choices. A codec holds per-connection decoding state, so use one
/// codec per connection.
#[derive(Debug)]
pub struct MllpCodec {
    max_frame_size: usize,
    state: State,
    /// The last frame ended at an end block, so a CR arriving next is the rest
    /// of its trailer rather than junk.
    swallow_cr: bool,
}

impl MllpCodec {
    /// Creates a codec accepting payloads up to [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self { max_frame_size: DEFAULT_MAX_FRAME, state: State::Idle, swallow_cr: false }
    }

    /// Sets the largest payload, in bytes, that is decoded as a message or
    /// accepted for encoding. Longer incoming frames are reported as
    /// [`MllpFrame::Oversized`]; longer outgoing payloads are rejected with
    /// [`MllpError::FrameTooLarge`].
    #[must_use]
    pub fn with_max_frame_size(mut self, max_frame_size: usize) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }

    /// The largest payload, in bytes, accepted in either direction.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// True between a start block and its end block, including while an
    /// oversized frame is being drained (when nothing is buffered), so a
    /// receiver can hold a stalled sender to its read timeout.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Can `payload` be sent as one frame? It must fit the frame limit and
    /// hold no start or end block. Lets a sender set aside a message that
    /// can never be sent before it writes anything.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), MllpError> {
        if payload.len() > self.max_frame_size {
            return Err(MllpError::FrameTooLarge { len: payload.len(), max: self.max_frame_size });
        }
        if let Some(offset) = memchr2(START_BLOCK, END_BLOCK, payload) {
            return Err(MllpError::PayloadContainsFraming { byte: payload[offset], offset });
        }
        Ok(())
    }

    /// Looks for a start block; everything before it is junk.
    fn decode_idle(&mut self, src: &mut BytesMut) -> Option<MllpFrame> {
        match memchr(START_BLOCK, src) {
            Some(0) => {
                src.advance(1);
                self.decode_in_frame(src, 0)
            }
            Some(junk) => {
                // Leave the start block for the next call, which opens the frame.
                src.advance(junk);
                Some(discarded(junk))
            }
            None if src.is_empty() => None,
            None => {
                let junk = src.len();
                src.clear();
                Some(discarded(junk))
            }
        }
    }

    /// Continues a frame whose first `scanned` buffered bytes are known payload.
    fn decode_in_frame(&mut self, src: &mut BytesMut, scanned: usize) -> Option<MllpFrame> {
        // `scanned` never exceeds the buffer for a caller that only appends to
        // it; clamping keeps a misbehaving caller from causing a panic.
        let scanned = scanned.min(src.len());
        match memchr2(START_BLOCK, END_BLOCK, &src[scanned..]) {
            Some(offset) => {
                let end = scanned + offset;
                if src[end] == START_BLOCK {
                    // Leave the new start block for the next call, which opens the frame.
                    src.advance(end);
                    return Some(discarded(end + 1));
                }
                let frame = if end > self.max_frame_size {
                    let head = self.head_of(src);
                    src.advance(end);
                    oversized(end, head, self.max_frame_size)
                } else {
                    MllpFrame::Message(src.split_to(end).freeze())
                };
                self.consume_end_block(src);
                Some(frame)
            }
            None if src.len() > self.max_frame_size => {
                let head = self.head_of(src);
                let len = src.len();
                src.clear();
                self.state = State::Oversized { len, head };
                None
            }
            None => {
                self.state = State::InFrame { scanned: src.len() };
                None
            }
        }
    }

    /// Drains an oversized frame's payload until its end.
    fn decode_oversized(&mut self, src: &mut BytesMut, len: usize, head: Bytes) -> Option<MllpFrame> {
        match memchr2(START_BLOCK, END_BLOCK, src) {
            Some(end) => {
                let len = len.saturating_add(end);
                if src[end] == START_BLOCK {
                    src.advance(end);
                    return Some(discarded(len.saturating_add(1)));
                }
                src.advance(end);
                self.consume_end_block(src);
                Some(oversized(len, head, self.max_frame_size))
            }
            None => {
                let len = len.saturating_add(src.len());
                src.clear();
                self.state = State::Oversized { len, head };
                None
            }
        }
    }

    /// Consumes the end block at the front of `src`, plus the CR completing
    /// the trailer if it has already arrived.
    fn consume_end_block(&mut self, src: &mut BytesMut) {
        src.advance(1);
        self.swallow_cr = true;
        self.swallow_pending_cr(src);
    }

    /// Once the byte after an end block is available, drops it if it is the
    /// trailer's CR. Until then (empty `src`) the decision stays pending.
    fn swallow_pending_cr(&mut self, src: &mut BytesMut) {
        if !self.swallow_cr {
            return;
        }
        if let Some(&next) = src.first() {
            self.swallow_cr = false;
            if next == CARRIAGE_RETURN {
                src.advance(1);
            }
        }
    }

    /// Copies the kept beginning of an oversized payload.
    ///
    /// The head is copied rather than split off so that it does not pin the
    /// (possibly large) read buffer's allocation while the caller holds it.
    fn head_of(&self, payload: &[u8]) -> Bytes {
        let keep = OVERSIZED_HEAD_LEN.min(self.max_frame_size).min(payload.len());
        Bytes::copy_from_slice(&payload[..keep])
    }
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new()
    }
}

fn discarded(bytes: usize) -> MllpFrame {
    tracing::trace!(bytes, "discarding bytes outside an MLLP frame");
    MllpFrame::Discarded { bytes }
}

fn oversized(len: usize, head: Bytes, max: usize) -> MllpFrame {
    tracing::trace!(len, max, "MLLP frame exceeded the maximum frame size");
    MllpFrame::Oversized { len, head }
}

impl Decoder for MllpCodec {
    type Item = MllpFrame;
    type Error = MllpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<MllpFrame>, MllpError> {
        // If the CR is still pending, `src` is empty and the state is `Idle`,
        // so the match below yields `None`.
        self.swallow_pending_cr(src);
        let frame = match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => self.decode_idle(src),
            State::InFrame { scanned } => self.decode_in_frame(src, scanned),
            State::Oversized { len, head } => self.decode_oversized(src, len, head),
        };
        Ok(frame)
    }

    /// Emits the frames still buffered, then reports an unterminated frame as
    /// [`MllpError::Incomplete`]: a truncated message must not be processed.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<MllpFrame>, MllpError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        // Nothing more will arrive: reset so the codec is clean if reused.
        self.swallow_cr = false;
        let buffered = match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => return Ok(None),
            State::InFrame { .. } => src.len().saturating_add(1),
            State::Oversized { len, .. } => len.saturating_add(1),
        };
        src.clear();
        Err(MllpError::Incomplete { buffered })
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    /// Appends `payload` as one frame. On error `dst` is left unchanged.
    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), MllpError> {
        self.check_payload(payload)?;
        dst.reserve(payload.len() + FRAMING_OVERHEAD);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = MllpError;

    /// Appends `payload` as one frame. On error `dst` is left unchanged.
    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), MllpError> {
        self.encode(payload.as_ref(), dst)
    }
}
