//! The hooks a state machine implements, driven through the runtime: role changes, the
//! primary's recovery, configuration changes, the election veto, the checkpoint callbacks
//! (postponed, failed, saved, loaded at start), a panicking `execute`, and `shut_down`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rsl_core::{NodeId, Role, Slot};
use rsl_runtime::{BuildError, MemoryStorage, ReplicateError, RoleChange, StartError};
use support::{config, count, primary, quick_options, solo_started, solo_with, status_until, Call, Trio};

fn roles(calls: &[Call]) -> Vec<RoleChange> {
    calls.iter().filter_map(|c| if let Call::Role(change) = c { Some(*change) } else { None }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_is_told_it_became_primary_with_its_ballot() {
    let solo = support::solo().await;
    let ballot = solo.ring.status().borrow().promised;
    let calls =
        solo.probe.until("told primary", |calls| roles(calls).iter().any(|r| r.role == Role::Primary)).await;
    let primary = roles(&calls).into_iter().find(|r| r.role == Role::Primary).unwrap();
    assert_eq!(primary, RoleChange { role: Role::Primary, ballot, primary: Some(NodeId(1)) });
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondaries_are_told_whom_they_follow() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let leader = trio.rings[at].node();
    let other = trio.other(at);
    let calls = trio.probes[other]
        .until("told secondary", |calls| {
            roles(calls).iter().any(|r| r.role == Role::Secondary && r.primary == Some(leader))
        })
        .await;
    assert!(!roles(&calls).iter().any(|r| r.role == Role::Primary), "{calls:?}");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_recovered_comes_once_before_the_new_primarys_own_requests() {
    let solo = support::solo().await;
    solo.ring.replicate(&b"first"[..]).await.expect("replicate");
    solo.ring.replicate(&b"second"[..]).await.expect("replicate");
    let calls = solo.probe.calls();
    let recovered: Vec<usize> =
        calls.iter().enumerate().filter(|(_, c)| matches!(c, Call::Recovered(..))).map(|(i, _)| i).collect();
    assert_eq!(recovered.len(), 1, "{calls:?}");
    let first_execute = calls.iter().position(|c| matches!(c, Call::Execute(..))).unwrap();
    assert!(recovered[0] < first_execute, "{calls:?}");
    let Call::Recovered(ballot, _) = calls[recovered[0]] else { unreachable!() };
    assert_eq!(ballot, solo.ring.status().borrow().promised);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_sees_increasing_slots_and_every_request_once() {
    let solo = support::solo().await;
    for i in 0..10u8 {
        assert_eq!(solo.ring.replicate(vec![i]).await.expect("replicate"), Bytes::from(vec![i]));
    }
    let slots: Vec<Slot> = solo
        .probe
        .calls()
        .iter()
        .filter_map(|c| if let Call::Execute(slot, _) = c { Some(*slot) } else { None })
        .collect();
    assert_eq!(slots.len(), 10);
    assert!(slots.windows(2).all(|w| w[0] <= w[1]), "{slots:?}");
    assert_eq!(solo.probe.executed(), (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(solo.ring.applied() >= *slots.last().unwrap());
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_is_told_of_a_configuration_change_at_its_slot() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let removed = trio.rings[trio.other(at)].node();
    let keep: Vec<NodeId> = trio.rings.iter().map(|r| r.node()).filter(|&n| n != removed).collect();
    trio.rings[at].change_configuration(keep.clone()).await.expect("shrink");
    for (ring, probe) in trio.rings.iter().zip(&trio.probes) {
        if ring.node() == removed {
            continue;
        }
        let calls = probe
            .until("told of the change", |calls| {
                calls.iter().any(|c| matches!(c, Call::Configuration(_, m) if *m == keep))
            })
            .await;
        let slot = calls
            .iter()
            .find_map(|c| if let Call::Configuration(slot, _) = c { Some(*slot) } else { None })
            .unwrap();
        let status = status_until(ring, "the new configuration", |s| s.configuration.members == keep).await;
        assert_eq!(status.configuration.first_slot, Slot(slot.0 + 1), "it governs from the next slot");
    }
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoed_lone_replica_stays_secondary_until_the_veto_lifts() {
    let (probe_config, options) = (config(1, &[1]), quick_options());
    let solo = {
        // Veto from the start: start without waiting for primacy.
        let solo = solo_started(probe_config, options, MemoryStorage::new().into()).await;
        solo.probe.veto.store(true, Ordering::SeqCst);
        solo
    };
    let polls_before = 5;
    solo.probe.polled(polls_before).await;
    // It may have won before the veto was set; if so this test has nothing to say.
    if solo.ring.status().borrow().role != Role::Primary {
        solo.probe.polled(polls_before + 5).await;
        assert_eq!(solo.ring.status().borrow().role, Role::Secondary, "vetoed replicas do not campaign");
        let error = solo.ring.replicate(&b"x"[..]).await.expect_err("not primary");
        assert!(matches!(error, ReplicateError::NotPrimary { .. }));
        solo.probe.veto.store(false, Ordering::SeqCst);
        primary(&solo.ring).await;
    }
    solo.ring.replicate(&b"x"[..]).await.expect("primary once the veto lifted");
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoed_secondary_never_takes_over_while_the_other_does() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let vetoed = trio.other(at);
    let free = trio.other(vetoed);
    assert_ne!(free, at);
    trio.probes[vetoed].veto.store(true, Ordering::SeqCst);
    trio.probes[vetoed].polled(trio.probes[vetoed].polls() + 2).await;
    // The primary goes away; only the free secondary may take over.
    trio.runtimes[at].shutdown().await;
    primary(&trio.rings[free]).await;
    assert_eq!(trio.rings[vetoed].status().borrow().role, Role::Secondary);
    trio.rings[free].replicate(&b"after"[..]).await.expect("the new primary serves");
    trio.shutdown().await;
}

/// A lone primary that saves every 3 slots and retries after 20 ms, with the flag `flag`
/// picks set from the start, after 4 writes: a save is due.
async fn past_a_checkpoint_interval(flag: impl Fn(&support::Controls) -> &AtomicBool) -> support::Solo {
    let mut probe_config = config(1, &[1]);
    probe_config.checkpoint_interval_slots = 3;
    probe_config.checkpoint_retry_ms = 20;
    let solo = solo_started(probe_config, quick_options(), MemoryStorage::new().into()).await;
    flag(&solo.probe).store(true, Ordering::SeqCst);
    primary(&solo.ring).await;
    for i in 0..4u8 {
        solo.ring.replicate(vec![i]).await.expect("replicate");
    }
    solo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postponed_save_is_asked_again_and_saved_once_allowed() {
    let solo = past_a_checkpoint_interval(|probe| &probe.refuse_save).await;
    let asked = |calls: &[Call]| calls.iter().filter(|c| matches!(c, Call::AllowSave(_))).count();
    let calls = solo.probe.until("asked twice", |calls| asked(calls) >= 2).await;
    assert!(!calls.iter().any(|c| matches!(c, Call::Save(_))), "refused saves do not save: {calls:?}");
    solo.probe.refuse_save.store(false, Ordering::SeqCst);
    let calls = solo.probe.until("saved", |calls| calls.iter().any(|c| matches!(c, Call::Saved(..)))).await;
    let saved = calls.iter().position(|c| matches!(c, Call::Saved(..))).unwrap();
    assert!(matches!(calls[saved - 1], Call::Save(_)), "saved right after save: {calls:?}");
    assert!(matches!(calls[saved - 2], Call::AllowSave(_)), "asked right before save: {calls:?}");
    let statistics = solo.ring.statistics().await.expect("running");
    assert!(statistics.runtime.checkpoint_saves_refused >= 1, "{:?}", statistics.runtime);
    assert!(statistics.runtime.checkpoints_saved >= 1);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_is_retried_and_counted() {
    let solo = past_a_checkpoint_interval(|probe| &probe.fail_save).await;
    let saves = |calls: &[Call]| calls.iter().filter(|c| matches!(c, Call::Save(_))).count();
    let calls = solo.probe.until("two failed saves", |calls| saves(calls) >= 2).await;
    assert!(!calls.iter().any(|c| matches!(c, Call::Saved(..))), "{calls:?}");
    solo.probe.fail_save.store(false, Ordering::SeqCst);
    solo.probe.until("saved", |calls| calls.iter().any(|c| matches!(c, Call::Saved(..)))).await;
    let statistics = solo.ring.statistics().await.expect("running");
    assert!(statistics.runtime.checkpoint_save_failures >= 1, "{:?}", statistics.runtime);
    status_until(&solo.ring, "the checkpoint in the status", |s| s.checkpoint > Slot(0)).await;
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_saved_reports_the_slot_and_the_bytes_written() {
    let solo = support::solo().await;
    for i in 0..3u8 {
        solo.ring.replicate(vec![i]).await.expect("replicate");
    }
    let slot = solo.ring.checkpoint_now().await.expect("checkpoint");
    assert_eq!(slot, solo.ring.applied());
    let calls = solo.probe.calls();
    assert!(calls.contains(&Call::Save(slot)), "{calls:?}");
    // The ring's record (36 bytes for one member) in front of the probe's 8.
    assert!(calls.contains(&Call::Saved(slot, 36 + 8)), "{calls:?}");
    assert_eq!(solo.ring.status().borrow().checkpoint, slot);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_newest_checkpoint_before_anything_else() {
    let storage = MemoryStorage::new();
    let solo = solo_with(config(1, &[1]), quick_options(), storage.clone().into()).await;
    for i in 0..4u8 {
        solo.ring.replicate(vec![i]).await.expect("replicate");
    }
    let slot = solo.ring.checkpoint_now().await.expect("checkpoint");
    solo.ring.shutdown().await;

    let again = solo_with(config(1, &[1]), quick_options(), storage.into()).await;
    let calls = again.probe.calls();
    assert_eq!(calls.first(), Some(&Call::Load(slot)), "{calls:?}");
    assert_eq!(again.ring.recovery().checkpoint, slot);
    assert_eq!(count(&again.ring.read(Bytes::new()).await.expect("read")), 4);
    again.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_the_state_machine_cannot_load_refuses_the_start() {
    let storage = MemoryStorage::new();
    let solo = solo_with(config(1, &[1]), quick_options(), storage.clone().into()).await;
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    let slot = solo.ring.checkpoint_now().await.expect("checkpoint");
    solo.ring.shutdown().await;

    let (probe, controls) = support::Probe::new();
    controls.fail_load.store(true, Ordering::SeqCst);
    let network = rsl_transport::MemoryNetwork::new(1);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    let error = rsl_runtime::Ring::builder(config(1, &[1]))
        .state_machine(probe)
        .storage(storage)
        .transport(std::sync::Arc::new(endpoint), inbound, rsl_runtime::RuntimeOptions::default())
        .start()
        .await
        .expect_err("the load fails");
    match error {
        BuildError::Start(StartError::LoadCheckpoint { slot: failed, source, .. }) => {
            assert_eq!(failed, slot);
            assert!(source.to_string().contains("cannot read its checkpoint"), "{source}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(controls.calls(), vec![Call::Load(slot)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_execute_stops_the_ring_and_fails_the_request() {
    let solo = support::solo().await;
    solo.ring.replicate(&b"fine"[..]).await.expect("replicate");
    *solo.probe.panic_on.lock().unwrap() = Some(b"boom".to_vec());
    let error = solo.ring.replicate(&b"boom"[..]).await.expect_err("the state machine died");
    // The request waited for its apply answer, which never comes: the ring notices the
    // apply thread is gone and fails it as shut down, not as timed out.
    assert!(
        matches!(&error, ReplicateError::Shutdown { reason } if reason.contains("state machine")),
        "{error:?}"
    );
    // Every later request is refused the same way, and the ring stops by itself.
    let later = solo.ring.replicate(&b"later"[..]).await.expect_err("the ring stopped");
    assert!(
        matches!(&later, ReplicateError::Shutdown { reason } if reason.contains("state machine")),
        "{later:?}"
    );
    let reason = solo.ring.stop_reason().expect("a reason");
    assert!(reason.contains("state machine"), "{reason}");
    assert_eq!(solo.probe.executed(), vec![b"fine".to_vec()]);
    tokio::time::timeout(support::WAIT, solo.ring.shutdown()).await.expect("the ring finishes");
    assert!(solo.ring.is_stopped());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut_down_is_the_last_call_and_comes_once() {
    let solo = support::solo().await;
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    solo.ring.shutdown().await;
    let calls = solo.probe.calls();
    assert_eq!(calls.last(), Some(&Call::ShutDown), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == Call::ShutDown).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_told_it_loaded_a_copied_checkpoint() {
    let trio = Trio::start(|c| {
        c.checkpoint_interval_slots = 4;
        c.log_retain_slots = 1;
    })
    .await;
    let at = trio.primary().await;
    let lagging = trio.other(at);
    let lagging_node = trio.rings[lagging].node();
    let rest: Vec<NodeId> = trio.rings.iter().map(|r| r.node()).filter(|&n| n != lagging_node).collect();
    trio.network.partition(&[&[lagging_node], &rest]);
    for i in 0..30u8 {
        trio.rings[at].replicate(vec![i]).await.expect("replicate");
    }
    // Wait for the log to be truncated past what the lagging replica has.
    status_until(&trio.rings[at], "the primary truncated", |s| s.log_start > Slot(10)).await;
    trio.network.heal();
    let calls = trio.probes[lagging]
        .until("a checkpoint loaded from a peer", |calls| {
            calls.iter().any(|c| matches!(c, Call::Copied(_, _, true)))
        })
        .await;
    let copied = calls.iter().position(|c| matches!(c, Call::Copied(_, _, true))).unwrap();
    let Call::Copied(slot, from, _) = calls[copied] else { unreachable!() };
    assert_ne!(from, lagging_node);
    assert_eq!(calls[copied - 1], Call::Load(slot), "loaded right before: {calls:?}");
    let applied = trio.rings[at].applied();
    status_until(&trio.rings[lagging], "caught up", |s| s.applied >= applied).await;
    let state = trio.rings[lagging].read_fast(Bytes::new(), applied).await.expect("fast read");
    assert_eq!(count(&state), 30);
    trio.shutdown().await;
}
