//! Codec throughput: encode and decode one frame of 64 Accept messages, each carrying one
//! 64-byte request (the shape of a pipelined primary's traffic at small request sizes).
//! Criterion reports elements/s, where an element is one message.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rsl_core::{Ballot, Message, MessageBody, NodeId, Request, RequestId, RingId, Slot, Value};
use rsl_transport::codec::{decode_batch, encode_batch};
use std::hint::black_box;

const MESSAGES: u64 = 64;
const PAYLOAD_BYTES: usize = 64;

fn accepts(requests_per_accept: u64) -> Vec<Message> {
    (0..MESSAGES)
        .map(|i| Message {
            ring: RingId(1),
            from: NodeId(1),
            to: NodeId(2),
            configuration: 1,
            body: MessageBody::Accept {
                ballot: Ballot::new(3, NodeId(1)),
                slot: Slot(1000 + i),
                value: Value::Batch(
                    (0..requests_per_accept)
                        .map(|r| Request {
                            id: RequestId { client: 7, sequence: i * requests_per_accept + r },
                            payload: Bytes::from(vec![i as u8; PAYLOAD_BYTES]),
                        })
                        .collect(),
                ),
                chosen: Slot(999 + i),
            },
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_64_accepts");
    group.throughput(Throughput::Elements(MESSAGES));
    for requests_per_accept in [1u64, 16] {
        let messages = accepts(requests_per_accept);
        let frame = Bytes::from(encode_batch(NodeId(1), NodeId(2), &messages));
        let id = BenchmarkId::new("encode_decode", format!("{requests_per_accept}_requests_per_accept"));
        group.bench_with_input(id, &messages, |b, messages| {
            b.iter(|| {
                let frame = Bytes::from(encode_batch(NodeId(1), NodeId(2), black_box(messages)));
                decode_batch(black_box(frame)).map(|batch| batch.messages.len())
            })
        });
        let id = BenchmarkId::new("decode", format!("{requests_per_accept}_requests_per_accept"));
        group.bench_with_input(id, &frame, |b, frame| b.iter(|| decode_batch(black_box(frame.clone()))));
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
