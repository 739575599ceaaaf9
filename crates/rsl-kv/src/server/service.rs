//! [`KvService`]: what one replica's client API does with the ring, whichever RPC asks:
//! replicate writes (one at a time or in batches), read linearizably or fast, report
//! the replica's status and change the ring's configuration. The RPC handlers
//! (`api.rs`) and the stream batching (`stream.rs`) are written on top of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsl::{NodeId, ReplicateError, Role, Slot};
use tonic::Status;

use super::answers::{self, Redirects};
use crate::command::{self, Read, ReadBatch, ReadOutcome, Write, WriteOutcome, WriteResponse};
use crate::proto as pb;

/// How long a status call waits for the state machine's digest.
const DIGEST_WAIT: Duration = Duration::from_millis(500);

/// The client API of one replica.
#[derive(Debug, Clone)]
pub(super) struct KvService {
    node: NodeId,
    ring: rsl::Ring,
    members: Arc<BTreeMap<NodeId, String>>,
    clients: Arc<BTreeMap<NodeId, String>>,
    redirects: Redirects,
}

impl KvService {
    /// The client API of replica `node` of `ring`; `members` and `clients` are the
    /// replica and client addresses of the address book.
    pub(super) fn new(
        node: NodeId,
        ring: rsl::Ring,
        members: BTreeMap<NodeId, String>,
        clients: BTreeMap<NodeId, String>,
    ) -> KvService {
        let clients = Arc::new(clients);
        let redirects = Redirects::new(node, clients.clone()).with_ring(ring.clone());
        KvService { node, ring, members: Arc::new(members), redirects, clients }
    }

    /// This replica.
    pub(super) fn node(&self) -> NodeId {
        self.node
    }

    /// The ring replica.
    pub(super) fn ring(&self) -> &rsl::Ring {
        &self.ring
    }

    /// Where this replica sends clients it cannot serve.
    pub(super) fn redirects(&self) -> &Redirects {
        &self.redirects
    }

    /// Replicates a write and decodes the state machine's answer.
    pub(super) async fn write(&self, write: Write) -> Result<WriteResponse, Status> {
        write.validate().map_err(answers::invalid)?;
        let answer = self
            .ring
            .replicate(write.encode())
            .await
            .map_err(|error| self.redirects.replicate_error(error))?;
        let response = WriteResponse::decode(&answer).map_err(answers::undecodable)?;
        answers::write_outcome(write.id(), response)
    }

    /// Decodes the ring's answer to a [`WriteBatch`](command::WriteBatch) of `writes` writes: one answer each
    /// (still to be checked by [`answers::write_outcome`]).
    pub(super) fn batch_answer(
        &self,
        writes: usize,
        answer: Result<Bytes, ReplicateError>,
    ) -> Result<Vec<WriteResponse>, Status> {
        let answer = answer.map_err(|error| self.redirects.replicate_error(error))?;
        let responses = WriteResponse::decode_batch(&answer).map_err(answers::undecodable)?;
        if responses.len() == writes {
            return Ok(responses);
        }
        match responses.as_slice() {
            // The batch as a whole did not decode (a bug in this server: it encoded it).
            [WriteResponse { outcome: WriteOutcome::Malformed { reason }, .. }] => {
                Err(Status::internal(format!("the state machine refused a write batch: {reason}")))
            }
            _ => Err(Status::internal(format!(
                "the state machine answered {} writes of a batch of {writes}",
                responses.len()
            ))),
        }
    }

    /// Serves `reads`, a batch of `count` linearizable gets, with one ring read.
    pub(super) async fn read_batch(
        &self,
        reads: ReadBatch,
        count: usize,
    ) -> Result<Vec<ReadOutcome>, Status> {
        let answer = self.ring_read(reads.finish(), None).await?;
        let outcomes = ReadOutcome::decode_batch(&answer).map_err(answers::undecodable)?;
        match outcomes.as_slice() {
            _ if outcomes.len() == count => Ok(outcomes),
            [ReadOutcome::Malformed { reason }] => {
                Err(Status::internal(format!("the state machine refused a read batch: {reason}")))
            }
            _ => Err(Status::internal(format!(
                "the state machine answered {} reads of a batch of {count}",
                outcomes.len(),
            ))),
        }
    }

    /// Serves a get: linearizable (with the consistency it asks for), or fast at the slot it
    /// names.
    pub(super) async fn get(&self, request: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        command::check_key(&request.key).map_err(answers::invalid)?;
        let consistency = answers::read_consistency(request.consistency)?;
        let read = Read::Get { key: request.key }.encode();
        let answer = match request.fast {
            false => self
                .ring
                .read_with(read, consistency)
                .await
                .map_err(|error| self.redirects.read_error(error))?,
            true => self.ring_read(read, Some(Slot(request.min_slot))).await?,
        };
        match ReadOutcome::decode(&answer) {
            Ok(outcome) => answers::get_response(outcome),
            Err(error) => Err(answers::undecodable(error)),
        }
    }

    /// Reads through the ring: linearizable, or fast from this replica once it applied
    /// `fast`'s slot.
    async fn ring_read(&self, request: Bytes, fast: Option<Slot>) -> Result<Bytes, Status> {
        match fast {
            None => self.ring.read(request).await.map_err(|error| self.redirects.read_error(error)),
            Some(min_slot) => self.ring.read_fast(request, min_slot).await.map_err(answers::fast_read_error),
        }
    }

    /// This replica's view of the ring, with a digest of its state machine.
    pub(super) async fn status(&self) -> Result<pb::StatusResponse, Status> {
        let status = self.ring.status().borrow().clone();
        let digest =
            match self.ring.read_fast_within(Read::Digest.encode(), status.applied, DIGEST_WAIT).await {
                Ok(answer) => match ReadOutcome::decode(&answer) {
                    Ok(ReadOutcome::Digest(digest)) => digest,
                    _ => return Err(Status::internal("undecodable digest answer")),
                },
                Err(error) => return Err(Status::unavailable(format!("digest: {error}"))),
            };
        let members = self.address_book(&status.configuration).into_values().collect();
        let primary = status.primary.map_or(0, |p| p.0);
        let checkpoints_installed =
            self.ring.statistics().await.map_or(0, |statistics| statistics.runtime.checkpoints_installed);
        let replicas = self.replica_health().await;
        let (heartbeat_interval_ms, election_delay_min_ms, election_delay_max_ms) = self.timing();
        Ok(pb::StatusResponse {
            node: self.node.0,
            role: role_name(status.role).to_owned(),
            primary,
            primary_address: status
                .primary
                .and_then(|p| self.client_address(p, &status.configuration))
                .unwrap_or_default(),
            ballot_round: status.promised.round,
            ballot_node: status.promised.node.0,
            chosen: status.chosen.0,
            applied: status.applied.0,
            log_start: status.log_start.0,
            checkpoint: status.checkpoint.0,
            members,
            digest: digest.crc,
            keys: digest.keys,
            digest_slot: status.applied.0,
            checkpoints_installed,
            configuration: status.configuration.number,
            configuration_members: status.configuration.members.iter().map(|n| n.0).collect(),
            member: status.member,
            configuration_first_slot: status.configuration.first_slot.0,
            replicas,
            last_slot: status.last_slot.map_or(0, |slot| slot.0),
            heartbeat_interval_ms,
            election_delay_min_ms,
            election_delay_max_ms,
            configuration_learners: status.configuration.learners.iter().map(|n| n.0).collect(),
            learner: status.configuration.is_learner(status.node),
            configuration_addresses: status.configuration.addresses.iter().map(member_to_proto).collect(),
        })
    }

    /// Every node this server knows an address for: its own address book (`--members`,
    /// `--clients`), completed by the addresses `configuration` carries.
    fn address_book(&self, configuration: &rsl::Configuration) -> BTreeMap<NodeId, pb::Member> {
        let mut book: BTreeMap<NodeId, pb::Member> =
            configuration.addresses.iter().map(|a| (a.node, member_to_proto(a))).collect();
        for (node, address) in self.members.iter() {
            let member =
                book.entry(*node).or_insert_with(|| pb::Member { node: node.0, ..Default::default() });
            member.replica_address.clone_from(address);
            if let Some(client) = self.clients.get(node) {
                member.client_address.clone_from(client);
            }
        }
        book
    }

    /// Where `node` serves clients: this server's `--clients` entry, or the address the
    /// configuration carries.
    fn client_address(&self, node: NodeId, configuration: &rsl::Configuration) -> Option<String> {
        let carried = configuration.address(node).map(|a| a.client.clone()).filter(|c| !c.is_empty());
        self.clients.get(&node).cloned().or(carried)
    }

    /// A backup: the state machine's checkpoint read linearizably (so it holds every write
    /// acknowledged before the call) wrapped in a snapshot file ([`crate::snapshot`]).
    pub(super) async fn snapshot(&self) -> Result<Vec<u8>, Status> {
        let configuration = self.ring.status().borrow().configuration.clone();
        let answer = self
            .ring
            .read(Read::Checkpoint.encode())
            .await
            .map_err(|error| self.redirects.read_error(error))?;
        let (slot, data) = match ReadOutcome::decode(&answer) {
            Ok(ReadOutcome::Checkpoint { slot, data }) => (slot, data),
            Ok(ReadOutcome::Malformed { reason }) => return Err(Status::internal(reason)),
            Ok(_) => {
                return Err(Status::internal(
                    "the state machine answered a checkpoint read with another kind",
                ))
            }
            Err(error) => return Err(answers::undecodable(error)),
        };
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let info = crate::snapshot::SnapshotInfo {
            ring: self.ring.ring().0,
            slot,
            created_unix_ms,
            source: self.node.0,
            configuration: configuration.number,
            members: configuration.members.iter().map(|n| n.0).collect(),
        };
        Ok(crate::snapshot::encode(&info, &data))
    }

    /// Changes the ring's members to `members` and its learners to `learners`, with
    /// `addresses` for any of them; asking for the configuration already in force is
    /// answered at once (so retries are safe). Every node needs an address: given here,
    /// carried by the current configuration, or in this server's address book (which is
    /// then chosen with the configuration, so replicas that never had it learn it).
    pub(super) async fn reconfigure(
        &self,
        request: pb::ReconfigureRequest,
    ) -> Result<pb::ReconfigureResponse, Status> {
        let sorted = |nodes: &[u64]| {
            let mut nodes: Vec<NodeId> = nodes.iter().copied().map(NodeId).collect();
            nodes.sort_unstable();
            nodes
        };
        let (members, learners) = (sorted(&request.members), sorted(&request.learners));
        let current = self.ring.status().borrow().configuration.clone();
        let is_primary = self.ring.status().borrow().role == Role::Primary;
        if current.members == members && current.learners == learners && is_primary {
            return Ok(configuration_response(&current));
        }
        let given: BTreeMap<NodeId, pb::Member> =
            request.addresses.into_iter().map(|m| (NodeId(m.node), m)).collect();
        let book = self.address_book(&current);
        let mut addresses = Vec::new();
        for &node in members.iter().chain(&learners) {
            let Some(member) = given.get(&node).or_else(|| book.get(&node)) else {
                return Err(Status::invalid_argument(format!(
                    "node {} has no replica address: give one in the request, or in the primary's address book (--members)",
                    node.0
                )));
            };
            if member.replica_address.is_empty() {
                return Err(Status::invalid_argument(format!("node {}'s replica address is empty", node.0)));
            }
            addresses.push(rsl::MemberAddress {
                node,
                replica: member.replica_address.clone(),
                client: member.client_address.clone(),
            });
        }
        let change = rsl::MembershipChange::new(members, learners).with_addresses(addresses);
        match self.ring.change_configuration(change).await {
            Ok(configuration) => Ok(configuration_response(&configuration)),
            Err(error) => Err(self.redirects.change_error(error)),
        }
    }
}

fn member_to_proto(address: &rsl::MemberAddress) -> pb::Member {
    pb::Member {
        node: address.node.0,
        replica_address: address.replica.clone(),
        client_address: address.client.clone(),
    }
}

fn configuration_response(configuration: &rsl::Configuration) -> pb::ReconfigureResponse {
    pb::ReconfigureResponse {
        configuration: configuration.number,
        members: configuration.members.iter().map(|n| n.0).collect(),
        first_slot: configuration.first_slot.0,
        learners: configuration.learners.iter().map(|n| n.0).collect(),
        addresses: configuration.addresses.iter().map(member_to_proto).collect(),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
        Role::Candidate => "candidate",
    }
}
