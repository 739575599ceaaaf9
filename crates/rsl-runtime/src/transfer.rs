//! Checkpoint transfer between replicas: the runtime's halves of the seam that
//! [`rsl_transport::checkpoint`] defines (and this module re-exports).
//!
//! The consensus messages ([`rsl_core::Message`]) are small and latency-sensitive; a
//! checkpoint is a file of any size. So checkpoints move on a path of their own:
//!
//! - [`CheckpointServer`] (one per runtime) answers a [`CheckpointRequest`] from its rings'
//!   checkpoint stores with a [`CheckpointStream`]: the slot, the file's length, and the
//!   raw file in chunks ([`rsl_log::CheckpointStore::chunks`]). It is the
//!   [`CheckpointSource`] the runtime hands its transport
//!   ([`rsl_transport::Transport::serve_checkpoints`]).
//! - A [`CheckpointFetcher`] (the client side) opens such a stream on a peer. The runtime
//!   writes the chunks into a [`rsl_log::checkpoint::CheckpointReceiver`], which verifies
//!   every block checksum and the trailer before publishing the file, so nothing a peer (or
//!   the network) damaged is ever loaded.
//!
//! Which fetcher a runtime uses: [`RuntimeOptions::checkpoint_fetcher`](crate::RuntimeOptions::checkpoint_fetcher)
//! if set; otherwise the transport's own (the gRPC transport fetches over the replica port,
//! under its mutual TLS, from the peer's `CheckpointTransfer` service); otherwise
//! [`NoCheckpointTransfer`]. [`LocalCheckpointNetwork`] implements the fetcher for runtimes
//! in one process (tests, examples, the in-memory transport).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rsl_core::{NodeId, RingId, Slot};
use rsl_log::{CheckpointError, CheckpointStore};
use rsl_transport::{Admission, Transport};
use tokio::sync::{mpsc, watch};

pub use rsl_transport::checkpoint::{
    BoxFuture, CheckpointFetcher, CheckpointRequest, CheckpointSource, CheckpointStream,
};

use crate::error::{store_error, TransferError};
use crate::stats::RingCounters;

/// Chunks a stream buffers ahead of its reader.
const STREAM_CHUNKS_BUFFERED: usize = 4;

/// The fetcher a runtime uses, which [`Runtime::set_checkpoint_fetcher`](crate::Runtime::set_checkpoint_fetcher)
/// may replace while its rings run: each fetch takes the current one.
#[derive(Clone, Debug)]
pub(crate) struct SharedFetcher(Arc<RwLock<Arc<dyn CheckpointFetcher>>>);

impl SharedFetcher {
    pub(crate) fn new(fetcher: Arc<dyn CheckpointFetcher>) -> SharedFetcher {
        SharedFetcher(Arc::new(RwLock::new(fetcher)))
    }

    pub(crate) fn current(&self) -> Arc<dyn CheckpointFetcher> {
        self.0.read().clone()
    }

    pub(crate) fn replace(&self, fetcher: Arc<dyn CheckpointFetcher>) {
        *self.0.write() = fetcher;
    }
}

/// A fetcher that reaches nobody: every fetch fails with [`TransferError::Unreachable`].
/// Rings still catch up from slots; one that fell behind a truncated log stays behind.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheckpointTransfer;

impl CheckpointFetcher for NoCheckpointTransfer {
    fn fetch(
        &self,
        from: NodeId,
        _request: CheckpointRequest,
    ) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        Box::pin(async move { Err(TransferError::Unreachable { node: from }) })
    }
}

#[derive(Debug)]
pub(crate) struct ServedRing {
    pub store: Arc<Mutex<CheckpointStore>>,
    pub counters: Arc<RingCounters>,
}

struct ServerInner {
    node: NodeId,
    /// Weak: a server registered in a checkpoint network must not keep the endpoint alive.
    transport: Weak<dyn Transport>,
    chunk_bytes: u32,
    rings: RwLock<HashMap<RingId, ServedRing>>,
}

/// Serves the checkpoints of every ring of one runtime to peers; cheap to clone.
#[derive(Clone)]
pub struct CheckpointServer {
    inner: Arc<ServerInner>,
}

impl fmt::Debug for CheckpointServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rings: Vec<RingId> = self.inner.rings.read().keys().copied().collect();
        rings.sort_unstable();
        f.debug_struct("CheckpointServer").field("node", &self.inner.node).field("rings", &rings).finish()
    }
}

impl CheckpointServer {
    pub(crate) fn new(transport: Arc<dyn Transport>, chunk_bytes: u32) -> CheckpointServer {
        let inner = ServerInner {
            node: transport.local_node(),
            transport: Arc::downgrade(&transport),
            chunk_bytes: chunk_bytes.max(1),
            rings: RwLock::new(HashMap::new()),
        };
        CheckpointServer { inner: Arc::new(inner) }
    }

    /// The node this server answers for.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    pub(crate) fn add_ring(&self, ring: RingId, served: ServedRing) {
        self.inner.rings.write().insert(ring, served);
    }

    pub(crate) fn remove_ring(&self, ring: RingId) {
        self.inner.rings.write().remove(&ring);
    }

    /// Opens the newest valid checkpoint of `request.ring` at or above `request.min_slot`
    /// and streams its file. Must be called within a tokio runtime (file reads run on its
    /// blocking pool).
    pub async fn open(&self, request: CheckpointRequest) -> Result<CheckpointStream, TransferError> {
        let node = self.inner.node;
        let Some(transport) = self.inner.transport.upgrade() else {
            return Err(TransferError::Unreachable { node });
        };
        if transport.membership().check(request.ring, request.requester) != Admission::Allowed {
            return Err(TransferError::NotAMember { requester: request.requester, ring: request.ring });
        }
        let (store, counters) = match self.inner.rings.read().get(&request.ring) {
            Some(served) => (served.store.clone(), served.counters.clone()),
            None => return Err(TransferError::UnknownRing { node, ring: request.ring }),
        };
        let chunk_bytes = self.inner.chunk_bytes;
        let opened = tokio::task::spawn_blocking(move || {
            let store = store.lock();
            for slot in store.list().map_err(store_error)?.into_iter().rev() {
                if slot < request.min_slot {
                    break;
                }
                match store.verify(slot) {
                    Ok(_) => return Ok(Some((slot, store.chunks(slot, chunk_bytes).map_err(store_error)?))),
                    Err(error @ (CheckpointError::Corrupt { .. } | CheckpointError::NotFound { .. })) => {
                        tracing::warn!(ring = request.ring.0, %slot, %error, "not serving a checkpoint that fails to verify");
                    }
                    Err(error) => return Err(store_error(error)),
                }
            }
            Ok(None)
        })
        .await
        .map_err(|_| TransferError::Cancelled)??;
        let Some((slot, chunks)) = opened else {
            return Err(TransferError::NoCheckpoint { ring: request.ring, slot: request.min_slot });
        };
        let file_bytes = chunks.file_bytes();
        let (sender, receiver) = mpsc::channel(STREAM_CHUNKS_BUFFERED);
        RingCounters::bump(&counters.checkpoints_served);
        tracing::info!(ring = request.ring.0, to = %request.requester, %slot, file_bytes, "serving a checkpoint");
        tokio::task::spawn_blocking(move || {
            for chunk in chunks {
                let failed = chunk.is_err();
                if sender.blocking_send(chunk.map_err(store_error)).is_err() || failed {
                    break;
                }
            }
        });
        Ok(CheckpointStream { slot, file_bytes, chunks: receiver })
    }
}

impl CheckpointSource for CheckpointServer {
    fn open(&self, request: CheckpointRequest) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        Box::pin(CheckpointServer::open(self, request))
    }
}

/// Checkpoint transfer between runtimes of one process: a registry of their servers.
/// Cheap to clone; every clone is the same network.
#[derive(Clone, Default)]
pub struct LocalCheckpointNetwork {
    servers: Arc<RwLock<HashMap<NodeId, CheckpointServer>>>,
}

impl fmt::Debug for LocalCheckpointNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nodes: Vec<NodeId> = self.servers.read().keys().copied().collect();
        nodes.sort_unstable();
        f.debug_struct("LocalCheckpointNetwork").field("nodes", &nodes).finish()
    }
}

impl LocalCheckpointNetwork {
    /// An empty network.
    pub fn new() -> LocalCheckpointNetwork {
        LocalCheckpointNetwork::default()
    }

    /// Makes `server` reachable under its node id (replacing an earlier one).
    pub fn register(&self, server: CheckpointServer) {
        self.servers.write().insert(server.node(), server);
    }

    /// Joins `runtime` to this network: its checkpoint server becomes reachable under its
    /// node id, and it fetches checkpoints through this network.
    pub fn join(&self, runtime: &crate::Runtime) {
        self.register(runtime.checkpoint_server());
        runtime.set_checkpoint_fetcher(Arc::new(self.clone()));
    }

    /// Makes `node` unreachable.
    pub fn unregister(&self, node: NodeId) {
        self.servers.write().remove(&node);
    }
}

impl CheckpointFetcher for LocalCheckpointNetwork {
    fn fetch(
        &self,
        from: NodeId,
        request: CheckpointRequest,
    ) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        let server = self.servers.read().get(&from).cloned();
        Box::pin(async move {
            match server {
                Some(server) => server.open(request).await,
                None => Err(TransferError::Unreachable { node: from }),
            }
        })
    }
}

/// Fetches a checkpoint from `from` into `store`, verifying and publishing it, then calls
/// `published` with the store still locked. Returns its slot and size. Gives up when no
/// chunk arrives within `timeout` or `cancel` turns true.
pub(crate) async fn receive_checkpoint(
    fetcher: Arc<dyn CheckpointFetcher>,
    from: NodeId,
    request: CheckpointRequest,
    store: Arc<Mutex<CheckpointStore>>,
    published: impl FnOnce(&CheckpointStore) + Send + 'static,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
) -> Result<(Slot, u64), TransferError> {
    let after_ms = timeout.as_millis() as u64;
    let mut stream = tokio::select! {
        _ = cancelled(cancel) => return Err(TransferError::Cancelled),
        opened = tokio::time::timeout(timeout, fetcher.fetch(from, request)) => {
            opened.map_err(|_| TransferError::Timeout { after_ms })??
        }
    };
    let (slot, expected) = (stream.slot, stream.file_bytes);
    if slot < request.min_slot {
        return Err(TransferError::NoCheckpoint { ring: request.ring, slot: request.min_slot });
    }
    let (sender, mut receiver) = mpsc::channel::<Bytes>(STREAM_CHUNKS_BUFFERED);
    // The checkpoint receiver borrows the store, so it lives on one blocking thread for the
    // whole transfer; the async side feeds it and owns the timeouts.
    let writer = tokio::task::spawn_blocking(move || -> Result<(), TransferError> {
        let mut store = store.lock();
        let mut file = store.receiver(slot).map_err(store_error)?;
        let mut written = 0u64;
        while let Some(chunk) = receiver.blocking_recv() {
            file.write_chunk(&chunk).map_err(store_error)?;
            written += chunk.len() as u64;
        }
        if written != expected {
            // Dropping `file` deletes the temporary file.
            return Err(TransferError::Incomplete { received: written, expected });
        }
        file.finish().map_err(store_error)?;
        published(&store);
        Ok(())
    });
    let mut received = 0u64;
    let streamed = loop {
        tokio::select! {
            _ = cancelled(cancel) => break Err(TransferError::Cancelled),
            next = tokio::time::timeout(timeout, stream.chunks.recv()) => match next {
                Err(_) => break Err(TransferError::Timeout { after_ms }),
                Ok(None) => break Ok(()),
                Ok(Some(Err(error))) => break Err(error),
                Ok(Some(Ok(chunk))) => {
                    received += chunk.len() as u64;
                    if received > expected {
                        break Err(TransferError::Oversized { expected });
                    }
                    if sender.send(chunk).await.is_err() {
                        // The writer failed; its error is the one to report.
                        break Ok(());
                    }
                }
            },
        }
    };
    drop(sender);
    let written = writer.await.map_err(|_| TransferError::Cancelled)?;
    streamed?;
    written?;
    Ok((slot, expected))
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    loop {
        if *cancel.borrow_and_update() {
            return;
        }
        if cancel.changed().await.is_err() {
            // The ring task is gone: treat as cancelled.
            return;
        }
    }
}
