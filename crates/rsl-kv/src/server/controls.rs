//! The operator controls of the client API (admin role; see `guard.rs`): a forced
//! election on the answering replica, its timing, re-seeding it from a peer's checkpoint,
//! a put alone in its slot (and the last one the ring accepts), and the replica health
//! that `Status` reports. Each is a thin layer over the ring's control of the same name.

use std::time::Duration;

use rsl::{NodeId, PromotionError, ReplicaHealth, ReseedError, Timing, TimingError};
use tonic::Status;

use super::answers;
use super::service::KvService;
use crate::command::Write;
use crate::proto as pb;

impl KvService {
    /// Makes this replica primary now.
    pub(super) async fn promote(&self) -> Result<pb::PromoteResponse, Status> {
        match self.ring().attempt_promotion().await {
            Ok(()) => Ok(pb::PromoteResponse { node: self.node().0 }),
            Err(error @ PromotionError::Refused(_)) => Err(Status::failed_precondition(error.to_string())),
            Err(error @ PromotionError::NotElected { .. }) => {
                Err(Status::deadline_exceeded(error.to_string()))
            }
            Err(error @ PromotionError::Shutdown { .. }) => Err(Status::unavailable(error.to_string())),
        }
    }

    /// Changes this replica's election and heartbeat timing.
    pub(super) async fn change_timing(
        &self,
        request: pb::ChangeTimingRequest,
    ) -> Result<pb::ChangeTimingResponse, Status> {
        let timing = Timing {
            heartbeat_interval_ms: request.heartbeat_interval_ms,
            election_delay_min_ms: request.election_delay_min_ms,
            election_delay_max_ms: request.election_delay_max_ms,
        };
        match self.ring().change_timing(timing).await {
            Ok(()) => Ok(pb::ChangeTimingResponse {}),
            Err(error @ TimingError::Invalid(_)) => Err(Status::invalid_argument(error.to_string())),
            Err(error @ TimingError::Shutdown { .. }) => Err(Status::unavailable(error.to_string())),
        }
    }

    /// Re-seeds this replica's state from `from`'s checkpoint.
    pub(super) async fn reseed(&self, from: u64) -> Result<pb::ReseedResponse, Status> {
        match self.ring().reseed_from(NodeId(from)).await {
            Ok(slot) => Ok(pb::ReseedResponse { slot: slot.0 }),
            Err(error @ ReseedError::Refused(_)) => Err(Status::failed_precondition(error.to_string())),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    /// A put alone in its slot; with `last`, the last write the ring accepts.
    pub(super) async fn exclusive(
        &self,
        request: pb::ExclusiveRequest,
    ) -> Result<pb::ExclusiveResponse, Status> {
        let put = request.put.ok_or_else(|| Status::invalid_argument("put: missing"))?;
        let write = Write::Put { id: answers::write_id(put.id)?, key: put.key, value: put.value };
        write.validate().map_err(answers::invalid)?;
        let answer = self
            .ring()
            .replicate_exclusive(write.encode(), request.last)
            .await
            .map_err(|error| self.redirects().replicate_error(error))?;
        let response = crate::command::WriteResponse::decode(&answer).map_err(answers::undecodable)?;
        let response = answers::write_outcome(write.id(), response)?;
        Ok(pb::ExclusiveResponse { slot: response.slot })
    }

    /// Every replica's health as this one sees it, for `Status`.
    pub(super) async fn replica_health(&self) -> Vec<pb::ReplicaHealth> {
        self.ring().replicas().await.iter().map(health_to_proto).collect()
    }

    /// This replica's timing in force, for `Status`: heartbeat, election delay min, max.
    pub(super) fn timing(&self) -> (u64, u64, u64) {
        let timing = self.ring().timing();
        (timing.heartbeat_interval_ms, timing.election_delay_min_ms, timing.election_delay_max_ms)
    }
}

fn health_to_proto(replica: &ReplicaHealth) -> pb::ReplicaHealth {
    let millis = |duration: Duration| duration.as_millis() as u64;
    pb::ReplicaHealth {
        node: replica.node.0,
        is_self: replica.is_self,
        is_primary: replica.is_primary,
        measured_by_primary: replica.measured_by_primary,
        acknowledged: replica.acknowledged.map(|slot| slot.0),
        holds: replica.holds.map(|slot| slot.0),
        lag_slots: replica.lag_slots,
        lag_ms: replica.lag.map(millis),
        last_heard_ms: replica.last_heard.map(millis),
        connected: replica.connected,
        is_learner: replica.is_learner,
    }
}
