//! Stopping a ring, in an order that loses nothing durable: record why, send what the
//! replica already released, answer every waiting caller, stop the apply thread, close the
//! log (flushing what is queued), release the checkpoint store, and only then report the
//! ring finished, so a restart can open the same storage at once.

use super::task::RingTask;
use crate::error::RingFailure;

/// Why the ring task's loop ended.
pub(super) enum Stop {
    /// A handle, the runtime or the loss of every handle asked for it.
    Requested(&'static str),
    /// A local failure the ring cannot continue after.
    Failed(RingFailure),
}

impl From<RingFailure> for Stop {
    fn from(failure: RingFailure) -> Stop {
        Stop::Failed(failure)
    }
}

/// A ring whose loop ended: no more inputs are taken, but it still holds its storage until
/// [`Stopping::finish`].
pub(crate) struct Stopping {
    task: RingTask,
    reason: String,
}

impl RingTask {
    /// Ends the loop for `stop`; from here on, handles report its reason.
    pub(super) fn stopping(self, stop: Stop) -> Stopping {
        let (ring, node) = (self.shared.ring.0, self.shared.node);
        let reason = match &stop {
            Stop::Requested(why) => {
                tracing::info!(ring, %node, why, "ring stopping");
                (*why).to_string()
            }
            Stop::Failed(failure) => {
                tracing::error!(ring, %node, %failure, "ring failed; stopping");
                format!("ring failed: {failure}")
            }
        };
        *self.shared.stop_reason.lock() = Some(reason.clone());
        Stopping { task: self, reason }
    }
}

impl Stopping {
    /// Stops everything the ring owns, then releases the storage and reports the ring
    /// finished.
    pub(crate) async fn finish(self) {
        let Stopping { mut task, reason } = self;
        let ring = task.shared.ring;
        // Whatever the replica released is safe to send (it only releases after durability).
        let _ = task.apply.flush();
        task.network.flush_quietly();
        task.checkpoints.cancel_fetch().await;
        task.requests.stop(&reason);
        task.commands.close();
        while let Ok(command) = task.commands.try_recv() {
            command.refuse(&reason);
        }
        let apply_thread = task.apply.stop();
        let committer = task.persist.take();
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(thread) = apply_thread {
                if thread.join().is_err() {
                    tracing::error!(ring = ring.0, "the state machine thread panicked");
                }
            }
            // Close (flushing what is queued) and drop the store here, so its lock is
            // released before the ring reports itself finished.
            committer.map(|log| log.close())
        })
        .await;
        match closed {
            Ok(Some(Err(error))) => tracing::warn!(ring = ring.0, %error, "closing the log"),
            Err(error) => tracing::warn!(ring = ring.0, %error, "closing the log"),
            _ => {}
        }
        task.checkpoints.release(ring).await;
        drop(task.status);
        let _ = task.finished.send(true);
    }
}
