//! `rsl-kv`: the command-line client of the replicated key-value service.
//!
//! Give it some or all servers' client addresses with `--servers` (or `RSL_KV_SERVERS`);
//! it finds the primary itself. `load` runs a closed-loop workload and prints JSON.
//! Against servers with `[client_tls]` and `[auth]`: `--cacert` (and `--cert`/`--key` when
//! they verify client certificates) and a token (`RSL_KV_TOKEN` or `--token-file`);
//! `hash-token` prints what a user's `token_sha256` holds.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use rsl_kv::load::{LoadCounters, LoadOptions, Protocol};
use rsl_kv::{Client, ClientOptions, ClientSecurity, ClientTls, Token};

/// The load generator allocates per operation on several threads, like the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Client of the rsl-kv replicated key-value service.
#[derive(Debug, Parser)]
#[command(name = "rsl-kv", version)]
struct Cli {
    /// Client addresses of some or all servers (host:port, comma-separated)
    #[arg(
        long,
        short = 's',
        global = true,
        env = "RSL_KV_SERVERS",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    servers: Vec<String>,
    /// Longest time one operation may take, retries included
    #[arg(long, global = true, default_value_t = 15_000, value_name = "MS")]
    timeout_ms: u64,
    /// Connect over TLS, trusting servers whose certificate this CA (PEM) signed
    #[arg(long, global = true, env = "RSL_KV_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// With --cacert: present this client certificate (PEM), for servers that verify
    /// client certificates (client_tls.client_ca)
    #[arg(
        long = "cert",
        global = true,
        env = "RSL_KV_CERT",
        value_name = "FILE",
        requires_all = ["cacert", "client_key"]
    )]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of --cert
    #[arg(long = "key", global = true, env = "RSL_KV_KEY", value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// With --cacert: check the servers' certificates for this name instead of the host
    /// of their address
    #[arg(long, global = true, value_name = "NAME", requires = "cacert")]
    server_name: Option<String>,
    /// Bearer token sent with every call, for servers with [auth] (a flag is visible in
    /// the process list: prefer the environment or --token-file)
    #[arg(long, global = true, env = "RSL_KV_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the bearer token from this file (its first line)
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `--consistency` of `get`: [`rsl::ReadConsistency`] on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Consistency {
    /// The primary's lease where it holds, else a read index on the primary
    LeaseOrReadIndex,
    /// Only under the primary's lease
    Lease,
    /// A read index, on whichever server answers (a secondary too)
    ReadIndex,
}

impl From<Consistency> for rsl::ReadConsistency {
    fn from(consistency: Consistency) -> rsl::ReadConsistency {
        match consistency {
            Consistency::LeaseOrReadIndex => rsl::ReadConsistency::LeaseOrReadIndex,
            Consistency::Lease => rsl::ReadConsistency::Lease,
            Consistency::ReadIndex => rsl::ReadConsistency::ReadIndex,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to VALUE; prints the slot of the write
    Put {
        key: String,
        value: String,
        /// Write alone in a slot of its own (admin role)
        #[arg(long)]
        exclusive: bool,
        /// Write alone in its slot as the last write the ring ever accepts: afterwards
        /// every write is refused, reads still work (admin role; for migrations)
        #[arg(long)]
        last: bool,
    },
    /// Print the value of KEY (exit code 1 if absent)
    Get {
        key: String,
        /// Read on any replica that applied --min-slot instead of a linearizable read
        #[arg(long)]
        fast: bool,
        /// With --fast: the slot the replica must have applied
        #[arg(long, default_value_t = 0, requires = "fast")]
        min_slot: u64,
        /// How a linearizable read makes sure it sees every acknowledged write: the
        /// primary's lease, a read index (confirmed by a round of heartbeats; served by the
        /// first server of --servers that is up, a secondary included), or the lease with
        /// the read index as fallback
        #[arg(long, value_enum, default_value_t = Consistency::LeaseOrReadIndex, conflicts_with = "fast")]
        consistency: Consistency,
    },
    /// Remove KEY (exit code 1 if it was absent)
    Delete { key: String },
    /// Set KEY to NEW if it holds --expected (or is absent, with --absent); exit code 1 if
    /// it did not
    Cas {
        key: String,
        new: String,
        /// The value KEY must hold
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<String>,
        /// KEY must be absent
        #[arg(long)]
        absent: bool,
    },
    /// Show every server's role, primary, ballot, slots and state digest, then every
    /// replica's health as the primary sees it (acknowledged slot, lag, last heard,
    /// connection)
    Status {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show the configuration every server is in: its number, members, and whether the
    /// server votes in it
    Members {
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Change the ring's members (node ids, comma-separated): new replicas are added as
    /// learners first, then promoted once caught up; prints each step and the new
    /// configuration. Start new members with --join first.
    Reconfigure {
        #[arg(value_delimiter = ',', required = true, value_name = "ID,...")]
        members: Vec<u64>,
        /// The client address of a new replica the servers' address books lack: its node
        /// id and replica address are asked of it and chosen with the configuration
        #[arg(long = "new", value_name = "HOST:PORT")]
        new_replicas: Vec<String>,
        /// How long to keep asking to promote a learner that is still catching up
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        promotion_wait_secs: u64,
    },
    /// Back up the ring's state, check a backup, or start a new ring from one (etcd's
    /// `snapshot save` / `snapshot restore`)
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make replica NODE primary now: it asks the primary to hand over, or campaigns at
    /// once when none is alive (admin role)
    Promote {
        #[arg(long, value_name = "ID")]
        node: u64,
    },
    /// Change the election and heartbeat timing of every replica in the address book, the
    /// primary last (or of --node only), until they restart (admin role)
    Timing {
        /// How often the primary heartbeats
        #[arg(long, value_name = "MS")]
        heartbeat_ms: u64,
        /// Lower bound of the election delay (at least twice --heartbeat-ms)
        #[arg(long, value_name = "MS")]
        election_min_ms: u64,
        /// Upper bound of the election delay
        #[arg(long, value_name = "MS")]
        election_max_ms: u64,
        /// Only this replica
        #[arg(long, value_name = "ID")]
        node: Option<u64>,
    },
    /// Replace replica NODE's state with replica FROM's newest checkpoint and replay its
    /// log from there (admin role)
    Reseed {
        #[arg(long, value_name = "ID")]
        node: u64,
        #[arg(long, value_name = "ID")]
        from: u64,
    },
    /// Print the SHA-256 of the token read from standard input (one line), as a user's
    /// token_sha256 in the server's [auth] section holds it; the token itself goes only to
    /// clients. Example: `openssl rand -hex 32 | tee token | rsl-kv hash-token`
    HashToken,
    /// Run a put/get workload (closed or open loop) and print a JSON report
    Load {
        /// How to reach the servers: stream (rsl-kv's batched stream), unary (one rsl-kv call
        /// per operation) or etcd (etcd v3 KV calls; --servers are etcd client endpoints)
        #[arg(long, default_value = "stream")]
        protocol: Protocol,
        /// With the stream protocol, how writes travel: batch (encoded whole, one write
        /// batch per message, answered by one encoded list) or per-op (one protobuf
        /// operation per write, as servers before encoded batches took them)
        #[arg(long, env = "RSL_KV_WIRE", default_value = "batch")]
        wire: rsl_kv::Wire,
        /// Concurrent client sessions
        #[arg(long, default_value_t = 16)]
        clients: u32,
        /// Operations each client keeps outstanding at most
        #[arg(long, default_value_t = 1)]
        in_flight: u32,
        /// HTTP/2 connections the clients share
        #[arg(long, default_value_t = 4)]
        connections: u32,
        /// Open loop: offered operations per second over all clients (default: closed loop)
        #[arg(long, value_name = "OPS_PER_S")]
        rate: Option<f64>,
        /// Seconds to run before measuring
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        /// Seconds to measure
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Distinct keys
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Bytes per value
        #[arg(long, default_value_t = 64)]
        value_bytes: usize,
        /// Percent of operations that are linearizable gets
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
        read_percent: u8,
        /// Print a JSON progress line this often (0: never)
        #[arg(long, default_value_t = 0, value_name = "MS")]
        progress_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Save a consistent snapshot of the ring's state to FILE: read on the primary (admin
    /// role), verified, then written to FILE.tmp, synced and renamed to FILE
    Save { file: PathBuf },
    /// Check a snapshot file (checksum, format version, the state inside) and print what
    /// it holds; exit code 1 if it does not verify
    Verify { file: PathBuf },
    /// Make DATA_DIR (new or empty) the data directory of node --node of a new ring that
    /// starts from the snapshot: run it for every member, each with its own directory, then
    /// start the servers with those directories
    Restore {
        file: PathBuf,
        /// The new replica's data directory
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The new replica's node id
        #[arg(long)]
        node: u64,
        /// The new ring's id
        #[arg(long, default_value_t = 1)]
        ring: u64,
        /// The new ring's members (node ids, comma-separated), the same for every member
        #[arg(long, value_delimiter = ',', required = true, value_name = "ID,...")]
        initial_members: Vec<u64>,
    },
}

/// `println!` that returns the write error instead of panicking (a closed pipe, as in
/// `rsl-kv status | head -1`, is not a bug).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

fn main() -> ExitCode {
    rsl_kv::server_cli::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rsl-kv: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let closed_pipe = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if closed_pipe {
                // Whoever read our output stopped reading: nothing left to tell.
                return ExitCode::SUCCESS;
            }
            eprintln!("rsl-kv: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// TLS and the token from the command line.
fn security(cli: &Cli) -> Result<ClientSecurity> {
    let tls = match &cli.cacert {
        None => None,
        Some(ca) => {
            let identity = cli.client_cert.as_deref().zip(cli.client_key.as_deref());
            let tls = ClientTls::from_files(ca, identity)?;
            Some(match &cli.server_name {
                Some(name) => tls.with_domain_name(name.clone()),
                None => tls,
            })
        }
    };
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(Token::new(token)?),
        (None, Some(path)) => Some(Token::from_file(path).context("--token-file")?),
        (None, None) => None,
    };
    Ok(ClientSecurity { tls, token })
}

/// `hash-token`: the SHA-256 of the token on standard input.
fn hash_token() -> Result<ExitCode> {
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).context("reading the token from standard input")?;
    // Checked as a client would send it, so the hash is of what goes on the wire.
    let token = token.lines().next().unwrap_or_default().trim().to_owned();
    Token::new(&token)?;
    out!("{}", rsl_kv::auth::hash_token(&token));
    Ok(ExitCode::SUCCESS)
}

/// `snapshot verify` and `snapshot restore`, which need no server.
fn snapshot_offline(command: &SnapshotCommand) -> Result<Option<ExitCode>> {
    match command {
        SnapshotCommand::Save { .. } => Ok(None),
        SnapshotCommand::Verify { file } => {
            let verified = rsl_kv::snapshot::read(file)?;
            let digest = verified.machine.digest();
            out!("{}: {}", file.display(), describe_snapshot(&verified.info));
            out!(
                "state: {} keys, digest {:#010x}, {} client sessions",
                digest.keys,
                digest.crc,
                verified.machine.sessions()
            );
            Ok(Some(ExitCode::SUCCESS))
        }
        SnapshotCommand::Restore { file, data_dir, node, ring, initial_members } => {
            let members: Vec<rsl::NodeId> = initial_members.iter().copied().map(rsl::NodeId).collect();
            let restored =
                rsl_kv::snapshot::restore(file, data_dir, rsl::RingId(*ring), rsl::NodeId(*node), &members)?;
            out!("{}: {}", file.display(), describe_snapshot(&restored.info));
            out!(
                "restored into {} for node {node} of ring {ring}: checkpoint {}, configuration {} members {:?} from slot {}",
                data_dir.display(),
                restored.checkpoint.display(),
                restored.configuration.number,
                initial_members,
                restored.configuration.first_slot
            );
            Ok(Some(ExitCode::SUCCESS))
        }
    }
}

/// One line about a snapshot's header.
fn describe_snapshot(info: &rsl_kv::snapshot::SnapshotInfo) -> String {
    format!(
        "snapshot of ring {} at slot {}, taken by node {} at {} ms after the epoch, in configuration {} members {:?}",
        info.ring, info.slot, info.source, info.created_unix_ms, info.configuration, info.members
    )
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::HashToken = cli.command {
        // Needs no server.
        return hash_token();
    }
    if let Command::Snapshot(command) = &cli.command {
        if let Some(code) = snapshot_offline(command)? {
            return Ok(code);
        }
    }
    if cli.servers.is_empty() {
        bail!("no servers: pass --servers host:port,... or set RSL_KV_SERVERS");
    }
    let options = ClientOptions {
        deadline: Duration::from_millis(cli.timeout_ms),
        security: security(&cli)?,
        ..ClientOptions::default()
    };
    let mut client = Client::new(cli.servers.clone(), options.clone())?;
    match cli.command {
        Command::Put { key, value, exclusive, last } => {
            let slot = if exclusive || last {
                client.put_exclusive(&key, value.into_bytes(), last).await?
            } else {
                client.put(&key, value.into_bytes()).await?
            };
            if last {
                out!("OK slot {slot}; the ring is closed: it takes no more writes");
            } else {
                out!("OK slot {slot}");
            }
        }
        Command::Get { key, fast, min_slot, consistency } => {
            let value = if fast {
                client.get_fast(&key, Some(min_slot)).await?
            } else {
                client.get_with(&key, consistency.into()).await?
            };
            match value {
                Some(value) => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&value)?;
                    stdout.write_all(b"\n")?;
                }
                None => {
                    eprintln!("(not found)");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Delete { key } => {
            if client.delete(&key).await? {
                out!("deleted");
            } else {
                eprintln!("(not found)");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Cas { key, new, expected, absent } => {
            let expected = if absent { None } else { expected.map(Bytes::from) };
            let result = client.cas(&key, expected, new.into_bytes()).await?;
            if result.swapped {
                out!("swapped, slot {}", result.slot);
            } else {
                match result.current {
                    Some(current) => {
                        out!("not swapped; current value: {}", String::from_utf8_lossy(&current))
                    }
                    None => out!("not swapped; the key is absent"),
                }
                return Ok(ExitCode::from(1));
            }
        }
        Command::Status { json } => return status(&mut client, json).await,
        Command::Members { json } => return members(&mut client, json).await,
        Command::Reconfigure { members, new_replicas, promotion_wait_secs } => {
            let wait = Duration::from_secs(promotion_wait_secs);
            let mut report = |line: String| println!("{line}");
            rsl_kv::grow::reconfigure_through_learners(
                &mut client,
                &members,
                &new_replicas,
                wait,
                &mut report,
            )
            .await?;
        }
        Command::Promote { node } => {
            let server = client_address(&mut client, node).await?;
            client.promote(&server).await?;
            out!("node {node} is primary");
        }
        Command::Timing { heartbeat_ms, election_min_ms, election_max_ms, node } => {
            let timing = rsl_kv::proto::ChangeTimingRequest {
                heartbeat_interval_ms: heartbeat_ms,
                election_delay_min_ms: election_min_ms,
                election_delay_max_ms: election_max_ms,
            };
            let nodes = match node {
                Some(node) => vec![(node, client_address(&mut client, node).await?)],
                None => {
                    // The primary last: slower heartbeats reach the secondaries' election
                    // delays first.
                    let primary =
                        client.statuses().await.into_iter().find_map(|(_, s)| s.ok().map(|s| s.primary));
                    let mut nodes = address_book(&mut client).await?;
                    nodes.sort_by_key(|(node, _)| Some(*node) == primary);
                    nodes
                }
            };
            let mut failed = 0;
            for (node, server) in nodes {
                match client.change_timing(&server, timing).await {
                    Ok(()) => out!("node {node}: timing changed"),
                    Err(error) => {
                        failed += 1;
                        out!("node {node}: {error}");
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Reseed { node, from } => {
            let server = client_address(&mut client, node).await?;
            let slot = client.reseed(&server, from).await?;
            out!("node {node} re-seeded from node {from}'s checkpoint at slot {slot}");
        }
        Command::HashToken => return hash_token(),
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            // The primary's answer may take a while for a large state.
            let options = ClientOptions { attempt_timeout: options.deadline, ..options.clone() };
            let mut client = Client::new(cli.servers.clone(), options)?;
            let (bytes, info) = client.snapshot().await?;
            rsl_kv::snapshot::write_file(&file, &bytes)?;
            out!("saved {} ({} bytes): {}", file.display(), bytes.len(), describe_snapshot(&info));
        }
        Command::Snapshot(_) => unreachable!("handled without a server"),
        Command::Load {
            protocol,
            wire,
            clients,
            in_flight,
            connections,
            rate,
            warmup,
            duration,
            keys,
            value_bytes,
            read_percent,
            progress_ms,
        } => {
            if !(duration.is_finite() && duration > 0.0 && duration <= 86_400.0) {
                bail!("--duration must be a number of seconds from 0 to 86400, got {duration}");
            }
            if !(warmup.is_finite() && (0.0..=3_600.0).contains(&warmup)) {
                bail!("--warmup must be a number of seconds from 0 to 3600, got {warmup}");
            }
            if clients == 0 || in_flight == 0 || connections == 0 {
                bail!("--clients, --in-flight and --connections must be at least 1");
            }
            if let Some(rate) = rate.filter(|rate| !(rate.is_finite() && *rate > 0.0)) {
                bail!("--rate must be a positive number of operations per second, got {rate}");
            }
            if value_bytes > rsl_kv::command::VALUE_BYTES_MAX {
                bail!(
                    "--value-bytes must be at most {}, got {value_bytes}",
                    rsl_kv::command::VALUE_BYTES_MAX
                );
            }
            let load = LoadOptions {
                servers: cli.servers,
                protocol,
                clients,
                in_flight,
                connections,
                rate_ops_per_s: rate,
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(duration),
                keys,
                value_bytes,
                read_percent,
                client: ClientOptions { wire, ..options },
            };
            let counters = Arc::new(LoadCounters::default());
            let progress = (progress_ms > 0).then(|| {
                let counters = counters.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut tick = tokio::time::interval(Duration::from_millis(progress_ms));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let line = serde_json::json!({
                            "type": "progress",
                            "elapsed_ms": started.elapsed().as_millis() as u64,
                            "ops": counters.ops.load(Ordering::Relaxed),
                            "errors": counters.errors.load(Ordering::Relaxed),
                        });
                        if writeln!(std::io::stdout(), "{line}").is_err() {
                            break;
                        }
                    }
                })
            });
            let report = rsl_kv::load::run(load, counters).await?;
            if let Some(progress) = progress {
                progress.abort();
            }
            let mut value = serde_json::to_value(&report)?;
            value["type"] = "result".into();
            out!("{value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every node of the address book that has a client address, from the first server that
/// answers.
async fn address_book(client: &mut Client) -> Result<Vec<(u64, String)>> {
    for (_, status) in client.statuses().await {
        if let Ok(status) = status {
            return Ok(status
                .members
                .into_iter()
                .filter(|m| !m.client_address.is_empty())
                .map(|m| (m.node, m.client_address))
                .collect());
        }
    }
    bail!("no server answered: cannot read the address book")
}

/// The client address of `node`, from the address book.
async fn client_address(client: &mut Client, node: u64) -> Result<String> {
    let book = address_book(client).await?;
    match book.into_iter().find(|(n, _)| *n == node) {
        Some((_, address)) => Ok(address),
        None => bail!("node {node} has no client address in the servers' address book"),
    }
}

async fn members(client: &mut Client, json: bool) -> Result<ExitCode> {
    let statuses = client.statuses().await;
    let mut rows = Vec::new();
    for (server, status) in &statuses {
        rows.push(match status {
            Ok(s) => serde_json::json!({
                "server": server,
                "node": s.node,
                "role": s.role,
                "configuration": s.configuration,
                "members": s.configuration_members,
                "member": s.member,
                "first_slot": s.configuration_first_slot,
                "chosen": s.chosen,
            }),
            Err(error) => serde_json::json!({ "server": server, "error": error.to_string() }),
        });
    }
    if json {
        out!("{}", serde_json::Value::Array(rows.clone()));
    } else {
        for row in &rows {
            let server = row["server"].as_str().unwrap_or_default();
            if let Some(error) = row["error"].as_str() {
                out!("{server:<22} unreachable: {error}");
                continue;
            }
            let voting = if row["member"].as_bool() == Some(true) { "votes" } else { "not a member" };
            out!(
                "{server:<22} node {} {:<9} configuration {} members {} from slot {} ({voting})",
                row["node"],
                row["role"].as_str().unwrap_or_default(),
                row["configuration"],
                row["members"],
                row["first_slot"],
            );
        }
    }
    let reachable = rows.iter().filter(|r| r.get("error").is_none()).count();
    Ok(if reachable == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn status(client: &mut Client, json: bool) -> Result<ExitCode> {
    let statuses = client.statuses().await;
    let mut reachable = 0;
    let mut rows = Vec::new();
    for (server, status) in &statuses {
        match status {
            Ok(status) => {
                reachable += 1;
                rows.push(serde_json::json!({
                    "server": server,
                    "node": status.node,
                    "role": status.role,
                    "primary": status.primary,
                    "primary_address": status.primary_address,
                    "ballot": format!("{}.{}", status.ballot_round, status.ballot_node),
                    "chosen": status.chosen,
                    "applied": status.applied,
                    "log_start": status.log_start,
                    "checkpoint": status.checkpoint,
                    "digest": format!("{:08x}", status.digest),
                    "keys": status.keys,
                    "digest_slot": status.digest_slot,
                    "checkpoints_installed": status.checkpoints_installed,
                    "last_slot": status.last_slot,
                    "configuration_learners": status.configuration_learners, "learner": status.learner,
                    "timing_ms": [status.heartbeat_interval_ms, status.election_delay_min_ms, status.election_delay_max_ms],
                    "replicas": status.replicas.iter().map(|r| serde_json::json!({
                        "node": r.node, "is_self": r.is_self, "is_primary": r.is_primary,
                        "measured_by_primary": r.measured_by_primary, "acknowledged": r.acknowledged,
                        "holds": r.holds, "lag_slots": r.lag_slots, "lag_ms": r.lag_ms,
                        "last_heard_ms": r.last_heard_ms, "connected": r.connected, "is_learner": r.is_learner,
                    })).collect::<Vec<_>>(),
                    "members": status.members.iter().map(|m| serde_json::json!({
                        "node": m.node, "replica_address": m.replica_address, "client_address": m.client_address,
                    })).collect::<Vec<_>>(),
                }));
            }
            Err(error) => rows.push(serde_json::json!({ "server": server, "error": error.to_string() })),
        }
    }
    if json {
        out!("{}", serde_json::Value::Array(rows));
    } else {
        for row in &rows {
            let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
            if let Some(error) = row["error"].as_str() {
                out!("{:<22} unreachable: {error}", text("server"));
                continue;
            }
            let primary = match row["primary"].as_u64() {
                Some(0) | None => "none".to_owned(),
                Some(node) => node.to_string(),
            };
            out!(
                "{:<22} node {} {:<9} primary {:<4} ballot {:<6} chosen {:<8} applied {:<8} checkpoint {:<8} keys {:<6} digest {}",
                text("server"),
                row["node"],
                text("role"),
                primary,
                text("ballot"),
                row["chosen"],
                row["applied"],
                row["checkpoint"],
                row["keys"],
                text("digest"),
            );
        }
        replica_table(&statuses)?;
    }
    Ok(if reachable == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The replicas' health as the primary sees it (or, with no primary answering, as the
/// first server that answered does, which knows only itself and its primary).
fn replica_table(
    statuses: &[(String, Result<rsl_kv::proto::StatusResponse, rsl_kv::ClientError>)],
) -> Result<()> {
    let answered: Vec<&rsl_kv::proto::StatusResponse> =
        statuses.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
    let Some(view) = answered.iter().find(|s| s.role == "primary").or(answered.first()) else {
        return Ok(());
    };
    if view.last_slot != 0 {
        out!("the ring is closed: its last write was chosen at slot {}", view.last_slot);
    }
    if view.role == "primary" {
        out!("replicas, as primary node {} sees them:", view.node);
    } else {
        out!(
            "replicas, as node {} sees them (not primary: it knows only itself and its primary):",
            view.node
        );
    }
    let known = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    out!(
        "  {:<6} {:<8} {:>12} {:>12} {:>10} {:>10} {:>14} {:<9}",
        "node",
        "role",
        "acknowledged",
        "holds",
        "lag_slots",
        "lag_ms",
        "last_heard_ms",
        "connected"
    );
    for replica in &view.replicas {
        let role = if replica.is_primary { "primary" } else { "" };
        let connected = match (replica.is_self, replica.connected) {
            (true, _) => "self",
            (false, Some(true)) => "up",
            (false, Some(false)) => "DOWN",
            (false, None) => "-",
        };
        out!(
            "  {:<6} {:<8} {:>12} {:>12} {:>10} {:>10} {:>14} {:<9}",
            replica.node,
            role,
            known(replica.acknowledged),
            known(replica.holds),
            known(replica.lag_slots),
            known(replica.lag_ms),
            known(replica.last_heard_ms),
            connected,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn connection_flags_and_subcommand_arguments_do_not_collide() {
        let cli = parse("rsl-kv -s h:1 --cacert ca.pem --cert c.pem --key k.pem put key value").unwrap();
        assert!(
            matches!(&cli.command, Command::Put { key, value, exclusive: false, last: false } if key == "key" && value == "value")
        );
        assert!(matches!(parse("rsl-kv put k v --last").unwrap().command, Command::Put { last: true, .. }));
        assert!(matches!(
            parse("rsl-kv reseed --node 2 --from 3").unwrap().command,
            Command::Reseed { node: 2, from: 3 }
        ));
        assert!(
            parse("rsl-kv timing --heartbeat-ms 10 --election-min-ms 50").is_err(),
            "every setting is needed"
        );
        assert_eq!(cli.client_key.as_deref(), Some(std::path::Path::new("k.pem")));
        let cli = parse("rsl-kv get some-key --token-file t").unwrap();
        assert!(matches!(&cli.command, Command::Get { key, .. } if key == "some-key"));
        assert!(parse("rsl-kv --cert c.pem get k").is_err(), "a certificate needs its key and a CA");
        assert!(parse("rsl-kv --token t --token-file f get k").is_err());
        assert!(matches!(parse("rsl-kv hash-token").unwrap().command, Command::HashToken));
    }

    #[test]
    fn get_takes_a_read_consistency_unless_fast() {
        let consistency = |line: &str| match parse(line).map(|cli| cli.command) {
            Ok(Command::Get { consistency, .. }) => Ok(consistency),
            Ok(other) => panic!("{line}: parsed as {other:?}"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(consistency("rsl-kv get k"), Ok(Consistency::LeaseOrReadIndex));
        assert_eq!(consistency("rsl-kv get k --consistency lease"), Ok(Consistency::Lease));
        assert_eq!(consistency("rsl-kv get k --consistency read-index"), Ok(Consistency::ReadIndex));
        assert_eq!(
            consistency("rsl-kv get k --consistency sometimes"),
            Err(clap::error::ErrorKind::InvalidValue)
        );
        assert_eq!(
            consistency("rsl-kv get k --fast --consistency read-index"),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(rsl::ReadConsistency::from(Consistency::ReadIndex), rsl::ReadConsistency::ReadIndex);
    }
}
