//! Checkpoints through the public `Replica` API: who saves (secondaries, staggered; the
//! primary copies), the fallback when no secondary can save, the byte and time triggers,
//! refused saves tried again, checkpoints on demand, explicit purges, and the report that
//! a new primary recovered.

use std::collections::BTreeSet;

use rsl_core::{Action, CheckpointNowError, NodeId, PurgeLogError, Slot, CHECKPOINT_COPY_ROUNDS_MAX};
use rsl_testkit::{request, Cluster};

/// Proposes `count` requests at `id` one slot each (the batch holds one request), settling
/// after each so every replica applies it.
fn propose_each(cluster: &mut Cluster, id: u64, first: u64, count: u64, bytes: usize) {
    for sequence in first..first + count {
        let payload = "x".repeat(bytes);
        cluster.propose(id, request(sequence, &payload)).expect("the primary takes it");
        cluster.settle();
    }
}

/// The slots of the `TakeCheckpoint`s node `id` emitted.
fn saves(cluster: &Cluster, id: u64) -> Vec<u64> {
    cluster
        .node(id)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::TakeCheckpoint { slot, .. } => Some(slot.0),
            _ => None,
        })
        .collect()
}

/// The `CopyCheckpoint`s node `id` emitted: whom it asked, from which slot.
fn copies(cluster: &Cluster, id: u64) -> Vec<(NodeId, Slot)> {
    cluster
        .node(id)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::CopyCheckpoint { from, slot } => Some((*from, *slot)),
            _ => None,
        })
        .collect()
}

#[test]
fn secondaries_save_at_staggered_slots_and_the_primary_copies_instead() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 6;
        c.log_retain_slots = 2;
    });
    let primary = cluster.elect();
    propose_each(&mut cluster, primary, 0, 24, 8);
    assert!(saves(&cluster, primary).is_empty(), "the primary never saves: {:?}", saves(&cluster, primary));
    let secondaries: Vec<u64> = cluster.ids().filter(|&id| id != primary).collect();
    let (a, b) = (saves(&cluster, secondaries[0]), saves(&cluster, secondaries[1]));
    assert!(a.len() >= 3 && b.len() >= 3, "both secondaries save: {a:?} {b:?}");
    let a_set: BTreeSet<u64> = a.iter().copied().collect();
    assert!(b.iter().all(|slot| !a_set.contains(slot)), "never at the same slot: {a:?} {b:?}");

    // The primary copied a secondary's newest checkpoint and truncated its own log.
    let asked = copies(&cluster, primary);
    assert!(!asked.is_empty(), "the primary copied");
    assert!(asked.iter().all(|(from, _)| secondaries.contains(&from.0)));
    let status = cluster.replica(primary).status();
    assert!(status.checkpoint >= Slot(12), "a recent checkpoint: {status:?}");
    assert!(status.log_start > Slot(1), "the primary's log was truncated: {status:?}");
    let statistics = cluster.replica(primary).statistics();
    assert!(statistics.checkpoints_copied >= 1);
    assert_eq!(statistics.checkpoints_requested, 0);
    cluster.assert_agreement();
}

#[test]
fn a_primary_whose_secondaries_have_no_checkpoint_saves_itself_after_the_copy_rounds() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 4;
        c.checkpoint_retry_ms = 1_000;
    });
    // Secondaries never complete a save: nothing reaches their disks.
    for id in 1..=3 {
        cluster.node_mut(id).auto_checkpoint = false;
    }
    let primary = cluster.elect();
    cluster.node_mut(primary).auto_checkpoint = true;
    propose_each(&mut cluster, primary, 0, 4, 8);
    assert_eq!(copies(&cluster, primary).len(), 2, "a due checkpoint: both secondaries asked");
    assert!(saves(&cluster, primary).is_empty());

    // Between due checkpoints the primary asks again every retry delay; that is no round.
    cluster.advance_ms(1_010);
    assert_eq!(copies(&cluster, primary).len(), 4, "asked again after the retry delay");
    let rounds = u64::from(CHECKPOINT_COPY_ROUNDS_MAX);
    for round in 2..=rounds {
        propose_each(&mut cluster, primary, round * 4, 4, 8);
        assert_eq!(copies(&cluster, primary).len() as u64, 2 + 2 * round, "round {round}");
    }
    assert!(saves(&cluster, primary).is_empty(), "still waiting for a secondary");
    // The next due checkpoint, after that many rounds found nothing: the primary saves.
    propose_each(&mut cluster, primary, 100, 4, 8);
    let saved = saves(&cluster, primary);
    assert_eq!(saved.len(), 1, "the primary saved itself: {saved:?}");
    assert_eq!(cluster.replica(primary).status().checkpoint, Slot(saved[0]));
    assert_eq!(copies(&cluster, primary).len() as u64, 2 + 2 * rounds, "no copy asked for it");
}

#[test]
fn a_refused_save_is_tried_again_after_the_retry_delay_and_nothing_is_lost() {
    let mut cluster = Cluster::new(1, |c| {
        c.checkpoint_interval_slots = 3;
        c.checkpoint_retry_ms = 500;
    });
    cluster.node_mut(1).auto_checkpoint = false;
    cluster.elect();
    propose_each(&mut cluster, 1, 0, 3, 8);
    assert_eq!(saves(&cluster, 1), vec![3]);
    let now = cluster.now;
    cluster.replica_mut(1).on_checkpoint_failed(now, Slot(3));
    cluster.drain(0);
    assert_eq!(cluster.replica(1).statistics().checkpoints_failed, 1);
    // More applies before the retry ask for nothing.
    propose_each(&mut cluster, 1, 3, 1, 8);
    assert_eq!(saves(&cluster, 1), vec![3]);
    cluster.advance_ms(400);
    assert_eq!(saves(&cluster, 1), vec![3]);
    cluster.advance_ms(200);
    assert_eq!(saves(&cluster, 1), vec![3, 4], "tried again with what was applied by then");
    cluster.replica_mut(1).on_checkpoint_saved(Slot(4));
    assert_eq!(cluster.replica(1).status().checkpoint, Slot(4));
    assert_eq!(cluster.node(1).applied_slots(), vec![1, 2, 3, 4]);
}

#[test]
fn the_byte_trigger_counts_applied_value_bytes() {
    let mut cluster = Cluster::new(1, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 0;
        c.checkpoint_interval_bytes = 16 << 10;
    });
    cluster.elect();
    // Each slot carries about 4 KiB: the fifth crosses 16 KiB.
    propose_each(&mut cluster, 1, 0, 4, 4000);
    assert!(saves(&cluster, 1).is_empty());
    propose_each(&mut cluster, 1, 4, 1, 4000);
    assert_eq!(saves(&cluster, 1), vec![5]);
    propose_each(&mut cluster, 1, 5, 5, 4000);
    assert_eq!(saves(&cluster, 1), vec![5, 10], "counted again from the last checkpoint");
}

#[test]
fn the_time_trigger_saves_only_when_something_was_applied() {
    let mut cluster = Cluster::new(1, |c| {
        c.checkpoint_interval_slots = 0;
        c.checkpoint_interval_bytes = 0;
        c.checkpoint_interval_ms = 1_000;
    });
    let elected = {
        cluster.elect();
        cluster.now
    };
    propose_each(&mut cluster, 1, 0, 1, 8);
    assert!(saves(&cluster, 1).is_empty());
    cluster.advance_to(rsl_core::Time(1_000_000).max(elected));
    assert_eq!(saves(&cluster, 1), vec![1], "due a second after start");
    cluster.advance_ms(3_000);
    assert_eq!(saves(&cluster, 1), vec![1], "nothing new to save");
    propose_each(&mut cluster, 1, 1, 1, 8);
    assert_eq!(saves(&cluster, 1), vec![1, 2], "overdue: saved at the next apply");
}

#[test]
fn checkpoint_now_saves_what_was_applied_and_purge_is_bounded_by_the_checkpoint() {
    let mut cluster = Cluster::new(1, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 0;
        c.checkpoint_interval_bytes = 0;
    });
    cluster.elect();
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(1).handle_checkpoint_now(now), Err(CheckpointNowError::NothingApplied));
    propose_each(&mut cluster, 1, 0, 5, 8);
    assert!(saves(&cluster, 1).is_empty(), "no trigger is on");
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(1).handle_checkpoint_now(now), Ok(Slot(5)));
    cluster.drain(0);
    assert_eq!(saves(&cluster, 1), vec![5]);
    assert_eq!(cluster.replica(1).status().log_start, Slot(1), "log_retain_slots keeps the log");
    // Already the newest checkpoint: nothing more to save.
    assert_eq!(cluster.replica_mut(1).handle_checkpoint_now(now), Ok(Slot(5)));
    cluster.drain(0);
    assert_eq!(saves(&cluster, 1), vec![5]);

    let error = cluster.replica_mut(1).handle_purge_log(now, Slot(7)).unwrap_err();
    assert_eq!(
        error,
        PurgeLogError::BeyondCheckpoint { below: Slot(7), checkpoint: Slot(5), first_kept: Slot(6) }
    );
    assert!(error.to_string().contains("newest checkpoint is at slot 5"), "{error}");
    assert_eq!(cluster.replica_mut(1).handle_purge_log(now, Slot(6)), Ok(Slot(6)));
    let truncated = rsl_testkit::drain(cluster.replica_mut(1));
    assert_eq!(truncated, vec![Action::TruncateLog { below: Slot(6) }]);
}

#[test]
fn a_new_primary_reports_recovered_once_after_applying_what_it_inherited() {
    let mut cluster = Cluster::new(3, |c| c.batch_requests_max = 1);
    let first = cluster.elect();
    let recovered = |cluster: &Cluster, id: u64| -> Vec<(usize, Slot)> {
        cluster
            .node(id)
            .actions
            .iter()
            .enumerate()
            .filter_map(|(i, (_, a))| match a {
                Action::PrimaryRecovered { slot, .. } => Some((i, *slot)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(recovered(&cluster, first).len(), 1);
    propose_each(&mut cluster, first, 0, 5, 8);
    assert_eq!(recovered(&cluster, first).len(), 1, "once per takeover");
    for id in cluster.ids().filter(|&id| id != first).collect::<Vec<_>>() {
        assert!(recovered(&cluster, id).is_empty(), "only a primary recovers");
    }

    // Hand over: the next primary inherits slots 1..=5 and reports once it applied them.
    let target = cluster.ids().find(|&id| id != first).unwrap();
    let now = cluster.now;
    cluster.replica_mut(first).handle_relinquish(now, Some(NodeId(target))).expect("relinquish");
    cluster.drain((first - 1) as usize);
    cluster.advance_ms(2_000);
    assert_eq!(cluster.agreed_primary(), Some(target));
    let reports = recovered(&cluster, target);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (position, slot) = reports[0];
    assert!(slot >= Slot(5), "inherited everything chosen before: {slot}");
    let last_apply = cluster.node(target).actions[..position]
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Apply { slot, .. } => Some(*slot),
            _ => None,
        })
        .max();
    assert!(last_apply >= Some(slot), "every inherited slot was handed out before: {last_apply:?}");
}

#[test]
fn the_primary_asks_a_live_secondary_before_one_it_has_not_heard_from() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 4;
    });
    let primary = cluster.elect();
    // The member right after the primary, which it would ask first, goes silent.
    let silent = primary % 3 + 1;
    let live = cluster.ids().find(|&id| id != primary && id != silent).unwrap();
    cluster.isolate(silent);
    cluster.advance_ms(1_500);
    let before = copies(&cluster, primary).len();
    propose_each(&mut cluster, primary, 0, 8, 8);
    let asked = copies(&cluster, primary)[before..].to_vec();
    assert!(!asked.is_empty(), "a due checkpoint");
    assert_eq!(asked[0].0, NodeId(live), "the live secondary first: {asked:?}");
}

#[test]
fn a_checkpoint_installed_on_a_primary_retires_the_in_flight_slots_it_covers() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    // Nothing is acknowledged: three slots stay in flight.
    cluster.set_drop(|m| matches!(m.body, rsl_core::MessageBody::Accepted { .. }));
    propose_each(&mut cluster, primary, 0, 3, 8);
    assert_eq!(cluster.replica(primary).in_flight_slots(), 3);
    // As if a checkpoint at slot 2 fetched before the election completed now: the state
    // machine holds slots 1 and 2 (the values proposed there, as the checkpoint would).
    let proposed: Vec<(Slot, rsl_core::Value)> = cluster
        .node(primary)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Persist(write) => Some(write.proposals.iter().map(|p| (p.slot, p.value.clone()))),
            _ => None,
        })
        .flatten()
        .filter(|(slot, _)| *slot <= Slot(2))
        .collect();
    assert_eq!(proposed.len(), 2);
    let configuration = cluster.replica(primary).status().configuration;
    let now = cluster.now;
    let node = cluster.node_mut(primary);
    node.load_state(proposed);
    node.replica.on_checkpoint_installed(now, Slot(2), configuration);
    let status = cluster.replica(primary).status();
    assert_eq!((status.applied, status.checkpoint), (Slot(2), Slot(2)));
    assert_eq!(cluster.replica(primary).in_flight_slots(), 1, "only slot 3 is still in flight");
    // Slot 3 is still chosen the usual way, and new requests go after it.
    cluster.clear_drop();
    propose_each(&mut cluster, primary, 10, 1, 8);
    cluster.advance_ms(500);
    assert_eq!(cluster.replica(primary).chosen(), Slot(4));
    assert_eq!(cluster.replica(primary).in_flight_slots(), 0);
}
