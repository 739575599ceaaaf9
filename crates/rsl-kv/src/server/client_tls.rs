//! TLS on the client port (`[client_tls]`, cargo feature `tls`): the server's certificate,
//! optionally client certificates verified against a CA, and the names a verified client
//! certificate carries (its common names and DNS subject alternative names), which
//! `[[auth.users]]` map to users. A build without the feature refuses a configuration
//! that asks for client TLS, naming the key, rather than serving in plaintext.

#[cfg(feature = "tls")]
use tonic::codegen::http;
use tonic::transport::Server;

use super::ServerError;
use crate::config::ClientPortTls;

/// `builder` serving TLS as `tls` says (nothing when `None`).
#[cfg(feature = "tls")]
pub(super) fn apply(builder: Server, tls: Option<&ClientPortTls>) -> Result<Server, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};

    let Some(tls) = tls else { return Ok(builder) };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|error| ServerError::Tls(format!("reading {key} {}: {error}", path.display())))
    };
    let identity = Identity::from_pem(read("client_tls.cert", &tls.cert)?, read("client_tls.key", &tls.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read("client_tls.client_ca", ca)?))
            .client_auth_optional(!tls.require_client_cert);
    }
    builder.tls_config(config).map_err(|error| {
        ServerError::Tls(format!(
            "client_tls (cert {}, key {}): {error}",
            tls.cert.display(),
            tls.key.display()
        ))
    })
}

/// `builder` as it is; client TLS asked of a build without TLS is an error.
#[cfg(not(feature = "tls"))]
pub(super) fn apply(builder: Server, tls: Option<&ClientPortTls>) -> Result<Server, ServerError> {
    match tls {
        None => Ok(builder),
        Some(_) => Err(ServerError::Tls(
            "client_tls is configured, but this rsl-kv was built without TLS (cargo feature `tls`); \
             rebuild with it or remove [client_tls]"
                .to_owned(),
        )),
    }
}

/// The names in the verified client certificate of a request's connection: common names
/// and DNS subject alternative names (none without a certificate).
#[cfg(feature = "tls")]
pub(super) fn certificate_names(extensions: &http::Extensions) -> Vec<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

    let Some(certificates) =
        extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs())
    else {
        return Vec::new();
    };
    // The first certificate is the client's own; the rest is its chain.
    certificates.first().map(|der| names_of(der.as_ref())).unwrap_or_default()
}

/// Without TLS no connection carries a certificate.
#[cfg(not(feature = "tls"))]
pub(super) fn certificate_names(_extensions: &tonic::codegen::http::Extensions) -> Vec<String> {
    Vec::new()
}

/// The common names and DNS subject alternative names of a DER certificate (none if it
/// does not parse: rustls verified it, so that would be a certificate no user names).
#[cfg(feature = "tls")]
fn names_of(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;

    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> = certificate
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(alternatives)) = certificate.subject_alternative_name() {
        for name in &alternatives.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_common_name_and_the_dns_alternatives() {
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "client-a");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(names_of(certificate.der()), ["client-a", "a.example"]);
        assert!(names_of(b"not a certificate").is_empty());
    }
}
