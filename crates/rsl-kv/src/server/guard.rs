//! The gate in front of the client API: every call passes [`Guarded`], which names the
//! RPC from the request path, authenticates the caller (a bearer token in the
//! `authorization` metadata, or a verified client certificate) and checks that its role
//! allows the RPC's operation, before any handler runs. A refused call is answered here
//! with `UNAUTHENTICATED` or `PERMISSION_DENIED` and never reaches the service, so it
//! changes nothing. The caller's [`Access`] travels on in the request's extensions: the
//! `Stream` RPC checks each batch of operations against it (`stream.rs`).
//!
//! This is the one place that decides; the handlers hold no checks of their own.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

use crate::auth::{Access, AuthError, Authenticator, Operation};

/// An RPC of the `Kv` service, as the gate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rpc {
    Put,
    Get,
    Delete,
    Cas,
    Status,
    Reconfigure,
    Stream,
    Snapshot,
    Promote,
    ChangeTiming,
    Reseed,
    Exclusive,
}

impl Rpc {
    const ALL: [Rpc; 12] = [
        Rpc::Put,
        Rpc::Get,
        Rpc::Delete,
        Rpc::Cas,
        Rpc::Status,
        Rpc::Reconfigure,
        Rpc::Stream,
        Rpc::Snapshot,
        Rpc::Promote,
        Rpc::ChangeTiming,
        Rpc::Reseed,
        Rpc::Exclusive,
    ];

    /// The method's name in `proto/rsl_kv.proto`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Rpc::Put => "Put",
            Rpc::Get => "Get",
            Rpc::Delete => "Delete",
            Rpc::Cas => "Cas",
            Rpc::Status => "Status",
            Rpc::Reconfigure => "Reconfigure",
            Rpc::Stream => "Stream",
            Rpc::Snapshot => "Snapshot",
            Rpc::Promote => "Promote",
            Rpc::ChangeTiming => "ChangeTiming",
            Rpc::Reseed => "Reseed",
            Rpc::Exclusive => "Exclusive",
        }
    }

    /// The RPC a request path (`/rsl.kv.v1.Kv/Put`) names, if it is one of service
    /// `service`'s.
    fn from_path(service: &str, path: &str) -> Option<Rpc> {
        let method = path.strip_prefix('/')?.strip_prefix(service)?.strip_prefix('/')?;
        Rpc::ALL.into_iter().find(|rpc| rpc.name() == method)
    }

    /// What the RPC does. A `Stream` may carry reads only, so opening one needs no more;
    /// each batch is checked again for what it carries.
    fn operation(self) -> Operation {
        match self {
            Rpc::Get | Rpc::Status | Rpc::Stream => Operation::Read,
            Rpc::Put | Rpc::Delete | Rpc::Cas => Operation::Write,
            Rpc::Reconfigure => Operation::Reconfigure,
            Rpc::Snapshot => Operation::Backup,
            Rpc::Promote | Rpc::ChangeTiming | Rpc::Reseed | Rpc::Exclusive => Operation::Control,
        }
    }
}

/// The status a refusal is answered with.
pub(super) fn refusal(error: AuthError) -> Status {
    match error {
        AuthError::Unauthenticated(message) => Status::unauthenticated(message),
        forbidden @ AuthError::Forbidden { .. } => Status::permission_denied(forbidden.to_string()),
    }
}

/// Decides on each call: `None` lets everyone do everything (authentication off).
#[derive(Debug)]
pub(super) struct Gate {
    authenticator: Option<Authenticator>,
}

impl Gate {
    pub(super) fn new(authenticator: Option<Authenticator>) -> Gate {
        Gate { authenticator }
    }

    /// Admits a call to `path` with `headers` (and, over TLS, the client certificate in
    /// `extensions`) as the [`Access`] returned, or refuses it.
    fn admit(
        &self,
        service: &str,
        path: &str,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Access, Status> {
        let access = match &self.authenticator {
            None => Access::open(),
            Some(authenticator) => {
                let token = bearer_token(headers)?;
                let names = super::client_tls::certificate_names(extensions);
                authenticator.authenticate(token, &names).map_err(refusal)?
            }
        };
        // An unknown method is left to the service (it answers UNIMPLEMENTED), but only
        // to an authenticated caller.
        if let Some(rpc) = Rpc::from_path(service, path) {
            access.authorize(rpc.operation(), rpc.name()).map_err(refusal)?;
        }
        Ok(access)
    }
}

/// The token of an `authorization: Bearer <token>` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else { return Ok(None) };
    let malformed = || Status::unauthenticated("the authorization metadata is not `Bearer <token>`");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.trim()))
}

/// A service behind the [`Gate`].
#[derive(Clone, Debug)]
pub(super) struct Guarded<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Guarded<S> {
    pub(super) fn new(inner: S, gate: Gate) -> Guarded<S> {
        Guarded { inner, gate: Arc::new(gate) }
    }
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + NamedService,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let admitted =
            self.gate.admit(S::NAME, request.uri().path(), request.headers(), request.extensions());
        match admitted {
            Ok(access) => {
                request.extensions_mut().insert(access);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(path = request.uri().path(), %status, "client call refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_token, AuthFile, Role, UserFile};
    use tonic::Code;

    const SERVICE: &str = "rsl.kv.v1.Kv";

    fn gate() -> Gate {
        let user = |name: &str, role| UserFile {
            name: name.into(),
            role: Some(role),
            token_sha256: Some(hash_token(&format!("{name}-token"))),
            cert_name: None,
        };
        let users = vec![user("reader", Role::Read), user("writer", Role::ReadWrite)];
        let config = AuthFile { enabled: Some(true), users }.resolve(false).unwrap().unwrap();
        Gate::new(Some(Authenticator::new(&config)))
    }

    fn admit(gate: &Gate, method: &str, authorization: Option<&str>) -> Result<Access, Code> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        let path = format!("/{SERVICE}/{method}");
        gate.admit(SERVICE, &path, &headers, &http::Extensions::new()).map_err(|status| status.code())
    }

    #[test]
    fn every_path_is_decided_by_the_caller_and_the_operation() {
        let gate = gate();
        let reader = admit(&gate, "Get", Some("Bearer reader-token")).unwrap();
        assert_eq!(reader.role, Role::Read);
        assert_eq!(admit(&gate, "Put", Some("Bearer reader-token")), Err(Code::PermissionDenied));
        assert!(admit(&gate, "Put", Some("bearer writer-token")).is_ok());
        assert_eq!(admit(&gate, "Reconfigure", Some("Bearer writer-token")), Err(Code::PermissionDenied));
        assert_eq!(admit(&gate, "Snapshot", Some("Bearer writer-token")), Err(Code::PermissionDenied));
        for control in ["Promote", "ChangeTiming", "Reseed", "Exclusive"] {
            assert_eq!(
                admit(&gate, control, Some("Bearer writer-token")),
                Err(Code::PermissionDenied),
                "{control}"
            );
        }
        for authorization in [None, Some("Bearer wrong"), Some("Basic reader-token"), Some("Bearer ")] {
            assert_eq!(admit(&gate, "Get", authorization), Err(Code::Unauthenticated), "{authorization:?}");
        }
        // An unknown method (the checkpoint transfer that this port once served, say)
        // still needs a caller.
        assert_eq!(admit(&gate, "FetchCheckpoint", None), Err(Code::Unauthenticated));
        assert!(admit(&gate, "Nope", Some("Bearer reader-token")).is_ok());
        // Another service's path of the same name is no RPC of this one.
        assert_eq!(Rpc::from_path(SERVICE, "/other.Kv/Put"), None);
        // Off: everyone is admitted to everything.
        let open = Gate::new(None);
        assert_eq!(admit(&open, "Reconfigure", None), Ok(Access::open()));
    }
}
