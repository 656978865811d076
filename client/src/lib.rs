//! iadb-client: [`RemoteDatabase`], the [`DatabaseInterface`] over gRPC, so a
//! Rust program uses a remote iadb server exactly as it would a local adapter.
//!
//! Retries are honest about writes. Reads (`query`/`fetch_*` over `FetchAll`,
//! `FetchOne`, `TableExists`, `Health`) are retried with exponential backoff
//! on UNAVAILABLE. Writes (`execute`, `execute_many`, `execute_query`,
//! `migrate`) are retried only when the request never left this client (the
//! connection to the server could not be made): an UNAVAILABLE that arrives
//! after the request was sent may come from a write that was committed, and
//! is returned as it is.
//!
//! [`RemoteDatabase::batch`] runs statements in one transaction (a write,
//! unless read-only). [`RemoteDatabase::transaction`] opens an interactive
//! [`Transaction`]; opening it is retried as a read (nothing has run), but
//! nothing inside it is, and its commit never is: a commit whose answer is
//! lost has an unknown outcome, and its error says so.
//!
//! Deadlines (`with_timeout`) cover the whole call, retries and every frame
//! of a stream included. When the deadline passes the call ends with
//! DEADLINE_EXCEEDED, whether the server's status or this client's own
//! timer noticed it first (never CANCELLED).

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use iadb::{
    Column, DatabaseInterface, Error, ErrorKind, ExecuteOutcome, QueryEvent, QueryStream, Result,
    Value,
    proto::{self, database_client::DatabaseClient, fetch_all_response::Frame},
};
use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};

pub use arrow::ArrowStream;
pub use iadb;
pub use iadb::arrow::{RecordBatch, SchemaRef};
pub use transaction::{
    Isolation, Statement, StatementResult, Transaction, TransactionOptions, TransactionRows,
};

mod arrow;
pub mod script;
mod transaction;

/// Largest message the client sends or accepts (a row batch with a large
/// value, a request with large parameters).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How calls are retried: reads on UNAVAILABLE, writes only when their
/// request never left the client (see the crate's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// Delay before the first retry; doubles each time.
    pub initial_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// What a call may do to the database, which decides when it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Changes nothing: retried on any UNAVAILABLE.
    Read,
    /// May change data: retried only when the request never left the client.
    Write,
}

/// A failed attempt of a call.
struct Failure {
    error: Error,
    /// The request never left this client: the connection to the server
    /// could not be made, so nothing can have been applied.
    unsent: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            unsent: false,
        }
    }
}

impl Failure {
    /// The error of a gRPC status, for a call whose deadline is `deadline`.
    ///
    /// tonic reports the expiry of the client's own timer (the `grpc-timeout`
    /// it sends) as CANCELLED "Timeout expired"; that, or any CANCELLED once
    /// the deadline has passed, is the deadline and is DEADLINE_EXCEEDED.
    fn from_status(status: Status, deadline: Option<Deadline>) -> Self {
        let mut unsent = false;
        let mut timer_expired = false;
        let mut source = std::error::Error::source(&status);
        while let Some(e) = source {
            unsent |= e.is::<tonic::ConnectError>();
            timer_expired |= e.is::<tonic::TimeoutExpired>();
            source = e.source();
        }
        if let Some(deadline) = deadline
            && (timer_expired || (status.code() == Code::Cancelled && deadline.passed()))
        {
            return deadline.exceeded().into();
        }
        Self {
            error: Error::from(status),
            unsent: unsent && !timer_expired,
        }
    }

    /// Whether another attempt may be made.
    fn retryable(&self, call: Call) -> bool {
        self.error.kind() == ErrorKind::Unavailable && (call == Call::Read || self.unsent)
    }
}

/// The deadline of one call: when it started and how long it may take.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn passed(self) -> bool {
        Instant::now() >= self.at
    }

    /// Time left, or DEADLINE_EXCEEDED when there is none.
    fn remaining(self) -> Result<Duration> {
        match self.at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(self.exceeded()),
        }
    }

    fn exceeded(self) -> Error {
        Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "deadline exceeded: the call did not finish within {} ms",
                self.timeout.as_millis()
            ),
        )
    }
}

/// Awaits one exchange with the server, bounded by `deadline`: whichever
/// timer notices it first, a passed deadline is DEADLINE_EXCEEDED.
async fn exchange<T>(
    deadline: Option<Deadline>,
    answer: impl Future<Output = std::result::Result<T, Status>>,
) -> std::result::Result<T, Failure> {
    let answer = match deadline {
        Some(d) => {
            match tokio::time::timeout_at(tokio::time::Instant::from_std(d.at), answer).await {
                Ok(answer) => answer,
                Err(_) => return Err(d.exceeded().into()),
            }
        }
        None => answer.await,
    };
    answer.map_err(|status| Failure::from_status(status, deadline))
}

/// How to reach an `https://` server: the CA to trust and the client
/// certificate to present (mTLS), as PEM.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// CA certificate(s) to trust; none: the public web's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and its key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// tonic's TLS settings for `server`: TLS for an `https://` address,
    /// none for `http://`. TLS options with an `http://` address are
    /// INVALID_ARGUMENT (they would be ignored, and the traffic clear).
    pub fn config(&self, server: &str) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let https = server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if !https {
            if self.ca_pem.is_some() || self.client.is_some() {
                return Err(Error::invalid_argument(format!(
                    "TLS options (a CA or client certificate) need an https:// server address, \
                     not `{server}`"
                )));
            }
            return Ok(None);
        }
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.client {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        Ok(Some(config))
    }
}

/// The URI of a server address: `HOST:PORT` without a scheme is
/// `http://HOST:PORT`, as grpcurl and the other clients read it; an address
/// with a scheme (`http://`, `https://`) is kept as it is.
pub fn server_uri(address: impl Into<String>) -> String {
    let address = address.into();
    if address.contains("://") {
        address
    } else {
        format!("http://{address}")
    }
}

/// A database behind an iadb server.
pub struct RemoteDatabase {
    endpoint: String,
    database: String,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    retry: RetryPolicy,
    read_only: bool,
    /// Reads (FetchAll, FetchOne) accept a replica this far behind.
    max_staleness: Option<Duration>,
    /// `Bearer <token>`, sent as `authorization` metadata with every call.
    authorization: Option<String>,
    /// TLS settings for an `https://` server.
    tls: TlsOptions,
    client: RwLock<Option<DatabaseClient<Channel>>>,
}

impl RemoteDatabase {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:50051`, or
    /// `127.0.0.1:50051`, which is `http://`), using the server's default
    /// database; `connect` opens it.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: server_uri(endpoint.into()),
            database: String::new(),
            timeout: None,
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            read_only: false,
            max_staleness: None,
            authorization: None,
            tls: TlsOptions::default(),
            client: RwLock::new(None),
        }
    }

    /// Connects to `endpoint` and uses `database` (empty: the default).
    pub async fn connect_to(
        endpoint: impl Into<String>,
        database: impl Into<String>,
    ) -> Result<Self> {
        let db = Self::new(endpoint).with_database(database);
        db.connect().await?;
        Ok(db)
    }

    /// Uses the database named `name` on the server.
    pub fn with_database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// Gives every call this deadline (sent to the server, which stops the
    /// query when it passes). It covers the whole call: retries, and every
    /// frame of a stream. A passed deadline is always DEADLINE_EXCEEDED.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long `connect` tries to reach the server.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How calls are retried (reads on UNAVAILABLE, writes only when their
    /// request never left the client).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Runs every call (Execute, ExecuteMany, FetchAll, FetchOne) in a
    /// read-only transaction of its own on the server, enforced by the
    /// engine: a write or DDL is PERMISSION_DENIED and changes nothing.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Lets reads (`query`, `fetch_all`, `fetch_one`) run on a replica of
    /// the database whose replay lag is within `bound` (bounded staleness;
    /// the server reads on the primary when none is); `None` (the default)
    /// reads on the primary (strong). Writes always run on the primary.
    /// A bounded read may miss the last `bound` of writes, the caller's
    /// own included.
    pub fn with_max_staleness(mut self, bound: Option<Duration>) -> Self {
        self.max_staleness = bound;
        self
    }

    /// The options every call carries.
    fn options(&self) -> Option<proto::QueryOptions> {
        self.read_only.then(|| proto::QueryOptions {
            read_only: true,
            ..Default::default()
        })
    }

    /// The consistency a transaction's begin carries: a read-only one
    /// with [`Self::with_max_staleness`] may run on a replica.
    pub(crate) fn begin_consistency(&self, read_only: bool) -> proto::BeginTransaction {
        match self.max_staleness.filter(|_| read_only) {
            Some(bound) => proto::BeginTransaction {
                consistency: proto::ReadConsistency::BoundedStaleness.into(),
                max_staleness_ms: u32::try_from(bound.as_millis()).unwrap_or(u32::MAX),
                ..Default::default()
            },
            None => proto::BeginTransaction::default(),
        }
    }

    /// The options a read carries: [`Self::options`] and its consistency.
    fn read_options(&self) -> Option<proto::QueryOptions> {
        let Some(bound) = self.max_staleness else {
            return self.options();
        };
        Some(proto::QueryOptions {
            read_only: self.read_only,
            consistency: proto::ReadConsistency::BoundedStaleness.into(),
            max_staleness_ms: u32::try_from(bound.as_millis()).unwrap_or(u32::MAX),
            ..Default::default()
        })
    }

    /// Sends `token` with every call (`authorization: Bearer <token>`), for
    /// a server with a tokens file. A token that is not printable ASCII
    /// fails each call with INVALID_ARGUMENT. The token is never shown in
    /// this client's errors.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.authorization = Some(format!("Bearer {}", token.into().trim()));
        self
    }

    /// Uses these TLS options for an `https://` server.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Trusts the CA certificate(s) in `pem` for an `https://` server
    /// (without it, the public web's roots).
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// Presents this certificate and key (PEM) to a server that asks for
    /// client certificates (mTLS).
    pub fn with_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The database name requests carry.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn client(&self) -> Result<DatabaseClient<Channel>> {
        self.client
            .read()
            .map_err(|_| Error::internal("client lock poisoned"))?
            .clone()
            .ok_or_else(|| Error::unavailable("not connected: call connect() first"))
    }

    /// The deadline of a call starting now, if calls have one.
    fn deadline(&self) -> Option<Deadline> {
        self.timeout.map(|timeout| Deadline {
            at: Instant::now() + timeout,
            timeout,
        })
    }

    /// A request carrying the time left before `deadline`.
    fn request<T>(&self, message: T, deadline: Option<Deadline>) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(d) = deadline {
            request.set_timeout(d.remaining()?);
        }
        if let Some(authorization) = &self.authorization {
            let value = authorization.parse().map_err(|_| {
                Error::invalid_argument(
                    "the token holds characters that cannot be sent as gRPC metadata \
                     (printable ASCII only)",
                )
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// Runs the attempts of one call: retried per the retry policy while
    /// [`Failure::retryable`] for `call` and the deadline leaves time.
    async fn run<T, F, Fut>(
        &self,
        call: Call,
        deadline: Option<Deadline>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut delays = self.retry.backoff().build();
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let delay = if failure.retryable(call) {
                delays.next()
            } else {
                None
            };
            let Some(delay) = delay else {
                return Err(failure.error);
            };
            if deadline.is_some_and(|d| Instant::now() + delay >= d.at) {
                return Err(failure.error);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The server's health report for this database (or, with `all`, every
    /// database), with pool figures.
    pub async fn health(&self, all: bool) -> Result<Vec<proto::DatabaseHealth>> {
        let database = if all {
            String::new()
        } else {
            self.database.clone()
        };
        let deadline = self.deadline();
        self.run(Call::Read, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(
                proto::HealthRequest {
                    database: database.clone(),
                },
                deadline,
            )?;
            let response = exchange(deadline, client.health(request)).await?;
            Ok(response.into_inner().databases)
        })
        .await
    }

    /// Runs a migration action on this database (`files`: app migrations
    /// sent with the request, in addition to the server's own). A write:
    /// retried only when the request never left the client.
    pub async fn migrate(&self, request: proto::MigrateRequest) -> Result<proto::MigrateResponse> {
        let request = proto::MigrateRequest {
            database: self.database.clone(),
            ..request
        };
        let deadline = self.deadline();
        self.run(Call::Write, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(request.clone(), deadline)?;
            Ok(exchange(deadline, client.migrate(request))
                .await?
                .into_inner())
        })
        .await
    }

    /// Opens a FetchAll stream and reads its header; `call` says how a
    /// failure before the header is retried. The stream is an error, never
    /// a short success, unless it ends with its summary.
    async fn open_stream(&self, sql: &str, params: &[Value], call: Call) -> Result<QueryStream> {
        let deadline = self.deadline();
        let (columns, mut inbound) = self.open_fetch(sql, params, call, false, deadline).await?;
        let events = async_stream::try_stream! {
            let mut rows: u64 = 0;
            let mut summary = None;
            while let Some(message) = exchange(deadline, inbound.message())
                .await
                .map_err(|f| f.error)?
            {
                match (message.frame, summary.is_some()) {
                    (Some(Frame::Batch(batch)), false) => {
                        // The batch's bytes are kept and each row decoded
                        // as it is read.
                        for values in batch.into_rows() {
                            rows += 1;
                            yield QueryEvent::Row(values?);
                        }
                    }
                    (Some(Frame::Summary(s)), false) => summary = Some(s),
                    _ => Err(Error::internal(
                        "result stream broken: unexpected frame after the header",
                    ))?,
                }
            }
            let summary = match summary {
                Some(summary) => summary,
                None => Err(Error::internal(format!(
                    "result stream broken: it ended after {rows} rows without its summary, \
                     so the result may be incomplete"
                )))?,
            };
            if summary.row_count != rows {
                Err(Error::internal(format!(
                    "result stream broken: its summary counts {} rows but {rows} arrived",
                    summary.row_count
                )))?;
            }
            yield QueryEvent::Done(ExecuteOutcome {
                rows_affected: summary.rows_affected,
                last_insert_id: None,
            });
        };
        Ok(QueryStream {
            columns,
            events: events.boxed(),
        })
    }

    /// Runs a query whose rows come as Apache Arrow (FetchAll with
    /// RESULT_FORMAT_ARROW, docs/arrow.md): its schema (known even when no
    /// batch follows) and a stream of record batches, one per batch the
    /// server sends. A read: retried as `fetch_all` is, until the header.
    /// The stream ends with an error, never early, unless the result came
    /// whole (its end marker, and a summary that counts the rows that
    /// arrived).
    pub async fn fetch_arrow(&self, sql: &str, params: &[Value]) -> Result<ArrowStream<'static>> {
        let deadline = self.deadline();
        let (columns, mut inbound) = self
            .open_fetch(sql, params, Call::Read, true, deadline)
            .await?;
        let frames = async_stream::try_stream! {
            let mut reader = arrow::ArrowFrames::default();
            while let Some(message) = exchange(deadline, inbound.message())
                .await
                .map_err(|f| f.error)?
            {
                match message.frame {
                    Some(frame) => yield reader.check(frame)?,
                    None => Err(Error::internal("result stream broken: an empty frame"))?,
                }
            }
        };
        arrow::open(columns, Box::pin(frames)).await
    }

    /// Opens a FetchAll stream and reads its header; `call` says how a
    /// failure before the header is retried.
    async fn open_fetch(
        &self,
        sql: &str,
        params: &[Value],
        call: Call,
        arrow: bool,
        deadline: Option<Deadline>,
    ) -> Result<(Arc<[Column]>, tonic::Streaming<proto::FetchAllResponse>)> {
        self.run(call, deadline, || async {
            let mut client = self.client()?;
            let mut options = match call {
                Call::Read => self.read_options(),
                _ => self.options(),
            };
            if arrow {
                options.get_or_insert_default().result_format = proto::ResultFormat::Arrow.into();
            }
            let request = self.request(
                proto::FetchAllRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    params: Self::params(params),
                    options,
                },
                deadline,
            )?;
            let mut inbound = exchange(deadline, client.fetch_all(request))
                .await?
                .into_inner();
            match exchange(deadline, inbound.message()).await? {
                Some(proto::FetchAllResponse {
                    frame: Some(Frame::Header(header)),
                }) => {
                    let columns: Arc<[Column]> =
                        header.columns.into_iter().map(Column::from).collect();
                    Ok((columns, inbound))
                }
                Some(_) => Err(Error::internal(
                    "result stream broken: it did not start with a header",
                )
                .into()),
                None => Err(Error::internal(
                    "result stream broken: it ended without a header or a summary",
                )
                .into()),
            }
        })
        .await
    }

    /// Like [`DatabaseInterface::query`], for a statement that may write
    /// (the CLI's `query` runs whatever it is given): its rows and its
    /// outcome stream, but it is retried only when the request never left
    /// the client, as `execute` is.
    pub async fn query_write(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        self.open_stream(sql, params, Call::Write).await
    }

    fn params(params: &[Value]) -> Vec<proto::Value> {
        params.iter().cloned().map(Into::into).collect()
    }
}

#[async_trait]
impl DatabaseInterface for RemoteDatabase {
    async fn connect(&self) -> Result<()> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| {
                Error::invalid_argument(format!("bad server address `{}`: {e}", self.endpoint))
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = self.tls.config(&self.endpoint)? {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::invalid_argument(format!("TLS: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            Error::unavailable(format!(
                "cannot reach iadb server at {}: {e}",
                self.endpoint
            ))
        })?;
        let client = DatabaseClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        *self
            .client
            .write()
            .map_err(|_| Error::internal("client lock poisoned"))? = Some(client);
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        self.client
            .write()
            .map_err(|_| Error::internal("client lock poisoned"))?
            .take();
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.client.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// A read: retried on UNAVAILABLE before the header arrives. Send a
    /// statement that writes (`INSERT ... RETURNING` too) with
    /// `execute_query` or `execute`, which are not retried once sent.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        self.open_stream(sql, params, Call::Read).await
    }

    /// Retried only when the request never left the client, unlike the
    /// fetches: the statement may be a write, and a write that reached the
    /// engine before the connection failed must not run twice.
    async fn execute_query(&self, sql: &str, params: &[Value]) -> iadb::QueryResult {
        let started = Instant::now();
        iadb::collect_query_result(self.open_stream(sql, params, Call::Write).await, started).await
    }

    async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Option<iadb::Row>> {
        let deadline = self.deadline();
        self.run(Call::Read, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(
                proto::FetchOneRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    params: Self::params(params),
                    options: self.read_options(),
                },
                deadline,
            )?;
            let response = exchange(deadline, client.fetch_one(request))
                .await?
                .into_inner();
            let columns: Arc<[Column]> = response.columns.into_iter().map(Column::from).collect();
            let row = response
                .row
                .map(|row| Ok::<_, Error>(iadb::Row::new(columns, Vec::<Value>::try_from(row)?)))
                .transpose()?;
            Ok(row)
        })
        .await
    }

    /// Retried only when the request never left the client.
    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        let deadline = self.deadline();
        self.run(Call::Write, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(
                proto::ExecuteRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    params: Self::params(params),
                    options: self.options(),
                },
                deadline,
            )?;
            let response = exchange(deadline, client.execute(request))
                .await?
                .into_inner();
            Ok(ExecuteOutcome {
                rows_affected: response.rows_affected,
                last_insert_id: response.last_insert_id,
            })
        })
        .await
    }

    /// Retried only when the request never left the client.
    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome> {
        let message = proto::ExecuteManyRequest {
            database: self.database.clone(),
            sql: sql.to_owned(),
            param_sets: param_sets
                .iter()
                .map(|set| proto::Row {
                    values: Self::params(set),
                })
                .collect(),
            options: self.options(),
        };
        let deadline = self.deadline();
        self.run(Call::Write, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(message.clone(), deadline)?;
            let response = exchange(deadline, client.execute_many(request))
                .await?
                .into_inner();
            Ok(ExecuteOutcome {
                rows_affected: response.rows_affected,
                last_insert_id: None,
            })
        })
        .await
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        let deadline = self.deadline();
        self.run(Call::Read, deadline, || async {
            let mut client = self.client()?;
            let request = self.request(
                proto::TableExistsRequest {
                    database: self.database.clone(),
                    table: table.to_owned(),
                },
                deadline,
            )?;
            let response = exchange(deadline, client.table_exists(request)).await?;
            Ok(response.into_inner().exists)
        })
        .await
    }

    /// Quotes names the way the server's engine reads them (MySQL:
    /// backticks), which it learns from the server's health report.
    async fn create_table(&self, table: &str, columns: &[(String, String)]) -> Result<()> {
        let engine = self
            .health(false)
            .await?
            .first()
            .map(|h| h.engine.clone())
            .unwrap_or_default();
        let mysql = engine.parse() == Ok(iadb::DatabaseType::Mysql);
        let sql = iadb::create_table_sql(table, columns, |name| {
            if mysql {
                format!("`{}`", name.replace('`', "``"))
            } else {
                iadb::quote_identifier(name)
            }
        })?;
        self.execute(&sql, &[]).await?;
        Ok(())
    }

    async fn health_check(&self) -> Result<()> {
        let report = self.health(false).await?;
        match report.first() {
            Some(h) if h.healthy => Ok(()),
            Some(h) => Err(Error::unavailable(format!(
                "database `{}` is unhealthy: {}",
                h.name, h.message
            ))),
            None => Err(Error::internal("empty health report")),
        }
    }
}
