//! The gRPC transport over loopback: exchange, reconnect, membership, limits, bad peers.

mod common;

use common::{accept, eventually, heartbeat, receive, PATIENCE};
use prost::Message as _;
use rsl_core::{NodeId, RingId};
use rsl_transport::codec::message_to_proto;
use rsl_transport::proto::replication_client::ReplicationClient;
use rsl_transport::{
    proto, AddressError, GrpcConfig, GrpcTransport, Inbound, PeerAddress, SendError, Transport,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const LOOPBACK: &str = "127.0.0.1:0";

fn fast_config() -> GrpcConfig {
    GrpcConfig { backoff_initial_ms: 10, backoff_max_ms: 100, seed: 5, ..GrpcConfig::default() }
}

async fn endpoint(node: u64, config: GrpcConfig) -> (GrpcTransport, mpsc::Receiver<Inbound>) {
    let address: SocketAddr = LOOPBACK.parse().unwrap();
    GrpcTransport::builder(NodeId(node)).config(config).bind(address).await.unwrap()
}

/// Two endpoints that know each other and both allow ring 1 = {1, 2}.
async fn pair(config: GrpcConfig) -> [(GrpcTransport, mpsc::Receiver<Inbound>); 2] {
    let a = endpoint(1, config.clone()).await;
    let b = endpoint(2, config).await;
    for (endpoint, _) in [&a, &b] {
        endpoint.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    }
    a.0.set_peer_address(NodeId(2), b.0.local_addr().into()).unwrap();
    b.0.set_peer_address(NodeId(1), a.0.local_addr().into()).unwrap();
    [a, b]
}

fn sent_at(inbound: &Inbound) -> u64 {
    match inbound.message.body {
        rsl_core::MessageBody::Heartbeat { sent_at, .. } => sent_at.0,
        rsl_core::MessageBody::Accept { slot, .. } => slot.0,
        ref other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_exchange_batches_both_ways() {
    let [(a, mut a_in), (b, mut b_in)] = pair(fast_config()).await;
    let mut to_b = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<_> = (0..25).map(|i| accept(1, 1, 2, round * 25 + i, 64)).collect();
        to_b.extend(batch.clone());
        a.send(NodeId(2), batch).unwrap();
        b.send(NodeId(1), vec![heartbeat(1, 2, 1, round)]).unwrap();
    }
    let got_b = receive(&mut b_in, 500).await;
    assert!(got_b.iter().all(|m| m.from == NodeId(1)));
    assert_eq!(got_b.into_iter().map(|m| m.message).collect::<Vec<_>>(), to_b, "in order, intact");
    let got_a = receive(&mut a_in, 20).await;
    assert_eq!(got_a.iter().map(sent_at).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert_eq!(a.peer_connected(NodeId(2)), Some(true), "a stream is open");
    assert_eq!(a.peer_connected(NodeId(9)), Some(false), "no address");
    let (sa, sb) = (a.stats().snapshot(), b.stats().snapshot());
    assert_eq!((sa.messages_sent, sb.messages_received), (500, 500));
    assert_eq!((sb.messages_sent, sa.messages_received), (20, 20));
    // Each send of 25 is queued at once and a frame takes everything queued: batching.
    assert!(sa.frames_sent >= 1 && sa.frames_sent <= 20, "{sa:?}");
    eventually("frame counters to agree", || {
        a.stats().snapshot().frames_sent == b.stats().snapshot().frames_received
    })
    .await;
    assert_eq!(a.stats().snapshot().bytes_sent, b.stats().snapshot().bytes_received);
    assert_eq!(sa.rejected_non_member + sb.rejected_non_member + sa.decode_errors + sb.decode_errors, 0);
    a.shutdown(PATIENCE).await;
    b.shutdown(PATIENCE).await;
    assert_eq!(a.send(NodeId(2), vec![heartbeat(1, 1, 2, 0)]), Err(SendError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_speaks_down_to_a_peer_told_to_speak_an_older_version() {
    let newer = endpoint(1, fast_config()).await;
    let older = endpoint(2, GrpcConfig { protocol_version: 1, ..fast_config() }).await;
    for (endpoint, _) in [&newer, &older] {
        endpoint.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    }
    let ((newer, mut newer_in), (older, mut older_in)) = (newer, older);
    newer.set_peer_address(NodeId(2), older.local_addr().into()).unwrap();
    older.set_peer_address(NodeId(1), newer.local_addr().into()).unwrap();

    // The newer endpoint's first stream is in its version: the older one refuses it
    // (counted; its messages are dropped like those of any failed stream, and the core
    // sends again), and the newer one speaks version 1 from then on.
    let first = async {
        for round in 1000.. {
            newer.send(NodeId(2), vec![heartbeat(1, 1, 2, round)]).unwrap();
            if let Ok(Some(inbound)) = tokio::time::timeout(Duration::from_millis(20), older_in.recv()).await
            {
                return inbound;
            }
        }
        unreachable!()
    };
    let first = tokio::time::timeout(PATIENCE, first).await.expect("delivered after speaking down");
    assert!(sent_at(&first) >= 1000);
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), older_in.recv()).await {}
    for round in 0..10u64 {
        newer.send(NodeId(2), vec![heartbeat(1, 1, 2, round)]).unwrap();
        older.send(NodeId(1), vec![heartbeat(1, 2, 1, round)]).unwrap();
    }
    let at_older = receive(&mut older_in, 10).await;
    assert_eq!(at_older.iter().map(sent_at).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let at_newer = receive(&mut newer_in, 10).await;
    assert_eq!(at_newer.iter().map(sent_at).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    // A message version 1 does not have is left out of the link, counted; the rest goes.
    let mut read_index = heartbeat(1, 1, 2, 10);
    read_index.body = rsl_core::MessageBody::ReadIndexRequest { id: rsl_core::ReadId(7) };
    newer.send(NodeId(2), vec![read_index, heartbeat(1, 1, 2, 11)]).unwrap();
    let after = receive(&mut older_in, 1).await;
    assert_eq!(after.iter().map(sent_at).collect::<Vec<_>>(), [11]);
    assert_eq!(newer.stats().snapshot().dropped_for_version, 1);
    let (refused, accepted) = (older.stats().snapshot(), newer.stats().snapshot());
    assert_eq!(refused.rejected_version, 1, "one refusal, then version 1: {refused:?}");
    assert_eq!(accepted.rejected_version, 0, "a newer endpoint reads version 1: {accepted:?}");
    // A version this build does not speak is refused at configuration.
    let unknown = GrpcConfig { protocol_version: rsl_transport::PROTOCOL_VERSION + 1, ..fast_config() };
    let error = unknown.validate().unwrap_err();
    assert_eq!(error.field, "protocol_version");
    let error = GrpcConfig { protocol_version: 0, ..fast_config() }.validate().unwrap_err();
    assert!(error.problem.contains("the versions this build speaks"), "{error}");
    newer.shutdown(PATIENCE).await;
    older.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_endpoint_restarts() {
    let [(a, mut a_in), (b, _b_in)] = pair(fast_config()).await;
    b.send(NodeId(1), vec![heartbeat(1, 2, 1, 1)]).unwrap();
    assert_eq!(sent_at(&receive(&mut a_in, 1).await[0]), 1);

    let address = a.local_addr();
    a.shutdown(PATIENCE).await;
    drop(a_in);
    eventually("the connection to be seen down", || b.peer_connected(NodeId(1)) == Some(false)).await;
    // Same port, new endpoint: node 2 must find it again on its own.
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let (a, mut a_in) =
        GrpcTransport::builder(NodeId(1)).config(fast_config()).serve(listener).await.unwrap();
    a.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);

    // Frames sent while node 1 was down are lost (best effort), so keep sending until one
    // arrives; each send is a fresh heartbeat, as a primary would do.
    let arrived = tokio::time::timeout(PATIENCE, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut next = 100;
        loop {
            tokio::select! {
                inbound = a_in.recv() => break inbound.unwrap(),
                _ = tick.tick() => {
                    b.send(NodeId(1), vec![heartbeat(1, 2, 1, next)]).unwrap();
                    next += 1;
                }
            }
        }
    })
    .await
    .expect("node 2 never reached the restarted node 1");
    assert!(sent_at(&arrived) >= 100);
    assert_eq!(b.peer_connected(NodeId(1)), Some(true), "up again");
    let stats = b.stats().snapshot();
    assert!(stats.reconnects >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_messages_are_rejected_and_counted() {
    let [(a, _a_in), (b, mut b_in)] = pair(fast_config()).await;
    // Node 2 allows ring 1 = {2, 3} and ring 2 = {1, 2}: node 1 is a stranger to ring 1.
    b.membership().set_members(RingId(1), [NodeId(2), NodeId(3)]);
    b.membership().set_members(RingId(2), [NodeId(1), NodeId(2)]);
    a.send(NodeId(2), (0..5).map(|i| heartbeat(1, 1, 2, i)).collect()).unwrap();
    a.send(NodeId(2), vec![heartbeat(9, 1, 2, 50)]).unwrap();
    // Messages on one stream arrive in order: once this one is in, the others were judged.
    a.send(NodeId(2), vec![heartbeat(2, 1, 2, 99)]).unwrap();
    let got = receive(&mut b_in, 1).await;
    assert_eq!((got[0].message.ring, sent_at(&got[0])), (RingId(2), 99));
    let stats = b.stats().snapshot();
    assert_eq!(stats.rejected_non_member, 5);
    assert_eq!(stats.rejected_unknown_ring, 1);
    assert_eq!(stats.messages_received, 1);
    assert!(b_in.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_refused_on_send_and_on_receive() {
    let small = GrpcConfig {
        frame_bytes_max: 64 * 1024,
        chunk_bytes: 16 * 1024,
        chunked_message_bytes_max: 256 * 1024,
        ..fast_config()
    };
    let [(a, _a_in), (b, mut b_in)] = pair(small.clone()).await;
    let error = a.send(NodeId(2), vec![accept(1, 1, 2, 1, 100), accept(1, 1, 2, 2, 300 * 1024)]).unwrap_err();
    let SendError::TooLarge { bytes, max } = error else { panic!("expected TooLarge, got {error}") };
    assert!(bytes > 300 * 1024);
    assert_eq!(max, small.message_bytes_max());
    assert_eq!(max, 256 * 1024);
    assert_eq!(a.stats().snapshot().messages_sent, 0);
    let max = small.frame_message_bytes_max();
    // The largest message that fits goes through alone.
    let fits = accept(1, 1, 2, 3, (max - 64) as usize);
    assert!(rsl_transport::codec::encoded_len(&fits) <= max);
    a.send(NodeId(2), vec![fits.clone(), heartbeat(1, 1, 2, 4)]).unwrap();
    let got = receive(&mut b_in, 2).await;
    assert_eq!(got[0].message, fits);

    // A sender with a larger limit cannot push a frame past the receiver's limit.
    let (big, _big_in) = endpoint(1, GrpcConfig { frame_bytes_max: 1 << 20, ..fast_config() }).await;
    drop(a);
    big.set_peer_address(NodeId(2), b.local_addr().into()).unwrap();
    big.send(NodeId(2), vec![accept(1, 1, 2, 5, 200 * 1024)]).unwrap();
    eventually("the receiver to refuse the oversized frame", || b.stats().snapshot().decode_errors >= 1)
        .await;
    assert_eq!(b.stats().snapshot().messages_received, 2);
}

async fn raw_client(to: SocketAddr) -> ReplicationClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{to}")).unwrap().connect().await.unwrap();
    ReplicationClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_from_a_peer_are_counted_not_fatal() {
    let [(_a, _a_in), (b, mut b_in)] = pair(fast_config()).await;
    let mut client = raw_client(b.local_addr()).await;
    let good = message_to_proto(&heartbeat(1, 1, 2, 7));
    let missing_body = proto::Message { ring: 1, from: 1, to: 2, ..Default::default() };
    let mut bad_configuration = message_to_proto(&accept(1, 1, 2, 1, 8));
    if let Some(proto::message::Body::Accept(accept)) = &mut bad_configuration.body {
        accept.value = Some(proto::Value {
            kind: Some(proto::value::Kind::Configuration(proto::Configuration {
                number: 1,
                members: vec![3, 1],
                first_slot: 1,
                ..Default::default()
            })),
        });
    }
    let spoofed = message_to_proto(&heartbeat(1, 3, 2, 8));
    // Protocol version 0: a frame of a build before frames stated their version (version 1).
    let batch = proto::Batch {
        from: 1,
        to: 2,
        messages: vec![missing_body, bad_configuration, spoofed, good],
        protocol_version: 0,
        chunks: Vec::new(),
    };
    let summary = client.stream(futures_util::stream::iter(vec![batch])).await.unwrap().into_inner();
    assert_eq!((summary.batches, summary.messages), (1, 1));
    let got = receive(&mut b_in, 1).await;
    assert_eq!(sent_at(&got[0]), 7);
    let stats = b.stats().snapshot();
    assert_eq!((stats.decode_errors, stats.rejected_misrouted), (2, 1));

    // A frame addressed to another node ends the call.
    let misrouted = proto::Batch {
        from: 1,
        to: 99,
        messages: vec![message_to_proto(&heartbeat(1, 1, 99, 1))],
        protocol_version: rsl_transport::PROTOCOL_VERSION,
        chunks: Vec::new(),
    };
    let status = client.stream(futures_util::stream::iter(vec![misrouted])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert_eq!(b.stats().snapshot().rejected_misrouted, 2);
    assert!(b_in.try_recv().is_err());

    // Bytes that are not a Batch at all: the call fails, the error is counted, the server
    // keeps serving.
    let status = send_raw(b.local_addr(), vec![vec![0x0f, 0xff, 0xff], vec![1, 2, 3]]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status}");
    assert_eq!(b.stats().snapshot().decode_errors, 3);
    let mut client = raw_client(b.local_addr()).await;
    let again = proto::Batch {
        from: 1,
        to: 2,
        messages: vec![message_to_proto(&heartbeat(1, 1, 2, 8))],
        protocol_version: rsl_transport::PROTOCOL_VERSION,
        chunks: Vec::new(),
    };
    client.stream(futures_util::stream::iter(vec![again])).await.unwrap();
    assert_eq!(sent_at(&receive(&mut b_in, 1).await[0]), 8);

    // A frame in a protocol version newer than this build speaks ends the call, counted,
    // and the refusal says which version the receiver speaks up to.
    let newer = proto::Batch {
        from: 1,
        to: 2,
        messages: vec![message_to_proto(&heartbeat(1, 1, 2, 9))],
        protocol_version: rsl_transport::PROTOCOL_VERSION + 1,
        chunks: Vec::new(),
    };
    let status = client.stream(futures_util::stream::iter(vec![newer])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(status.message().contains(&format!("protocol version {}", rsl_transport::PROTOCOL_VERSION + 1)));
    let max = status.metadata().get("rsl-protocol-version-max").expect("the refusal names its version");
    assert_eq!(max.to_str().unwrap(), rsl_transport::PROTOCOL_VERSION.to_string());
    assert_eq!(b.stats().snapshot().rejected_version, 1);
    assert!(b_in.try_recv().is_err(), "nothing of the refused frame is delivered");
}

/// Sends arbitrary bytes as frames of the `Replication.Stream` call.
async fn send_raw(to: SocketAddr, frames: Vec<Vec<u8>>) -> Result<proto::StreamSummary, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(buf, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = proto::StreamSummary;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<proto::StreamSummary>, tonic::Status> {
            proto::StreamSummary::decode(buf).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = proto::StreamSummary;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{to}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/rsl.transport.v1.Replication/Stream");
    let request = tonic::Request::new(futures_util::stream::iter(frames));
    grpc.client_streaming(request, path, Raw).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_validated_and_unknown_peers_refused() {
    let (a, _a_in) = endpoint(1, fast_config()).await;
    assert_eq!(a.send(NodeId(2), vec![heartbeat(1, 1, 2, 1)]), Err(SendError::UnknownPeer { to: NodeId(2) }));
    for bad in ["no port", "https://127.0.0.1:1", "127.0.0.1"] {
        let error = a.set_peer_address(NodeId(2), PeerAddress::from(bad)).unwrap_err();
        assert!(matches!(error, AddressError::Invalid { node: NodeId(2), .. }), "{bad}: {error}");
    }
    a.set_peer_address(NodeId(2), PeerAddress::from("http://127.0.0.1:9")).unwrap();
    assert_eq!(a.peer_address(NodeId(2)), Some(PeerAddress::from("http://127.0.0.1:9")));
    a.remove_peer(NodeId(2));
    assert_eq!(a.peer_address(NodeId(2)), None);
    let bad = GrpcConfig { frame_bytes_max: 10, ..GrpcConfig::default() };
    let error =
        GrpcTransport::builder(NodeId(1)).config(bad).bind(LOOPBACK.parse().unwrap()).await.unwrap_err();
    assert!(error.to_string().contains("frame_bytes_max"), "{error}");
}
