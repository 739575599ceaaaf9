//! Where the replicas of a fault run live, and the network faults between them.
//!
//! * [`Mode::Namespaces`] (needs root, `ip` and `nft`): each replica runs in its own network
//!   namespace, joined to the others by a veth pair on a private bridge, with an address on
//!   a private /24 that exists only inside those namespaces and on the bridge. Cuts and loss
//!   are nftables rules in the receiving namespace (packets vanish, as on a real network).
//!   Each replica's data directory is a tmpfs of bounded size, so a disk can be filled.
//!   The clients (this process, on the bridge's address) can be cut from a replica too:
//!   their packets to and from it are dropped in its namespace.
//! * [`Mode::Loopback`] (anyone): the replicas listen on 127.0.0.1 and cuts are made by the
//!   link proxies (connections refused and closed).
//!
//! In both modes every directed replica link also goes through a [`LinkProxy`] (in the
//! sending replica's namespace), which delays and aborts connections for the delay and
//! loss faults.
//!
//! Everything made here carries the owning process's id: namespaces and mounts are named
//! `rslf<pid>-<run>-...`, interfaces (15 bytes at most) `rf<pid in hex>.<run in hex>...`.
//! [`Network`]'s `Drop` removes it all, and [`clean_leftovers`] removes what a run that died
//! without cleaning up left (its pid is gone). Each run of a process has its own names,
//! because the kernel deletes a namespace's interfaces asynchronously.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::fault::proxy::{Connector, LinkFaults, LinkProxy};
use crate::process::{free_port, ReplicaLayout};

/// Namespaces and mounts this module makes are named this, the owner's pid, `-`, ...
pub const NAME_PREFIX: &str = "rslf";
/// Interfaces this module makes are named this, the owner's pid in hex, `.`, ...
pub const LINK_PREFIX: &str = "rf";
/// Runs this process has set up so far: part of every name.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Replica transport port inside a namespace (each has its own port space).
const REPLICA_PORT: u16 = 7001;
/// Client API port inside a namespace.
const CLIENT_PORT: u16 = 7101;
/// In namespace mode the proxy of link `from -> to` listens on `127.0.0.1` at this port
/// plus `to`, in `from`'s namespace: every replica names replica `to` by the same address,
/// so an address a configuration carries (a primary fills it from its own address book,
/// `--members`) leads each replica to its own proxy for that link.
const PROXY_PORT_BASE: u16 = 7200;
/// Size of each replica's tmpfs: a 64 MiB preallocated log segment, the next one during
/// rotation, and checkpoints.
pub const DISK_BYTES: u64 = 256 << 20;
/// Longest a connection attempt from a proxy may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How the replicas are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Network namespaces on a bridge, nftables (root).
    Namespaces,
    /// 127.0.0.1 and proxies.
    Loopback,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Namespaces => "netns",
            Mode::Loopback => "loopback",
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Why [`Mode::Namespaces`] cannot be used here, if it cannot.
pub fn namespaces_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !tool_exists(tool) {
            if tool_exists("apt-get") {
                eprintln!("fault: `{tool}` is missing; installing {package} with apt-get");
                let _ = Command::new("apt-get")
                    .args(["install", "-y", "-qq", package])
                    .stdout(Stdio::null())
                    .status();
            }
            if !tool_exists(tool) {
                return Some(format!("`{tool}` is not installed (package {package})"));
            }
        }
    }
    None
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
        || Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run `{program} {}`: {error}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run nft in {ns}: {error}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|error| format!("writing to nft in {ns}: {error}"))?;
    let output = child.wait_with_output().map_err(|error| format!("waiting for nft in {ns}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "nft in {ns} refused the rules ({}): {}\n{script}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Enters namespace `ns` with the calling thread (for a thread made for the purpose).
fn enter_namespace(ns: &str) -> std::io::Result<()> {
    let file = fs::File::open(Path::new("/var/run/netns").join(ns))?;
    // SAFETY: setns(2) with a namespace file descriptor that is open for the call; it only
    // changes the calling thread's network namespace.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `work` on a fresh thread inside namespace `ns` (sockets it makes stay in `ns`), or
/// here when `ns` is `None`.
pub fn in_namespace<T: Send + 'static>(
    ns: Option<String>,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let Some(ns) = ns else { return work() };
    std::thread::spawn(move || {
        enter_namespace(&ns)?;
        work()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
}

/// The replicas' network and disks for one run; see the module docs.
#[derive(Debug)]
pub struct Network {
    mode: Mode,
    /// Namespaces and mounts: `rslf<pid>-<run>`.
    prefix: String,
    /// Interfaces: `rf<pid hex>.<run hex>`.
    link_prefix: String,
    ids: Vec<u64>,
    /// Namespace mode: the /24 is 10.231.`octet`.0.
    octet: u8,
    namespaces: Vec<String>,
    bridge: Option<String>,
    disks_dir: Option<PathBuf>,
    mounts: Vec<PathBuf>,
    layouts: BTreeMap<u64, ReplicaLayout>,
    proxies: BTreeMap<(u64, u64), LinkProxy>,
    cuts: BTreeSet<(u64, u64)>,
    /// Replicas the clients are cut from (namespace mode).
    client_cuts: BTreeSet<u64>,
    loss_percent: u64,
    delay_ms: (u64, u64),
}

impl Network {
    /// Sets up replicas `ids` in `mode`; must run inside a tokio runtime (the proxies).
    /// On an error, what was made so far is removed.
    pub fn create(mode: Mode, ids: &[u64], seed: u64, loopback_dir: &Path) -> Result<Network, String> {
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 0x1000;
        let pid = std::process::id();
        let mut network = Network {
            mode,
            prefix: format!("{NAME_PREFIX}{pid}-{run}"),
            link_prefix: format!("{LINK_PREFIX}{pid:x}.{run:x}"),
            ids: ids.to_vec(),
            octet: 0,
            namespaces: Vec::new(),
            bridge: None,
            disks_dir: None,
            mounts: Vec::new(),
            layouts: BTreeMap::new(),
            proxies: BTreeMap::new(),
            cuts: BTreeSet::new(),
            client_cuts: BTreeSet::new(),
            loss_percent: 0,
            delay_ms: (0, 0),
        };
        match mode {
            Mode::Namespaces => network.create_namespaces()?,
            Mode::Loopback => network.create_loopback(loopback_dir),
        }
        network.create_proxies(seed)?;
        Ok(network)
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every replica's layout for [`crate::process::ProcessCluster::create_with_layout`].
    pub fn layouts(&self) -> BTreeMap<u64, ReplicaLayout> {
        self.layouts.clone()
    }

    /// Whether disks can be filled (namespace mode: each replica has a bounded tmpfs).
    pub fn has_bounded_disks(&self) -> bool {
        !self.mounts.is_empty()
    }

    /// Replica `id`'s namespace (namespace mode).
    pub fn namespace(&self, id: u64) -> String {
        format!("{}-{id}", self.prefix)
    }

    fn address(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.octet, u8::try_from(id).expect("replica ids are small"))
    }

    /// The bridge's address: where the clients (this process) reach the replicas from.
    fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.octet, 254)
    }

    fn create_loopback(&mut self, dir: &Path) {
        for &id in &self.ids {
            let layout = ReplicaLayout {
                replica_address: format!("127.0.0.1:{}", free_port()),
                client_address: format!("127.0.0.1:{}", free_port()),
                data_dir: Some(dir.join(format!("replica-{id}"))),
                ..ReplicaLayout::default()
            };
            self.layouts.insert(id, layout);
        }
    }

    fn create_namespaces(&mut self) -> Result<(), String> {
        let result = self.try_create_namespaces();
        if result.is_err() {
            self.teardown();
        }
        result
    }

    fn try_create_namespaces(&mut self) -> Result<(), String> {
        // A /24 no interface of this host uses yet.
        let used = run("ip", &["-4", "-o", "addr", "show"])?;
        let start = (std::process::id() % 250) as u8;
        self.octet = (0..250u8)
            .map(|i| start.wrapping_add(i) % 250)
            .find(|octet| !used.contains(&format!("10.231.{octet}.")))
            .ok_or("every 10.231.x.0/24 is in use on this host")?;
        let bridge = format!("{}b", self.link_prefix);
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        run("ip", &["addr", "add", &format!("10.231.{}.254/24", self.octet), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;

        let disks_dir = std::env::temp_dir().join(format!("{}-disks", self.prefix));
        fs::create_dir_all(&disks_dir)
            .map_err(|error| format!("creating {}: {error}", disks_dir.display()))?;
        self.disks_dir = Some(disks_dir.clone());

        for id in self.ids.clone() {
            let ns = self.namespace(id);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let outside = format!("{}v{id}", self.link_prefix);
            let inside = format!("{}p{id}", self.link_prefix);
            run("ip", &["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            run("ip", &["link", "set", &inside, "netns", &ns])?;
            run("ip", &["link", "set", &outside, "master", &bridge, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", self.address(id)), "dev", &inside])?;
            run("ip", &["-n", &ns, "link", "set", &inside, "up"])?;
            nft(
                &ns,
                "table inet rslfault {\n  chain input {\n    type filter hook input priority 0; policy accept;\n  }\n  \
                 chain output {\n    type filter hook output priority 0; policy accept;\n  }\n}\n",
            )?;

            let data_dir = disks_dir.join(format!("replica-{id}"));
            fs::create_dir_all(&data_dir)
                .map_err(|error| format!("creating {}: {error}", data_dir.display()))?;
            let source = format!("{}-disk{id}", self.prefix);
            let size = format!("size={DISK_BYTES},mode=0700");
            run("mount", &["-t", "tmpfs", "-o", &size, &source, &data_dir.to_string_lossy()])?;
            self.mounts.push(data_dir.clone());

            let address = self.address(id);
            self.layouts.insert(
                id,
                ReplicaLayout {
                    replica_address: format!("{address}:{REPLICA_PORT}"),
                    client_address: format!("{address}:{CLIENT_PORT}"),
                    launcher: vec!["ip".into(), "netns".into(), "exec".into(), ns],
                    data_dir: Some(data_dir),
                    ..ReplicaLayout::default()
                },
            );
        }
        Ok(())
    }

    /// A proxy per directed link `from -> to`, listening (and connecting) in `from`'s
    /// namespace; `from`'s layout names it as `to`'s address. In namespace mode that
    /// address is the same in every namespace ([`PROXY_PORT_BASE`]); on loopback each link
    /// has a port of its own, so a replica that learns a peer's address from a
    /// configuration reaches it through the proposer's proxy for that peer.
    fn create_proxies(&mut self, seed: u64) -> Result<(), String> {
        for from in self.ids.clone() {
            for to in self.ids.clone() {
                if from == to {
                    continue;
                }
                let ns = (self.mode == Mode::Namespaces).then(|| self.namespace(from));
                let port = match ns {
                    Some(_) => u16::try_from(to)
                        .ok()
                        .and_then(|to| PROXY_PORT_BASE.checked_add(to))
                        .ok_or_else(|| format!("replica id {to} is too large for a proxy port"))?,
                    None => 0,
                };
                let listener = in_namespace(ns.clone(), move || TcpListener::bind(("127.0.0.1", port)))
                    .map_err(|error| format!("binding the proxy of link {from}->{to}: {error}"))?;
                let target: SocketAddr = self.layouts[&to]
                    .replica_address
                    .parse()
                    .map_err(|error| format!("replica {to}'s address: {error}"))?;
                let connector: Connector = Arc::new(move |target: SocketAddr| {
                    in_namespace(ns.clone(), move || {
                        std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
                    })
                });
                let link_seed = seed ^ (from << 32) ^ (to << 40) ^ 0x5eed_1111;
                let proxy = LinkProxy::start(listener, target, connector, link_seed)
                    .map_err(|error| format!("starting the proxy of link {from}->{to}: {error}"))?;
                let layout = self.layouts.get_mut(&from).expect("every id has a layout");
                layout.peer_addresses.insert(to, proxy.address.to_string());
                self.proxies.insert((from, to), proxy);
            }
        }
        Ok(())
    }

    /// From now on, messages on every directed link `(from, to)` in `cuts` are lost (and
    /// only those).
    pub fn set_cuts(&mut self, cuts: &BTreeSet<(u64, u64)>) -> Result<(), String> {
        self.cuts = cuts.clone();
        self.apply()
    }

    /// From now on, `percent` of the packets between replicas are lost (namespaces), or
    /// connections between replicas are aborted at a rate that loses about as many
    /// messages (loopback).
    pub fn set_loss(&mut self, percent: u64) -> Result<(), String> {
        self.loss_percent = percent.min(100);
        self.apply()
    }

    /// From now on, every chunk between replicas is held for `min_ms..=max_ms`.
    pub fn set_delay(&mut self, min_ms: u64, max_ms: u64) -> Result<(), String> {
        self.delay_ms = (min_ms, max_ms);
        self.apply()
    }

    /// From now on, the clients' packets to and from every replica in `replicas` are lost,
    /// both ways (namespace mode only: on loopback the clients reach the replicas
    /// directly).
    pub fn set_client_cuts(&mut self, replicas: &BTreeSet<u64>) -> Result<(), String> {
        if self.mode != Mode::Namespaces {
            return Err("clients can be cut from a replica only in namespace mode".into());
        }
        self.client_cuts = replicas.clone();
        self.apply()
    }

    /// No cuts, loss or delay.
    pub fn heal(&mut self) -> Result<(), String> {
        self.cuts.clear();
        self.client_cuts.clear();
        self.loss_percent = 0;
        self.delay_ms = (0, 0);
        self.apply()
    }

    /// A description of the current faults.
    pub fn describe(&self) -> String {
        let cuts: Vec<String> = self.cuts.iter().map(|(from, to)| format!("{from}->{to}")).collect();
        format!(
            "cuts [{}], clients cut from {:?}, loss {}%, delay {:?} ms",
            cuts.join(" "),
            self.client_cuts,
            self.loss_percent,
            self.delay_ms
        )
    }

    fn apply(&mut self) -> Result<(), String> {
        let packet_filter = self.mode == Mode::Namespaces;
        for (&(from, to), proxy) in &self.proxies {
            proxy.set(LinkFaults {
                cut: !packet_filter && self.cuts.contains(&(from, to)),
                delay_min_ms: self.delay_ms.0,
                delay_max_ms: self.delay_ms.1,
                // Loopback: a chunk usually carries a message or a few; abort one in
                // (100 / loss) of them.
                abort_per_million: if packet_filter { 0 } else { self.loss_percent * 10_000 },
            });
        }
        if packet_filter {
            for &to in &self.ids {
                let mut script =
                    String::from("flush chain inet rslfault input\nflush chain inet rslfault output\n");
                if self.client_cuts.contains(&to) {
                    let host = self.host_address();
                    script.push_str(&format!(
                        "add rule inet rslfault input ip saddr {host} drop\nadd rule inet rslfault output ip daddr {host} drop\n"
                    ));
                }
                let dropped: Vec<String> = self
                    .cuts
                    .iter()
                    .filter(|cut| cut.1 == to)
                    .map(|cut| self.address(cut.0).to_string())
                    .collect();
                if !dropped.is_empty() {
                    script.push_str(&format!(
                        "add rule inet rslfault input ip saddr {{ {} }} drop\n",
                        dropped.join(", ")
                    ));
                }
                if self.loss_percent > 0 {
                    let peers: Vec<String> = self
                        .ids
                        .iter()
                        .filter(|&&id| id != to)
                        .map(|&id| self.address(id).to_string())
                        .collect();
                    script.push_str(&format!(
                        "add rule inet rslfault input ip saddr {{ {} }} numgen random mod 100 < {} drop\n",
                        peers.join(", "),
                        self.loss_percent
                    ));
                }
                nft(&self.namespace(to), &script)?;
            }
        }
        Ok(())
    }

    /// Fills replica `id`'s disk to the last byte (namespace mode); returns the bytes
    /// written. [`Network::free_disk`] undoes it.
    pub fn fill_disk(&self, id: u64) -> Result<u64, String> {
        let dir = self.disk(id)?;
        let path = dir.join("filler");
        let mut file =
            fs::File::create(&path).map_err(|error| format!("creating {}: {error}", path.display()))?;
        let chunk = vec![0xA5u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => return Err(format!("filling {}: {error}", path.display())),
            }
        }
        let _ = file.sync_all();
        Ok(written)
    }

    /// Removes what [`Network::fill_disk`] wrote.
    pub fn free_disk(&self, id: u64) -> Result<(), String> {
        let path = self.disk(id)?.join("filler");
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!("removing {}: {error}", path.display())),
        }
    }

    fn disk(&self, id: u64) -> Result<&Path, String> {
        let index = self.ids.iter().position(|&i| i == id).ok_or(format!("no replica {id}"))?;
        self.mounts.get(index).map(PathBuf::as_path).ok_or_else(|| "no bounded disks in loopback mode".into())
    }

    /// Messages aborted by loss on every link so far (loopback mode).
    pub fn proxy_aborts(&self) -> u64 {
        self.proxies.values().map(LinkProxy::aborts).sum()
    }

    /// Connections the proxies let through so far.
    pub fn proxy_connections(&self) -> u64 {
        self.proxies.values().map(LinkProxy::connections).sum()
    }

    /// Removes everything this network made (idempotent; errors are reported, not fatal).
    fn teardown(&mut self) {
        self.proxies.clear();
        for ns in std::mem::take(&mut self.namespaces) {
            remove_namespace(&ns);
        }
        for mount in std::mem::take(&mut self.mounts) {
            if let Err(error) = run("umount", &["-l", &mount.to_string_lossy()]) {
                eprintln!("fault: cleanup: {error}");
            }
        }
        if let Some(dir) = self.disks_dir.take() {
            let _ = fs::remove_dir_all(&dir);
        }
        if let Some(bridge) = self.bridge.take() {
            if let Err(error) = run("ip", &["link", "del", &bridge]) {
                eprintln!("fault: cleanup: {error}");
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kills every process left in namespace `ns` and deletes it (its veth goes with it).
fn remove_namespace(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|pid| pid.parse::<libc::pid_t>().ok()) {
            // SAFETY: kill(2) only sends a signal; the pid was just listed as a process in
            // a namespace this program made (by this run or a dead earlier one).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    if let Err(error) = run("ip", &["netns", "del", ns]) {
        eprintln!("fault: cleanup: {error}");
    }
}

/// The pid in a namespace or mount name made by this module (`rslf<pid>-...`), if it is one.
fn owner(name: &str) -> Option<u32> {
    let (digits, _) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    digits.parse().ok()
}

/// The pid in an interface name made by this module (`rf<pid hex>.<run hex>...`).
fn link_owner(name: &str) -> Option<u32> {
    let (hex, _) = name.strip_prefix(LINK_PREFIX)?.split_once('.')?;
    u32::from_str_radix(hex, 16).ok()
}

/// Whether a run with this pid is still alive (a live process of this program).
fn owner_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let named = fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "rsl-fault");
    // A zombie (killed, not yet reaped) cleans up nothing any more.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')));
    named && !zombie
}

/// Removes namespaces, bridges and mounts that runs which are no longer alive left behind;
/// returns what was removed.
pub fn clean_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|line| line.split_whitespace().next()) {
            if owner(ns).is_some_and(|pid| !owner_alive(pid)) {
                remove_namespace(ns);
                removed.push(format!("namespace {ns}"));
            }
        }
    }
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        let mut disks_dirs = BTreeSet::new();
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(source), Some(target)) = (fields.next(), fields.next()) else { continue };
            if owner(source).is_some_and(|pid| !owner_alive(pid)) && run("umount", &["-l", target]).is_ok() {
                removed.push(format!("mount {target}"));
                disks_dirs.extend(Path::new(target).parent().map(Path::to_path_buf));
            }
        }
        for dir in disks_dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show", "type", "bridge"]) {
        for line in links.lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
            if link_owner(name).is_some_and(|pid| !owner_alive(pid))
                && run("ip", &["link", "del", name]).is_ok()
            {
                removed.push(format!("bridge {name}"));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        assert_eq!(owner("rslf1234-0-3"), Some(1234));
        assert_eq!(owner("rslf77-12-disk2"), Some(77));
        assert_eq!(owner("rslf"), None);
        assert_eq!(owner("rslfx-1"), None);
        assert_eq!(owner("docker0"), None);
        assert_eq!(link_owner("rf4d2.ab"), Some(0x4d2));
        assert_eq!(link_owner("rf4d2.0v3"), Some(0x4d2));
        assert_eq!(link_owner("rfoo"), None);
        assert_eq!(link_owner("eth0"), None);
        assert!(owner_alive(std::process::id()));
    }
}
