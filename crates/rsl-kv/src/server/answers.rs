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
/// every member (this server's `--clients` entry, or the address the configuration in
/// force carries, as for a member that joined through a contact).
#[derive(Debug, Clone)]
pub(super) struct Redirects {
    node: NodeId,
    clients: Arc<BTreeMap<NodeId, String>>,
    /// The ring whose configuration carries members' addresses.
    ring: Option<rsl::Ring>,
}

impl Redirects {
    pub(super) fn new(node: NodeId, clients: Arc<BTreeMap<NodeId, String>>) -> Redirects {
        Redirects { node, clients, ring: None }
    }

    /// Looks up the addresses the configuration in force carries too.
    pub(super) fn with_ring(self, ring: rsl::Ring) -> Redirects {
        Redirects { ring: Some(ring), ..self }
    }

    /// Where `node` serves clients, if known.
    fn client_address(&self, node: NodeId) -> Option<String> {
        self.clients.get(&node).cloned().or_else(|| {
            let status = self.ring.as_ref()?.status();
            let status = status.borrow();
            status.configuration.address(node).map(|a| a.client.clone()).filter(|c| !c.is_empty())
        })
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
                let address = self.client_address(primary);
                if let Some(value) = address.as_ref().and_then(|a| MetadataValue::try_from(a.as_str()).ok()) {
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

#[cfg(test)]
mod tests {
    //! Every ring error a client can receive, mapped to the gRPC code its client library
    //! acts on (redirect, retry elsewhere, back off, give up), one test per error.

    use super::*;
    use rsl::Slot;

    fn redirects() -> Redirects {
        let clients = BTreeMap::from([(NodeId(2), "10.0.0.2:7101".to_owned())]);
        Redirects::new(NodeId(1), Arc::new(clients))
    }

    fn metadata(status: &Status, key: &str) -> Option<String> {
        status.metadata().get(key).map(|value| value.to_str().unwrap().to_owned())
    }

    #[test]
    fn not_primary_with_a_known_primary_names_it_and_its_address() {
        let status = redirects().replicate_error(ReplicateError::NotPrimary { hint: Some(NodeId(2)) });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(metadata(&status, PRIMARY_NODE_METADATA).as_deref(), Some("2"));
        assert_eq!(metadata(&status, PRIMARY_ADDRESS_METADATA).as_deref(), Some("10.0.0.2:7101"));
        assert!(status.message().contains("node 2 at 10.0.0.2:7101"), "{}", status.message());
    }

    #[test]
    fn not_primary_with_a_primary_without_an_address_names_only_the_node() {
        let status = redirects().not_primary(Some(NodeId(3)), "write refused");
        assert_eq!(metadata(&status, PRIMARY_NODE_METADATA).as_deref(), Some("3"));
        assert_eq!(metadata(&status, PRIMARY_ADDRESS_METADATA), None);
        assert!(status.message().contains("no client address configured"));
    }

    #[test]
    fn not_primary_without_a_hint_says_none_is_known() {
        let status = redirects().not_primary(None, "write refused");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(metadata(&status, PRIMARY_NODE_METADATA), None);
    }

    #[test]
    fn a_primary_not_ready_yet_asks_for_a_retry_here() {
        let status = redirects().not_primary(Some(NodeId(1)), "write refused");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("retry"));
    }

    #[test]
    fn a_request_too_large_is_an_invalid_argument() {
        let status = redirects().replicate_error(ReplicateError::TooLarge { bytes: 9, max: 8 });
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn a_busy_primary_is_resource_exhausted() {
        let busy = redirects().replicate_error(ReplicateError::Busy { queued: 4, max: 4 });
        assert_eq!(busy.code(), Code::ResourceExhausted);
        let large = redirects().replicate_error(ReplicateError::LargeBusy { queued_bytes: 4, max: 4 });
        assert_eq!(large.code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_write_timeout_is_deadline_exceeded() {
        let status = redirects().replicate_error(ReplicateError::Timeout { after_ms: 5 });
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }

    #[test]
    fn an_unknown_outcome_and_a_stopped_ring_are_unavailable() {
        let unknown = redirects().replicate_error(ReplicateError::OutcomeUnknown { slot: Slot(3) });
        assert_eq!(unknown.code(), Code::Unavailable);
        let stopped = redirects().replicate_error(ReplicateError::Shutdown { reason: "x".into() });
        assert_eq!(stopped.code(), Code::Unavailable);
    }

    #[test]
    fn a_closed_ring_names_its_last_slot() {
        let status = redirects().replicate_error(ReplicateError::RingClosed { last_slot: Slot(12) });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(metadata(&status, RING_CLOSED_METADATA).as_deref(), Some("12"));
    }

    #[test]
    fn read_errors_map_to_redirect_back_off_deadline_and_unavailable() {
        let redirects = redirects();
        let reason = rsl::core::ReadError::LeaseExpired;
        let not_primary =
            redirects.read_error(ReadError::NotPrimary { reason: reason.clone(), hint: Some(NodeId(2)) });
        assert_eq!(not_primary.code(), Code::FailedPrecondition);
        assert_eq!(metadata(&not_primary, PRIMARY_NODE_METADATA).as_deref(), Some("2"), "a redirect");
        let here = redirects.read_error(ReadError::NotPrimary { reason, hint: Some(NodeId(1)) });
        assert!(here.message().contains("lease expired"), "{}", here.message());
        assert_eq!(redirects.read_error(ReadError::Busy { max: 1 }).code(), Code::ResourceExhausted);
        assert_eq!(redirects.read_error(ReadError::Timeout { after_ms: 1 }).code(), Code::DeadlineExceeded);
        assert_eq!(
            redirects.read_error(ReadError::Shutdown { reason: "x".into() }).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn change_refusals_map_by_their_reason() {
        let redirects = redirects();
        let refused = |error| redirects.change_error(ChangeConfigurationError::Refused(error));
        assert_eq!(
            refused(ChangeError::NotPrimary { hint: Some(NodeId(2)) }).code(),
            Code::FailedPrecondition
        );
        let relinquishing = refused(ChangeError::Relinquishing { target: NodeId(2) });
        assert_eq!(metadata(&relinquishing, PRIMARY_NODE_METADATA).as_deref(), Some("2"));
        assert_eq!(refused(ChangeError::InProgress { members: vec![NodeId(1)] }).code(), Code::Aborted);
        let invalid = refused(ChangeError::Invalid { members: Vec::new(), reason: "empty".into() });
        assert_eq!(invalid.code(), Code::InvalidArgument);
    }

    #[test]
    fn unfinished_changes_are_unavailable_or_past_their_deadline() {
        let redirects = redirects();
        let interrupted = ChangeConfigurationError::Interrupted { primary: None };
        assert_eq!(redirects.change_error(interrupted).code(), Code::Unavailable);
        let stopped = ChangeConfigurationError::Shutdown { reason: "x".into() };
        assert_eq!(redirects.change_error(stopped).code(), Code::Unavailable);
        let timeout = ChangeConfigurationError::Timeout { after_ms: 1 };
        assert_eq!(redirects.change_error(timeout).code(), Code::DeadlineExceeded);
    }

    #[test]
    fn fast_read_errors_map_to_unavailable_or_resource_exhausted() {
        let not_applied = FastReadError::NotApplied { min_slot: Slot(9), applied: Slot(1), after_ms: 5 };
        assert_eq!(fast_read_error(not_applied).code(), Code::Unavailable);
        assert_eq!(fast_read_error(FastReadError::Busy { max: 1 }).code(), Code::ResourceExhausted);
        assert_eq!(fast_read_error(FastReadError::Shutdown { reason: "x".into() }).code(), Code::Unavailable);
    }

    #[test]
    fn a_write_without_an_id_is_an_invalid_argument() {
        assert_eq!(write_id(None).unwrap_err().code(), Code::InvalidArgument);
        let id = write_id(Some(pb::WriteId { client: 3, sequence: 4 })).unwrap();
        assert_eq!(id, WriteId { client: 3, sequence: 4 });
    }

    #[test]
    fn a_stale_write_is_aborted_naming_the_newest() {
        let id = WriteId { client: 0x2a, sequence: 3 };
        let stale = WriteResponse { slot: 8, outcome: WriteOutcome::Stale { newest: 5 } };
        let status = write_outcome(id, stale).unwrap_err();
        assert_eq!(status.code(), Code::Aborted);
        assert!(status.message().contains("write 3 of client 0x2a is older than its newest write 5"));
    }

    #[test]
    fn a_malformed_write_is_an_invalid_argument() {
        let id = WriteId { client: 1, sequence: 1 };
        let malformed =
            WriteResponse { slot: 8, outcome: WriteOutcome::Malformed { reason: "bad key".into() } };
        let status = write_outcome(id, malformed).unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "bad key"));
    }

    #[test]
    fn answers_of_the_wrong_kind_are_internal_errors() {
        let put = WriteResponse { slot: 1, outcome: WriteOutcome::Put };
        assert_eq!(cas_response(put).unwrap_err().code(), Code::Internal);
        let digest = ReadOutcome::Digest(crate::command::Digest::default());
        assert_eq!(get_response(digest).unwrap_err().code(), Code::Internal);
        assert_eq!(
            get_response(ReadOutcome::Malformed { reason: "x".into() }).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn gets_deletes_and_cas_answers_carry_their_outcome() {
        let found = get_response(ReadOutcome::Value(Some(Bytes::from_static(b"v")))).unwrap();
        assert!(found.found && found.value == Bytes::from_static(b"v"));
        assert!(!get_response(ReadOutcome::Value(None)).unwrap().found);
        let deleted =
            delete_response(&WriteResponse { slot: 4, outcome: WriteOutcome::Deleted { existed: true } });
        assert_eq!((deleted.slot, deleted.existed), (4, true));
        let cas = WriteResponse { slot: 5, outcome: WriteOutcome::Cas { swapped: false, current: None } };
        let answer = cas_response(cas).unwrap();
        assert_eq!((answer.slot, answer.swapped, answer.present), (5, false, false));
    }
}
