//! The ring protocol through the emulated provider: one endpoint sends Accept messages (one
//! 64-byte request each) to another in batches, and the receiver takes them out of its
//! ring, validates and converts them, and delivers them. Criterion reports elements/s
//! (messages per second) and the time per iteration (divide by the batch for ns/message).
//! Both pollers run on their own threads, so this measures the protocol's CPU cost and the
//! hand-offs between threads, not a NIC.
//!
//! `after_idle` is the latency of a wake-up: before each message the sender pauses 2 ms,
//! long enough for the receiving poller to be in its longest sleep, and only the send to
//! the delivery is timed. `wake` is with the idle wake-up (the sender's write with
//! immediate wakes the receiver), `timer` without (`idle_wake` off: the receiver notices
//! the frame when its sleep ends). `send_and_deliver_timer_wake` is the back-to-back loop
//! without the wake-up.
//!
//! Also: the archive alone (serialize a 64-message batch into a buffer, validate and
//! convert it), the cost the ring adds per frame without the transport around it.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rsl_core::{Ballot, Message, MessageBody, NodeId, Request, RequestId, RingId, Slot, Value};
use rsl_transport::rdma::archive::{decode_batch, encode_batch};
use rsl_transport::rdma::emulated::{EmulatedConfig, EmulatedDevice};
use rsl_transport::rdma::{RdmaConfig, RdmaTransport};
use rsl_transport::Transport;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn accept(slot: u64) -> Message {
    Message {
        ring: RingId(1),
        from: NodeId(1),
        to: NodeId(2),
        configuration: 1,
        body: MessageBody::Accept {
            ballot: Ballot::new(3, NodeId(1)),
            slot: Slot(slot),
            value: Value::Batch(
                vec![Request {
                    id: RequestId { client: 7, sequence: slot },
                    payload: Bytes::from(vec![slot as u8; 64]),
                }]
                .into(),
            ),
            chosen: Slot(slot.saturating_sub(1)),
        },
    }
}

type Endpoint = (RdmaTransport, tokio::sync::mpsc::Receiver<rsl_transport::Inbound>);

fn endpoint(node: u64, idle_wake: bool) -> Endpoint {
    let device = EmulatedDevice::open(EmulatedConfig::default()).expect("emulated device");
    let config =
        RdmaConfig { ring_bytes: 4 << 20, frame_bytes_max: 1 << 20, idle_wake, ..RdmaConfig::default() };
    let (transport, inbound) = RdmaTransport::builder(NodeId(node))
        .config(config)
        .device(Arc::new(device))
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind");
    transport.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    (transport, inbound)
}

/// Two connected endpoints: 1 sends, 2 receives.
fn pair(idle_wake: bool) -> (Endpoint, Endpoint) {
    let one = endpoint(1, idle_wake);
    let two = endpoint(2, idle_wake);
    one.0.set_peer_address(NodeId(2), two.0.local_addr().into()).unwrap();
    two.0.set_peer_address(NodeId(1), one.0.local_addr().into()).unwrap();
    (one, two)
}

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("rdma_emulated_ring");
    for (name, idle_wake, batches) in
        [("send_and_deliver", true, &[1u64, 16, 256][..]), ("send_and_deliver_timer_wake", false, &[1][..])]
    {
        let ((one, _one_in), (_two, mut two_in)) = pair(idle_wake);
        for &batch in batches {
            let messages: Vec<Message> = (0..batch).map(accept).collect();
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(BenchmarkId::new(name, batch), &messages, |b, messages| {
                b.iter(|| {
                    one.send(NodeId(2), messages.clone()).unwrap();
                    for _ in 0..messages.len() {
                        black_box(two_in.blocking_recv().expect("delivered"));
                    }
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("rdma_emulated_ring_after_idle");
    for (name, idle_wake) in [("wake", true), ("timer", false)] {
        let ((one, _one_in), (_two, mut two_in)) = pair(idle_wake);
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for slot in 0..iterations {
                    std::thread::sleep(Duration::from_millis(2));
                    let started = Instant::now();
                    one.send(NodeId(2), vec![accept(slot)]).unwrap();
                    black_box(two_in.blocking_recv().expect("delivered"));
                    total += started.elapsed();
                }
                total
            })
        });
    }
    group.finish();

    let messages: Vec<Message> = (0..64).map(accept).collect();
    let mut group = c.benchmark_group("rdma_archive_64_accepts");
    group.throughput(Throughput::Elements(64));
    group
        .bench_function("serialize", |b| b.iter(|| black_box(encode_batch(NodeId(1), NodeId(2), &messages))));
    let bytes = encode_batch(NodeId(1), NodeId(2), &messages);
    group.bench_function("validate_and_convert", |b| b.iter(|| black_box(decode_batch(&bytes).unwrap())));
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
