//! The ring's checkpoint store as the ring task uses it: how far the log may be truncated
//! (never past the oldest kept checkpoint), fetching a peer's checkpoint when the replica
//! fell behind a truncated log, and letting go of the store when the ring stops. The apply
//! thread saves and installs checkpoints in the same store; the checkpoint server serves it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rsl_core::{NodeId, RingId, Slot};
use rsl_log::CheckpointStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::TransferError;
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

/// The checkpoint store and the fetch in flight, owned by the ring task.
pub(super) struct Checkpoints {
    /// `None` once released.
    store: Option<Arc<Mutex<CheckpointStore>>>,
    oldest: OldestCheckpoint,
    fetcher: SharedFetcher,
    /// The fetch in flight: the slot and file size it brought.
    fetch: Option<JoinHandle<Result<(Slot, u64), TransferError>>>,
    fetch_cancel: watch::Sender<bool>,
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
        }
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

    /// Starts fetching a checkpoint at or above `request.min_slot` from `from`, unless a
    /// fetch is already in flight.
    pub(super) fn start_fetch(&mut self, from: NodeId, request: CheckpointRequest, timeout: Duration) {
        if self.fetch.is_some() {
            return;
        }
        let fetcher = self.fetcher.current();
        let store = self.store.clone().expect("the store is held while the ring runs");
        let oldest = self.oldest.clone();
        let published = move |store: &CheckpointStore| oldest.refresh(store);
        let mut cancel = self.fetch_cancel.subscribe();
        let (ring, node, slot) = (request.ring.0, request.requester, request.min_slot);
        tracing::info!(ring, %node, %from, %slot, "fetching a checkpoint");
        self.fetch = Some(tokio::spawn(async move {
            receive_checkpoint(fetcher, from, request, store, published, timeout, &mut cancel).await
        }));
    }

    /// Whether a fetch is in flight.
    pub(super) fn fetching(&self) -> bool {
        self.fetch.is_some()
    }

    /// Waits for the fetch in flight (only call while [`Checkpoints::fetching`]): the slot
    /// and file size it published.
    pub(super) async fn fetched(&mut self) -> Result<(Slot, u64), TransferError> {
        let fetch = self.fetch.as_mut().expect("a fetch in flight");
        let result = fetch.await.unwrap_or(Err(TransferError::Cancelled));
        self.fetch = None;
        result
    }

    /// Cancels the fetch in flight and waits for it to end.
    pub(super) async fn cancel_fetch(&mut self) {
        let _ = self.fetch_cancel.send(true);
        if let Some(fetch) = self.fetch.take() {
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
