//! Cost of the store's write paths without the network: committing received
//! messages alone and 64 at a time (one group), and recording a delivery
//! result, with `durability: normal` so the figures show the CPU work of the
//! writer rather than the disk. `benches/engine/run.sh` measures the same
//! paths end to end with fsync.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::store::{Durability, Finished, NewInbound, Status, Store, StoreOptions};

const ADT_A01: &[u8] = include_bytes!("engine/adt_a01.hl7");

fn inbound(n: u64) -> NewInbound {
    NewInbound {
        production: "bench".into(),
        service: "in".into(),
        origin: "127.0.0.1:40000".into(),
        body: Bytes::from_static(ADT_A01),
        control_id: Some(format!("MSG{n}")),
        message_type: Some("ADT^A01".into()),
        patient_id: None,
        patient_name: None,
        targets: ["out".to_owned()].into(),
        routed: Vec::new(),
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    let options = StoreOptions { durability: Durability::Normal, ..StoreOptions::default() };
    Store::open(&dir.path().join("store.db"), options).expect("a fresh store opens").0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts")
}

/// Commits `per_iter` messages per iteration, all submitted at once (they
/// share one group when `per_iter` > 1).
fn commit_inbound(c: &mut Criterion, name: &str, per_iter: u64) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir);
    let mut n = 0;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(per_iter));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let commits = (0..per_iter).map(|_| {
                        n += 1;
                        store.commit_inbound(inbound(n))
                    });
                    for result in futures_util::future::join_all(commits).await {
                        result.expect("commit succeeds");
                    }
                }
            });
            start.elapsed()
        });
    });
    group.finish();
    rt.block_on(store.close());
}

fn inbound_alone(c: &mut Criterion) {
    commit_inbound(c, "inbound/1", 1);
}

fn inbound_group(c: &mut Criterion) {
    commit_inbound(c, "inbound/64", 64);
}

/// One delivery result recorded (status and reply), as `mllp_out` does
/// between two messages.
fn finish(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir);
    let reply = Bytes::from_static(b"MSH|^~\\&|R|R|S|S|20260101||ACK^A01|1|P|2.5\rMSA|AA|MSG1\r");
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("finish", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Untimed: queue the messages this iteration finishes.
                let mut ids = Vec::new();
                for i in 0..iters {
                    let committed = store.commit_inbound(inbound(i)).await.expect("commit succeeds");
                    ids.extend(committed.queued);
                }
                store.mark_delivering(ids.clone()).await.expect("marked");
                let start = Instant::now();
                for id in ids {
                    let finished = Finished {
                        header_id: id,
                        production: "bench".into(),
                        item: "out".into(),
                        status: Status::Completed,
                        attempts: 1,
                        reply: Some(reply.clone()),
                        error: None,
                    };
                    store.finish(finished).await.expect("finish succeeds");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    rt.block_on(store.close());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = inbound_alone, inbound_group, finish
}
criterion_main!(benches);
