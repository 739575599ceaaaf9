//! How a client reaches the servers' client API: over TLS ([`ClientTls`]: the CA that signs
//! the servers' certificates, optionally a client certificate) and with a bearer token
//! ([`Token`], sent as `authorization: Bearer <token>` metadata on every call), as
//! [`ClientSecurity`] says. The [`crate::Client`], the load generator and the tests all
//! connect through [`endpoint`] and [`kv_client`], so each speaks to a server set up with
//! `[client_tls]` and `[auth]` the same way.
//!
//! ```
//! use rsl_kv::connection::{ClientSecurity, Token};
//! use rsl_kv::ClientOptions;
//!
//! let options = ClientOptions {
//!     security: ClientSecurity { token: Some(Token::new("s3cret-t0ken")?), ..ClientSecurity::default() },
//!     ..ClientOptions::default()
//! };
//! // Tokens never show in logs.
//! assert!(!format!("{options:?}").contains("s3cret"));
//! # Ok::<(), rsl_kv::ClientError>(())
//! ```

use std::fmt;
use std::path::Path;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::client::ClientError;
use crate::proto::kv_client::KvClient;

/// Longest token accepted, in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// TLS and credentials of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    /// Connect over TLS (`None`: plaintext).
    pub tls: Option<ClientTls>,
    /// The bearer token sent with every call (`None`: none; a client certificate may
    /// still identify the client).
    pub token: Option<Token>,
}

/// TLS material of a client: the CA that signs the servers' certificates, and optionally
/// a client certificate and key (for servers that verify client certificates).
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

impl ClientTls {
    /// Trusts servers whose certificate chains to the CA in `ca_pem` and names the host
    /// the client connects to.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> ClientTls {
        ClientTls { ca_pem: ca_pem.into(), identity: None, domain_name: None }
    }

    /// Presents the certificate (chain) `cert_pem` with key `key_pem`.
    pub fn with_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> ClientTls {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Checks the servers' certificates against `domain_name` instead of the host in
    /// their address.
    pub fn with_domain_name(mut self, domain_name: impl Into<String>) -> ClientTls {
        self.domain_name = Some(domain_name.into());
        self
    }

    /// Reads the CA and, if given, the client certificate and key from PEM files.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, ClientError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|error| ClientError::Tls(format!("reading the {what} {}: {error}", path.display())))
        };
        let tls = ClientTls::new(read("CA certificate", ca)?);
        Ok(match identity {
            Some((cert, key)) => {
                tls.with_identity(read("client certificate", cert)?, read("client key", key)?)
            }
            None => tls,
        })
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.as_ref().map(|_| "<certificate and redacted key>"))
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

/// A bearer token, kept as the metadata value it is sent as. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(AsciiMetadataValue);

impl Token {
    /// `token` (surrounding white space removed): 1 to [`TOKEN_BYTES_MAX`] visible ASCII
    /// characters.
    pub fn new(token: &str) -> Result<Token, ClientError> {
        let token = token.trim();
        let invalid = |problem: &str| ClientError::InvalidToken(problem.to_owned());
        if token.is_empty() {
            return Err(invalid("the token is empty"));
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(invalid(&format!("the token has {} bytes, at most {TOKEN_BYTES_MAX}", token.len())));
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid("the token must be visible ASCII characters without spaces"));
        }
        let mut value: AsciiMetadataValue = format!("Bearer {token}")
            .parse()
            .map_err(|_| invalid("the token is not a valid metadata value"))?;
        value.set_sensitive(true);
        Ok(Token(value))
    }
}

impl Token {
    /// The token on the first line of the file at `path` (how `rsl-kv --token-file` and a
    /// joining server's `join_credentials.token_file` read it).
    pub fn from_file(path: &Path) -> Result<Token, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ClientError::InvalidToken(format!("cannot read the token file {}: {error}", path.display()))
        })?;
        Token::new(text.lines().next().unwrap_or_default()).map_err(|error| match error {
            ClientError::InvalidToken(problem) => {
                ClientError::InvalidToken(format!("{problem} (the first line of {})", path.display()))
            }
            other => other,
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone, Debug)]
pub struct Authorize {
    token: Option<Token>,
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(Token(value)) = &self.token {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to a server that presents the client's token on every call.
pub type KvChannel = InterceptedService<Channel, Authorize>;

/// The `Kv` client of `channel`, sending `security`'s token.
pub fn kv_client(channel: Channel, security: &ClientSecurity) -> KvClient<KvChannel> {
    KvClient::with_interceptor(channel, Authorize { token: security.token.clone() })
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
}

/// Largest message the client sends or takes: the largest write the encoding allows (a
/// server refuses what its `tuning.request_bytes_max` does not take) with room to spare.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = crate::command::WRITE_BYTES_MAX + (1 << 20);

/// The endpoint of `server` (`host:port`, or a URI whose scheme matches: `https` with TLS,
/// `http` without) with `security`'s TLS.
pub fn endpoint(server: &str, security: &ClientSecurity) -> Result<Endpoint, ClientError> {
    let invalid = |problem: String| ClientError::InvalidAddress { address: server.to_owned(), problem };
    let wanted = if security.tls.is_some() { "https" } else { "http" };
    let uri = match server.split_once("://") {
        Some((scheme, _)) if scheme == wanted => server.to_owned(),
        Some((scheme, _)) => {
            return Err(invalid(format!("scheme {scheme:?}, but this client connects with {wanted}")))
        }
        None => format!("{wanted}://{server}"),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|error| invalid(error.to_string()))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(invalid("expected host:port".into()));
    }
    match &security.tls {
        None => Ok(endpoint),
        Some(tls) => with_tls(endpoint, tls),
    }
}

#[cfg(feature = "tls")]
fn with_tls(endpoint: Endpoint, tls: &ClientTls) -> Result<Endpoint, ClientError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = &tls.domain_name {
        config = config.domain_name(name.clone());
    }
    endpoint.tls_config(config).map_err(|error| ClientError::Tls(error.to_string()))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_endpoint: Endpoint, _tls: &ClientTls) -> Result<Endpoint, ClientError> {
    Err(ClientError::Tls("this rsl-kv was built without TLS (cargo feature `tls`)".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_sent_as_bearer_metadata() {
        for bad in ["", "  ", "two words", "caf\u{e9}"] {
            assert!(matches!(Token::new(bad), Err(ClientError::InvalidToken(_))), "{bad:?}");
        }
        assert!(Token::new(&"t".repeat(TOKEN_BYTES_MAX + 1)).is_err());
        let mut authorize = Authorize { token: Some(Token::new(" abc \n").unwrap()) };
        let request = authorize.call(Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut anonymous = Authorize { token: None };
        assert!(anonymous.call(Request::new(())).unwrap().metadata().get("authorization").is_none());
    }

    #[test]
    fn the_scheme_follows_tls() {
        let plain = ClientSecurity::default();
        assert_eq!(endpoint("127.0.0.1:7101", &plain).unwrap().uri().scheme_str(), Some("http"));
        assert!(endpoint("https://127.0.0.1:7101", &plain).is_err());
        assert!(endpoint("127.0.0.1", &plain).is_err());
        let tls = ClientSecurity { tls: Some(ClientTls::new(Vec::new())), token: None };
        let debug =
            format!("{:?}", ClientTls::new(b"ca".to_vec()).with_identity(b"c".to_vec(), b"KEY".to_vec()));
        assert!(!debug.contains("KEY"), "{debug}");
        #[cfg(feature = "tls")]
        assert_eq!(endpoint("127.0.0.1:7101", &tls).unwrap().uri().scheme_str(), Some("https"));
        #[cfg(not(feature = "tls"))]
        assert!(matches!(endpoint("127.0.0.1:7101", &tls), Err(ClientError::Tls(_))));
    }
}
