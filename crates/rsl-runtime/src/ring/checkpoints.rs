//! The ring's checkpoint store as the ring task uses it: how far the log may be truncated
//! (never past the oldest kept checkpoint), fetching a peer's checkpoint (to install it when
//! the replica fell behind a truncated log, or, on a primary, only to keep it so the log can
//! be truncated without the primary saving one itself), the callers of
//! `Ring::checkpoint_now` waiting for their save, and letting go of the store when the ring
//! stops. The apply thread saves and installs checkpoints in the same store; the checkpoint
//! server serves it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rsl_core::{NodeId, RingId, Slot};
use rsl_log::CheckpointStore;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{CheckpointNowError, TransferError};
use crate::transfer::{receive_checkpoint, CheckpointRequest, SharedFetcher};

/// How long a stopping ring waits for a checkpoint being served to release the store.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The slot of the oldest checkpoint the store keeps (zero: none), which bounds log
/// truncation. Shared by whoever changes the store, who refreshes it.
#[derive(Clone, Debug, Default)]
pub(super) struct OldestCheckpoint(Arc<AtomicU64>);

impl OldestCheckpoint {
    /// Reads it again from `store`, after a checkpoint was saved or received.
    pub(super) fn refresh(&self, store: &CheckpointStore) {
        match store.oldest_kept() {
            Ok(slot) => self.0.store(slot.map_or(0, |s| s.0), Ordering::Release),
            Err(error) => tracing::warn!(%error, "cannot list checkpoints"),
        }
    }
}

/// What a fetched checkpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FetchPurpose {
    /// Load it into the state machine (catch-up).
    Install,
    /// Keep it in the store only (a primary copying a secondary's checkpoint).
    Copy,
}

/// A fetch that ended: what it was for, from whom, and the slot and file size it brought.
pub(super) struct Fetched {
    pub(super) purpose: FetchPurpose,
    pub(super) from: NodeId,
    pub(super) result: Result<(Slot, u64), TransferError>,
}

/// A fetch under way: the slot and file size it brings.
type FetchTask = JoinHandle<Result<(Slot, u64), TransferError>>;

/// Where the answer to `Ring::checkpoint_now` goes.
pub(super) type CheckpointNowReply = oneshot::Sender<Result<Slot, CheckpointNowError>>;

/// The checkpoint store and the fetch in flight, owned by the ring task.
pub(super) struct Checkpoints {
    /// `None` once released.
    store: Option<Arc<Mutex<CheckpointStore>>>,
    oldest: OldestCheckpoint,
    fetcher: SharedFetcher,
    /// The fetch in flight: what for, from whom, and the slot and file size it brought.
    fetch: Option<(FetchPurpose, NodeId, FetchTask)>,
    fetch_cancel: watch::Sender<bool>,
    /// Callers of `Ring::checkpoint_now`, with the slot each waits for.
    waiting: Vec<(Slot, CheckpointNowReply)>,
}

impl Checkpoints {
    pub(super) fn new(
        store: Arc<Mutex<CheckpointStore>>,
        oldest: OldestCheckpoint,
        fetcher: SharedFetcher,
    ) -> Checkpoints {
        Checkpoints {
            store: Some(store),
            oldest,
            fetcher,
            fetch: None,
            fetch_cancel: watch::channel(false).0,
            waiting: Vec::new(),
        }
    }

    /// Answers `reply` once a checkpoint at `slot` or later is saved (or this one fails).
    pub(super) fn await_saved(&mut self, slot: Slot, reply: CheckpointNowReply) {
        self.waiting.retain(|(_, reply)| !reply.is_closed());
        self.waiting.push((slot, reply));
    }

    /// A checkpoint at `slot` is durable: answers everyone waiting for it or an older one.
    pub(super) fn saved(&mut self, slot: Slot) {
        self.answer(|waited| (waited <= slot).then_some(Ok(slot)));
    }

    /// The checkpoint at `slot` was not saved: answers those waiting for exactly it.
    pub(super) fn save_failed(&mut self, slot: Slot, error: impl Fn() -> CheckpointNowError) {
        self.answer(|waited| (waited == slot).then(|| Err(error())));
    }

    fn answer(&mut self, outcome: impl Fn(Slot) -> Option<Result<Slot, CheckpointNowError>>) {
        let mut kept = Vec::new();
        for (waited, reply) in std::mem::take(&mut self.waiting) {
            match outcome(waited) {
                Some(result) => drop(reply.send(result)),
                None => kept.push((waited, reply)),
            }
        }
        self.waiting = kept;
    }

    /// Where a truncation the replica asks for (below `below`) may go: never past the slot
    /// after the oldest kept checkpoint, so that falling back to it finds every later slot
    /// in the log; `None` while no checkpoint is kept.
    pub(super) fn truncation_floor(&self, below: Slot) -> Option<Slot> {
        match self.oldest.0.load(Ordering::Acquire) {
            0 => None,
            oldest => Some(below.min(Slot(oldest).next())),
        }
    }

    /// Starts fetching a checkpoint at or above `request.min_slot` from `from`, for
    /// `purpose`; false (nothing started) while another fetch is in flight.
    pub(super) fn start_fetch(
        &mut self,
        purpose: FetchPurpose,
        from: NodeId,
        request: CheckpointRequest,
        timeout: Duration,
    ) -> bool {
        if self.fetch.is_some() {
            return false;
        }
        let fetcher = self.fetcher.current();
        let store = self.store.clone().expect("the store is held while the ring runs");
        let oldest = self.oldest.clone();
        let published = move |store: &CheckpointStore| oldest.refresh(store);
        let mut cancel = self.fetch_cancel.subscribe();
        let (ring, node, slot) = (request.ring.0, request.requester, request.min_slot);
        tracing::info!(ring, %node, %from, %slot, ?purpose, "fetching a checkpoint");
        let fetch = tokio::spawn(async move {
            receive_checkpoint(fetcher, from, request, store, published, timeout, &mut cancel).await
        });
        self.fetch = Some((purpose, from, fetch));
        true
    }

    /// Whether a fetch is in flight.
    pub(super) fn fetching(&self) -> bool {
        self.fetch.is_some()
    }

    /// Waits for the fetch in flight (only call while [`Checkpoints::fetching`]): the slot
    /// and file size it published.
    pub(super) async fn fetched(&mut self) -> Fetched {
        let (purpose, from, fetch) = self.fetch.as_mut().expect("a fetch in flight");
        let (purpose, from) = (*purpose, *from);
        let result = fetch.await.unwrap_or(Err(TransferError::Cancelled));
        self.fetch = None;
        Fetched { purpose, from, result }
    }

    /// Cancels the fetch in flight and waits for it to end.
    pub(super) async fn cancel_fetch(&mut self) {
        let _ = self.fetch_cancel.send(true);
        if let Some((_, _, fetch)) = self.fetch.take() {
            let _ = fetch.await;
        }
    }

    /// Drops the store once nobody else holds it. A peer's checkpoint request may still be
    /// opening a file in it: wait for it to let go, so the store's directory lock is
    /// released before the ring reports itself finished.
    pub(super) async fn release(&mut self, ring: RingId) {
        let Some(mut store) = self.store.take() else { return };
        let deadline = Instant::now() + STORE_RELEASE_WAIT;
        loop {
            match Arc::try_unwrap(store) {
                Ok(store) => {
                    drop(store);
                    return;
                }
                Err(shared) if Instant::now() < deadline => {
                    store = shared;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => {
                    tracing::warn!(
                        ring = ring.0,
                        "the checkpoint store is still in use; it closes when released"
                    );
                    return;
                }
            }
        }
    }
}
