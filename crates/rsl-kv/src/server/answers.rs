//! What the client API answers: the ring's errors as gRPC status codes (a refusal for
//! not being primary names the primary, so clients redirect), and the state machine's
//! outcomes as protobuf responses, or as the statuses they stand for.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rsl::core::ChangeError;
use rsl::{ChangeConfigurationError, FastReadError, NodeId, ReadConsistency, ReadError, ReplicateError};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::command::{DecodeError, ReadOutcome, WriteId, WriteOutcome, WriteResponse};
use crate::proto as pb;
use crate::{PRIMARY_ADDRESS_METADATA, PRIMARY_NODE_METADATA, RING_CLOSED_METADATA};

/// Where this replica sends clients it cannot serve: itself, and the client address of
/// every member.
#[derive(Debug, Clone)]
pub(super) struct Redirects {
    node: NodeId,
    clients: Arc<BTreeMap<NodeId, String>>,
}

impl Redirects {
    pub(super) fn new(node: NodeId, clients: Arc<BTreeMap<NodeId, String>>) -> Redirects {
        Redirects { node, clients }
    }

    /// The refusal of a replica that is not the primary, naming the primary if known.
    pub(super) fn not_primary(&self, hint: Option<NodeId>, what: &str) -> Status {
        match hint {
            // This replica believes it is (or is about to be) primary but cannot serve yet:
            // the caller should retry here shortly.
            Some(primary) if primary == self.node => {
                Status::unavailable(format!("{what}: primary {} is not ready yet; retry", self.node.0))
            }
            Some(primary) => {
                let mut metadata = MetadataMap::new();
                metadata.insert(PRIMARY_NODE_METADATA, MetadataValue::from(primary.0));
                let address = self.clients.get(&primary);
                if let Some(value) = address.and_then(|a| MetadataValue::try_from(a.as_str()).ok()) {
                    metadata.insert(PRIMARY_ADDRESS_METADATA, value);
                }
                let message = match address {
                    Some(address) => format!("not primary; the primary is node {} at {address}", primary.0),
                    None => format!(
                        "not primary; the primary is node {} (no client address configured)",
                        primary.0
                    ),
                };
                Status::with_metadata(Code::FailedPrecondition, message, metadata)
            }
            None => Status::with_metadata(
                Code::FailedPrecondition,
                "not primary; no primary is known yet",
                MetadataMap::new(),
            ),
        }
    }

    /// The status of a write the ring refused or could not finish.
    pub(super) fn replicate_error(&self, error: ReplicateError) -> Status {
        match error {
            ReplicateError::NotPrimary { hint } => self.not_primary(hint, "write refused"),
            ReplicateError::TooLarge { .. } => Status::invalid_argument(error.to_string()),
            ReplicateError::Busy { .. } | ReplicateError::LargeBusy { .. } => {
                Status::resource_exhausted(error.to_string())
            }
            ReplicateError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
            ReplicateError::OutcomeUnknown { .. } | ReplicateError::Shutdown { .. } => {
                Status::unavailable(error.to_string())
            }
            ReplicateError::RingClosed { last_slot } => {
                let mut metadata = MetadataMap::new();
                metadata.insert(RING_CLOSED_METADATA, MetadataValue::from(last_slot.0));
                Status::with_metadata(Code::FailedPrecondition, error.to_string(), metadata)
            }
        }
    }

    /// The status of a linearizable read the ring refused or could not finish.
    pub(super) fn read_error(&self, error: ReadError) -> Status {
        match error {
            ReadError::NotPrimary { hint, reason } => {
                self.not_primary(hint, &format!("read refused ({reason})"))
            }
            ReadError::Busy { .. } => Status::resource_exhausted(error.to_string()),
            ReadError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
            ReadError::Shutdown { .. } => Status::unavailable(error.to_string()),
        }
    }

    /// The status of a configuration change the ring refused or could not finish.
    pub(super) fn change_error(&self, error: ChangeConfigurationError) -> Status {
        match error {
            ChangeConfigurationError::Refused(ChangeError::NotPrimary { hint }) => {
                self.not_primary(hint, "reconfigure")
            }
            ChangeConfigurationError::Refused(ChangeError::Relinquishing { target }) => {
                self.not_primary(Some(target), "reconfigure")
            }
            ChangeConfigurationError::Refused(error @ ChangeError::InProgress { .. }) => {
                Status::aborted(error.to_string())
            }
            ChangeConfigurationError::Refused(error @ ChangeError::Invalid { .. }) => {
                Status::invalid_argument(error.to_string())
            }
            // OUT_OF_RANGE: the learner is further behind than the bound (FAILED_PRECONDITION
            // is a redirect to the primary for clients).
            ChangeConfigurationError::Refused(error @ ChangeError::LearnerBehind { .. }) => {
                Status::out_of_range(error.to_string())
            }
            error @ ChangeConfigurationError::LearnerBehind { .. } => Status::out_of_range(error.to_string()),
            error @ (ChangeConfigurationError::Interrupted { .. }
            | ChangeConfigurationError::Shutdown { .. }) => Status::unavailable(error.to_string()),
            error @ ChangeConfigurationError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
        }
    }
}

/// The status of a fast read this replica could not serve.
/// The ring's read consistency a get asks for; an unknown value is refused.
pub(super) fn read_consistency(value: i32) -> Result<ReadConsistency, Status> {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::LeaseOrReadIndex) => Ok(ReadConsistency::LeaseOrReadIndex),
        Ok(pb::ReadConsistency::Lease) => Ok(ReadConsistency::Lease),
        Ok(pb::ReadConsistency::ReadIndex) => Ok(ReadConsistency::ReadIndex),
        Err(_) => Err(Status::invalid_argument(format!("get: unknown read consistency {value}"))),
    }
}

pub(super) fn fast_read_error(error: FastReadError) -> Status {
    match error {
        FastReadError::NotApplied { .. } | FastReadError::Shutdown { .. } => {
            Status::unavailable(error.to_string())
        }
        FastReadError::Busy { .. } => Status::resource_exhausted(error.to_string()),
    }
}

/// The status of a request that does not pass the command limits.
pub(super) fn invalid(error: DecodeError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The status of a state machine answer that does not decode (a bug: this server and
/// the state machine share the encoding).
pub(super) fn undecodable(error: DecodeError) -> Status {
    Status::internal(format!("undecodable state machine answer: {error}"))
}

/// A request's write id, which every write must carry.
pub(super) fn write_id(id: Option<pb::WriteId>) -> Result<WriteId, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("id: missing (client and sequence)"))?;
    Ok(WriteId { client: id.client, sequence: id.sequence })
}

/// A write's answer, or the status for an answer that is an error.
pub(super) fn write_outcome(id: WriteId, response: WriteResponse) -> Result<WriteResponse, Status> {
    match &response.outcome {
        WriteOutcome::Stale { newest } => Err(Status::aborted(format!(
            "write {} of client {:#x} is older than its newest write {newest}",
            id.sequence, id.client
        ))),
        WriteOutcome::Malformed { reason } => Err(Status::invalid_argument(reason.clone())),
        _ => Ok(response),
    }
}

/// The answer to a delete.
pub(super) fn delete_response(response: &WriteResponse) -> pb::DeleteResponse {
    let existed = matches!(response.outcome, WriteOutcome::Deleted { existed: true });
    pb::DeleteResponse { slot: response.slot, existed }
}

/// The answer to a compare-and-set, or the status for an answer of another kind.
pub(super) fn cas_response(response: WriteResponse) -> Result<pb::CasResponse, Status> {
    match response.outcome {
        WriteOutcome::Cas { swapped, current } => Ok(pb::CasResponse {
            slot: response.slot,
            swapped,
            present: current.is_some(),
            current: current.unwrap_or_default(),
        }),
        other => Err(Status::internal(format!("unexpected answer to a compare-and-set: {other:?}"))),
    }
}

/// The answer to a get, or the status for an answer that is an error.
pub(super) fn get_response(outcome: ReadOutcome) -> Result<pb::GetResponse, Status> {
    match outcome {
        ReadOutcome::Value(Some(value)) => Ok(pb::GetResponse { found: true, value }),
        ReadOutcome::Value(None) => Ok(pb::GetResponse { found: false, value: Bytes::new() }),
        ReadOutcome::Malformed { reason } => Err(Status::invalid_argument(reason)),
        other => Err(Status::internal(format!("unexpected answer to a get: {other:?}"))),
    }
}
