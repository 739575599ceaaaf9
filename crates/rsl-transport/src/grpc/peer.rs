//! The outbound side: one task per peer owning the connection and the call.

use super::server::VERSION_MAX_METADATA;
use super::GrpcConfig;
use crate::codec::{
    batch_header_len, message_version, CHUNKS_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};
use crate::proto as pb;
use crate::proto::replication_client::ReplicationClient;
use crate::queue::PeerQueue;
use crate::stats::TransportStats;
use futures_util::Stream;
use rsl_core::NodeId;
use rsl_core::SplitMix64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Endpoint;

/// Exponential backoff with jitter: attempt `n` waits a delay drawn from `[d/2, d]` where
/// `d = min(max, initial * 2^n)`.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff { initial_ms, max_ms, attempt: 0, rng: SplitMix64::new(seed) }
    }

    /// The delay before the next attempt; each call doubles the ceiling up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.initial_ms.saturating_mul(1u64 << self.attempt.min(32)).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let floor = ceiling / 2;
        Duration::from_millis(floor + self.rng.below(ceiling - floor + 1))
    }

    /// Back to the initial delay, after a connection that worked for a while.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Everything the peer task needs; it holds no reference to the transport itself.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(crate) local: NodeId,
    pub(crate) peer: NodeId,
    pub(crate) endpoint: Endpoint,
    pub(crate) queue: Arc<PeerQueue>,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) config: Arc<GrpcConfig>,
    /// Set while a connection with an open call exists (`Transport::peer_connected`).
    pub(crate) connected: Arc<AtomicBool>,
}

impl PeerLink {
    /// Connects when there is something to send, streams until the call fails, waits a
    /// backoff delay, and again; returns once the queue is closed.
    pub(crate) async fn run(self) {
        let config = &self.config;
        let seed = config.seed ^ self.peer.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.local.0;
        let mut backoff = Backoff::new(config.backoff_initial_ms, config.backoff_max_ms, seed);
        let healthy_after = Duration::from_millis(config.backoff_max_ms);
        let mut connected_before = false;
        // The version this link speaks: the newest this endpoint speaks, down to what a
        // peer that refused it speaks, for as long as that peer's streams keep working.
        let mut speak = config.protocol_version;
        loop {
            if !self.queue.wait_ready().await {
                return;
            }
            let channel = match self.endpoint.connect().await {
                Ok(channel) => channel,
                Err(error) => {
                    TransportStats::bump(&self.stats.connect_failures);
                    let delay = backoff.next_delay();
                    tracing::debug!(
                        local = %self.local, peer = %self.peer, %error, delay_ms = delay.as_millis() as u64,
                        "connect failed"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if connected_before {
                TransportStats::bump(&self.stats.reconnects);
            }
            connected_before = true;
            let mut client =
                ReplicationClient::new(channel).max_encoding_message_size(config.frame_bytes_max as usize);
            let started = Instant::now();
            // A chunked message half sent on the last stream was abandoned with it.
            self.queue.restart_chunked();
            self.connected.store(true, Ordering::Relaxed);
            let streamed = client.stream(self.frames(speak)).await;
            self.connected.store(false, Ordering::Relaxed);
            match streamed {
                Ok(summary) => {
                    let summary = summary.into_inner();
                    tracing::debug!(
                        local = %self.local, peer = %self.peer, batches = summary.batches,
                        messages = summary.messages, "peer ended the stream"
                    );
                    speak = config.protocol_version;
                }
                Err(status) => match peer_version_max(&status) {
                    Some(peer_max) if (PROTOCOL_VERSION_MIN..speak).contains(&peer_max) => {
                        tracing::info!(
                            local = %self.local, peer = %self.peer, from = speak, to = peer_max,
                            "peer speaks an older protocol version: speaking it"
                        );
                        speak = peer_max;
                        // The refused stream's frames are lost like those of any failed
                        // stream (the core sends again); the next one goes out at once.
                        continue;
                    }
                    Some(peer_max) => {
                        tracing::error!(
                            local = %self.local, peer = %self.peer, speaking = speak, peer_max,
                            "no protocol version in common with the peer"
                        );
                    }
                    None => {
                        tracing::info!(local = %self.local, peer = %self.peer, %status, "stream to peer failed");
                        speak = config.protocol_version;
                    }
                },
            }
            if started.elapsed() >= healthy_after {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// The call's request stream: frames in protocol version `version` built from the queue
    /// when the stream can take one.
    fn frames(&self, version: u32) -> impl Stream<Item = pb::Batch> + Send + 'static {
        let (local, peer) = (self.local, self.peer);
        let header = batch_header_len(local, peer);
        let state = (Arc::clone(&self.queue), Arc::clone(&self.stats));
        futures_util::stream::unfold(state, move |(queue, stats)| async move {
            let mut taken = queue.next_batch().await?;
            if version < PROTOCOL_VERSION {
                let dropped = leave_out_newer(&mut taken.messages, &mut taken.chunks, version, &stats);
                if dropped > 0 {
                    tracing::warn!(%local, %peer, version, dropped, "messages the peer's protocol version cannot carry not sent");
                }
            }
            TransportStats::bump(&stats.frames_sent);
            TransportStats::add(&stats.messages_sent, taken.messages.len() as u64);
            TransportStats::add(&stats.chunks_sent, taken.chunks.len() as u64);
            TransportStats::add(&stats.bytes_sent, header + taken.framed_bytes);
            let batch = pb::Batch {
                from: local.0,
                to: peer.0,
                messages: taken.messages,
                chunks: taken.chunks,
                protocol_version: version,
            };
            Some((batch, (queue, stats)))
        })
    }
}

/// Takes out of a frame in `version` what that version does not have (a newer message, or
/// chunks), counted in `dropped_for_version`: the peer could not decode it, so it is
/// lost to that peer as a message the network dropped would be.
fn leave_out_newer(
    messages: &mut Vec<pb::Message>,
    chunks: &mut Vec<pb::Chunk>,
    version: u32,
    stats: &TransportStats,
) -> u64 {
    let before = messages.len();
    messages.retain(|message| message_version(message) <= version);
    let mut left_out = (before - messages.len()) as u64;
    if version < CHUNKS_VERSION {
        left_out += chunks.len() as u64;
        chunks.clear();
    }
    TransportStats::add(&stats.dropped_for_version, left_out);
    left_out
}

/// The highest protocol version a peer that refused a stream for its version speaks, when
/// that is why `status` ended the stream.
fn peer_version_max(status: &tonic::Status) -> Option<u32> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    status.metadata().get(VERSION_MAX_METADATA)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_bounded_with_jitter_and_resets() {
        let mut backoff = Backoff::new(10, 100, 42);
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect();
        let ceilings = [10, 20, 40, 80, 100, 100, 100, 100];
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            assert!((ceiling / 2..=ceiling).contains(delay), "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(10));
        let mut again = Backoff::new(10, 100, 42);
        let replay: Vec<u64> = (0..8).map(|_| again.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, replay, "same seed, same delays");
        let mut huge = Backoff::new(u64::MAX / 2, u64::MAX, 1);
        for _ in 0..100 {
            huge.next_delay();
        }
    }
}
