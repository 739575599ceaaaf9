//! The fault-injection runner against real processes: a short run on loopback with the
//! faults that need no privileges, and (as root) the network namespaces' cuts and cleanup.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rsl_tests::fault::net::{self, in_namespace, Mode, Network};
use rsl_tests::fault::{self, Nemesis, RunOptions};
use rsl_tests::server;

/// A short loopback run: `clients` sessions on `keys` keys, the faults in turn. Returns
/// the report and the directory a failing run saves into.
fn loopback_run(
    seed: u64,
    seconds: u64,
    nemeses: Vec<Nemesis>,
    (clients, keys): (u64, u64),
    fast_reads: bool,
    stream: bool,
    server_args: &[&str],
) -> (fault::Report, tempfile::TempDir) {
    let failures = tempfile::tempdir().unwrap();
    let options = RunOptions {
        server: server::binary(),
        seed,
        duration: Duration::from_secs(seconds),
        nemeses,
        mode: Mode::Loopback,
        round_robin: true,
        history_dir: None,
        failure_dir: failures.path().to_path_buf(),
        clients,
        keys,
        fast_reads,
        stream,
        server_args: server_args.iter().map(|arg| (*arg).to_owned()).collect(),
        interrupted: Arc::new(AtomicBool::new(false)),
        faketime: Err("not used by these tests".into()),
    };
    (fault::run(&options).expect("the run is set up"), failures)
}

/// What a run without fast reads must show: linearizable, nothing lost, faults injected.
fn assert_passed(report: &fault::Report) {
    assert!(report.passed(), "problems: {:#?}\n{report}", report.problems);
    assert!(report.ok > 100 && report.acknowledged_writes > 50, "{report}");
    assert_eq!((report.violations, report.lost_writes), (0, 0));
    assert!(report.faults.values().sum::<u64>() >= 2, "faults were injected: {report}");
}

#[test]
fn a_short_fault_run_on_loopback_is_linearizable_and_loses_nothing() {
    let nemeses = vec![Nemesis::KillPrimary, Nemesis::PartitionMajority, Nemesis::TornTail, Nemesis::Corrupt];
    assert_passed(&loopback_run(11, 12, nemeses, (4, 5), false, false, &[]).0);
}

#[test]
fn a_short_fault_run_over_the_batched_stream_is_linearizable_and_loses_nothing() {
    // The clients share one `Stream` call: concurrent writes reach the ring in write
    // batches, gets in read batches.
    let nemeses = vec![Nemesis::KillPrimary, Nemesis::PartitionMajority, Nemesis::TornTail];
    assert_passed(&loopback_run(13, 12, nemeses, (6, 5), false, true, &[]).0);
}

/// The same over the RDMA transport on the emulated provider: kills of the primary and of
/// any replica, pauses, torn log tails. (Network faults would cut only the handshake
/// sockets; established rings are shared memory.)
#[cfg(feature = "rdma")]
#[test]
fn a_short_fault_run_over_emulated_rdma_is_linearizable_and_loses_nothing() {
    let nemeses = vec![Nemesis::KillPrimary, Nemesis::Kill, Nemesis::Pause, Nemesis::TornTail];
    assert_passed(&loopback_run(14, 20, nemeses, (4, 5), false, false, &["--transport", "rdma-emu"]).0);
}

#[test]
fn fast_reads_from_lagging_replicas_are_reported_as_violations() {
    // Fast reads (any replica, no minimum slot) are not linearizable: the history must say so.
    let (report, _failures) =
        loopback_run(12, 10, vec![Nemesis::Pause, Nemesis::PartitionMajority], (4, 3), true, false, &[]);
    assert_eq!(report.violations, 1, "{report}");
    assert!(report.problems.iter().any(|p| p.contains("not linearizable")), "{:#?}", report.problems);
    let saved = report.saved.expect("a failing run saves its history");
    assert!(saved.join("history-seed-12.jsonl").is_file() && saved.join("seed-12-replica-1.log").is_file());
}

/// Whether namespaces can be made here; says why not.
fn namespaces_or_skip(test: &str) -> bool {
    match net::namespaces_unavailable() {
        None => true,
        Some(why) => {
            eprintln!("{test}: skipped: it makes network namespaces and nftables rules, which needs root, `ip` and `nft`: {why}");
            false
        }
    }
}

/// Tries to connect from `from`'s namespace to `to`.
fn reachable(network: &Network, from: u64, to: SocketAddr) -> bool {
    let ns = Some(network.namespace(from));
    in_namespace(ns, move || TcpStream::connect_timeout(&to, Duration::from_millis(300))).is_ok()
}

#[test]
fn namespaces_cut_links_one_way_and_are_removed_at_the_end() {
    if !namespaces_or_skip("namespaces_cut_links_one_way_and_are_removed_at_the_end") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _guard = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let network = Network::create(Mode::Namespaces, &[1, 2, 3], 1, dir.path()).expect("namespaces are made");
    let namespaces: Vec<String> = (1..=3).map(|id| network.namespace(id)).collect();
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for ns in &namespaces {
        assert!(listed.contains(ns.as_str()), "{ns} exists: {listed}");
    }
    let layouts = network.layouts();
    // Replica 2's transport address, listened on inside its namespace.
    let address: SocketAddr = layouts[&2].replica_address.parse().unwrap();
    let _listener = in_namespace(Some(network.namespace(2)), move || TcpListener::bind(address)).unwrap();
    assert!(reachable(&network, 1, address) && reachable(&network, 3, address));
    // Every replica names a peer by the same address (its own proxy for that link), so an
    // address a configuration carries works in every namespace.
    for to in 1..=3u64 {
        let named: BTreeSet<&String> = layouts
            .iter()
            .filter(|(from, _)| **from != to)
            .map(|(_, layout)| &layout.peer_addresses[&to])
            .collect();
        assert_eq!(named.len(), 1, "replica {to} is named {named:?}");
    }
    // Through replica 1's proxy for 2 (the address any replica gives for 2), data reaches 2.
    let via_proxy: SocketAddr = layouts[&1].peer_addresses[&2].parse().unwrap();
    assert!(reachable(&network, 1, via_proxy), "1 reaches its proxy for 2");
    let mut network = network;

    network.set_cuts(&[(1, 2)].into_iter().collect()).unwrap();
    assert!(!reachable(&network, 1, address), "1 -> 2 is cut");
    assert!(reachable(&network, 3, address), "3 -> 2 is not");
    network.heal().unwrap();
    assert!(reachable(&network, 1, address), "healed");

    // Each replica's disk is bounded and can be filled and freed.
    let filled = network.fill_disk(1).unwrap();
    assert!(filled > 0 && filled <= net::DISK_BYTES, "{filled}");
    network.free_disk(1).unwrap();

    drop(network);
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} is removed: {listed}");
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&namespaces[0]), "the disks are unmounted: {mounts}");
}
