//! Tests for the MLLP codec, using only its public API.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use switchboard::mllp::{
    CARRIAGE_RETURN, DEFAULT_MAX_FRAME, END_BLOCK, MllpCodec, MllpError, MllpFrame, OVERSIZED_HEAD_LEN, START_BLOCK,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder, Framed};

const ADT_A01: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG00001|P|2.5\r\
PID|1||12345^^^HOSP^MR||DOE^JANE\r";
const ORU_R01: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120500||ORU^R01|MSG00002|P|2.5\r\
OBX|1|NM|GLU^Glucose||5.4|mmol/L\r";

/// Wraps `payload` in MLLP framing.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    out
}

fn message(payload: &[u8]) -> MllpFrame {
    MllpFrame::Message(Bytes::copy_from_slice(payload))
}

/// Calls `decode` until it asks for more data.
fn decode_all(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<MllpFrame> {
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(buf).expect("decode never fails") {
        frames.push(frame);
    }
    frames
}

/// Calls `decode_eof` until the stream is exhausted.
fn decode_all_eof(codec: &mut MllpCodec, buf: &mut BytesMut) -> Result<Vec<MllpFrame>, MllpError> {
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_eof(buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Feeds `input` in chunks of `chunk` bytes, collecting every event.
fn decode_chunked(codec: &mut MllpCodec, input: &[u8], chunk: usize) -> Vec<MllpFrame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        frames.extend(decode_all(codec, &mut buf));
    }
    frames
}

#[test]
fn constructor_and_builder_set_max_frame_size() {
    assert_eq!(DEFAULT_MAX_FRAME, 16 * 1024 * 1024);
    assert_eq!(MllpCodec::new().max_frame_size(), DEFAULT_MAX_FRAME);
    assert_eq!(MllpCodec::default().max_frame_size(), DEFAULT_MAX_FRAME);
    assert_eq!(MllpCodec::new().with_max_frame_size(1024).max_frame_size(), 1024);
}

#[test]
fn decodes_single_frame() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&frame(ADT_A01)[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(ADT_A01)));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn decodes_empty_payload() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&frame(b"")[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"")]);
    assert!(buf.is_empty());
}

#[test]
fn keeps_segment_carriage_returns_in_payload() {
    // HL7 segments end in CR, so a CR directly before the end block is payload.
    let payload = b"MSH|^~\\&|A\r\rPID|1\r";
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&frame(payload)[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(payload)]);
}

#[test]
fn decodes_several_frames_in_one_buffer() {
    let mut input = frame(ADT_A01);
    input.extend(frame(ORU_R01));
    input.extend(frame(b"third"));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    // One frame per call, the rest left buffered.
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(ADT_A01)));
    assert_eq!(buf.len(), input.len() - ADT_A01.len() - 3, "only the first frame is consumed");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(ORU_R01)));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(b"third")));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn decodes_frame_fed_one_byte_at_a_time() {
    let mut input = frame(ADT_A01);
    input.extend(frame(ORU_R01));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for (i, byte) in input.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = decode_all(&mut codec, &mut buf);
        // The first message completes exactly at its end block, not at the CR.
        if i == ADT_A01.len() + 1 {
            assert_eq!(got, vec![message(ADT_A01)]);
        }
        frames.extend(got);
    }
    assert_eq!(frames, vec![message(ADT_A01), message(ORU_R01)]);
    assert!(buf.is_empty());
}

#[test]
fn decodes_two_frames_split_at_every_position() {
    let mut input = frame(ADT_A01);
    input.extend(frame(ORU_R01));
    for split in 0..=input.len() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&input[..split]);
        let mut frames = decode_all(&mut codec, &mut buf);
        buf.extend_from_slice(&input[split..]);
        frames.extend(decode_all(&mut codec, &mut buf));
        frames.extend(decode_all_eof(&mut codec, &mut buf).unwrap());
        assert_eq!(frames, vec![message(ADT_A01), message(ORU_R01)], "split at {split}");
        assert!(buf.is_empty(), "split at {split}");
    }
}

#[test]
fn reports_junk_before_frame_and_consumes_it_immediately() {
    let mut input = b"junk".to_vec();
    let framed = frame(ADT_A01);
    input.extend(&framed);
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(MllpFrame::Discarded { bytes: 4 }));
    assert_eq!(&buf[..], &framed[..], "junk removed from the buffer");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(ADT_A01)));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn junk_only_is_reported_and_not_buffered() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(MllpFrame::Discarded { bytes: 16 }));
    assert!(buf.is_empty());
    assert_eq!(codec.decode(&mut buf).unwrap(), None);

    // Junk arriving in later reads is reported per read, never accumulated.
    buf.extend_from_slice(b"more");
    assert_eq!(decode_all(&mut codec, &mut buf), vec![MllpFrame::Discarded { bytes: 4 }]);
    assert!(buf.is_empty());
}

#[test]
fn stray_end_block_and_cr_outside_frame_are_junk() {
    let mut input = vec![END_BLOCK, CARRIAGE_RETURN];
    input.extend(frame(b"A"));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![MllpFrame::Discarded { bytes: 2 }, message(b"A")]);
}

#[test]
fn missing_trailing_cr_returns_frame_immediately() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&[START_BLOCK, b'A', END_BLOCK][..]);
    // Returned without waiting for a CR that may never come.
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(b"A")));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty());

    // The next frame follows directly after the CR-less end.
    buf.extend_from_slice(&frame(b"B"));
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"B")]);

    // Also when both arrive in the same read.
    let mut input = vec![START_BLOCK, b'C', END_BLOCK];
    input.extend(frame(b"D"));
    buf.extend_from_slice(&input);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"C"), message(b"D")]);
    assert!(buf.is_empty());
}

#[test]
fn cr_in_next_read_after_end_block_is_swallowed() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&[START_BLOCK, b'A', END_BLOCK][..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"A")]);
    buf.extend_from_slice(&[CARRIAGE_RETURN]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![], "CR is no junk");
    assert!(buf.is_empty());
    buf.extend_from_slice(&frame(b"B"));
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"B")]);
}

#[test]
fn only_one_cr_after_end_block_is_swallowed() {
    let mut input = frame(b"A");
    input.push(CARRIAGE_RETURN);
    input.extend(frame(b"B"));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"A"), MllpFrame::Discarded { bytes: 1 }, message(b"B")]);
}

#[test]
fn start_block_inside_frame_discards_partial_frame() {
    let mut input = vec![START_BLOCK];
    input.extend_from_slice(b"MSH|partial");
    input.extend(frame(ADT_A01));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(
        decode_all(&mut codec, &mut buf),
        vec![
            // Start block plus the 11 payload bytes of the abandoned frame.
            MllpFrame::Discarded { bytes: 12 },
            message(ADT_A01)
        ]
    );
    assert!(buf.is_empty());

    // Same when the new start block arrives in a later read.
    let mut codec = MllpCodec::new();
    assert_eq!(decode_chunked(&mut codec, &input, 5), vec![MllpFrame::Discarded { bytes: 12 }, message(ADT_A01)]);
}

#[test]
fn frame_of_exactly_max_size_is_a_message() {
    let mut codec = MllpCodec::new().with_max_frame_size(8);
    let mut buf = BytesMut::from(&frame(b"12345678")[..]);
    assert_eq!(decode_all(&mut codec, &mut buf), vec![message(b"12345678")]);

    buf.extend_from_slice(&frame(b"123456789"));
    assert_eq!(
        decode_all(&mut codec, &mut buf),
        vec![MllpFrame::Oversized { len: 9, head: Bytes::from_static(b"12345678") }]
    );
}

#[test]
fn oversized_frame_is_drained_without_buffering() {
    const MAX: usize = 1024;
    const CHUNK: usize = 100;
    const LEN: usize = 64 * 1024;

    let mut payload = ADT_A01.to_vec();
    payload.resize(LEN, b'x');
    let mut input = frame(&payload);
    input.extend(frame(ORU_R01));

    let mut codec = MllpCodec::new().with_max_frame_size(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(CHUNK) {
        buf.extend_from_slice(piece);
        assert!(buf.len() <= MAX + CHUNK, "buffer grew to {}", buf.len());
        frames.extend(decode_all(&mut codec, &mut buf));
        assert!(buf.len() <= MAX, "buffer kept {} bytes", buf.len());
    }
    // The buffer's allocation never had to grow towards the frame size.
    assert!(buf.capacity() < 4 * (MAX + CHUNK), "capacity {}", buf.capacity());

    assert_eq!(frames.len(), 2, "{frames:?}");
    match &frames[0] {
        MllpFrame::Oversized { len, head } => {
            assert_eq!(*len, LEN);
            assert_eq!(head.len(), MAX);
            assert_eq!(&head[..], &payload[..MAX], "head is the payload start");
            assert!(head.starts_with(b"MSH|"));
        }
        other => panic!("expected Oversized, got {other:?}"),
    }
    assert_eq!(frames[1], message(ORU_R01));
    assert!(buf.is_empty());
}

#[test]
fn oversized_head_is_capped_at_head_len() {
    let max = 2 * OVERSIZED_HEAD_LEN;
    let payload = vec![b'x'; max + 1];
    let mut codec = MllpCodec::new().with_max_frame_size(max);
    // Whole frame in one read: the end block is found beyond the limit.
    let mut buf = BytesMut::from(&frame(&payload)[..]);
    assert_eq!(
        decode_all(&mut codec, &mut buf),
        vec![MllpFrame::Oversized { len: max + 1, head: Bytes::copy_from_slice(&payload[..OVERSIZED_HEAD_LEN]) }]
    );
    assert!(buf.is_empty());
}

#[test]
fn start_block_inside_oversized_frame_discards_it() {
    let mut input = vec![START_BLOCK];
    input.extend_from_slice(&[b'x'; 50]);
    input.extend(frame(b"ok"));
    for chunk in [1, 7, input.len()] {
        let mut codec = MllpCodec::new().with_max_frame_size(10);
        assert_eq!(
            decode_chunked(&mut codec, &input, chunk),
            vec![MllpFrame::Discarded { bytes: 51 }, message(b"ok")],
            "chunk {chunk}"
        );
    }
}

#[test]
fn eof_emits_buffered_frames_then_none() {
    let mut input = frame(ADT_A01);
    input.extend(frame(ORU_R01));
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(decode_all_eof(&mut codec, &mut buf).unwrap(), vec![message(ADT_A01), message(ORU_R01)]);
    // Pending CR swallowing after a CR-less end is no partial frame.
    let mut buf = BytesMut::from(&[START_BLOCK, b'A', END_BLOCK][..]);
    assert_eq!(decode_all_eof(&mut codec, &mut buf).unwrap(), vec![message(b"A")]);
}

#[test]
fn eof_with_partial_frame_is_incomplete() {
    let mut input = frame(b"A");
    input.push(START_BLOCK);
    input.extend_from_slice(b"MSH|trunc");
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(message(b"A")));
    match codec.decode_eof(&mut buf) {
        Err(MllpError::Incomplete { buffered }) => assert_eq!(buffered, 10),
        other => panic!("expected Incomplete, got {other:?}"),
    }
    // The codec is reset afterwards.
    assert!(buf.is_empty());
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn eof_inside_oversized_frame_is_incomplete() {
    let mut input = vec![START_BLOCK];
    input.extend_from_slice(&[b'x'; 100]);
    let mut codec = MllpCodec::new().with_max_frame_size(10);
    let mut buf = BytesMut::new();
    for piece in input.chunks(30) {
        buf.extend_from_slice(piece);
        assert_eq!(decode_all(&mut codec, &mut buf), vec![]);
    }
    match decode_all_eof(&mut codec, &mut buf) {
        Err(MllpError::Incomplete { buffered }) => assert_eq!(buffered, 101),
        other => panic!("expected Incomplete, got {other:?}"),
    }
}

#[test]
fn eof_with_junk_reports_discarded_then_none() {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&b"trailing junk"[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(MllpFrame::Discarded { bytes: 13 }));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn incomplete_error_message_is_precise() {
    let err = MllpError::Incomplete { buffered: 10 };
    assert_eq!(
        err.to_string(),
        "connection closed inside an MLLP frame: 10 bytes received since the start block and no end block"
    );
}

#[test]
fn encoder_round_trip() {
    let mut codec = MllpCodec::new();
    let mut wire = BytesMut::new();
    codec.encode(ADT_A01, &mut wire).unwrap();
    codec.encode(Bytes::from_static(ORU_R01), &mut wire).unwrap();
    codec.encode(&b""[..], &mut wire).unwrap();

    let mut expected = frame(ADT_A01);
    expected.extend(frame(ORU_R01));
    expected.extend(frame(b""));
    assert_eq!(&wire[..], &expected[..]);

    assert_eq!(decode_all_eof(&mut codec, &mut wire).unwrap(), vec![message(ADT_A01), message(ORU_R01), message(b"")]);
}

#[test]
fn encoder_rejects_payload_larger_than_max() {
    let mut codec = MllpCodec::new().with_max_frame_size(4);
    let mut wire = BytesMut::from(&b"prev"[..]);
    codec.encode(&b"1234"[..], &mut wire).unwrap();

    let err = codec.encode(&b"12345"[..], &mut wire).unwrap_err();
    assert!(matches!(err, MllpError::FrameTooLarge { len: 5, max: 4 }), "{err:?}");
    assert_eq!(err.to_string(), "outgoing MLLP payload is 5 bytes, exceeding the maximum frame size of 4 bytes");
    let err = codec.encode(Bytes::from_static(b"12345"), &mut wire).unwrap_err();
    assert!(matches!(err, MllpError::FrameTooLarge { .. }), "{err:?}");

    let mut expected = b"prev".to_vec();
    expected.extend(frame(b"1234"));
    assert_eq!(&wire[..], &expected[..], "failed encodes write nothing");
}

#[test]
fn encoder_rejects_framing_bytes_in_payload() {
    let mut codec = MllpCodec::new();
    let mut wire = BytesMut::new();
    for (payload, byte, offset) in [(&b"MSH|\x0bsecret"[..], START_BLOCK, 4), (&b"MSH|secret\x1c"[..], END_BLOCK, 10)] {
        let err = codec.encode(payload, &mut wire).unwrap_err();
        match err {
            MllpError::PayloadContainsFraming { byte: b, offset: o } => {
                assert_eq!((b, o), (byte, offset));
            }
            ref other => panic!("expected PayloadContainsFraming, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("at offset {offset}")), "{text}");
        assert!(!text.contains("secret"), "no payload data in {text}");
        let err = codec.encode(Bytes::copy_from_slice(payload), &mut wire).unwrap_err();
        assert!(matches!(err, MllpError::PayloadContainsFraming { .. }), "{err:?}");
    }
    assert_eq!(
        MllpError::PayloadContainsFraming { byte: END_BLOCK, offset: 3 }.to_string(),
        "outgoing MLLP payload contains framing byte 0x1c at offset 3"
    );
    assert!(wire.is_empty(), "failed encodes write nothing");
}

/// Builds the payload of the ACK a receiver sends for `message`.
fn ack_for(message: &[u8]) -> Bytes {
    let control_id = message.split(|&b| b == b'|').nth(9).expect("MSH-10 present");
    let mut ack = b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|20240101120001||ACK|A1|P|2.5\rMSA|AA|".to_vec();
    ack.extend_from_slice(control_id);
    ack.push(b'\r');
    Bytes::from(ack)
}

#[tokio::test]
async fn framed_over_tcp_reads_coalesced_and_trickled_frames() {
    let messages: Vec<&[u8]> = vec![
        ADT_A01,
        ORU_R01,
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|MSG00003|P|2.5\r",
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A03|MSG00004|P|2.5\r",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await?;
        let mut framed = Framed::new(socket, MllpCodec::new());
        let mut received = Vec::new();
        while let Some(event) = framed.next().await {
            match event? {
                MllpFrame::Message(payload) => {
                    framed.send(ack_for(&payload)).await?;
                    received.push(payload);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        Ok::<_, MllpError>(received)
    });

    let client = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        // Three frames in one write.
        let mut burst = Vec::new();
        for payload in &messages[..3] {
            burst.extend(frame(payload));
        }
        stream.write_all(&burst).await.unwrap();
        // The fourth one byte per write, with pauses so reads see it in pieces.
        for byte in frame(messages[3]) {
            stream.write_all(&[byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stream.shutdown().await.unwrap();
        let mut acks = Vec::new();
        stream.read_to_end(&mut acks).await.unwrap();
        acks
    };

    let (acks, received) = tokio::time::timeout(Duration::from_secs(20), async {
        let acks = client.await;
        (acks, server.await.expect("server task panicked"))
    })
    .await
    .expect("test timed out");

    let received = received.unwrap();
    assert_eq!(received.len(), 4);
    for (got, want) in received.iter().zip(&messages) {
        assert_eq!(&got[..], *want);
    }

    // The server's ACKs went through the encoder and decode back in order.
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::from(&acks[..]);
    let acks = decode_all_eof(&mut codec, &mut buf).unwrap();
    let expected: Vec<MllpFrame> = messages.iter().map(|m| MllpFrame::Message(ack_for(m))).collect();
    assert_eq!(acks, expected);
}

/// Any byte except the start and end blocks (CR included: HL7 uses it).
fn payload_byte() -> impl Strategy<Value = u8> {
    let allowed: Vec<u8> = (0..=u8::MAX).filter(|&b| b != START_BLOCK && b != END_BLOCK).collect();
    proptest::sample::select(allowed)
}

/// Bytes weighted towards the ones the decoder reacts to.
fn wire_byte() -> impl Strategy<Value = u8> {
    // Mapping is much cheaper per byte than a `prop_oneof!` union.
    any::<u8>().prop_map(|b| match b % 8 {
        0 => START_BLOCK,
        1 => END_BLOCK,
        2 => CARRIAGE_RETURN,
        _ => b,
    })
}

/// Feeds `input` split at the given chunk sizes (cycled), then signals EOF.
fn decode_with_chunks(
    codec: &mut MllpCodec,
    input: &[u8],
    chunks: &[usize],
) -> (Vec<MllpFrame>, Result<(), MllpError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(piece);
        frames.extend(decode_all(codec, &mut buf));
        assert!(
            buf.len() <= codec.max_frame_size(),
            "buffered {} bytes with max {}",
            buf.len(),
            codec.max_frame_size()
        );
    }
    // Keep the frames emitted before an error, unlike `decode_all_eof`.
    let eof = loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    (frames, eof)
}

proptest! {
    #[test]
    fn encoded_frames_decode_in_order_across_any_split(
        payloads in prop::collection::vec(prop::collection::vec(payload_byte(), 0..300), 0..8),
        chunks in prop::collection::vec(1usize..64, 1..20),
    ) {
        let mut codec = MllpCodec::new();
        let mut wire = BytesMut::new();
        for payload in &payloads {
            codec.encode(&payload[..], &mut wire).unwrap();
        }
        let (frames, eof) = decode_with_chunks(&mut MllpCodec::new(), &wire, &chunks);
        prop_assert!(eof.is_ok(), "{eof:?}");
        let expected: Vec<MllpFrame> = payloads.iter().map(|p| message(p)).collect();
        prop_assert_eq!(frames, expected);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_accounts_for_input(
        input in prop::collection::vec(wire_byte(), 0..2000),
        chunks in prop::collection::vec(1usize..128, 1..20),
        max in prop_oneof![0usize..64, Just(DEFAULT_MAX_FRAME)],
    ) {
        let mut codec = MllpCodec::new().with_max_frame_size(max);
        let (frames, eof) = decode_with_chunks(&mut codec, &input, &chunks);

        // Every input byte is delivered, reported as dropped, or is one of the
        // CRs swallowed after an end block (at most one per ended frame).
        let mut accounted = 0usize;
        let mut ended = 0usize;
        for frame in &frames {
            match frame {
                MllpFrame::Message(payload) => {
                    prop_assert!(payload.len() <= max);
                    prop_assert!(!payload.iter().any(|&b| b == START_BLOCK || b == END_BLOCK));
                    accounted += payload.len() + 2;
                    ended += 1;
                }
                MllpFrame::Oversized { len, head } => {
                    prop_assert!(*len > max);
                    prop_assert_eq!(head.len(), OVERSIZED_HEAD_LEN.min(max));
                    accounted += len + 2;
                    ended += 1;
                }
                MllpFrame::Discarded { bytes } => {
                    prop_assert!(*bytes > 0);
                    accounted += bytes;
                }
            }
        }
        match eof {
            Ok(()) => {}
            Err(MllpError::Incomplete { buffered }) => accounted += buffered,
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        prop_assert!(accounted <= input.len(), "accounted {accounted} of {}", input.len());
        prop_assert!(input.len() <= accounted + ended, "accounted {accounted} of {}", input.len());
    }
}
