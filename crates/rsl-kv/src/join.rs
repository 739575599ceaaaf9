//! Joining a running ring through one contact (`join_via`): the credentials a joining
//! replica presents to the contact, and the address book it asks it for.
//!
//! The contact is any replica's client API. One with `[auth]` or `[client_tls]` (see
//! docs/SECURITY.md) answers only a caller that presents itself as the `rsl-kv` command
//! line does: a bearer token of a user with the read role (the address book comes from
//! `Status`), and over TLS the CA that signed the contact's certificate, with a client
//! certificate and key when the contact verifies them. [`JoinCredentialsFile`] holds them,
//! from the `[join_credentials]` section and the `--join-*` flags (the token also from
//! `RSL_KV_JOIN_TOKEN`, kept out of the process list):
//!
//! ```toml
//! join_via = "10.0.0.1:7101"        # any replica's client API
//! replica_listen = "10.0.0.4:7001"  # this replica's address, chosen with the configuration
//! client_listen = "10.0.0.4:7101"
//!
//! [join_credentials]
//! token_file = "/etc/rsl-kv/join.token"  # first line: the token of a user with the read role
//! cacert = "clients-ca.pem"    # the contact's client port speaks TLS: the CA of its certificate
//! cert = "node4-client.pem"    # with cacert: for a contact that verifies client certificates
//! key = "node4-client.key"
//! # server_name = "rsl-kv"     # check the contact's certificate for this name, not its host
//! ```

use std::path::PathBuf;

use rsl::NodeId;
use serde::{Deserialize, Deserializer};

use crate::config::{ConfigError, ServerConfig};
use crate::connection::{ClientSecurity, ClientTls, Token};
use crate::server::ServerError;
use crate::{Client, ClientError, ClientOptions};

/// How a joining replica presents itself to its contact: the `[join_credentials]` keys
/// (flags `--join-token`, `--join-token-file`, `--join-cacert`, `--join-cert`, `--join-key`,
/// `--join-server-name`). Every field optional; [`JoinCredentialsFile::resolve`] checks
/// them and reads the files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinCredentialsFile {
    /// The bearer token itself (prefer `token_file`, or `RSL_KV_JOIN_TOKEN` for the flag:
    /// a token in a flag is visible in the process list). `Debug` never shows it.
    #[serde(default, deserialize_with = "deserialize_token")]
    pub token: Option<Token>,
    /// A file whose first line is the bearer token.
    pub token_file: Option<PathBuf>,
    /// Connect to the contact over TLS, trusting the CA (PEM) in this file.
    pub cacert: Option<PathBuf>,
    /// With `cacert`: present this client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// With `cacert`: check the contact's certificate for this name instead of the host of
    /// its address.
    pub server_name: Option<String>,
}

fn deserialize_token<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Token>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|token| Token::new(&token).map_err(serde::de::Error::custom)).transpose()
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

impl JoinCredentialsFile {
    /// `self` with every field that `top` sets replaced (flags over a file). A token given
    /// one way replaces one given the other.
    pub fn merge(self, top: JoinCredentialsFile) -> JoinCredentialsFile {
        let token_given = top.token.is_some() || top.token_file.is_some();
        let (token, token_file) =
            if token_given { (top.token, top.token_file) } else { (self.token, self.token_file) };
        JoinCredentialsFile {
            token,
            token_file,
            cacert: top.cacert.or(self.cacert),
            cert: top.cert.or(self.cert),
            key: top.key.or(self.key),
            server_name: top.server_name.or(self.server_name),
        }
    }

    /// Checks the keys together and reads the files: the security a client of the contact
    /// uses. Every problem names its key.
    pub fn resolve(self) -> Result<ClientSecurity, ConfigError> {
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid("join_credentials.token", "set either token or token_file, not both"));
        }
        if self.cacert.is_none() {
            let without_tls = [
                ("join_credentials.cert", self.cert.is_some()),
                ("join_credentials.key", self.key.is_some()),
                ("join_credentials.server_name", self.server_name.is_some()),
            ];
            for (key, set) in without_tls {
                if set {
                    return Err(invalid(key, "needs join_credentials.cacert: it is used only over TLS"));
                }
            }
        }
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("join_credentials.key", "missing: the key of cert")),
            (None, Some(_)) => {
                return Err(invalid("join_credentials.cert", "missing: the certificate of key"))
            }
        };
        let tls = match self.cacert {
            None => None,
            Some(cacert) => {
                let identity = identity.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
                let tls = ClientTls::from_files(&cacert, identity)
                    .map_err(|error| invalid("join_credentials", error.to_string()))?;
                Some(match self.server_name {
                    Some(name) => tls.with_domain_name(name),
                    None => tls,
                })
            }
        };
        let token = match (self.token, self.token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(
                Token::from_file(&path)
                    .map_err(|error| invalid("join_credentials.token_file", error.to_string()))?,
            ),
            (None, None) => None,
        };
        Ok(ClientSecurity { tls, token })
    }

    /// Whether any key is set.
    pub fn is_empty(&self) -> bool {
        *self == JoinCredentialsFile::default()
    }
}

/// Completes `config`'s address book (replica and client addresses) with the one `contact`
/// (a replica's client API) reports, which includes the addresses its configuration
/// carries: a node joining through one contact learns every member. The contact is asked
/// with `config.join_security`. This node's own entries stay as configured.
pub(crate) async fn learn_address_book(config: &mut ServerConfig, contact: &str) -> Result<(), ServerError> {
    let failed = |problem: String| ServerError::Contact { contact: contact.to_owned(), problem };
    let options = ClientOptions { security: config.join_security.clone(), ..ClientOptions::default() };
    let mut client = Client::new(vec![contact.to_owned()], options).map_err(|e| failed(e.to_string()))?;
    let status = client.status_of(contact).await.map_err(|error| failed(refusal(error)))?;
    let mut learned = 0;
    for member in status.members {
        let node = NodeId(member.node);
        if node == config.node || member.replica_address.is_empty() {
            continue;
        }
        config.members.insert(node, member.replica_address);
        if !member.client_address.is_empty() {
            config.clients.insert(node, member.client_address);
        }
        learned += 1;
    }
    if learned == 0 {
        return Err(failed("its address book names no other replica".into()));
    }
    tracing::info!(
        node = config.node.0,
        contact,
        replicas = learned,
        "address book learned from the contact"
    );
    Ok(())
}

/// What went wrong asking the contact, with what to do when it refused the credentials.
fn refusal(error: ClientError) -> String {
    match &error {
        ClientError::Server { code: tonic::Code::Unauthenticated, .. } => format!(
            "{error}; the contact requires authentication: give this replica the token of a user \
             with the read role (join_credentials.token_file, --join-token-file or RSL_KV_JOIN_TOKEN), \
             or a client certificate (join_credentials.cert and key)"
        ),
        ClientError::Server { code: tonic::Code::PermissionDenied, .. } => {
            format!("{error}; the user of join_credentials needs the read role")
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_by_key() {
        let cases: [(JoinCredentialsFile, &str); 5] = [
            (
                JoinCredentialsFile {
                    token: Some(Token::new("t").unwrap()),
                    token_file: Some("t".into()),
                    ..Default::default()
                },
                "join_credentials.token",
            ),
            (JoinCredentialsFile { cert: Some("c".into()), ..Default::default() }, "join_credentials.cert"),
            (
                JoinCredentialsFile { server_name: Some("n".into()), ..Default::default() },
                "join_credentials.server_name",
            ),
            (
                JoinCredentialsFile {
                    cacert: Some("ca".into()),
                    cert: Some("c".into()),
                    ..Default::default()
                },
                "join_credentials.key",
            ),
            (
                JoinCredentialsFile { token_file: Some("/nonexistent/token".into()), ..Default::default() },
                "join_credentials.token_file",
            ),
        ];
        for (credentials, expected) in cases {
            match credentials.clone().resolve() {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, expected, "{credentials:?}"),
                other => panic!("{credentials:?}: {other:?}"),
            }
        }
        assert_eq!(JoinCredentialsFile::default().resolve().unwrap(), ClientSecurity::default());
    }

    #[test]
    fn a_token_file_is_read_and_flags_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        let file = JoinCredentialsFile { token_file: Some(path.clone()), ..Default::default() };
        let security = file.clone().resolve().unwrap();
        assert_eq!(security.token, Some(Token::new("s3cret").unwrap()));
        let flag = JoinCredentialsFile { token: Some(Token::new("other").unwrap()), ..Default::default() };
        let merged = file.merge(flag);
        assert_eq!((merged.token_file, merged.token), (None, Some(Token::new("other").unwrap())));
        std::fs::write(&path, "two words\n").unwrap();
        let error =
            JoinCredentialsFile { token_file: Some(path), ..Default::default() }.resolve().unwrap_err();
        assert!(error.to_string().contains("the first line of"), "{error}");
    }

    #[test]
    fn the_section_parses_and_needs_join_via() {
        use crate::config::ConfigFile;
        use std::path::Path;

        let text = "node = 4\nmembers = [\"4=127.0.0.1:7004\"]\nclient_listen = \"127.0.0.1:7104\"\n\
                    data_dir = \"/tmp/joining\"\n[join_credentials]\ntoken = \"abc\"\n";
        let file = ConfigFile::parse(text, Path::new("t.toml")).unwrap();
        let error = file.clone().resolve().unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { key: "join_credentials", .. }), "{error}");
        let config = ConfigFile { join_via: Some("127.0.0.1:7101".into()), ..file }.resolve().unwrap();
        assert_eq!(config.join_security.token, Some(Token::new("abc").unwrap()));
        assert!(!format!("{config:?}").contains("abc"), "the token is never shown");
        let bad = ConfigFile::parse("[join_credentials]\ntoken = \"two words\"\n", Path::new("t.toml"));
        let error = bad.unwrap_err().to_string();
        assert!(error.contains("token") && error.contains("without spaces"), "{error}");
    }
}
