//! Rings of real `rsl-kv-server` processes on loopback: replication and reads, SIGKILL of
//! the primary, catch-up from slots and from a checkpoint, a corrupt log, an oversized
//! request, a stranger's messages, authentication and roles on the client API (every
//! cluster here requires it; this test checks refusals), mutual TLS between the processes,
//! and (feature `rdma`) the same ring over the RDMA transport's emulated provider, with its
//! catch-up from a checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsl_kv::command::VALUE_BYTES_MAX;
use rsl_kv::ClientError;
use rsl_tests::process::{fast_timing, ClusterOptions, ProcessCluster};
use rsl_tests::server;

/// Longest wait for the ring to elect, converge or serve a request.
const WAIT: Duration = Duration::from_secs(30);

fn options(extra: &[&str]) -> ClusterOptions {
    let mut args = fast_timing();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    ClusterOptions { args, ..ClusterOptions::default() }
}

/// Writes `key-{i}` = `value-{i}-{tag}` for every i in `range`; returns the last slot.
async fn write_keys(client: &mut rsl_kv::Client, range: std::ops::Range<u32>, tag: &str) -> u64 {
    let mut slot = 0;
    for i in range {
        slot = client
            .put(&format!("key-{i}"), format!("value-{i}-{tag}"))
            .await
            .unwrap_or_else(|error| panic!("put key-{i}: {error}"));
    }
    slot
}

/// Checks with linearizable reads that every key in `expected` holds its value.
async fn assert_holds(client: &mut rsl_kv::Client, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        let read = client.get(key).await.unwrap_or_else(|error| panic!("get {key}: {error}"));
        assert_eq!(read.as_deref(), Some(value.as_bytes()), "{key} lost or wrong");
    }
}

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn expected(range: std::ops::Range<u32>, tag: &str) -> BTreeMap<String, String> {
    range.map(|i| (format!("key-{i}"), format!("value-{i}-{tag}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_read_survive_a_killed_primary_and_catch_up_from_slots() {
    let mut cluster = ProcessCluster::start(server::binary(), options(&[]));
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;

    write_keys(&mut client, 0..100, "a").await;
    let mut acknowledged = expected(0..100, "a");
    assert_holds(&mut client, &acknowledged).await;
    assert_eq!(client.get("never-written").await.unwrap(), None);
    let created = client.cas("counter", None, "1").await.unwrap();
    assert!(created.swapped);
    let stale = client.cas("counter", Some("0".into()), "2").await.unwrap();
    assert!(!stale.swapped && stale.current.as_deref() == Some(&b"1"[..]));
    acknowledged.insert("counter".into(), "1".into());

    // SIGKILL the primary: the others elect a new one and the client follows it.
    cluster.kill(primary);
    let killed = Instant::now();
    let slot = write_keys(&mut client, 100..101, "b").await;
    eprintln!("first write after SIGKILL of the primary took {:?}", killed.elapsed());
    let new_primary = cluster.wait_for_primary(&mut client, WAIT).await;
    assert_ne!(new_primary, primary);
    write_keys(&mut client, 101..200, "b").await;
    acknowledged.extend(expected(100..200, "b"));
    assert_holds(&mut client, &acknowledged).await;

    // The killed replica comes back, recovers its log and fetches the slots it missed.
    cluster.spawn(primary, &[]);
    let last = write_keys(&mut client, 200..210, "c").await;
    acknowledged.extend(expected(200..210, "c"));
    assert!(last > slot);
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses[&primary].checkpoints_installed, 0, "caught up from slots, not a checkpoint");
    assert_eq!(statuses.values().filter(|s| s.role == "primary").count(), 1, "{statuses:#?}");
    assert_eq!(statuses[&primary].keys, acknowledged.len() as u64);
    assert_holds(&mut client, &acknowledged).await;

    // A clean stop and start of every replica (one at a time) keeps everything.
    for id in cluster.ids() {
        assert!(cluster.terminate(id).success(), "replica {id} must exit cleanly on SIGTERM");
        cluster.spawn(id, &[]);
    }
    assert_holds(&mut client, &acknowledged).await;
}

/// Three replicas over the RDMA ring protocol on the emulated provider (their rings are
/// shared memory between the processes): the demo's writes and reads, a SIGKILLed primary,
/// and the killed replica catching up when it comes back.
#[cfg(feature = "rdma")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_over_emulated_rdma_survives_a_killed_primary() {
    let mut cluster = ProcessCluster::start(server::binary(), options(&["--transport", "rdma-emu"]));
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    write_keys(&mut client, 0..100, "a").await;
    let mut acknowledged = expected(0..100, "a");
    assert_holds(&mut client, &acknowledged).await;

    cluster.kill(primary);
    write_keys(&mut client, 100..150, "b").await;
    let new_primary = cluster.wait_for_primary(&mut client, WAIT).await;
    assert_ne!(new_primary, primary);
    acknowledged.extend(expected(100..150, "b"));

    cluster.spawn(primary, &[]);
    let last = write_keys(&mut client, 150..160, "c").await;
    acknowledged.extend(expected(150..160, "c"));
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert_eq!(statuses[&primary].keys, acknowledged.len() as u64, "the restarted replica caught up");
    assert_holds(&mut client, &acknowledged).await;
}

/// Asking for the RDMA transport where it cannot run fails at start-up and says why: a
/// build without it, or (with it) no RDMA device on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rdma_transport_without_a_device_is_refused_plainly() {
    let mut cluster = ProcessCluster::create(server::binary(), options(&["--transport", "rdma"]));
    let (status, stderr) = cluster.spawn_expecting_failure(1, &[], WAIT);
    assert!(!status.success());
    let reasons = [
        "built without the rdma feature",
        "no verbs provider",
        "no RDMA device found (ibv_get_device_list returned none)",
    ];
    assert!(
        stderr.contains("replica transport rdma") && reasons.iter().any(|reason| stderr.contains(reason)),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_truncated_log_catches_up_from_a_checkpoint() {
    catch_up_from_a_checkpoint(&[]).await;
}

/// The same over the RDMA transport's emulated provider: the checkpoint travels over its
/// TCP side channel (the replicas' handshake listeners).
#[cfg(feature = "rdma")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_emulated_rdma_a_replica_behind_a_truncated_log_catches_up_from_a_checkpoint() {
    catch_up_from_a_checkpoint(&["--transport", "rdma-emu"]).await;
}

/// Stops a secondary, writes until the others truncated their logs past it, restarts it:
/// it must install a checkpoint fetched from a peer and then serve the latest state.
async fn catch_up_from_a_checkpoint(transport: &[&str]) {
    let mut flags = vec!["--checkpoint-interval-slots=25", "--log-retain-slots=10"];
    flags.extend_from_slice(transport);
    let mut cluster = ProcessCluster::start(server::binary(), options(&flags));
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let behind = cluster.ids().into_iter().find(|&id| id != primary).unwrap();
    write_keys(&mut client, 0..20, "a").await;
    assert!(cluster.terminate(behind).success());

    // Every write is its own slot here (one client, one write at a time): 300 slots is many
    // checkpoints, and the others truncate their logs far past where `behind` stopped.
    let last = write_keys(&mut client, 20..320, "b").await;
    let statuses = cluster.statuses(&mut client).await;
    assert!(
        statuses.values().all(|s| s.log_start > 21 && s.checkpoint > 21),
        "the running replicas truncated their logs: {statuses:#?}"
    );

    cluster.spawn(behind, &[]);
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert!(
        statuses[&behind].checkpoints_installed >= 1,
        "replica {behind} must have installed a fetched checkpoint: {statuses:#?}"
    );
    let mut acknowledged = expected(0..20, "a");
    acknowledged.extend(expected(20..320, "b"));
    assert_eq!(statuses[&behind].keys, acknowledged.len() as u64);

    // The caught-up replica serves fast reads of the latest state on its own.
    let options = rsl_kv::ClientOptions { security: cluster.security(), ..Default::default() };
    let mut only_behind =
        rsl_kv::Client::new([cluster.client_address(behind).to_owned()], options).expect("a valid address");
    let read = only_behind.get_fast("key-319", Some(last)).await.unwrap();
    assert_eq!(read.as_deref(), Some(&b"value-319-b"[..]));
    assert_holds(&mut client, &acknowledged).await;
}

/// The ring under test runs the binary users run: rsl-kv's own `rsl-kv-server`, whose
/// allocator is mimalloc and whose `main` switches transparent huge pages off, not a copy
/// built with the tests' features.
#[test]
fn the_ring_runs_the_shipped_server() {
    let binary = server::binary();
    assert_eq!(binary.file_name().and_then(|name| name.to_str()), Some("rsl-kv-server"));
    let help =
        std::process::Command::new(&binary).arg("--help").env("MIMALLOC_VERBOSE", "1").output().unwrap();
    assert!(help.status.success(), "{} --help: {:?}", binary.display(), help.status);
    let stderr = String::from_utf8_lossy(&help.stderr);
    assert!(
        stderr.contains("mimalloc: process init"),
        "{} does not allocate with mimalloc: {stderr}",
        binary.display()
    );

    let cluster = ProcessCluster::start(binary, ClusterOptions { replicas: 1, ..options(&[]) });
    let pid = cluster.pid(1).expect("replica 1 runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let thp = status.lines().find(|line| line.starts_with("THP_enabled:"));
    assert_eq!(
        thp.map(|line| line.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["THP_enabled:", "0"]),
        "transparent huge pages must be off in the server (PR_SET_THP_DISABLE); /proc/{pid}/status:\n{status}"
    );
}

/// The newest segment file of a replica's file journal.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .expect("the replica has a log directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("the replica wrote a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_is_refused_on_restart_and_nothing_acknowledged_is_lost() {
    let mut cluster = ProcessCluster::start(server::binary(), options(&[]));
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let victim = cluster.ids().into_iter().find(|&id| id != primary).unwrap();
    let last = write_keys(&mut client, 0..60, "a").await;
    cluster.wait_converged(&mut client, last, WAIT).await;
    assert!(cluster.terminate(victim).success());

    // Flip one byte a third of the way into the written part of the newest segment: a
    // record in the middle of the log, with intact records after it, so it cannot pass for
    // a torn tail.
    let segment = newest_segment(cluster.data_dir(victim));
    let mut bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).expect("the segment holds records") + 1;
    let offset = written / 3;
    bytes[offset] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    let (status, stderr) = cluster.spawn_expecting_failure(victim, &[], WAIT);
    assert!(!status.success(), "a corrupt log must stop the replica: {status}");
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains("corrupt") && stderr.contains(&name) && stderr.contains("at byte"),
        "the error names the damage, the file and the offset: {stderr}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "a refused log is left as it was, for inspection");

    // The other two keep serving everything acknowledged.
    let mut acknowledged = expected(0..60, "a");
    write_keys(&mut client, 60..80, "b").await;
    acknowledged.extend(expected(60..80, "b"));
    assert_holds(&mut client, &acknowledged).await;

    // Once the operator removes the damaged log, the replica rebuilds from its peers.
    std::fs::remove_dir_all(cluster.data_dir(victim)).unwrap();
    cluster.spawn(victim, &[]);
    let last = write_keys(&mut client, 80..81, "c").await;
    acknowledged.extend(expected(80..81, "c"));
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert_eq!(statuses[&victim].keys, acknowledged.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_with_a_clear_error() {
    let cluster = ProcessCluster::start(server::binary(), options(&[]));
    let mut client = cluster.client(WAIT);
    cluster.wait_for_primary(&mut client, WAIT).await;

    let too_large = vec![7u8; VALUE_BYTES_MAX + 1];
    match client.put("big", too_large).await {
        Err(ClientError::InvalidArgument(message)) => {
            assert!(
                message.contains("value") && message.contains(&(VALUE_BYTES_MAX + 1).to_string()),
                "the error says what is too large and by how much: {message}"
            );
        }
        other => panic!("an oversized value must be refused as invalid, got {other:?}"),
    }
    let long_key = "k".repeat(rsl_kv::command::KEY_BYTES_MAX + 1);
    assert!(matches!(client.put(&long_key, "v").await, Err(ClientError::InvalidArgument(_))));
    // Past the server's client message limit (`tuning.request_bytes_max` and 1 MiB) the
    // transport itself refuses, still without harm.
    assert!(client.put("huge", vec![1u8; 70 << 20]).await.is_err());
    assert_eq!(client.get("big").await.unwrap(), None, "nothing of a refused write was applied");

    // A large value (a request over the consensus batch, in a slot of its own) goes
    // through, and the ring keeps serving. (64 MiB, the largest, goes end to end in
    // rsl-kv's `a_put_of_a_64_mib_value_replicates_to_every_server`.)
    let largest = vec![9u8; 8 << 20];
    client.put("big", largest.clone()).await.unwrap();
    assert_eq!(client.get("big").await.unwrap().as_deref(), Some(&largest[..]));
    client.put("small", "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_messages_are_rejected_and_counted() {
    use rsl_core::{Ballot, Message, MessageBody, NodeId, RingId, Slot};
    use rsl_transport::{GrpcTransport, Transport};

    let cluster = ProcessCluster::start(server::binary(), ClusterOptions { metrics: true, ..options(&[]) });
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let slot = client.put("before", "1").await.unwrap();
    let target = cluster.ids().into_iter().find(|&id| id != primary).unwrap();
    assert_eq!(cluster.metric(target, "rsl_transport_rejected_non_member_total"), 0);

    // Node 9 is not a member of ring 1. It tries to take the ring over with prepares of a
    // huge ballot and to pass as its primary with heartbeats.
    let (stranger, _inbound) =
        GrpcTransport::builder(NodeId(9)).bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    stranger.membership().set_members(RingId(1), [NodeId(9), NodeId(target)]);
    stranger.set_peer_address(NodeId(target), cluster.replica_address(target).to_owned().into()).unwrap();
    let ballot = Ballot::new(1 << 40, NodeId(9));
    let sent = 50u64;
    for i in 0..sent {
        let body = if i % 2 == 0 {
            MessageBody::Prepare { ballot, first_unchosen: Slot(1), transfer_from: None }
        } else {
            MessageBody::Heartbeat { ballot, chosen: Slot(slot + 1000), sent_at: rsl_core::Time(i) }
        };
        let message =
            Message { ring: RingId(1), from: NodeId(9), to: NodeId(target), configuration: 1, body };
        stranger.send(NodeId(target), vec![message]).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deadline = Instant::now() + WAIT;
    while cluster.metric(target, "rsl_transport_rejected_non_member_total") < sent {
        assert!(
            Instant::now() < deadline,
            "the stranger's messages were not all counted:\n{}",
            cluster.metrics(target)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stranger.shutdown(Duration::from_secs(1)).await;

    // The ring did not notice: same primary, still serving, nobody promised the stranger.
    assert_eq!(cluster.wait_for_primary(&mut client, WAIT).await, primary);
    let after = client.put("after", "2").await.unwrap();
    let statuses = cluster.wait_converged(&mut client, after, WAIT).await;
    assert!(statuses.values().all(|s| s.ballot_node != 9), "{statuses:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_require_credentials_and_hold_each_user_to_its_role() {
    use rsl_kv::auth::Role;
    use rsl_kv::{ClientOptions, ClientSecurity, Token};
    use tonic::Code;

    let cluster = ProcessCluster::start(server::binary(), options(&[]));
    let mut admin = cluster.client(WAIT);
    cluster.wait_for_primary(&mut admin, WAIT).await;
    admin.put("k", "original").await.unwrap();
    let client_as = |security: ClientSecurity| {
        let options = ClientOptions { deadline: WAIT, security, ..ClientOptions::default() };
        rsl_kv::Client::new(cluster.client_addresses(), options).unwrap()
    };
    let refused = |outcome: Result<_, ClientError>, code: Code| match outcome {
        Err(ClientError::Server { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected {code:?}, got {other:?}"),
    };

    let mut reader = client_as(cluster.security_as(Role::Read));
    assert_eq!(reader.get("k").await.unwrap().as_deref(), Some(&b"original"[..]));
    refused(reader.put("k", "by the reader").await.map(drop), Code::PermissionDenied);
    let mut writer = client_as(cluster.security_as(Role::ReadWrite));
    writer.put("k", "by the writer").await.unwrap();
    refused(writer.reconfigure(&[1, 2]).await.map(drop), Code::PermissionDenied);
    let wrong =
        ClientSecurity { token: Some(Token::new("not-a-token").unwrap()), ..ClientSecurity::default() };
    for security in [ClientSecurity::default(), wrong] {
        let mut stranger = client_as(security);
        refused(stranger.get("k").await.map(drop), Code::Unauthenticated);
        refused(stranger.delete("k").await.map(drop), Code::Unauthenticated);
    }

    // Only the writer's put took effect, and the ring kept its members.
    assert_eq!(admin.get("k").await.unwrap().as_deref(), Some(&b"by the writer"[..]));
    let statuses = cluster.statuses(&mut admin).await;
    assert!(statuses.values().all(|s| s.configuration_members == [1, 2, 3]), "{statuses:#?}");
}

#[path = "../../crates/rsl-transport/tests/common/pki.rs"]
mod pki;

/// Certificate authorities and node certificates for loopback, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    /// Writes a CA named `name` and, signed by it, the certificate of each of `nodes`
    /// (naming its node, `rsl://node/<id>`); returns each node's replica flags.
    fn authority(&self, name: &str, nodes: std::ops::RangeInclusive<u64>) -> BTreeMap<u64, Vec<String>> {
        let authority = pki::Authority::new(name);
        let path = |file: &str| self.dir.path().join(format!("{name}-{file}"));
        std::fs::write(path("ca.pem"), authority.pem()).unwrap();
        let mut flags = BTreeMap::new();
        for node in nodes {
            let issued = authority.node(node);
            std::fs::write(path(&format!("{node}-cert.pem")), &issued.cert_pem).unwrap();
            std::fs::write(path(&format!("{node}-key.pem")), &issued.key_pem).unwrap();
            let files = [
                ("ca", "ca.pem".to_owned()),
                ("cert", format!("{node}-cert.pem")),
                ("key", format!("{node}-key.pem")),
            ];
            let node_flags =
                files.iter().map(|(kind, file)| format!("--tls-{kind}={}", path(file).display())).collect();
            flags.insert(node, node_flags);
        }
        flags
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_talk_over_mutual_tls_and_refuse_a_foreign_certificate() {
    let pki = Pki::new();
    let ours = pki.authority("ring-ca", 1..=3);
    let foreign = pki.authority("foreign-ca", 3..=3);
    let mut cluster = ProcessCluster::create(server::binary(), options(&[]));
    for id in [1, 2] {
        cluster.spawn(id, &as_strs(&ours[&id]));
    }
    // Replica 3 presents a certificate of another authority: the others refuse it and it
    // refuses them, so it learns nothing while the ring of two serves.
    cluster.spawn(3, &as_strs(&foreign[&3]));
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    assert_ne!(primary, 3, "a replica nobody trusts cannot be elected");
    let last = write_keys(&mut client, 0..30, "tls").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = client.status_of(cluster.client_address(3)).await.unwrap();
    assert_eq!(status.applied, 0, "the foreign replica must not have learned anything: {status:?}");

    // With the ring's certificate (naming node 3) it joins and catches up.
    cluster.kill(3);
    cluster.spawn(3, &as_strs(&ours[&3]));
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert_eq!(statuses[&3].keys, 30);
    assert_holds(&mut client, &expected(0..30, "tls")).await;
}
