//! Large requests through the facade, on an in-memory network: a 64 MiB request replicates
//! and executes identically everywhere while small requests go on, one over the limit is
//! refused naming it, and a replica that was down catches up to it by fetching slots and by
//! installing a checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rsl::{
    Bytes, Config, LocalCheckpointNetwork, MemoryNetwork, MemoryStorage, NodeId, ReplicateError, Ring,
    RingId, Role, Runtime, RuntimeOptions, Slot,
};

mod requests;
use requests::{answer, expected, large, small, Requests, LARGE};

const RING: RingId = RingId(1);
const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    runtimes: BTreeMap<NodeId, Runtime>,
    rings: BTreeMap<NodeId, Ring>,
    disks: BTreeMap<NodeId, MemoryStorage>,
    config: Box<dyn Fn(NodeId) -> Config + Send>,
}

impl Cluster {
    async fn new(adjust: impl Fn(&mut Config) + Send + 'static) -> Cluster {
        let network = MemoryNetwork::new(11);
        let checkpoints = LocalCheckpointNetwork::new();
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let config = {
            let members = members.clone();
            move |node: NodeId| {
                let mut config = Config::new(RING, node, members.clone());
                config.heartbeat_interval_ms = 20;
                config.election_delay_min_ms = 200;
                config.election_delay_max_ms = 400;
                adjust(&mut config);
                config
            }
        };
        let mut cluster = Cluster {
            runtimes: BTreeMap::new(),
            rings: BTreeMap::new(),
            disks: BTreeMap::new(),
            config: Box::new(config),
        };
        for &node in &members {
            let (endpoint, inbound) = network.endpoint(node).unwrap();
            let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).unwrap();
            checkpoints.join(&runtime);
            cluster.runtimes.insert(node, runtime);
            cluster.disks.insert(node, MemoryStorage::new());
            cluster.start(node).await;
        }
        cluster
    }

    async fn start(&mut self, node: NodeId) {
        let ring = Ring::builder((self.config)(node))
            .state_machine(Requests::default())
            .storage(self.disks[&node].clone())
            .runtime(&self.runtimes[&node])
            .start()
            .await
            .expect("start");
        self.rings.insert(node, ring);
    }

    async fn stop(&mut self, node: NodeId) {
        self.rings.remove(&node).expect("running").shutdown().await;
    }

    async fn primary(&self) -> &Ring {
        let wait = async {
            loop {
                if let Some(ring) = self.rings.values().find(|r| r.status().borrow().role == Role::Primary) {
                    return ring;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("a primary")
    }

    /// Replicates at the primary, following refusals that certainly did not take effect.
    async fn replicate(&self, request: Vec<u8>) -> Bytes {
        let attempt = async {
            loop {
                match self.primary().await.replicate(request.clone()).await {
                    Ok(response) => return response,
                    Err(ReplicateError::NotPrimary { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(error) => panic!("replicate: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, attempt).await.expect("replicated")
    }

    /// Every live replica's requests once it applied what the primary has.
    async fn states(&self) -> Vec<Vec<Bytes>> {
        let chosen = self.primary().await.status().borrow().chosen;
        let mut states = Vec::new();
        for ring in self.rings.values() {
            let mut status = ring.status();
            tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= chosen)).await.unwrap().unwrap();
            let answers = ring.read_fast(Vec::new(), chosen).await.unwrap();
            states.push(answers.chunks(16).map(Bytes::copy_from_slice).collect());
        }
        states
    }

    async fn shutdown(self) {
        for runtime in self.runtimes.values() {
            runtime.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_request_replicates_everywhere_while_small_requests_go_on() {
    let cluster = Cluster::new(|_| {}).await;
    let config = (cluster.config)(NodeId(1));
    assert_eq!(
        (config.request_bytes_max, config.pipeline_depth, config.batch_bytes_max),
        (64 << 20, 64, 16 << 10)
    );
    cluster.replicate(small(0)).await;
    let value = large(1);
    let primary = cluster.primary().await;
    let (large_answer, smalls) = tokio::join!(primary.replicate(value.clone()), async {
        let mut answers = Vec::new();
        for n in 1..=40 {
            answers.push(primary.replicate(small(n)).await.expect("a small request"));
        }
        answers
    });
    assert_eq!(large_answer.expect("the large request"), answer(&value));
    assert_eq!(smalls.len(), 40);
    let states = cluster.states().await;
    let mut executed = vec![small(0), value];
    executed.extend((1..=40).map(small));
    for state in &states {
        assert_eq!(state.len(), 42);
        assert_eq!(state[0], answer(&small(0)));
        let mut sorted = state.clone();
        sorted.sort();
        let mut wanted = expected(&executed);
        wanted.sort();
        assert_eq!(sorted, wanted, "every request executed once, the large one whole");
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "identical on every replica");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_limit_is_refused_naming_it() {
    let cluster = Cluster::new(|_| {}).await;
    let primary = cluster.primary().await;
    let error = primary.replicate(vec![7u8; LARGE + 1]).await.expect_err("over the limit");
    assert_eq!(error, ReplicateError::TooLarge { bytes: LARGE as u64 + 1, max: LARGE as u64 });
    assert!(error.to_string().contains("request_bytes_max"), "{error}");
    // Exactly the limit goes through, and the ring is unaffected.
    let value = vec![9u8; LARGE];
    assert_eq!(cluster.replicate(value.clone()).await, answer(&value));
    assert_eq!(cluster.replicate(small(1)).await, answer(&small(1)));
    cluster.shutdown().await;
}

/// Replica 3 is down while a large request and others are chosen; restarted, it catches up,
/// by fetching the slots (`checkpoints` false) or by installing a checkpoint the others
/// took after truncating their logs (`checkpoints` true).
async fn a_replica_catches_up_to_a_large_value(checkpoints: bool) {
    let mut cluster = Cluster::new(move |config| {
        if checkpoints {
            config.checkpoint_interval_slots = 4;
            config.log_retain_slots = 1;
        }
    })
    .await;
    let late = NodeId(3);
    cluster.replicate(small(0)).await;
    // Make sure the late replica is not the primary before stopping it.
    while cluster.primary().await.node() == late {
        cluster.primary().await.relinquish_primary(None).await.ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop(late).await;
    let value = large(3);
    let mut executed = vec![small(0)];
    assert_eq!(cluster.replicate(value.clone()).await, answer(&value));
    executed.push(value);
    for n in 1..=12 {
        cluster.replicate(small(n)).await;
        executed.push(small(n));
    }
    if checkpoints {
        // The others truncated their logs past the large value's slot.
        let primary = cluster.primary().await;
        let mut status = primary.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.log_start > Slot(3))).await.unwrap().unwrap();
    }
    cluster.start(late).await;
    let states = cluster.states().await;
    assert_eq!(states.len(), 3);
    for state in &states {
        assert_eq!(state, &expected(&executed));
    }
    let status = cluster.rings[&late].status().borrow().clone();
    if checkpoints {
        assert!(status.checkpoint >= Slot(3), "caught up from a checkpoint: {status:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fetches_a_large_value_it_missed() {
    a_replica_catches_up_to_a_large_value(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_installs_a_checkpoint_holding_a_large_value_it_missed() {
    a_replica_catches_up_to_a_large_value(true).await;
}
