//! Checkpoints through the facade, on in-process rings over the memory network: secondaries
//! save (staggered) while the primary copies their checkpoints and truncates its log; the
//! byte and time triggers; refused and failing saves (retried, nothing lost, the ring keeps
//! serving, and a primary whose secondaries cannot save saves itself); `checkpoint_now` and
//! `purge_log`; the state machine's callbacks, each once at its point; a replica catching
//! up from a checkpoint that a secondary saved.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Tally, WAIT};
use rsl::{
    Ballot, Bytes, CheckpointNowError, NodeId, PurgeLogError, Ring, RingId, Role, RoleChange, Slot,
    StateMachine, Status,
};
use tokio::sync::watch;

const RING: RingId = RingId(1);

/// A callback or save the state machine saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// `save_checkpoint` ran at this slot; whether this replica was primary then, and when.
    Save {
        slot: Slot,
        as_primary: bool,
        at: Instant,
    },
    Saved {
        slot: Slot,
        data_bytes: u64,
    },
    Copied {
        slot: Slot,
        from: NodeId,
        loaded: bool,
    },
    Recovered {
        ballot: Ballot,
        slot: Slot,
        applied: Slot,
    },
    ShutDown,
}

/// What the probe does when asked to save.
const ALLOW: u8 = 0;
const REFUSE: u8 = 1;
const FAIL: u8 = 2;

/// The test's end of a probe: what it saw (and a counter that changes with it, to wait
/// on), and how it answers saves.
#[derive(Clone)]
struct Probe {
    seen: Arc<Mutex<Vec<Seen>>>,
    changes: Arc<watch::Sender<usize>>,
    mode: Arc<AtomicU8>,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            seen: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            mode: Arc::new(AtomicU8::new(ALLOW)),
        }
    }
}

impl Probe {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
        self.changes.send_modify(|count| *count += 1);
    }

    fn saves(&self) -> Vec<(Slot, bool)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Save { slot, as_primary, .. } => Some((slot, as_primary)),
                _ => None,
            })
            .collect()
    }

    fn copies(&self) -> Vec<(Slot, NodeId, bool)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Copied { slot, from, loaded } => Some((slot, from, loaded)),
                _ => None,
            })
            .collect()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// A [`Tally`] that records what the runtime asks of it.
struct Probed {
    tally: Tally,
    probe: Probe,
    primary: bool,
    applied: Slot,
}

impl Probed {
    fn record(&self, seen: Seen) {
        self.probe.record(seen);
    }
}

impl StateMachine for Probed {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        self.applied = slot;
        self.tally.execute(slot, request)
    }

    fn read(&self, request: &[u8]) -> Bytes {
        self.tally.read(request)
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        self.record(Seen::Save { slot, as_primary: self.primary, at: Instant::now() });
        if self.probe.mode.load(Ordering::SeqCst) == FAIL {
            writer.write_all(b"partial")?;
            return Err(std::io::Error::other("disk full (injected)"));
        }
        self.tally.save_checkpoint(slot, writer)
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        self.applied = slot;
        self.tally.load_checkpoint(slot, reader)
    }

    fn allow_save(&mut self, _slot: Slot) -> bool {
        self.probe.mode.load(Ordering::SeqCst) != REFUSE
    }

    fn checkpoint_saved(&mut self, slot: Slot, data_bytes: u64) {
        self.record(Seen::Saved { slot, data_bytes });
    }

    fn checkpoint_copied(&mut self, slot: Slot, from: NodeId, loaded: bool) {
        self.record(Seen::Copied { slot, from, loaded });
    }

    fn primary_recovered(&mut self, ballot: Ballot, slot: Slot) {
        self.record(Seen::Recovered { ballot, slot, applied: self.applied });
    }

    fn shut_down(&mut self) {
        self.record(Seen::ShutDown);
    }

    fn role_changed(&mut self, change: &RoleChange) {
        self.primary = change.role == Role::Primary;
    }
}

fn probed(probe: &Probe) -> Probed {
    Probed { tally: Tally::default(), probe: probe.clone(), primary: false, applied: Slot::ZERO }
}

/// A three-node cluster running `RING` with probes, and `adjust` applied to each config.
async fn probed_cluster(adjust: impl Fn(&mut rsl::Config)) -> (Cluster, BTreeMap<NodeId, Probe>) {
    let mut cluster = Cluster::new(3);
    let probes: BTreeMap<NodeId, Probe> = cluster.members.iter().map(|&n| (n, Probe::default())).collect();
    cluster.start_ring_with(RING, adjust, |node| probed(&probes[&node])).await;
    (cluster, probes)
}

/// Waits until `ring`'s status satisfies `condition`.
async fn status_until(ring: &Ring, what: &str, condition: impl Fn(&Status) -> bool) {
    let mut status = ring.status();
    let reached = tokio::time::timeout(WAIT, status.wait_for(|s| condition(s))).await;
    assert!(matches!(reached, Ok(Ok(_))), "{what}: {:?}", *ring.status().borrow());
}

/// Waits until `probe` saw something `condition` accepts.
async fn seen_until(probe: &Probe, what: &str, condition: impl Fn(&[Seen]) -> bool) {
    let mut changes = probe.changes.subscribe();
    let wait = async {
        while !condition(&probe.seen()) {
            changes.changed().await.expect("the probe lives as long as the test");
        }
    };
    assert!(tokio::time::timeout(WAIT, wait).await.is_ok(), "{what}: {:?}", probe.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondaries_save_staggered_while_the_primary_copies_and_truncates() {
    let (cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 10;
        c.log_retain_slots = 5;
    })
    .await;
    let primary = cluster.primary(RING).await.node();
    cluster.replicate_all(RING, 1..=60).await;
    let ring = cluster.ring(RING, primary);
    status_until(ring, "the primary copied a checkpoint and truncated", |s| {
        s.checkpoint >= Slot(30) && s.log_start > Slot(1)
    })
    .await;

    // On a loaded machine primacy may move away and back while the requests run: this
    // replica may then have saved as a secondary, never as the primary.
    let saves = probes[&primary].saves();
    assert!(saves.iter().all(|(_, as_primary)| !as_primary), "the primary saved as primary: {saves:?}");
    let copies = probes[&primary].copies();
    assert!(copies.iter().all(|(_, from, loaded)| *from != primary && !loaded), "{copies:?}");
    assert!(!copies.is_empty());
    let statistics = ring.statistics().await.unwrap();
    assert!(statistics.runtime.checkpoints_copied >= 1, "{:?}", statistics.runtime);
    assert_eq!(statistics.runtime.checkpoints_saved, saves.len() as u64);

    let secondaries: Vec<NodeId> = cluster.members.iter().copied().filter(|&n| n != primary).collect();
    let slots = |node: NodeId| -> Vec<Slot> { probes[&node].saves().into_iter().map(|(s, _)| s).collect() };
    let (a, b) = (slots(secondaries[0]), slots(secondaries[1]));
    assert!(a.len() >= 3 && b.len() >= 3, "both secondaries save: {a:?} {b:?}");
    assert!(a.iter().all(|slot| !b.contains(slot)), "staggered: {a:?} {b:?}");
    assert!(probes.values().all(|p| p.saves().iter().all(|(_, as_primary)| !as_primary)));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_trigger_saves_with_the_slot_trigger_off() {
    let (cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 0;
        c.batch_bytes_max = 1024;
        c.checkpoint_interval_bytes = 1024;
    })
    .await;
    let primary = cluster.primary(RING).await.node();
    // Each slot holds one 8-byte request: 40 bytes counted, so about 26 slots per KiB.
    cluster.replicate_all(RING, 1..=20).await;
    assert!(probes.values().all(|p| p.saves().is_empty()), "below every byte goal yet");
    cluster.replicate_all(RING, 21..=120).await;
    let secondary = cluster.members.iter().copied().find(|&n| n != primary).unwrap();
    seen_until(&probes[&secondary], "a secondary saved by bytes", |seen| {
        seen.iter().any(|s| matches!(s, Seen::Saved { .. }))
    })
    .await;
    let first = probes[&secondary].saves()[0].0;
    assert!(first >= Slot(25), "not before a KiB of values: {first}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_trigger_saves_with_the_slot_and_byte_triggers_off() {
    let booted = Instant::now();
    let (cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 0;
        c.checkpoint_interval_bytes = 0;
        c.checkpoint_interval_ms = 300;
    })
    .await;
    let primary = cluster.primary(RING).await.node();
    cluster.replicate_all(RING, 1..=5).await;
    let secondary = cluster.members.iter().copied().find(|&n| n != primary).unwrap();
    status_until(cluster.ring(RING, secondary), "a secondary saved by time", |s| s.checkpoint >= Slot(1))
        .await;
    let first = probes[&secondary].seen().into_iter().find_map(|s| match s {
        Seen::Save { at, .. } => Some(at),
        _ => None,
    });
    assert!(first.expect("a save") >= booted + Duration::from_millis(300), "not before the interval");
    // Idle: with nothing new to save, at most the save of what was applied last follows.
    let saved = probes[&secondary].saves().len();
    let applied = cluster.ring(RING, secondary).applied();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cluster.ring(RING, secondary).applied(), applied);
    let after: Vec<Slot> = probes[&secondary].saves().iter().map(|(s, _)| *s).collect();
    assert!(after.len() <= saved + 1 && after.iter().all(|s| *s <= applied), "{after:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failing_saves_are_retried_lose_nothing_and_the_primary_saves_itself() {
    let (cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 5;
        c.checkpoint_retry_ms = 50;
    })
    .await;
    let primary = cluster.primary(RING).await.node();
    let secondaries: Vec<NodeId> = cluster.members.iter().copied().filter(|&n| n != primary).collect();
    probes[&secondaries[0]].set(REFUSE);
    probes[&secondaries[1]].set(FAIL);
    cluster.replicate_all(RING, 1..=30).await;

    // No secondary can save: after rounds of copies that find nothing, the primary saves.
    seen_until(&probes[&primary], "the primary saved itself", |seen| {
        seen.iter().any(|s| matches!(s, Seen::Saved { .. }))
    })
    .await;
    assert!(probes[&primary].saves().iter().all(|(_, as_primary)| *as_primary));
    let refusing = cluster.ring(RING, secondaries[0]).statistics().await.unwrap().runtime;
    let failing = cluster.ring(RING, secondaries[1]).statistics().await.unwrap().runtime;
    assert!(refusing.checkpoint_saves_refused >= 1, "{refusing:?}");
    assert_eq!(refusing.checkpoints_saved, 0);
    assert!(failing.checkpoint_save_failures >= 1, "{failing:?}");
    assert_eq!(failing.checkpoints_saved, 0);
    // Tried again: the failing one kept attempting saves.
    seen_until(&probes[&secondaries[1]], "saves tried again", |seen| {
        seen.iter().filter(|s| matches!(s, Seen::Save { .. })).count() >= 2
    })
    .await;
    assert!(cluster.ring(RING, secondaries[1]).status().borrow().checkpoint == Slot::ZERO);

    // They recover; the ring kept serving throughout and every replica has every request.
    probes[&secondaries[0]].set(ALLOW);
    probes[&secondaries[1]].set(ALLOW);
    cluster.replicate_all(RING, 31..=45).await;
    for &node in &secondaries {
        status_until(cluster.ring(RING, node), "saved once allowed", |s| s.checkpoint > Slot::ZERO).await;
    }
    let applied = cluster.ring(RING, primary).applied();
    let states = cluster.states(RING, applied).await;
    assert!(states.iter().all(|s| *s == Tally::of(1..=45)), "{states:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_saves_on_demand_and_purge_log_is_bounded_by_the_checkpoint() {
    let (cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 0;
        c.checkpoint_interval_bytes = 0;
    })
    .await;
    let primary = cluster.primary(RING).await;
    let node = primary.node();
    cluster.replicate_all(RING, 1..=20).await;
    assert!(probes.values().all(|p| p.saves().is_empty()), "no trigger is on");

    let slot = primary.checkpoint_now().await.expect("checkpoint now");
    assert!(slot >= Slot(20), "{slot}");
    status_until(primary, "the checkpoint is the newest", |s| s.checkpoint == slot).await;
    let saved: Vec<Seen> =
        probes[&node].seen().into_iter().filter(|s| matches!(s, Seen::Saved { .. })).collect();
    assert!(
        matches!(saved.as_slice(), [Seen::Saved { slot: s, data_bytes }] if *s == slot && *data_bytes > 0)
    );
    assert_eq!(primary.checkpoint_now().await, Ok(slot), "already saved: at once");
    assert_eq!(probes[&node].saves().len(), 1);

    let beyond = Slot(slot.0 + 2);
    let error = primary.purge_log(beyond).await.expect_err("beyond the checkpoint");
    assert!(matches!(error, PurgeLogError::Refused(_)), "{error}");
    assert!(error.to_string().contains(&format!("newest checkpoint is at slot {slot}")), "{error}");
    assert_eq!(primary.status().borrow().log_start, Slot(1), "log_retain_slots kept it");
    let purged = primary.purge_log(slot.next()).await.expect("purge");
    assert_eq!(purged, slot.next());
    status_until(primary, "the log starts after the checkpoint", |s| s.log_start == slot.next()).await;

    // Refused by the state machine: a clear error, and nothing saved.
    let secondary = cluster.members.iter().copied().find(|&n| n != node).unwrap();
    probes[&secondary].set(REFUSE);
    let ring = cluster.ring(RING, secondary);
    cluster.applied(ring, slot).await;
    let error = ring.checkpoint_now().await.expect_err("refused");
    assert!(matches!(error, CheckpointNowError::Refused { .. }), "{error}");
    probes[&secondary].set(FAIL);
    let error = ring.checkpoint_now().await.expect_err("failing");
    assert!(
        matches!(error, CheckpointNowError::Failed { ref reason, .. } if reason.contains("disk full")),
        "{error}"
    );
    probes[&secondary].set(ALLOW);
    assert!(ring.checkpoint_now().await.expect("allowed") >= slot);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_before_anything_was_applied_says_so() {
    let mut cluster = Cluster::new(1);
    cluster.start_ring(RING, |c| c.checkpoint_interval_slots = 0).await;
    let ring = cluster.primary(RING).await;
    assert_eq!(ring.checkpoint_now().await, Err(CheckpointNowError::NothingApplied));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_fire_once_each_at_their_point() {
    let (mut cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 5;
        c.log_retain_slots = 2;
    })
    .await;
    let first = cluster.primary(RING).await.node();
    cluster.replicate_all(RING, 1..=3).await;
    let recovered = |node: NodeId| -> Vec<Seen> {
        probes[&node].seen().into_iter().filter(|s| matches!(s, Seen::Recovered { .. })).collect()
    };
    assert!(
        matches!(recovered(first).as_slice(), [Seen::Recovered { slot, applied, .. }] if applied >= slot)
    );

    // Hand over: the new primary reports once, after executing what it inherited.
    let target = cluster.members.iter().copied().find(|&n| n != first).unwrap();
    let before = cluster.ring(RING, first).applied();
    cluster.ring(RING, first).relinquish_primary(Some(target)).await.expect("relinquish");
    status_until(cluster.ring(RING, target), "the target took over", |s| s.role == Role::Primary).await;
    seen_until(&probes[&target], "the new primary recovered", |seen| {
        seen.iter().any(|s| matches!(s, Seen::Recovered { .. }))
    })
    .await;
    cluster.replicate_all(RING, 4..=12).await;
    let reports = recovered(target);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let Seen::Recovered { slot, applied, .. } = reports[0] else { unreachable!() };
    assert!(slot >= before && applied >= slot, "recovered at {slot} with {applied} applied, {before} before");
    assert_eq!(recovered(first).len(), 1, "the old primary reported only its own term");

    // Saved, then shut down: each once, shut down last.
    let third = cluster.members.iter().copied().find(|&n| n != first && n != target).unwrap();
    seen_until(&probes[&third], "a save", |seen| seen.iter().any(|s| matches!(s, Seen::Saved { .. }))).await;
    let seen = probes[&third].seen();
    for (i, event) in seen.iter().enumerate() {
        if let Seen::Saved { slot, .. } = event {
            assert!(
                matches!(seen[..i].last(), Some(Seen::Save { slot: s, .. }) if s == slot),
                "saved right after its save: {seen:?}"
            );
            let count = seen.iter().filter(|e| matches!(e, Seen::Saved { slot: s, .. } if s == slot)).count();
            assert_eq!(count, 1, "once per checkpoint: {seen:?}");
        }
    }
    cluster.stop(RING, third).await;
    let seen = probes[&third].seen();
    assert_eq!(seen.last(), Some(&Seen::ShutDown));
    assert_eq!(seen.iter().filter(|s| **s == Seen::ShutDown).count(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_catches_up_from_a_checkpoint_a_secondary_saved() {
    let (mut cluster, probes) = probed_cluster(|c| {
        c.checkpoint_interval_slots = 5;
        c.log_retain_slots = 2;
    })
    .await;
    let primary = cluster.primary(RING).await.node();
    let lagging = cluster.members.iter().copied().find(|&n| n != primary).unwrap();
    let saver = cluster.members.iter().copied().find(|&n| n != primary && n != lagging).unwrap();
    cluster.stop(RING, lagging).await;
    cluster.replicate_all(RING, 1..=40).await;
    // The remaining secondary saves; the primary copies and truncates past what the lagging
    // replica has.
    status_until(cluster.ring(RING, primary), "the primary truncated", |s| s.log_start > Slot(10)).await;
    // The secondary saved. (The primary copies its checkpoints; on a loaded machine the
    // secondary may lag so that the primary falls back to saving one itself, by design.)
    assert!(!probes[&saver].saves().is_empty(), "the secondary saved");

    let fresh = Probe::default();
    cluster.restart_with(RING, lagging, probed(&fresh)).await.expect("restart");
    let applied = cluster.ring(RING, primary).applied();
    let states = cluster.states(RING, applied).await;
    assert!(states.iter().all(|s| *s == Tally::of(1..=40)), "{states:?}");
    let copies = fresh.copies();
    assert!(!copies.is_empty(), "installed a checkpoint");
    assert!(copies.iter().all(|(_, from, loaded)| *loaded && *from != lagging), "{copies:?}");
    // Whichever replica served it, the state in it was saved by the secondary.
    let (slot, _, _) = copies[0];
    assert!(slot > Slot(10), "{copies:?}");
    assert!(probes[&saver].saves().iter().any(|(s, _)| *s == slot), "{slot} {:?}", probes[&saver].saves());
    cluster.shutdown().await;
}
