//! The tower layer around every gRPC service: authentication, the scope an
//! RPC needs, per-token limits, and the per-token bookkeeping (a tracing
//! span naming the token, the `iadb_token_calls_total` metric, a log line
//! for each refusal).
//!
//! It sees HTTP requests before they are decoded, so it decides what the
//! path and the metadata tell: who the caller is (`authorization: Bearer`),
//! and the least scope of the RPC (Execute and ExecuteMany need `write`,
//! Migrate `admin`, the rest `read`). What depends on the request's body —
//! the database named, and whether a Batch or a Transaction is read-only —
//! is checked by the handlers, with the [`Identity`] this layer puts in
//! the request's extensions.
//!
//! Only `iadb.v1.Database` is guarded: the standard health service and
//! reflection stay open (they show no data, and probes carry no token).

use crate::{
    auth::{Identity, Scope, TokenStore},
    metrics::Metrics,
};
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Status, body::Body};
use tower::{Layer, Service};
use tracing::{Instrument, info_span, warn};

/// The path prefix of the guarded service.
const DATABASE_SERVICE: &str = "/iadb.v1.Database/";

/// The label of calls whose token is missing or unknown.
const UNAUTHENTICATED: &str = "(unauthenticated)";

/// The least scope each RPC needs, by its name in the path; `None` for a
/// name that is not an RPC of the service (tonic answers UNIMPLEMENTED).
fn rpc_of(name: &str) -> Option<(&'static str, Scope)> {
    Some(match name {
        "Execute" => ("Execute", Scope::Write),
        "ExecuteMany" => ("ExecuteMany", Scope::Write),
        "FetchAll" => ("FetchAll", Scope::Read),
        "FetchOne" => ("FetchOne", Scope::Read),
        "TableExists" => ("TableExists", Scope::Read),
        "Migrate" => ("Migrate", Scope::Admin),
        "Health" => ("Health", Scope::Read),
        // Read-only ones need only `read`; the handler checks the flag.
        "Batch" => ("Batch", Scope::Read),
        "Transaction" => ("Transaction", Scope::Read),
        _ => return None,
    })
}

/// The token in `authorization: Bearer <token>`, if any.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The DER of the certificate the client presented in the TLS handshake
/// (verified by then against `--tls-client-ca`), if any.
fn client_certificate(request: &http::Request<Body>) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|c| c.as_ref().to_vec())
}

/// Installs [`CallGuard`] around a service.
#[derive(Clone)]
pub struct CallLayer {
    tokens: Option<Arc<TokenStore>>,
    metrics: Metrics,
}

impl CallLayer {
    /// Guards with `tokens` (none: every call is let through, as before
    /// tokens existed; the server only allows that on loopback unless
    /// `--insecure-no-auth`).
    pub fn new(tokens: Option<Arc<TokenStore>>, metrics: Metrics) -> Self {
        Self { tokens, metrics }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallGuard {
            inner,
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module's documentation.
#[derive(Clone)]
pub struct CallGuard<S> {
    inner: S,
    tokens: Option<Arc<TokenStore>>,
    metrics: Metrics,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> CallGuard<S> {
    /// The refusal of a call, counted and logged (the token's name when it
    /// is known; never the token).
    fn refuse(&self, token: &str, rpc: &'static str, status: Status) -> http::Response<Body> {
        warn!(token, rpc, code = ?status.code(), "call refused: {}", status.message());
        self.metrics.record_token_call(token, rpc, status.code());
        status.into_http()
    }
}

impl<S> Service<http::Request<Body>> for CallGuard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready serves this call; the clone
        // waits for the next one (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(tokens) = &self.tokens else {
            return Box::pin(inner.call(request));
        };
        let Some(name) = request.uri().path().strip_prefix(DATABASE_SERVICE) else {
            return Box::pin(inner.call(request));
        };
        let Some((rpc, needs)) = rpc_of(name) else {
            return Box::pin(inner.call(request));
        };
        let set = tokens.current();
        // A bearer token; without one, the client certificate the TLS
        // handshake verified (mTLS), when an entry names it.
        let found = match bearer(request.headers()) {
            Some(presented) => Some(set.find(presented)),
            None => client_certificate(&request).map(|der| set.find_certificate(&der)),
        };
        let Some(found) = found else {
            let refused = self.refuse(
                UNAUTHENTICATED,
                rpc,
                Status::unauthenticated(
                    "this server needs a token: send `authorization: Bearer <token>` metadata \
                     (the CLI's --token or IADB_TOKEN)",
                ),
            );
            return Box::pin(async move { Ok(refused) });
        };
        let Some(token) = found else {
            let refused = self.refuse(
                UNAUTHENTICATED,
                rpc,
                Status::unauthenticated("unknown token (it may have been revoked or rotated)"),
            );
            return Box::pin(async move { Ok(refused) });
        };
        let identity: Identity = token.identity.clone();
        if identity.scope < needs {
            let refused = self.refuse(
                &identity.name,
                rpc,
                Status::permission_denied(format!(
                    "{rpc} needs the `{needs}` scope; token `{}` has `{}`",
                    identity.name, identity.scope
                )),
            );
            return Box::pin(async move { Ok(refused) });
        }
        let permit = match token.limiter.admit() {
            Ok(permit) => permit,
            Err(exceeded) => {
                let refused = self.refuse(
                    &identity.name,
                    rpc,
                    Status::resource_exhausted(exceeded.message(&identity.name)),
                );
                return Box::pin(async move { Ok(refused) });
            }
        };
        drop(set);
        let span = info_span!("call", token = %identity.name);
        let metrics = self.metrics.clone();
        let name = identity.name.clone();
        request.extensions_mut().insert(identity);
        Box::pin(
            async move {
                let response = inner.call(request).await?;
                // A trailers-only answer (an error before any message)
                // carries its status in the headers.
                let early = Status::from_header_map(response.headers()).map(|s| s.code());
                let mut end = CallEnd {
                    metrics,
                    token: name,
                    rpc,
                    recorded: false,
                    _permit: permit,
                };
                if let Some(code) = early {
                    end.record(code);
                }
                Ok(response.map(|body| Body::new(Tracked { body, end })))
            }
            .instrument(span),
        )
    }
}

/// What is left to do when a guarded call's response ends: count it under
/// its status, and give its concurrency permit back (dropping it).
struct CallEnd {
    metrics: Metrics,
    token: Arc<str>,
    rpc: &'static str,
    recorded: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl CallEnd {
    fn record(&mut self, code: tonic::Code) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.record_token_call(&self.token, self.rpc, code);
        }
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        // A response dropped before its trailers: the client left.
        self.record(tonic::Code::Cancelled);
    }
}

/// A response body that records its call's end (from the trailers) and
/// holds the token's concurrency permit until it is done: a stream counts
/// as a running call until its last frame.
struct Tracked {
    body: Body,
    end: CallEnd,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            let code = Status::from_header_map(trailers).map_or(tonic::Code::Ok, |s| s.code());
            this.end.record(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn migrate_needs_admin_and_writes_need_write() {
        assert_eq!(rpc_of("Migrate").map(|r| r.1), Some(Scope::Admin));
        assert_eq!(rpc_of("Execute").map(|r| r.1), Some(Scope::Write));
        assert_eq!(rpc_of("FetchAll").map(|r| r.1), Some(Scope::Read));
        assert_eq!(rpc_of("Nope"), None);
    }
}
