//! Certificates for the mutual TLS tests, generated with rcgen: a CA, and certificates for
//! loopback that name their node the way the transport expects (`rsl://node/<id>`), or
//! name nothing, or name whatever a test needs. Shared with the tests package's gRPC tests.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rsl_core::NodeId;
use rsl_transport::{node_uri, TlsConfig};

/// A certificate and its key, as PEM, and the certificate's DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// A certificate authority.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Authority { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA certificate.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate valid for loopback (`localhost`, `127.0.0.1`), usable as server and
    /// client, carrying the subject alternative name URIs `uris`.
    pub fn certificate(&self, uris: &[String]) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        for uri in uris {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().unwrap()));
        }
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// The certificate of `node`.
    pub fn node(&self, node: u64) -> Issued {
        self.certificate(&[node_uri(NodeId(node))])
    }

    /// A certificate that chains to this CA but names no node, as a client's would.
    pub fn client(&self) -> Issued {
        self.certificate(&[])
    }

    /// The TLS material of `node`.
    pub fn tls(&self, node: u64) -> TlsConfig {
        let issued = self.node(node);
        TlsConfig::new(self.pem(), issued.cert_pem, issued.key_pem)
    }
}
