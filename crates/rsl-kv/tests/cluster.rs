//! Three rsl-kv servers in one process over real gRPC on 127.0.0.1 (port 0): the client
//! API, redirects from secondaries, de-duplication of a retried write, failover after the
//! primary stops, a stopped replica catching up from a checkpoint fetched over the
//! replica transport (never the client port), and the `rsl-kv` command line's operator
//! controls (status with replica health, promote, timing, reseed, the last write), and the
//! state machine on the ring task (`tuning.apply_on`) serving, saving and installing checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rsl::{RingOptions, Role};
use rsl_kv::config::Tuning;
use rsl_kv::proto as pb;
use rsl_kv::{
    BatchWrite, Client, ClientOptions, ConfigFile, Listeners, LogBackend, Server, ServerConfig, Wire,
};
use tokio::net::TcpListener;

/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    configs: BTreeMap<u64, ServerConfig>,
    servers: BTreeMap<u64, Server>,
}

impl Cluster {
    /// Binds every node's sockets on port 0, then starts three servers with file logs
    /// under `root`.
    async fn start(root: &Path, tuning: Tuning) -> Cluster {
        Cluster::start_each(root, |_| tuning.clone()).await
    }

    /// [`Cluster::start`] with each node's tuning from `tuning`.
    async fn start_each(root: &Path, tuning: impl Fn(u64) -> Tuning) -> Cluster {
        let mut listeners = BTreeMap::new();
        for node in 1..=3u64 {
            let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(node, Listeners { replica, client });
        }
        let members: Vec<String> =
            listeners.iter().map(|(node, l)| format!("{node}={}", l.replica.local_addr().unwrap())).collect();
        let clients: Vec<String> =
            listeners.iter().map(|(node, l)| format!("{node}={}", l.client.local_addr().unwrap())).collect();
        let mut cluster = Cluster { configs: BTreeMap::new(), servers: BTreeMap::new() };
        for (node, listeners) in listeners {
            let config = ConfigFile {
                node: Some(node),
                members: Some(members.clone()),
                clients: Some(clients.clone()),
                data_dir: Some(root.join(format!("node-{node}"))),
                log: Some(LogBackend::File),
                tuning: Some(tuning(node)),
                ..ConfigFile::default()
            }
            .resolve()
            .expect("a valid config");
            cluster.configs.insert(node, config.clone());
            let server = Server::start_on(config, listeners, RingOptions::default()).await.expect("start");
            cluster.servers.insert(node, server);
        }
        cluster
    }

    /// Restarts a stopped node on its old addresses and data directory.
    async fn restart(&mut self, node: u64) {
        let config = self.configs[&node].clone();
        let listeners = Listeners::bind(&config).await.expect("rebind the old addresses");
        let server = Server::start_on(config, listeners, RingOptions::default()).await.expect("restart");
        self.servers.insert(node, server);
    }

    fn client_addresses(&self) -> Vec<String> {
        self.configs.values().map(|c| c.client_listen.to_string()).collect()
    }

    /// Waits until a running server is primary.
    async fn primary(&self) -> u64 {
        let wait = async {
            loop {
                for (node, server) in &self.servers {
                    if server.ring().status().borrow().role == Role::Primary {
                        return *node;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("a primary within the time limit")
    }

    /// Waits until every running server applied what the primary has chosen and returns
    /// their statuses.
    async fn converged(&self, client: &mut Client) -> Vec<pb::StatusResponse> {
        let primary = self.primary().await;
        let target = self.servers[&primary].ring().status().borrow().chosen;
        for server in self.servers.values() {
            let mut status = server.ring().status();
            let reached = tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= target)).await;
            assert!(matches!(reached, Ok(Ok(_))), "node {} applied {target} in time", server.node().0);
        }
        let mut statuses = Vec::new();
        for server in self.servers.values() {
            statuses.push(client.status_of(&server.client_addr().to_string()).await.expect("status"));
        }
        statuses
    }

    async fn shutdown(self) {
        for (_, server) in self.servers {
            server.shutdown().await;
        }
    }
}

fn fast_tuning() -> Tuning {
    Tuning {
        heartbeat_interval_ms: Some(20),
        election_delay_min_ms: Some(200),
        election_delay_max_ms: Some(400),
        ..Tuning::default()
    }
}

fn client(cluster: &Cluster) -> Client {
    let options = ClientOptions { deadline: WAIT, ..ClientOptions::default() };
    Client::new(cluster.client_addresses(), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_cas_through_the_client_and_after_the_primary_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), fast_tuning()).await;
    let mut client = client(&cluster);

    // Writes and linearizable reads through the primary, whichever server it is.
    let slot = client.put("colour", "red").await.unwrap();
    assert!(slot >= 1);
    assert_eq!(client.get("colour").await.unwrap().as_deref(), Some(&b"red"[..]));
    assert_eq!(client.get("missing").await.unwrap(), None);

    // Compare-and-set: a wrong expectation fails and reports the value; the right one swaps.
    let refused = client.cas("colour", Some("blue".into()), "green").await.unwrap();
    assert!(!refused.swapped);
    assert_eq!(refused.current.as_deref(), Some(&b"red"[..]));
    let swapped = client.cas("colour", Some("red".into()), "green").await.unwrap();
    assert!(swapped.swapped && swapped.slot > slot);
    let created = client.cas("fresh", None, "1").await.unwrap();
    assert!(created.swapped);
    assert!(client.delete("fresh").await.unwrap());
    assert!(!client.delete("fresh").await.unwrap());

    // Fast reads on every replica see the session's writes (read-your-writes).
    for address in cluster.client_addresses() {
        let mut one = Client::new([address.clone()], ClientOptions::default()).unwrap();
        let value = one.get_fast("colour", Some(client.last_slot())).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"green"[..]), "fast read at {address}");
    }

    // A secondary refuses and names the primary's client address.
    let primary = cluster.primary().await;
    let secondary = *cluster.servers.keys().find(|&&n| n != primary).unwrap();
    let mut raw =
        pb::kv_client::KvClient::connect(format!("http://{}", cluster.servers[&secondary].client_addr()))
            .await
            .unwrap();
    let id = pb::WriteId { client: 0xfeed, sequence: 1 };
    let put = pb::PutRequest { id: Some(id), key: "k".into(), value: "v".into() };
    let refusal = raw.put(put.clone()).await.unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::FailedPrecondition, "{refusal:?}");
    let named = refusal.metadata().get(rsl_kv::PRIMARY_ADDRESS_METADATA).unwrap().to_str().unwrap();
    assert_eq!(named, cluster.servers[&primary].client_addr().to_string());

    // The same (client, sequence) sent twice to the primary executes once.
    let mut at_primary = pb::kv_client::KvClient::connect(format!("http://{named}")).await.unwrap();
    let first = at_primary.put(put.clone()).await.unwrap().into_inner();
    at_primary
        .put(pb::PutRequest { id: Some(pb::WriteId { client: 0xbeef, sequence: 1 }), ..put.clone() })
        .await
        .unwrap();
    let retry = at_primary.put(put.clone()).await.unwrap().into_inner();
    assert_eq!(retry.slot, first.slot, "the retry is answered with the first execution's slot");
    // A bad request is refused, not executed.
    let empty_key = pb::PutRequest {
        id: Some(pb::WriteId { client: 1, sequence: 1 }),
        key: String::new(),
        value: "v".into(),
    };
    assert_eq!(at_primary.put(empty_key).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Every replica holds the same state.
    let statuses = cluster.converged(&mut client).await;
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest && s.keys == 2), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| s.role == "primary").count(), 1);

    // Stop the primary: the client finds the new one and everything written is there.
    cluster.servers.remove(&primary).unwrap().shutdown().await;
    let failover = std::time::Instant::now();
    let slot = client.put("after", "failover").await.unwrap();
    eprintln!("first write after the primary stopped took {:?}", failover.elapsed());
    assert!(slot > swapped.slot);
    let new_primary = cluster.primary().await;
    assert_ne!(new_primary, primary);
    assert_eq!(client.get("colour").await.unwrap().as_deref(), Some(&b"green"[..]));
    assert_eq!(client.get("after").await.unwrap().as_deref(), Some(&b"failover"[..]));
    let swapped = client.cas("colour", Some("green".into()), "blue").await.unwrap();
    assert!(swapped.swapped);
    let statuses = cluster.converged(&mut client).await;
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest && s.keys == 3), "{statuses:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_choose_their_read_consistency_and_read_indexes_serve_on_secondaries() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), fast_tuning()).await;
    let mut writer = client(&cluster);
    let primary = cluster.primary().await;
    let secondaries: Vec<u64> = cluster.servers.keys().copied().filter(|&n| n != primary).collect();
    let at = |node: u64| {
        let address = cluster.servers[&node].client_addr().to_string();
        Client::new([address], ClientOptions { deadline: WAIT, ..ClientOptions::default() }).unwrap()
    };
    for round in 0..10u32 {
        let value = format!("v{round}");
        writer.put("key", value.clone()).await.unwrap();
        // Each read starts after the write was acknowledged: it must see it, on a secondary
        // too, with no session slot to wait for.
        let mut secondary = at(secondaries[round as usize % 2]);
        let read = secondary.get_with("key", rsl::ReadConsistency::ReadIndex).await.unwrap();
        assert_eq!(read.as_deref(), Some(value.as_bytes()), "read index on a secondary, round {round}");
        for consistency in [rsl::ReadConsistency::Lease, rsl::ReadConsistency::LeaseOrReadIndex] {
            let read = writer.get_with("key", consistency).await.unwrap();
            assert_eq!(read.as_deref(), Some(value.as_bytes()), "{consistency:?}, round {round}");
        }
    }
    let statistics = cluster.servers[&secondaries[0]].ring().statistics().await.unwrap();
    assert!(statistics.runtime.reads_read_index >= 5, "{:?}", statistics.runtime);
    assert!(statistics.runtime.reads_concurrent >= 5, "the server's machine reads off the apply thread");

    // The raw API: a secondary answers a read-index get itself, refuses a lease get naming
    // the primary, and an unknown consistency is an invalid argument.
    let address = format!("http://{}", cluster.servers[&secondaries[0]].client_addr());
    let mut raw = pb::kv_client::KvClient::connect(address).await.unwrap();
    let get = |consistency: i32| pb::GetRequest { key: "key".into(), consistency, ..Default::default() };
    let answer = raw.get(get(pb::ReadConsistency::ReadIndex.into())).await.unwrap().into_inner();
    assert_eq!((answer.found, &answer.value[..]), (true, &b"v9"[..]));
    let refusal = raw.get(get(pb::ReadConsistency::Lease.into())).await.unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::FailedPrecondition, "{refusal:?}");
    assert!(refusal.metadata().get(rsl_kv::PRIMARY_ADDRESS_METADATA).is_some());
    let refusal = raw.get(get(7)).await.unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal:?}");
    // In a stream, a get with its own consistency is served on its own.
    let op = pb::Op { id: 1, op: Some(pb::op::Op::Get(get(pb::ReadConsistency::ReadIndex.into()))) };
    let results = stream_batch(&cluster.servers[&secondaries[1]].client_addr().to_string(), vec![op]).await;
    match &results[&1] {
        pb::op_result::Result::Get(answer) => assert_eq!(&answer.value[..], b"v9"),
        other => panic!("a read-index get in a stream: {other:?}"),
    }
    cluster.shutdown().await;
}

/// Writes `k0`, then shuts down a secondary (the highest-numbered one): returns the primary
/// and the stopped replica, which misses everything written next.
async fn write_then_stop_a_secondary(cluster: &mut Cluster, client: &mut Client) -> (u64, u64) {
    client.put("k0", "v").await.unwrap();
    let primary = cluster.primary().await;
    let lagging = *cluster.servers.keys().rev().find(|&&n| n != primary).unwrap();
    cluster.servers.remove(&lagging).unwrap().shutdown().await;
    (primary, lagging)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_catches_up_from_a_checkpoint_fetched_over_the_replica_port() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning { checkpoint_interval_slots: Some(5), log_retain_slots: Some(2), ..fast_tuning() };
    let mut cluster = Cluster::start(dir.path(), tuning).await;
    let mut client = client(&cluster);
    let (primary, lagging) = write_then_stop_a_secondary(&mut cluster, &mut client).await;

    for i in 1..=40 {
        client.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let status = cluster.servers[&primary].ring().status().borrow().clone();
    assert!(status.log_start.0 > 5, "the primary truncated its log: {status:?}");

    cluster.restart(lagging).await;
    let statuses = cluster.converged(&mut client).await;
    assert_eq!(statuses.len(), 3);
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest && s.keys == 41), "{statuses:?}");
    let reported = statuses.iter().find(|s| s.node == lagging).unwrap();
    assert!(reported.checkpoints_installed >= 1 && reported.checkpoint > 5, "{reported:?}");
    let statistics = cluster.servers[&lagging].ring().statistics().await.unwrap();
    assert!(statistics.runtime.checkpoints_installed >= 1, "installed a fetched checkpoint: {statistics:?}");
    let mut served = 0;
    for (_, server) in cluster.servers.iter().filter(|(&node, _)| node != lagging) {
        served += server.ring().statistics().await.unwrap().runtime.checkpoints_served;
    }
    assert!(served >= 1, "a peer served the checkpoint");
    // The client port serves no checkpoints, to anyone: the transfer went over the replica port.
    let address = format!("http://{}", cluster.servers[&primary].client_addr());
    let mut raw =
        rsl::transport::proto::checkpoint_transfer_client::CheckpointTransferClient::connect(address)
            .await
            .unwrap();
    let asked = rsl::transport::proto::CheckpointFetch {
        ring: cluster.configs[&primary].ring.0,
        requester: lagging,
        to: primary,
        min_slot: 0,
    };
    let refused = raw.fetch(asked).await.expect_err("the client port must not serve checkpoints");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused}");
    // It serves fast reads of what it fetched.
    let mut one =
        Client::new([cluster.servers[&lagging].client_addr().to_string()], ClientOptions::default()).unwrap();
    assert_eq!(one.get_fast("k40", Some(client.last_slot())).await.unwrap().as_deref(), Some(&b"v40"[..]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_the_state_machine_on_the_ring_task_serve_and_checkpoint() {
    // `tuning.apply_on = "ring-task"`, as written in a config file.
    let written: ConfigFile = toml::from_str("[tuning]\napply_on = \"ring-task\"").unwrap();
    let apply_on = written.tuning.and_then(|tuning| tuning.apply_on);
    assert_eq!(apply_on, Some(rsl::ApplyOn::RingTask));
    let dir = tempfile::tempdir().unwrap();
    let tuning =
        Tuning { checkpoint_interval_slots: Some(5), log_retain_slots: Some(2), apply_on, ..fast_tuning() };
    let mut cluster = Cluster::start(dir.path(), tuning).await;
    for server in cluster.servers.values() {
        assert_eq!(server.ring().options().apply_on, rsl::ApplyOn::RingTask, "the key reached the ring");
    }
    let mut client = client(&cluster);
    let (_, lagging) = write_then_stop_a_secondary(&mut cluster, &mut client).await;
    // Writes and linearizable reads, while the remaining secondary saves checkpoints on its
    // ring task (every five slots).
    for i in 1..=40 {
        client.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
        assert_eq!(client.get(&format!("k{i}")).await.unwrap().as_deref(), Some(format!("v{i}").as_bytes()));
    }
    let mut saved = 0;
    for server in cluster.servers.values() {
        saved += server.ring().statistics().await.unwrap().runtime.checkpoints_saved;
    }
    assert!(saved >= 1, "a checkpoint was saved on a ring task");
    // The stopped replica comes back behind the log's start: it loads a fetched checkpoint,
    // on its ring task too.
    cluster.restart(lagging).await;
    let statuses = cluster.converged(&mut client).await;
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest && s.keys == 41), "{statuses:?}");
    let statistics = cluster.servers[&lagging].ring().statistics().await.unwrap();
    assert!(statistics.runtime.checkpoints_installed >= 1, "installed a fetched checkpoint: {statistics:?}");
    assert_eq!(cluster.servers[&lagging].ring().options().apply_on, rsl::ApplyOn::RingTask);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_told_to_speak_the_older_protocol_still_replicates_with_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let older = 3;
    let cluster = Cluster::start_each(dir.path(), |node| Tuning {
        protocol_version: (node == older).then_some(rsl::transport::PROTOCOL_VERSION_MIN),
        ..fast_tuning()
    })
    .await;
    let mut client = client(&cluster);
    for i in 0..20 {
        client.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let statuses = cluster.converged(&mut client).await;
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest && s.keys == 20), "{statuses:?}");
    // The older replica refused the newer ones' first streams (counted) and they spoke
    // down to it; nobody refused its version-1 frames.
    let refused = cluster.servers[&older].transport_statistics();
    assert!(refused.rejected_version >= 1 && refused.messages_received > 0, "{refused:?}");
    for (node, server) in cluster.servers.iter().filter(|(&node, _)| node != older) {
        let statistics = server.transport_statistics();
        assert_eq!(statistics.rejected_version, 0, "node {node}: {statistics:?}");
    }
    // A version this build does not speak is refused at start, naming the setting.
    let mut config = cluster.configs[&older].clone();
    config.tuning.protocol_version = Some(rsl::transport::PROTOCOL_VERSION + 1);
    config.data_dir = dir.path().join("refused");
    config.replica_listen = "127.0.0.1:0".parse().unwrap();
    config.client_listen = "127.0.0.1:0".parse().unwrap();
    let error = Server::start(config).await.expect_err("an unknown protocol version");
    assert!(error.to_string().contains("protocol_version"), "{error}");
    cluster.shutdown().await;
}

/// Runs the `rsl-kv` CLI with `args` off the async threads; returns (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rsl-kv")).args(&args).output().expect("rsl-kv runs")
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_saves_verifies_and_restores_a_snapshot_into_a_new_ring() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("old"), fast_tuning()).await;
    let mut client = client(&cluster);
    for i in 0..10 {
        client.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let status = cluster.converged(&mut client).await.remove(0);
    let file = dir.path().join("backup.snap");
    let path = file.to_str().unwrap().to_owned();
    let servers = format!("--servers={}", cluster.client_addresses().join(","));
    let (ok, out, err) = cli(vec![servers, "snapshot".into(), "save".into(), path.clone()]).await;
    assert!(ok && out.contains("saved") && out.contains("snapshot of ring 1"), "{out}{err}");
    let (ok, out, err) = cli(vec!["snapshot".into(), "verify".into(), path.clone()]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("state: 10 keys, digest {:#010x}", status.digest)), "{out}");
    cluster.shutdown().await;

    // A one-replica ring restored from it holds the same state.
    let data_dir = dir.path().join("new");
    let restore = ["snapshot", "restore", &path, "--data-dir", data_dir.to_str().unwrap(), "--node", "1"];
    let mut args: Vec<String> = restore.iter().map(|a| (*a).to_owned()).collect();
    args.push("--initial-members=1".into());
    let (ok, out, err) = cli(args.clone()).await;
    assert!(ok && out.contains("restored into"), "{out}{err}");
    let (ok, _, err) = cli(args).await;
    assert!(!ok && err.contains("refusing to bootstrap it again"), "a second restore: {err}");
    let listeners = Listeners {
        replica: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        client: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let config = ConfigFile {
        node: Some(1),
        members: Some(vec![format!("1={}", listeners.replica.local_addr().unwrap())]),
        clients: Some(vec![format!("1={}", listeners.client.local_addr().unwrap())]),
        data_dir: Some(data_dir),
        log: Some(LogBackend::File),
        tuning: Some(fast_tuning()),
        ..ConfigFile::default()
    }
    .resolve()
    .unwrap();
    let server = Server::start_on(config, listeners, RingOptions::default()).await.unwrap();
    let address = server.client_addr().to_string();
    let mut client =
        Client::new([address.clone()], ClientOptions { deadline: WAIT, ..ClientOptions::default() }).unwrap();
    assert_eq!(client.get("k9").await.unwrap().as_deref(), Some(&b"v9"[..]));
    let restored = client.status_of(&address).await.unwrap();
    assert_eq!((restored.digest, restored.keys), (status.digest, 10));
    server.shutdown().await;

    // A damaged file is refused, naming it.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let (ok, _, err) = cli(vec!["snapshot".into(), "verify".into(), path.clone()]).await;
    assert!(!ok && err.contains(&format!("{path} at byte")), "{err}");
}

/// Sends one batch on a fresh `Stream` to `address` and returns the results by id.
async fn stream_batch(address: &str, ops: Vec<pb::Op>) -> BTreeMap<u64, pb::op_result::Result> {
    let mut raw = pb::kv_client::KvClient::connect(format!("http://{address}")).await.unwrap();
    let expected = ops.len();
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(pb::OpBatch { ops, ..Default::default() }).await.unwrap();
    let mut answers =
        raw.stream(tokio_stream::wrappers::ReceiverStream::new(receiver)).await.unwrap().into_inner();
    let mut results = BTreeMap::new();
    while results.len() < expected {
        let batch = tokio::time::timeout(WAIT, answers.message()).await.expect("answers in time");
        for result in batch.unwrap().expect("the stream stays open").results {
            assert!(
                results.insert(result.id, result.result.expect("a result")).is_none(),
                "one answer per id"
            );
        }
    }
    drop(sender);
    results
}

fn put_op(id: u64, client: u64, key: &str, value: &'static str) -> pb::Op {
    let put = pb::PutRequest {
        id: Some(pb::WriteId { client, sequence: 1 }),
        key: key.into(),
        value: value.into(),
    };
    pb::Op { id, op: Some(pb::op::Op::Put(put)) }
}

fn get_op(id: u64, key: &str) -> pb::Op {
    pb::Op {
        id,
        op: Some(pb::op::Op::Get(pb::GetRequest {
            key: key.into(),
            fast: false,
            min_slot: 0,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_batch_is_answered_op_by_op_and_secondaries_name_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), fast_tuning()).await;
    let primary = cluster.primary().await;
    let at_primary = cluster.servers[&primary].client_addr().to_string();

    // Many writes of distinct sessions in one message, a read, and two malformed operations.
    let mut ops: Vec<pb::Op> = (0..100).map(|i| put_op(i, 1000 + i, &format!("s{i}"), "v")).collect();
    ops.push(pb::Op { id: 500, op: None });
    ops.push(put_op(501, 0, "zero-client", "v"));
    let results = stream_batch(&at_primary, ops).await;
    assert_eq!(results.len(), 102);
    let mut slots = Vec::new();
    for i in 0..100 {
        match &results[&i] {
            pb::op_result::Result::Put(put) => slots.push(put.slot),
            other => panic!("put {i}: {other:?}"),
        }
    }
    slots.sort_unstable();
    slots.dedup();
    assert!(slots.len() < 100, "writes submitted together share slots: {} slots", slots.len());
    for id in [500, 501] {
        match &results[&id] {
            pb::op_result::Result::Error(error) => {
                assert_eq!(error.code, tonic::Code::InvalidArgument as u32, "{error:?}")
            }
            other => panic!("operation {id}: {other:?}"),
        }
    }

    // A read in a later batch sees the writes; a write reusing a session's sequence is a
    // retry, answered with its first slot.
    let results = stream_batch(&at_primary, vec![get_op(1, "s7"), put_op(2, 1007, "s7", "other")]).await;
    match &results[&1] {
        pb::op_result::Result::Get(get) => assert!(get.found && get.value == "v"),
        other => panic!("get: {other:?}"),
    }
    match (&results[&2], &results) {
        (pb::op_result::Result::Put(put), _) => assert!(slots.contains(&put.slot)),
        (other, _) => panic!("retried put: {other:?}"),
    }

    // Several gets in one message are served by one ring read, each with its own answer;
    // a get with an empty key fails alone; a fast get (served on its own) sees the writes.
    let fast = pb::GetRequest {
        key: "s2".into(),
        fast: true,
        min_slot: slots[slots.len() - 1],
        ..Default::default()
    };
    let ops = vec![
        get_op(1, "s1"),
        get_op(2, "missing"),
        get_op(3, ""),
        get_op(4, "s99"),
        pb::Op { id: 5, op: Some(pb::op::Op::Get(fast)) },
    ];
    let results = stream_batch(&at_primary, ops).await;
    assert_eq!(results.len(), 5);
    for (id, found) in [(1, true), (2, false), (4, true), (5, true)] {
        match &results[&id] {
            pb::op_result::Result::Get(get) => {
                assert_eq!(get.found, found, "get {id}");
                assert_eq!(get.value, if found { "v" } else { "" }, "get {id}");
            }
            other => panic!("get {id}: {other:?}"),
        }
    }
    match &results[&3] {
        pb::op_result::Result::Error(error) => {
            assert_eq!(error.code, tonic::Code::InvalidArgument as u32, "{error:?}")
        }
        other => panic!("get with an empty key: {other:?}"),
    }

    // A secondary refuses every operation and names the primary.
    let secondary = *cluster.servers.keys().find(|&&n| n != primary).unwrap();
    let at_secondary = cluster.servers[&secondary].client_addr().to_string();
    let results = stream_batch(&at_secondary, vec![put_op(1, 77, "k", "v"), get_op(2, "k")]).await;
    for id in [1, 2] {
        match &results[&id] {
            pb::op_result::Result::Error(error) => {
                assert_eq!(error.code, tonic::Code::FailedPrecondition as u32, "{error:?}");
                assert_eq!(error.primary_node, primary);
                assert_eq!(error.primary_address, at_primary);
            }
            other => panic!("operation {id} at a secondary: {other:?}"),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_measures_streams_and_unary_calls() {
    use rsl_kv::load::{self, LoadCounters, LoadOptions, Protocol};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), fast_tuning()).await;
    cluster.primary().await;
    let wires =
        [(Protocol::Stream, Wire::Batch), (Protocol::Stream, Wire::PerOp), (Protocol::Unary, Wire::Batch)];
    for (protocol, wire) in wires {
        let options = LoadOptions {
            servers: cluster.client_addresses(),
            protocol,
            client: ClientOptions { wire, ..ClientOptions::default() },
            clients: 4,
            in_flight: 8,
            connections: 2,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            read_percent: 20,
            ..LoadOptions::default()
        };
        let counters = Arc::new(LoadCounters::default());
        let report = load::run(options, counters.clone()).await.unwrap();
        assert_eq!(report.errors, 0, "{protocol:?} {wire:?}: {:?}", report.error_samples);
        assert_eq!(report.wire, (protocol == Protocol::Stream).then_some(wire));
        assert!(report.writes > 0 && report.reads > 0, "{protocol:?}: {report:?}");
        assert_eq!(report.ops, report.writes + report.reads);
        assert!(counters.ops.load(std::sync::atomic::Ordering::Relaxed) >= report.ops);
        assert!(
            report.latency.p50_us <= report.latency.p99_us && report.latency.p99_us <= report.latency.max_us
        );
    }
    // Every write of the runs was executed once on every replica: they agree.
    let mut client = client(&cluster);
    let statuses = cluster.converged(&mut client).await;
    assert!(statuses.windows(2).all(|w| w[0].digest == w[1].digest && w[0].keys == w[1].keys));
    cluster.shutdown().await;
}

/// The same batches of writes through [`Client::write_batch`] on either wire, each on a
/// ring of its own: the same outcomes, the same state on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_batches_answer_alike_on_both_wires() {
    let value = |text: &'static str| bytes::Bytes::from_static(text.as_bytes());
    let batches = vec![
        vec![
            BatchWrite::Put { key: "a".into(), value: value("1") },
            BatchWrite::Put { key: "b".into(), value: value("2") },
            BatchWrite::Cas { key: "a".into(), expected: Some(value("1")), value: value("one") },
        ],
        vec![
            BatchWrite::Cas { key: "b".into(), expected: None, value: value("x") },
            BatchWrite::Delete { key: "b".into() },
            BatchWrite::Delete { key: "absent".into() },
            BatchWrite::Put { key: "ключ".into(), value: value("значение") },
        ],
    ];
    let mut seen = Vec::new();
    for wire in [Wire::Batch, Wire::PerOp] {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(dir.path(), fast_tuning()).await;
        cluster.primary().await;
        let options = ClientOptions { deadline: WAIT, wire, ..ClientOptions::default() };
        let mut client = Client::new(cluster.client_addresses(), options).unwrap();
        let mut outcomes = Vec::new();
        for batch in &batches {
            let answers = client.write_batch(batch).await.unwrap();
            assert_eq!(answers.len(), batch.len());
            assert!(answers.windows(2).all(|w| w[0].slot <= w[1].slot), "{answers:?}");
            outcomes.extend(answers.into_iter().map(|answer| answer.outcome));
        }
        // A bad write refuses its whole batch, which changes nothing.
        let bad = [
            BatchWrite::Put { key: "c".into(), value: value("3") },
            BatchWrite::Delete { key: String::new() },
        ];
        let refused = client.write_batch(&bad).await.unwrap_err();
        assert!(refused.to_string().contains("write 1"), "{wire:?}: {refused}");
        assert_eq!(client.get("c").await.unwrap(), None, "{wire:?}");
        let statuses = cluster.converged(&mut client).await;
        assert!(statuses.windows(2).all(|w| (w[0].digest, w[0].keys) == (w[1].digest, w[1].keys)));
        seen.push((outcomes, statuses[0].digest, statuses[0].keys));
        cluster.shutdown().await;
    }
    assert_eq!(seen[0], seen[1], "both wires answer alike and leave the same state");
    assert_eq!(seen[0].2, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_follows_a_failover_without_failing_operations() {
    use rsl_kv::load::{self, LoadCounters, LoadOptions, Protocol};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), fast_tuning()).await;
    let primary = cluster.primary().await;
    let options = LoadOptions {
        servers: cluster.client_addresses(),
        protocol: Protocol::Stream,
        clients: 4,
        in_flight: 4,
        connections: 1,
        duration: Duration::from_secs(4),
        read_percent: 20,
        client: ClientOptions { deadline: WAIT, ..ClientOptions::default() },
        ..LoadOptions::default()
    };
    let counters = Arc::new(LoadCounters::default());
    let run = tokio::spawn(load::run(options, counters.clone()));
    // Fail over once the load is under way: a counter the clients bump, polled.
    tokio::time::timeout(WAIT, async {
        while counters.ops.load(Ordering::Relaxed) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the load reached 200 operations");
    cluster.servers.remove(&primary).unwrap().shutdown().await;
    let at_failover = counters.ops.load(Ordering::Relaxed);
    let report = run.await.unwrap().unwrap();
    assert_eq!(
        report.errors, 0,
        "operations in flight at the failover are sent again: {:?}",
        report.error_samples
    );
    assert!(
        counters.ops.load(Ordering::Relaxed) > at_failover + 100,
        "the load went on at the new primary ({} ops at the failover, {} at the end)",
        at_failover,
        counters.ops.load(Ordering::Relaxed)
    );
    let new_primary = cluster.primary().await;
    assert_ne!(new_primary, primary);
    let mut client = client(&cluster);
    let statuses = cluster.converged(&mut client).await;
    assert!(statuses.windows(2).all(|w| w[0].digest == w[1].digest));
    cluster.shutdown().await;
}

/// A start that fails leaves nothing behind: a taken metrics port is refused before the
/// ring opens its data directory, and a refused bootstrap shuts the runtime and the
/// replica transport down, so the same addresses and directory start cleanly right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = ConfigFile {
        node: Some(1),
        members: Some(vec![format!("1={}", replica.local_addr().unwrap())]),
        clients: Some(vec![format!("1={}", client.local_addr().unwrap())]),
        data_dir: Some(dir.path().join("node-1")),
        log: Some(LogBackend::File),
        tuning: Some(fast_tuning()),
        ..ConfigFile::default()
    }
    .resolve()
    .expect("a valid config");
    let start = |config: ServerConfig| async move {
        let listeners = Listeners::bind(&config).await.expect("the addresses are free");
        Server::start_on(config, listeners, RingOptions::default()).await
    };

    let taken_metrics =
        ServerConfig { metrics_port: Some(taken.local_addr().unwrap().port()), ..config.clone() };
    let refused =
        Server::start_on(taken_metrics, Listeners { replica, client }, RingOptions::default()).await;
    let error = refused.expect_err("a taken metrics port is refused");
    assert!(error.to_string().contains("metrics"), "{error}");

    // Nothing was opened or left listening: the ring bootstraps here now.
    start(config.clone()).await.expect("start").shutdown().await;

    // A second bootstrap of the same directory is refused after the transport and the
    // runtime started; they go down with the refusal, so the node starts right after.
    let bootstrap_again = ServerConfig { start: rsl_kv::config::StartMode::Bootstrap, ..config.clone() };
    let error = start(bootstrap_again).await.expect_err("a second bootstrap is refused");
    assert!(error.to_string().to_lowercase().contains("bootstrap"), "{error}");
    start(config).await.expect("restart after the refusal").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_a_64_mib_value_replicates_to_every_server() {
    let dir = tempfile::tempdir().unwrap();
    // Three servers share this test's two runtime threads, which copy and decode 64 MiB
    // several times over: election delays of seconds, so that a heartbeat delayed by that
    // work does not elect anew.
    let tuning = Tuning {
        heartbeat_interval_ms: Some(50),
        election_delay_min_ms: Some(2000),
        election_delay_max_ms: Some(4000),
        ..Tuning::default()
    };
    let cluster = Cluster::start(dir.path(), tuning).await;
    // One attempt may take a while: 64 MiB crosses the network and is synced three times.
    let options = ClientOptions { deadline: WAIT, attempt_timeout: WAIT, ..ClientOptions::default() };
    let mut client = Client::new(cluster.client_addresses(), options).unwrap();
    client.put("before", "1").await.unwrap();
    let value: Vec<u8> = (0..rsl_kv::command::VALUE_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    let slot = client.put("large", value.clone()).await.unwrap();
    client.put("after", "2").await.unwrap();
    assert_eq!(client.get("large").await.unwrap().as_deref(), Some(&value[..]));
    for address in cluster.client_addresses() {
        let mut one =
            Client::new([address.clone()], ClientOptions { deadline: WAIT, ..ClientOptions::default() })
                .unwrap();
        let fetched = one.get_fast("large", Some(slot)).await.unwrap();
        assert!(fetched.as_deref() == Some(&value[..]), "the whole value at {address}");
    }
    // One byte more than the encoding takes is refused, naming the value.
    let error = client.put("larger", vec![0u8; rsl_kv::command::VALUE_BYTES_MAX + 1]).await.unwrap_err();
    assert!(error.to_string().contains("value"), "{error}");
}

/// Runs the `rsl-kv` command line against `cluster`: whether it succeeded, its output and
/// its errors.
async fn cli_on(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rsl-kv"));
    command.arg("--servers").arg(cluster.client_addresses().join(",")).arg("--timeout-ms=30000").args(args);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("rsl-kv runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_operates_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning { checkpoint_interval_slots: Some(10), log_retain_slots: Some(5), ..fast_tuning() };
    let cluster = Cluster::start(dir.path(), tuning).await;
    let mut client = client(&cluster);
    for i in 0..30 {
        client.put(&format!("key-{i}"), "value").await.unwrap();
    }
    cluster.converged(&mut client).await;
    let primary = cluster.primary().await;

    let (ok, out, err) = cli_on(&cluster, &["status"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("replicas, as primary node {primary} sees them:")), "{out}");
    assert!(out.contains("acknowledged") && out.contains("lag_slots") && out.contains("connected"), "{out}");
    assert_eq!(out.lines().filter(|line| line.trim_end().ends_with(" up")).count(), 2, "{out}");

    // A forced election on a chosen replica.
    let target = cluster.servers.keys().copied().find(|&n| n != primary).unwrap();
    let (ok, out, err) = cli_on(&cluster, &["promote", "--node", &target.to_string()]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("node {target} is primary"));
    assert_eq!(cluster.servers[&target].ring().status().borrow().role, Role::Primary);

    // Timing on every replica of the running ring; a bad one is refused naming the setting.
    let (ok, out, err) =
        cli_on(&cluster, &["timing", "--heartbeat-ms=25", "--election-min-ms=250", "--election-max-ms=500"])
            .await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().filter(|line| line.ends_with("timing changed")).count(), 3, "{out}");
    for server in cluster.servers.values() {
        assert_eq!(server.ring().timing().heartbeat_interval_ms, 25);
    }
    let (ok, out, _) =
        cli_on(&cluster, &["timing", "--heartbeat-ms=25", "--election-min-ms=30", "--election-max-ms=500"])
            .await;
    assert!(!ok && out.contains("election_delay_min_ms"), "{out}");

    // Re-seeding a replica from a named peer's checkpoint.
    let mut others = cluster.servers.keys().copied().filter(|&n| n != target);
    let (node, from) = (others.next().unwrap(), others.next().unwrap());
    let (ok, out, err) =
        cli_on(&cluster, &["reseed", "--node", &node.to_string(), "--from", &from.to_string()]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("node {node} re-seeded from node {from}'s checkpoint at slot ")),
        "{out}"
    );
    let statuses = cluster.converged(&mut client).await;
    assert!(
        statuses.windows(2).all(|w| (w[0].digest, w[0].keys) == (w[1].digest, w[1].keys)),
        "{statuses:#?}"
    );

    // The last write closes the ring; reads still work.
    let (ok, out, err) = cli_on(&cluster, &["put", "final", "x", "--last"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("the ring is closed"), "{out}");
    let (ok, _, err) = cli_on(&cluster, &["put", "after", "y"]).await;
    assert!(!ok && err.contains("the ring is closed: its last write was chosen at slot"), "{err}");
    let (ok, out, err) = cli_on(&cluster, &["get", "final"]).await;
    assert!(ok && out.trim() == "x", "{out}{err}");
    let (ok, out, _) = cli_on(&cluster, &["status"]).await;
    assert!(ok && out.contains("the ring is closed: its last write was chosen at slot"), "{out}");
    cluster.shutdown().await;
}

/// A replica that knows one contact (`join_via`, no address book) joins; `rsl-kv
/// reconfigure` adds it as a learner, waits for it, and promotes it, printing each step; its
/// addresses, asked of it, are chosen with the configuration, so every member learns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_knowing_one_contact_grows_the_ring_through_a_learner() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning { learner_promotion_lag_slots_max: Some(5), ..fast_tuning() };
    let mut cluster = Cluster::start(dir.path(), tuning.clone()).await;
    let mut client = client(&cluster);
    for i in 0..40 {
        client.put(&format!("key-{i}"), "value").await.unwrap();
    }
    let contact = cluster.configs[&1].client_listen.to_string();
    let replica = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (replica_address, client_address) =
        (replica.local_addr().unwrap().to_string(), client_socket.local_addr().unwrap().to_string());
    let config = ConfigFile {
        node: Some(4),
        join_via: Some(contact),
        replica_listen: Some(replica_address.clone()),
        client_listen: Some(client_address.clone()),
        data_dir: Some(dir.path().join("node-4")),
        log: Some(LogBackend::File),
        tuning: Some(tuning),
        ..ConfigFile::default()
    }
    .resolve()
    .expect("joining through a contact needs no address book");
    assert_eq!(config.members.len(), 1, "only its own address before it asks the contact");
    let listeners = Listeners { replica, client: client_socket };
    let server = Server::start_on(config.clone(), listeners, RingOptions::default()).await.expect("joins");
    cluster.configs.insert(4, config);
    cluster.servers.insert(4, server);
    let status = client.status_of(&client_address).await.unwrap();
    let book: Vec<u64> = status.members.iter().map(|m| m.node).collect();
    assert_eq!(book, vec![1, 2, 3, 4], "the contact's address book, and its own entry");
    assert!(!status.member && !status.learner);

    let (ok, out, err) = cli_on(&cluster, &["reconfigure", "1,2,3,4", "--new", &client_address]).await;
    assert!(ok, "reconfigure failed: {out}{err}");
    for step in
        ["node 4 at", "step 1: adding [4] as learners", "step 2: promoting [4]", "with members [1, 2, 3, 4]"]
    {
        assert!(out.contains(step), "{step:?} missing from:\n{out}");
    }
    client.put("after-growth", "1").await.unwrap();
    let statuses = cluster.converged(&mut client).await;
    for status in &statuses {
        assert_eq!(status.configuration_members, vec![1, 2, 3, 4], "node {}", status.node);
        assert!(status.configuration_learners.is_empty());
        let carried = status.configuration_addresses.iter().find(|m| m.node == 4).expect("node 4's address");
        assert_eq!(
            (carried.replica_address.as_str(), carried.client_address.as_str()),
            (&*replica_address, &*client_address)
        );
    }
    let mut at_four =
        Client::new([client_address], ClientOptions { deadline: WAIT, ..ClientOptions::default() }).unwrap();
    assert_eq!(at_four.get_fast("key-39", None).await.unwrap().as_deref(), Some(&b"value"[..]));
    // With node 4 primary, the others send clients there by the address the configuration
    // carries (none of them has it in its own `--clients`).
    cluster.servers[&4].ring().attempt_promotion().await.expect("node 4 takes over");
    client.put("at-the-new-primary", "1").await.expect("redirected to node 4");
    cluster.shutdown().await;
}
