//! Inbound checks shared by every transport: addressing, membership, counters, delivery.

use crate::membership::{Admission, Membership};
use crate::stats::TransportStats;
use crate::transport::Inbound;
use rsl_core::{NodeId, RingId};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why an inbound message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Misrouted,
    UnknownRing,
    NotAMember,
}

/// The receiving side of one endpoint.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) local: NodeId,
    pub(crate) membership: Arc<Membership>,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) inbound: mpsc::Sender<Inbound>,
}

impl Gate {
    /// Checks the envelope of a message that arrived in a frame from `frame_from`, counting
    /// and logging a refusal. Runs before the body is decoded, so strangers cost little.
    pub(crate) fn admit(
        &self,
        frame_from: NodeId,
        ring: RingId,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), Refusal> {
        if from != frame_from || to != self.local {
            TransportStats::bump(&self.stats.rejected_misrouted);
            tracing::warn!(
                local = %self.local, %frame_from, %from, %to, ring = ring.0,
                "dropped a message: its sender or receiver does not match the frame"
            );
            return Err(Refusal::Misrouted);
        }
        match self.membership.check(ring, from) {
            Admission::Allowed => Ok(()),
            Admission::UnknownRing => {
                TransportStats::bump(&self.stats.rejected_unknown_ring);
                tracing::warn!(local = %self.local, %from, ring = ring.0, "dropped a message for an unknown ring");
                Err(Refusal::UnknownRing)
            }
            Admission::NotAMember => {
                TransportStats::bump(&self.stats.rejected_non_member);
                tracing::warn!(
                    local = %self.local, %from, ring = ring.0,
                    "dropped a message from a node that is not a member of the ring"
                );
                Err(Refusal::NotAMember)
            }
        }
    }

    /// Counts a message that failed to decode.
    pub(crate) fn decode_failed(&self, from: &dyn std::fmt::Display, error: &dyn std::fmt::Display) {
        TransportStats::bump(&self.stats.decode_errors);
        tracing::warn!(local = %self.local, from = %from, %error, "dropped an undecodable message or frame");
    }

    /// Delivers without waiting; a full channel drops the message (counted). Counters move
    /// before the message becomes visible to the receiver.
    pub(crate) fn deliver_now(&self, inbound: Inbound) -> Result<(), ChannelClosed> {
        match self.inbound.try_reserve() {
            Ok(permit) => {
                TransportStats::bump(&self.stats.messages_received);
                permit.send(inbound);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                TransportStats::bump(&self.stats.dropped_inbound_full);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(ChannelClosed),
        }
    }

    /// Delivers, waiting for room: a slow receiver pushes back on the sender's stream.
    pub(crate) async fn deliver(&self, inbound: Inbound) -> Result<(), ChannelClosed> {
        let permit = self.inbound.reserve().await.map_err(|_| ChannelClosed)?;
        TransportStats::bump(&self.stats.messages_received);
        permit.send(inbound);
        Ok(())
    }
}

/// The inbound receiver was dropped: nobody listens any more.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelClosed;
