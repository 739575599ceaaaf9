//! A ring of real `rsl-kv-server` processes on 127.0.0.1, for tests that must exercise the
//! binaries, the gRPC transport, the disks and process death as they are in production.
//!
//! [`ProcessCluster`] picks free ports, gives every replica its own data directory under one
//! temporary directory, starts the processes and waits for each to print its ready line. It
//! can kill (SIGKILL), stop (SIGTERM), pause (SIGSTOP), resume and restart any replica, and
//! starts a replica with extra flags or expects it to refuse to start. A replica can be one
//! that joins knowing one contact ([`ProcessCluster::join_via`]): the others' address books
//! leave it out, and it starts with `--join-via` and no `--members`. Every replica's
//! stderr goes to `replica-N.log` in the cluster directory, appended across restarts, and is
//! quoted in failures. Dropping the cluster kills every process it started and removes the
//! directory.
//!
//! By default the replicas require authentication ([`ClusterOptions::auth`]): the cluster
//! writes an `[auth]` section with a reader, a writer and an admin, each with a random
//! token, and its clients present the admin's ([`ProcessCluster::security`]), so what the
//! tests exercise is the authenticated configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsl_kv::auth::{hash_token, Role};
use rsl_kv::proto::StatusResponse;
use rsl_kv::{Client, ClientOptions, ClientSecurity, Token};

/// Longest wait for a started replica to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a replica to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`ProcessCluster`] polls while it waits for the ring.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// What a replica prints on stdout once it serves clients.
const READY_LINE: &str = "clients on";

/// How to start a [`ProcessCluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Replicas, numbered 1..=replicas.
    pub replicas: u64,
    /// Log store: `file`, `pmem` or `memory`.
    pub log: String,
    /// Flags every replica gets after the generated ones (tuning, TLS files).
    pub args: Vec<String>,
    /// Give each replica a Prometheus metrics port.
    pub metrics: bool,
    /// Require authentication: every replica gets a config file with an `[auth]` section
    /// naming one user per role, and the cluster's clients present the admin's token.
    pub auth: bool,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            replicas: 3,
            log: "file".to_owned(),
            args: fast_timing(),
            metrics: false,
            auth: true,
        }
    }
}

impl ClusterOptions {
    /// `replicas` replicas with [`fast_timing`] and then `extra` flags, each with a metrics
    /// port (for the `/healthz` and `/readyz` probes), requiring authentication.
    pub fn probed(replicas: u64, extra: &[&str]) -> ClusterOptions {
        let mut args = fast_timing();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        ClusterOptions { replicas, args, metrics: true, ..ClusterOptions::default() }
    }
}

/// The roles of the users an authenticated cluster configures, one user each.
const ROLES: [Role; 3] = [Role::Read, Role::ReadWrite, Role::Admin];

/// A random token for a test user (not for production: `RandomState` is no key generator).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..4)
        .map(|_| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(std::process::id().into());
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// Timing flags for tests: elections within a few hundred milliseconds.
pub fn fast_timing() -> Vec<String> {
    ["--heartbeat-interval-ms=20", "--election-delay-min-ms=200", "--election-delay-max-ms=400"]
        .map(str::to_owned)
        .to_vec()
}

/// Where and how one replica runs, for clusters that are not plain processes on loopback
/// (see [`ProcessCluster::create_with_layout`]): in a network namespace, behind proxies, on a
/// file system of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLayout {
    /// The replica transport address the other replicas are told (`--members`).
    pub replica_address: String,
    /// The client API address clients and redirects use (`--clients`).
    pub client_address: String,
    /// Where the replica transport listens, when not at `replica_address`.
    pub replica_listen: Option<String>,
    /// Where the client API listens, when not at `client_address`.
    pub client_listen: Option<String>,
    /// How this replica reaches some peers, when not at their `replica_address` (peer id to
    /// address): a proxy per directed link.
    pub peer_addresses: BTreeMap<u64, String>,
    /// A program and arguments the server runs under, e.g. `ip netns exec NAME`; it must
    /// exec the server (so the child's pid is the server's, for signals).
    pub launcher: Vec<String>,
    /// The data directory, when not `replica-N` in the cluster directory.
    pub data_dir: Option<PathBuf>,
}

/// One replica: its addresses, directory and, while it runs, its process.
#[derive(Debug)]
struct Replica {
    replica_address: String,
    client_address: String,
    replica_listen: Option<String>,
    client_listen: Option<String>,
    peer_addresses: BTreeMap<u64, String>,
    launcher: Vec<String>,
    metrics_port: Option<u16>,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Environment variables its next starts get (a preloaded library).
    env: Vec<(String, String)>,
    /// The replica it joins through (`--join-via`), knowing no other.
    contact: Option<u64>,
    child: Option<Child>,
}

/// A ring of `rsl-kv-server` processes; see the module docs.
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    options: ClusterOptions,
    replicas: BTreeMap<u64, Replica>,
    /// With authentication: the token of each role's user, and the config file that
    /// configures them.
    tokens: BTreeMap<Role, String>,
    auth_config: Option<PathBuf>,
}

/// Ports handed out to replicas come from below Linux's ephemeral range (32768 and up by
/// default), so an outgoing connection of another test cannot take one between the moment
/// it is picked and the moment the replica binds it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A TCP port on 127.0.0.1 that was free when picked and that this process has not handed
/// out before (bound, read, released).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Start at a different place in each process, then walk the range.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORTS.end - PORTS.start;
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id() % u32::from(span)) as u16,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port on 127.0.0.1");
    listener.local_addr().expect("a bound listener has an address").port()
}

impl ProcessCluster {
    /// Starts `options.replicas` replicas of `binary` (the path of an `rsl-kv-server`) and
    /// waits until every one is ready. Panics, quoting the replica's stderr, if one is not.
    pub fn start(binary: impl Into<PathBuf>, options: ClusterOptions) -> ProcessCluster {
        let mut cluster = ProcessCluster::create(binary, options);
        for id in cluster.ids() {
            cluster.spawn(id, &[]);
        }
        cluster
    }

    /// Picks the ports and directories of every replica; starts nothing.
    pub fn create(binary: impl Into<PathBuf>, options: ClusterOptions) -> ProcessCluster {
        let dir =
            tempfile::Builder::new().prefix("rsl-cluster-").tempdir().expect("making a temporary directory");
        let mut replicas = BTreeMap::new();
        for id in 1..=options.replicas {
            let data_dir = dir.path().join(format!("replica-{id}"));
            replicas.insert(
                id,
                Replica {
                    replica_address: format!("127.0.0.1:{}", free_port()),
                    client_address: format!("127.0.0.1:{}", free_port()),
                    replica_listen: None,
                    client_listen: None,
                    peer_addresses: BTreeMap::new(),
                    launcher: Vec::new(),
                    metrics_port: options.metrics.then(free_port),
                    log_path: dir.path().join(format!("replica-{id}.log")),
                    data_dir,
                    env: Vec::new(),
                    contact: None,
                    child: None,
                },
            );
        }
        let (tokens, auth_config) = if options.auth {
            let tokens: BTreeMap<Role, String> =
                ROLES.into_iter().map(|role| (role, random_token())).collect();
            let mut text = String::from("[auth]\nenabled = true\n");
            for (role, token) in &tokens {
                let _ = write!(
                    text,
                    "[[auth.users]]\nname = \"{role}-user\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
                    hash_token(token)
                );
            }
            let path = dir.path().join("auth.toml");
            fs::write(&path, text).expect("writing the replicas' auth config");
            (tokens, Some(path))
        } else {
            (BTreeMap::new(), None)
        };
        ProcessCluster { binary: binary.into(), dir, options, replicas, tokens, auth_config }
    }

    /// Like [`ProcessCluster::create`], with every replica's addresses, launcher and data
    /// directory given by `layouts` (one per replica id, 1..=`options.replicas`); starts
    /// nothing.
    pub fn create_with_layout(
        binary: impl Into<PathBuf>,
        options: ClusterOptions,
        layouts: BTreeMap<u64, ReplicaLayout>,
    ) -> ProcessCluster {
        let ids: Vec<u64> = (1..=options.replicas).collect();
        assert_eq!(layouts.keys().copied().collect::<Vec<_>>(), ids, "one layout per replica id");
        let mut cluster = ProcessCluster::create(binary, options);
        for (id, layout) in layouts {
            let replica = cluster.replica_mut(id);
            replica.replica_address = layout.replica_address;
            replica.client_address = layout.client_address;
            replica.replica_listen = layout.replica_listen;
            replica.client_listen = layout.client_listen;
            replica.peer_addresses = layout.peer_addresses;
            replica.launcher = layout.launcher;
            if let Some(data_dir) = layout.data_dir {
                replica.data_dir = data_dir;
            }
        }
        cluster
    }

    /// The replica ids.
    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    /// The cluster's directory (every replica's data directory and log are inside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replica `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.replica(id).data_dir
    }

    /// Replica `id`'s client API address.
    pub fn client_address(&self, id: u64) -> &str {
        &self.replica(id).client_address
    }

    /// Replica `id`'s replica transport address.
    pub fn replica_address(&self, id: u64) -> &str {
        &self.replica(id).replica_address
    }

    /// Every replica's client address.
    pub fn client_addresses(&self) -> Vec<String> {
        self.replicas.values().map(|r| r.client_address.clone()).collect()
    }

    /// Whether replica `id` was started and has not been killed or stopped.
    pub fn is_running(&self, id: u64) -> bool {
        self.replica(id).child.is_some()
    }

    /// What replica `id` wrote to stderr, over all its runs.
    pub fn stderr(&self, id: u64) -> String {
        fs::read_to_string(&self.replica(id).log_path).unwrap_or_default()
    }

    fn replica(&self, id: u64) -> &Replica {
        self.replicas.get(&id).unwrap_or_else(|| panic!("no replica {id} in this cluster"))
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.replicas.get_mut(&id).unwrap_or_else(|| panic!("no replica {id} in this cluster"))
    }

    /// Replica `id`'s process id while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replica(id).child.as_ref().map(Child::id)
    }

    /// If replica `id` was running and has exited on its own, forgets its process and returns
    /// how it exited.
    pub fn exited(&mut self, id: u64) -> Option<ExitStatus> {
        let replica = self.replica_mut(id);
        let status = replica.child.as_mut()?.try_wait().ok()??;
        replica.child = None;
        Some(status)
    }

    /// Makes replica `id` one that joins knowing only replica `contact`'s client address:
    /// it starts with `--join-via` and its own `--replica-listen` and `--client-listen`, no
    /// `--members` or `--clients`, and the other replicas' address books leave it out (its
    /// addresses reach them chosen in the log, when `rsl-kv reconfigure --new` adds it).
    /// Set before any replica starts. With authentication, it needs credentials for the
    /// contact (`--join-token-file`, see [`ProcessCluster::token_file`]) among its flags.
    pub fn join_via(&mut self, id: u64, contact: u64) {
        assert_ne!(id, contact, "a replica joins through another");
        assert!(self.replica(contact).contact.is_none(), "the contact {contact} is in the address book");
        self.replica_mut(id).contact = Some(contact);
    }

    /// A file in the cluster directory holding the token of the user with `role` (the
    /// cluster must require authentication), for `--join-token-file` or `--token-file`.
    pub fn token_file(&self, role: Role) -> PathBuf {
        let token = self.tokens.get(&role).expect("the cluster was started without authentication");
        let path = self.dir.path().join(format!("{role}.token"));
        fs::write(&path, format!("{token}\n")).expect("writing a token file");
        path
    }

    /// The command line of replica `id`, with `extra` flags last.
    fn command(&self, id: u64, extra: &[&str]) -> Command {
        let replica = self.replica(id);
        let book = || self.replicas.iter().filter(|(_, r)| r.contact.is_none());
        let members = book()
            .map(|(&peer, r)| {
                let address = replica.peer_addresses.get(&peer).unwrap_or(&r.replica_address);
                format!("{peer}={address}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let clients =
            book().map(|(id, r)| format!("{id}={}", r.client_address)).collect::<Vec<_>>().join(",");
        let mut command = match replica.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg(format!("--node={id}"))
            .arg(format!("--data-dir={}", replica.data_dir.display()))
            .arg(format!("--log={}", self.options.log));
        let (replica_listen, client_listen) = match replica.contact {
            None => {
                command.arg(format!("--members={members}")).arg(format!("--clients={clients}"));
                (replica.replica_listen.as_ref(), replica.client_listen.as_ref())
            }
            Some(contact) => {
                command.arg(format!("--join-via={}", self.replica(contact).client_address));
                (
                    Some(replica.replica_listen.as_ref().unwrap_or(&replica.replica_address)),
                    Some(replica.client_listen.as_ref().unwrap_or(&replica.client_address)),
                )
            }
        };
        if let Some(listen) = replica_listen {
            command.arg(format!("--replica-listen={listen}"));
        }
        if let Some(listen) = client_listen {
            command.arg(format!("--client-listen={listen}"));
        }
        if let Some(port) = replica.metrics_port {
            command.arg(format!("--metrics-port={port}"));
        }
        if let Some(path) = &self.auth_config {
            command.arg(format!("--config={}", path.display()));
        }
        command.args(&self.options.args).args(extra);
        command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()));
        command.envs(replica.env.iter().map(|(name, value)| (name, value)));
        command
    }

    /// Sets the environment variables replica `id` gets when it is next started (its
    /// launcher gets them too, and must pass them on), replacing those set before; empty:
    /// none.
    pub fn set_env(&mut self, id: u64, env: Vec<(String, String)>) {
        self.replica_mut(id).env = env;
    }

    fn launch(&mut self, id: u64, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let log_path = self.replica(id).log_path.clone();
        let mut log =
            OpenOptions::new().create(true).append(true).open(&log_path).expect("opening a replica log");
        let _ = writeln!(log, "===== starting replica {id} {extra:?}");
        let mut child = self
            .command(id, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks.
                    continue;
                }
            }
        });
        (child, received)
    }

    /// Starts replica `id` (with `extra` flags) and waits for its ready line. Panics, quoting
    /// its stderr, if it exits or does not get ready within [`READY_TIMEOUT`].
    pub fn spawn(&mut self, id: u64, extra: &[&str]) {
        if let Err(problem) = self.try_spawn(id, extra) {
            panic!("{problem}");
        }
    }

    /// Starts replica `id` (with `extra` flags) and waits for its ready line; if it exits or
    /// is not ready within [`READY_TIMEOUT`] (then it is killed), says so, quoting its stderr.
    pub fn try_spawn(&mut self, id: u64, extra: &[&str]) -> Result<(), String> {
        assert!(!self.is_running(id), "replica {id} is already running");
        let (mut child, lines) = self.launch(id, extra);
        match watch(&mut child, Some(&lines), Instant::now() + READY_TIMEOUT) {
            Watched::Ready(_) => {
                self.replica_mut(id).child = Some(child);
                Ok(())
            }
            Watched::Exited(status) => Err(format!(
                "replica {id} exited during start-up ({status}); its stderr:\n{}",
                self.stderr(id)
            )),
            Watched::StillRunning => {
                let _ = kill_and_reap(&mut child);
                Err(format!(
                    "replica {id} was not ready within {READY_TIMEOUT:?}; its stderr:\n{}",
                    self.stderr(id)
                ))
            }
        }
    }

    /// Starts replica `id` and expects it to refuse: returns its exit status and what this
    /// run wrote to stderr. Panics if it gets ready or is still running after `timeout`.
    pub fn spawn_expecting_failure(
        &mut self,
        id: u64,
        extra: &[&str],
        timeout: Duration,
    ) -> (ExitStatus, String) {
        assert!(!self.is_running(id), "replica {id} is already running");
        let before = self.stderr(id).len();
        let (mut child, lines) = self.launch(id, extra);
        match watch(&mut child, Some(&lines), Instant::now() + timeout) {
            Watched::Exited(status) => (status, self.stderr(id)[before..].to_owned()),
            Watched::Ready(line) => {
                let _ = kill_and_reap(&mut child);
                panic!("replica {id} started although it should have refused: {line}");
            }
            Watched::StillRunning => {
                let _ = kill_and_reap(&mut child);
                panic!("replica {id} neither started nor exited within {timeout:?}:\n{}", self.stderr(id));
            }
        }
    }

    /// Starts replica `id` where it may refuse or start: returns its exit status and what
    /// this run wrote to stderr if it exits within `timeout`, or `None` and the stderr so far
    /// if it gets ready (it then keeps running). Still neither after `timeout`: killed, and
    /// reported as exited.
    pub fn spawn_expecting_failure_or_start(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (Option<ExitStatus>, String) {
        assert!(!self.is_running(id), "replica {id} is already running");
        let before = self.stderr(id).len();
        let (mut child, lines) = self.launch(id, &[]);
        let status = match watch(&mut child, Some(&lines), Instant::now() + timeout) {
            Watched::Ready(_) => {
                self.replica_mut(id).child = Some(child);
                None
            }
            Watched::Exited(status) => Some(status),
            Watched::StillRunning => Some(kill_and_reap(&mut child).expect("waiting for a killed replica")),
        };
        (status, self.stderr(id)[before..].to_owned())
    }

    /// Kills replica `id` with SIGKILL: no flush, no goodbye. (A paused replica dies too.)
    pub fn kill(&mut self, id: u64) {
        let replica = self.replica_mut(id);
        let mut child = replica.child.take().unwrap_or_else(|| panic!("replica {id} is not running"));
        let _ = kill_and_reap(&mut child);
    }

    /// Kills the running replicas among `ids` with SIGKILL all at once (every signal is sent
    /// before any is reaped), as a power loss would.
    pub fn kill_at_once(&mut self, ids: &[u64]) {
        let mut children = Vec::new();
        for &id in ids {
            if let Some(child) = self.replica_mut(id).child.take() {
                signal(&child, libc::SIGKILL);
                children.push(child);
            }
        }
        for mut child in children {
            let _ = kill_and_reap(&mut child);
        }
    }

    /// Stops replica `id` with SIGTERM and waits for it to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]); returns how it exited.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let replica = self.replica_mut(id);
        let mut child = replica.child.take().unwrap_or_else(|| panic!("replica {id} is not running"));
        signal(&child, libc::SIGTERM);
        match watch(&mut child, None, Instant::now() + STOP_TIMEOUT) {
            Watched::Exited(status) => status,
            Watched::Ready(_) | Watched::StillRunning => {
                kill_and_reap(&mut child).expect("waiting for a killed replica")
            }
        }
    }

    /// Freezes replica `id` (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: u64) {
        signal(
            self.replica(id).child.as_ref().expect("pausing a replica that is not running"),
            libc::SIGSTOP,
        );
    }

    /// Lets a paused replica `id` go on (SIGCONT).
    pub fn resume(&mut self, id: u64) {
        signal(
            self.replica(id).child.as_ref().expect("resuming a replica that is not running"),
            libc::SIGCONT,
        );
    }

    /// How a client of this cluster connects: with the admin's token when the cluster
    /// requires authentication.
    pub fn security(&self) -> ClientSecurity {
        self.security_as(Role::Admin)
    }

    /// How a client with `role` connects (no token without authentication).
    pub fn security_as(&self, role: Role) -> ClientSecurity {
        let token =
            self.tokens.get(&role).map(|token| Token::new(token).expect("a generated token is valid"));
        ClientSecurity { token, ..ClientSecurity::default() }
    }

    /// A client of every replica, with `deadline` per operation, as the admin.
    pub fn client(&self, deadline: Duration) -> Client {
        let options = ClientOptions { deadline, security: self.security(), ..ClientOptions::default() };
        Client::new(self.client_addresses(), options).expect("the cluster's addresses are valid")
    }

    /// The status of every running replica that answers.
    pub async fn statuses(&self, client: &mut Client) -> BTreeMap<u64, StatusResponse> {
        let mut statuses = BTreeMap::new();
        for (&id, replica) in &self.replicas {
            if replica.child.is_none() {
                continue;
            }
            if let Ok(status) = client.status_of(&replica.client_address).await {
                statuses.insert(id, status);
            }
        }
        statuses
    }

    /// Waits until a running replica reports itself primary; returns its id.
    pub async fn wait_for_primary(&self, client: &mut Client, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses(client).await;
            if let Some((&id, _)) = statuses.iter().find(|(_, s)| s.role == "primary") {
                return id;
            }
            assert!(Instant::now() < deadline, "no primary within {timeout:?}; statuses: {statuses:#?}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every running replica has applied the same slot, at least `min_slot`, and
    /// reports the same state digest; returns the statuses.
    pub async fn wait_converged(
        &self,
        client: &mut Client,
        min_slot: u64,
        timeout: Duration,
    ) -> BTreeMap<u64, StatusResponse> {
        let deadline = Instant::now() + timeout;
        let running = self.replicas.values().filter(|r| r.child.is_some()).count();
        loop {
            let statuses = self.statuses(client).await;
            let first = statuses.values().next();
            let agreed = statuses.len() == running
                && first.is_some_and(|first| {
                    first.digest_slot >= min_slot
                        && statuses.values().all(|s| {
                            (s.digest_slot, s.digest, s.keys) == (first.digest_slot, first.digest, first.keys)
                        })
                });
            if agreed {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge at slot >= {min_slot} within {timeout:?}: {statuses:#?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Replica `id`'s Prometheus metrics (the cluster must be started with `metrics`).
    pub fn metrics(&self, id: u64) -> String {
        self.http_get(id, "/metrics")
    }

    /// The whole HTTP response of replica `id`'s metrics port to `GET path` (`/metrics`,
    /// `/healthz`, `/readyz`; the cluster must be started with `metrics`).
    pub fn http_get(&self, id: u64, path: &str) -> String {
        self.try_http_get(id, path, Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("GET {path} on replica {id}'s metrics port: {error}"))
    }

    /// Like [`ProcessCluster::http_get`], or the error, with `timeout` per read (a paused
    /// replica answers nothing).
    pub fn try_http_get(&self, id: u64, path: &str, timeout: Duration) -> std::io::Result<String> {
        let port = self.replica(id).metrics_port.expect("the cluster was started without metrics ports");
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(timeout))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// The status line and body of replica `id`'s answer to `GET path` on its metrics port.
    pub fn probe(&self, id: u64, path: &str) -> (String, String) {
        split_response(&self.http_get(id, path))
    }

    /// Whether replica `id`'s `/readyz` answers 200.
    pub fn ready(&self, id: u64) -> bool {
        self.probe(id, "/readyz").0 == HTTP_OK
    }

    /// The sum of metric `name` over all its label sets in replica `id`'s scrape.
    pub fn metric(&self, id: u64, name: &str) -> u64 {
        metric_sum(&self.metrics(id), name)
    }
}

/// The status line of a probe that passes.
pub const HTTP_OK: &str = "HTTP/1.1 200 OK";

/// The status line and body of an HTTP response.
pub fn split_response(response: &str) -> (String, String) {
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls `probe` every 50 ms (`POLL_INTERVAL`) until it returns something, at most `timeout`;
/// `what` names the wait in the failure.
pub async fn until<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The sum of every sample of metric `name` in a Prometheus text scrape.
pub fn metric_sum(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<u64>().ok()).flatten()
        })
        .sum()
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for replica in self.replicas.values_mut() {
            if let Some(mut child) = replica.child.take() {
                let _ = kill_and_reap(&mut child);
            }
        }
        if std::thread::panicking() {
            // The test failed: show how each replica saw it (the harness prints this).
            for id in self.ids() {
                let stderr = self.stderr(id);
                let lines: Vec<&str> = stderr.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("----- replica {id}, last {} lines of stderr:\n{}", tail.len(), tail.join("\n"));
            }
        }
    }
}

/// What a replica's process did while it was watched.
#[derive(Debug)]
enum Watched {
    /// It printed its ready line (this one) and runs on.
    Ready(String),
    /// It exited.
    Exited(ExitStatus),
    /// Neither, by the deadline.
    StillRunning,
}

/// Watches `child` until it prints its ready line on `lines` (when its stdout is watched),
/// exits, or `deadline` passes.
fn watch(child: &mut Child, lines: Option<&mpsc::Receiver<String>>, deadline: Instant) -> Watched {
    loop {
        match lines.map(|lines| lines.recv_timeout(POLL_INTERVAL)) {
            Some(Ok(line)) if line.contains(READY_LINE) => return Watched::Ready(line),
            Some(Ok(_) | Err(mpsc::RecvTimeoutError::Timeout)) => {}
            // Nothing to wait on: its stdout is closed or not watched.
            Some(Err(mpsc::RecvTimeoutError::Disconnected)) | None => std::thread::sleep(POLL_INTERVAL),
        }
        if let Some(status) = child.try_wait().expect("waiting for a replica") {
            return Watched::Exited(status);
        }
        if Instant::now() > deadline {
            return Watched::StillRunning;
        }
    }
}

/// Kills `child` with SIGKILL (if it still runs) and reaps it; returns how it ended.
fn kill_and_reap(child: &mut Child) -> std::io::Result<ExitStatus> {
    let _ = child.kill();
    child.wait()
}

/// Sends `signal` to a child process this cluster started and has not reaped.
fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
    // SAFETY: kill(2) only sends a signal; `pid` is a child of this process that has not
    // been waited for (reaped children are dropped from the cluster first), so the pid
    // still names that child.
    unsafe {
        libc::kill(pid, signal);
    }
}
