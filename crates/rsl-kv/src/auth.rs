//! Who may do what on the client API: roles, users and their credentials, as configured in
//! the server's TOML (`[auth]`), and the one decision every request goes through.
//!
//! A user has a [`Role`] and one or two credentials: a bearer token, of which the server
//! keeps only the SHA-256 hash ([`hash_token`], or `rsl-kv hash-token`), and a client
//! certificate name (the certificate's common name or a DNS subject alternative name,
//! once the certificate has been verified against `client_tls.client_ca`). A request
//! names its [`Operation`]; [`Role::allows`] is the whole policy:
//!
//! | role         | read (Get, Status, gets in Stream) | write (Put, Delete, Cas, writes in Stream) | Reconfigure | Snapshot (backup) | control (Promote, ChangeTiming, Reseed, Exclusive) |
//! |--------------|:---:|:---:|:---:|:---:|
//! | `read`       | yes | no  | no  | no  |
//! | `read-write` | yes | yes | no  | no  |
//! | `admin`      | yes | yes | yes | yes |
//!
//! The server's gate (`server/guard.rs`) authenticates each call with
//! [`Authenticator::authenticate`] and checks its operation; the `Stream` RPC checks each
//! batch of operations against the same rule.
//!
//! ```
//! use rsl_kv::auth::{hash_token, Operation, Role};
//!
//! assert!(Role::ReadWrite.allows(Operation::Write));
//! assert!(!Role::ReadWrite.allows(Operation::Reconfigure));
//! // What goes into `token_sha256`: the same as `printf %s "$TOKEN" | sha256sum`.
//! assert_eq!(
//!     hash_token("secret"),
//!     "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads: Get, Status, and gets in a Stream.
    Read,
    /// Reads and writes: also Put, Delete, Cas, and writes in a Stream.
    ReadWrite,
    /// Everything, including Reconfigure and Snapshot.
    Admin,
}

impl Role {
    /// Whether this role may perform `operation`: the whole authorization policy.
    pub fn allows(self, operation: Operation) -> bool {
        match operation {
            Operation::Read => true,
            Operation::Write => matches!(self, Role::ReadWrite | Role::Admin),
            Operation::Reconfigure | Operation::Backup | Operation::Control => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::ReadWrite => "read-write",
            Role::Admin => "admin",
        })
    }
}

/// What a request does, as far as authorization is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Reads the store or the replica's status.
    Read,
    /// Changes the store.
    Write,
    /// Changes the ring's members.
    Reconfigure,
    /// Reads the whole state for a backup (`Snapshot`).
    Backup,
    /// Operates the ring: forces an election, changes timing, re-seeds a replica, writes
    /// alone in a slot or closes the ring.
    Control,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Reconfigure => "reconfigure the ring",
            Operation::Backup => "back up the ring's state",
            Operation::Control => "operate the ring",
        })
    }
}

/// The SHA-256 of `token`, in lowercase hexadecimal: what a user's `token_sha256` holds.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `[auth]` as written in the TOML file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Whether requests must authenticate (required when `[auth]` is present, so that a
    /// list of users is never mistaken for protection).
    pub enabled: Option<bool>,
    /// The users (`[[auth.users]]`).
    #[serde(default)]
    pub users: Vec<UserFile>,
}

/// One `[[auth.users]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// A name for logs and errors; unique.
    pub name: String,
    /// `read`, `read-write` or `admin`.
    pub role: Option<Role>,
    /// SHA-256 of the user's bearer token, 64 hexadecimal digits (`rsl-kv hash-token`).
    pub token_sha256: Option<String>,
    /// A client certificate with this common name or DNS subject alternative name is
    /// this user (needs `client_tls.client_ca`).
    pub cert_name: Option<String>,
}

/// A checked user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its token.
    pub token_sha256: Option<[u8; 32]>,
    /// The client certificate name that identifies it.
    pub cert_name: Option<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_sha256", &self.token_sha256.map(|_| "<redacted>"))
            .field("cert_name", &self.cert_name)
            .finish()
    }
}

/// Checked authentication settings: requests must present the credentials of one of
/// `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// Everyone who may connect.
    pub users: Vec<User>,
}

fn invalid(problem: String) -> ConfigError {
    ConfigError::Invalid { key: "auth.users", problem }
}

impl AuthFile {
    /// Checks the section; `client_certificates` says whether the server verifies client
    /// certificates (`client_tls.client_ca`), without which a `cert_name` could never match.
    /// `Ok(None)`: authentication is off.
    pub fn resolve(self, client_certificates: bool) -> Result<Option<AuthConfig>, ConfigError> {
        let Some(enabled) = self.enabled else {
            return Err(ConfigError::Invalid {
                key: "auth.enabled",
                problem: "missing: set `enabled = true` to require credentials (or false to let \
                          everyone in)"
                    .into(),
            });
        };
        let mut users = Vec::with_capacity(self.users.len());
        let mut names = BTreeMap::new();
        let mut tokens: BTreeMap<[u8; 32], String> = BTreeMap::new();
        let mut cert_names = BTreeMap::new();
        for (index, entry) in self.users.into_iter().enumerate() {
            let user = entry.check(index + 1, client_certificates)?;
            if let Some(first) = names.insert(user.name.clone(), index + 1) {
                return Err(invalid(format!(
                    "user {:?} is listed twice (entries {first} and {})",
                    user.name,
                    index + 1
                )));
            }
            if let Some(hash) = user.token_sha256 {
                if let Some(other) = tokens.insert(hash, user.name.clone()) {
                    return Err(invalid(format!(
                        "users {other:?} and {:?} have the same token_sha256: a token must name one user",
                        user.name
                    )));
                }
            }
            if let Some(cert_name) = &user.cert_name {
                if let Some(other) = cert_names.insert(cert_name.clone(), user.name.clone()) {
                    return Err(invalid(format!(
                        "users {other:?} and {:?} have the same cert_name {cert_name:?}",
                        user.name
                    )));
                }
            }
            users.push(user);
        }
        if !enabled {
            return Ok(None);
        }
        if users.is_empty() {
            return Err(invalid(
                "auth is enabled but no user is configured: every request would be refused".into(),
            ));
        }
        Ok(Some(AuthConfig { users }))
    }
}

impl UserFile {
    /// Checks entry `entry` (counted from 1) of `[[auth.users]]`.
    fn check(self, entry: usize, client_certificates: bool) -> Result<User, ConfigError> {
        let name = self.name.trim().to_owned();
        let problem = |what: String| invalid(format!("entry {entry} ({name:?}): {what}"));
        if name.is_empty() {
            return Err(invalid(format!("entry {entry}: `name` must not be empty")));
        }
        let Some(role) = self.role else {
            return Err(problem("missing `role`: read, read-write or admin".into()));
        };
        let token_sha256 = match &self.token_sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(hex).map_err(|what| problem(format!("token_sha256 {what}")))?),
        };
        let cert_name = match self.cert_name {
            Some(cert_name) if cert_name.trim().is_empty() => {
                return Err(problem("`cert_name` must not be empty".into()));
            }
            Some(_) if !client_certificates => {
                return Err(problem(
                    "`cert_name` needs client certificates: set client_tls.client_ca".into(),
                ));
            }
            other => other.map(|n| n.trim().to_owned()),
        };
        if token_sha256.is_none() && cert_name.is_none() {
            return Err(problem(
                "no credential: set token_sha256 (the SHA-256 of the user's token, from \
                 `rsl-kv hash-token`) or cert_name"
                    .into(),
            ));
        }
        Ok(User { name, role, token_sha256, cert_name })
    }
}

/// 64 hexadecimal digits as 32 bytes; otherwise what is wrong.
fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(format!(
            "must be 64 hexadecimal digits (a SHA-256), got {} characters",
            hex.chars().count()
        ));
    }
    let mut hash = [0u8; 32];
    for (index, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok().and_then(|text| u8::from_str_radix(text, 16).ok());
        match digits {
            Some(byte) => hash[index] = byte,
            None => {
                return Err(format!(
                    "must be 64 hexadecimal digits (a SHA-256), found {:?} at character {}",
                    String::from_utf8_lossy(pair),
                    2 * index + 1
                ))
            }
        }
    }
    Ok(hash)
}

/// Who is calling, once authenticated, or anyone at all when authentication is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The user's name; `None` when authentication is off.
    pub user: Option<Arc<str>>,
    /// What it may do.
    pub role: Role,
}

impl Access {
    /// Everything, for everyone: authentication is off.
    pub fn open() -> Access {
        Access { user: None, role: Role::Admin }
    }

    /// Whether this caller may perform `operation`; the refusal says who, what and which
    /// RPC (`rpc`).
    pub fn authorize(&self, operation: Operation, rpc: &str) -> Result<(), AuthError> {
        if self.role.allows(operation) {
            return Ok(());
        }
        Err(AuthError::Forbidden {
            user: self.user.as_deref().unwrap_or("anonymous").to_owned(),
            role: self.role,
            operation,
            rpc: rpc.to_owned(),
        })
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that match no user (gRPC `UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// A known user whose role does not allow the operation (gRPC `PERMISSION_DENIED`).
    #[error("user {user:?} (role {role}) may not {operation}: {rpc} refused")]
    Forbidden {
        /// The user.
        user: String,
        /// Its role.
        role: Role,
        /// What it asked for.
        operation: Operation,
        /// The RPC.
        rpc: String,
    },
}

/// Finds the user behind a request's credentials.
#[derive(Clone, Debug)]
pub struct Authenticator {
    users: Arc<[(User, Arc<str>)]>,
}

impl Authenticator {
    /// The authenticator of `config`'s users.
    pub fn new(config: &AuthConfig) -> Authenticator {
        let users = config.users.iter().map(|user| (user.clone(), Arc::from(user.name.as_str()))).collect();
        Authenticator { users }
    }

    /// The user presenting `token` (a bearer token) or, without a token, a verified client
    /// certificate carrying one of `cert_names`. A token, when given, decides alone: a wrong
    /// one is refused even with a good certificate.
    pub fn authenticate(&self, token: Option<&str>, cert_names: &[String]) -> Result<Access, AuthError> {
        if let Some(token) = token {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            // Compare with every user's hash, in constant time, without stopping early.
            let mut found = None;
            for (user, name) in self.users.iter() {
                let matches = user
                    .token_sha256
                    .is_some_and(|known| bool::from(known.as_slice().ct_eq(hash.as_slice())));
                if matches {
                    found = Some(Access { user: Some(name.clone()), role: user.role });
                }
            }
            return found
                .ok_or_else(|| AuthError::Unauthenticated("the bearer token matches no user".into()));
        }
        if cert_names.is_empty() {
            return Err(AuthError::Unauthenticated(
                "no credentials: send the metadata `authorization: Bearer <token>` or a client \
                 certificate"
                    .into(),
            ));
        }
        self.users
            .iter()
            .find(|(user, _)| user.cert_name.as_ref().is_some_and(|wanted| cert_names.contains(wanted)))
            .map(|(user, name)| Access { user: Some(name.clone()), role: user.role })
            .ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "the client certificate (names {cert_names:?}) matches no user"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Option<Role>, token: Option<&str>, cert_name: Option<&str>) -> UserFile {
        UserFile {
            name: name.into(),
            role,
            token_sha256: token.map(hash_token),
            cert_name: cert_name.map(str::to_owned),
        }
    }

    fn resolve(users: Vec<UserFile>) -> Result<Option<AuthConfig>, ConfigError> {
        AuthFile { enabled: Some(true), users }.resolve(true)
    }

    #[test]
    fn roles_allow_exactly_their_operations() {
        let table = [
            (Role::Read, [true, false, false, false]),
            (Role::ReadWrite, [true, true, false, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, allowed) in table {
            let operations = [Operation::Read, Operation::Write, Operation::Reconfigure, Operation::Control];
            for (operation, allowed) in operations.into_iter().zip(allowed) {
                assert_eq!(role.allows(operation), allowed, "{role} {operation}");
            }
        }
    }

    #[test]
    fn tokens_and_certificate_names_find_their_user() {
        let config = resolve(vec![
            user("reader", Some(Role::Read), Some("r-token"), Some("reader.example")),
            user("writer", Some(Role::ReadWrite), Some("w-token"), None),
        ])
        .unwrap()
        .unwrap();
        let auth = Authenticator::new(&config);
        let access = auth.authenticate(Some("w-token"), &[]).unwrap();
        assert_eq!((access.user.as_deref(), access.role), (Some("writer"), Role::ReadWrite));
        let access = auth.authenticate(None, &["x".into(), "reader.example".into()]).unwrap();
        assert_eq!(access.role, Role::Read);
        // A wrong token is refused even with a good certificate; nothing at all is refused.
        let refusals = [
            auth.authenticate(Some("w-token "), &[]),
            auth.authenticate(Some("nobody"), &["reader.example".into()]),
            auth.authenticate(None, &[]),
            auth.authenticate(None, &["stranger.example".into()]),
        ];
        for refusal in refusals {
            assert!(matches!(refusal, Err(AuthError::Unauthenticated(_))), "{refusal:?}");
        }
        let forbidden = access.authorize(Operation::Write, "Put").unwrap_err();
        assert_eq!(forbidden.to_string(), "user \"reader\" (role read) may not write: Put refused");
        assert!(Access::open().authorize(Operation::Reconfigure, "Reconfigure").is_ok());
    }

    #[test]
    fn bad_user_lists_are_refused_with_the_entry_and_the_problem() {
        let good = || user("a", Some(Role::Admin), Some("t1"), None);
        let cases: Vec<(Vec<UserFile>, &str)> = vec![
            (vec![], "no user is configured"),
            (vec![good(), good()], "\"a\" is listed twice (entries 1 and 2)"),
            (
                vec![good(), user("b", Some(Role::Read), Some("t1"), None)],
                "\"a\" and \"b\" have the same token_sha256",
            ),
            (vec![user("b", Some(Role::Read), None, None)], "entry 1 (\"b\"): no credential"),
            (vec![user("b", None, Some("t"), None)], "entry 1 (\"b\"): missing `role`"),
            (vec![user(" ", Some(Role::Read), Some("t"), None)], "entry 1: `name` must not be empty"),
            (
                vec![UserFile {
                    token_sha256: Some("abc".into()),
                    ..user("c", Some(Role::Read), None, None)
                }],
                "entry 1 (\"c\"): token_sha256 must be 64 hexadecimal digits (a SHA-256), got 3 characters",
            ),
            (
                vec![UserFile {
                    token_sha256: Some(format!("{}zz", "0".repeat(62))),
                    ..user("c", Some(Role::Read), None, None)
                }],
                "found \"zz\" at character 63",
            ),
            (
                vec![
                    user("d", Some(Role::Read), None, Some("x")),
                    user("e", Some(Role::Read), None, Some("x")),
                ],
                "\"d\" and \"e\" have the same cert_name \"x\"",
            ),
        ];
        for (users, expected) in cases {
            let error = resolve(users).unwrap_err().to_string();
            assert!(error.starts_with("config key `auth.users`: "), "{error}");
            assert!(error.contains(expected), "expected {expected:?} in {error:?}");
        }
        let error = AuthFile { enabled: None, users: vec![good()] }.resolve(true).unwrap_err().to_string();
        assert!(error.contains("`auth.enabled`: missing"), "{error}");
        let certificate_user = vec![user("d", Some(Role::Read), None, Some("x"))];
        let error =
            AuthFile { enabled: Some(true), users: certificate_user }.resolve(false).unwrap_err().to_string();
        assert!(error.contains("set client_tls.client_ca"), "{error}");
        // Disabled: the users are still checked, and nothing is required.
        assert_eq!(AuthFile { enabled: Some(false), users: vec![good()] }.resolve(true).unwrap(), None);
        assert!(AuthFile { enabled: Some(false), users: vec![good(), good()] }.resolve(true).is_err());
    }

    #[test]
    fn hashes_parse_in_either_case() {
        let hash = hash_token("token");
        let upper = parse_sha256(&hash.to_uppercase()).unwrap();
        assert_eq!(parse_sha256(&hash).unwrap(), upper);
        assert_eq!(upper, <[u8; 32]>::from(Sha256::digest(b"token")));
    }
}
