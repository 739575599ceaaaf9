//! The client API's authentication and roles, against a real server over gRPC on
//! 127.0.0.1: every RPC under every role (allowed ones succeed, the others are refused
//! with `PERMISSION_DENIED` and change nothing), calls without or with wrong credentials
//! (`UNAUTHENTICATED`, nothing changed), and, with the `tls` feature, TLS on the client
//! port with client certificates mapped to users and a foreign CA's certificate refused,
//! and a replica joining through such a server (`--join-via`) presenting its certificate.

use std::time::Duration;

use rsl::{RingOptions, Role as RingRole};
use rsl_kv::auth::{hash_token, AuthFile, Role, UserFile};
use rsl_kv::config::{ClientTlsFiles, Tuning};
use rsl_kv::connection::KvChannel;
use rsl_kv::proto as pb;
use rsl_kv::proto::kv_client::KvClient;
use rsl_kv::{
    ClientOptions, ClientSecurity, ConfigFile, Listeners, LogBackend, Server, ServerConfig, ServerError,
    Token,
};
use tokio::net::TcpListener;
use tonic::Code;

/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(30);

/// The users of the server under test: name, role, token.
const USERS: [(&str, Role, &str); 3] = [
    ("reader", Role::Read, "reader-token-3b1f"),
    ("writer", Role::ReadWrite, "writer-token-8c2e"),
    ("admin", Role::Admin, "admin-token-51d0"),
];

fn token_of(role: Role) -> &'static str {
    USERS.iter().find(|(_, r, _)| *r == role).map(|(_, _, token)| *token).unwrap()
}

/// Every RPC of the client API, the stream's reads and writes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Put,
    Get,
    Delete,
    Cas,
    Status,
    Reconfigure,
    StreamRead,
    StreamWrite,
    /// A stream message carrying a get and a write batch encoded whole.
    StreamWriteBatch,
    Snapshot,
}

const CALLS: [Call; 10] = [
    Call::Put,
    Call::Get,
    Call::Delete,
    Call::Cas,
    Call::Status,
    Call::Reconfigure,
    Call::StreamRead,
    Call::StreamWrite,
    Call::StreamWriteBatch,
    Call::Snapshot,
];

impl Call {
    fn writes(self) -> bool {
        matches!(self, Call::Put | Call::Delete | Call::Cas | Call::StreamWrite | Call::StreamWriteBatch)
    }
}

/// What each role may call, written out (not derived from the server's policy).
fn allowed(role: Role, call: Call) -> bool {
    match role {
        Role::Read => matches!(call, Call::Get | Call::Status | Call::StreamRead),
        Role::ReadWrite => !matches!(call, Call::Reconfigure | Call::Snapshot),
        Role::Admin => true,
    }
}

/// One replica (node 1 of an address book that also lists node 2, which never runs) with
/// a memory log, the users of [`USERS`] and, if given, TLS on the client port, started.
async fn start(client_tls: Option<ClientTlsFiles>, extra_users: Vec<UserFile>) -> Server {
    let (config, listeners) = configure(client_tls, extra_users).await;
    let server = Server::start_on(config, listeners, RingOptions::default()).await.unwrap();
    let mut status = server.ring().status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.role == RingRole::Primary))
        .await
        .expect("the replica becomes primary")
        .unwrap();
    server
}

/// The configuration [`start`] starts, and its sockets.
async fn configure(
    client_tls: Option<ClientTlsFiles>,
    extra_users: Vec<UserFile>,
) -> (ServerConfig, Listeners) {
    let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut users: Vec<UserFile> = USERS
        .iter()
        .map(|(name, role, token)| UserFile {
            name: (*name).to_owned(),
            role: Some(*role),
            token_sha256: Some(hash_token(token)),
            cert_name: None,
        })
        .collect();
    users.extend(extra_users);
    let config = ConfigFile {
        node: Some(1),
        members: Some(vec![format!("1={}", replica.local_addr().unwrap()), "2=127.0.0.1:9".to_owned()]),
        initial_members: Some(vec![1]),
        clients: Some(vec![format!("1={}", client.local_addr().unwrap())]),
        log: Some(LogBackend::Memory),
        client_tls,
        auth: Some(AuthFile { enabled: Some(true), users }),
        tuning: Some(Tuning {
            heartbeat_interval_ms: Some(20),
            election_delay_min_ms: Some(100),
            election_delay_max_ms: Some(200),
            ..Tuning::default()
        }),
        ..ConfigFile::default()
    }
    .resolve()
    .expect("a valid config");
    (config, Listeners { replica, client })
}

fn with_token(token: &str) -> ClientSecurity {
    ClientSecurity { token: Some(Token::new(token).unwrap()), ..ClientSecurity::default() }
}

/// A raw `Kv` client of `server` with `security`.
fn raw(server: &Server, security: ClientSecurity) -> KvClient<KvChannel> {
    let options = ClientOptions { security, ..ClientOptions::default() };
    rsl_kv::client::connect_lazy(&server.client_addr().to_string(), &options).unwrap()
}

fn write_id(sequence: u64) -> Option<pb::WriteId> {
    Some(pb::WriteId { client: 77, sequence })
}

/// Makes `call` on `key` (a write numbered `sequence`; a reconfiguration to `members`);
/// the code of the refusal if there is one. A stream batch counts as refused only if
/// every operation of it was.
async fn make(
    client: &mut KvClient<KvChannel>,
    call: Call,
    key: &str,
    sequence: u64,
    members: &[u64],
) -> Result<(), Code> {
    let value = bytes::Bytes::from(format!("{call:?}"));
    let get = pb::GetRequest { key: key.to_owned(), fast: false, min_slot: 0, ..Default::default() };
    let outcome = match call {
        Call::Put => {
            client.put(pb::PutRequest { id: write_id(sequence), key: key.to_owned(), value }).await.map(drop)
        }
        Call::Get => client.get(get).await.map(drop),
        Call::Delete => {
            client.delete(pb::DeleteRequest { id: write_id(sequence), key: key.to_owned() }).await.map(drop)
        }
        Call::Cas => client
            .cas(pb::CasRequest {
                id: write_id(sequence),
                key: key.to_owned(),
                expected_present: true,
                expected: "original".into(),
                value,
            })
            .await
            .map(drop),
        Call::Status => client.status(pb::StatusRequest {}).await.map(drop),
        Call::Reconfigure => client
            .reconfigure(pb::ReconfigureRequest { members: members.to_vec(), ..Default::default() })
            .await
            .map(drop),
        Call::Snapshot => match client.snapshot(pb::SnapshotRequest {}).await {
            Ok(response) => {
                let mut chunks = response.into_inner();
                let mut file = Vec::new();
                while let Some(chunk) = chunks.message().await.map_err(|status| status.code())? {
                    file.extend_from_slice(&chunk.data);
                }
                rsl_kv::snapshot::verify(std::path::Path::new("snapshot"), &file)
                    .map_err(|_| Code::DataLoss)?;
                Ok(())
            }
            Err(status) => Err(status),
        },
        Call::StreamRead | Call::StreamWrite | Call::StreamWriteBatch => {
            let mut message = pb::OpBatch {
                ops: vec![pb::Op { id: 1, op: Some(pb::op::Op::Get(get)) }],
                ..Default::default()
            };
            if call == Call::StreamWrite {
                let put = pb::PutRequest { id: write_id(sequence), key: key.to_owned(), value };
                message.ops.push(pb::Op { id: 2, op: Some(pb::op::Op::Put(put)) });
            } else if call == Call::StreamWriteBatch {
                let id = rsl_kv::command::WriteId { client: 77, sequence };
                let put = rsl_kv::command::Write::Put { id, key: key.to_owned(), value };
                message.write_batch = rsl_kv::command::encode_write_batch(&[put]).unwrap();
                message.write_batch_id = 5;
            }
            return stream_batch(client, message).await;
        }
    };
    outcome.map_err(|status| status.code())
}

/// Sends `message` on a new stream; `Err` if the stream was refused or every operation
/// (and its encoded write batch, if any) failed (with the first one's code).
async fn stream_batch(client: &mut KvClient<KvChannel>, message: pb::OpBatch) -> Result<(), Code> {
    let (count, batch_id) = (message.ops.len(), message.write_batch_id);
    let has_write_batch = !message.write_batch.is_empty();
    let mut answers =
        client.stream(tokio_stream::iter([message])).await.map_err(|status| status.code())?.into_inner();
    let mut results = Vec::new();
    let mut batch_answer = None;
    while results.len() < count || (has_write_batch && batch_answer.is_none()) {
        let batch = answers.message().await.map_err(|status| status.code())?.expect("a result per operation");
        results.extend(batch.results);
        if batch.write_batch_id == batch_id
            && (batch.write_batch_error.is_some() || !batch.write_answers.is_empty())
        {
            batch_answer = Some(batch.write_batch_error.map(|error| Code::from(error.code as i32)));
        }
    }
    let mut codes: Vec<Option<Code>> = results
        .iter()
        .map(|result| match &result.result {
            Some(pb::op_result::Result::Error(error)) => Some(Code::from(error.code as i32)),
            _ => None,
        })
        .collect();
    codes.extend(batch_answer);
    match codes.as_slice() {
        codes if codes.iter().all(Option::is_none) => Ok(()),
        [Some(first), rest @ ..] if rest.iter().all(|code| code == &Some(*first)) => Err(*first),
        other => panic!("a batch is served or refused as a whole, got {other:?}"),
    }
}

/// The state an admin sees: the store's digest and key count, the chosen slot and the
/// configuration.
async fn state(admin: &mut KvClient<KvChannel>) -> (u32, u64, u64, u64) {
    let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    (status.digest, status.keys, status.chosen, status.configuration)
}

async fn value_of(admin: &mut KvClient<KvChannel>, key: &str) -> Option<bytes::Bytes> {
    let get = pb::GetRequest { key: key.to_owned(), fast: false, min_slot: 0, ..Default::default() };
    let response = admin.get(get).await.unwrap().into_inner();
    response.found.then_some(response.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_call_exactly_its_rpcs_and_refusals_change_nothing() {
    let server = start(None, Vec::new()).await;
    let mut admin = raw(&server, with_token(token_of(Role::Admin)));
    let mut sequence = 0;
    for (name, role, token) in USERS {
        let mut client = raw(&server, with_token(token));
        for call in CALLS {
            let key = format!("{name}-{call:?}");
            sequence += 2;
            admin
                .put(pb::PutRequest {
                    id: write_id(sequence - 1),
                    key: key.clone(),
                    value: "original".into(),
                })
                .await
                .unwrap();
            let before = state(&mut admin).await;
            // A refused reconfiguration asks for a real change (adding node 2, which never
            // runs: the configuration number would move); an allowed one asks for the
            // members in force, which the primary confirms without stalling the ring.
            let members: &[u64] = if allowed(role, call) { &[1] } else { &[1, 2] };
            let outcome = make(&mut client, call, &key, sequence, members).await;
            if allowed(role, call) {
                assert_eq!(outcome, Ok(()), "{name} ({role}) may call {call:?}");
                if call.writes() {
                    assert_ne!(
                        value_of(&mut admin, &key).await.as_deref(),
                        Some(&b"original"[..]),
                        "{call:?} wrote"
                    );
                }
            } else {
                assert_eq!(outcome, Err(Code::PermissionDenied), "{name} ({role}) may not call {call:?}");
                assert_eq!(state(&mut admin).await, before, "{name}'s refused {call:?} changed nothing");
                assert_eq!(value_of(&mut admin, &key).await.as_deref(), Some(&b"original"[..]), "{key}");
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_or_with_wrong_credentials_are_unauthenticated_and_change_nothing() {
    let server = start(None, Vec::new()).await;
    let mut admin = raw(&server, with_token(token_of(Role::Admin)));
    admin.put(pb::PutRequest { id: write_id(1), key: "k".into(), value: "original".into() }).await.unwrap();
    let before = state(&mut admin).await;
    let strangers = [
        ("no token", ClientSecurity::default()),
        ("a wrong token", with_token("admin-token-51d1")),
        ("a token's hash", with_token(&hash_token(token_of(Role::Admin)))),
    ];
    for (what, security) in strangers {
        let mut client = raw(&server, security);
        for (n, call) in CALLS.into_iter().enumerate() {
            let outcome = make(&mut client, call, "k", 100 + n as u64, &[1, 2]).await;
            assert_eq!(outcome, Err(Code::Unauthenticated), "{call:?} with {what}");
        }
    }
    assert_eq!(state(&mut admin).await, before);
    assert_eq!(value_of(&mut admin, "k").await.as_deref(), Some(&b"original"[..]));
    // The high-level client reports the refusal without retrying.
    let mut client =
        rsl_kv::Client::new([server.client_addr().to_string()], ClientOptions::default()).unwrap();
    match client.put("k", "changed").await {
        Err(rsl_kv::ClientError::Server { code: Code::Unauthenticated, .. }) => {}
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_that_cannot_be_served_is_refused_at_start_naming_the_key() {
    // Files that exist (the configuration checks that much) but hold no certificate: a
    // build with TLS cannot load them, a build without TLS cannot serve TLS at all.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, "not PEM").unwrap();
        path
    };
    let client_tls = ClientTlsFiles {
        cert: Some(file("cert.pem")),
        key: Some(file("key.pem")),
        ..ClientTlsFiles::default()
    };
    let (config, listeners) = configure(Some(client_tls), Vec::new()).await;
    let client = listeners.client.local_addr().unwrap();
    match Server::start_on(config, listeners, RingOptions::default()).await {
        Err(ServerError::Tls(message)) => {
            assert!(message.contains("client_tls"), "{message}");
            if cfg!(not(feature = "tls")) {
                assert!(message.contains("built without TLS"), "{message}");
            }
        }
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("a server with unusable client TLS started"),
    }
    // Nothing was left listening on the client port.
    assert!(std::net::TcpListener::bind(client).is_ok(), "the client port was released");
}

/// TLS on the client port: client certificates mapped to users, tokens over TLS, and the
/// certificates of a foreign CA refused.
#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rsl_kv::ClientTls;
    use std::path::PathBuf;

    /// A certificate authority that writes PEM files into a directory.
    struct Authority {
        name: String,
        issuer: CertifiedIssuer<'static, KeyPair>,
        dir: PathBuf,
    }

    impl Authority {
        fn new(dir: &std::path::Path, name: &str) -> Authority {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            let authority = Authority { name: name.to_owned(), issuer, dir: dir.to_owned() };
            std::fs::write(authority.path("ca.pem"), authority.issuer.pem()).unwrap();
            authority
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.join(format!("{}-{file}", self.name))
        }

        fn ca_pem(&self) -> Vec<u8> {
            std::fs::read(self.path("ca.pem")).unwrap()
        }

        /// A certificate with common name `common_name` and the DNS names `names`, signed
        /// by this authority: (certificate PEM, key PEM), also written as files.
        fn issue(
            &self,
            common_name: &str,
            names: &[&str],
            usage: ExtendedKeyUsagePurpose,
        ) -> (String, String) {
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
            params.distinguished_name.push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            std::fs::write(self.path(&format!("{common_name}.pem")), cert.pem()).unwrap();
            std::fs::write(self.path(&format!("{common_name}.key")), key.serialize_pem()).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn certificate_user(name: &str, role: Role, cert_name: &str) -> UserFile {
        UserFile {
            name: name.to_owned(),
            role: Some(role),
            token_sha256: None,
            cert_name: Some(cert_name.to_owned()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificates_identify_users_and_a_foreign_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Authority::new(dir.path(), "ring");
        let foreign = Authority::new(dir.path(), "foreign");
        ours.issue("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let board = ours.issue("board", &["board.example"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = ours.issue("stranger", &["stranger.example"], ExtendedKeyUsagePurpose::ClientAuth);
        // The foreign CA issues a certificate with the same names as the reader's.
        let forged = foreign.issue("board", &["board.example"], ExtendedKeyUsagePurpose::ClientAuth);
        let client_tls = ClientTlsFiles {
            cert: Some(ours.path("server.pem")),
            key: Some(ours.path("server.key")),
            client_ca: Some(ours.path("ca.pem")),
            // Clients without a certificate may still come in with a token.
            require_client_cert: Some(false),
        };
        let users = vec![
            certificate_user("board", Role::Read, "board.example"),
            certificate_user("deployer", Role::ReadWrite, "deployer"),
        ];
        let server = start(Some(client_tls), users).await;
        let tls = || ClientTls::new(ours.ca_pem());
        let security = |tls: ClientTls, token: Option<&str>| ClientSecurity {
            tls: Some(tls),
            token: token.map(|token| Token::new(token).unwrap()),
        };

        // A token over TLS, without a client certificate.
        let mut admin = raw(&server, security(tls(), Some(token_of(Role::Admin))));
        admin
            .put(pb::PutRequest { id: write_id(1), key: "k".into(), value: "original".into() })
            .await
            .unwrap();
        let before = state(&mut admin).await;

        // The reader's certificate (its DNS name maps to the user) reads and may not write.
        let mut board_client =
            raw(&server, security(tls().with_identity(board.0.clone(), board.1.clone()), None));
        assert_eq!(make(&mut board_client, Call::Get, "k", 2, &[1]).await, Ok(()));
        assert_eq!(make(&mut board_client, Call::StreamRead, "k", 2, &[1]).await, Ok(()));
        assert_eq!(make(&mut board_client, Call::Put, "k", 2, &[1]).await, Err(Code::PermissionDenied));
        assert_eq!(
            make(&mut board_client, Call::StreamWrite, "k", 3, &[1]).await,
            Err(Code::PermissionDenied)
        );

        // A certificate of our CA that names no user, and no certificate and no token.
        let mut unknown = raw(&server, security(tls().with_identity(stranger.0, stranger.1), None));
        assert_eq!(make(&mut unknown, Call::Get, "k", 4, &[1]).await, Err(Code::Unauthenticated));
        let mut anonymous = raw(&server, security(tls(), None));
        assert_eq!(make(&mut anonymous, Call::Status, "k", 4, &[1]).await, Err(Code::Unauthenticated));
        // A wrong token decides even with a good certificate.
        let mut wrong = raw(&server, security(tls().with_identity(board.0, board.1), Some("wrong")));
        assert_eq!(make(&mut wrong, Call::Get, "k", 4, &[1]).await, Err(Code::Unauthenticated));

        // The foreign CA's certificate is refused in the handshake: no call gets through.
        let mut forger = raw(&server, security(tls().with_identity(forged.0, forged.1), None));
        for call in [Call::Get, Call::Put, Call::Delete] {
            let outcome = make(&mut forger, call, "k", 5, &[1]).await;
            // The connection fails (how depends on when the server's alert arrives).
            assert!(
                matches!(outcome, Err(Code::Unavailable | Code::Unknown | Code::Cancelled)),
                "{call:?}: {outcome:?}"
            );
        }
        // So is a client that does not trust our server's CA, and a plaintext client.
        let mut distrustful =
            raw(&server, security(ClientTls::new(foreign.ca_pem()), Some(token_of(Role::Admin))));
        assert!(make(&mut distrustful, Call::Put, "k", 6, &[1]).await.is_err());
        let mut plaintext = raw(&server, with_token(token_of(Role::Admin)));
        assert!(make(&mut plaintext, Call::Put, "k", 7, &[1]).await.is_err());

        assert_eq!(state(&mut admin).await, before, "nothing refused changed anything");
        assert_eq!(value_of(&mut admin, "k").await.as_deref(), Some(&b"original"[..]));

        // The high-level client over TLS with a token.
        let options = ClientOptions {
            security: security(tls(), Some(token_of(Role::ReadWrite))),
            ..ClientOptions::default()
        };
        let mut client = rsl_kv::Client::new([server.client_addr().to_string()], options).unwrap();
        client.put("k", "changed").await.unwrap();
        assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"changed"[..]));
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_required_client_certificate_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Authority::new(dir.path(), "ring");
        ours.issue("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let deployer = ours.issue("deployer", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let client_tls = ClientTlsFiles {
            cert: Some(ours.path("server.pem")),
            key: Some(ours.path("server.key")),
            client_ca: Some(ours.path("ca.pem")),
            require_client_cert: None,
        };
        let server =
            start(Some(client_tls), vec![certificate_user("deployer", Role::ReadWrite, "deployer")]).await;
        // Even a good token needs a certificate to connect at all.
        let token_only = ClientSecurity {
            tls: Some(ClientTls::new(ours.ca_pem())),
            token: Some(Token::new(token_of(Role::Admin)).unwrap()),
        };
        assert!(make(&mut raw(&server, token_only), Call::Get, "k", 1, &[1]).await.is_err());
        // The deployer's common name is its user: it writes, and may not reconfigure.
        let identity = ClientTls::new(ours.ca_pem()).with_identity(deployer.0, deployer.1);
        let mut client = raw(&server, ClientSecurity { tls: Some(identity), token: None });
        assert_eq!(make(&mut client, Call::Put, "k", 1, &[1]).await, Ok(()));
        assert_eq!(make(&mut client, Call::Reconfigure, "k", 2, &[1, 2]).await, Err(Code::PermissionDenied));
        server.shutdown().await;
    }

    /// A replica joining through a contact that requires client certificates presents one
    /// (`join_credentials`, as `rsl-kv --cacert --cert --key` would): with a certificate that
    /// names no user the contact refuses it, and the start fails saying what to give.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_joining_replica_presents_its_client_certificate_to_the_contact() {
        use rsl_kv::config::JoinCredentialsFile;

        let dir = tempfile::tempdir().unwrap();
        let ours = Authority::new(dir.path(), "ring");
        ours.issue("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        ours.issue("joiner", &[], ExtendedKeyUsagePurpose::ClientAuth);
        ours.issue("stranger", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let client_tls = ClientTlsFiles {
            cert: Some(ours.path("server.pem")),
            key: Some(ours.path("server.key")),
            client_ca: Some(ours.path("ca.pem")),
            require_client_cert: None,
        };
        let contact = start(Some(client_tls), vec![certificate_user("joiner", Role::Read, "joiner")]).await;
        let join = async |name: &str| {
            let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let credentials = JoinCredentialsFile {
                cacert: Some(ours.path("ca.pem")),
                cert: Some(ours.path(&format!("{name}.pem"))),
                key: Some(ours.path(&format!("{name}.key"))),
                ..JoinCredentialsFile::default()
            };
            let config = ConfigFile {
                node: Some(3),
                join_via: Some(contact.client_addr().to_string()),
                replica_listen: Some(replica.local_addr().unwrap().to_string()),
                client_listen: Some(client.local_addr().unwrap().to_string()),
                log: Some(LogBackend::Memory),
                join_credentials: Some(credentials),
                ..ConfigFile::default()
            }
            .resolve()
            .expect("a valid config");
            Server::start_on(config, Listeners { replica, client }, RingOptions::default()).await
        };
        match join("stranger").await {
            Err(ServerError::Contact { problem, .. }) => {
                assert!(problem.contains("Unauthenticated") && problem.contains("read role"), "{problem}")
            }
            other => panic!("a certificate naming no user is refused: {other:?}"),
        }
        let joined = join("joiner").await.expect("the reader's certificate is accepted");
        let status = joined.ring().status().borrow().clone();
        assert!(!status.member, "it waits to be added: {status:?}");
        joined.shutdown().await;
        contact.shutdown().await;
    }
}
