//! rsl's side: three rings in one process through the facade a user gets (`rsl::Ring`,
//! one `rsl::Runtime` per node over the in-memory network, memory logs, the default
//! `Config`), an empty state machine, and empty requests sent with `Ring::replicate` to the
//! primary.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rsl::{
    Bytes, Config, LocalCheckpointNetwork, MemoryNetwork, MemoryStorage, NodeId, Ring, RingId, Role, Runtime,
    RuntimeOptions, Slot, StateMachine,
};

use crate::drive::Leader;

/// Longest wait for a primary after start.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A state machine that does nothing and answers nothing: what openraft's benchmark
/// applies too, so both sides measure the replication path alone.
#[derive(Debug, Default)]
struct Empty;

impl StateMachine for Empty {
    fn execute(&mut self, _slot: Slot, _request: &[u8]) -> Bytes {
        Bytes::new()
    }

    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::new()
    }

    fn save_checkpoint(&self, _slot: Slot, _writer: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn load_checkpoint(&mut self, _slot: Slot, _reader: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// Three running rings; shut down with [`Cluster::shutdown`].
#[derive(Debug)]
pub struct Cluster {
    runtimes: Vec<Runtime>,
    rings: Vec<Ring>,
}

/// The primary's handle, as the client tasks use it.
#[derive(Debug, Clone)]
pub struct Primary(Ring);

impl Leader for Primary {
    async fn submit(&self) -> Result<()> {
        self.0.replicate(Bytes::new()).await?;
        Ok(())
    }
}

impl Primary {
    /// Slots this primary has learnt chosen, to tell how many requests shared a slot.
    pub async fn slots_chosen(&self) -> u64 {
        self.0.statistics().await.map_or(0, |statistics| statistics.core.slots_chosen)
    }
}

impl Cluster {
    /// Starts three rings (nodes 1, 2, 3) on the calling tokio runtime and waits until one
    /// of them is primary.
    pub async fn start() -> Result<Cluster> {
        let network = MemoryNetwork::new(1);
        let checkpoints = LocalCheckpointNetwork::new();
        let members = vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut cluster = Cluster { runtimes: Vec::new(), rings: Vec::new() };
        for &node in &members {
            let (endpoint, inbound) = network.endpoint(node).context("attaching to the in-memory network")?;
            let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default())?;
            checkpoints.join(&runtime);
            let ring = Ring::builder(Config::new(RingId(1), node, members.clone()))
                .state_machine(Empty)
                .storage(MemoryStorage::new())
                .runtime(&runtime)
                .start()
                .await
                .with_context(|| format!("starting the ring on node {}", node.0))?;
            cluster.runtimes.push(runtime);
            cluster.rings.push(ring);
        }
        Ok(cluster)
    }

    /// The primary, once one is elected (within 30 s).
    pub async fn primary(&self) -> Result<Primary> {
        let elected = tokio::time::timeout(ELECTION_TIMEOUT, async {
            loop {
                for ring in &self.rings {
                    if ring.status().borrow().role == Role::Primary {
                        return ring.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        match elected {
            Ok(ring) => Ok(Primary(ring)),
            Err(_) => bail!("no rsl ring became primary within {ELECTION_TIMEOUT:?}"),
        }
    }

    /// The slot every ring has applied up to, once all three agree (within 30 s), so a
    /// run is checked to have reached every replica.
    pub async fn applied_everywhere(&self) -> Result<Slot> {
        let agreed = tokio::time::timeout(ELECTION_TIMEOUT, async {
            loop {
                let applied: Vec<Slot> =
                    self.rings.iter().map(|ring| ring.status().borrow().applied).collect();
                let chosen = self.rings.iter().map(|ring| ring.status().borrow().chosen).max();
                if applied.iter().all(|slot| Some(*slot) == chosen) {
                    return applied[0];
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        agreed.map_err(|_| {
            anyhow::anyhow!("the rsl rings did not all apply every chosen slot within {ELECTION_TIMEOUT:?}")
        })
    }

    /// Stops every ring and runtime.
    pub async fn shutdown(self) {
        drop(self.rings);
        for runtime in &self.runtimes {
            runtime.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::closed_loop;

    #[test]
    fn every_request_is_answered_and_reaches_every_ring() {
        let (servers, clients) = (crate::runtime("member", 2).unwrap(), crate::runtime("client", 1).unwrap());
        let cluster = servers.block_on(Cluster::start()).unwrap();
        let primary = servers.block_on(cluster.primary()).unwrap();
        let before = servers.block_on(cluster.applied_everywhere()).unwrap();
        let figures = closed_loop(&clients, &primary, 4, 25).unwrap();
        assert_eq!((figures.requests, figures.errors), (100, 0), "{figures:?}");
        assert!(figures.ops_per_sec > 0.0 && figures.p50_us > 0.0 && figures.p99_us >= figures.p50_us);
        // Each request got a slot of its own or shared one; every ring applied them all.
        let after = servers.block_on(cluster.applied_everywhere()).unwrap();
        assert!(after.0 > before.0, "applied {before:?} -> {after:?}");
        servers.block_on(cluster.shutdown());
    }
}
