//! The `rsl-kv-server` command line: one replica of the replicated key-value service.
//!
//! Settings come from a TOML file (`--config`, see [`crate::config`]) and flags of the same
//! names; a flag overrides the file. The server runs until SIGTERM or SIGINT, then stops
//! accepting clients, flushes and closes its log, and exits. If its ring stops on its own
//! (its log store failed, for example on a full disk) it exits with status 1, so that a
//! supervisor restarts it.
//!
//! It lives in the library so that other packages (the cluster tests) can build the same
//! server as a binary of their own with `fn main() -> ExitCode { rsl_kv::server_cli::main() }`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{JoinCredentialsFile, ReplicaTransportKind, TlsFiles, Tuning};
use crate::connection::Token;
use crate::{ConfigFile, LogBackend, Server};
use clap::Parser;
use rsl::log::PmemFlush;
use rsl::ApplyOn;

/// One replica of the rsl-kv replicated key-value service.
#[derive(Debug, Parser)]
#[command(
    name = "rsl-kv-server",
    version,
    after_help = "Example:\n  rsl-kv-server --node 1 \\\n    --members 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \\\n    --clients 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 \\\n    --data-dir /tmp/kv1"
)]
struct Args {
    /// TOML config file; flags override its keys. TLS on the client port ([client_tls])
    /// and users with roles ([auth]) are set only in the file (see docs/SECURITY.md)
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// This replica's node id (a member id)
    #[arg(long)]
    node: Option<u64>,
    /// Ring id [default: 1]
    #[arg(long)]
    ring: Option<u64>,
    /// The replica transport address of every node that is or may become a member, as
    /// id=host:port (comma-separated or repeated): the address book
    #[arg(long, value_name = "ID=HOST:PORT", value_delimiter = ',')]
    members: Vec<String>,
    /// The ring's first configuration, for a bootstrap [default: every node in --members]
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    initial_members: Vec<u64>,
    /// Join a running ring: a new data directory waits to be added by `rsl-kv reconfigure`
    #[arg(long, conflicts_with = "bootstrap")]
    join: bool,
    /// Join a running ring knowing one contact: the client API address of any replica,
    /// asked for the address book (--members may then be left out; set --replica-listen)
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "bootstrap")]
    join_via: Option<String>,
    /// With --join-via: the bearer token presented to the contact, for a contact with
    /// [auth] (a user with the read role; a flag is visible in the process list: prefer the
    /// environment or --join-token-file)
    #[arg(long, env = "RSL_KV_JOIN_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = parse_token)]
    join_token: Option<Token>,
    /// With --join-via: read the contact's bearer token from this file (its first line)
    #[arg(long, value_name = "FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// With --join-via: connect to the contact over TLS, trusting this CA (PEM)
    #[arg(long, value_name = "FILE")]
    join_cacert: Option<PathBuf>,
    /// With --join-cacert: present this client certificate (PEM) to the contact
    #[arg(long, value_name = "FILE", requires_all = ["join_cacert", "join_key"])]
    join_cert: Option<PathBuf>,
    /// The private key (PEM) of --join-cert
    #[arg(long, value_name = "FILE", requires = "join_cert")]
    join_key: Option<PathBuf>,
    /// With --join-cacert: check the contact's certificate for this name
    #[arg(long, value_name = "NAME", requires = "join_cacert")]
    join_server_name: Option<String>,
    /// Bootstrap a new ring; refuse a data directory that already holds one
    #[arg(long)]
    bootstrap: bool,
    /// Every member's client API address, as id=host:port (for redirects to the primary)
    #[arg(long, value_name = "ID=HOST:PORT", value_delimiter = ',')]
    clients: Vec<String>,
    /// Where the client API listens [default: this node's --clients entry]
    #[arg(long, value_name = "HOST:PORT")]
    client_listen: Option<String>,
    /// Where the replica transport listens [default: this node's --members entry]
    #[arg(long, value_name = "HOST:PORT")]
    replica_listen: Option<String>,
    /// Directory of the log and checkpoints
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log store: file, pmem or memory [default: file]
    #[arg(long, value_name = "BACKEND")]
    log: Option<LogBackend>,
    /// Replica transport: grpc, rdma or rdma-emu [default: grpc]
    #[arg(long, value_name = "KIND")]
    transport: Option<ReplicaTransportKind>,
    /// Serve Prometheus metrics (and the /healthz and /readyz probes) on this port
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// /readyz fails while applied lags the highest chosen slot known by more than this
    /// many slots [default: 1000]
    #[arg(long, value_name = "SLOTS")]
    ready_lag_slots_max: Option<u64>,
    /// PEM of the CA for mutual TLS between replicas
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM of this replica's certificate, naming this node with the URI rsl://node/<id>
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM of this replica's private key
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Name every replica certificate carries (instead of the host of its address)
    #[arg(long, value_name = "NAME")]
    tls_domain_name: Option<String>,
    /// Primary heartbeat interval
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the election delay (and the read lease)
    #[arg(long, value_name = "MS")]
    election_delay_min_ms: Option<u64>,
    /// Upper bound of the election delay
    #[arg(long, value_name = "MS")]
    election_delay_max_ms: Option<u64>,
    /// A checkpoint every this many slots (0: never)
    #[arg(long, value_name = "SLOTS")]
    checkpoint_interval_slots: Option<u64>,
    /// Also a checkpoint after this many bytes of writes (0: never)
    #[arg(long, value_name = "BYTES")]
    checkpoint_interval_bytes: Option<u64>,
    /// Also a checkpoint this long after the last one (0: never)
    #[arg(long, value_name = "MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Try a refused or failed checkpoint again after this long
    #[arg(long, value_name = "MS")]
    checkpoint_retry_ms: Option<u64>,
    /// The primary saves checkpoints itself (default: secondaries save, the primary copies)
    #[arg(long, value_name = "BOOL")]
    primary_saves_checkpoints: Option<bool>,
    /// Slots kept in the log below the newest checkpoint
    #[arg(long, value_name = "SLOTS")]
    log_retain_slots: Option<u64>,
    /// A learner is promoted only once within this many slots of the primary's chosen slot
    #[arg(long, value_name = "SLOTS")]
    learner_promotion_lag_slots_max: Option<u64>,
    /// Size of the persistent-memory log file when created
    #[arg(long, value_name = "BYTES")]
    pmem_capacity_bytes: Option<u64>,
    /// How the persistent-memory log persists: auto, msync or cache-lines [default: auto]
    #[arg(long, value_name = "MODE")]
    pmem_flush: Option<PmemFlush>,
    /// Directory of the persistent-memory log file (default: the data directory)
    #[arg(long, value_name = "DIR")]
    pmem_dir: Option<PathBuf>,
    /// Unchosen slots the primary keeps in flight (fewer: fuller batches)
    #[arg(long, value_name = "SLOTS")]
    pipeline_depth: Option<u64>,
    /// How long a partial batch may wait for more requests
    #[arg(long, value_name = "US")]
    batch_linger_us: Option<u64>,
    /// The newest replica protocol version to speak (gRPC and RDMA; default: this build's
    /// newest). During a rolling upgrade: the old version until every replica runs the new build
    #[arg(long, value_name = "VERSION")]
    protocol_version: Option<u32>,
    /// Largest encoded write the ring takes (and client API message bound)
    #[arg(long, value_name = "BYTES")]
    request_bytes_max: Option<u64>,
    /// Where the state machine runs: thread (its own) or ring-task (fewer hand-offs; a
    /// checkpoint save or load stalls consensus meanwhile) [default: thread]
    #[arg(long, value_name = "WHERE")]
    apply_on: Option<ApplyOn>,
}

impl Args {
    /// The flags as a partial config, to lay over the file.
    fn overrides(&self) -> ConfigFile {
        let list = |entries: &Vec<String>| (!entries.is_empty()).then(|| entries.clone());
        let tls = TlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            domain_name: self.tls_domain_name.clone(),
        };
        let tuning = Tuning {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_delay_min_ms: self.election_delay_min_ms,
            election_delay_max_ms: self.election_delay_max_ms,
            checkpoint_interval_slots: self.checkpoint_interval_slots,
            checkpoint_interval_bytes: self.checkpoint_interval_bytes,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_retry_ms: self.checkpoint_retry_ms,
            primary_saves_checkpoints: self.primary_saves_checkpoints,
            log_retain_slots: self.log_retain_slots,
            learner_promotion_lag_slots_max: self.learner_promotion_lag_slots_max,
            pmem_capacity_bytes: self.pmem_capacity_bytes,
            pmem_flush: self.pmem_flush,
            pmem_dir: self.pmem_dir.clone(),
            pipeline_depth: self.pipeline_depth,
            batch_linger_us: self.batch_linger_us,
            protocol_version: self.protocol_version,
            request_bytes_max: self.request_bytes_max,
            apply_on: self.apply_on,
        };
        let join_credentials = JoinCredentialsFile {
            token: self.join_token.clone(),
            token_file: self.join_token_file.clone(),
            cacert: self.join_cacert.clone(),
            cert: self.join_cert.clone(),
            key: self.join_key.clone(),
            server_name: self.join_server_name.clone(),
        };
        ConfigFile {
            node: self.node,
            ring: self.ring,
            members: list(&self.members),
            initial_members: (!self.initial_members.is_empty()).then(|| self.initial_members.clone()),
            join: self.join.then_some(true),
            join_via: self.join_via.clone(),
            join_credentials: (!join_credentials.is_empty()).then_some(join_credentials),
            bootstrap: self.bootstrap.then_some(true),
            clients: list(&self.clients),
            client_listen: self.client_listen.clone(),
            replica_listen: self.replica_listen.clone(),
            data_dir: self.data_dir.clone(),
            log: self.log,
            transport: self.transport,
            metrics_port: self.metrics_port,
            ready_lag_slots_max: self.ready_lag_slots_max,
            tls: (tls != TlsFiles::default()).then_some(tls),
            // TLS on the client port and users come from the file only.
            client_tls: None,
            auth: None,
            tuning: (tuning != Tuning::default()).then_some(tuning),
        }
    }
}

/// A bearer token from a flag or the environment.
fn parse_token(token: &str) -> Result<Token, String> {
    Token::new(token).map_err(|error| error.to_string())
}

/// Turns transparent huge pages off for this process (Linux; elsewhere a no-op).
///
/// An allocator that returns idle memory to the kernel (mimalloc does, after a delay)
/// and takes it back later makes the kernel zero a fresh 2 MiB huge page on each first
/// touch when THP is `always`: under load that cost a third of the server's CPU time
/// (see docs/PERFORMANCE.md). With 4 KiB pages only the pages touched are zeroed. Call
/// it first thing in `main`; it affects page faults from then on.
#[allow(unsafe_code)]
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of
        // ours; the remaining arguments must be zero.
        let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE failed");
        }
    }
}

/// Parses the process's arguments, runs the server until a signal, and returns the exit
/// code: 0 after a clean shutdown, 2 for a bad configuration, 1 when the server failed to
/// start or its ring stopped on its own.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let file = match &args.config {
        Some(path) => match ConfigFile::load(path) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("rsl-kv-server: {error}");
                return ExitCode::from(2);
            }
        },
        None => ConfigFile::default(),
    };
    let config = match file.merge(args.overrides()).resolve() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rsl-kv-server: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rsl-kv-server: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let node = config.node.0;
        let server = match Server::start(config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("rsl-kv-server: node {node}: {error}");
                return ExitCode::FAILURE;
            }
        };
        // The ready line; a closed stdout is no reason to stop serving.
        let _ = writeln!(
            std::io::stdout(),
            "rsl-kv-server node {node}: clients on {}, replicas on {}",
            server.client_addr(),
            server.replica_addr()
        );
        let signal = tokio::select! {
            signal = shutdown_signal() => signal,
            () = ring_stopped(&server) => {
                // The ring stopped on its own (its log store failed, say a full disk): this
                // process serves nothing any more. Exit, so that a supervisor restarts it and
                // recovery reopens what is durable.
                let reason = server.ring().stop_reason().unwrap_or_else(|| "no reason given".into());
                eprintln!("rsl-kv-server: node {node}: the ring stopped ({reason}); exiting");
                server.shutdown().await;
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(node, signal, "shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Returns once the server's ring has stopped.
async fn ring_stopped(server: &Server) {
    while !server.ring().is_stopped() {
        tokio::time::sleep(RING_POLL_INTERVAL).await;
    }
}

/// How often the server checks that its ring still runs.
const RING_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
