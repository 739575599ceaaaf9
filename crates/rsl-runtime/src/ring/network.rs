//! Where the replica's messages leave: collected per peer during a wake-up and sent as one
//! batch each at its end; which nodes the transport admits for this ring; and where the
//! transport reaches them, as the configuration in force says (its members' addresses are
//! chosen in the log with it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rsl_core::{Configuration, Message, NodeId, RingId};
use rsl_transport::{SendError, Transport};

use crate::stats::RingCounters;

/// The ring's side of the transport endpoint.
pub(super) struct Network {
    ring: RingId,
    node: NodeId,
    transport: Arc<dyn Transport>,
    /// Messages of this wake-up, per receiver.
    outbox: BTreeMap<NodeId, Vec<Message>>,
    /// Every node of every configuration this replica has been in: the transport admits
    /// them all for this ring, so removed replicas can still learn that they are out.
    admitted: BTreeSet<NodeId>,
    /// The configuration number the transport's admission was last set for.
    admitted_for: u64,
}

impl Network {
    /// `admitted`, for the recovered `configuration`, is what the runtime told the
    /// transport to admit when it started the ring; the transport learns the addresses
    /// `configuration` carries.
    pub(super) fn new(
        ring: RingId,
        node: NodeId,
        transport: Arc<dyn Transport>,
        admitted: BTreeSet<NodeId>,
        configuration: &Configuration,
    ) -> Network {
        let admitted_for = configuration.number;
        let network = Network { ring, node, transport, outbox: BTreeMap::new(), admitted, admitted_for };
        network.learn_addresses(configuration);
        network
    }

    /// Tells the transport where each peer `configuration` carries an address for listens
    /// (when that changed). An address the transport refuses is logged; the peer stays
    /// where it was known to be.
    fn learn_addresses(&self, configuration: &Configuration) {
        for address in configuration.addresses.iter().filter(|a| a.node != self.node) {
            let known = self.transport.peer_address(address.node);
            if known.as_ref().is_some_and(|known| known.as_str() == address.replica) {
                continue;
            }
            match self.transport.set_peer_address(address.node, address.replica.as_str().into()) {
                Ok(()) => tracing::info!(
                    ring = self.ring.0, node = %self.node, peer = %address.node, address = %address.replica,
                    "peer address from configuration {}", configuration.number
                ),
                Err(error) => tracing::warn!(
                    ring = self.ring.0, node = %self.node, peer = %address.node, address = %address.replica,
                    %error, "configuration {} names an address the transport refuses", configuration.number
                ),
            }
        }
    }

    /// Queues a message for the end of the wake-up.
    pub(super) fn push(&mut self, message: Message) {
        self.outbox.entry(message.to).or_default().push(message);
    }

    /// Sends what accumulated, one batch per peer, counting what the transport refuses.
    pub(super) fn flush(&mut self, counters: &RingCounters) {
        for (to, messages) in std::mem::take(&mut self.outbox) {
            match self.transport.send(to, messages) {
                Ok(()) => {}
                Err(error @ (SendError::QueueFull { .. } | SendError::ChunkedQueueFull { .. })) => {
                    // Loss the protocol tolerates: retransmission and catch-up cover it.
                    RingCounters::bump(&counters.send_errors);
                    tracing::debug!(ring = self.ring.0, node = %self.node, %to, %error, "transport refused messages");
                }
                Err(error) => {
                    // A message that can never be sent (too large, no address) stalls the
                    // ring if it keeps recurring: say so loudly.
                    RingCounters::bump(&counters.send_errors);
                    tracing::warn!(ring = self.ring.0, node = %self.node, %to, %error, "transport refused messages");
                }
            }
        }
    }

    /// Sends what accumulated while stopping, where nobody is left to count a refusal.
    pub(super) fn flush_quietly(&mut self) {
        for (to, messages) in std::mem::take(&mut self.outbox) {
            let _ = self.transport.send(to, messages);
        }
    }

    /// Whether the transport's connection to `node` is up (`None`: it cannot tell).
    pub(super) fn peer_connected(&self, node: NodeId) -> Option<bool> {
        self.transport.peer_connected(node)
    }

    /// Admits the members and learners of `configuration` once it is in force (the earlier
    /// ones stay).
    pub(super) fn admit(&mut self, configuration: &Configuration) {
        if configuration.number != self.admitted_for {
            self.admitted_for = configuration.number;
            self.admitted.extend(configuration.followers());
            self.learn_addresses(configuration);
            self.transport.membership().set_members(self.ring, self.admitted.iter().copied());
        }
    }
}
