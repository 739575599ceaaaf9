//! Mutual TLS (feature `tls`): certified peers exchange messages; a client without a
//! certificate, or with one from another CA, is refused. Certificates are generated here.
#![cfg(feature = "tls")]

mod common;

use common::{heartbeat, receive, PATIENCE};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rsl_core::{NodeId, RingId};
use rsl_transport::codec::message_to_proto;
use rsl_transport::proto::replication_client::ReplicationClient;
use rsl_transport::{proto, GrpcConfig, GrpcTransport, TlsConfig, Transport};
use std::net::SocketAddr;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Authority { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate valid for loopback, usable as server and client. Returns (cert, key).
    fn node(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn tls(&self) -> TlsConfig {
        let (cert, key) = self.node();
        TlsConfig::new(self.pem(), cert, key)
    }
}

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
    let (a, mut a_in) = endpoint(1, ca.tls()).await;
    let (b, mut b_in) = endpoint(2, ca.tls()).await;
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

/// Connects to `server` trusting `ca`, presenting `identity` if any, and sends one frame.
async fn try_client(server: SocketAddr, ca: &str, identity: Option<(String, String)>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{server}")).unwrap().tls_config(tls).unwrap();
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
    let batch = proto::Batch { from: 1, to: 2, messages: vec![message_to_proto(&heartbeat(1, 1, 2, 7))] };
    let mut client = ReplicationClient::new(channel);
    client.stream(futures_util::stream::iter(vec![batch])).await.map(|_| ()).map_err(|e| format!("call: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_are_refused() {
    let ca = Authority::new("rsl test CA");
    let (b, mut b_in) = endpoint(2, ca.tls()).await;
    let server = b.local_addr();

    let no_cert = try_client(server, &ca.pem(), None).await;
    assert!(no_cert.is_err(), "a client without a certificate got through");
    let other_ca = Authority::new("another CA");
    let foreign = try_client(server, &ca.pem(), Some(other_ca.node())).await;
    assert!(foreign.is_err(), "a client certified by another CA got through");
    assert_eq!(b.stats().snapshot().messages_received, 0);
    assert!(b_in.try_recv().is_err());

    // The same raw client with a certificate from the right CA is served.
    try_client(server, &ca.pem(), Some(ca.node())).await.unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].message, heartbeat(1, 1, 2, 7));
}
