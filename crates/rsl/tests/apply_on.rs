//! Where the state machine runs (`RingOptions::apply_on`): every test runs once with the
//! apply thread and once with the state machine on the ring task, and checks the same
//! behaviour: answers and their order, replicas that agree, reads, checkpoints saved,
//! refused by an error and installed on a lagging replica, an error answered by `execute`,
//! and a panicking `execute`, which stops the ring without leaving callers waiting.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{Cluster, Tally, WAIT};
use rsl::{ApplyOn, Bytes, CheckpointNowError, ReplicateError, RingId, Slot, StateMachine};

const RING: RingId = RingId(1);
const MODES: [ApplyOn; 2] = [ApplyOn::Thread, ApplyOn::RingTask];
/// The request that makes [`Checked`] panic.
const PANIC: u64 = u64::MAX;

/// [`Tally`] that answers a request that is not an 8-byte number with an error (without
/// changing its state), panics on [`PANIC`], and fails its saves while `fail_saves` is set.
#[derive(Default)]
struct Checked {
    tally: Tally,
    fail_saves: Arc<AtomicBool>,
}

impl StateMachine for Checked {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        let Ok(number) = <[u8; 8]>::try_from(request) else {
            return Bytes::from_static(b"error: not an 8-byte number");
        };
        assert_ne!(u64::from_le_bytes(number), PANIC, "the state machine was asked to panic");
        self.tally.execute(slot, request)
    }

    fn read(&self, request: &[u8]) -> Bytes {
        self.tally.read(request)
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        if self.fail_saves.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("saves fail in this test"));
        }
        self.tally.save_checkpoint(slot, writer)
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        self.tally.load_checkpoint(slot, reader)
    }
}

async fn cluster(
    apply_on: ApplyOn,
    adjust: impl Fn(&mut rsl::Config),
    fail_saves: &Arc<AtomicBool>,
) -> Cluster {
    let mut cluster = Cluster::new(3);
    cluster.options.apply_on = apply_on;
    let fail_saves = fail_saves.clone();
    cluster
        .start_ring_with(RING, adjust, move |_| Checked {
            tally: Tally::default(),
            fail_saves: fail_saves.clone(),
        })
        .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_in_order_and_replicas_agree_in_both_modes() {
    for mode in MODES {
        let cluster = cluster(mode, |_| {}, &Arc::default()).await;
        // One after another: each answer is the state right after its own request.
        for request in 1..=20 {
            assert_eq!(cluster.replicate(RING, request).await, Tally::of(1..=request), "{mode:?}");
        }
        // An answer that is an error leaves the state alone.
        let primary = cluster.primary(RING).await.clone();
        let answer = primary.replicate(&b"not a number"[..]).await.expect("replicated");
        assert_eq!(&answer[..], b"error: not an 8-byte number", "{mode:?}");
        // Many at once, sharing slots: every replica executes them in the same order.
        let tasks: Vec<_> = (21..=120u64)
            .map(|request| {
                let primary = primary.clone();
                tokio::spawn(async move { primary.replicate(request.to_le_bytes().to_vec()).await })
            })
            .collect();
        let mut counts = Vec::new();
        for task in tasks {
            counts.push(Tally::decode(&task.await.expect("task").expect("replicated")).count);
        }
        counts.sort_unstable();
        assert_eq!(counts, (21..=120).collect::<Vec<u64>>(), "{mode:?}: each answer saw its own position");
        let applied = primary.applied();
        let states = cluster.states(RING, applied).await;
        assert!(states.windows(2).all(|pair| pair[0] == pair[1]), "{mode:?}: {states:?}");
        assert_eq!((states[0].count, states[0].total), (120, (1..=120).sum::<u64>()), "{mode:?}");
        // A linearizable read sees all of it.
        let read = primary.read(Vec::new()).await.expect("read");
        assert_eq!(Tally::decode(&read), states[0], "{mode:?}");
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_saved_refused_by_errors_and_installed_in_both_modes() {
    for mode in MODES {
        let fail_saves = Arc::new(AtomicBool::new(false));
        let mut cluster = cluster(
            mode,
            |c| {
                c.checkpoint_interval_slots = 5;
                c.log_retain_slots = 2;
            },
            &fail_saves,
        )
        .await;
        let primary = cluster.primary(RING).await.node();
        let secondaries: Vec<_> = cluster.members.iter().copied().filter(|&n| n != primary).collect();
        let (lagging, saver) = (secondaries[0], secondaries[1]);
        cluster.stop(RING, lagging).await;
        cluster.replicate_all(RING, 1..=40).await;
        let mut status = cluster.ring(RING, primary).status();
        // (The status is borrowed only inside the check: a borrow held on blocks the ring.)
        let truncated = tokio::time::timeout(WAIT, status.wait_for(|s| s.log_start > Slot(10))).await;
        assert!(matches!(truncated, Ok(Ok(_))), "{mode:?}: the primary truncated after a copy");
        drop(truncated);

        // A save that fails is reported and the ring goes on; once it works it is kept.
        fail_saves.store(true, Ordering::SeqCst);
        let refused = cluster.ring(RING, saver).checkpoint_now().await;
        assert!(matches!(refused, Err(CheckpointNowError::Failed { .. })), "{mode:?}: {refused:?}");
        cluster.replicate(RING, 41).await;
        let newest = cluster.ring(RING, primary).applied();
        cluster.applied(cluster.ring(RING, saver), newest).await;
        fail_saves.store(false, Ordering::SeqCst);
        let saved = cluster.ring(RING, saver).checkpoint_now().await.expect("saved");
        assert!(saved >= newest, "{mode:?}: saved at {saved}, applied {newest}");

        // The lagging replica's slots are gone from the log: it installs a checkpoint.
        cluster.restart(RING, lagging).await.expect("restart");
        let applied = cluster.ring(RING, primary).applied();
        let states = cluster.states(RING, applied).await;
        assert!(states.iter().all(|s| *s == Tally::of(1..=41)), "{mode:?}: {states:?}");
        let installed = cluster.ring(RING, lagging).statistics().await.expect("running").runtime;
        assert!(installed.checkpoints_installed >= 1, "{mode:?}: {installed:?}");
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_execute_stops_the_ring_and_answers_its_callers_in_both_modes() {
    for mode in MODES {
        let cluster = cluster(mode, |_| {}, &Arc::default()).await;
        cluster.replicate_all(RING, 1..=3).await;
        let primary = cluster.primary(RING).await.clone();
        let answer = tokio::time::timeout(WAIT, primary.replicate(PANIC.to_le_bytes().to_vec()))
            .await
            .expect("answered, not left waiting");
        let Err(ReplicateError::Shutdown { reason }) = answer else {
            panic!("{mode:?}: the panicking request was answered {answer:?}");
        };
        assert!(reason.contains("state machine"), "{mode:?}: {reason}");
        // The ring that executed it stopped (the others stop too once they execute it, if
        // they learn it chosen); later calls fail at once.
        let mut status = primary.status();
        let stopped = tokio::time::timeout(WAIT, status.wait_for(|_| false)).await;
        assert!(matches!(stopped, Ok(Err(_))), "{mode:?}: the primary stopped");
        let later = primary.replicate(4u64.to_le_bytes().to_vec()).await;
        assert!(matches!(later, Err(ReplicateError::Shutdown { .. })), "{mode:?}: {later:?}");
        assert!(primary.stop_reason().is_some_and(|reason| reason.contains("state machine")), "{mode:?}");
        cluster.shutdown().await;
    }
}
