//! Small public pieces of the core, each with what it promises: sizes counted against the
//! limits, quorum edges, time units, the replica's accessors, and the refusals of a forced
//! election by a replica that may not campaign.

use bytes::Bytes;
use rsl_core::quorum::{majority, quorum_watermark};
use rsl_core::{
    Ballot, Configuration, DurableState, Micros, NodeId, PersistRequest, PromotionError, Replica, Request,
    RequestId, Slot, Time, Value,
};
use rsl_testkit::{config, drain, Cluster};

#[test]
fn a_configuration_value_counts_its_members() {
    let configuration = Configuration::new(2, vec![NodeId(1), NodeId(2), NodeId(3)], Slot(5));
    assert_eq!(Value::Configuration(configuration).size_bytes(), 24 + 3 * 8);
}

#[test]
fn a_noop_counts_one_byte() {
    assert_eq!(Value::Noop.size_bytes(), 1);
}

#[test]
fn a_last_request_counts_like_a_batch_of_one() {
    let request = Request { id: RequestId { client: 1, sequence: 1 }, payload: Bytes::from_static(b"abc") };
    assert_eq!(Value::Last(request.clone()).size_bytes(), Value::Batch(vec![request].into()).size_bytes());
}

#[test]
fn a_watermark_needs_a_quorum_of_voters() {
    assert_eq!(quorum_watermark(&mut [5, 7], 3), None, "two voters cannot make a quorum of three");
    assert_eq!(quorum_watermark(&mut [5, 7, 1], 0), None, "a quorum of none is meaningless");
    assert_eq!(quorum_watermark(&mut [5, 7, 1], 2), Some(5));
    assert_eq!(quorum_watermark(&mut [5, 7, 1], majority(3)), Some(5));
}

#[test]
fn micros_display_their_unit_and_saturate_from_milliseconds() {
    assert_eq!(Micros(1500).to_string(), "1500us");
    assert_eq!(Micros::from_ms(2), Micros(2000));
    assert_eq!(Micros::from_ms(u64::MAX), Micros(u64::MAX));
}

#[test]
fn an_empty_persist_request_is_empty_and_any_part_makes_it_not() {
    let empty = PersistRequest { ticket: 1, promise: None, proposals: Vec::new(), chosen: None };
    assert!(empty.is_empty());
    assert!(!PersistRequest { promise: Some(Ballot::new(1, NodeId(1))), ..empty.clone() }.is_empty());
    assert!(!PersistRequest { chosen: Some(Slot(1)), ..empty.clone() }.is_empty());
}

#[test]
fn a_replica_reports_its_node_and_configuration() {
    let replica = Replica::new(config(2, 3), DurableState::default(), Time(0)).unwrap();
    assert_eq!(replica.node(), NodeId(2));
    assert_eq!(replica.configuration().members, vec![NodeId(1), NodeId(2), NodeId(3)]);
    assert_eq!(replica.configuration().number, 1);
    assert_eq!(replica.last_slot(), None, "an open ring");
}

#[test]
fn a_replica_recovers_the_newer_configuration_its_checkpoint_carries() {
    let newer = Configuration::new(3, vec![NodeId(1), NodeId(2)], Slot(10));
    let durable =
        DurableState { checkpoint: Slot(9), configuration: Some(newer.clone()), ..DurableState::default() };
    let replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    assert_eq!(replica.configuration(), &newer);
}

#[test]
fn a_replica_keeps_its_configuration_over_an_older_one_in_a_checkpoint() {
    let older = Configuration::new(1, vec![NodeId(1), NodeId(2), NodeId(3)], Slot(1));
    let durable =
        DurableState { checkpoint: Slot(3), configuration: Some(older.clone()), ..DurableState::default() };
    let replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    assert_eq!(replica.configuration(), &older);
}

#[test]
fn a_joining_replica_may_not_force_an_election() {
    let mut cluster = Cluster::new(4, |c| {
        c.members = vec![NodeId(1), NodeId(2), NodeId(3)];
        c.joining = c.node == NodeId(4);
    });
    let now = cluster.now;
    let error = cluster.replica_mut(4).handle_attempt_promotion(now).unwrap_err();
    // A joiner has entered no configuration yet: configuration 0.
    assert_eq!(error, PromotionError::NotAMember { configuration: 0 });
    assert!(error.to_string().contains("not a member of configuration 0"), "{error}");
}

#[test]
fn a_vetoed_replica_may_not_force_an_election() {
    let mut replica = Replica::new(config(1, 3), DurableState::default(), Time(0)).unwrap();
    drain(&mut replica);
    replica.set_can_become_primary(false);
    assert_eq!(replica.handle_attempt_promotion(Time(1_000)), Err(PromotionError::Vetoed));
}
