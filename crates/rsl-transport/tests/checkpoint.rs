//! Checkpoint transfer over the gRPC transport's replica port: a member gets the file (split
//! to fit frames), a non-member, a caller without a node certificate, an impersonator and a
//! replica certified by another CA are refused (and counted), and a peer that breaks the
//! stream format is reported, never trusted. With the feature `rdma`, the same over the
//! RDMA transport's side channel on the emulated provider (its malformed streams are
//! tested beside the code, in `src/rdma/checkpoint.rs`).

mod common;

use bytes::Bytes;
use common::PATIENCE;
use parking_lot::Mutex;
use rsl_core::{NodeId, RingId, Slot};
use rsl_transport::checkpoint::{BoxFuture, ChunkError};
use rsl_transport::proto::checkpoint_chunk::Part;
use rsl_transport::proto::checkpoint_transfer_server::{CheckpointTransfer, CheckpointTransferServer};
use rsl_transport::{
    proto, CheckpointFetcher, CheckpointRequest, CheckpointSource, CheckpointStream, GrpcBuilder, GrpcConfig,
    GrpcTransport, TransferError, Transport,
};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

const RING: RingId = RingId(1);

/// One checkpoint file per ring, served in pieces of 3000 bytes; counts opens.
#[derive(Debug, Default)]
struct Files {
    files: Mutex<Vec<(RingId, Slot, Vec<u8>)>>,
    opened: AtomicU64,
}

impl CheckpointSource for Files {
    fn open(&self, request: CheckpointRequest) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let file = self.files.lock().iter().find(|(ring, ..)| *ring == request.ring).cloned();
        Box::pin(async move {
            let Some((_, slot, bytes)) = file else {
                return Err(TransferError::UnknownRing { node: NodeId(1), ring: request.ring });
            };
            if slot < request.min_slot {
                return Err(TransferError::NoCheckpoint { ring: request.ring, slot: request.min_slot });
            }
            let (sender, chunks) = mpsc::channel(4);
            let file_bytes = bytes.len() as u64;
            tokio::spawn(async move {
                for piece in bytes.chunks(3000) {
                    if sender.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                        return;
                    }
                }
            });
            Ok(CheckpointStream { slot, file_bytes, chunks })
        })
    }
}

fn file(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i * 7 % 251) as u8).collect()
}

fn config() -> GrpcConfig {
    // Small frames: the 3000-byte pieces must be split to fit.
    GrpcConfig { frame_bytes_max: 1024, backoff_initial_ms: 10, backoff_max_ms: 100, ..GrpcConfig::default() }
}

async fn bind(builder: GrpcBuilder) -> GrpcTransport {
    let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (transport, _inbound) = builder.config(config()).bind(address).await.unwrap();
    transport.membership().set_members(RING, [NodeId(1), NodeId(2)]);
    transport
}

/// Node 1 serving `files`; returns it with its source.
async fn server(builder: GrpcBuilder, files: Vec<(RingId, Slot, Vec<u8>)>) -> (GrpcTransport, Arc<Files>) {
    let transport = bind(builder).await;
    let source = Arc::new(Files { files: Mutex::new(files), ..Files::default() });
    transport.serve_checkpoints(source.clone()).expect("the gRPC transport carries checkpoints");
    (transport, source)
}

/// The fetcher of the endpoint `builder` builds, which knows node 1 at `address`.
async fn fetcher(builder: GrpcBuilder, address: String) -> (GrpcTransport, Arc<dyn CheckpointFetcher>) {
    let transport = bind(builder).await;
    let fetcher = transport.serve_checkpoints(Arc::new(Files::default())).unwrap();
    transport.set_peer_address(NodeId(1), address.into()).unwrap();
    (transport, fetcher)
}

fn request(requester: u64, min_slot: u64) -> CheckpointRequest {
    CheckpointRequest { ring: RING, requester: NodeId(requester), min_slot: Slot(min_slot) }
}

/// Every byte of `stream`, or the first error.
async fn read_all(mut stream: CheckpointStream) -> Result<Vec<u8>, TransferError> {
    let mut bytes = Vec::new();
    let collect = async {
        while let Some(chunk) = stream.chunks.recv().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(())
    };
    tokio::time::timeout(PATIENCE, collect).await.expect("the stream ends")?;
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_fetches_a_checkpoint_split_to_fit_frames() {
    let expected = file(10_000);
    let (a, source) =
        server(GrpcTransport::builder(NodeId(1)), vec![(RING, Slot(40), expected.clone())]).await;
    let (_b, fetch) = fetcher(GrpcTransport::builder(NodeId(2)), a.local_addr().to_string()).await;

    let stream = fetch.fetch(NodeId(1), request(2, 30)).await.unwrap();
    assert_eq!((stream.slot, stream.file_bytes), (Slot(40), 10_000));
    assert_eq!(read_all(stream).await.unwrap(), expected);
    let stats = a.stats().snapshot();
    assert_eq!((stats.checkpoints_served, stats.checkpoint_bytes_served), (1, 10_000));

    // Nothing new enough, or no such ring: NOT_FOUND, which means "no checkpoint here".
    let newer = fetch.fetch(NodeId(1), request(2, 41)).await.unwrap_err();
    assert_eq!(newer, TransferError::NoCheckpoint { ring: RING, slot: Slot(41) });
    let other = CheckpointRequest { ring: RingId(5), ..request(2, 0) };
    assert!(matches!(fetch.fetch(NodeId(1), other).await, Err(TransferError::NoCheckpoint { .. })));
    // A node without an address is unreachable.
    assert_eq!(
        fetch.fetch(NodeId(7), request(2, 0)).await.unwrap_err(),
        TransferError::Unreachable { node: NodeId(7) }
    );
    assert_eq!(source.opened.load(Ordering::SeqCst), 2, "the unknown ring never reaches the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_plaintext_a_non_member_is_refused_and_counted() {
    let (a, source) = server(GrpcTransport::builder(NodeId(1)), vec![(RING, Slot(4), file(100))]).await;
    let (_c, fetch) = fetcher(GrpcTransport::builder(NodeId(9)), a.local_addr().to_string()).await;
    let refused = fetch.fetch(NodeId(1), request(9, 0)).await.unwrap_err();
    assert!(
        matches!(&refused, TransferError::Refused { node: NodeId(1), reason } if reason.contains("not a member")),
        "{refused}"
    );
    let stats = a.stats().snapshot();
    assert_eq!((stats.checkpoint_requests_refused, stats.checkpoints_served), (1, 0));
    assert_eq!(source.opened.load(Ordering::SeqCst), 0);
}

/// A peer that answers every fetch with `chunks`.
#[derive(Clone)]
struct Canned(Vec<proto::CheckpointChunk>);

type CannedStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<proto::CheckpointChunk, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl CheckpointTransfer for Canned {
    type FetchStream = CannedStream;

    async fn fetch(
        &self,
        _request: tonic::Request<proto::CheckpointFetch>,
    ) -> Result<tonic::Response<CannedStream>, tonic::Status> {
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(self.0.clone().into_iter().map(Ok)))))
    }
}

async fn canned_peer(chunks: Vec<proto::CheckpointChunk>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .serve_with_incoming(CheckpointTransferServer::new(Canned(chunks)), incoming),
    );
    address
}

fn header(slot: u64, file_bytes: u64) -> proto::CheckpointChunk {
    proto::CheckpointChunk { part: Some(Part::Header(proto::CheckpointHeader { slot, file_bytes })) }
}

fn data(bytes: &'static [u8]) -> proto::CheckpointChunk {
    proto::CheckpointChunk { part: Some(Part::Data(Bytes::from_static(bytes))) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_breaks_the_stream_format_is_reported() {
    let cases = [
        (vec![data(b"abc")], ChunkError::MissingHeader),
        (
            vec![header(5, 4), data(b"abc"), data(b"de")],
            ChunkError::Oversized { index: 2, announced: 4, received: 5 },
        ),
        (vec![header(5, 4), data(b"ab")], ChunkError::Incomplete { announced: 4, received: 2 }),
        (vec![header(5, 4), header(5, 4)], ChunkError::SecondHeader { index: 1 }),
        (vec![], ChunkError::Incomplete { announced: 0, received: 0 }),
    ];
    for (chunks, expected) in cases {
        let peer = canned_peer(chunks).await;
        let (_b, fetch) = fetcher(GrpcTransport::builder(NodeId(2)), peer.to_string()).await;
        let outcome = match fetch.fetch(NodeId(1), request(2, 0)).await {
            Ok(stream) => read_all(stream).await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert_eq!(
            outcome,
            Err(TransferError::Malformed { node: NodeId(1), problem: expected.clone() }),
            "{expected}"
        );
    }
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use common::pki::{Authority, Issued};
    use rsl_transport::proto::checkpoint_transfer_client::CheckpointTransferClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    /// A raw fetch presenting `identity` (if any) and claiming `requester`; the refusal.
    async fn raw_fetch(
        server: SocketAddr,
        ca: &str,
        identity: Option<Issued>,
        requester: u64,
    ) -> tonic::Status {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
        if let Some(issued) = identity {
            tls = tls.identity(Identity::from_pem(issued.cert_pem, issued.key_pem));
        }
        let endpoint = Endpoint::from_shared(format!("https://{server}")).unwrap().tls_config(tls).unwrap();
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => return tonic::Status::unavailable(format!("connect: {error}")),
        };
        let asked = proto::CheckpointFetch { ring: RING.0, requester, to: 1, min_slot: 0 };
        CheckpointTransferClient::new(channel).fetch(asked).await.expect_err("the request must be refused")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_mutual_tls_only_the_certified_member_gets_a_checkpoint() {
        let ca = Authority::new("ring CA");
        let expected = file(5_000);
        let (a, source) =
            server(GrpcTransport::builder(NodeId(1)).tls(ca.tls(1)), vec![(RING, Slot(8), expected.clone())])
                .await;
        let address = format!("https://{}", a.local_addr());

        // The member, certified as node 2.
        let (_b, member) = fetcher(GrpcTransport::builder(NodeId(2)).tls(ca.tls(2)), address.clone()).await;
        let stream = member.fetch(NodeId(1), request(2, 0)).await.unwrap();
        assert_eq!(read_all(stream).await.unwrap(), expected);

        // A non-member certified by the ring's CA as node 9.
        let (_c, stranger) = fetcher(GrpcTransport::builder(NodeId(9)).tls(ca.tls(9)), address.clone()).await;
        let refused = stranger.fetch(NodeId(1), request(9, 0)).await.unwrap_err();
        assert!(matches!(refused, TransferError::Refused { .. }), "{refused}");

        // A replica certified as node 2, a member, by another CA: the handshake fails.
        let other = Authority::new("foreign CA");
        let (_d, foreign) =
            fetcher(GrpcTransport::builder(NodeId(2)).tls(other.tls(2)), address.clone()).await;
        let refused = foreign.fetch(NodeId(1), request(2, 0)).await.unwrap_err();
        assert_eq!(refused, TransferError::Unreachable { node: NodeId(1) });

        // A client: a certificate of the ring's CA that names no node, or no certificate.
        let client = raw_fetch(a.local_addr(), &ca.pem(), Some(ca.client()), 2).await;
        assert_eq!(client.code(), tonic::Code::Unauthenticated, "{client}");
        let anonymous = raw_fetch(a.local_addr(), &ca.pem(), None, 2).await;
        assert_ne!(anonymous.code(), tonic::Code::Ok, "{anonymous}");
        // The non-member claiming to be member 2 from its own certificate.
        let impostor = raw_fetch(a.local_addr(), &ca.pem(), Some(ca.node(9)), 2).await;
        assert_eq!(impostor.code(), tonic::Code::PermissionDenied, "{impostor}");

        let stats = a.stats().snapshot();
        assert_eq!(stats.checkpoints_served, 1, "{stats:?}");
        assert_eq!(stats.checkpoint_requests_refused, 3, "non-member, client, impostor: {stats:?}");
        assert_eq!((stats.rejected_unauthenticated, stats.rejected_impersonation), (1, 1), "{stats:?}");
        assert_eq!(source.opened.load(Ordering::SeqCst), 1, "only the member's request reached the source");
    }
}

#[cfg(feature = "rdma")]
mod rdma {
    use super::*;
    use rsl_transport::rdma::emulated::{EmulatedConfig, EmulatedDevice};
    use rsl_transport::rdma::{RdmaConfig, RdmaTransport};

    /// Node `node`'s RDMA endpoint on the emulated provider, with 1 KiB checkpoint frames
    /// (the 3000-byte pieces must be split), admitting nodes 1 and 2 on the ring.
    fn endpoint(node: u64) -> RdmaTransport {
        let device = EmulatedDevice::open(EmulatedConfig::default()).unwrap();
        let config = RdmaConfig {
            ring_bytes: 64 << 10,
            frame_bytes_max: 16 << 10,
            checkpoint_frame_bytes_max: 1024,
            ..RdmaConfig::default()
        };
        let (transport, _inbound) = RdmaTransport::builder(NodeId(node))
            .config(config)
            .device(Arc::new(device))
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        transport.membership().set_members(RING, [NodeId(1), NodeId(2)]);
        transport
    }

    /// Node `node`'s fetcher, which knows node 1 at `server`.
    fn fetcher(node: u64, server: &RdmaTransport) -> (RdmaTransport, Arc<dyn CheckpointFetcher>) {
        let transport = endpoint(node);
        let fetcher =
            transport.serve_checkpoints(Arc::new(Files::default())).expect("RDMA carries checkpoints");
        transport.set_peer_address(NodeId(1), server.local_addr().into()).unwrap();
        (transport, fetcher)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_fetches_a_checkpoint_over_the_side_channel() {
        let expected = file(10_000);
        let a = endpoint(1);
        // Before a runtime attaches a source, the endpoint serves nothing.
        let (b, fetch) = fetcher(2, &a);
        let unserved = fetch.fetch(NodeId(1), request(2, 0)).await.unwrap_err();
        assert_eq!(unserved, TransferError::Unreachable { node: NodeId(1) });

        let source = Arc::new(Files {
            files: Mutex::new(vec![(RING, Slot(40), expected.clone())]),
            ..Files::default()
        });
        a.serve_checkpoints(source.clone()).expect("RDMA carries checkpoints");
        let stream = fetch.fetch(NodeId(1), request(2, 30)).await.unwrap();
        assert_eq!((stream.slot, stream.file_bytes), (Slot(40), 10_000));
        assert_eq!(read_all(stream).await.unwrap(), expected);
        let stats = a.stats().snapshot();
        assert_eq!((stats.checkpoints_served, stats.checkpoint_bytes_served), (1, 10_000));

        let newer = fetch.fetch(NodeId(1), request(2, 41)).await.unwrap_err();
        assert_eq!(newer, TransferError::NoCheckpoint { ring: RING, slot: Slot(41) });
        let other = CheckpointRequest { ring: RingId(5), ..request(2, 0) };
        assert!(matches!(fetch.fetch(NodeId(1), other).await, Err(TransferError::NoCheckpoint { .. })));
        assert_eq!(
            fetch.fetch(NodeId(7), request(2, 0)).await.unwrap_err(),
            TransferError::Unreachable { node: NodeId(7) }
        );
        assert_eq!(source.opened.load(Ordering::SeqCst), 2, "the unknown ring never reaches the source");
        drop(b);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_member_is_refused_and_counted() {
        let a = endpoint(1);
        let source =
            Arc::new(Files { files: Mutex::new(vec![(RING, Slot(4), file(100))]), ..Files::default() });
        a.serve_checkpoints(source.clone()).unwrap();
        let (_c, fetch) = fetcher(9, &a);
        let refused = fetch.fetch(NodeId(1), request(9, 0)).await.unwrap_err();
        assert!(
            matches!(&refused, TransferError::Refused { node: NodeId(1), reason } if reason.contains("not a member")),
            "{refused}"
        );
        // A member's request addressed to another node (its address book is wrong) too.
        let (d, misaddressed) = fetcher(2, &a);
        d.set_peer_address(NodeId(3), a.local_addr().into()).unwrap();
        let wrong = misaddressed.fetch(NodeId(3), request(2, 0)).await.unwrap_err();
        assert!(
            matches!(&wrong, TransferError::Refused { node: NodeId(3), reason } if reason.contains("addressed to node 3")),
            "{wrong}"
        );
        let stats = a.stats().snapshot();
        assert_eq!((stats.checkpoint_requests_refused, stats.checkpoints_served), (2, 0));
        assert_eq!(source.opened.load(Ordering::SeqCst), 0);
    }
}
