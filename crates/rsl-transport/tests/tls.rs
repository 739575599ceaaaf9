//! Mutual TLS (feature `tls`): certified peers exchange messages; a client without a
//! certificate, with one from another CA, or with one that names no node is refused; a
//! frame that claims another sender than its certificate names is refused; the identity
//! convention (`rsl://node/<id>`) is parsed strictly. Certificates are generated here.
#![cfg(feature = "tls")]

mod common;

use common::pki::{Authority, Issued};
use common::{heartbeat, receive, PATIENCE};
use rsl_core::{NodeId, RingId};
use rsl_transport::codec::message_to_proto;
use rsl_transport::proto::replication_client::ReplicationClient;
use rsl_transport::{
    certificate_node, proto, BindError, CertificateIdentityError, GrpcConfig, GrpcTransport, TlsConfig,
    Transport,
};
use std::net::SocketAddr;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn endpoint(
    node: u64,
    tls: TlsConfig,
) -> (GrpcTransport, tokio::sync::mpsc::Receiver<rsl_transport::Inbound>) {
    let config = GrpcConfig { backoff_initial_ms: 10, backoff_max_ms: 100, ..GrpcConfig::default() };
    let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (transport, inbound) =
        GrpcTransport::builder(NodeId(node)).config(config).tls(tls).bind(address).await.unwrap();
    transport.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    (transport, inbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_exchange_works() {
    let ca = Authority::new("rsl test CA");
    let (a, mut a_in) = endpoint(1, ca.tls(1)).await;
    let (b, mut b_in) = endpoint(2, ca.tls(2)).await;
    a.set_peer_address(NodeId(2), b.local_addr().into()).unwrap();
    b.set_peer_address(NodeId(1), format!("https://{}", a.local_addr()).into()).unwrap();
    a.send(NodeId(2), (0..10).map(|i| heartbeat(1, 1, 2, i)).collect()).unwrap();
    b.send(NodeId(1), vec![heartbeat(1, 2, 1, 42)]).unwrap();
    assert_eq!(receive(&mut b_in, 10).await.len(), 10);
    assert_eq!(receive(&mut a_in, 1).await[0].message, heartbeat(1, 2, 1, 42));
    // A plain-text address is refused up front when TLS is configured.
    assert!(a.set_peer_address(NodeId(3), format!("http://{}", b.local_addr()).into()).is_err());
    a.shutdown(PATIENCE).await;
    b.shutdown(PATIENCE).await;
}

/// Connects to `server` trusting `ca`, presenting `identity` if any, and sends one frame
/// from node `from` (a heartbeat of ring 1 to node 2).
async fn try_client(
    server: SocketAddr,
    ca: &str,
    identity: Option<Issued>,
    from: u64,
) -> Result<(), tonic::Status> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(issued.cert_pem, issued.key_pem));
    }
    let endpoint = Endpoint::from_shared(format!("https://{server}")).unwrap().tls_config(tls).unwrap();
    let channel =
        endpoint.connect().await.map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let batch = proto::Batch {
        from,
        to: 2,
        messages: vec![message_to_proto(&heartbeat(1, from, 2, 7))],
        protocol_version: rsl_transport::PROTOCOL_VERSION,
        chunks: Vec::new(),
    };
    let mut client = ReplicationClient::new(channel);
    client.stream(futures_util::stream::iter(vec![batch])).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_are_refused() {
    let ca = Authority::new("rsl test CA");
    let (b, mut b_in) = endpoint(2, ca.tls(2)).await;
    let server = b.local_addr();

    let no_cert = try_client(server, &ca.pem(), None, 1).await;
    assert!(no_cert.is_err(), "a client without a certificate got through");
    let other_ca = Authority::new("another CA");
    let foreign = try_client(server, &ca.pem(), Some(other_ca.node(1)), 1).await;
    assert!(foreign.is_err(), "a client certified by another CA got through");
    assert_eq!(b.stats().snapshot().messages_received, 0);
    assert!(b_in.try_recv().is_err());

    // A certificate of the right CA that names no node: refused, counted.
    let nameless = try_client(server, &ca.pem(), Some(ca.client()), 1).await.unwrap_err();
    assert_eq!(nameless.code(), tonic::Code::Unauthenticated, "{nameless}");
    assert_eq!(b.stats().snapshot().rejected_unauthenticated, 1);
    assert!(b_in.try_recv().is_err());

    // The same raw client with node 1's certificate is served.
    try_client(server, &ca.pem(), Some(ca.node(1)), 1).await.unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].message, heartbeat(1, 1, 2, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_claiming_another_node_than_its_certificate_is_refused() {
    let ca = Authority::new("rsl test CA");
    let (b, mut b_in) = endpoint(2, ca.tls(2)).await;
    b.membership().set_members(RingId(1), [NodeId(1), NodeId(2), NodeId(3)]);
    // Node 3's certificate, frames claiming node 1 (a member): refused and counted.
    let forged = try_client(b.local_addr(), &ca.pem(), Some(ca.node(3)), 1).await.unwrap_err();
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged}");
    let stats = b.stats().snapshot();
    assert_eq!((stats.rejected_impersonation, stats.messages_received), (1, 0));
    assert!(b_in.try_recv().is_err());
    // Node 3 speaking as itself is served.
    try_client(b.local_addr(), &ca.pem(), Some(ca.node(3)), 3).await.unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].from, NodeId(3));
}

#[tokio::test]
async fn an_endpoint_refuses_a_certificate_that_does_not_name_it() {
    let ca = Authority::new("rsl test CA");
    let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let wrong = GrpcTransport::builder(NodeId(2)).tls(ca.tls(1)).bind(address).await;
    assert!(
        matches!(&wrong, Err(BindError::Tls { problem }) if problem.contains("names n1 (rsl://node/1)")),
        "{wrong:?}"
    );
    let client = ca.client();
    let nameless = TlsConfig::new(ca.pem(), client.cert_pem, client.key_pem);
    let nameless = GrpcTransport::builder(NodeId(2)).tls(nameless).bind(address).await;
    assert!(
        matches!(&nameless, Err(BindError::Tls { problem }) if problem.contains("rsl://node/2")),
        "{nameless:?}"
    );
}

#[test]
fn the_node_is_read_from_the_certificate_strictly() {
    let ca = Authority::new("rsl test CA");
    let of = |uris: &[&str]| {
        let uris: Vec<String> = uris.iter().map(|uri| uri.to_string()).collect();
        certificate_node(&ca.certificate(&uris).der)
    };
    assert_eq!(of(&["rsl://node/7"]), Ok(NodeId(7)));
    assert_eq!(of(&["spiffe://example/x", "rsl://node/0"]), Ok(NodeId(0)));
    assert_eq!(of(&["rsl://node/7", "rsl://node/7"]), Ok(NodeId(7)));
    assert_eq!(of(&[]), Err(CertificateIdentityError::NoNode));
    assert_eq!(of(&["https://node/7"]), Err(CertificateIdentityError::NoNode));
    for bad in
        ["rsl://node/", "rsl://node/07", "rsl://node/+7", "rsl://node/7/x", "rsl://node/99999999999999999999"]
    {
        assert_eq!(of(&[bad]), Err(CertificateIdentityError::BadNodeUri { uri: bad.to_owned() }), "{bad}");
    }
    assert_eq!(
        of(&["rsl://node/1", "rsl://node/2"]),
        Err(CertificateIdentityError::SeveralNodes { first: NodeId(1), second: NodeId(2) })
    );
    assert!(matches!(
        certificate_node(b"not a certificate"),
        Err(CertificateIdentityError::Unparseable { .. })
    ));
}
