//! The tower layer around every gRPC service, which does what each call
//! needs whatever its RPC: its tracing span (RPC, token, and the database
//! and statement fingerprint its handler records), authentication, the
//! scope the RPC needs, per-token limits, and the bookkeeping of its end —
//! `iadb_requests_total` and the duration histogram, the token's count, and
//! the outcome's log line (debug on success, warn with the code and the
//! SQLSTATE on error) — taken from the status the response ends with, so a
//! handler has none of it inline.
//!
//! It sees HTTP requests before they are decoded, so it decides what the
//! path and the metadata tell: who the caller is (`authorization: Bearer`),
//! and the least scope of the RPC (Execute and ExecuteMany need `write`,
//! Migrate `admin`, the rest `read`). What depends on the request's body —
//! the database named, and whether a Batch or a Transaction is read-only —
//! is checked by the handlers, with the [`Identity`] this layer puts in
//! the request's extensions; a handler names its call's database in the
//! [`CallLabel`] the layer puts there too.
//!
//! Only `iadb.v1.Database` is guarded: the standard health service and
//! reflection stay open (they show no data, and probes carry no token).

use crate::{
    auth::{Identity, Scope, TokenStore},
    metrics::{Metrics, UNKNOWN_DATABASE},
};
use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Status, body::Body};
use tower::{Layer, Service};
use tracing::{Instrument, Span, debug, info_span, warn};

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
        let Some(name) = request.uri().path().strip_prefix(DATABASE_SERVICE) else {
            return Box::pin(inner.call(request));
        };
        let Some((rpc, needs)) = rpc_of(name) else {
            return Box::pin(inner.call(request));
        };
        let started = Instant::now();
        let span = info_span!(
            "rpc",
            rpc,
            token = tracing::field::Empty,
            database = tracing::field::Empty,
            fingerprint = tracing::field::Empty
        );
        let (token, permit) = match &self.tokens {
            None => (None, None),
            Some(tokens) => match self.admit(tokens, &request, rpc, needs) {
                Ok((identity, permit)) => {
                    span.record("token", tracing::field::display(&identity.name));
                    let name = identity.name.clone();
                    request.extensions_mut().insert(identity);
                    (Some(name), permit)
                }
                Err(refused) => return Box::pin(async move { Ok(refused) }),
            },
        };
        let label = CallLabel::default();
        request.extensions_mut().insert(label.clone());
        let mut end = CallEnd {
            metrics: self.metrics.clone(),
            token,
            rpc,
            label,
            started,
            span: span.clone(),
            recorded: false,
            _permit: permit,
        };
        Box::pin(
            async move {
                // `end` is dropped (and the call counted as CANCELLED) if the
                // client leaves before the handler answers.
                let response = inner.call(request).await?;
                // A trailers-only answer (an error before any message)
                // carries its status in the headers.
                if let Some(status) = Status::from_header_map(response.headers()) {
                    end.record(&status);
                }
                Ok(response.map(|body| Body::new(Tracked { body, end })))
            }
            .instrument(span),
        )
    }
}

impl<S> CallGuard<S> {
    /// Authenticates a call and checks the RPC's least scope and the
    /// token's limits: the caller's identity and its concurrency permit, or
    /// the refusal to answer with.
    #[allow(clippy::result_large_err)]
    fn admit(
        &self,
        tokens: &TokenStore,
        request: &http::Request<Body>,
        rpc: &'static str,
        needs: Scope,
    ) -> Result<(Identity, Option<OwnedSemaphorePermit>), http::Response<Body>> {
        let set = tokens.current();
        // A bearer token; without one, the client certificate the TLS
        // handshake verified (mTLS), when an entry names it.
        let found = match bearer(request.headers()) {
            Some(presented) => Some(set.find(presented)),
            None => client_certificate(request).map(|der| set.find_certificate(&der)),
        };
        let Some(found) = found else {
            return Err(self.refuse(
                UNAUTHENTICATED,
                rpc,
                Status::unauthenticated(
                    "this server needs a token: send `authorization: Bearer <token>` metadata \
                     (the CLI's --token or IADB_TOKEN)",
                ),
            ));
        };
        let Some(token) = found else {
            return Err(self.refuse(
                UNAUTHENTICATED,
                rpc,
                Status::unauthenticated("unknown token (it may have been revoked or rotated)"),
            ));
        };
        let identity: Identity = token.identity.clone();
        if identity.scope < needs {
            return Err(self.refuse(
                &identity.name,
                rpc,
                Status::permission_denied(format!(
                    "{rpc} needs the `{needs}` scope; token `{}` has `{}`",
                    identity.name, identity.scope
                )),
            ));
        }
        match token.limiter.admit() {
            Ok(permit) => Ok((identity, permit)),
            Err(exceeded) => Err(self.refuse(
                &identity.name,
                rpc,
                Status::resource_exhausted(exceeded.message(&identity.name)),
            )),
        }
    }
}

/// What a handler tells the layer about its call once it has read the
/// request's body: the database it names (a configured name, or
/// [`UNKNOWN_DATABASE`] / [`ALL_DATABASES`](crate::metrics::ALL_DATABASES)),
/// which labels the call's metrics, and, for a streaming call, how its
/// work ended — so a client that drops a stream after its last answer
/// without reading the trailers (a committed Transaction, a FetchAll whose
/// summary arrived) is counted by what the server did, not as CANCELLED.
/// Put in each guarded request's extensions by the layer.
#[derive(Clone, Default)]
pub struct CallLabel(Arc<CallNote>);

#[derive(Default)]
struct CallNote {
    database: OnceLock<String>,
    ended: OnceLock<(tonic::Code, String)>,
}

impl CallLabel {
    /// The label slot of a request (a fresh one, never read, when the
    /// request did not come through the layer, as in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> CallLabel {
        request
            .extensions()
            .get::<CallLabel>()
            .cloned()
            .unwrap_or_default()
    }

    /// Names the call's database (the first name given stays).
    pub fn set(&self, database: &str) {
        let _ = self.0.database.set(database.to_owned());
    }

    /// Records how a streaming call's work ended (the first result stays).
    pub fn ended(&self, result: &Result<(), iadb::Error>) {
        let ended = match result {
            Ok(()) => (tonic::Code::Ok, String::new()),
            Err(e) => (tonic::Code::from(e.kind()), e.message().to_owned()),
        };
        let _ = self.0.ended.set(ended);
    }

    /// The status the call's work ended with, once it is known.
    #[cfg(test)]
    pub(crate) fn outcome(&self) -> Option<tonic::Code> {
        self.0.ended.get().map(|(code, _)| *code)
    }

    fn get(&self) -> &str {
        self.0
            .database
            .get()
            .map_or(UNKNOWN_DATABASE, String::as_str)
    }
}

/// What is left to do when a guarded call's response ends: count it under
/// its status (`iadb_requests_total`, its duration, and the token's count),
/// log its outcome inside its span (debug on success, warn on error), and
/// give the token's concurrency permit back (dropping it).
struct CallEnd {
    metrics: Metrics,
    /// The token's name, when the server has tokens.
    token: Option<Arc<str>>,
    rpc: &'static str,
    label: CallLabel,
    started: Instant,
    span: Span,
    recorded: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl CallEnd {
    fn record(&mut self, status: &Status) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let elapsed = self.started.elapsed();
        let code = status.code();
        self.metrics
            .record_call_code(self.rpc, self.label.get(), code, elapsed);
        if let Some(token) = &self.token {
            self.metrics.record_token_call(token, self.rpc, code);
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.span.in_scope(|| {
            if code == tonic::Code::Ok {
                debug!(ms, "ok");
            } else {
                let sqlstate = status
                    .metadata()
                    .get(iadb::SQLSTATE_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                warn!(ms, code = ?code, sqlstate, "{}", status.message());
            }
        });
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        // A response dropped before its trailers: the client left, after
        // the work ended (as the handler reported) or before.
        let status = match self.label.0.ended.get() {
            Some((code, message)) => Status::new(*code, message.clone()),
            None => Status::cancelled("the client left before the call ended"),
        };
        self.record(&status);
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
            let status = Status::from_header_map(trailers).unwrap_or_else(|| Status::ok(""));
            this.end.record(&status);
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
