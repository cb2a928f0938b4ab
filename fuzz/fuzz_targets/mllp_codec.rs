//! Feeds an arbitrary byte stream to the MLLP decoder in reads of varying
//! size, the way `FramedRead` drives it, and checks it against a simple
//! model that sees the whole stream at once.
//!
//! Input layout: byte 0 chooses how the stream is split into reads, byte 1
//! a small maximum frame size for a second decoder (so that oversized
//! frames are reached with short inputs); the rest is the stream.
//!
//! Checked beyond "no panic":
//! - the buffer never holds more than the maximum frame size plus one read
//!   (plus a few framing bytes), and no more than the maximum frame size
//!   once the decoder has nothing more to return;
//! - message payloads hold no start or end block and fit the maximum;
//! - how the stream is split into reads changes nothing: the messages, the
//!   oversized frames, the total of discarded bytes and the final
//!   incomplete frame are those of the model;
//! - every decoded message encodes and decodes back to itself.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard::mllp::{END_BLOCK, MllpCodec, MllpError, MllpFrame, OVERSIZED_HEAD_LEN, START_BLOCK};
use tokio_util::codec::{Decoder, Encoder};

const MAX_FRAME: usize = 4096;
/// Slack for framing bytes around a payload.
const SLACK: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&[split, small_max], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    for max in [MAX_FRAME, usize::from(small_max % 32)] {
        let expected = model(stream, max);
        let got = decode_in_reads(stream, max, split);
        assert_eq!(got, expected, "max frame size {max}, split {split}");
    }

    // Encoding refuses exactly the payloads that would break framing.
    let mut codec = MllpCodec::new().with_max_frame_size(MAX_FRAME);
    let mut dst = BytesMut::from(&b"prefix"[..]);
    let framing = stream.iter().any(|&b| b == START_BLOCK || b == END_BLOCK);
    match codec.encode(stream, &mut dst) {
        Ok(()) => {
            assert!(!framing && stream.len() <= MAX_FRAME);
            assert_eq!(dst.len(), b"prefix".len() + stream.len() + 3);
        }
        Err(MllpError::FrameTooLarge { .. }) => {
            assert!(stream.len() > MAX_FRAME);
            assert_eq!(&dst[..], b"prefix");
        }
        Err(MllpError::PayloadContainsFraming { byte, offset }) => {
            assert!(framing && stream.len() <= MAX_FRAME);
            assert_eq!(stream[offset], byte);
            assert_eq!(&dst[..], b"prefix");
        }
        Err(e) => panic!("unexpected encode error {e}"),
    }
});

/// What a decoder reports over a whole stream, with discarded bytes summed
/// (one run of junk may be reported in several parts).
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    discarded: usize,
    incomplete: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Message(Vec<u8>),
    Oversized { len: usize, head: Vec<u8> },
}

/// The framing rules of the codec's documentation, applied to the whole
/// stream at once.
fn model(stream: &[u8], max: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut frame_start: Option<usize> = None;
    let mut after_end_block = false;
    for (i, &b) in stream.iter().enumerate() {
        match frame_start {
            None => {
                if std::mem::take(&mut after_end_block) && b == b'\r' {
                    continue;
                }
                if b == START_BLOCK {
                    frame_start = Some(i + 1);
                } else {
                    out.discarded += 1;
                }
            }
            Some(start) => {
                if b == START_BLOCK {
                    // The abandoned frame and its start block.
                    out.discarded += i - start + 1;
                    frame_start = Some(i + 1);
                } else if b == END_BLOCK {
                    let payload = &stream[start..i];
                    out.frames.push(if payload.len() > max {
                        let keep = OVERSIZED_HEAD_LEN.min(max);
                        Frame::Oversized { len: payload.len(), head: payload[..keep].to_vec() }
                    } else {
                        Frame::Message(payload.to_vec())
                    });
                    frame_start = None;
                    after_end_block = true;
                }
            }
        }
    }
    out.incomplete = frame_start.map(|start| stream.len() - start + 1);
    out
}

/// Read sizes from a small generator seeded by `split`: 0 delivers the
/// stream in one read, other values mix short reads with long ones.
fn read_sizes(split: u8) -> impl FnMut() -> usize {
    let mut state = u32::from(split) | 0x100;
    let limit = match split % 4 {
        0 => usize::MAX,
        1 => 1,
        2 => 16,
        _ => 2 * MAX_FRAME,
    };
    move || {
        if limit == usize::MAX {
            return usize::MAX;
        }
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as usize % limit) + 1
    }
}

fn decode_in_reads(stream: &[u8], max: usize, split: u8) -> Outcome {
    let mut codec = MllpCodec::new().with_max_frame_size(max);
    let mut buf = BytesMut::new();
    let mut out = Outcome::default();
    let mut next_size = read_sizes(split);
    let mut rest = stream;
    while !rest.is_empty() {
        let (read, tail) = rest.split_at(next_size().min(rest.len()));
        rest = tail;
        buf.extend_from_slice(read);
        assert!(
            buf.len() <= max + read.len() + SLACK,
            "buffer holds {} bytes after a read of {} (max frame {max})",
            buf.len(),
            read.len()
        );
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => record(&mut out, frame, max),
                Ok(None) => break,
                Err(e) => panic!("decode failed: {e}"),
            }
            assert!(buf.len() <= max + read.len() + SLACK);
        }
        assert!(buf.len() <= max + SLACK, "buffer holds {} bytes while waiting (max frame {max})", buf.len());
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => record(&mut out, frame, max),
            Ok(None) => break,
            Err(MllpError::Incomplete { buffered }) => {
                out.incomplete = Some(buffered);
                break;
            }
            Err(e) => panic!("decode_eof failed: {e}"),
        }
    }
    assert!(buf.is_empty(), "{} bytes left in the buffer at the end of the stream", buf.len());
    out
}

fn record(out: &mut Outcome, frame: MllpFrame, max: usize) {
    match frame {
        MllpFrame::Message(payload) => {
            assert!(!payload.iter().any(|&b| b == START_BLOCK || b == END_BLOCK), "payload holds a framing byte");
            assert!(payload.len() <= max, "payload of {} bytes exceeds the maximum {max}", payload.len());
            round_trip(&payload, max);
            out.frames.push(Frame::Message(payload.to_vec()));
        }
        MllpFrame::Oversized { len, head } => {
            assert!(len > max);
            assert!(head.len() <= OVERSIZED_HEAD_LEN.min(max));
            out.frames.push(Frame::Oversized { len, head: head.to_vec() });
        }
        MllpFrame::Discarded { bytes } => {
            assert!(bytes > 0, "empty discard reported");
            out.discarded += bytes;
        }
    }
}

/// A decoded payload, encoded again, decodes to itself.
fn round_trip(payload: &Bytes, max: usize) {
    let mut codec = MllpCodec::new().with_max_frame_size(max);
    let mut wire = BytesMut::new();
    codec.encode(payload.clone(), &mut wire).expect("a decoded payload can be encoded");
    let frame = codec.decode_eof(&mut wire).expect("an encoded frame decodes");
    assert_eq!(frame, Some(MllpFrame::Message(payload.clone())));
    assert!(wire.is_empty());
    assert!(matches!(codec.decode_eof(&mut wire), Ok(None)));
}
