//! The poller of an `RdmaTransport`: one thread per endpoint that does all the work of its
//! connections, and how it sleeps when there is none.
//!
//! One turn takes the handshake threads' events, pumps every outbound connection (completions,
//! credits, frames), reads every ring it owns and delivers, and every 2 ms accepts handshakes,
//! checks liveness and starts due dials. A turn without work spins, then yields, then sleeps
//! on the endpoint's completion channel for a time that doubles up to `idle_sleep_max_us`.
//!
//! Before it sleeps (with `idle_wake` on) it tells each sender that it is going to sleep (a
//! sleep notice in the sender's credit region), arms the receive completion queue of each
//! inbound connection, and looks at every ring once more. A sender that sees a new notice
//! sends its next frame as an RDMA WRITE with immediate, which consumes a posted receive,
//! completes on the armed queue and wakes the channel: the sleeper wakes when the frame has
//! landed instead of when its timer ends. A local `send` and the handshake threads wake the
//! channel directly. The timer stays as the backstop for a wake-up that a race loses
//! (docs/RDMA.md, "Idle wake-up").

use crate::rdma::config::RdmaConfig;
use crate::rdma::connection::{Inbound as InboundLink, LinkError, Outbound};
use crate::rdma::handshake::{self, HandshakeError, Opening};
use crate::rdma::stats::RdmaStats;
use crate::rdma::transport::{Peer, Shared};
use crate::stats::TransportStats;
use rsl_core::{NodeId, SplitMix64};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Spin, then yield, then sleep with a doubling timeout, until there is work again.
#[derive(Debug)]
struct IdleBackoff {
    turns: u32,
    sleep: Duration,
    spin: u32,
    yields: u32,
    initial: Duration,
    max: Duration,
}

impl IdleBackoff {
    fn new(config: &RdmaConfig) -> IdleBackoff {
        let initial = Duration::from_micros(config.idle_sleep_initial_us);
        IdleBackoff {
            turns: 0,
            sleep: initial,
            spin: config.idle_spin_turns,
            yields: config.idle_yield_turns,
            initial,
            max: Duration::from_micros(config.idle_sleep_max_us),
        }
    }

    fn busy(&mut self) {
        self.turns = 0;
        self.sleep = self.initial;
    }

    /// After a turn without work: spins or yields, or returns how long to sleep.
    fn idle(&mut self) -> Option<Duration> {
        self.turns = self.turns.saturating_add(1);
        if self.turns <= self.spin {
            std::hint::spin_loop();
            None
        } else if self.turns <= self.spin + self.yields {
            thread::yield_now();
            None
        } else {
            let sleep = self.sleep;
            self.sleep = (self.sleep * 2).min(self.max);
            Some(sleep)
        }
    }
}

/// A sending direction's state (`attempt`: how far the redial backoff has gone, 0 before a
/// first dial).
#[derive(Debug)]
enum Link {
    Connected { connection: Box<Outbound>, generation: u64 },
    Dialing { generation: u64, attempt: u32 },
    Waiting { until: Instant, attempt: u32, generation: u64 },
}

#[derive(Debug)]
pub(crate) enum Event {
    Dialed {
        peer: NodeId,
        generation: u64,
        result: Result<Box<Outbound>, LinkError>,
    },
    /// A handshake answered on the socket the poller accepted `sequence`-th.
    Accepted {
        sequence: u64,
        result: Result<Box<InboundLink>, LinkError>,
    },
}

/// How often the poller accepts handshakes, checks liveness and starts dials.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(2);

pub(crate) struct Poller {
    shared: Arc<Shared>,
    listener: TcpListener,
    events: (std_mpsc::Sender<Event>, std_mpsc::Receiver<Event>),
    outbound: HashMap<NodeId, Link>,
    inbound: HashMap<NodeId, Box<InboundLink>>,
    ever_connected: HashSet<NodeId>,
    /// Sockets accepted so far: the next one's sequence number.
    accepted: u64,
    /// The sequence number of the newest connection taken from each peer. Kept after the
    /// connection ends, so that an older one handed over later is still recognized.
    newest_inbound: HashMap<NodeId, u64>,
    rng: SplitMix64,
    backoff: IdleBackoff,
    next_housekeeping: Instant,
}

impl Poller {
    pub(crate) fn new(shared: Arc<Shared>, listener: TcpListener) -> Poller {
        let rng = SplitMix64::new(shared.config.seed ^ rsl_core::mix64(shared.gate.local.0));
        let backoff = IdleBackoff::new(&shared.config);
        Poller {
            shared,
            listener,
            events: std_mpsc::channel(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            ever_connected: HashSet::new(),
            accepted: 0,
            newest_inbound: HashMap::new(),
            rng,
            backoff,
            next_housekeeping: Instant::now(),
        }
    }

    pub(crate) fn run(mut self) {
        let channel = Arc::clone(&self.shared.channel);
        while !self.shared.closed.load(Ordering::Acquire) {
            // Taken before the turn looks for work: a wake-up after this point ends the
            // sleep below at once.
            let prepared = channel.prepare();
            let mut work = self.take_events();
            work |= self.pump_outbound();
            work |= self.receive_inbound();
            let now = Instant::now();
            if now >= self.next_housekeeping {
                work |= self.housekeeping(now);
                self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            }
            if work {
                self.backoff.busy();
                continue;
            }
            let Some(sleep) = self.backoff.idle() else { continue };
            if self.shared.config.idle_wake && self.announce_sleep() {
                self.backoff.busy();
                continue;
            }
            RdmaStats::bump(&self.shared.stats.idle_sleeps);
            if channel.wait(prepared, sleep) {
                RdmaStats::bump(&self.shared.stats.sleeps_woken);
            }
        }
    }

    /// Tells every sender that this poller is about to sleep and arms their receive
    /// completion queues, then reads every ring once more (a frame that landed before the
    /// notice did is found here). True when that found work: then it does not sleep.
    fn announce_sleep(&mut self) -> bool {
        let mut failed = Vec::new();
        for (peer, link) in &mut self.inbound {
            if let Err(error) = link.announce_sleep(&self.shared.stats) {
                failed.push((*peer, error));
            }
        }
        let work = !failed.is_empty();
        self.end_inbound(failed);
        // Pairs with the sender's fence between its frame and its look at the notice: one of
        // the two sides sees the other's write.
        std::sync::atomic::fence(Ordering::SeqCst);
        work | self.receive_inbound()
    }

    fn local(&self) -> NodeId {
        self.shared.gate.local
    }

    fn take_events(&mut self) -> bool {
        let mut work = false;
        while let Ok(event) = self.events.1.try_recv() {
            work = true;
            match event {
                Event::Dialed { peer, generation, result } => self.on_dialed(peer, generation, result),
                Event::Accepted { sequence, result: Ok(link) } => self.on_accepted(sequence, link),
                Event::Accepted { result: Err(error), .. } => {
                    let stats = &self.shared.gate.stats;
                    if let LinkError::Handshake(HandshakeError::NoCommonVersion { local, peer }) = error {
                        TransportStats::bump(&stats.rejected_version);
                        tracing::warn!(
                            local = %self.local(), speaks = %local, peer_speaks = %peer,
                            "refused an RDMA connection in protocol versions this node does not speak"
                        );
                    } else {
                        TransportStats::bump(&stats.connect_failures);
                        tracing::warn!(local = %self.local(), %error, "refused an RDMA connection");
                    }
                }
            }
        }
        work
    }

    /// Takes a connection a handshake thread set up, unless a newer one from the same peer
    /// was taken already.
    ///
    /// Handshake threads hand their connections over in whatever order they finish, not in
    /// the order their sockets were accepted. A thread descheduled between its reply and the
    /// hand-over can deliver a connection that its sender has already written to, abandoned
    /// and replaced: taking it then would deliver its old frames after the newer
    /// connection's. A sender dials its next connection only after its current one was
    /// answered, that is after the poller accepted its socket, so the accept order is the
    /// senders' order, and a connection accepted before the newest one taken is stale.
    fn on_accepted(&mut self, sequence: u64, link: Box<InboundLink>) {
        if self.newest_inbound.get(&link.peer).is_some_and(|&newest| newest > sequence) {
            self.count_inbound_end(&link, "a newer connection from the same peer was taken first", false);
            return;
        }
        self.newest_inbound.insert(link.peer, sequence);
        if let Some(old) = self.inbound.insert(link.peer, link) {
            self.count_inbound_end(&old, "replaced by a new connection from the same peer", true);
        }
    }

    fn on_dialed(&mut self, peer: NodeId, generation: u64, result: Result<Box<Outbound>, LinkError>) {
        let current = self.shared.peers.read().get(&peer).map(|entry| entry.generation);
        let attempt = match self.outbound.get(&peer) {
            Some(Link::Dialing { generation: g, attempt }) if *g == generation => *attempt,
            _ => return, // The peer was removed or readdressed meanwhile; the connection drops.
        };
        if current != Some(generation) {
            return;
        }
        match result {
            Ok(connection) => {
                let stats = &self.shared.gate.stats;
                if !self.ever_connected.insert(peer) {
                    TransportStats::bump(&stats.reconnects);
                }
                tracing::debug!(local = %self.local(), %peer, "RDMA connection established");
                self.outbound.insert(peer, Link::Connected { connection, generation });
            }
            Err(error) => {
                TransportStats::bump(&self.shared.gate.stats.connect_failures);
                if let LinkError::Handshake(HandshakeError::NoCommonVersion { .. }) = error {
                    tracing::error!(local = %self.local(), %peer, %error, "RDMA connection refused");
                } else {
                    tracing::debug!(local = %self.local(), %peer, %error, "RDMA connection attempt failed");
                }
                // Doubling from one failed dial to the next, up to the maximum.
                self.wait(peer, generation, attempt + 1);
            }
        }
    }

    /// Schedules the next dial of `peer` after `attempt` failures.
    fn wait(&mut self, peer: NodeId, generation: u64, attempt: u32) {
        let config = &self.shared.config;
        let delay = config
            .backoff_initial_ms
            .saturating_mul(1 << attempt.min(16).saturating_sub(1))
            .min(config.backoff_max_ms);
        let jittered = self.rng.between(delay / 2, delay);
        let until = Instant::now() + Duration::from_millis(jittered);
        self.outbound.insert(peer, Link::Waiting { until, attempt, generation });
    }

    fn pump_outbound(&mut self) -> bool {
        let mut work = false;
        let mut failed = Vec::new();
        // Held for the turn: `send` reads it too; only address changes wait.
        let shared = Arc::clone(&self.shared);
        let peers = shared.peers.read();
        for (peer, link) in &mut self.outbound {
            let Link::Connected { connection, generation } = link else { continue };
            let Some(entry) = peers.get(peer).filter(|entry| entry.generation == *generation) else {
                failed.push((*peer, *generation, LinkError::PeerGone, false));
                continue;
            };
            let mut unwritten = Vec::new();
            let pumped = connection.pump(
                |count, bytes_max| entry.take(count, bytes_max),
                &mut unwritten,
                &shared.stats,
                &shared.gate.stats,
            );
            if !unwritten.is_empty() {
                entry.requeue(unwritten);
            }
            match pumped {
                Ok(did) => work |= did,
                Err(error) => failed.push((*peer, *generation, error, true)),
            }
        }
        drop(peers);
        for (peer, generation, error, redial) in failed {
            work = true;
            if let Some(Link::Connected { connection, .. }) = self.outbound.remove(&peer) {
                let lost = connection.unacknowledged();
                RdmaStats::bump(&self.shared.stats.connections_reset);
                RdmaStats::add(&self.shared.stats.messages_unacknowledged_lost, lost);
                tracing::warn!(local = %self.local(), %peer, %error, lost, "RDMA connection to the peer ended");
            }
            if redial {
                self.wait(peer, generation, 1);
            }
        }
        work
    }

    fn receive_inbound(&mut self) -> bool {
        let mut work = false;
        let mut failed = Vec::new();
        for (peer, link) in &mut self.inbound {
            match link.receive(&self.shared.gate, &self.shared.stats) {
                Ok(did) => work |= did,
                Err(error) => failed.push((*peer, error)),
            }
        }
        work | self.end_inbound(failed)
    }

    /// Tears down the inbound connections that failed; true when there were any.
    fn end_inbound(&mut self, failed: Vec<(NodeId, LinkError)>) -> bool {
        let work = !failed.is_empty();
        for (peer, error) in failed {
            if let Some(link) = self.inbound.remove(&peer) {
                // A refused frame was counted as what it is; otherwise a frame begun and
                // never finished is a torn one.
                let refused = matches!(error, LinkError::Frame(_) | LinkError::Invalid { .. });
                self.count_inbound_end(&link, &error.to_string(), !refused);
            }
        }
        work
    }

    fn count_inbound_end(&self, link: &InboundLink, why: &str, count_partial: bool) {
        RdmaStats::bump(&self.shared.stats.connections_reset);
        if count_partial && link.partial_frame() {
            RdmaStats::bump(&self.shared.stats.frames_torn);
        }
        tracing::warn!(local = %self.local(), peer = %link.peer, why, "RDMA connection from the peer ended");
    }

    /// Accepts handshakes, drops connections whose peer is gone, starts due dials.
    fn housekeeping(&mut self, now: Instant) -> bool {
        let mut work = false;
        while let Ok((socket, _)) = self.listener.accept() {
            work = true;
            self.spawn_accept(socket);
        }
        let gone: Vec<NodeId> =
            self.inbound.iter().filter(|(_, link)| link.peer_gone()).map(|(peer, _)| *peer).collect();
        for peer in gone {
            if let Some(link) = self.inbound.remove(&peer) {
                self.count_inbound_end(&link, "the peer closed the handshake socket", true);
            }
        }
        let peers = self.shared.peers.read().clone();
        let mut redial = Vec::new();
        self.outbound.retain(|peer, link| {
            let generation = match link {
                Link::Connected { generation, .. }
                | Link::Dialing { generation, .. }
                | Link::Waiting { generation, .. } => *generation,
            };
            peers.get(peer).is_some_and(|entry| entry.generation == generation)
        });
        for (peer, link) in &self.outbound {
            if let Link::Connected { connection, generation } = link {
                if connection.peer_gone() {
                    redial.push((*peer, *generation));
                }
            }
        }
        for (peer, generation) in redial {
            work = true;
            if let Some(Link::Connected { connection, .. }) = self.outbound.remove(&peer) {
                RdmaStats::bump(&self.shared.stats.connections_reset);
                RdmaStats::add(&self.shared.stats.messages_unacknowledged_lost, connection.unacknowledged());
                tracing::warn!(local = %self.local(), %peer, "RDMA peer closed its handshake socket");
            }
            self.wait(peer, generation, 1);
        }
        for (peer, entry) in &peers {
            let due = match self.outbound.get(peer) {
                None => Some(0),
                Some(Link::Waiting { until, attempt, .. }) if *until <= now => Some(*attempt),
                Some(_) => None,
            };
            if let Some(attempt) = due {
                work = true;
                self.spawn_dial(*peer, entry, attempt);
            }
        }
        work
    }

    /// Runs `handshake` on a thread of its own and hands its outcome (if any) to the poller.
    fn spawn_handshake(
        &self,
        name: &str,
        handshake: impl FnOnce(&Shared) -> Option<Event> + Send + 'static,
    ) -> std::io::Result<()> {
        let (shared, events) = (Arc::clone(&self.shared), self.events.0.clone());
        thread::Builder::new().name(name.to_owned()).spawn(move || {
            if let Some(event) = handshake(&shared) {
                let _ = events.send(event);
                shared.wake();
            }
        })?;
        Ok(())
    }

    /// Reads what the dialer wants: a connection (answered here), or a checkpoint (handed
    /// to the checkpoint service, if the endpoint serves any).
    fn spawn_accept(&mut self, mut socket: std::net::TcpStream) {
        let key = self.rng.next_u64();
        let sequence = self.accepted;
        self.accepted += 1;
        let spawned = self.spawn_handshake("rsl-rdma-accept", move |shared| {
            let config = shared.config.link();
            let opening = socket
                .set_nonblocking(false)
                .map_err(handshake::HandshakeError::from)
                .and_then(|()| crate::rdma::connection::set_up_socket(&socket, config.handshake_timeout))
                .and_then(|()| handshake::read_opening(&mut socket));
            match opening {
                Err(error) => Some(Event::Accepted { sequence, result: Err(error.into()) }),
                Ok(Opening::Connect(hello)) => {
                    let (device, local, channel) =
                        (shared.device.as_ref(), shared.gate.local, &shared.channel);
                    let accepted = InboundLink::accept(device, local, socket, hello, key, config, channel);
                    #[cfg(test)]
                    {
                        let hold = shared.hold_next_accepted.lock().take();
                        if let Some(hold) = hold {
                            let _ = hold.recv();
                        }
                    }
                    Some(Event::Accepted { sequence, result: accepted.map(Box::new) })
                }
                Ok(Opening::Checkpoint(ask)) => {
                    shared.serve_checkpoint(socket, ask);
                    None
                }
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an RDMA handshake thread");
        }
    }

    fn spawn_dial(&mut self, peer: NodeId, entry: &Peer, attempt: u32) {
        let (generation, address) = (entry.generation, entry.socket);
        self.outbound.insert(peer, Link::Dialing { generation, attempt });
        let spawned = self.spawn_handshake("rsl-rdma-dial", move |shared| {
            let (device, local, link) = (shared.device.as_ref(), shared.gate.local, shared.config.link());
            let result = Outbound::dial(device, local, peer, address, link).map(Box::new);
            Some(Event::Dialed { peer, generation, result })
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an RDMA dial thread");
            self.wait(peer, generation, attempt + 1);
        }
    }
}
