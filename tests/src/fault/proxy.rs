//! A TCP proxy per directed replica link (the replica transport opens one client-streaming
//! call per direction per pair of nodes, so the proxy a replica dials to reach a peer
//! carries exactly that replica's messages to that peer).
//!
//! A link can be cut (its connections are closed and new ones are closed at once: the
//! sender sees the peer as unreachable), delayed (every chunk is held for a random time in
//! a range, order kept) and lossy (each chunk aborts the connection with a probability:
//! over TCP a message cannot be dropped alone without breaking the stream, so loss is every
//! message in flight on a connection, and the sender reconnects).
//!
//! In a network namespace setup the proxy of link `i -> j` listens inside `i`'s namespace
//! and connects from it, so `j` sees `i`'s address and packet filters still apply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsl_core::SplitMix64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Largest chunk read and forwarded at once.
const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Most chunks held back by a delay per connection direction.
const DELAYED_CHUNKS_MAX: usize = 4096;

/// What a link does to its traffic now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Closed: no connection is let through.
    pub cut: bool,
    /// Each chunk is held for a time in `delay_min_ms..=delay_max_ms`.
    pub delay_min_ms: u64,
    /// See `delay_min_ms`.
    pub delay_max_ms: u64,
    /// Chance per chunk, in millionths, that the connection is aborted.
    pub abort_per_million: u64,
}

/// One directed link's proxy; dropping it stops accepting (connections end with the
/// runtime).
#[derive(Debug)]
pub struct LinkProxy {
    /// Where the proxy listens.
    pub address: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    connections: Arc<AtomicU64>,
    aborts: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

/// How the proxy makes its outgoing connection (in the namespace it listens in).
pub type Connector = Arc<dyn Fn(SocketAddr) -> std::io::Result<std::net::TcpStream> + Send + Sync>;

impl LinkProxy {
    /// Starts a proxy on `listener` (already bound, possibly in a namespace) that forwards
    /// to `target`, connecting with `connect`. Must run inside a tokio runtime.
    pub fn start(
        listener: std::net::TcpListener,
        target: SocketAddr,
        connect: Connector,
        seed: u64,
    ) -> std::io::Result<LinkProxy> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let (faults, watcher) = watch::channel(LinkFaults::default());
        let connections = Arc::new(AtomicU64::new(0));
        let aborts = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(SplitMix64::new(seed)));
        let accepted = connections.clone();
        let aborted = aborts.clone();
        let stop = stopped.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if watcher.borrow().cut {
                    drop(inbound);
                    continue;
                }
                accepted.fetch_add(1, Ordering::Relaxed);
                let connect = connect.clone();
                let watcher = watcher.clone();
                let rng = rng.clone();
                let aborted = aborted.clone();
                tokio::spawn(async move {
                    let outbound = tokio::task::spawn_blocking(move || connect(target)).await;
                    let Ok(Ok(outbound)) = outbound else { return };
                    if outbound.set_nonblocking(true).is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::from_std(outbound) else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    relay(inbound, outbound, watcher, rng, aborted).await;
                });
            }
        });
        Ok(LinkProxy { address, faults, connections, aborts, stopped })
    }

    /// Applies `faults` from now on; cutting closes the open connections.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// Connections let through so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections aborted by loss so far.
    pub fn aborts(&self) -> u64 {
        self.aborts.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.faults.send_replace(LinkFaults { cut: true, ..LinkFaults::default() });
    }
}

/// Forwards both directions until either side closes, the link is cut, or loss aborts it.
async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    faults: watch::Receiver<LinkFaults>,
    rng: Arc<Mutex<SplitMix64>>,
    aborts: Arc<AtomicU64>,
) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let forward = pipe(in_read, out_write, faults.clone(), rng.clone(), aborts.clone());
    let backward = pipe(out_read, in_write, faults, rng, aborts);
    // Whichever direction ends first ends the connection (both halves drop).
    tokio::select! {
        () = forward => {}
        () = backward => {}
    }
}

/// One direction: read chunks, decide their fate, and deliver them in order after their
/// delay.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<LinkFaults>,
    rng: Arc<Mutex<SplitMix64>>,
    aborts: Arc<AtomicU64>,
) {
    let (queue, mut delayed) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(DELAYED_CHUNKS_MAX);
    let writer = async move {
        while let Some((due, chunk)) = delayed.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // Returns whether the stream ended cleanly (then what is queued is still delivered).
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            let read = tokio::select! {
                read = from.read(&mut buffer) => read,
                changed = faults.changed() => {
                    if changed.is_err() || faults.borrow().cut {
                        return false;
                    }
                    continue;
                }
            };
            let n = match read {
                Ok(0) => return true,
                Ok(n) => n,
                Err(_) => return false,
            };
            let now = *faults.borrow();
            if now.cut {
                return false;
            }
            let (delay_ms, abort) = {
                let mut rng = rng.lock().expect("the proxy's generator lock is never poisoned");
                let delay = if now.delay_max_ms > 0 {
                    rng.between(now.delay_min_ms.min(now.delay_max_ms), now.delay_max_ms)
                } else {
                    0
                };
                (delay, now.abort_per_million > 0 && rng.below(1_000_000) < now.abort_per_million)
            };
            if abort {
                aborts.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            let due = tokio::time::Instant::now() + Duration::from_millis(delay_ms);
            if queue.send((due, buffer[..n].to_vec())).await.is_err() {
                return false;
            }
        }
    };
    let writer = tokio::spawn(writer);
    if reader.await {
        let _ = writer.await;
    } else {
        writer.abort();
    }
}
