//! Every error a client of a ring can receive, each provoked on purpose and checked for
//! its variant, its fields and its effect: refusals that certainly did not take effect,
//! timeouts that may, busy queues, calls on a stopped ring, and refused controls.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rsl_core::{ChangeError, NodeId, Role, Slot, Timing};
use rsl_runtime::{
    ChangeConfigurationError, CheckpointNowError, FastReadError, NotReady, PromotionError, PurgeLogError,
    ReadError, ReadinessOptions, RelinquishError, ReplicateError, ReseedError, TimingError,
};
use support::{count, primary, solo, solo_gated, status_until, stopped, Call, Trio};

// ---- replicate ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_on_a_secondary_is_refused_naming_the_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let secondary = &trio.rings[trio.other(at)];
    let error = secondary.replicate(&b"w"[..]).await.expect_err("a secondary refuses");
    assert_eq!(error, ReplicateError::NotPrimary { hint: Some(trio.rings[at].node()) });
    // Nothing was executed anywhere.
    assert!(trio.probes.iter().all(|probe| probe.executed().is_empty()));
    let statistics = secondary.statistics().await.expect("running");
    assert_eq!(statistics.runtime.requests_failed, 1);
    assert_eq!(statistics.runtime.requests_replicated, 0);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_request_bytes_max_is_too_large_naming_both_sizes() {
    let (solo, _gate) = solo_gated(|config, _| config.request_bytes_max = 1024).await;
    let error = solo.ring.replicate(vec![7; 1025]).await.expect_err("too large");
    assert_eq!(error, ReplicateError::TooLarge { bytes: 1025, max: 1024 });
    assert!(error.to_string().contains("1025") && error.to_string().contains("1024"), "{error}");
    // One at the limit goes through.
    assert_eq!(solo.ring.replicate(vec![7; 1024]).await.expect("at the limit").len(), 1024);
    assert_eq!(solo.probe.executed(), vec![vec![7; 1024]]);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_refuses_only_the_oversized_requests_of_a_batch() {
    let (solo, _gate) = solo_gated(|config, _| config.request_bytes_max = 100).await;
    let requests = vec![Bytes::from_static(b"a"), Bytes::from(vec![0; 101]), Bytes::from_static(b"c")];
    let results = solo.ring.replicate_many(requests).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_deref(), Ok(&b"a"[..]));
    assert_eq!(results[1], Err(ReplicateError::TooLarge { bytes: 101, max: 100 }));
    assert_eq!(results[2].as_deref(), Ok(&b"c"[..]));
    assert_eq!(solo.probe.executed(), vec![b"a".to_vec(), b"c".to_vec()]);
    let statistics = solo.ring.statistics().await.expect("running");
    assert_eq!((statistics.runtime.requests_replicated, statistics.runtime.requests_failed), (2, 1));
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_of_nothing_answers_nothing_and_proposes_nothing() {
    let solo = solo().await;
    let chosen = solo.ring.status().borrow().chosen;
    assert!(solo.ring.replicate_many(Vec::new()).await.is_empty());
    assert_eq!(solo.ring.status().borrow().chosen, chosen);
    assert!(solo.probe.executed().is_empty());
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_answers_in_order_and_executes_in_order() {
    let solo = solo().await;
    let requests: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i])).collect();
    let results = solo.ring.replicate_many(requests.clone()).await;
    let answers: Vec<Bytes> = results.into_iter().map(|r| r.expect("replicated")).collect();
    assert_eq!(answers, requests);
    let executed: Vec<Vec<u8>> = requests.iter().map(|r| r.to_vec()).collect();
    assert_eq!(solo.probe.executed(), executed);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proposal_queue_answers_busy_with_its_bound() {
    let (solo, gate) = solo_gated(|config, _| {
        config.pipeline_depth = 1;
        config.batch_requests_max = 1;
        config.proposal_queue_max = 1;
    })
    .await;
    let _held = gate.hold();
    // The first takes the one pipeline slot (it cannot become durable), the second waits
    // in the queue, the third finds the queue full.
    let (first, second, third) = tokio::join!(
        solo.ring.replicate(&b"1"[..]),
        solo.ring.replicate(&b"2"[..]),
        solo.ring.replicate(&b"3"[..])
    );
    assert_eq!(third, Err(ReplicateError::Busy { queued: 1, max: 1 }));
    assert_eq!(first, Err(ReplicateError::Timeout { after_ms: 400 }));
    // The second either waited in the queue or found it full already (the first may still
    // have been queued when it came).
    let second_queued = match second {
        Err(ReplicateError::Timeout { after_ms: 400 }) => true,
        Err(ReplicateError::Busy { queued: 1, max: 1 }) => false,
        other => panic!("{other:?}"),
    };
    gate.release();
    // The timed-out ones took effect after all (a timeout says "may"); a busy one never.
    let expected: Vec<Vec<u8>> =
        if second_queued { vec![b"1".to_vec(), b"2".to_vec()] } else { vec![b"1".to_vec()] };
    let executes = |calls: &[Call]| calls.iter().filter(|c| matches!(c, Call::Execute(..))).count();
    solo.probe.until("the queued ones executed", |calls| executes(calls) >= expected.len()).await;
    solo.ring.replicate(&b"4"[..]).await.expect("room again");
    let mut all = expected;
    all.push(b"4".to_vec());
    assert_eq!(solo.probe.executed(), all, "the busy request never executed");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_become_durable_times_out_then_may_take_effect() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    let _held = gate.hold();
    let error = solo.ring.replicate(&b"late"[..]).await.expect_err("not durable in time");
    assert_eq!(error, ReplicateError::Timeout { after_ms: 400 });
    assert!(error.to_string().contains("may or may not take effect"), "{error}");
    assert!(solo.probe.executed().is_empty());
    gate.release();
    solo.probe
        .until("the late request executed", |calls| {
            calls.iter().any(|c| matches!(c, Call::Execute(_, r) if r == b"late"))
        })
        .await;
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_times_out_as_a_group() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    let _held = gate.hold();
    let results = solo.ring.replicate_many(vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")]).await;
    assert_eq!(results, vec![Err(ReplicateError::Timeout { after_ms: 400 }); 2]);
    gate.release();
    solo.ring.shutdown().await;
}

// ---- lease reads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_on_a_secondary_is_refused_naming_the_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let primary_node = trio.rings[at].node();
    let error = trio.rings[trio.other(at)].read(Bytes::new()).await.expect_err("secondary");
    assert_eq!(
        error,
        ReadError::NotPrimary {
            reason: rsl_core::ReadError::NotPrimary { hint: Some(primary_node) },
            hint: Some(primary_node),
        }
    );
    // The primary serves it.
    assert_eq!(count(&trio.rings[at].read(Bytes::new()).await.expect("primary reads")), 0);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_sees_every_write_acknowledged_before_it() {
    let solo = solo().await;
    for i in 0..5u8 {
        solo.ring.replicate(vec![i]).await.expect("replicate");
        assert_eq!(count(&solo.ring.read(Bytes::new()).await.expect("read")), u64::from(i) + 1);
    }
    let statistics = solo.ring.statistics().await.expect("running");
    assert_eq!(statistics.runtime.reads_lease, 5);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_times_out_when_the_state_machine_lags() {
    let solo = solo().await;
    let _held = solo.probe.hold();
    let writer = {
        let ring = solo.ring.clone();
        tokio::spawn(async move { ring.replicate(&b"slow"[..]).await })
    };
    status_until(&solo.ring, "the write chosen", |s| s.chosen > s.applied).await;
    let error = solo.ring.read(Bytes::new()).await.expect_err("the state machine is held");
    assert_eq!(error, ReadError::Timeout { after_ms: 300 });
    solo.probe.release();
    assert_eq!(writer.await.unwrap().as_deref(), Ok(&b"slow"[..]));
    assert_eq!(count(&solo.ring.read(Bytes::new()).await.expect("read")), 1);
    let statistics = solo.ring.statistics().await.expect("running");
    assert_eq!(statistics.runtime.reads_failed, 1);
    solo.ring.shutdown().await;
}

// ---- fast reads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_read_of_a_slot_not_applied_gives_up_naming_it() {
    let solo = solo().await;
    let applied = solo.ring.applied();
    let error = solo
        .ring
        .read_fast_within(Bytes::new(), Slot(1_000), Duration::from_millis(50))
        .await
        .expect_err("slot 1000 is far away");
    assert_eq!(error, FastReadError::NotApplied { min_slot: Slot(1_000), applied, after_ms: 50 });
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waiting_fast_reads_are_refused_as_busy() {
    let (solo, _gate) = solo_gated(|_, options| options.reads_waiting_max = 1).await;
    let wait = Duration::from_millis(200);
    let (first, second) = tokio::join!(
        solo.ring.read_fast_within(Bytes::new(), Slot(500), wait),
        solo.ring.read_fast_within(Bytes::new(), Slot(500), wait)
    );
    assert_eq!(second, Err(FastReadError::Busy { max: 1 }));
    assert!(
        matches!(first, Err(FastReadError::NotApplied { min_slot: Slot(500), after_ms: 200, .. })),
        "{first:?}"
    );
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_read_waits_for_its_slot_then_sees_the_write() {
    let solo = solo().await;
    let next = Slot(solo.ring.applied().0 + 1);
    let reader = {
        let ring = solo.ring.clone();
        tokio::spawn(async move { ring.read_fast_within(Bytes::new(), next, Duration::from_secs(10)).await })
    };
    solo.ring.replicate(&b"w"[..]).await.expect("replicate");
    assert_eq!(count(&reader.await.unwrap().expect("fast read")), 1);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_read_is_served_on_a_secondary_once_it_applied_the_slot() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    trio.rings[at].replicate(&b"w"[..]).await.expect("replicate");
    let slot = trio.rings[at].applied();
    let secondary = &trio.rings[trio.other(at)];
    let answer =
        secondary.read_fast_within(Bytes::new(), slot, Duration::from_secs(10)).await.expect("fast read");
    assert_eq!(count(&answer), 1);
    assert!(secondary.applied() >= slot);
    trio.shutdown().await;
}

// ---- a stopped ring ----

fn shut_down(reason: &str) {
    assert_eq!(reason, "shut down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    match ring.replicate(&b"x"[..]).await {
        Err(ReplicateError::Shutdown { reason }) => shut_down(&reason),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_many_on_a_stopped_ring_fails_every_request() {
    let ring = stopped().await;
    let results = ring.replicate_many(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]).await;
    assert_eq!(results, vec![Err(ReplicateError::Shutdown { reason: "shut down".into() }); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(ring.read(Bytes::new()).await, Err(ReadError::Shutdown { reason: "shut down".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_read_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(
        ring.read_fast(Bytes::new(), Slot(0)).await,
        Err(FastReadError::Shutdown { reason: "shut down".into() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(
        ring.relinquish_primary(None).await,
        Err(RelinquishError::Shutdown { reason: "shut down".into() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(
        ring.change_configuration(vec![NodeId(1), NodeId(2)]).await,
        Err(ChangeConfigurationError::Shutdown { reason: "shut down".into() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(ring.checkpoint_now().await, Err(CheckpointNowError::Shutdown { reason: "shut down".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(ring.purge_log(Slot(1)).await, Err(PurgeLogError::Shutdown { reason: "shut down".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(ring.attempt_promotion().await, Err(PromotionError::Shutdown { reason: "shut down".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timing_change_on_a_stopped_ring_says_why_and_changes_nothing() {
    let ring = stopped().await;
    let before = ring.timing();
    let timing = Timing { heartbeat_interval_ms: 20, ..before };
    assert_eq!(ring.change_timing(timing).await, Err(TimingError::Shutdown { reason: "shut down".into() }));
    assert_eq!(ring.timing(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(ring.reseed_from(NodeId(2)).await, Err(ReseedError::Shutdown { reason: "shut down".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_request_on_a_stopped_ring_says_why_it_stopped() {
    let ring = stopped().await;
    assert_eq!(
        ring.replicate_exclusive(&b"x"[..], false).await,
        Err(ReplicateError::Shutdown { reason: "shut down".into() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_ring_has_no_statistics_no_replicas_and_is_not_ready() {
    let ring = stopped().await;
    assert!(ring.statistics().await.is_none());
    assert!(ring.replicas().await.is_empty());
    assert_eq!(
        ring.readiness(ReadinessOptions::default()).await,
        Err(NotReady::Stopped { reason: "shut down".into() })
    );
    assert_eq!(ring.stop_reason().as_deref(), Some("shut down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_twice_is_harmless() {
    let ring = stopped().await;
    tokio::time::timeout(support::WAIT, ring.shutdown()).await.expect("a second shutdown returns");
    assert!(ring.is_stopped());
    assert_eq!(ring.stop_reason().as_deref(), Some("shut down"));
}

// ---- reconfiguration refusals ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_on_a_secondary_is_refused_naming_the_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let secondary = &trio.rings[trio.other(at)];
    let error = secondary.change_configuration(vec![NodeId(1), NodeId(2)]).await.expect_err("secondary");
    assert_eq!(
        error,
        ChangeConfigurationError::Refused(ChangeError::NotPrimary { hint: Some(trio.rings[at].node()) })
    );
    assert_eq!(secondary.status().borrow().configuration.members.len(), 3, "nothing changed");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_member_list_is_refused_as_invalid() {
    let solo = solo().await;
    let error = solo.ring.change_configuration(Vec::new()).await.expect_err("no members");
    assert!(
        matches!(&error, ChangeConfigurationError::Refused(ChangeError::Invalid { members, .. }) if members.is_empty()),
        "{error:?}"
    );
    assert_eq!(solo.ring.status().borrow().configuration.number, 1);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_change_while_one_is_in_progress_is_refused() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    let _held = gate.hold();
    let grow = vec![NodeId(1), NodeId(2)];
    let (first, second) = tokio::join!(
        solo.ring.change_configuration(grow.clone()),
        solo.ring.change_configuration(vec![NodeId(1), NodeId(3)])
    );
    assert_eq!(
        second,
        Err(ChangeConfigurationError::Refused(ChangeError::InProgress { members: grow.clone() }))
    );
    // The first could not be chosen while the log was held.
    assert_eq!(first, Err(ChangeConfigurationError::Timeout { after_ms: 400 }));
    gate.release();
    // It may still take effect, and does: the lone member is a majority of the old
    // configuration.
    let status = status_until(&solo.ring, "the change chosen", |s| s.configuration.members == grow).await;
    assert_eq!(status.configuration.number, 2);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_by_the_primary_is_answered_with_the_new_configuration() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let keep: Vec<NodeId> =
        trio.rings.iter().map(|r| r.node()).filter(|&n| n != trio.rings[trio.other(at)].node()).collect();
    let configuration = trio.rings[at].change_configuration(keep.clone()).await.expect("shrink");
    assert_eq!(configuration.members, keep);
    assert_eq!(configuration.number, 2);
    let status =
        status_until(&trio.rings[at], "in the new configuration", |s| s.configuration.number == 2).await;
    assert_eq!(status.configuration, configuration);
    trio.shutdown().await;
}

// ---- relinquish refusals ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_on_a_secondary_is_refused_naming_the_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let error = trio.rings[trio.other(at)].relinquish_primary(None).await.expect_err("secondary");
    assert_eq!(
        error,
        RelinquishError::Refused(rsl_core::RelinquishError::NotPrimary { hint: Some(trio.rings[at].node()) })
    );
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_to_a_non_member_is_refused_and_the_primary_stays() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let error = trio.rings[at].relinquish_primary(Some(NodeId(9))).await.expect_err("not a member");
    assert_eq!(
        error,
        RelinquishError::Refused(rsl_core::RelinquishError::NotAMember {
            target: NodeId(9),
            configuration: 1
        })
    );
    assert_eq!(trio.rings[at].status().borrow().role, Role::Primary);
    trio.rings[at].replicate(&b"still primary"[..]).await.expect("still takes requests");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_to_itself_is_refused() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let own = trio.rings[at].node();
    let error = trio.rings[at].relinquish_primary(Some(own)).await.expect_err("itself");
    assert!(
        matches!(error, RelinquishError::Refused(rsl_core::RelinquishError::NotAMember { target, .. }) if target == own),
        "{error:?}"
    );
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_has_nobody_to_relinquish_to() {
    let solo = solo().await;
    let error = solo.ring.relinquish_primary(None).await.expect_err("alone");
    assert_eq!(error, RelinquishError::Refused(rsl_core::RelinquishError::NoLiveTarget));
    assert_eq!(solo.ring.status().borrow().role, Role::Primary);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_without_a_target_hands_over_to_a_live_member() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let target = trio.rings[at].relinquish_primary(None).await.expect("hand over");
    assert_ne!(target, trio.rings[at].node());
    let new = trio.rings.iter().find(|r| r.node() == target).expect("a member");
    primary(new).await;
    let error = trio.rings[at].replicate(&b"x"[..]).await.expect_err("no longer primary");
    assert!(matches!(error, ReplicateError::NotPrimary { .. }), "{error:?}");
    trio.shutdown().await;
}

// ---- other controls ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_timing_is_refused_naming_the_field_and_nothing_changes() {
    let solo = solo().await;
    let before = solo.ring.timing();
    let bad = Timing { heartbeat_interval_ms: 0, ..before };
    let error = solo.ring.change_timing(bad).await.expect_err("zero heartbeat");
    assert!(matches!(&error, TimingError::Invalid(_)), "{error:?}");
    assert!(error.to_string().contains("heartbeat_interval_ms"), "{error}");
    assert_eq!(solo.ring.timing(), before);
    let bad = Timing { election_delay_min_ms: 200, election_delay_max_ms: 100, ..before };
    let error = solo.ring.change_timing(bad).await.expect_err("max below min");
    assert!(error.to_string().contains("election_delay_max_ms"), "{error}");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_timing_change_is_reported_by_timing() {
    let solo = solo().await;
    let timing = Timing { heartbeat_interval_ms: 20, election_delay_min_ms: 80, election_delay_max_ms: 160 };
    solo.ring.change_timing(timing).await.expect("valid");
    assert_eq!(solo.ring.timing(), timing);
    solo.ring.replicate(&b"still works"[..]).await.expect("replicate");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_from_itself_is_refused() {
    let solo = solo().await;
    let error = solo.ring.reseed_from(NodeId(1)).await.expect_err("from itself");
    assert!(matches!(error, ReseedError::Refused(rsl_core::ReseedError::FromSelf { .. })), "{error:?}");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_of_the_primary_is_already_done() {
    let solo = solo().await;
    let ballot = solo.ring.status().borrow().promised;
    solo.ring.attempt_promotion().await.expect("already primary");
    assert_eq!(solo.ring.status().borrow().promised, ballot, "no new election");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_of_a_vetoed_replica_is_refused() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let other = trio.other(at);
    trio.probes[other].veto.store(true, Ordering::SeqCst);
    // Two polls after the veto: the core heard the first one's answer.
    trio.probes[other].polled(trio.probes[other].polls() + 2).await;
    let error = trio.rings[other].attempt_promotion().await.expect_err("vetoed");
    assert_eq!(error, PromotionError::Refused(rsl_core::PromotionError::Vetoed));
    assert_eq!(trio.rings[other].status().borrow().role, Role::Secondary);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_of_a_secondary_makes_it_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let other = trio.other(at);
    trio.rings[other].attempt_promotion().await.expect("promoted");
    assert_eq!(trio.rings[other].status().borrow().role, Role::Primary);
    trio.rings[other].replicate(&b"new primary"[..]).await.expect("takes requests");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_past_the_newest_checkpoint_is_refused_naming_the_bound() {
    let solo = solo().await;
    for i in 0..3u8 {
        solo.ring.replicate(vec![i]).await.expect("replicate");
    }
    let checkpoint = solo.ring.checkpoint_now().await.expect("checkpoint");
    let beyond = Slot(checkpoint.0 + 5);
    let error = solo.ring.purge_log(beyond).await.expect_err("beyond the checkpoint");
    assert_eq!(
        error,
        PurgeLogError::Refused(rsl_core::PurgeLogError::BeyondCheckpoint {
            below: beyond,
            checkpoint,
            first_kept: Slot(checkpoint.0 + 1),
        })
    );
    let purged = solo.ring.purge_log(Slot(checkpoint.0 + 1)).await.expect("up to the checkpoint");
    assert_eq!(purged, Slot(checkpoint.0 + 1));
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_refused_by_the_state_machine_names_the_slot() {
    let solo = solo().await;
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    solo.probe.refuse_save.store(true, Ordering::SeqCst);
    let slot = solo.ring.applied();
    assert_eq!(solo.ring.checkpoint_now().await, Err(CheckpointNowError::Refused { slot }));
    assert!(!solo.probe.calls().iter().any(|c| matches!(c, Call::Save(_))), "nothing saved");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_whose_save_fails_says_why_and_keeps_nothing() {
    let solo = solo().await;
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    solo.probe.fail_save.store(true, Ordering::SeqCst);
    let slot = solo.ring.applied();
    match solo.ring.checkpoint_now().await {
        Err(CheckpointNowError::Failed { slot: failed, reason }) => {
            assert_eq!(failed, slot);
            assert!(reason.contains("on fire"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!solo.probe.calls().iter().any(|c| matches!(c, Call::Saved(..))), "nothing kept");
    assert_eq!(solo.ring.status().borrow().checkpoint, Slot(0));
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_of_an_isolated_secondary_says_it_hears_no_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let other = trio.other(at);
    let node = trio.rings[other].node();
    let rest: Vec<NodeId> = trio.rings.iter().map(|r| r.node()).filter(|&n| n != node).collect();
    trio.network.partition(&[&[node], &rest]);
    let ring = &trio.rings[other];
    let not_ready = tokio::time::timeout(support::WAIT, async {
        loop {
            match ring.readiness(ReadinessOptions::default()).await {
                Err(error) => return error,
                Ok(()) => {
                    let mut status = ring.status();
                    let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
                }
            }
        }
    })
    .await
    .expect("not ready within the time limit");
    assert!(matches!(not_ready, NotReady::NoPrimary { .. }), "{not_ready:?}");
    trio.network.heal();
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ring_refuses_writes_but_serves_reads() {
    let solo = solo().await;
    solo.ring.replicate_exclusive(&b"last"[..], true).await.expect("the last request");
    let last_slot = solo.ring.status().borrow().last_slot.expect("closed");
    assert_eq!(solo.ring.replicate(&b"after"[..]).await, Err(ReplicateError::RingClosed { last_slot }));
    assert_eq!(
        solo.ring.replicate_exclusive(&b"after"[..], false).await,
        Err(ReplicateError::RingClosed { last_slot })
    );
    assert_eq!(count(&solo.ring.read(Bytes::new()).await.expect("reads work")), 1);
    assert_eq!(solo.probe.executed(), vec![b"last".to_vec()]);
    solo.ring.shutdown().await;
}
