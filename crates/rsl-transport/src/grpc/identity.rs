//! Who is calling: with mutual TLS, the node the caller's certificate names
//! (`rsl://node/<id>`, see `TlsConfig`); without TLS, whoever the caller claims to be.
//!
//! Every inbound call (a replica stream, a checkpoint request) asks this first, so a claim
//! in a frame or a request is only ever compared with the certificate, never believed.

use crate::stats::TransportStats;
use rsl_core::NodeId;
use tonic::{Request, Status};

/// The caller of one inbound call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No TLS: the caller is whoever it claims to be.
    Claimed,
    /// TLS: the caller is the node its certificate names.
    Certified(NodeId),
}

impl Caller {
    /// Identifies the caller of `request`. `tls` says whether the server requires client
    /// certificates; when it does, a caller whose certificate names no node is refused
    /// with `UNAUTHENTICATED` (counted and logged).
    pub(crate) fn of<T>(
        request: &Request<T>,
        tls: bool,
        local: NodeId,
        stats: &TransportStats,
    ) -> Result<Caller, Status> {
        if !tls {
            return Ok(Caller::Claimed);
        }
        let refuse = |problem: String| {
            TransportStats::bump(&stats.rejected_unauthenticated);
            let remote =
                request.remote_addr().map_or_else(|| "unknown address".to_owned(), |a| a.to_string());
            tracing::warn!(%local, %remote, %problem, "refused a caller whose certificate names no node");
            Status::unauthenticated(problem)
        };
        certified(request).map(Caller::Certified).map_err(refuse)
    }

    /// The node a message or request that claims to come from `claimed` really comes from:
    /// `Err(certified)` when the certificate names another node.
    pub(crate) fn vouch(self, claimed: NodeId) -> Result<NodeId, NodeId> {
        match self {
            Caller::Claimed => Ok(claimed),
            Caller::Certified(node) if node == claimed => Ok(node),
            Caller::Certified(node) => Err(node),
        }
    }
}

#[cfg(feature = "tls")]
fn certified<T>(request: &Request<T>) -> Result<NodeId, String> {
    let certificates = request.peer_certs().ok_or_else(|| "no client certificate".to_owned())?;
    let leaf = certificates.first().ok_or_else(|| "no client certificate".to_owned())?;
    super::tls::certificate_node(leaf).map_err(|error| error.to_string())
}

#[cfg(not(feature = "tls"))]
fn certified<T>(_request: &Request<T>) -> Result<NodeId, String> {
    Err("this build has no TLS, so no certificate can name the caller".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_believed_only_without_a_certificate() {
        assert_eq!(Caller::Claimed.vouch(NodeId(4)), Ok(NodeId(4)));
        assert_eq!(Caller::Certified(NodeId(4)).vouch(NodeId(4)), Ok(NodeId(4)));
        assert_eq!(Caller::Certified(NodeId(4)).vouch(NodeId(5)), Err(NodeId(4)));
    }

    #[test]
    fn with_tls_a_call_without_a_certificate_is_refused_and_counted() {
        let stats = TransportStats::default();
        let request = Request::new(());
        assert_eq!(Caller::of(&request, false, NodeId(1), &stats).unwrap(), Caller::Claimed);
        let refused = Caller::of(&request, true, NodeId(1), &stats).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(stats.snapshot().rejected_unauthenticated, 1);
    }
}
