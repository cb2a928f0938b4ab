//! Throughput of the MLLP codec: many small frames, one large frame split
//! into small reads (guards against quadratic rescans), and encoding.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::mllp::MllpCodec;
use tokio_util::codec::{Decoder, Encoder};

/// A typical ADT message of about 250 bytes.
const ADT_A01: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG00001|P|2.5\r\
EVN|A01|20240101120000\r\
PID|1||12345^^^HOSP^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r\
PV1|1|I|WARD1^101^A|||||||MED||||||||V0001\r";

fn encode_all(payloads: &[&[u8]]) -> Vec<u8> {
    let mut codec = MllpCodec::new();
    let mut wire = BytesMut::new();
    for payload in payloads {
        codec.encode(*payload, &mut wire).expect("benchmark payloads are valid");
    }
    wire.to_vec()
}

/// Feeds `wire` in `chunk`-byte reads and counts decoded events.
fn decode_in_chunks(wire: &[u8], chunk: usize) -> usize {
    let mut codec = MllpCodec::new();
    let mut buf = BytesMut::with_capacity(chunk.max(8 * 1024));
    let mut events = 0;
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).expect("decode is infallible") {
            black_box(frame);
            events += 1;
        }
    }
    events
}

fn bench_mllp(c: &mut Criterion) {
    let mut group = c.benchmark_group("mllp");

    let small = encode_all(&[ADT_A01; 1000]);
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("decode 1000 ADT frames, 64 KiB reads", |b| {
        b.iter(|| decode_in_chunks(black_box(&small), 64 * 1024));
    });

    let big_payload = vec![b'x'; 1024 * 1024];
    let big = encode_all(&[&big_payload]);
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("decode 1 MiB frame, 1 KiB reads", |b| b.iter(|| decode_in_chunks(black_box(&big), 1024)));
    group.bench_function("decode 1 MiB frame, 16 B reads", |b| b.iter(|| decode_in_chunks(black_box(&big), 16)));

    group.throughput(Throughput::Bytes(ADT_A01.len() as u64));
    group.bench_function("encode ADT frame", |b| {
        let mut codec = MllpCodec::new();
        b.iter_batched_ref(
            || BytesMut::with_capacity(ADT_A01.len() + 3),
            |dst| codec.encode(black_box(ADT_A01), dst),
            BatchSize::SmallInput,
        );
    });

    group.finish();
}

criterion_group!(benches, bench_mllp);
criterion_main!(benches);
