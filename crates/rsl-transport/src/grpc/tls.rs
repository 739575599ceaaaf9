//! Mutual TLS material for the gRPC transport (feature `tls`, rustls with ring).

use std::fmt;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// PEM material for mutual TLS: the CA that signs every node's certificate, and this
/// node's certificate and private key.
///
/// The server requires every client to present a certificate chaining to the CA; the client
/// presents its certificate and checks the server's against the CA and the peer address's
/// host name (or [`TlsConfig::with_domain_name`]). Keys are never logged: `Debug` redacts them.
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
