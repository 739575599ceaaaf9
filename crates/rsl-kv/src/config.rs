//! The server's configuration: a TOML file and command-line flags, merged (flags win) and
//! checked into a [`ServerConfig`].
//!
//! ```toml
//! node = 1                      # this replica's node id
//! ring = 1                      # optional, default 1
//! # Every member of the ring: node id = replica transport address.
//! members = ["1=10.0.0.1:7001", "2=10.0.0.2:7001", "3=10.0.0.3:7001"]
//! # Where each member serves clients (used to redirect clients to the primary).
//! clients = ["1=10.0.0.1:7101", "2=10.0.0.2:7101", "3=10.0.0.3:7101"]
//! data_dir = "/var/lib/rsl-kv"  # the log and checkpoints
//! log = "file"                  # file | pmem | memory
//! transport = "grpc"            # between replicas: grpc | rdma | rdma-emu (docs/RDMA.md)
//! metrics_port = 9101           # optional: Prometheus text on http://0.0.0.0:9101/metrics,
//!                               # probes on /healthz and /readyz
//! ready_lag_slots_max = 1000    # optional: /readyz fails while applied lags more than this
//! # client_listen = "0.0.0.0:7101"   # optional, default: this node's `clients` entry
//! # replica_listen = "0.0.0.0:7001"  # optional, default: this node's `members` entry
//! # join_via = "10.0.0.1:7101"  # optional: join a running ring knowing one replica's client API;
//! #                             # its credentials, if it has [auth]: [join_credentials] (`crate::join`)
//!
//! [tls]                         # optional: mutual TLS between replicas
//! ca = "ca.pem"
//! cert = "node1.pem"           # must name this node: subject alt name URI rsl://node/1
//! key = "node1.key"
//! # domain_name = "rsl-kv"      # optional: the name every replica certificate carries
//!
//! [client_tls]                  # optional: TLS on the client port (feature `tls`)
//! cert = "server1.pem"          # this server's certificate (chain), for clients
//! key = "server1.key"
//! client_ca = "clients-ca.pem"  # optional: verify client certificates against this CA
//! # require_client_cert = false # with client_ca: also accept clients without one
//!
//! [auth]                        # optional: who may do what (see `crate::auth`)
//! enabled = true
//! [[auth.users]]
//! name = "ops"
//! role = "admin"                # read | read-write | admin
//! token_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
//! [[auth.users]]
//! name = "dashboard"
//! role = "read"
//! cert_name = "dashboard.example.com"  # a client certificate's CN or DNS name
//!
//! [tuning]                      # optional: consensus timing and checkpoints
//! heartbeat_interval_ms = 50
//! election_delay_min_ms = 500
//! election_delay_max_ms = 1000
//! checkpoint_interval_slots = 10000
//! checkpoint_interval_bytes = 134217728  # also after this many bytes of writes (0: never)
//! checkpoint_interval_ms = 0             # also this long after the last one (0: never)
//! checkpoint_retry_ms = 1000             # a refused or failed save is tried again after this
//! primary_saves_checkpoints = false      # default: secondaries save, the primary copies
//! log_retain_slots = 1000
//! pmem_capacity_bytes = 67108864
//! pmem_flush = "auto"           # auto | msync | cache-lines (see below)
//! # pmem_dir = "/mnt/pmem"      # the pmem log file lives here (a DAX mount), not in data_dir
//! pipeline_depth = 64
//! batch_linger_us = 0
//! protocol_version = 2          # the newest replica protocol to speak (rolling upgrades)
//! request_bytes_max = 67174400     # largest write: a 64 MiB value and its framing
//! apply_on = "thread"           # thread | ring-task: where the state machine runs
//! ```
//!
//! Every problem is reported with the key it concerns and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use rsl::log::PmemFlush;
use rsl::{ApplyOn, NodeId, RingId};
use serde::{Deserialize, Deserializer};

pub use crate::auth::{AuthConfig, AuthFile};

pub use crate::bootstrap::{Start, StartMode};
pub use crate::join::JoinCredentialsFile;

use crate::connection::ClientSecurity;

/// Which log store a replica keeps its votes and proposals in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// The segmented file journal in `<data_dir>/log` (durable).
    File,
    /// The persistent-memory log: a mapped file `<data_dir>/pmem.log` (durable).
    Pmem,
    /// In memory: lost when the process stops. For experiments only.
    Memory,
}

impl std::str::FromStr for LogBackend {
    type Err = String;

    fn from_str(text: &str) -> Result<LogBackend, String> {
        parse_choice("log backend", text, &[LogBackend::File, LogBackend::Pmem, LogBackend::Memory])
    }
}

impl fmt::Display for LogBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogBackend::File => "file",
            LogBackend::Pmem => "pmem",
            LogBackend::Memory => "memory",
        })
    }
}

/// The one of `choices` whose name (as it displays) is `text`; otherwise an error that
/// names `what` was asked for and lists the choices.
pub(crate) fn parse_choice<T: Copy + fmt::Display>(
    what: &str,
    text: &str,
    choices: &[T],
) -> Result<T, String> {
    if let Some(choice) = choices.iter().find(|choice| choice.to_string() == text) {
        return Ok(*choice);
    }
    let names: Vec<String> = choices.iter().map(T::to_string).collect();
    let expected = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    };
    Err(format!("unknown {what} {text:?}; expected {expected}"))
}

/// A setting written as one of its names (`tuning.pmem_flush`: [`PmemFlush::NAMES`];
/// `tuning.apply_on`: [`ApplyOn::NAMES`]), parsed by its `FromStr`.
fn deserialize_named<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|text| text.parse().map_err(serde::de::Error::custom)).transpose()
}

/// How replicas talk to each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaTransportKind {
    /// tonic gRPC over TCP (optionally with mutual TLS).
    #[default]
    Grpc,
    /// RDMA verbs on the host's first device (needs the `rdma-verbs` feature and a device,
    /// or soft-RoCE); `members` addresses are the TCP addresses of the RDMA handshake.
    Rdma,
    /// The RDMA ring protocol on the emulated provider (shared memory on one host; tests and
    /// the benchmark).
    RdmaEmu,
}

impl std::str::FromStr for ReplicaTransportKind {
    type Err = String;

    fn from_str(text: &str) -> Result<ReplicaTransportKind, String> {
        use ReplicaTransportKind as K;
        parse_choice("replica transport", text, &[K::Grpc, K::Rdma, K::RdmaEmu])
    }
}

impl fmt::Display for ReplicaTransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaTransportKind::Grpc => "grpc",
            ReplicaTransportKind::Rdma => "rdma",
            ReplicaTransportKind::RdmaEmu => "rdma-emu",
        })
    }
}

/// TLS material for the replica transport, as file paths.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM of the CA that signs every replica's certificate.
    pub ca: Option<PathBuf>,
    /// PEM of this replica's certificate (chain). It must name this node with the subject
    /// alternative name URI `rsl://node/<id>`: peers take a replica's identity from it
    /// (for its messages and its checkpoint requests), never from what it claims.
    pub cert: Option<PathBuf>,
    /// PEM of this replica's private key.
    pub key: Option<PathBuf>,
    /// Verify peers against this name instead of the host in their address.
    pub domain_name: Option<String>,
}

/// TLS on the client port, as written in the file (`[client_tls]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// PEM of the certificate (chain) this server presents to clients.
    pub cert: Option<PathBuf>,
    /// PEM of its private key.
    pub key: Option<PathBuf>,
    /// PEM of the CA that signs client certificates: clients present one, verified
    /// against it (the names it carries can identify a user, see `[[auth.users]]`).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse a client without a certificate (default true); false
    /// accepts one without, which must then authenticate with a token.
    pub require_client_cert: Option<bool>,
}

/// Checked TLS settings of the client port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPortTls {
    /// This server's certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA client certificates are verified against; `None`: clients present none.
    pub client_ca: Option<PathBuf>,
    /// Whether a client without a certificate is refused (only with `client_ca`).
    pub require_client_cert: bool,
}

impl ClientTlsFiles {
    fn resolve(self) -> Result<ClientPortTls, ConfigError> {
        let required = |key: &'static str, path: Option<PathBuf>| match path {
            None => {
                Err(invalid(key, "missing: TLS on the client port needs client_tls.cert and client_tls.key"))
            }
            Some(path) => readable(key, path),
        };
        let cert = required("client_tls.cert", self.cert)?;
        let key = required("client_tls.key", self.key)?;
        let client_ca = self.client_ca.map(|path| readable("client_tls.client_ca", path)).transpose()?;
        if self.require_client_cert.is_some() && client_ca.is_none() {
            return Err(invalid(
                "client_tls.require_client_cert",
                "client certificates need client_tls.client_ca, the CA to verify them against",
            ));
        }
        let require_client_cert = client_ca.is_some() && self.require_client_cert.unwrap_or(true);
        Ok(ClientPortTls { cert, key, client_ca, require_client_cert })
    }
}

/// `path` if it is a file; otherwise an error naming `key`.
fn readable(key: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(invalid(key, format!("{} is not a readable file", path.display())))
    }
}

/// Consensus timing and checkpoint settings; unset fields keep the library defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// How often the primary heartbeats.
    pub heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the randomised election delay (and the read lease).
    pub election_delay_min_ms: Option<u64>,
    /// Upper bound of the randomised election delay.
    pub election_delay_max_ms: Option<u64>,
    /// A checkpoint every this many slots (0: never).
    pub checkpoint_interval_slots: Option<u64>,
    /// A checkpoint once this many bytes of writes were applied since the last (0: never;
    /// RSL's `m_maxLogLenMB`).
    pub checkpoint_interval_bytes: Option<u64>,
    /// A checkpoint once this long passed since the last (0: never; RSL's
    /// `m_maxCheckpointIntervalSec`).
    pub checkpoint_interval_ms: Option<u64>,
    /// A refused or failed save, or a copy that found nothing newer, is tried again after
    /// this long.
    pub checkpoint_retry_ms: Option<u64>,
    /// Whether the primary saves checkpoints itself (default false: secondaries save, the
    /// primary copies theirs; see docs/PROTOCOL.md).
    pub primary_saves_checkpoints: Option<bool>,
    /// Slots kept in the log below the newest checkpoint.
    pub log_retain_slots: Option<u64>,
    /// A learner is promoted to member only once within this many slots of the primary's
    /// chosen slot (`rsl-kv reconfigure` waits for it).
    pub learner_promotion_lag_slots_max: Option<u64>,
    /// Size of the persistent-memory log file when it is created.
    pub pmem_capacity_bytes: Option<u64>,
    /// How the persistent-memory log persists its stores: `auto` (default: cache-line
    /// flushes and a fence on a DAX mount or tmpfs, `msync` elsewhere), `msync`, or
    /// `cache-lines` (refused at start unless the file is on a DAX mount or tmpfs).
    #[serde(default, deserialize_with = "deserialize_named")]
    pub pmem_flush: Option<PmemFlush>,
    /// Directory of the persistent-memory log file (a DAX mount, say), where it is named
    /// `ring-<ring>-node-<node>.pmem` so replicas can share one; default
    /// `<data_dir>/pmem.log`.
    pub pmem_dir: Option<PathBuf>,
    /// Unchosen slots the primary keeps in flight; fewer means fuller batches per slot.
    pub pipeline_depth: Option<u64>,
    /// How long a partial batch may wait for more requests while the pipeline has room.
    pub batch_linger_us: Option<u64>,
    /// The newest replica protocol version to speak over gRPC and RDMA (default: this build's
    /// newest, `rsl::transport::PROTOCOL_VERSION`): during a rolling upgrade, the old
    /// version until every replica runs the new build (docs/OPERATIONS.md, "Upgrade").
    pub protocol_version: Option<u32>,
    /// Largest encoded write the ring takes ([`REQUEST_BYTES_MAX_DEFAULT`] by default); a
    /// larger one is refused naming this key. Also bounds client API messages.
    pub request_bytes_max: Option<u64>,
    /// Where the key-value state machine runs: `thread` (default: a thread of its own) or
    /// `ring-task` (on the ring's task: two thread hand-offs fewer per round, but a
    /// checkpoint save or load, or a slow write, stalls consensus meanwhile; see
    /// [`ApplyOn`] and docs/OPERATIONS.md).
    #[serde(default, deserialize_with = "deserialize_named")]
    pub apply_on: Option<ApplyOn>,
}

/// The configuration as written in a file or given as flags: every field optional.
/// [`ConfigFile::merge`] layers flags over a file; [`ConfigFile::resolve`] checks the
/// result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// This replica's node id.
    pub node: Option<u64>,
    /// The ring id (default 1).
    pub ring: Option<u64>,
    /// `id=host:port` of the replica transport of every node that is or may become a
    /// member (the address book; a configuration change can only add listed nodes).
    pub members: Option<Vec<String>>,
    /// The ring's first configuration when this replica bootstraps it: node ids (default:
    /// every node in `members`).
    pub initial_members: Option<Vec<u64>>,
    /// Join a running ring instead of bootstrapping one when the data directory is new; the
    /// replica votes once a configuration change adds it.
    pub join: Option<bool>,
    /// Join a running ring through one contact: the client API address (`host:port`) of
    /// any of its replicas, asked at start for the address book. Implies `join`; `members`
    /// may then name only this node, or be left out (then `replica_listen` is this node's
    /// replica address).
    pub join_via: Option<String>,
    /// How this replica presents itself to the `join_via` contact (a token, TLS, a client
    /// certificate), for a contact with `[auth]` or `[client_tls]`; see [`crate::join`].
    pub join_credentials: Option<JoinCredentialsFile>,
    /// Bootstrap a new ring, refusing a data directory that already holds one.
    pub bootstrap: Option<bool>,
    /// `id=host:port` of every member's client API.
    pub clients: Option<Vec<String>>,
    /// Where this replica's client API listens (default: its `clients` entry).
    pub client_listen: Option<String>,
    /// Where this replica's transport listens (default: its `members` entry).
    pub replica_listen: Option<String>,
    /// The log and checkpoints directory.
    pub data_dir: Option<PathBuf>,
    /// `file`, `pmem` or `memory`.
    pub log: Option<LogBackend>,
    /// `grpc`, `rdma` or `rdma-emu`.
    pub transport: Option<ReplicaTransportKind>,
    /// Serve Prometheus metrics on this port (all interfaces).
    pub metrics_port: Option<u16>,
    /// `/readyz` fails while this replica's applied slot lags the highest chosen slot it
    /// knows by more than this (default 1000).
    pub ready_lag_slots_max: Option<u64>,
    /// Mutual TLS between replicas.
    pub tls: Option<TlsFiles>,
    /// TLS on the client port.
    pub client_tls: Option<ClientTlsFiles>,
    /// Authentication and roles of clients.
    pub auth: Option<AuthFile>,
    /// Timing and checkpoints.
    pub tuning: Option<Tuning>,
}

/// A configuration that cannot be used: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("config file {}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is missing or has a bad value.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The key, as in the file (flags use the same names with dashes).
        key: &'static str,
        /// What was expected and what was found.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

/// A checked, complete server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The ring.
    pub ring: RingId,
    /// This replica.
    pub node: NodeId,
    /// The replica transport address (`host:port`) of every node that is or may become a
    /// member.
    pub members: BTreeMap<NodeId, String>,
    /// Configuration 1's members, for a bootstrap (every node in `members` by default).
    pub initial_members: Vec<NodeId>,
    /// Bootstrap, join, or decide by the data directory.
    pub start: StartMode,
    /// The contact to ask for the address book when joining (`join_via`), if any.
    pub join_via: Option<String>,
    /// How to connect to the contact (`join_credentials`; none by default).
    pub join_security: ClientSecurity,
    /// The client API address of members that have one.
    pub clients: BTreeMap<NodeId, String>,
    /// Where the client API listens.
    pub client_listen: SocketAddr,
    /// Where the replica transport listens.
    pub replica_listen: SocketAddr,
    /// The log and checkpoints directory (empty, and unused, with the memory log).
    pub data_dir: PathBuf,
    /// The log store.
    pub log: LogBackend,
    /// How replicas talk.
    pub transport: ReplicaTransportKind,
    /// Prometheus metrics port.
    pub metrics_port: Option<u16>,
    /// `/readyz` fails while applied lags the highest chosen slot known by more than this.
    pub ready_lag_slots_max: u64,
    /// Mutual TLS between replicas (all three files present).
    pub tls: Option<TlsFiles>,
    /// TLS on the client port.
    pub client_tls: Option<ClientPortTls>,
    /// Who may do what on the client API; `None`: everyone may do everything.
    pub auth: Option<AuthConfig>,
    /// Timing and checkpoints.
    pub tuning: Tuning,
}

impl ConfigFile {
    /// Parses TOML text; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        ConfigFile::parse(&text, path)
    }

    /// `self` with every field that `overrides` sets replaced (flags over a file).
    pub fn merge(self, overrides: ConfigFile) -> ConfigFile {
        let tls = match (self.tls, overrides.tls) {
            (Some(base), Some(top)) => Some(TlsFiles {
                ca: top.ca.or(base.ca),
                cert: top.cert.or(base.cert),
                key: top.key.or(base.key),
                domain_name: top.domain_name.or(base.domain_name),
            }),
            (base, top) => top.or(base),
        };
        let tuning = match (self.tuning, overrides.tuning) {
            (Some(base), Some(top)) => Some(Tuning {
                heartbeat_interval_ms: top.heartbeat_interval_ms.or(base.heartbeat_interval_ms),
                election_delay_min_ms: top.election_delay_min_ms.or(base.election_delay_min_ms),
                election_delay_max_ms: top.election_delay_max_ms.or(base.election_delay_max_ms),
                checkpoint_interval_slots: top.checkpoint_interval_slots.or(base.checkpoint_interval_slots),
                checkpoint_interval_bytes: top.checkpoint_interval_bytes.or(base.checkpoint_interval_bytes),
                checkpoint_interval_ms: top.checkpoint_interval_ms.or(base.checkpoint_interval_ms),
                checkpoint_retry_ms: top.checkpoint_retry_ms.or(base.checkpoint_retry_ms),
                primary_saves_checkpoints: top.primary_saves_checkpoints.or(base.primary_saves_checkpoints),
                log_retain_slots: top.log_retain_slots.or(base.log_retain_slots),
                learner_promotion_lag_slots_max: top
                    .learner_promotion_lag_slots_max
                    .or(base.learner_promotion_lag_slots_max),
                pmem_capacity_bytes: top.pmem_capacity_bytes.or(base.pmem_capacity_bytes),
                pmem_flush: top.pmem_flush.or(base.pmem_flush),
                pmem_dir: top.pmem_dir.or(base.pmem_dir),
                pipeline_depth: top.pipeline_depth.or(base.pipeline_depth),
                batch_linger_us: top.batch_linger_us.or(base.batch_linger_us),
                protocol_version: top.protocol_version.or(base.protocol_version),
                request_bytes_max: top.request_bytes_max.or(base.request_bytes_max),
                apply_on: top.apply_on.or(base.apply_on),
            }),
            (base, top) => top.or(base),
        };
        ConfigFile {
            node: overrides.node.or(self.node),
            ring: overrides.ring.or(self.ring),
            members: overrides.members.or(self.members),
            initial_members: overrides.initial_members.or(self.initial_members),
            join: overrides.join.or(self.join),
            join_via: overrides.join_via.or(self.join_via),
            join_credentials: match (self.join_credentials, overrides.join_credentials) {
                (Some(base), Some(top)) => Some(base.merge(top)),
                (base, top) => top.or(base),
            },
            bootstrap: overrides.bootstrap.or(self.bootstrap),
            clients: overrides.clients.or(self.clients),
            client_listen: overrides.client_listen.or(self.client_listen),
            replica_listen: overrides.replica_listen.or(self.replica_listen),
            data_dir: overrides.data_dir.or(self.data_dir),
            log: overrides.log.or(self.log),
            transport: overrides.transport.or(self.transport),
            metrics_port: overrides.metrics_port.or(self.metrics_port),
            ready_lag_slots_max: overrides.ready_lag_slots_max.or(self.ready_lag_slots_max),
            tls,
            client_tls: overrides.client_tls.or(self.client_tls),
            auth: overrides.auth.or(self.auth),
            tuning,
        }
    }

    /// Checks every key and fills in defaults.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let node = match self.node {
            Some(0) => return Err(invalid("node", "node ids start at 1, got 0")),
            Some(node) => NodeId(node),
            None => return Err(invalid("node", "missing: this replica's node id")),
        };
        let ring = match self.ring {
            Some(0) => return Err(invalid("ring", "ring ids start at 1, got 0")),
            Some(ring) => RingId(ring),
            None => RingId(1),
        };
        let join_via = self.join_via.filter(|contact| !contact.is_empty());
        let members = match (self.members, &join_via, &self.replica_listen) {
            (Some(entries), _, _) if !entries.is_empty() => parse_map("members", &entries)?,
            // Joining through a contact: the address book comes from it; this node's own
            // replica address is where it listens.
            (_, Some(_), Some(listen)) => BTreeMap::from([(node, listen.clone())]),
            (_, Some(_), None) => {
                return Err(invalid(
                    "replica_listen",
                    "missing: joining through a contact without members, set this node's replica address",
                ))
            }
            _ => return Err(invalid("members", "missing: list every member as id=host:port")),
        };
        if members.len() > rsl::core::MEMBERS_MAX {
            return Err(invalid(
                "members",
                format!("{} members, at most {}", members.len(), rsl::core::MEMBERS_MAX),
            ));
        }
        let Some(own_replica) = members.get(&node) else {
            let ids: Vec<u64> = members.keys().map(|n| n.0).collect();
            return Err(invalid(
                "members",
                format!("this node ({}) is not among the members {ids:?}", node.0),
            ));
        };
        let initial_members: Vec<NodeId> = match &self.initial_members {
            None => members.keys().copied().collect(),
            Some(ids) if ids.is_empty() => {
                return Err(invalid("initial_members", "must name at least one node"))
            }
            Some(ids) => {
                let mut nodes: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
                nodes.sort_unstable();
                nodes.dedup();
                if let Some(stranger) = nodes.iter().find(|n| !members.contains_key(n)) {
                    return Err(invalid(
                        "initial_members",
                        format!("node {} has no address in members", stranger.0),
                    ));
                }
                nodes
            }
        };
        let join_security = match self.join_credentials.filter(|c| !c.is_empty()) {
            None => ClientSecurity::default(),
            Some(_) if join_via.is_none() => {
                return Err(invalid(
                    "join_credentials",
                    "set without join_via: they are presented only to it",
                ))
            }
            Some(credentials) => credentials.resolve()?,
        };
        let join = self.join.unwrap_or(false) || join_via.is_some();
        let start = match (join, self.bootstrap.unwrap_or(false)) {
            (true, true) => return Err(invalid("join", "cannot both join and bootstrap")),
            (true, false) => StartMode::Join,
            (false, true) => StartMode::Bootstrap,
            (false, false) => StartMode::Auto,
        };
        if start == StartMode::Bootstrap && !initial_members.contains(&node) {
            return Err(invalid(
                "initial_members",
                format!("a bootstrapping node ({}) must be among the initial members", node.0),
            ));
        }
        let clients = parse_map("clients", self.clients.as_deref().unwrap_or_default())?;
        if let Some(stranger) = clients.keys().find(|id| !members.contains_key(id)) {
            return Err(invalid("clients", format!("node {} is not a member", stranger.0)));
        }
        let client_listen = match (&self.client_listen, clients.get(&node)) {
            (Some(address), _) => resolve("client_listen", address)?,
            (None, Some(address)) => resolve("clients", address)?,
            (None, None) => {
                return Err(invalid(
                    "client_listen",
                    format!("missing: set client_listen, or give node {} an entry in clients", node.0),
                ))
            }
        };
        let replica_listen = match &self.replica_listen {
            Some(address) => resolve("replica_listen", address)?,
            None => resolve("members", own_replica)?,
        };
        let log = self.log.unwrap_or(LogBackend::File);
        let data_dir = match self.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => return Err(invalid("data_dir", "must not be empty")),
            Some(dir) => dir,
            // A memory log keeps nothing on disk.
            None if log == LogBackend::Memory => PathBuf::new(),
            None => return Err(invalid("data_dir", "missing: the directory for the log and checkpoints")),
        };
        if self.metrics_port == Some(0) {
            return Err(invalid("metrics_port", "must be a port number from 1 to 65535"));
        }
        let tls = match self.tls {
            None => None,
            Some(tls) if tls == TlsFiles::default() => None,
            Some(tls) => {
                for (key, file) in [("tls.ca", &tls.ca), ("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                    match file {
                        None => {
                            return Err(invalid(
                                key,
                                "missing: TLS needs all of tls.ca, tls.cert and tls.key",
                            ))
                        }
                        Some(path) if !path.is_file() => {
                            return Err(invalid(key, format!("{} is not a readable file", path.display())))
                        }
                        Some(_) => {}
                    }
                }
                Some(tls)
            }
        };
        let client_tls = self.client_tls.map(ClientTlsFiles::resolve).transpose()?;
        let client_certificates = client_tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
        let auth = match self.auth {
            Some(auth) => auth.resolve(client_certificates)?,
            None => None,
        };
        let transport = self.transport.unwrap_or_default();
        if tls.is_some() && transport != ReplicaTransportKind::Grpc {
            return Err(invalid("tls", format!("mutual TLS is for the grpc transport, not {transport}")));
        }
        let tuning = self.tuning.unwrap_or_default();
        let config = ServerConfig {
            ring,
            node,
            members,
            initial_members,
            start,
            join_via,
            join_security,
            clients,
            client_listen,
            replica_listen,
            data_dir,
            log,
            transport,
            metrics_port: self.metrics_port,
            ready_lag_slots_max: self
                .ready_lag_slots_max
                .unwrap_or(rsl::ReadinessOptions::default().lag_slots_max),
            tls,
            client_tls,
            auth,
            tuning,
        };
        // The consensus settings are checked by the library; report its verdict by key
        // (with the initial members: a joining replica's contacts pass the same checks).
        let checked = if config.start == StartMode::Join || !config.initial_members.contains(&config.node) {
            Start::Joined
        } else {
            Start::Bootstrapped(config.initial_members.clone())
        };
        config.ring_config_for(&checked).validate().map_err(|error| match error {
            rsl::ConfigError::Invalid { field, reason } => {
                ConfigError::Invalid { key: tuning_key(field), problem: reason }
            }
            other => invalid("tuning", other.to_string()),
        })?;
        Ok(config)
    }
}

/// The config key (under `[tuning]` where it applies) of a consensus setting.
fn tuning_key(field: &'static str) -> &'static str {
    match field {
        "heartbeat_interval_ms" => "tuning.heartbeat_interval_ms",
        "election_delay_min_ms" => "tuning.election_delay_min_ms",
        "election_delay_max_ms" => "tuning.election_delay_max_ms",
        "checkpoint_interval_slots" => "tuning.checkpoint_interval_slots",
        "checkpoint_interval_bytes" => "tuning.checkpoint_interval_bytes",
        "checkpoint_interval_ms" => "tuning.checkpoint_interval_ms",
        "checkpoint_retry_ms" => "tuning.checkpoint_retry_ms",
        "log_retain_slots" => "tuning.log_retain_slots",
        "learner_promotion_lag_slots_max" => "tuning.learner_promotion_lag_slots_max",
        "pipeline_depth" => "tuning.pipeline_depth",
        "batch_linger_us" => "tuning.batch_linger_us",
        "request_bytes_max" | "large_bytes_in_flight_max" => "tuning.request_bytes_max",
        other => other,
    }
}

/// The replicas' consensus batch bound: room for the largest write
/// ([`crate::command::WRITE_BYTES_MAX`]) and the runtime's per-request framing.
pub const BATCH_BYTES_MAX: u64 = 160 << 10;

const _: () = assert!(crate::command::WRITE_BATCH_BYTES_MAX as u64 + 1024 <= BATCH_BYTES_MAX);

/// Default `tuning.request_bytes_max`: a put of a value of
/// [`crate::command::VALUE_BYTES_MAX`] with its key and framing.
pub const REQUEST_BYTES_MAX_DEFAULT: u64 =
    (crate::command::VALUE_BYTES_MAX + crate::command::KEY_BYTES_MAX + (64 << 10)) as u64;

impl ServerConfig {
    /// The persistent-memory log's file: `ring-<ring>-node-<node>.pmem` in
    /// `tuning.pmem_dir`, or `<data_dir>/pmem.log` without one.
    pub fn pmem_path(&self) -> PathBuf {
        match &self.tuning.pmem_dir {
            Some(dir) => dir.join(format!("ring-{}-node-{}.pmem", self.ring.0, self.node.0)),
            None => self.data_dir.join("pmem.log"),
        }
    }

    /// The consensus configuration of this replica, bootstrapping with the initial members
    /// (or, with `start`, from what the data directory recorded).
    pub fn ring_config(&self) -> rsl::Config {
        let start = match self.start {
            StartMode::Join => Start::Joined,
            _ => Start::Bootstrapped(self.initial_members.clone()),
        };
        self.ring_config_for(&start)
    }

    /// The consensus configuration of this replica for `start`.
    pub fn ring_config_for(&self, start: &Start) -> rsl::Config {
        let mut config = match start {
            Start::Bootstrapped(members) => rsl::Config::new(self.ring, self.node, members.clone()),
            Start::Joined => {
                // Ask every other node in the address book for the ring's configuration.
                let mut contacts: Vec<NodeId> =
                    self.members.keys().copied().filter(|&n| n != self.node).collect();
                if contacts.is_empty() {
                    // Joining through a contact (`join_via`) before it was asked: the check
                    // of the settings needs a contact; the server asks before it starts.
                    contacts.push(self.node);
                }
                let mut config = rsl::Config::new(self.ring, self.node, contacts);
                config.joining = true;
                config
            }
        };
        // Each setting the tuning names replaces the library's default.
        let tuning = &self.tuning;
        let set = |setting: &mut u64, tuned: Option<u64>| *setting = tuned.unwrap_or(*setting);
        set(&mut config.heartbeat_interval_ms, tuning.heartbeat_interval_ms);
        set(&mut config.election_delay_min_ms, tuning.election_delay_min_ms);
        set(&mut config.election_delay_max_ms, tuning.election_delay_max_ms);
        set(&mut config.checkpoint_interval_slots, tuning.checkpoint_interval_slots);
        set(&mut config.checkpoint_interval_bytes, tuning.checkpoint_interval_bytes);
        set(&mut config.checkpoint_interval_ms, tuning.checkpoint_interval_ms);
        set(&mut config.checkpoint_retry_ms, tuning.checkpoint_retry_ms);
        if let Some(saves) = tuning.primary_saves_checkpoints {
            config.primary_saves_checkpoints = saves;
        }
        set(&mut config.log_retain_slots, tuning.log_retain_slots);
        set(&mut config.learner_promotion_lag_slots_max, tuning.learner_promotion_lag_slots_max);
        set(&mut config.batch_linger_us, tuning.batch_linger_us);
        config.request_bytes_max = tuning.request_bytes_max.unwrap_or(REQUEST_BYTES_MAX_DEFAULT);
        // Room for two of the largest requests in flight besides the batches.
        config.large_bytes_in_flight_max = config
            .large_bytes_in_flight_max
            .max(2 * rsl::core::Value::large_size_bytes(config.request_bytes_max));
        if let Some(value) = tuning.pipeline_depth {
            config.pipeline_depth = value;
            // A promise must be able to carry every slot in flight twice over.
            config.promise_slots_max = config.promise_slots_max.max(2 * value);
        }
        // A batch must hold the largest write on its own, and a message every slot a
        // promise may carry (twice the pipeline of full batches).
        config.batch_bytes_max = config.batch_bytes_max.max(BATCH_BYTES_MAX);
        config.message_bytes_max =
            config.message_bytes_max.max(2 * config.pipeline_depth.saturating_mul(config.batch_bytes_max));
        config
    }

    /// The client address of `node`, if configured.
    pub fn client_address(&self, node: NodeId) -> Option<&str> {
        self.clients.get(&node).map(String::as_str)
    }
}

/// Parses `id=host:port` entries (each entry may itself be a comma-separated list).
pub fn parse_map(key: &'static str, entries: &[String]) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in entries.iter().flat_map(|e| e.split(',')).map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, address)) = entry.split_once('=') else {
            return Err(invalid(key, format!("{entry:?} is not id=host:port")));
        };
        let id: u64 = match id.trim().parse() {
            Ok(0) | Err(_) => {
                return Err(invalid(key, format!("{entry:?}: the node id must be a number from 1")));
            }
            Ok(id) => id,
        };
        let address = address.trim();
        check_host_port(key, address)?;
        if map.insert(NodeId(id), address.to_owned()).is_some() {
            return Err(invalid(key, format!("node {id} is listed twice")));
        }
    }
    Ok(map)
}

fn check_host_port(key: &'static str, address: &str) -> Result<(), ConfigError> {
    let port = address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port > 0 => Ok(()),
        _ => Err(invalid(key, format!("{address:?} is not host:port with a port from 1 to 65535"))),
    }
}

fn resolve(key: &'static str, address: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(address) = address.parse() {
        return Ok(address);
    }
    let port = address.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
    if !matches!(port, Some(Ok(_))) {
        return Err(invalid(key, format!("{address:?} is not host:port")));
    }
    address
        .to_socket_addrs()
        .map_err(|error| invalid(key, format!("cannot resolve {address:?}: {error}")))?
        .next()
        .ok_or_else(|| invalid(key, format!("{address:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node = 2
members = ["1=127.0.0.1:7001", "2=127.0.0.1:7002", "3=127.0.0.1:7003"]
clients = ["1=127.0.0.1:7101", "2=127.0.0.1:7102", "3=127.0.0.1:7103"]
data_dir = "/tmp/kv"
log = "pmem"
metrics_port = 9102

[tuning]
election_delay_min_ms = 300
election_delay_max_ms = 600
pipeline_depth = 8
batch_linger_us = 100
"#;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ConfigFile::parse(text, Path::new("test.toml"))?.resolve()
    }

    fn key_of(error: ConfigError) -> String {
        match error {
            ConfigError::Invalid { key, .. } => key.to_owned(),
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn checkpoint_triggers_reach_the_ring_config() {
        let text = format!(
            "{GOOD}checkpoint_interval_bytes = 1048576\ncheckpoint_interval_ms = 60000\n\
             checkpoint_retry_ms = 250\nprimary_saves_checkpoints = true\n"
        );
        let config = parse(&text).unwrap().ring_config();
        assert_eq!(config.checkpoint_interval_bytes, 1 << 20);
        assert_eq!(config.checkpoint_interval_ms, 60_000);
        assert_eq!(config.checkpoint_retry_ms, 250);
        assert!(config.primary_saves_checkpoints);
        // Unset, they keep the library's defaults.
        let defaults = parse(GOOD).unwrap().ring_config();
        let library = rsl::Config::new(RingId(1), NodeId(2), vec![NodeId(2)]);
        assert_eq!(defaults.checkpoint_interval_bytes, library.checkpoint_interval_bytes);
        assert_eq!(defaults.checkpoint_interval_ms, library.checkpoint_interval_ms);
        assert!(!defaults.primary_saves_checkpoints);
    }

    #[test]
    fn a_good_file_resolves() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.node, NodeId(2));
        assert_eq!(config.ring, RingId(1));
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.client_listen, "127.0.0.1:7102".parse::<SocketAddr>().unwrap());
        assert_eq!(config.replica_listen, "127.0.0.1:7002".parse::<SocketAddr>().unwrap());
        assert_eq!(config.log, LogBackend::Pmem);
        assert_eq!(config.client_address(NodeId(3)), Some("127.0.0.1:7103"));
        let ring = config.ring_config();
        assert_eq!((ring.election_delay_min_ms, ring.election_delay_max_ms), (300, 600));
        assert_eq!((ring.pipeline_depth, ring.batch_linger_us), (8, 100));
        assert_eq!((ring.election_delay_min_ms, ring.election_delay_max_ms), (300, 600));
        assert_eq!(
            ring.heartbeat_interval_ms,
            rsl::Config::new(RingId(1), NodeId(1), vec![]).heartbeat_interval_ms
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = ConfigFile::parse(GOOD, Path::new("test.toml")).unwrap();
        let flags = ConfigFile {
            node: Some(3),
            log: Some(LogBackend::File),
            tuning: Some(Tuning { election_delay_max_ms: Some(900), ..Tuning::default() }),
            ..ConfigFile::default()
        };
        let config = file.merge(flags).resolve().unwrap();
        assert_eq!(config.node, NodeId(3));
        assert_eq!(config.log, LogBackend::File);
        assert_eq!(config.client_listen, "127.0.0.1:7103".parse::<SocketAddr>().unwrap());
        // A tuning flag replaces one field and keeps the file's others.
        assert_eq!(config.tuning.election_delay_min_ms, Some(300));
        assert_eq!(config.tuning.election_delay_max_ms, Some(900));
        assert_eq!(config.metrics_port, Some(9102));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("node = 0", "node"),
            ("members = []", "members"),
            ("members = [\"1=127.0.0.1:7001\"]", "members"),
            ("members = [\"2=nohost\"]", "members"),
            ("members = [\"x=127.0.0.1:1\"]", "members"),
            ("members = [\"2=127.0.0.1:7002\", \"2=127.0.0.1:7003\"]", "members"),
            ("clients = [\"9=127.0.0.1:1\"]", "clients"),
            ("clients = []", "client_listen"),
            ("data_dir = \"\"", "data_dir"),
            ("metrics_port = 0", "metrics_port"),
            ("tls = { ca = \"/nonexistent/ca.pem\" }", "tls.ca"),
            ("tuning = { election_delay_min_ms = 10 }", "tuning.election_delay_min_ms"),
            ("tuning = { checkpoint_interval_bytes = 100 }", "tuning.checkpoint_interval_bytes"),
            ("tuning = { checkpoint_interval_ms = 1 }", "tuning.checkpoint_interval_ms"),
            ("tuning = { checkpoint_retry_ms = 0 }", "tuning.checkpoint_retry_ms"),
        ];
        for (line, key) in cases {
            // Replace the matching top-level key of the good file.
            let name = line.split([' ', '=']).next().unwrap();
            let mut text: String = GOOD
                .lines()
                .take_while(|l| !l.starts_with('['))
                .filter(|l| !l.starts_with(&format!("{name} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(line);
            text.push('\n');
            let error = parse(&text).expect_err(line);
            assert_eq!(key_of(error), *key, "{line}");
        }
        let missing = parse("node = 1\n").unwrap_err().to_string();
        assert_eq!(missing, "config key `members`: missing: list every member as id=host:port");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_parse_errors_with_a_location() {
        let error = parse("node = 1\nmembrs = []\n").unwrap_err().to_string();
        assert!(error.contains("test.toml") && error.contains("membrs"), "{error}");
        let error = parse("node = \"one\"\n").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let error = parse("log = \"disk\"\n").unwrap_err().to_string();
        assert!(error.contains("disk"), "{error}");
    }

    #[test]
    fn client_tls_and_auth_are_checked_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "PEM").unwrap();
            path.display().to_string()
        };
        let (cert, key, ca) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
        let hash = crate::auth::hash_token("token");
        let tls = format!("[client_tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n");
        let users = format!(
            "[[auth.users]]\nname = \"ops\"\nrole = \"admin\"\ntoken_sha256 = \"{hash}\"\n\
             [[auth.users]]\nname = \"board\"\nrole = \"read\"\ncert_name = \"board.example\"\n"
        );
        let config = parse(&format!("{GOOD}{tls}[auth]\nenabled = true\n{users}")).unwrap();
        let client_tls = config.client_tls.unwrap();
        assert!(client_tls.require_client_cert, "a client CA requires client certificates by default");
        let auth = config.auth.unwrap();
        let roles: Vec<_> = auth.users.iter().map(|user| (user.name.as_str(), user.role)).collect();
        assert_eq!(roles, [("ops", crate::auth::Role::Admin), ("board", crate::auth::Role::Read)]);

        let cases = [
            (format!("[client_tls]\ncert = {cert:?}\n"), "client_tls.key"),
            (format!("[client_tls]\ncert = \"/nonexistent.pem\"\nkey = {key:?}\n"), "client_tls.cert"),
            (
                format!("[client_tls]\ncert = {cert:?}\nkey = {key:?}\nrequire_client_cert = false\n"),
                "client_tls.require_client_cert",
            ),
            (format!("[auth]\n{users}"), "auth.enabled"),
            // A certificate user needs client certificates.
            (format!("[auth]\nenabled = true\n{users}"), "auth.users"),
            ("[auth]\nenabled = true\n".to_owned(), "auth.users"),
        ];
        for (section, key) in cases {
            let error = parse(&format!("{GOOD}{section}")).expect_err(&section);
            assert_eq!(key_of(error), key, "{section}");
        }
        // An unknown role is a parse error naming the value, the choices and the line.
        let error = parse(&format!(
            "{GOOD}[auth]\nenabled = true\n[[auth.users]]\nname = \"a\"\nrole = \"writer\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("writer") && error.contains("read-write") && error.contains("line"),
            "{error}"
        );
        // Off: the users are checked, but nobody needs credentials.
        let off = parse(&format!("{GOOD}{tls}[auth]\nenabled = false\n{users}")).unwrap();
        assert_eq!(off.auth, None);
    }

    #[test]
    fn only_the_memory_log_may_go_without_a_data_dir() {
        let base = "node = 1\nmembers = [\"1=127.0.0.1:7001\"]\nclient_listen = \"127.0.0.1:7101\"\n";
        let error = parse(base).unwrap_err();
        assert_eq!(key_of(error), "data_dir");
        let config = parse(&format!("{base}log = \"memory\"\n")).unwrap();
        assert_eq!(config.log, LogBackend::Memory);
        assert_eq!(config.members.len(), 1);
    }

    #[test]
    fn the_replica_transport_is_grpc_unless_chosen() {
        let base = "node = 1\nmembers = [\"1=127.0.0.1:7001\"]\nclient_listen = \"127.0.0.1:7101\"\nlog = \"memory\"\n";
        assert_eq!(parse(base).unwrap().transport, ReplicaTransportKind::Grpc);
        let config = parse(&format!("{base}transport = \"rdma-emu\"\n")).unwrap();
        assert_eq!(config.transport, ReplicaTransportKind::RdmaEmu);
        assert_eq!("rdma".parse::<ReplicaTransportKind>(), Ok(ReplicaTransportKind::Rdma));
        let error = "infiniband".parse::<ReplicaTransportKind>().unwrap_err();
        assert!(error.contains("expected grpc, rdma or rdma-emu"), "{error}");
        // Mutual TLS is a property of the gRPC transport.
        let directory = tempfile::tempdir().unwrap();
        let pem = directory.path().join("x.pem");
        std::fs::write(&pem, "pem").unwrap();
        let tls = format!("tls = {{ ca = {pem:?}, cert = {pem:?}, key = {pem:?} }}\n");
        let error = parse(&format!("{base}transport = \"rdma\"\n{tls}")).unwrap_err();
        assert_eq!(key_of(error), "tls");
    }

    #[test]
    fn map_entries_may_be_comma_separated() {
        let map = parse_map("members", &["1=a:1,2=b:2".into(), " 3 = c:3 ".into()]).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map[&NodeId(3)], "c:3");
    }

    #[test]
    fn pmem_flush_and_directory_parse_and_name_the_file() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.tuning.pmem_flush, None, "unset: the store's default (auto)");
        assert_eq!(config.pmem_path(), PathBuf::from("/tmp/kv/pmem.log"));
        let text = format!("{GOOD}pmem_flush = \"cache-lines\"\npmem_dir = \"/dev/shm/kv\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.tuning.pmem_flush, Some(PmemFlush::CacheLines));
        assert_eq!(config.pmem_path(), PathBuf::from("/dev/shm/kv/ring-1-node-2.pmem"));
        // Flags win over the file.
        let file = ConfigFile::parse(&text, Path::new("test.toml")).unwrap();
        let flags = ConfigFile {
            tuning: Some(Tuning { pmem_flush: Some(PmemFlush::Msync), ..Tuning::default() }),
            ..ConfigFile::default()
        };
        let merged = file.merge(flags).resolve().unwrap();
        assert_eq!(merged.tuning.pmem_flush, Some(PmemFlush::Msync));
        assert_eq!(merged.tuning.pmem_dir, Some(PathBuf::from("/dev/shm/kv")));
    }

    /// The message of the parse error `text` must give.
    fn parse_message(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Parse { message, .. }) => message,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_pmem_flush_names_the_key_and_the_choices() {
        let text = format!("{GOOD}pmem_flush = \"dax\"\n");
        let message = parse_message(&text);
        assert!(message.contains("pmem_flush"), "{message}");
        assert!(
            message.contains(r#"unknown pmem flush mode "dax"; expected auto, msync or cache-lines"#),
            "{message}"
        );
    }

    #[test]
    fn apply_on_parses_by_name_defaults_to_unset_and_names_the_key_when_wrong() {
        assert_eq!(parse(GOOD).unwrap().tuning.apply_on, None, "unset: the library's default (thread)");
        for apply_on in [ApplyOn::Thread, ApplyOn::RingTask] {
            let config = parse(&format!("{GOOD}apply_on = \"{apply_on}\"\n")).unwrap();
            assert_eq!(config.tuning.apply_on, Some(apply_on));
        }
        let message = parse_message(&format!("{GOOD}apply_on = \"elsewhere\"\n"));
        assert!(message.contains("apply_on"), "{message}");
        assert!(
            message.contains(r#"unknown place to apply "elsewhere"; expected thread or ring-task"#),
            "{message}"
        );
    }

    #[test]
    fn log_backends_parse_by_the_name_they_display() {
        for backend in [LogBackend::File, LogBackend::Pmem, LogBackend::Memory] {
            assert_eq!(backend.to_string().parse(), Ok(backend));
        }
        assert_eq!(
            "tape".parse::<LogBackend>(),
            Err(r#"unknown log backend "tape"; expected file, pmem or memory"#.to_owned())
        );
    }
}
