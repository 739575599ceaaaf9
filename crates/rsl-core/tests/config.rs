//! `Config::validate`, one rule at a time: each broken rule is refused naming its field and
//! saying what was expected, and a replica will not start with it. The triggers that may be
//! off (zero) are accepted off.

use rsl_core::{
    Config, ConfigError, DurableState, NodeId, Replica, RingId, Time, BATCH_BYTES_MAX, BATCH_REQUESTS_MAX,
    FETCH_WINDOW_MAX, LARGE_BYTES_IN_FLIGHT_MAX, MEMBERS_MAX, PIPELINE_DEPTH_MAX, REQUEST_BYTES_MAX,
};

fn good() -> Config {
    Config::new(RingId(1), NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
}

/// The field and reason of the refusal of `good()` changed by `change`; the replica refuses
/// to start with the same error.
fn refused(change: impl Fn(&mut Config)) -> (&'static str, String) {
    let mut config = good();
    change(&mut config);
    let error = config.validate().expect_err("refused");
    let started = Replica::new(config, DurableState::default(), Time(0)).map(|_| ()).expect_err("no replica");
    assert_eq!(started, error);
    match error {
        ConfigError::Invalid { field, reason } => (field, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_defaults_are_valid() {
    good().validate().expect("valid");
}

#[test]
fn a_member_listed_twice_is_refused() {
    let (field, reason) = refused(|c| {
        c.members = vec![NodeId(1), NodeId(2), NodeId(2)];
    });
    assert_eq!(field, "members", "{reason}");
    assert!(reason.contains("duplicate node"), "{reason}");
}

#[test]
fn no_members_is_refused() {
    let (field, reason) = refused(|c| {
        c.members = Vec::new();
    });
    assert_eq!(field, "members", "{reason}");
    assert!(reason.contains("need 1..="), "{reason}");
}

#[test]
fn too_many_members_is_refused() {
    let (field, reason) = refused(|c| {
        c.members = (1..=MEMBERS_MAX as u64 + 1).map(NodeId).collect();
    });
    assert_eq!(field, "members", "{reason}");
    assert!(reason.contains("need 1..="), "{reason}");
}

#[test]
fn a_node_outside_the_members_is_refused() {
    let (field, reason) = refused(|c| {
        c.node = NodeId(9);
    });
    assert_eq!(field, "node", "{reason}");
    assert!(reason.contains("n9 is not among members"), "{reason}");
}

#[test]
fn a_zero_heartbeat_is_refused() {
    let (field, reason) = refused(|c| {
        c.heartbeat_interval_ms = 0;
    });
    assert_eq!(field, "heartbeat_interval_ms", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn an_election_delay_below_two_heartbeats_is_refused() {
    let (field, reason) = refused(|c| {
        c.heartbeat_interval_ms = 100;
        c.election_delay_min_ms = 199;
    });
    assert_eq!(field, "election_delay_min_ms", "{reason}");
    assert!(reason.contains("199 must be at least twice heartbeat_interval_ms (100)"), "{reason}");
}

#[test]
fn an_election_delay_maximum_below_its_minimum_is_refused() {
    let (field, reason) = refused(|c| {
        c.election_delay_max_ms = c.election_delay_min_ms - 1;
    });
    assert_eq!(field, "election_delay_max_ms", "{reason}");
    assert!(reason.contains("is below election_delay_min_ms"), "{reason}");
}

#[test]
fn a_clock_drift_of_half_the_time_is_refused() {
    let (field, reason) = refused(|c| {
        c.clock_drift_max_ppm = 500_000;
    });
    assert_eq!(field, "clock_drift_max_ppm", "{reason}");
    assert!(reason.contains("must be below 500000"), "{reason}");
}

#[test]
fn a_zero_pipeline_depth_is_refused() {
    let (field, reason) = refused(|c| {
        c.pipeline_depth = 0;
    });
    assert_eq!(field, "pipeline_depth", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_pipeline_deeper_than_its_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.pipeline_depth = PIPELINE_DEPTH_MAX + 1;
    });
    assert_eq!(field, "pipeline_depth", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn a_zero_batch_request_count_is_refused() {
    let (field, reason) = refused(|c| {
        c.batch_requests_max = 0;
    });
    assert_eq!(field, "batch_requests_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_batch_request_count_over_its_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.batch_requests_max = BATCH_REQUESTS_MAX + 1;
    });
    assert_eq!(field, "batch_requests_max", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn a_zero_batch_size_is_refused() {
    let (field, reason) = refused(|c| {
        c.batch_bytes_max = 0;
    });
    assert_eq!(field, "batch_bytes_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_batch_size_over_its_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.batch_bytes_max = BATCH_BYTES_MAX + 1;
    });
    assert_eq!(field, "batch_bytes_max", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn a_zero_proposal_queue_is_refused() {
    let (field, reason) = refused(|c| {
        c.proposal_queue_max = 0;
    });
    assert_eq!(field, "proposal_queue_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_zero_fetch_size_is_refused() {
    let (field, reason) = refused(|c| {
        c.fetch_slots_max = 0;
    });
    assert_eq!(field, "fetch_slots_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_zero_fetch_window_is_refused() {
    let (field, reason) = refused(|c| {
        c.fetch_window = 0;
    });
    assert_eq!(field, "fetch_window", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_fetch_window_over_its_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.fetch_window = FETCH_WINDOW_MAX + 1;
    });
    assert_eq!(field, "fetch_window", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn a_zero_request_size_is_refused() {
    let (field, reason) = refused(|c| {
        c.request_bytes_max = 0;
    });
    assert_eq!(field, "request_bytes_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_request_size_over_its_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.request_bytes_max = REQUEST_BYTES_MAX + 1;
    });
    assert_eq!(field, "request_bytes_max", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn no_room_for_large_requests_is_refused() {
    let (field, reason) = refused(|c| {
        c.large_bytes_in_flight_max = 0;
    });
    assert_eq!(field, "large_bytes_in_flight_max", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn large_requests_over_their_ceiling_is_refused() {
    let (field, reason) = refused(|c| {
        c.large_bytes_in_flight_max = LARGE_BYTES_IN_FLIGHT_MAX + 1;
    });
    assert_eq!(field, "large_bytes_in_flight_max", "{reason}");
    assert!(reason.contains("not in 1..="), "{reason}");
}

#[test]
fn room_for_large_requests_below_the_largest_request_is_refused() {
    let (field, reason) = refused(|c| {
        c.large_bytes_in_flight_max = c.request_bytes_max;
    });
    assert_eq!(field, "large_bytes_in_flight_max", "{reason}");
    assert!(reason.contains("could then never be proposed"), "{reason}");
}

#[test]
fn messages_too_small_for_a_promise_is_refused() {
    let (field, reason) = refused(|c| {
        c.message_bytes_max = 2 * c.pipeline_depth * c.batch_bytes_max - 1;
    });
    assert_eq!(field, "message_bytes_max", "{reason}");
    assert!(reason.contains("must be at least twice pipeline_depth x batch_bytes_max"), "{reason}");
}

#[test]
fn too_few_promise_slots_is_refused() {
    let (field, reason) = refused(|c| {
        c.promise_slots_max = 2 * c.pipeline_depth - 1;
    });
    assert_eq!(field, "promise_slots_max", "{reason}");
    assert!(reason.contains("must be at least twice pipeline_depth"), "{reason}");
}

#[test]
fn a_checkpoint_every_few_bytes_is_refused() {
    let (field, reason) = refused(|c| {
        c.checkpoint_interval_bytes = c.batch_bytes_max - 1;
    });
    assert_eq!(field, "checkpoint_interval_bytes", "{reason}");
    assert!(reason.contains("must be 0 (never) or at least batch_bytes_max"), "{reason}");
}

#[test]
fn a_checkpoint_more_often_than_heartbeats_is_refused() {
    let (field, reason) = refused(|c| {
        c.heartbeat_interval_ms = 50;
        c.election_delay_min_ms = 200;
        c.election_delay_max_ms = 400;
        c.checkpoint_interval_ms = 49;
    });
    assert_eq!(field, "checkpoint_interval_ms", "{reason}");
    assert!(reason.contains("must be 0 (never) or at least heartbeat_interval_ms (50)"), "{reason}");
}

#[test]
fn no_checkpoint_retry_delay_is_refused() {
    let (field, reason) = refused(|c| {
        c.checkpoint_retry_ms = 0;
    });
    assert_eq!(field, "checkpoint_retry_ms", "{reason}");
    assert!(reason.contains("must be positive"), "{reason}");
}

#[test]
fn a_joining_node_may_be_outside_the_members() {
    let mut config = good();
    config.node = NodeId(9);
    config.joining = true;
    config.validate().expect("a joiner is not yet a member");
}

#[test]
fn the_checkpoint_triggers_may_be_off() {
    let mut config = good();
    config.checkpoint_interval_slots = 0;
    config.checkpoint_interval_bytes = 0;
    config.checkpoint_interval_ms = 0;
    config.validate().expect("never checkpointing is allowed");
}

#[test]
fn the_lease_is_shorter_than_the_election_delay() {
    let config = good();
    assert!(config.lease() < config.election_delay_min());
    assert_eq!(config.heartbeat_interval().0, config.heartbeat_interval_ms * 1000);
    assert_eq!(config.batch_linger().0, config.batch_linger_us);
}
