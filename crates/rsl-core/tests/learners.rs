//! Learners: replicas that follow the log without voting. They receive a primary's accepts
//! and heartbeats and apply what is chosen, but count in no quorum (phase 1, phase 2, the
//! lease, the quorum check), never campaign, and become voters only through a change that
//! the promotion guard lets through once they caught up.

use rsl_core::{
    ChangeError, Configuration, MembershipChange, MessageBody, NodeId, ReadError, ReadId, RelinquishError,
    Role, Slot,
};
use rsl_testkit::{request, Cluster};

const VOTERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const LEARNER: NodeId = NodeId(4);

/// Voters 1..=3 with an elected primary, and node 4 started as a joining replica that knows
/// the voters as contacts. `lag_slots_max` is the promotion bound.
fn ring_with_a_joiner(lag_slots_max: u64) -> (Cluster, u64) {
    let mut cluster = Cluster::new(4, move |config| {
        config.members = VOTERS.to_vec();
        config.joining = config.node == LEARNER;
        config.learner_promotion_lag_slots_max = lag_slots_max;
    });
    let primary = elect_among_voters(&mut cluster);
    (cluster, primary)
}

/// Lets time pass until one voter is primary and every voter follows it.
fn elect_among_voters(cluster: &mut Cluster) -> u64 {
    for _ in 0..1_000 {
        if let [primary] = cluster.primaries()[..] {
            if VOTERS.iter().all(|v| cluster.replica(v.0).primary_hint() == Some(NodeId(primary))) {
                return primary;
            }
        }
        cluster.advance_ms(10);
    }
    panic!("no primary among the voters by {}", cluster.now);
}

/// Asks the primary for `change` and runs until it is chosen and a primary is elected in the
/// new configuration; returns that configuration and the new primary.
fn change(cluster: &mut Cluster, primary: u64, change: MembershipChange) -> (Configuration, u64) {
    let now = cluster.now;
    let number = cluster.replica(primary).configuration().number;
    cluster
        .replica_mut(primary)
        .handle_change_configuration(now, change)
        .expect("the primary takes the change");
    cluster.drain((primary - 1) as usize);
    for _ in 0..1_000 {
        cluster.advance_ms(10);
        let entered = cluster.ids().all(|id| cluster.replica(id).configuration().number > number);
        if let ([primary], true) = (&cluster.primaries()[..], entered) {
            return (cluster.replica(*primary).configuration().clone(), *primary);
        }
    }
    panic!("configuration {} was not entered by everyone with a primary", number + 1);
}

/// Proposes `count` requests at `primary` and runs until every node applied them.
fn replicate(cluster: &mut Cluster, primary: u64, first_sequence: u64, count: u64) {
    let expected: Vec<u64> = cluster.nodes.iter().map(|n| n.applied_requests + count).collect();
    for sequence in first_sequence..first_sequence + count {
        cluster.propose(primary, request(sequence, &format!("r{sequence}"))).expect("the primary takes it");
    }
    cluster.run_until_applied(&expected);
}

#[test]
fn a_learner_follows_and_applies_the_log() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let (configuration, primary) =
        change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));
    assert_eq!(
        (configuration.members.as_slice(), configuration.learners.as_slice()),
        (&VOTERS[..], &[LEARNER][..])
    );
    assert!(VOTERS.contains(&NodeId(primary)), "a learner never becomes primary");
    let learner = cluster.replica(LEARNER.0);
    assert!(learner.configuration().is_learner(LEARNER) && !learner.status().member);

    let since = cluster.now;
    replicate(&mut cluster, primary, 0, 10);
    let accepts_to_learner = cluster.sent_since(since, "accept").iter().filter(|m| m.to == LEARNER).count();
    assert!(
        accepts_to_learner >= 10,
        "the primary replicates every slot to the learner ({accepts_to_learner} accepts)"
    );
    assert_eq!(cluster.node(LEARNER.0).applied_payloads(), cluster.node(primary).applied_payloads());
    assert_eq!(cluster.replica(LEARNER.0).chosen(), cluster.replica(primary).chosen());
    cluster.assert_agreement();

    // The primary's health report lists the learner after the voters, with its progress.
    let health = cluster.replica(primary).health(cluster.now);
    let listed: Vec<(NodeId, bool)> = health.members.iter().map(|m| (m.node, m.is_learner)).collect();
    assert_eq!(listed, vec![(NodeId(1), false), (NodeId(2), false), (NodeId(3), false), (LEARNER, true)]);
    assert_eq!(health.members[3].lag_slots, Some(0), "the learner acknowledged everything");
    assert!(cluster.replica(LEARNER.0).health(cluster.now).learner);
}

#[test]
fn a_learner_counts_in_no_quorum_and_never_campaigns() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let (_, primary) = change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));
    replicate(&mut cluster, primary, 0, 3);
    let now = cluster.now;
    cluster.replica_mut(primary).handle_read(now).expect("a lease with every voter echoing");

    // Cut the primary off from the other voters; only the learner still answers it.
    let others: Vec<NodeId> = VOTERS.iter().copied().filter(|v| v.0 != primary).collect();
    let p = NodeId(primary);
    let cut = others.clone();
    cluster.set_drop(move |m| (m.from == p && cut.contains(&m.to)) || (m.to == p && cut.contains(&m.from)));
    let chosen_before = cluster.replica(primary).chosen();
    let since = cluster.now;
    cluster.propose(primary, request(100, "only the learner votes")).expect("the primary takes it");
    cluster.advance_ms(300);
    let accepted_by_learner =
        cluster.sent_since(since, "accepted").iter().filter(|m| m.from == LEARNER && m.to == p).count();
    assert!(accepted_by_learner > 0, "the learner acknowledged the slot");
    assert_eq!(cluster.replica(primary).chosen(), chosen_before, "the primary and a learner are no quorum");
    cluster.advance_ms(1_000);
    assert_ne!(cluster.replica(primary).role(), Role::Primary, "the quorum check counts voters only");

    // With every voter cut off, the learner waits: it never campaigns.
    cluster.isolate(LEARNER.0);
    let since = cluster.now;
    cluster.advance_ms(10_000);
    for kind in ["pre_vote", "prepare"] {
        assert!(
            cluster.sent_since(since, kind).iter().all(|m| m.from != LEARNER),
            "the learner sent a {kind}"
        );
    }
    assert_eq!(cluster.replica(LEARNER.0).role(), Role::Secondary);
    let now = cluster.now;
    assert!(
        cluster.replica_mut(LEARNER.0).handle_attempt_promotion(now).is_err(),
        "a learner may not be forced to campaign"
    );
}

#[test]
fn votes_and_pre_votes_from_a_learner_are_refused() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let (configuration, primary) =
        change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));
    let ballot = rsl_core::Ballot::new(configuration.round_floor() + 99, LEARNER);
    let ring = cluster.sent[0].1.ring;
    let message = |body| rsl_core::Message {
        ring,
        from: LEARNER,
        to: NodeId(primary),
        configuration: configuration.number,
        body,
    };
    let chosen = cluster.replica(LEARNER.0).chosen();
    for body in [
        MessageBody::PreVote { ballot, chosen },
        MessageBody::Prepare { ballot, first_unchosen: chosen.next(), transfer_from: None },
    ] {
        let kind = body.kind();
        let error = cluster.inject(message(body)).expect_err(kind);
        assert!(
            matches!(error, rsl_core::MessageError::NotAMember { from, .. } if from == LEARNER),
            "{kind}: {error}"
        );
    }
}

#[test]
fn promoting_a_lagging_learner_is_refused_until_it_caught_up() {
    let (mut cluster, primary) = ring_with_a_joiner(5);
    let (_, primary) = change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));

    // The learner hears nothing while the ring moves 20 slots on.
    cluster.isolate(LEARNER.0);
    for sequence in 0..20 {
        cluster.propose(primary, request(sequence, "while the learner is away")).expect("taken");
        cluster.advance_ms(1);
    }
    cluster.advance_ms(100);
    let chosen = cluster.replica(primary).chosen();
    let holds = cluster.replica(LEARNER.0).chosen();
    assert!(chosen.0 - holds.0 > 5, "the learner is behind: {holds} of {chosen}");

    let promote = MembershipChange::new(vec![NodeId(1), NodeId(2), NodeId(3), LEARNER], vec![]);
    let now = cluster.now;
    let refused = cluster.replica_mut(primary).handle_change_configuration(now, promote.clone());
    let Err(ChangeError::LearnerBehind { node, holds: known, chosen: at, lag_slots_max }) = refused.clone()
    else {
        panic!("expected LearnerBehind, got {refused:?}");
    };
    assert_eq!((node, at, lag_slots_max), (LEARNER, chosen, 5));
    assert!(known <= holds, "the primary knows of no more than the learner holds: {known} > {holds}");
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("n4") && text.contains("learner_promotion_lag_slots_max = 5"), "{text}");
    assert_eq!(cluster.replica(primary).configuration().number, 2, "nothing was proposed");

    // Back in touch, it catches up from the primary's heartbeats and fetches; then the
    // same change goes through and the former learner votes.
    cluster.clear_drop();
    let everything = cluster.node(primary).applied_requests;
    cluster.run_until_applied(&[everything; 4]);
    cluster.advance_ms(200);
    let (configuration, primary) = change(&mut cluster, primary, promote);
    assert_eq!(configuration.members, vec![NodeId(1), NodeId(2), NodeId(3), LEARNER]);
    assert!(configuration.learners.is_empty());
    assert_eq!(configuration.quorum(), 3);
    assert!(cluster.replica(LEARNER.0).status().member);
    replicate(&mut cluster, primary, 100, 3);
    cluster.assert_agreement();
    assert!(cluster.replica(LEARNER.0).chosen() >= Slot(24));
}

#[test]
fn changes_naming_a_node_both_ways_or_twice_are_invalid() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let now = cluster.now;
    for (members, learners) in [
        (VOTERS.to_vec(), vec![NodeId(3)]),
        (VOTERS.to_vec(), vec![LEARNER, LEARNER]),
        (VOTERS.to_vec(), vec![NodeId(0)]),
        (vec![], vec![LEARNER]),
    ] {
        let result = cluster
            .replica_mut(primary)
            .handle_change_configuration(now, MembershipChange::new(members.clone(), learners.clone()));
        assert!(matches!(result, Err(ChangeError::Invalid { .. })), "{members:?} + {learners:?}: {result:?}");
    }
}

#[test]
fn a_learner_cannot_be_handed_primacy_and_its_read_index_reads_are_refused_naming_the_primary() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let (configuration, primary) =
        change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));
    // A heartbeat of the new primary reaches the learner.
    cluster.advance_ms(100);
    let now = cluster.now;
    assert_eq!(
        cluster.replica_mut(primary).handle_relinquish(now, Some(LEARNER)),
        Err(RelinquishError::NotAMember { target: LEARNER, configuration: configuration.number })
    );
    assert_eq!(cluster.replica(LEARNER.0).primary_hint(), Some(NodeId(primary)));
    // It is no member: the primary would not take its request.
    let refused = cluster.replica_mut(LEARNER.0).handle_read_index(now, ReadId(1));
    assert_eq!(refused, Err(ReadError::NotPrimary { hint: Some(NodeId(primary)) }));
    assert_eq!(cluster.replica(LEARNER.0).pending_read_indexes(), 0);
}

#[test]
fn a_learner_made_the_only_voter_learns_the_change_though_its_primary_was_removed() {
    let (mut cluster, primary) = ring_with_a_joiner(1_000);
    let (_, primary) = change(&mut cluster, primary, MembershipChange::new(VOTERS.to_vec(), vec![LEARNER]));
    replicate(&mut cluster, primary, 0, 3);
    // Shrink to the primary alone, the learner still following.
    let (_, primary) =
        change(&mut cluster, primary, MembershipChange::new(vec![NodeId(primary)], vec![LEARNER]));
    replicate(&mut cluster, primary, 5, 3);
    // The primary hands the ring to the learner alone. It chooses the change by itself, is
    // removed by it and steps down at once, so it sends the learner nothing more; and
    // what it sent about the change is lost here. The learner must notice that its primary
    // went silent and ask (only the answers to its questions get through).
    let old_primary = NodeId(primary);
    cluster.set_drop(move |m| {
        m.from == old_primary
            && m.to == LEARNER
            && !matches!(m.body, MessageBody::StatusReply { .. } | MessageBody::FetchReply { .. })
    });
    let (configuration, primary) =
        change(&mut cluster, primary, MembershipChange::new(vec![LEARNER], vec![]));
    assert_eq!(configuration.members, vec![LEARNER]);
    assert_eq!(primary, LEARNER.0, "the former learner leads the ring it now forms alone");
    cluster.clear_drop();
    replicate(&mut cluster, primary, 10, 3);
    cluster.assert_agreement();
}
