//! The key-value service's per-operation costs outside consensus, which every committed
//! write pays: the client stream's frame (an `OpBatch` of puts and its `ResultBatch`,
//! protobuf encode and decode), the write's own encoding, and executing it in the state
//! machine (decode, map insert, session de-duplication, encoded answer) — the latter on
//! every replica.
//!
//! The server's own handling of a stream frame of writes (decode, check, pack) is measured
//! both ways a client may send them: per operation, or encoded whole as one write batch.
//!
//! Run with `cargo bench -p rsl-benches --bench kv -- --warm-up-time 1 --measurement-time 5`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use rsl_kv::command::{encode_write_batch, Write, WriteBatch, WriteId, WriteResponse};
use rsl_kv::proto as pb;
use rsl_kv::KvStateMachine;

/// Operations per frame and per executed batch.
const OPS: usize = 256;
/// Bytes of each value.
const VALUE_BYTES: usize = 64;
/// Distinct keys written.
const KEYS: usize = 1000;
/// Write sessions (a client's lanes).
const SESSIONS: u64 = 1024;

fn put(index: usize, sequence: u64) -> Write {
    Write::Put {
        id: WriteId { client: 1 + index as u64 % SESSIONS, sequence },
        key: format!("key-{}", index % KEYS),
        value: Bytes::from(vec![index as u8; VALUE_BYTES]),
    }
}

fn stream_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_stream_frame");
    group.throughput(Throughput::Elements(OPS as u64));
    let batch = pb::OpBatch {
        ops: (0..OPS)
            .map(|i| pb::Op {
                id: i as u64,
                op: Some(pb::op::Op::Put(pb::PutRequest {
                    id: Some(pb::WriteId { client: 1 + i as u64, sequence: 7 }),
                    key: format!("key-{}", i % KEYS),
                    value: Bytes::from(vec![i as u8; VALUE_BYTES]),
                })),
            })
            .collect(),
        ..Default::default()
    };
    group.bench_function("encode_256_puts", |b| b.iter(|| black_box(&batch).encode_to_vec()));
    let encoded = Bytes::from(batch.encode_to_vec());
    group.bench_function("decode_256_puts", |b| {
        b.iter(|| {
            let decoded = pb::OpBatch::decode(black_box(encoded.clone())).expect("valid frame");
            assert_eq!(decoded.ops.len(), OPS);
            decoded
        })
    });
    let results = pb::ResultBatch {
        results: (0..OPS)
            .map(|i| pb::OpResult {
                id: i as u64,
                result: Some(pb::op_result::Result::Put(pb::PutResponse { slot: 1_000_000 + i as u64 })),
            })
            .collect(),
        ..Default::default()
    };
    group.bench_function("encode_256_results", |b| b.iter(|| black_box(&results).encode_to_vec()));
    group.finish();
}

fn execute(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_state_machine");
    group.throughput(Throughput::Elements(OPS as u64));
    group.bench_function("encode_256_writes", |b| {
        let writes: Vec<Write> = (0..OPS).map(|i| put(i, 1)).collect();
        b.iter(|| writes.iter().map(Write::encode).collect::<Vec<Bytes>>())
    });
    // A machine that already holds every key and session, as in a running service.
    let mut machine = KvStateMachine::new();
    let mut sequence = 1;
    for i in 0..KEYS.max(SESSIONS as usize) {
        machine.execute_write(1, &put(i, sequence).encode());
    }
    let mut slot = 2;
    group.bench_function("execute_256_puts", |b| {
        b.iter_batched(
            || {
                sequence += 1;
                (0..OPS).map(|i| put(i, sequence).encode()).collect::<Vec<Bytes>>()
            },
            |requests| {
                slot += 1;
                for request in &requests {
                    let answer = machine.execute_write(slot, request);
                    debug_assert!(WriteResponse::decode(&answer).is_ok());
                    black_box(answer);
                }
            },
            BatchSize::SmallInput,
        )
    });
    // The same 256 puts as one write batch: one request through consensus, one answer.
    group.bench_function("execute_batch_of_256_puts", |b| {
        b.iter_batched(
            || {
                sequence += 1;
                let mut batch = WriteBatch::with_capacity(OPS * 96);
                for i in 0..OPS {
                    batch.push(&put(i, sequence));
                }
                batch.finish()
            },
            |request| {
                slot += 1;
                let answer = machine.execute_write(slot, &request);
                debug_assert_eq!(WriteResponse::decode_batch(&answer).map(|a| a.len()), Ok(OPS));
                black_box(answer);
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(machine.len(), KEYS);
    group.finish();
}

/// What a server does with one stream frame of 256 puts before the ring: decode the
/// protobuf message and check and pack its writes, per operation (`OpBatch.ops`) or sent
/// whole (`OpBatch.write_batch`, checked in place and passed on as it is).
fn stream_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_stream_plan");
    group.throughput(Throughput::Elements(OPS as u64));
    let writes: Vec<Write> = (0..OPS).map(|i| put(i, 7)).collect();
    let per_op = pb::OpBatch {
        ops: writes
            .iter()
            .zip(0..)
            .map(|(write, id)| {
                let Write::Put { id: write_id, key, value } = write.clone() else { unreachable!("puts") };
                let write_id = Some(pb::WriteId { client: write_id.client, sequence: write_id.sequence });
                pb::Op { id, op: Some(pb::op::Op::Put(pb::PutRequest { id: write_id, key, value })) }
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    let whole = pb::OpBatch {
        write_batch: encode_write_batch(&writes).expect("valid writes"),
        write_batch_id: 1,
        ..Default::default()
    }
    .encode_to_vec();
    group.bench_function("per_op_256_puts", |b| {
        b.iter(|| rsl_kv::fuzzing::plan_stream_frame(black_box(&per_op)).expect("a valid frame"))
    });
    group.bench_function("write_batch_256_puts", |b| {
        b.iter(|| rsl_kv::fuzzing::plan_stream_frame(black_box(&whole)).expect("a valid frame"))
    });
    group.finish();
}

criterion_group!(benches, stream_frame, execute, stream_plan);
criterion_main!(benches);
