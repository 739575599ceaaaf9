//! Mutual TLS material for the gRPC transport (feature `tls`, rustls with ring), and the
//! convention that binds a certificate to a node id.

use super::BindError;
use rsl_core::NodeId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How a certificate names its node: a subject alternative name URI `rsl://node/<id>`,
/// `<id>` in decimal without sign or leading zeros (see [`node_uri`]).
pub const NODE_URI_PREFIX: &str = "rsl://node/";

/// The subject alternative name URI that a certificate of `node` carries:
/// `rsl://node/<id>` (`rsl://node/3` for node 3).
pub fn node_uri(node: NodeId) -> String {
    format!("{NODE_URI_PREFIX}{}", node.0)
}

/// Why a certificate does not identify a node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    /// The certificate does not parse as X.509.
    #[error("the certificate does not parse: {reason}")]
    Unparseable {
        /// The parser's error.
        reason: String,
    },
    /// No subject alternative name URI starts with `rsl://node/`.
    #[error("the certificate names no node (no subject alternative name URI {NODE_URI_PREFIX}<id>)")]
    NoNode,
    /// A `rsl://node/` URI whose id is not a canonical decimal u64.
    #[error("the certificate's URI {uri:?} is not {NODE_URI_PREFIX}<decimal id>")]
    BadNodeUri {
        /// The URI.
        uri: String,
    },
    /// The certificate names two different nodes.
    #[error("the certificate names both {first} and {second}")]
    SeveralNodes {
        /// One node named.
        first: NodeId,
        /// Another.
        second: NodeId,
    },
}

/// The node a DER certificate names by its `rsl://node/<id>` URI ([`NODE_URI_PREFIX`]).
///
/// Only the name is read here; that the certificate chains to the ring's CA is checked by
/// the TLS handshake before any call reaches the transport.
pub fn certificate_node(der: &[u8]) -> Result<NodeId, CertificateIdentityError> {
    let der = CertificateDer::from(der);
    let certificate = webpki::EndEntityCert::try_from(&der)
        .map_err(|error| CertificateIdentityError::Unparseable { reason: error.to_string() })?;
    let mut named: Option<NodeId> = None;
    for uri in certificate.valid_uri_names() {
        let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) else { continue };
        let canonical =
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
        let node = match id.parse::<u64>() {
            Ok(id) if canonical => NodeId(id),
            _ => return Err(CertificateIdentityError::BadNodeUri { uri: uri.to_owned() }),
        };
        match named {
            Some(first) if first != node => {
                return Err(CertificateIdentityError::SeveralNodes { first, second: node })
            }
            _ => named = Some(node),
        }
    }
    named.ok_or(CertificateIdentityError::NoNode)
}

/// PEM material for mutual TLS: the CA that signs every node's certificate, and this
/// node's certificate and private key.
///
/// The server requires every client to present a certificate chaining to the CA; the client
/// presents its certificate and checks the server's against the CA and the peer address's
/// host name (or [`TlsConfig::with_domain_name`]). Keys are never logged: `Debug` redacts them.
///
/// # Node identity
/// A node's certificate names its node with a subject alternative name URI
/// `rsl://node/<id>` ([`node_uri`]), next to the DNS names or addresses it serves on. The
/// server takes a caller's node id from that URI, never from what the caller claims: a
/// replica stream whose frames claim another sender is refused with `PERMISSION_DENIED`,
/// a certificate that names no node (a client's, say) gets `UNAUTHENTICATED`, and a
/// checkpoint is served only to the certificate's node, and only if it is a member of the
/// ring. The CA is the trust root: whoever holds a key it certified for a node id is that
/// node. Without TLS none of this holds: ids are taken on faith (tests and demos only).
#[derive(Clone)]
pub struct TlsConfig {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    domain_name: Option<String>,
}

impl TlsConfig {
    /// Material from PEM text: the CA certificate, this node's certificate (chain) and key.
    pub fn new(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> TlsConfig {
        TlsConfig {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            domain_name: None,
        }
    }

    /// Verifies every server's certificate against `domain_name` instead of the host in
    /// the peer's address (useful when all nodes share one certificate name).
    pub fn with_domain_name(mut self, domain_name: impl Into<String>) -> TlsConfig {
        self.domain_name = Some(domain_name.into());
        self
    }

    /// Checks that this node's certificate (the first of `cert_pem`) names `local`: peers
    /// refuse every call from a certificate that names no node or another one.
    pub(crate) fn check_names(&self, local: NodeId) -> Result<(), BindError> {
        let refused = |problem: String| BindError::Tls { problem };
        let first = CertificateDer::from_pem_slice(&self.cert_pem)
            .map_err(|error| refused(format!("this node's certificate PEM: {error}")))?;
        match certificate_node(&first) {
            Ok(node) if node == local => Ok(()),
            Ok(node) => Err(refused(format!(
                "this node's certificate names {node} ({}), but the endpoint is {local}",
                node_uri(node)
            ))),
            Err(error) => Err(refused(format!(
                "this node's certificate: {error}; peers would refuse it (add the URI {})",
                node_uri(local)
            ))),
        }
    }

    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    pub(crate) fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.domain_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .field("domain_name", &self.domain_name)
            .finish()
    }
}
