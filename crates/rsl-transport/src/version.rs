//! Protocol versions on a link, shared by the transports whose links have one (gRPC per
//! stream, RDMA per connection): which version a core message needs, the check of a
//! configured version, and the filter that leaves out of a link what its version cannot
//! carry (docs/PROTOCOL.md, "Versions").
//!
//! The version rule itself is [`codec::message_version`](crate::codec::message_version) on
//! the protobuf form (gRPC queues encoded messages); [`core_message_version`] is the same
//! rule on the core form (RDMA archives core messages in place), and a property test
//! (`tests/codec.rs`) checks that the two agree on every message.

use crate::codec::{MEMBERSHIP_PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use crate::stats::TransportStats;
use rsl_core::{Message, MessageBody, Proposal, Value};

/// The oldest protocol version that carries `message` whole: version 2 added forced
/// elections and read-index reads, version 3 a configuration's learners and addresses.
pub fn core_message_version(message: &Message) -> u32 {
    let extended = |value: &Value| matches!(value, Value::Configuration(c) if !c.learners.is_empty() || !c.addresses.is_empty());
    let any_extended = |proposals: &[Proposal]| proposals.iter().any(|p| extended(&p.value));
    match &message.body {
        MessageBody::Accept { value, .. } if extended(value) => MEMBERSHIP_PROTOCOL_VERSION,
        MessageBody::Promise { accepted, .. } if any_extended(accepted) => MEMBERSHIP_PROTOCOL_VERSION,
        MessageBody::FetchReply { chosen_values } if any_extended(chosen_values) => {
            MEMBERSHIP_PROTOCOL_VERSION
        }
        MessageBody::PromotionRequest { .. }
        | MessageBody::ReadIndexRequest { .. }
        | MessageBody::ReadIndexReply { .. }
        | MessageBody::ReadIndexRefused { .. } => 2,
        _ => PROTOCOL_VERSION_MIN,
    }
}

/// Whether this build speaks `version`; otherwise what to say about it.
pub(crate) fn check_speaks(version: u32) -> Result<(), String> {
    if (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(format!(
            "{version} not in {PROTOCOL_VERSION_MIN}..={PROTOCOL_VERSION}, the versions this build speaks"
        ))
    }
}

/// Leaves out of `messages` those a peer spoken to in `version` cannot read (`version_of`
/// says which version each needs), counted in `dropped_for_version`: to that peer such a
/// message is lost, as one the network dropped would be. Returns how many were left out.
pub(crate) fn leave_out_newer<M>(
    messages: &mut Vec<M>,
    version: u32,
    version_of: impl Fn(&M) -> u32,
    stats: &TransportStats,
) -> u64 {
    if version >= PROTOCOL_VERSION {
        return 0;
    }
    let before = messages.len();
    messages.retain(|message| version_of(message) <= version);
    let left_out = (before - messages.len()) as u64;
    TransportStats::add(&stats.dropped_for_version, left_out);
    left_out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_this_build_speaks_pass_the_check() {
        for version in PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION {
            assert_eq!(check_speaks(version), Ok(()));
        }
        for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
            let problem = check_speaks(version).unwrap_err();
            assert!(problem.starts_with(&version.to_string()), "{problem}");
            assert!(problem.contains("the versions this build speaks"), "{problem}");
        }
    }

    #[test]
    fn the_filter_keeps_what_the_version_reads_and_counts_the_rest() {
        let stats = TransportStats::default();
        let mut versions = vec![1, 2, 3, 1, 3];
        assert_eq!(leave_out_newer(&mut versions, 2, |&v| v, &stats), 2);
        assert_eq!(versions, [1, 2, 1]);
        assert_eq!(leave_out_newer(&mut versions, 1, |&v| v, &stats), 1);
        assert_eq!(versions, [1, 1]);
        let mut newest = vec![1, 2, 3];
        assert_eq!(leave_out_newer(&mut newest, PROTOCOL_VERSION, |&v| v, &stats), 0);
        assert_eq!(stats.snapshot().dropped_for_version, 3);
    }
}
