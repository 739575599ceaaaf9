//! Messages too large for a frame, over gRPC on loopback: they travel in chunks beside whole
//! messages, arrive intact, and a peer's torn or malformed chunks are refused and counted. A
//! chunked message newer than the peer's protocol version is left out whole, as a whole one is.

mod common;

use bytes::Bytes;
use common::{accept, eventually, heartbeat, receive};
use prost::Message as _;
use rsl_core::{Ballot, Configuration, Message, MessageBody, NodeId, Proposal, RingId, Slot, Value};
use rsl_transport::chunk::{split, ChunkHeader};
use rsl_transport::codec::{encode_message, message_to_proto};
use rsl_transport::proto::replication_client::ReplicationClient;
use rsl_transport::{proto, GrpcConfig, GrpcTransport, Inbound, Transport};
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// Small frames and chunks, so a few hundred KiB already travel in many chunks.
fn config() -> GrpcConfig {
    GrpcConfig {
        frame_bytes_max: 64 * 1024,
        chunk_bytes: 8 * 1024,
        chunked_message_bytes_max: 4 << 20,
        backoff_initial_ms: 10,
        backoff_max_ms: 100,
        seed: 5,
        ..GrpcConfig::default()
    }
}

async fn endpoint(node: u64) -> (GrpcTransport, mpsc::Receiver<Inbound>) {
    endpoint_with(node, config()).await
}

async fn endpoint_with(node: u64, config: GrpcConfig) -> (GrpcTransport, mpsc::Receiver<Inbound>) {
    let (transport, inbound) = GrpcTransport::builder(NodeId(node))
        .config(config)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    transport.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    (transport, inbound)
}

fn slot_of(inbound: &Inbound) -> u64 {
    match &inbound.message.body {
        MessageBody::Accept { slot, .. } => slot.0,
        MessageBody::Heartbeat { sent_at, .. } => sent_at.0,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_arrive_intact_and_small_ones_overtake_them() {
    let (a, _a_in) = endpoint(1).await;
    let (b, mut b_in) = endpoint(2).await;
    a.set_peer_address(NodeId(2), b.local_addr().into()).unwrap();
    let large = [accept(1, 1, 2, 1, 1 << 20), accept(1, 1, 2, 2, 3 << 20)];
    // Queued behind both large messages, the heartbeats do not wait for them: they leave
    // in the first frames, beside the first chunks.
    let mut batch = large.to_vec();
    batch.extend((100..110).map(|tag| heartbeat(1, 1, 2, tag)));
    a.send(NodeId(2), batch).unwrap();
    let got = receive(&mut b_in, 12).await;
    let order: Vec<u64> = got.iter().map(slot_of).collect();
    assert_eq!(order, [(100..110).collect(), vec![1, 2]].concat(), "heartbeats waited behind large messages");
    let delivered: Vec<_> = got.into_iter().filter(|m| slot_of(m) < 100).map(|m| m.message).collect();
    assert_eq!(delivered, large.to_vec(), "intact and in order");
    let (sent, received) = (a.stats().snapshot(), b.stats().snapshot());
    let chunks = (1u64 << 20).div_ceil(8 * 1024) + (3u64 << 20).div_ceil(8 * 1024);
    assert!(sent.chunks_sent >= chunks, "{} chunks sent, expected {chunks}", sent.chunks_sent);
    assert_eq!(received.chunks_received, sent.chunks_sent);
    assert_eq!(received.rejected_chunks, 0);
    assert!(sent.frames_sent >= chunks, "one chunk per frame");
}

/// A fetch reply from 1 to 2 too large for a frame: a batch of `payload_bytes` at slot
/// `slot`, then the configuration chosen at the next slot.
fn large_fetch_reply(slot: u64, payload_bytes: usize, configuration: Configuration) -> Message {
    let MessageBody::Accept { value: batch, .. } = accept(1, 1, 2, slot, payload_bytes).body else {
        unreachable!("accept() builds an accept")
    };
    let proposal =
        |slot: u64, value: Value| Proposal { ballot: Ballot::new(1, NodeId(1)), slot: Slot(slot), value };
    let chosen_values = vec![proposal(slot, batch), proposal(slot + 1, Value::Configuration(configuration))];
    Message { body: MessageBody::FetchReply { chosen_values }, ..heartbeat(1, 1, 2, 0) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_fetch_reply_with_learners_is_left_out_for_a_version_2_peer() {
    let (newer, _newer_in) = endpoint(1).await;
    let (older, mut older_in) = endpoint_with(2, GrpcConfig { protocol_version: 2, ..config() }).await;
    newer.set_peer_address(NodeId(2), older.local_addr().into()).unwrap();
    // The first stream, in version 3, is refused; heartbeats until one arrives in version 2.
    let spoken_down = async {
        for round in 1000.. {
            newer.send(NodeId(2), vec![heartbeat(1, 1, 2, round)]).unwrap();
            if let Ok(Some(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(20), older_in.recv()).await
            {
                return;
            }
        }
    };
    tokio::time::timeout(common::PATIENCE, spoken_down).await.expect("delivered after speaking down");
    while let Ok(Some(_)) = tokio::time::timeout(std::time::Duration::from_millis(100), older_in.recv()).await
    {
    }

    // Version 2 has no learners: a version-2 receiver would decode this reply without
    // them, as a configuration of voters only. It is left out whole and counted; the plain
    // one after it in the same lane arrives intact.
    let plain = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(50));
    let with_learner = large_fetch_reply(40, 200_000, plain.clone().with_learners(vec![NodeId(3)]));
    let without = large_fetch_reply(60, 200_000, plain);
    for message in [&with_learner, &without] {
        assert!(message_to_proto(message).encoded_len() > 64 * 1024, "travels in chunks");
    }
    let dropped_before = newer.stats().snapshot().dropped_for_version;
    newer.send(NodeId(2), vec![with_learner]).unwrap();
    newer.send(NodeId(2), vec![without.clone(), heartbeat(1, 1, 2, 7)]).unwrap();
    let got = receive(&mut older_in, 2).await;
    assert_eq!(slot_of(&got[0]), 7, "the heartbeat overtakes the chunks");
    assert_eq!(got[1].message, without, "the next in the chunked lane is the plain reply");
    assert_eq!(newer.stats().snapshot().dropped_for_version, dropped_before + 1);
    assert_eq!(older.stats().snapshot().rejected_chunks, 0);
    assert!(older_in.try_recv().is_err());
}

fn chunks_of(message_id: u64, message: &rsl_core::Message) -> Vec<proto::Chunk> {
    let encoded = Bytes::from(encode_message(message));
    let header = ChunkHeader { ring: message.ring, from: message.from, to: message.to, message_id };
    split(header, &encoded, 4096)
}

fn frame(chunk: proto::Chunk) -> proto::Batch {
    proto::Batch {
        from: 1,
        to: 2,
        messages: Vec::new(),
        chunks: vec![chunk],
        protocol_version: rsl_transport::PROTOCOL_VERSION,
    }
}

async fn stream(to: SocketAddr, frames: Vec<proto::Batch>) -> proto::StreamSummary {
    let mut client = ReplicationClient::connect(format!("http://{to}")).await.unwrap();
    client.stream(futures_util::stream::iter(frames)).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_malformed_chunks_are_refused_and_counted() {
    let (b, mut b_in) = endpoint(2).await;
    let message = accept(1, 1, 2, 5, 20_000);
    let good = chunks_of(1, &message);
    assert!(good.len() >= 4);
    let rejected = || b.stats().snapshot().rejected_chunks;

    // Each broken stream: its message is dropped, the refusal counted once, and a good
    // message after it on the same stream still arrives.
    type Breaker = fn(&mut Vec<proto::Chunk>);
    let cases: Vec<(&str, Breaker)> = vec![
        ("a chunk missing", |c| {
            c.remove(2);
        }),
        ("a chunk repeated", |c| {
            let again = c[1].clone();
            c.insert(2, again);
        }),
        ("data past the end", |c| c[1].data = Bytes::from(vec![0u8; 30_000])),
        ("a changed size", |c| c[2].total_bytes += 1),
        ("over the size limit", |c| c.iter_mut().for_each(|c| c.total_bytes = 1 << 40)),
        ("torn by the next message", |c| {
            c.truncate(2);
        }),
        ("garbage that does not decode", |c| {
            for chunk in c.iter_mut() {
                chunk.data = Bytes::from(vec![0xff; chunk.data.len()]);
            }
        }),
    ];
    for (case, break_it) in cases {
        let before = rejected();
        let mut broken = good.clone();
        break_it(&mut broken);
        let mut frames: Vec<proto::Batch> = broken.into_iter().map(frame).collect();
        let next = accept(1, 1, 2, 6, 20_000);
        frames.extend(chunks_of(2, &next).into_iter().map(frame));
        let summary = stream(b.local_addr(), frames).await;
        assert_eq!(summary.messages, 1, "{case}");
        let got = receive(&mut b_in, 1).await;
        assert_eq!(got[0].message, next, "{case}");
        assert_eq!(rejected(), before + 1, "{case}: one refusal counted");
    }

    // A non-member's chunks are dropped before anything is buffered.
    let stranger = accept(1, 3, 2, 7, 20_000);
    let frames = chunks_of(3, &stranger)
        .into_iter()
        .map(|chunk| proto::Batch {
            from: 3,
            to: 2,
            messages: Vec::new(),
            chunks: vec![chunk],
            protocol_version: rsl_transport::PROTOCOL_VERSION,
        })
        .collect();
    let summary = stream(b.local_addr(), frames).await;
    assert_eq!(summary.messages, 0);
    eventually("the non-member's message to be counted", || b.stats().snapshot().rejected_non_member == 1)
        .await;
    assert!(b_in.try_recv().is_err());

    // A well-formed chunked message from a raw client is delivered, whole messages beside it.
    let mut frames: Vec<proto::Batch> = good.into_iter().map(frame).collect();
    frames[0].messages.push(message_to_proto(&heartbeat(1, 1, 2, 9)));
    let summary = stream(b.local_addr(), frames).await;
    assert_eq!(summary.messages, 2);
    let got = receive(&mut b_in, 2).await;
    assert_eq!((slot_of(&got[0]), &got[1].message), (9, &message));
    assert!(b.stats().snapshot().bytes_received > proto::Batch::default().encoded_len() as u64);
}
