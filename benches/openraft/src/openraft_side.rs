//! openraft's side, set up the way its `benchmarks/minimal` is: three members in one
//! process, an in-memory log (a map of entries per member), a state machine that keeps
//! only the last applied log id and the membership, a network of direct function calls to
//! the target member's `Raft`, empty requests and responses, and the benchmark's
//! configuration (election timeout 200–2000 ms, purge batch 1024, payload of up to 1024
//! entries per append). Written here against openraft's public API.
//!
//! Snapshots carry no data: the state machine's whole state is in the snapshot's
//! metadata (its last log id and membership), so installing one restores it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug};
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, Raft, RaftLogId, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};

use crate::drive::Leader;

/// An empty request.
#[derive(Debug, Clone, Default)]
pub struct Request;

/// An empty response.
#[derive(Debug, Clone, Default)]
pub struct Response;

openraft::declare_raft_types!(
    /// The benchmark's types: u64 node ids, no node addresses, empty requests and responses.
    pub Types:
        D = Request,
        R = Response,
        Node = (),
);

type NodeId = u64;
type Member = Raft<Types>;

/// Longest wait for an election or for every member to apply a log index.
const WAIT: Duration = Duration::from_secs(30);

/// Locks `mutex`; a poisoned lock (a panic elsewhere while holding it) is taken as is, as
/// the data behind it is only ever replaced whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One member's log: entries by index, the vote, the last purged log id.
#[derive(Debug, Default)]
struct LogData {
    entries: BTreeMap<u64, Entry<Types>>,
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

/// One member's in-memory log store; clones share it.
#[derive(Debug, Clone, Default)]
pub struct LogStore(Arc<Mutex<LogData>>);

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Types>>, StorageError<NodeId>> {
        Ok(lock(&self.0).entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<NodeId>> {
        let log = lock(&self.0);
        let last = log.entries.values().next_back().map(|entry| *entry.get_log_id()).or(log.last_purged);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.0).vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Types>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Types>> + OptionalSend,
    {
        lock(&self.0).entries.extend(entries.into_iter().map(|entry| (entry.get_log_id().index, entry)));
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        lock(&self.0).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = lock(&self.0);
        log.last_purged = Some(log_id);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

/// The state machine's whole state.
#[derive(Debug, Default, Clone)]
struct MachineData {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, ()>,
    snapshot: Option<SnapshotMeta<NodeId, ()>>,
}

/// One member's state machine; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    data: Arc<Mutex<MachineData>>,
    snapshots_built: Arc<AtomicU64>,
}

fn empty_snapshot(meta: SnapshotMeta<NodeId, ()>) -> Snapshot<Types> {
    Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) }
}

impl RaftSnapshotBuilder<Types> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<NodeId>> {
        let number = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let mut data = lock(&self.data);
        let index = data.last_applied.map_or(0, |log_id| log_id.index);
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: format!("{index}-{number}"),
        };
        data.snapshot = Some(meta.clone());
        Ok(empty_snapshot(meta))
    }
}

impl RaftStateMachine<Types> for Machine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, ()>), StorageError<NodeId>> {
        let data = lock(&self.data);
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Types>> + OptionalSend,
    {
        let mut data = lock(&self.data);
        let mut responses = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            if let EntryPayload::Membership(membership) = entry.payload {
                data.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            responses.push(Response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ()>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut data = lock(&self.data);
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        data.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<NodeId>> {
        Ok(lock(&self.data).snapshot.clone().map(empty_snapshot))
    }
}

/// The in-process network: every member's `Raft` by node id.
#[derive(Clone, Default)]
pub struct Router(Arc<Mutex<BTreeMap<NodeId, Member>>>);

// openraft's `Raft` has no `Debug`: the handles below name their members by id.
impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("members", &lock(&self.0).keys().collect::<Vec<_>>()).finish()
    }
}

impl RaftNetworkFactory<Types> for Router {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &()) -> Link {
        // openraft asks for links only to members it was told of, all in the table by then.
        let raft = lock(&self.0).get(&target).cloned();
        Link { target, raft }
    }
}

/// A link to one member: each RPC is a direct call of its `Raft`.
pub struct Link {
    target: NodeId,
    raft: Option<Member>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Link {
    /// The error of an RPC to a member the router does not know.
    fn unknown<E: std::error::Error>(&self) -> RPCError<NodeId, (), E> {
        let error = std::io::Error::other(format!("member {} is not in the router", self.target));
        RPCError::Unreachable(openraft::error::Unreachable::new(&error))
    }
}

impl RaftNetwork<Types> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, (), RaftError<NodeId>>> {
        let Some(raft) = &self.raft else { return Err(self.unknown()) };
        raft.append_entries(rpc).await.map_err(|error| RemoteError::new(self.target, error).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Types>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, (), RaftError<NodeId, InstallSnapshotError>>>
    {
        let Some(raft) = &self.raft else { return Err(self.unknown()) };
        raft.install_snapshot(rpc).await.map_err(|error| RemoteError::new(self.target, error).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, (), RaftError<NodeId>>> {
        let Some(raft) = &self.raft else { return Err(self.unknown()) };
        raft.vote(rpc).await.map_err(|error| RemoteError::new(self.target, error).into())
    }
}

/// The leader's handle, as the client tasks use it.
#[derive(Clone)]
pub struct LeaderHandle(Member);

impl fmt::Debug for LeaderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LeaderHandle").field(&self.0.metrics().borrow().id).finish()
    }
}

impl Leader for LeaderHandle {
    async fn submit(&self) -> Result<()> {
        self.0.client_write(Request).await.map_err(|error| anyhow!("openraft client_write: {error}"))?;
        Ok(())
    }
}

/// Three running members (0, 1, 2); shut down with [`Cluster::shutdown`].
pub struct Cluster {
    members: Vec<Member>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("members", &self.members.len()).finish()
    }
}

impl Cluster {
    /// Starts three members on the calling tokio runtime, initializes the cluster at
    /// member 0 and waits until every member has applied the initial membership.
    pub async fn start() -> Result<Cluster> {
        let config = openraft::Config {
            election_timeout_min: 200,
            election_timeout_max: 2000,
            purge_batch_size: 1024,
            max_payload_entries: 1024,
            ..Default::default()
        }
        .validate()?;
        let config = Arc::new(config);
        let router = Router::default();
        let ids: BTreeSet<NodeId> = (0..3).collect();
        let mut members = Vec::new();
        for &id in &ids {
            let raft = Raft::new(id, config.clone(), router.clone(), LogStore::default(), Machine::default())
                .await
                .with_context(|| format!("starting openraft member {id}"))?;
            members.push(raft);
        }
        lock(&router.0).extend(ids.iter().copied().zip(members.iter().cloned()));
        members[0]
            .initialize(ids)
            .await
            .map_err(|error| anyhow!("initializing the openraft cluster: {error}"))?;
        let cluster = Cluster { members };
        // Log index 1 is the initial membership.
        cluster.applied_everywhere(1).await?;
        Ok(cluster)
    }

    /// The leader, once one is known.
    pub async fn leader(&self) -> Result<LeaderHandle> {
        let metrics = self.members[0]
            .wait(Some(WAIT))
            .metrics(|metrics| metrics.current_leader.is_some(), "a leader")
            .await
            .map_err(|error| anyhow!("no openraft leader within {WAIT:?}: {error}"))?;
        let leader = metrics.current_leader.and_then(|id| self.members.get(id as usize));
        leader.cloned().map(LeaderHandle).ok_or_else(|| anyhow!("the openraft leader is not a member"))
    }

    /// The leader's last applied log index.
    pub fn applied_at(&self, leader: &LeaderHandle) -> u64 {
        leader.0.metrics().borrow().last_applied.map_or(0, |log_id| log_id.index)
    }

    /// Waits until every member has applied at least log index `index` (within 30 s).
    pub async fn applied_everywhere(&self, index: u64) -> Result<()> {
        for (id, member) in self.members.iter().enumerate() {
            member
                .wait(Some(WAIT))
                .applied_index_at_least(Some(index), "apply")
                .await
                .map_err(|error| anyhow!("openraft member {id} did not apply index {index}: {error}"))?;
        }
        Ok(())
    }

    /// Stops every member.
    pub async fn shutdown(self) {
        for member in &self.members {
            let _ = member.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::closed_loop;

    #[test]
    fn every_request_is_answered_and_applied_by_every_member() {
        let (servers, clients) = (crate::runtime("member", 2).unwrap(), crate::runtime("client", 1).unwrap());
        let cluster = servers.block_on(Cluster::start()).unwrap();
        let leader = servers.block_on(cluster.leader()).unwrap();
        let before = cluster.applied_at(&leader);
        let figures = closed_loop(&clients, &leader, 4, 25).unwrap();
        assert_eq!((figures.requests, figures.errors), (100, 0), "{figures:?}");
        assert!(figures.ops_per_sec > 0.0 && figures.p50_us > 0.0 && figures.p99_us >= figures.p50_us);
        // One log entry per request, on every member (the metrics that tell it are
        // published after the answers, so wait for them).
        servers.block_on(cluster.applied_everywhere(before + 100)).unwrap();
        servers.block_on(cluster.shutdown());
    }
}
