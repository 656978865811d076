//! The gRPC handlers of `iadb.v1.Database`. Each resolves the database by
//! name, converts the request (bad input is INVALID_ARGUMENT before any
//! engine work), runs it on the adapter under the call's deadline, and
//! converts back. Errors become statuses only through `From<iadb::Error>`.

use crate::{
    admission::{Admission, Turn},
    auth::{Identity, Scope},
    backend::session::RowSink,
    backend::{BatchOptions, ReadOnlyCall},
    config::Limits,
    layer::CallLabel,
    metrics::{ALL_DATABASES, Metrics, UNKNOWN_DATABASE},
    migrate::{MigrateAction, MigrateOptions, MigrationType, source::MigrationFile},
    placeholders::{Dialect, StatementShape, fingerprint, statement_shape},
    registry::Registry,
    replicas::ReadMember,
    transaction,
};
use futures::FutureExt;
use futures::StreamExt;
use iadb::{
    DatabaseType, Error, ErrorKind, ExecuteOutcome, QueryEvent, QueryStream, RowBatch, Value,
    ValueScrubber,
    convert::params_from_proto,
    proto::{self, database_server::Database, fetch_all_response::Frame},
};
use std::{
    any::Any,
    collections::BTreeMap,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, debug, info};

/// Batches in flight between the engine and the wire, per stream. Small, so a
/// slow client slows the engine instead of filling the server's memory.
const STREAM_CHANNEL_BATCHES: usize = 2;

/// The `Database` service.
#[derive(Clone)]
pub struct DatabaseService {
    registry: Arc<Registry>,
    /// Admission per configured database name.
    admission: Arc<BTreeMap<String, Admission>>,
    limits: Limits,
    migrate_options: MigrateOptions,
    metrics: Metrics,
}

impl DatabaseService {
    /// A service over `registry`, recording into `metrics`.
    pub fn new(
        registry: Arc<Registry>,
        limits: Limits,
        migrate_options: MigrateOptions,
        metrics: Metrics,
    ) -> Self {
        let admission = registry
            .names()
            .map(|name| {
                let admission = Admission::new(
                    limits.max_concurrent_calls,
                    limits.max_queued_calls,
                    limits.queue_timeout,
                );
                (name.to_owned(), admission)
            })
            .collect();
        Self {
            registry,
            admission: Arc::new(admission),
            limits,
            migrate_options,
            metrics,
        }
    }

    /// Waits for a turn on `database` (see [`Admission`]).
    pub(crate) async fn turn(&self, database: &str) -> Result<Turn, Error> {
        let name = match self.registry.describe(database) {
            Some((name, _)) => name,
            None => return Err(self.unknown(database)),
        };
        match self.admission.get(name) {
            Some(admission) => admission.enter(name).await,
            None => Err(self.unknown(database)),
        }
    }

    /// The error for a database name that is not configured.
    fn unknown(&self, database: &str) -> Error {
        match self.registry.get(database) {
            Err(e) => e,
            Ok(_) => Error::internal(format!(
                "database `{}` has no admission control",
                iadb::clip(database)
            )),
        }
    }

    /// Starts one call: names its database for the call layer's metrics
    /// and records it, and the statement's fingerprint (never a value),
    /// in the call's span (the layer's, current here).
    fn begin(
        &self,
        label: &CallLabel,
        rpc: &'static str,
        database: &str,
        sql: Option<&str>,
    ) -> Call {
        let (name, engine) = match self.registry.describe(database) {
            Some((name, engine)) => (name.to_owned(), Some(engine)),
            None => (UNKNOWN_DATABASE.to_owned(), None),
        };
        self.begin_labelled(label, rpc, name, engine, sql)
    }

    /// Begins the call of `request` ([`DatabaseService::begin`], by the
    /// identity the auth layer found), with its time limit (the shorter
    /// of its `timeout_ms` and its deadline).
    fn open<T: CallRequest>(&self, request: Request<T>) -> Opened<T> {
        let limit = call_timeout(&request, request.get_ref().options());
        let identity = Identity::of(&request);
        let label = CallLabel::of(&request);
        let request = request.into_inner();
        let call = self
            .begin(&label, T::RPC, request.database(), request.sql())
            .by(identity);
        Opened {
            limit,
            label,
            call,
            request,
        }
    }

    /// Runs `work` once `database`'s turn has come, holding the turn until
    /// `work` ends, within `limit` (the wait for the turn counts).
    async fn in_turn<T>(
        &self,
        database: &str,
        limit: Option<Duration>,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        with_timeout(limit, async {
            let _turn = self.turn(database).await?;
            work.await
        })
        .await
    }

    /// Runs `call` read-only on `database`'s backend
    /// ([`ReadOnlyCall::run_on`]).
    async fn read_only_call(
        &self,
        database: &str,
        call: ReadOnlyCall<'_>,
    ) -> Result<ExecuteOutcome, Error> {
        let backend = self.registry.ready_backend(database)?;
        caught(call.run_on(&*backend)).await
    }

    /// What a pooled call of one statement checks before it runs, in this
    /// order: its caller may use `database` for `scope`, the database is
    /// registered, then [`DatabaseService::pooled_params`]. Gives the
    /// database and the parameters.
    fn admit(
        &self,
        call: &Call,
        scope: Scope,
        database: &str,
        sql: &str,
        params: Vec<proto::Value>,
    ) -> Result<(Arc<dyn iadb::DatabaseInterface>, Vec<Value>), Error> {
        self.authorize(call.identity.as_ref(), database, scope)?;
        let db = self.registry.get(database)?;
        Ok((db, self.pooled_params(database, sql, params)?))
    }

    /// What a pooled call of one statement checks once its caller and
    /// database are known, in this order: the statement's size, that it
    /// fits a pooled call with `params.len()` parameters; then its
    /// parameters, decoded.
    fn pooled_params(
        &self,
        database: &str,
        sql: &str,
        params: Vec<proto::Value>,
    ) -> Result<Vec<Value>, Error> {
        self.check_sql_size(sql)?;
        check_pooled_sql(sql, self.engine_of(database)?, params.len())?;
        params_from_proto(params)
    }

    /// [`DatabaseService::begin`] with the database label given.
    fn begin_labelled(
        &self,
        label: &CallLabel,
        rpc: &'static str,
        name: String,
        engine: Option<DatabaseType>,
        sql: Option<&str>,
    ) -> Call {
        label.set(&name);
        let span = Span::current();
        span.record("database", tracing::field::display(&name));
        if let Some(sql) = sql
            && !span.is_disabled()
        {
            let dialect = engine.map_or(Dialect::Sqlite, |kind| kind.spec().dialect);
            span.record(
                "fingerprint",
                tracing::field::display(fingerprint(sql, dialect)),
            );
        }
        Call {
            rpc,
            database: name,
            started: Instant::now(),
            metrics: self.metrics.clone(),
            identity: None,
        }
    }

    /// Checks that the call's token may use `database` with the scope
    /// `needs`: the part of authorisation that depends on the request's
    /// body (the auth layer has checked the token and the RPC's least
    /// scope). Without tokens ([`Identity`] absent) every call may.
    ///
    /// A database the token is not granted is PERMISSION_DENIED whether it
    /// exists or not, so a token does not learn the names of others.
    pub(crate) fn authorize(
        &self,
        identity: Option<&Identity>,
        database: &str,
        needs: Scope,
    ) -> Result<(), Error> {
        let Some(identity) = identity else {
            return Ok(());
        };
        if identity.scope < needs {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "this call needs the `{needs}` scope; token `{}` has `{}`{}",
                    identity.name,
                    identity.scope,
                    if needs == Scope::Write {
                        " (a read token may send a Batch or open a Transaction with read_only set)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let name = self
            .registry
            .describe(database)
            .map_or(database, |(name, _)| name);
        if !identity.databases.allows(name) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "token `{}` may not use database `{}`",
                    identity.name,
                    iadb::clip(name)
                ),
            ));
        }
        Ok(())
    }

    /// The fingerprint of `sql` in the dialect of `database` (SQLite's for
    /// an unknown name): the statement's shape, never a literal.
    pub(crate) fn fingerprint(&self, database: &str, sql: &str) -> String {
        let dialect = self
            .registry
            .describe(database)
            .map_or(Dialect::Sqlite, |(_, kind)| kind.spec().dialect);
        fingerprint(sql, dialect)
    }

    /// The server's limits.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The configured databases.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where calls are recorded.
    pub(crate) fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The engine behind the database named `database`.
    fn engine_of(&self, database: &str) -> Result<DatabaseType, Error> {
        match self.registry.describe(database) {
            Some((_, engine)) => Ok(engine),
            None => Err(self.unknown(database)),
        }
    }

    pub(crate) fn check_sql_size(&self, sql: &str) -> Result<(), Error> {
        if sql.len() > self.limits.max_sql_bytes {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "SQL is {} bytes, over the limit of {} bytes (--max-sql-bytes)",
                    sql.len(),
                    self.limits.max_sql_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Where a statement runs, which decides the rules it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Execute, ExecuteMany, FetchAll, FetchOne: a connection shared with
    /// every caller.
    Pooled,
    /// One statement of a Batch.
    Batch,
    /// A statement inside a Transaction stream.
    Transaction,
}

/// The rules every statement follows before it reaches an engine: it holds
/// at least one statement; a statement with parameters is exactly one; and
/// none begins, ends or marks a transaction: a pooled call's connection
/// goes back to a pool shared by every caller when the call ends, and a
/// batch's or a transaction stream's transaction is the server's to end.
/// On a pooled call, a statement that changes its connection's session
/// state (TEMP objects, `SET`, `PREPARE`, `LISTEN`, `USE`, `ATTACH`, a
/// session lock, a connection `PRAGMA`) is refused as well: the next caller
/// to get the connection would inherit it. In a batch or a transaction it
/// runs, and the returned `true` says the session's connection must be
/// reset (or closed) before the pool lends it again.
pub(crate) fn check_statement(
    sql: &str,
    engine: DatabaseType,
    params: usize,
    place: Place,
) -> Result<bool, Error> {
    let StatementShape {
        statements,
        transaction_control,
        session_state,
    } = statement_shape(sql, engine.spec().dialect);
    if statements == 0 {
        return Err(Error::invalid_argument(
            "empty SQL: it holds no statement (only whitespace, comments or `;`)",
        ));
    }
    if let Some(keyword) = transaction_control {
        let why = match place {
            Place::Pooled => {
                "is refused on a pooled call: every call runs on its own on a connection \
                 shared with other callers, so a transaction cannot stay open between calls. \
                 Send several statements as one Batch (one transaction, one round trip), or \
                 open a Transaction stream (the Transaction RPC) to run them interactively"
            }
            Place::Batch => {
                "is refused in a Batch: the batch is one transaction already, committed when \
                 every statement succeeded and rolled back otherwise"
            }
            Place::Transaction => {
                "is refused inside a Transaction stream: the stream is the transaction; end \
                 it with its commit or rollback message"
            }
        };
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!("`{keyword}` {why}"),
        ));
    }
    if let Some(keyword) = &session_state
        && place == Place::Pooled
    {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "`{keyword}` is refused on a pooled call: it changes the session of a \
                 connection that the next call, from any client, may get. Run it inside a \
                 Transaction stream (the Transaction RPC), where it holds for the life of the \
                 stream; set per-database session settings in the database's URL"
            ),
        ));
    }
    if params > 0 && statements > 1 {
        return Err(Error::invalid_argument(format!(
            "a statement with parameters is exactly one statement, and this SQL holds \
             {statements}; send one statement per call, or a script without parameters"
        )));
    }
    Ok(session_state.is_some())
}

/// [`check_statement`] for a pooled call.
fn check_pooled_sql(sql: &str, engine: DatabaseType, params: usize) -> Result<(), Error> {
    check_statement(sql, engine, params, Place::Pooled).map(|_| ())
}

/// A unary request as the call layer reads it before anything runs: its
/// RPC's name, its database, its statement (for the call's fingerprint)
/// and its options (for the call's time limit).
trait CallRequest {
    /// The RPC's name in metrics and logs.
    const RPC: &'static str;
    /// The database it names.
    fn database(&self) -> &str;
    /// The statement whose fingerprint the call records, if one.
    fn sql(&self) -> Option<&str>;
    /// Its options, if the request has them.
    fn options(&self) -> Option<&proto::QueryOptions>;
}

/// [`CallRequest`] for a request type: its RPC's name, and its statement
/// and options read from the request `$r`.
macro_rules! call_request {
    ($request:ident, $rpc:literal, |$r:ident| sql: $sql:expr, options: $options:expr) => {
        impl CallRequest for proto::$request {
            const RPC: &'static str = $rpc;
            fn database(&self) -> &str {
                &self.database
            }
            // A request without a statement does not read `$r` here.
            #[allow(unused_variables)]
            fn sql(&self) -> Option<&str> {
                let $r = self;
                $sql
            }
            #[allow(unused_variables)]
            fn options(&self) -> Option<&proto::QueryOptions> {
                let $r = self;
                $options
            }
        }
    };
}
call_request!(ExecuteRequest, "Execute", |r| sql: Some(&r.sql), options: r.options.as_ref());
call_request!(ExecuteManyRequest, "ExecuteMany", |r| sql: Some(&r.sql), options: r.options.as_ref());
call_request!(FetchAllRequest, "FetchAll", |r| sql: Some(&r.sql), options: r.options.as_ref());
call_request!(FetchOneRequest, "FetchOne", |r| sql: Some(&r.sql), options: r.options.as_ref());
call_request!(TableExistsRequest, "TableExists", |r| sql: None, options: None);
call_request!(BatchRequest, "Batch", |r| sql: None, options: r.options.as_ref());

/// A unary call begun ([`DatabaseService::open`]): its time limit, its
/// label and record, and the request's message.
struct Opened<T> {
    limit: Option<Duration>,
    label: CallLabel,
    call: Call,
    request: T,
}

/// `target_version`: empty for none, else a version number (`3`, `003`,
/// or `V3`).
fn parse_target(text: &str) -> Result<Option<u64>, Error> {
    let digits = text.trim().trim_start_matches(['V', 'v']);
    if digits.is_empty() {
        return Ok(None);
    }
    digits.parse().map(Some).map_err(|_| {
        Error::invalid_argument(format!("target_version `{text}` is not a version number"))
    })
}

/// The time limit of a call: the shorter of the request's `timeout_ms` and
/// the gRPC deadline (tonic reads `grpc-timeout` into the request).
fn call_timeout<T>(
    request: &Request<T>,
    options: Option<&proto::QueryOptions>,
) -> Option<Duration> {
    let from_options = options
        .map(|o| o.timeout_ms)
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(u64::from(ms)));
    let from_header = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        // tonic's own deadline timer fires at the same instant and answers
        // CANCELLED; ending a little earlier lets the caller see
        // DEADLINE_EXCEEDED and the query stop cleanly.
        .map(|d| d.saturating_sub((d / 20).min(Duration::from_millis(20))));
    match (from_options, from_header) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses the `grpc-timeout` header: digits then a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A stream whose client stopped reading: it is ended so that its pooled
/// connection serves other callers.
fn stalled_error(stall: Duration) -> Error {
    Error::new(
        ErrorKind::ResourceExhausted,
        format!(
            "the client read nothing for {} s, so the stream was ended and its connection \
             freed (--stream-stall-timeout-secs)",
            stall.as_secs()
        ),
    )
}

fn deadline_error(limit: Duration) -> Error {
    Error::new(
        ErrorKind::DeadlineExceeded,
        format!(
            "deadline of {} ms passed; the query was stopped",
            limit.as_millis()
        ),
    )
}

/// Runs `work` under an optional time limit; dropping it on time-out stops
/// the query and returns its connection.
async fn with_timeout<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(deadline_error(limit))),
        None => work.await,
    }
}

/// Runs `work`, turning a panic inside it (a bug in an adapter or a driver)
/// into INTERNAL, so that no panic reaches the caller as a dropped
/// connection, and a stream never ends short as if it were complete.
async fn caught<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(panic_error(panic.as_ref())),
    }
}

/// A query's events with panics turned into a final INTERNAL error.
fn caught_events(
    events: futures::stream::BoxStream<'static, Result<QueryEvent, Error>>,
) -> futures::stream::BoxStream<'static, Result<QueryEvent, Error>> {
    AssertUnwindSafe(events)
        .catch_unwind()
        .map(|item| item.unwrap_or_else(|panic| Err(panic_error(panic.as_ref()))))
        .boxed()
}

/// The error a caller gets for a panic. The panic's own text goes to the
/// log only (clipped): it may quote a value, and values stay out of errors.
fn panic_error(panic: &(dyn Any + Send)) -> Error {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(panic = %iadb::clip(text), "a call failed on a bug; it ends with INTERNAL and the server keeps serving");
    Error::internal(
        "the server hit a bug while running this call (details are in the server's log); \
         the call was stopped, nothing of its result is complete, and the server keeps serving",
    )
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// One call in progress: what its handler needs besides the request (the
/// call layer counts and logs its outcome).
struct Call {
    rpc: &'static str,
    /// A configured database name, or [`UNKNOWN_DATABASE`].
    database: String,
    started: Instant,
    metrics: Metrics,
    /// Who made the call (None without tokens).
    identity: Option<Identity>,
}

/// The audit line of a call or a statement that may change data or schema
/// (Execute, ExecuteMany, a Batch that is not read-only, a statement run in
/// a Transaction, Migrate): at INFO, target `iadb::audit`, with the token's
/// name, the database, the statement's fingerprint (never a value), the
/// rows affected and the outcome (`OK` or the gRPC code's name).
pub(crate) fn audit<T>(
    identity: Option<&Identity>,
    rpc: &'static str,
    database: &str,
    fingerprint: &str,
    rows_affected: Option<u64>,
    result: &Result<T, Error>,
) {
    let token = identity.map_or("(none)", |i| &*i.name);
    let outcome = crate::metrics::code_name(result.as_ref().err().map(Error::kind));
    info!(
        target: "iadb::audit",
        token,
        rpc,
        database,
        fingerprint,
        rows_affected,
        outcome,
        "audit"
    );
}

impl Call {
    /// The call made by `identity`.
    fn by(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity;
        self
    }

    /// This call's audit line (see [`audit`]).
    fn audit<T>(&self, fingerprint: &str, rows_affected: Option<u64>, result: &Result<T, Error>) {
        audit(
            self.identity.as_ref(),
            self.rpc,
            &self.database,
            fingerprint,
            rows_affected,
            result,
        )
    }
}

type FetchStream =
    Pin<Box<dyn futures::Stream<Item = Result<proto::FetchAllResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Database for DatabaseService {
    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let Opened {
            limit,
            call,
            request:
                proto::ExecuteRequest {
                    database,
                    sql,
                    params,
                    options,
                },
            ..
        } = self.open(request);
        let result: Result<_, Error> = async {
            let (db, params) = self.admit(&call, Scope::Write, &database, &sql, params)?;
            self.in_turn(&database, limit, async {
                if read_only(options.as_ref()) {
                    let call = ReadOnlyCall::Execute {
                        sql: &sql,
                        params: &params,
                    };
                    return self.read_only_call(&database, call).await;
                }
                caught(db.execute(&sql, &params)).await
            })
            .await
        }
        .await;
        call.audit(
            &self.fingerprint(&database, &sql),
            result.as_ref().ok().map(|o| o.rows_affected),
            &result,
        );
        let ExecuteOutcome {
            rows_affected,
            last_insert_id,
        } = result?;
        Ok(Response::new(proto::ExecuteResponse {
            rows_affected,
            last_insert_id,
            execution_time_ms: ms_since(call.started),
        }))
    }

    async fn execute_many(
        &self,
        request: Request<proto::ExecuteManyRequest>,
    ) -> Result<Response<proto::ExecuteManyResponse>, Status> {
        let Opened {
            limit,
            call,
            request:
                proto::ExecuteManyRequest {
                    database,
                    sql,
                    param_sets,
                    options,
                },
            ..
        } = self.open(request);
        let result: Result<_, Error> = async {
            self.authorize(call.identity.as_ref(), &database, Scope::Write)?;
            let db = self.registry.get(&database)?;
            self.check_sql_size(&sql)?;
            let widest = param_sets
                .iter()
                .map(|set| set.values.len())
                .max()
                .unwrap_or(0);
            check_pooled_sql(&sql, self.engine_of(&database)?, widest)?;
            let sets = param_sets
                .into_iter()
                .enumerate()
                .map(|(i, row)| {
                    params_from_proto(row.values).map_err(|e| {
                        Error::invalid_argument(format!("parameter set {i}: {}", e.message()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.in_turn(&database, limit, async {
                if read_only(options.as_ref()) {
                    let call = ReadOnlyCall::ExecuteMany {
                        sql: &sql,
                        param_sets: &sets,
                    };
                    return self.read_only_call(&database, call).await;
                }
                caught(db.execute_many(&sql, &sets)).await
            })
            .await
        }
        .await;
        call.audit(
            &self.fingerprint(&database, &sql),
            result.as_ref().ok().map(|o| o.rows_affected),
            &result,
        );
        let outcome = result?;
        Ok(Response::new(proto::ExecuteManyResponse {
            rows_affected: outcome.rows_affected,
            execution_time_ms: ms_since(call.started),
        }))
    }

    type FetchAllStream = FetchStream;

    async fn fetch_all(
        &self,
        request: Request<proto::FetchAllRequest>,
    ) -> Result<Response<Self::FetchAllStream>, Status> {
        let Opened {
            limit,
            label,
            call,
            request:
                proto::FetchAllRequest {
                    database,
                    sql,
                    params,
                    options,
                },
        } = self.open(request);
        let deadline = limit.map(|l| (tokio::time::Instant::now() + l, l));
        let arrow = options_want_arrow(options.as_ref())?;
        if read_only(options.as_ref()) || read_scoped(call.identity.as_ref()) {
            return self
                .fetch_all_read_only(call, label, database, sql, params, limit, options, arrow)
                .await;
        }
        // Errors before the first row (bad SQL, unknown table) fail the call
        // itself rather than a stream that has begun.
        let opened: Result<_, Error> = async {
            let (db, params) = self.admit(&call, Scope::Read, &database, &sql, params)?;
            let arrow = self.arrow_engine(&database, arrow)?;
            let bound = read_bound(options.as_ref(), call.identity.as_ref())?;
            let members = self.registry.read_members(&database, bound, db)?;
            let (sql, params) = (&sql, &params);
            // An adapter that can builds Arrow from its cursor.
            let wanted = arrow.map(|_| iadb::arrow::ArrowWanted {
                batch_rows: self.limits.batch_rows,
                batch_bytes: self.limits.batch_bytes,
            });
            with_timeout(limit, async {
                let turn = self.turn(&database).await?;
                let stream = on_members(members, |db| async move {
                    match wanted {
                        Some(wanted) => caught(db.query_arrow(sql, params, wanted)).await,
                        None => caught(db.query(sql, params)).await,
                    }
                })
                .await?;
                Ok((stream, turn, arrow))
            })
            .await
        }
        .await;
        let (stream, turn, arrow) = opened?;
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_BATCHES);
        // A stream's final error goes here rather than into the channel,
        // which may be full (a client that stopped reading): the response
        // yields it after the last frame, so a stream never ends without
        // either its summary or its error.
        let ending = Ending::default();
        let limits = self.limits;
        let pump_ending = ending.clone();
        // The pump is not instrumented: entering the span on every wake
        // cost ~7% of the server's CPU on a large stream. Its outcome is
        // logged inside the span by `finish`.
        tokio::spawn(async move {
            let result = pump(stream, &tx, limits, deadline, &call, &label, arrow).await;
            // The engine's cursor and connection are gone now; so is the
            // call's turn.
            drop(turn);
            label.ended(&result);
            set_ending(&pump_ending, result);
            // `tx` drops here, after the error is in place.
        });
        Ok(Response::new(frames_then_ending(rx, ending)))
    }

    async fn fetch_one(
        &self,
        request: Request<proto::FetchOneRequest>,
    ) -> Result<Response<proto::FetchOneResponse>, Status> {
        let Opened {
            limit,
            call,
            request:
                proto::FetchOneRequest {
                    database,
                    sql,
                    params,
                    options,
                },
            ..
        } = self.open(request);
        let result: Result<_, Error> = async {
            let (db, params) = self.admit(&call, Scope::Read, &database, &sql, params)?;
            let bound = read_bound(options.as_ref(), call.identity.as_ref())?;
            let members = self.registry.read_members(&database, bound, db)?;
            with_timeout(limit, async {
                let turn = self.turn(&database).await?;
                if read_only(options.as_ref()) || read_scoped(call.identity.as_ref()) {
                    // The whole result is read inside the transaction; the
                    // first row is kept.
                    let mut sink = FirstRow::default();
                    let primary = self.registry.ready_backend(&database);
                    read_only_query_on(members, primary, &sql, &params, &mut sink).await?;
                    return Ok((sink.columns, sink.row));
                }
                let (sql, params) = (&sql, &params);
                let (columns, mut events, first) = on_members(members, |db| async move {
                    let QueryStream { columns, events } = caught(db.query(sql, params)).await?;
                    let mut events = caught_events(events);
                    let first = loop {
                        match events.next().await.transpose()? {
                            Some(QueryEvent::Row(values)) => break Some(values),
                            Some(QueryEvent::Rows(batch)) => match batch.into_rows().next() {
                                Some(values) => break Some(values?),
                                None => continue,
                            },
                            Some(QueryEvent::Done(_)) | None => break None,
                            Some(QueryEvent::Arrow(_)) => {
                                return Err(iadb::arrow_where_rows_were_expected());
                            }
                        }
                    };
                    Ok((columns, events, first))
                })
                .await?;
                // A point select's result has usually ended by now: when
                // it has, the connection goes back and the turn ends here,
                // without a task of their own.
                if first.is_some() && !ended_already(&mut events) {
                    // After the answer is sent, see whether the result ends;
                    // the turn lasts as long as the connection is held.
                    tokio::spawn(
                        async move {
                            finish_after_first_row(events).await;
                            drop(turn);
                        }
                        .instrument(Span::current()),
                    );
                }
                Ok((columns, first))
            })
            .await
        }
        .await;
        let (columns, row) = result?;
        if row.is_some() {
            self.metrics.add_rows(&call.database, 1);
        }
        Ok(Response::new(proto::FetchOneResponse {
            columns: columns.iter().cloned().map(Into::into).collect(),
            row: row.map(proto::Row::from),
            execution_time_ms: ms_since(call.started),
        }))
    }

    async fn table_exists(
        &self,
        request: Request<proto::TableExistsRequest>,
    ) -> Result<Response<proto::TableExistsResponse>, Status> {
        let Opened {
            limit,
            call,
            request: proto::TableExistsRequest { database, table },
            ..
        } = self.open(request);
        let result: Result<_, Error> = async {
            self.authorize(call.identity.as_ref(), &database, Scope::Read)?;
            let db = self.registry.get(&database)?;
            if table.trim().is_empty() {
                return Err(Error::invalid_argument("empty table name"));
            }
            self.in_turn(&database, limit, caught(db.table_exists(&table)))
                .await
        }
        .await;
        Ok(Response::new(proto::TableExistsResponse {
            exists: result?,
        }))
    }

    async fn migrate(
        &self,
        request: Request<proto::MigrateRequest>,
    ) -> Result<Response<proto::MigrateResponse>, Status> {
        let identity = Identity::of(&request);
        let label = CallLabel::of(&request);
        let proto::MigrateRequest {
            database,
            action,
            target_version,
            files,
            allow_missing,
            allow_out_of_order,
        } = request.into_inner();
        let call = self.begin(&label, "Migrate", &database, None).by(identity);
        let action_name = match proto::MigrateAction::try_from(action) {
            Ok(proto::MigrateAction::Status) => "status",
            Ok(proto::MigrateAction::Plan) => "plan",
            Ok(proto::MigrateAction::Apply) => "apply",
            Ok(proto::MigrateAction::Rollback) => "rollback",
            Ok(proto::MigrateAction::Validate) => "validate",
            Ok(proto::MigrateAction::Repair) => "repair",
            Ok(proto::MigrateAction::Baseline) => "baseline",
            Ok(proto::MigrateAction::Unspecified) | Err(_) => "unspecified",
        };
        let result: Result<_, Error> = async {
            self.authorize(call.identity.as_ref(), &database, Scope::Admin)?;
            let target = parse_target(&target_version)?;
            let need_target = |what: &str| {
                target.ok_or_else(|| Error::invalid_argument(format!("{what} needs target_version")))
            };
            let action = match proto::MigrateAction::try_from(action) {
                Ok(proto::MigrateAction::Status) => MigrateAction::Status,
                Ok(proto::MigrateAction::Plan) => MigrateAction::Plan,
                Ok(proto::MigrateAction::Apply) => MigrateAction::Apply { target },
                Ok(proto::MigrateAction::Rollback) => MigrateAction::Rollback {
                    target: need_target("rollback")?,
                },
                Ok(proto::MigrateAction::Validate) => MigrateAction::Validate,
                Ok(proto::MigrateAction::Repair) => MigrateAction::Repair,
                Ok(proto::MigrateAction::Baseline) => MigrateAction::Baseline {
                    target: need_target("baseline")?,
                },
                Ok(proto::MigrateAction::Unspecified) | Err(_) => {
                    return Err(Error::invalid_argument(
                        "migrate needs an action (status, plan, apply, rollback, validate, repair, baseline)",
                    ));
                }
            };
            let files = files
                .into_iter()
                .map(|proto::MigrationFile { filename, content }| MigrationFile {
                    filename,
                    content: content.into_bytes(),
                })
                .collect();
            let sent = crate::migrate::source::parse(files, MigrationType::App)
                .map_err(|e| Error::invalid_argument(e.to_string()))?;
            let options = MigrateOptions {
                allow_missing,
                allow_out_of_order,
                ..self.migrate_options
            };
            self.registry.migrate(&database, action, options, sent).await
        }
        .await;
        // The fingerprint of a Migrate call is its action (the migrations it
        // ran are listed in its report and the tracking table).
        call.audit(
            &format!("migrate {action_name}"),
            result.as_ref().ok().map(|r| r.changed.len() as u64),
            &result,
        );
        let report = result?;
        Ok(Response::new(proto::MigrateResponse {
            migrations: report.migrations.into_iter().map(Into::into).collect(),
            changed: report.changed,
            execution_time_ms: ms_since(call.started),
        }))
    }

    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        let identity = Identity::of(&request);
        let label = CallLabel::of(&request);
        let proto::HealthRequest { database } = request.into_inner();
        let call = if database.is_empty() {
            self.begin_labelled(&label, "Health", ALL_DATABASES.to_owned(), None, None)
        } else {
            self.begin(&label, "Health", &database, None)
        }
        .by(identity);
        let result: Result<_, Error> = async {
            let names: Vec<String> = if database.is_empty() {
                // Every database the token may use.
                self.registry
                    .names()
                    .filter(|name| {
                        call.identity
                            .as_ref()
                            .is_none_or(|identity| identity.databases.allows(name))
                    })
                    .map(str::to_owned)
                    .collect()
            } else {
                self.authorize(call.identity.as_ref(), &database, Scope::Read)?;
                self.registry.get(&database)?;
                vec![database]
            };
            let mut databases = Vec::with_capacity(names.len());
            for name in names {
                databases.push(self.registry.check(&name).await?);
            }
            Ok(databases)
        }
        .await;
        Ok(Response::new(proto::HealthResponse { databases: result? }))
    }

    async fn batch(
        &self,
        request: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        let Opened {
            limit,
            call,
            request:
                proto::BatchRequest {
                    database,
                    statements,
                    read_only,
                    options: _,
                },
            ..
        } = self.open(request);
        let needs = if read_only { Scope::Read } else { Scope::Write };
        // The statements' shapes, for the audit line (a read-only batch
        // changes nothing and has none).
        let fingerprints = (!read_only).then(|| {
            statements
                .iter()
                .map(|s| self.fingerprint(&database, &s.sql))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let result: Result<_, Error> = async {
            self.authorize(call.identity.as_ref(), &database, needs)?;
            let engine = self.engine_of(&database)?;
            let backend = self.registry.ready_backend(&database)?;
            if statements.is_empty() {
                return Err(Error::invalid_argument(
                    "a batch needs at least one statement",
                ));
            }
            let mut list = Vec::with_capacity(statements.len());
            let mut session_state = false;
            for (index, proto::Statement { sql, params, .. }) in statements.into_iter().enumerate()
            {
                let at = |e: Error| e.in_context(format_args!("statement {index}"));
                self.check_sql_size(&sql).map_err(at)?;
                session_state |=
                    check_statement(&sql, engine, params.len(), Place::Batch).map_err(at)?;
                list.push((sql, params_from_proto(params).map_err(at)?));
            }
            let options = BatchOptions {
                read_only,
                result_limit: self.limits.batch_result_bytes,
                session_state,
            };
            self.in_turn(&database, limit, caught(backend.batch(&list, options)))
                .await
                .map_err(|e| {
                    ValueScrubber::for_sets(list.iter().map(|(_, p)| p.as_slice())).scrub(e)
                })
        }
        .await;
        if let Some(fingerprints) = &fingerprints {
            call.audit(
                fingerprints,
                result
                    .as_ref()
                    .ok()
                    .map(|r| r.iter().map(|s| s.outcome.rows_affected).sum()),
                &result,
            );
        }
        let results = result?
            .into_iter()
            .map(|r| proto::StatementResult {
                rows_affected: r.outcome.rows_affected,
                last_insert_id: r.outcome.last_insert_id,
                columns: r.columns.iter().cloned().map(Into::into).collect(),
                rows: r.rows.into_iter().map(proto::Row::from).collect(),
            })
            .collect();
        Ok(Response::new(proto::BatchResponse {
            results,
            execution_time_ms: ms_since(call.started),
        }))
    }

    type TransactionStream = TransactionStream;

    async fn transaction(
        &self,
        request: Request<tonic::Streaming<proto::TransactionRequest>>,
    ) -> Result<Response<Self::TransactionStream>, Status> {
        let deadline = call_timeout(&request, None);
        let identity = Identity::of(&request);
        let label = CallLabel::of(&request);
        let inbound: transaction::Inbound = request.into_inner().boxed();
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_BATCHES);
        // As FetchAll's: the final error follows the last answer.
        let ending = Ending::default();
        let pump_ending = ending.clone();
        let service = self.clone();
        tokio::spawn(
            async move {
                let driven = AssertUnwindSafe(transaction::drive(
                    &service,
                    identity.as_ref(),
                    &label,
                    inbound,
                    &tx,
                    deadline,
                ))
                .catch_unwind()
                .await;
                let ended = match driven {
                    Ok(ended) => ended,
                    Err(panic) => transaction::Ended {
                        database: None,
                        outcome: "error",
                        result: Err(panic_error(panic.as_ref())),
                        lasted: None,
                    },
                };
                let call = match &ended.database {
                    Some(name) => service.begin(&label, "Transaction", name, None),
                    None => service.begin_labelled(
                        &label,
                        "Transaction",
                        UNKNOWN_DATABASE.to_owned(),
                        None,
                        None,
                    ),
                };
                debug!(
                    database = %call.database,
                    outcome = ended.outcome,
                    lasted_ms = ?ended.lasted.map(|d| d.as_millis()),
                    "transaction ended"
                );
                label.ended(&ended.result);
                set_ending(&pump_ending, ended.result);
            }
            .instrument(Span::current()),
        );
        Ok(Response::new(frames_then_ending(rx, ending)))
    }
}

/// Where the task behind a streaming RPC leaves the error its stream ends
/// with. The error does not go through the frames' channel, which may be
/// full (a client that stopped reading): [`frames_then_ending`] yields it
/// after the last frame, so a stream never ends without either its last
/// answer or its error.
type Ending = Arc<std::sync::Mutex<Option<Status>>>;

/// Leaves `result`'s error, if any, for [`frames_then_ending`].
fn set_ending(ending: &Ending, result: Result<(), Error>) {
    if let Err(e) = result
        && let Ok(mut slot) = ending.lock()
    {
        *slot = Some(Status::from(e));
    }
}

/// The frames a task sends into `rx`'s channel, then the error it left in
/// `ending` (once every sender is gone).
fn frames_then_ending<M: Send + 'static>(
    rx: mpsc::Receiver<Result<M, Status>>,
    ending: Ending,
) -> Pin<Box<dyn futures::Stream<Item = Result<M, Status>> + Send>> {
    let error = futures::stream::once(async move {
        ending.lock().ok().and_then(|mut slot| slot.take()).map(Err)
    })
    .filter_map(std::future::ready);
    Box::pin(ReceiverStream::new(rx).chain(error))
}

type TransactionStream =
    Pin<Box<dyn futures::Stream<Item = Result<proto::TransactionResponse, Status>> + Send>>;

/// How long FetchOne waits, after it answered, for the rest of its result
/// to end, and how many more rows it reads meanwhile.
const FETCH_ONE_TAIL: Duration = Duration::from_millis(50);
const FETCH_ONE_TAIL_ROWS: usize = 16;

/// Whether the rest of FetchOne's result has ended without waiting: it
/// reads what the engine has already given (at most a few rows), and stops
/// at the first event that is not ready.
fn ended_already(
    events: &mut futures::stream::BoxStream<'static, Result<QueryEvent, Error>>,
) -> bool {
    let mut rows = 0;
    while rows < FETCH_ONE_TAIL_ROWS {
        match events.next().now_or_never() {
            None => return false,
            Some(Some(Ok(QueryEvent::Row(_)))) => rows += 1,
            Some(Some(Ok(QueryEvent::Rows(batch)))) => rows += batch.len(),
            Some(Some(Ok(QueryEvent::Arrow(batch)))) => rows += batch.num_rows(),
            Some(Some(Ok(QueryEvent::Done(_)) | Err(_)) | None) => return true,
        }
    }
    false
}

/// What FetchOne does with the result it took a row from, once the caller
/// has the row: a result that ends within a few rows and milliseconds (a
/// point select does at once) finishes normally and its connection goes back
/// to the pool. A longer one is dropped, which stops it on the engine; for
/// PostgreSQL and MySQL that closes the connection, and a pool that lost
/// its connection on every FetchOne would open a new one (with its login)
/// for every call.
async fn finish_after_first_row(
    mut events: futures::stream::BoxStream<'static, Result<QueryEvent, Error>>,
) {
    let rest = async {
        let mut rows = 0;
        while rows < FETCH_ONE_TAIL_ROWS {
            match events.next().await {
                Some(Ok(QueryEvent::Row(_))) => rows += 1,
                Some(Ok(QueryEvent::Rows(batch))) => rows += batch.len(),
                Some(Ok(QueryEvent::Arrow(batch))) => rows += batch.num_rows(),
                Some(Ok(QueryEvent::Done(_)) | Err(_)) | None => return true,
            }
        }
        false
    };
    let ended = tokio::time::timeout(FETCH_ONE_TAIL, rest)
        .await
        .unwrap_or(false);
    if !ended {
        debug!("FetchOne: the rest of the result was stopped");
    }
}

/// Sends a result as frames on a stream: one header, row batches bounded by
/// row count and size, one summary. Each send waits at most the stall
/// timeout for a client that stopped reading.
pub(crate) struct FrameSink<'a, M> {
    tx: &'a mpsc::Sender<Result<M, Status>>,
    wrap: fn(Frame) -> M,
    limits: Limits,
    metrics: &'a Metrics,
    database: &'a str,
    batch: RowBatch,
    /// Rows taken so far.
    pub(crate) row_count: u64,
    /// With RESULT_FORMAT_ARROW: the engine, until the columns come, then
    /// the encoder of the result's IPC stream.
    arrow: Arrow,
    /// The label of the call whose whole answer this is (FetchAll): told
    /// the call ended well before the summary goes, so that a client that
    /// leaves as soon as it reads the summary is not counted as CANCELLED.
    label: Option<&'a CallLabel>,
}

/// Whether a [`FrameSink`] sends Arrow, and its encoder once the columns
/// are known.
enum Arrow {
    Off,
    Wanted(iadb::DatabaseType),
    On(Box<iadb::arrow::ArrowEncoder>),
}

/// Whether a `ResultFormat` asks for Arrow; an unknown value is
/// INVALID_ARGUMENT.
pub(crate) fn wants_arrow(result_format: i32) -> Result<bool, Error> {
    match proto::ResultFormat::try_from(result_format) {
        Ok(proto::ResultFormat::Unspecified | proto::ResultFormat::Rows) => Ok(false),
        Ok(proto::ResultFormat::Arrow) => Ok(true),
        Err(_) => Err(Error::invalid_argument(format!(
            "unknown result format {result_format} (ROWS or ARROW)"
        ))),
    }
}

/// The result format of a FetchAll's options.
fn options_want_arrow(options: Option<&proto::QueryOptions>) -> Result<bool, Error> {
    wants_arrow(options.map_or(0, |o| o.result_format))
}

impl<'a, M: Send + 'static> FrameSink<'a, M> {
    pub(crate) fn new(
        tx: &'a mpsc::Sender<Result<M, Status>>,
        wrap: fn(Frame) -> M,
        limits: Limits,
        metrics: &'a Metrics,
        database: &'a str,
    ) -> Self {
        Self {
            tx,
            wrap,
            limits,
            metrics,
            database,
            batch: RowBatch::new(),
            row_count: 0,
            arrow: Arrow::Off,
            label: None,
        }
    }

    /// Ends the call of `label` well as the summary goes ([`Self::finish`]).
    pub(crate) fn with_label(mut self, label: &'a CallLabel) -> Self {
        self.label = Some(label);
        self
    }

    /// Sends the result as Arrow (RESULT_FORMAT_ARROW) when `arrow` is
    /// the engine of the database it comes from.
    pub(crate) fn with_arrow(mut self, arrow: Option<iadb::DatabaseType>) -> Self {
        self.arrow = match arrow {
            Some(engine) => Arrow::Wanted(engine),
            None => Arrow::Off,
        };
        self
    }

    /// Sends IPC pieces as ArrowData frames.
    async fn send_pieces(&mut self, pieces: Vec<iadb::arrow::IpcPiece>) -> Result<(), Error> {
        for piece in pieces {
            self.send(Frame::Arrow(proto::ArrowData {
                ipc: piece.ipc,
                rows: piece.rows,
            }))
            .await?;
        }
        Ok(())
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Error> {
        let rows = match &frame {
            Frame::Batch(batch) => batch.len() as u64,
            Frame::Arrow(data) => data.rows,
            _ => 0,
        };
        let stall = self.limits.stream_stall_timeout;
        match tokio::time::timeout(stall, self.tx.send(Ok((self.wrap)(frame)))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::new(ErrorKind::Cancelled, "client left the stream")),
            Err(_) => return Err(stalled_error(stall)),
        }
        self.metrics.add_rows(self.database, rows);
        Ok(())
    }

    /// Sends the rows taken and not sent yet.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = self.batch.take();
        if let Arrow::On(encoder) = &mut self.arrow {
            let pieces = encoder.batch(&rows)?;
            return self.send_pieces(pieces).await;
        }
        self.send(Frame::Batch(rows)).await
    }

    /// Whether the rows taken make a whole batch (by row count or size).
    fn batch_full(&self) -> bool {
        self.batch.len() >= self.limits.batch_rows
            || self.batch.byte_len() >= self.limits.batch_bytes
    }

    /// Sends the last rows and the summary.
    pub(crate) async fn finish(
        &mut self,
        rows_affected: u64,
        started: Instant,
    ) -> Result<(), Error> {
        self.flush().await?;
        if let Arrow::Wanted(engine) = self.arrow {
            // No columns came (a statement without a result).
            self.arrow = Arrow::On(Box::new(iadb::arrow::ArrowEncoder::new(
                engine,
                Arc::from(Vec::new()),
            )));
        }
        if let Arrow::On(encoder) = &mut self.arrow {
            let pieces = encoder.finish()?;
            self.send_pieces(pieces).await?;
        }
        let summary = proto::ResultSummary {
            row_count: self.row_count,
            rows_affected,
            execution_time_ms: ms_since(started),
        };
        if let Some(label) = self.label {
            label.ended(&Ok(()));
        }
        self.send(Frame::Summary(summary)).await
    }
}

#[tonic::async_trait]
impl<M: Send + 'static> RowSink for FrameSink<'_, M> {
    /// What the server's limits make a batch, when the result goes as
    /// Arrow.
    fn arrow_wanted(&self) -> Option<iadb::arrow::ArrowWanted> {
        (!matches!(self.arrow, Arrow::Off)).then_some(iadb::arrow::ArrowWanted {
            batch_rows: self.limits.batch_rows,
            batch_bytes: self.limits.batch_bytes,
        })
    }

    /// Sends a record batch an adapter built from its cursor (after the
    /// rows taken, if any): only for a result whose Arrow was asked for.
    async fn arrow(&mut self, batch: iadb::arrow::RecordBatch) -> Result<(), Error> {
        self.flush().await?;
        let Arrow::On(encoder) = &mut self.arrow else {
            return Err(iadb::arrow_where_rows_were_expected());
        };
        self.row_count += batch.num_rows() as u64;
        let pieces = encoder.record(&batch)?;
        self.send_pieces(pieces).await
    }

    async fn columns(&mut self, columns: Arc<[iadb::Column]>) -> Result<(), Error> {
        if let Arrow::Wanted(engine) = self.arrow {
            self.arrow = Arrow::On(Box::new(iadb::arrow::ArrowEncoder::new(
                engine,
                columns.clone(),
            )));
        }
        let columns = columns.iter().cloned().map(Into::into).collect();
        self.send(Frame::Header(proto::ResultHeader { columns }))
            .await
    }

    async fn row(&mut self, values: Vec<Value>) -> Result<(), Error> {
        self.row_count += 1;
        self.batch.push(&values);
        if self.batch_full() {
            self.flush().await?;
        }
        Ok(())
    }

    /// An adapter's batch joins the rows taken as it is (its bytes are the
    /// wire's), whole when it fits in the batch being filled, row by row
    /// otherwise.
    async fn rows(&mut self, batch: RowBatch) -> Result<(), Error> {
        self.row_count += batch.len() as u64;
        let fits = self.batch.len() + batch.len() <= self.limits.batch_rows
            && self.batch.byte_len() + batch.byte_len() <= self.limits.batch_bytes;
        if fits {
            if self.batch.is_empty() {
                self.batch = batch;
            } else {
                self.batch.append(&batch);
            }
            if self.batch_full() {
                self.flush().await?;
            }
            return Ok(());
        }
        for row in batch.encoded_rows() {
            self.batch.push_encoded(row);
            if self.batch_full() {
                self.flush().await?;
            }
        }
        Ok(())
    }
}

/// Whether the request asks to run read-only (`QueryOptions.read_only`).
fn read_only(options: Option<&proto::QueryOptions>) -> bool {
    options.is_some_and(|o| o.read_only)
}

/// Whether the caller's token has only the `read` scope: its FetchAll and
/// FetchOne run in a read-only transaction, so the engine refuses a write
/// sent as a query (`INSERT ... RETURNING`, a data-modifying CTE,
/// `nextval`) whatever the SQL looks like.
fn read_scoped(identity: Option<&Identity>) -> bool {
    identity.is_some_and(|i| i.scope == Scope::Read)
}

/// Keeps a result's columns and first row (a read-only FetchOne).
#[derive(Default)]
struct FirstRow {
    columns: Arc<[iadb::Column]>,
    row: Option<Vec<Value>>,
}

#[tonic::async_trait]
impl RowSink for FirstRow {
    async fn columns(&mut self, columns: Arc<[iadb::Column]>) -> Result<(), Error> {
        self.columns = columns;
        Ok(())
    }

    async fn row(&mut self, values: Vec<Value>) -> Result<(), Error> {
        if self.row.is_none() {
            self.row = Some(values);
        }
        Ok(())
    }
}

impl DatabaseService {
    /// FetchAll with `read_only`: the statement runs in a read-only
    /// transaction of its own ([`ReadOnlyCall`]), its rows streamed as they
    /// come, as on a pooled call. An error before the first row ends the
    /// stream before its header.
    // The parts of the FetchAll request the caller has already taken apart.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_all_read_only(
        &self,
        call: Call,
        label: CallLabel,
        database: String,
        sql: String,
        params: Vec<proto::Value>,
        limit: Option<Duration>,
        options: Option<proto::QueryOptions>,
        arrow: bool,
    ) -> Result<Response<FetchStream>, Status> {
        let started = Instant::now();
        let opened: Result<_, Error> = async {
            self.authorize(call.identity.as_ref(), &database, Scope::Read)?;
            let arrow = self.arrow_engine(&database, arrow)?;
            let bound = read_bound(options.as_ref(), call.identity.as_ref())?;
            let members =
                self.registry
                    .read_members(&database, bound, self.registry.get(&database)?)?;
            // The primary behind its readiness: needed at once when the read
            // runs there, only for a retry when a replica reads first.
            let primary = match members.first().is_some_and(ReadMember::is_replica) {
                true => self.registry.ready_backend(&database),
                false => Ok(self.registry.ready_backend(&database)?),
            };
            let params = self.pooled_params(&database, &sql, params)?;
            let turn = with_timeout(limit, self.turn(&database)).await?;
            Ok((members, primary, params, turn, arrow))
        }
        .await;
        let (members, primary, params, turn, arrow) = opened?;
        let (tx, rx) = mpsc::channel(STREAM_CHANNEL_BATCHES);
        let ending = Ending::default();
        let limits = self.limits;
        let task_ending = ending.clone();
        // What is left of the call's time limit once its turn came.
        let limit = limit.map(|l| l.saturating_sub(started.elapsed()));
        tokio::spawn(async move {
            let result = with_timeout(limit, async {
                let mut sink =
                    FrameSink::new(&tx, fetch_frame, limits, &call.metrics, &call.database)
                        .with_arrow(arrow)
                        .with_label(&label);
                let outcome =
                    read_only_query_on(members, primary, &sql, &params, &mut sink).await?;
                sink.finish(outcome.rows_affected, call.started).await
            })
            .await;
            drop(turn);
            label.ended(&result);
            set_ending(&task_ending, result);
        });
        Ok(Response::new(frames_then_ending(rx, ending)))
    }
}

impl DatabaseService {
    /// The engine of `database` when its result goes as Arrow (`arrow`),
    /// for the column types; `None` for rows.
    pub(crate) fn arrow_engine(
        &self,
        database: &str,
        arrow: bool,
    ) -> Result<Option<iadb::DatabaseType>, Error> {
        if !arrow {
            return Ok(None);
        }
        match self.registry.describe(database) {
            Some((_, engine)) => Ok(Some(engine)),
            None => self
                .registry
                .get(database)
                .and_then(|_| Err(Error::internal("a database without an engine"))),
        }
    }

    /// A replica within `bound` for a read-only transaction of `database`,
    /// if one is.
    pub(crate) fn replica_for(
        &self,
        database: &str,
        bound: Duration,
    ) -> Result<Option<ReadMember>, Error> {
        let primary = self.registry.get(database)?;
        Ok(self
            .registry
            .read_members(database, Some(bound), primary)?
            .into_iter()
            .next()
            .filter(ReadMember::is_replica))
    }
}

/// Runs a read-only query (a transaction of its own) on the first of
/// `members`, its rows into `sink`. When a replica fails it before anything
/// reached `sink` in a way another member may not ([`ReadMember::failed`]:
/// it could not be reached), it runs once more on the next member. On the
/// primary it runs on `primary`, the primary's adapter behind its
/// readiness (or why it is not ready).
async fn read_only_query_on(
    members: Vec<ReadMember>,
    primary: Result<Arc<dyn crate::backend::Backend>, Error>,
    sql: &str,
    params: &[Value],
    sink: &mut dyn crate::backend::session::RowSink,
) -> Result<ExecuteOutcome, Error> {
    let mut members = members.into_iter().take(2).peekable();
    let mut primary = Some(primary);
    while let Some(member) = members.next() {
        if !member.is_replica() {
            let backend = primary
                .take()
                .unwrap_or_else(|| Err(Error::internal("the primary was tried twice")))?;
            let call = ReadOnlyCall::Query { sql, params, sink };
            return caught(call.run_on(&*backend)).await;
        }
        let mut watched = Watched {
            inner: &mut *sink,
            touched: false,
        };
        let call = ReadOnlyCall::Query {
            sql,
            params,
            sink: &mut watched,
        };
        let result = caught(call.run_on(&*member.backend)).await;
        let touched = watched.touched;
        match result {
            Err(e) if member.failed(&e) && !touched && members.peek().is_some() => continue,
            done => return done,
        }
    }
    Err(Error::internal("no member to read from"))
}

/// A sink that notes whether anything (the columns included) reached the
/// one it wraps: a read that failed before may run again elsewhere.
struct Watched<'a> {
    inner: &'a mut dyn crate::backend::session::RowSink,
    touched: bool,
}

#[async_trait::async_trait]
impl crate::backend::session::RowSink for Watched<'_> {
    async fn columns(&mut self, columns: Arc<[iadb::Column]>) -> iadb::Result<()> {
        self.touched = true;
        self.inner.columns(columns).await
    }

    async fn row(&mut self, values: Vec<Value>) -> iadb::Result<()> {
        self.touched = true;
        self.inner.row(values).await
    }

    async fn rows(&mut self, batch: iadb::RowBatch) -> iadb::Result<()> {
        self.touched = true;
        self.inner.rows(batch).await
    }

    fn arrow_wanted(&self) -> Option<iadb::arrow::ArrowWanted> {
        self.inner.arrow_wanted()
    }

    async fn arrow(&mut self, batch: iadb::arrow::RecordBatch) -> iadb::Result<()> {
        self.touched = true;
        self.inner.arrow(batch).await
    }
}

/// The staleness a read accepts (`QueryOptions.consistency`): `None` for
/// STRONG, which reads on the primary. A request that does not choose
/// reads as its token prefers ([`Identity::max_staleness`]), else STRONG.
fn read_bound(
    options: Option<&proto::QueryOptions>,
    identity: Option<&Identity>,
) -> Result<Option<Duration>, Error> {
    let (consistency, max_staleness_ms) =
        options.map_or((0, 0), |o| (o.consistency, o.max_staleness_ms));
    staleness_bound(consistency, max_staleness_ms, identity)
}

/// The staleness bound of a `consistency` (`ReadConsistency`) and its
/// `max_staleness_ms`: `None` for STRONG; for UNSPECIFIED, the bound the
/// caller's token prefers, if any.
pub(crate) fn staleness_bound(
    consistency: i32,
    max_staleness_ms: u32,
    identity: Option<&Identity>,
) -> Result<Option<Duration>, Error> {
    match proto::ReadConsistency::try_from(consistency) {
        Ok(proto::ReadConsistency::Unspecified) => {
            Ok(identity.and_then(|identity| identity.max_staleness))
        }
        Ok(proto::ReadConsistency::Strong) => Ok(None),
        Ok(proto::ReadConsistency::BoundedStaleness) => {
            Ok(Some(Duration::from_millis(u64::from(max_staleness_ms))))
        }
        Err(_) => Err(Error::invalid_argument(format!(
            "unknown read consistency {consistency} (STRONG or BOUNDED_STALENESS)"
        ))),
    }
}

/// Runs `read` on the first of `members`; when it fails before any row was
/// sent in a way that another member may not ([`ReadMember::failed`]: the
/// member could not be reached), runs it once more on the next member.
async fn on_members<T, F, Fut>(members: Vec<ReadMember>, mut read: F) -> Result<T, Error>
where
    F: FnMut(Arc<dyn iadb::DatabaseInterface>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut members = members.into_iter();
    let Some(first) = members.next() else {
        return Err(Error::internal("no member to read from"));
    };
    match read(first.db.clone()).await {
        Err(e) if first.failed(&e) => match members.next() {
            Some(next) => read(next.db.clone()).await.inspect_err(|e| {
                next.failed(e);
            }),
            None => Err(e),
        },
        done => done,
    }
}

fn fetch_frame(frame: Frame) -> proto::FetchAllResponse {
    proto::FetchAllResponse { frame: Some(frame) }
}

/// Reads the engine's events into bounded batches and sends them: header,
/// batches, summary. Returns when the result ends, the client leaves (a
/// failed send), or the deadline passes.
async fn pump(
    stream: QueryStream,
    tx: &mpsc::Sender<Result<proto::FetchAllResponse, Status>>,
    limits: Limits,
    deadline: Option<(tokio::time::Instant, Duration)>,
    call: &Call,
    label: &CallLabel,
    arrow: Option<iadb::DatabaseType>,
) -> Result<(), Error> {
    let QueryStream { columns, events } = stream;
    let mut events = caught_events(events);
    let mut sink = FrameSink::new(tx, fetch_frame, limits, &call.metrics, &call.database)
        .with_arrow(arrow)
        .with_label(label);
    sink.columns(columns).await?;
    let mut rows_affected = 0u64;
    loop {
        let next = async {
            tokio::select! {
                event = events.next() => Ok(event),
                // The client left while the engine was busy: stop now.
                _ = tx.closed() => Err(Error::new(ErrorKind::Cancelled, "client left the stream")),
            }
        };
        let event = match deadline {
            Some((at, limit)) => tokio::time::timeout_at(at, next)
                .await
                .unwrap_or_else(|_| Err(deadline_error(limit))),
            None => next.await,
        };
        match event {
            Ok(Some(Ok(QueryEvent::Rows(batch)))) => sink.rows(batch).await?,
            Ok(Some(Ok(QueryEvent::Row(values)))) => sink.row(values).await?,
            Ok(Some(Ok(QueryEvent::Arrow(batch)))) => sink.arrow(batch).await?,
            Ok(Some(Ok(QueryEvent::Done(outcome)))) => rows_affected = outcome.rows_affected,
            Ok(Some(Err(e))) | Err(e) => {
                // Rows already read go out before the error status.
                sink.flush().await?;
                return Err(e);
            }
            Ok(None) => break,
        }
    }
    sink.finish(rows_affected, call.started).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_call() -> Call {
        Call {
            rpc: "FetchAll",
            database: "default".to_owned(),
            started: Instant::now(),
            metrics: Metrics::new(),
            identity: None,
        }
    }

    fn panicking_events(
        rows: i64,
    ) -> futures::stream::BoxStream<'static, Result<QueryEvent, Error>> {
        let rows =
            futures::stream::iter((0..rows).map(|i| Ok(QueryEvent::Row(vec![Value::Int(i)]))));
        let boom =
            futures::stream::poll_fn(|_| -> std::task::Poll<Option<Result<QueryEvent, Error>>> {
                panic!("decoding a value failed (as PostgreSQL's infinity dates once did)")
            });
        rows.chain(boom).boxed()
    }

    /// Pumps `stream` into `tx` as a FetchAll without a deadline does.
    async fn pump_all(
        stream: QueryStream,
        tx: &mpsc::Sender<Result<proto::FetchAllResponse, Status>>,
        limits: Limits,
        arrow: Option<iadb::DatabaseType>,
    ) -> Result<(), Error> {
        let (call, label) = (test_call(), CallLabel::default());
        pump(stream, tx, limits, None, &call, &label, arrow).await
    }

    /// Case 2: a panic while a result streams ends the stream with
    /// INTERNAL after the rows already read, and no summary: never a short
    /// result that looks complete.
    #[tokio::test]
    async fn a_panic_in_a_stream_ends_it_with_internal_and_no_summary() {
        let (tx, mut rx) = mpsc::channel(64);
        let stream = QueryStream {
            columns: Arc::from(vec![iadb::Column::new("n", "INTEGER")]),
            events: panicking_events(3),
        };
        let result = pump_all(stream, &tx, Limits::default(), None).await;
        let error = result.expect_err("the panic is an error");
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert!(!error.message().contains("infinity"), "{}", error.message());
        drop(tx);
        let mut rows = 0;
        while let Some(frame) = rx.recv().await {
            match frame.expect("frames").frame {
                Some(Frame::Header(_)) => {}
                Some(Frame::Batch(batch)) => rows += batch.len(),
                Some(Frame::Summary(_)) => panic!("a summary after a panic"),
                Some(Frame::Arrow(_)) => panic!("Arrow data for rows"),
                None => panic!("an empty frame"),
            }
        }
        assert_eq!(rows, 3);
    }

    /// The same in Arrow: the schema and the batch of the rows read, then
    /// INTERNAL, and neither the end marker nor a summary.
    #[tokio::test]
    async fn a_panic_in_an_arrow_stream_ends_it_with_internal_and_no_end_marker() {
        let (tx, mut rx) = mpsc::channel(64);
        let stream = QueryStream {
            columns: Arc::from(vec![iadb::Column::new("n", "INTEGER")]),
            events: panicking_events(3),
        };
        let arrow = Some(iadb::DatabaseType::Sqlite);
        let result = pump_all(stream, &tx, Limits::default(), arrow).await;
        let error = result.expect_err("the panic is an error");
        assert_eq!(error.kind(), ErrorKind::Internal);
        drop(tx);
        let mut decoder = iadb::arrow::ArrowDecoder::new();
        let mut rows = 0;
        while let Some(frame) = rx.recv().await {
            match frame.expect("frames").frame {
                Some(Frame::Header(_)) => {}
                Some(Frame::Arrow(data)) => {
                    for batch in decoder.push(data.ipc).expect("IPC") {
                        rows += batch.num_rows();
                    }
                }
                Some(Frame::Summary(_)) => panic!("a summary after a panic"),
                Some(Frame::Batch(_)) => panic!("rows for Arrow"),
                None => panic!("an empty frame"),
            }
        }
        assert_eq!(rows, 3);
        assert!(decoder.schema().is_some());
        assert!(decoder.finish().is_err(), "no end marker");
    }

    /// Runs `events` through the pump with `limits`; gives the rows of
    /// each batch frame sent, and whether a summary ended the stream.
    async fn pumped(
        events: Vec<Result<QueryEvent, Error>>,
        limits: Limits,
    ) -> (Result<(), Error>, Vec<Vec<Vec<Value>>>, bool) {
        let (tx, mut rx) = mpsc::channel(1024);
        let stream = QueryStream {
            columns: Arc::from(vec![iadb::Column::new("n", "INTEGER")]),
            events: futures::stream::iter(events).boxed(),
        };
        let result = pump_all(stream, &tx, limits, None).await;
        drop(tx);
        let (mut batches, mut summary) = (Vec::new(), false);
        while let Some(frame) = rx.recv().await {
            match frame.expect("frames").frame {
                Some(Frame::Batch(batch)) => batches.push(batch.to_rows().expect("rows")),
                Some(Frame::Summary(s)) => summary = s.row_count > 0,
                _ => {}
            }
        }
        (result, batches, summary)
    }

    /// FetchAll's call is counted as ended well before its summary goes:
    /// a client that leaves as soon as it has read the summary is counted
    /// by what the server did (OK), not as CANCELLED, whichever side is
    /// faster.
    #[tokio::test]
    async fn a_fetch_ends_well_before_its_summary_is_sent() {
        // Room for the header and the one batch, not the summary: the
        // pump waits there until the client reads.
        let (tx, mut rx) = mpsc::channel(2);
        let stream = QueryStream {
            columns: Arc::from(vec![iadb::Column::new("n", "INTEGER")]),
            events: futures::stream::iter(vec![
                Ok(QueryEvent::Rows(RowBatch::from(ints(0, 3)))),
                Ok(QueryEvent::Done(ExecuteOutcome::default())),
            ])
            .boxed(),
        };
        let (call, label) = (test_call(), CallLabel::default());
        let mut pumping = Box::pin(pump(
            stream,
            &tx,
            Limits::default(),
            None,
            &call,
            &label,
            None,
        ));
        assert!(
            futures::poll!(&mut pumping).is_pending(),
            "waits to send the summary"
        );
        assert_eq!(label.outcome(), Some(tonic::Code::Ok));
        let mut frames = Vec::new();
        let result = loop {
            tokio::select! {
                result = &mut pumping => break result,
                Some(frame) = rx.recv() => frames.push(frame.expect("frame").frame),
            }
        };
        result.expect("the result ended");
        drop(pumping);
        drop(tx);
        while let Some(frame) = rx.recv().await {
            frames.push(frame.expect("frame").frame);
        }
        assert!(matches!(frames.last(), Some(Some(Frame::Summary(s))) if s.row_count == 3));
    }

    fn ints(from: i64, to: i64) -> Vec<Vec<Value>> {
        (from..to).map(|i| vec![Value::Int(i)]).collect()
    }

    /// An adapter's batches reach the wire joined or split to the server's
    /// limits, every row once and in order.
    #[tokio::test]
    async fn adapter_batches_are_sent_within_the_batch_limits() {
        let events = vec![
            Ok(QueryEvent::Rows(RowBatch::from(ints(0, 5)))),
            Ok(QueryEvent::Rows(RowBatch::from(ints(5, 6)))),
            Ok(QueryEvent::Row(vec![Value::Int(6)])),
            Ok(QueryEvent::Rows(RowBatch::from(ints(7, 10)))),
            Ok(QueryEvent::Done(ExecuteOutcome::default())),
        ];
        let limits = Limits {
            batch_rows: 3,
            ..Limits::default()
        };
        let (result, batches, summary) = pumped(events, limits).await;
        result.expect("the stream ends well");
        assert!(summary);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(batches.concat(), ints(0, 10));

        // By size: each of these rows takes 6 bytes on the wire, so a
        // batch is full at its second row.
        let events = vec![
            Ok(QueryEvent::Rows(RowBatch::from(ints(0, 4)))),
            Ok(QueryEvent::Rows(RowBatch::from(ints(4, 8)))),
            Ok(QueryEvent::Done(ExecuteOutcome::default())),
        ];
        assert_eq!(RowBatch::from(ints(0, 4)).byte_len(), 24);
        let limits = Limits {
            batch_bytes: 10,
            ..Limits::default()
        };
        let (result, batches, _) = pumped(events, limits).await;
        result.expect("the stream ends well");
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 2]
        );
        assert_eq!(batches.concat(), ints(0, 8));
    }

    /// An error after a batch: its rows go out, then the error, no summary.
    #[test]
    fn a_fetch_one_result_that_has_ended_is_finished_at_once() {
        let done = || Ok(QueryEvent::Done(ExecuteOutcome::default()));
        let mut ended = futures::stream::iter(vec![done()]).boxed();
        assert!(ended_already(&mut ended));
        let mut a_few_more = futures::stream::iter(vec![
            Ok(QueryEvent::Rows(RowBatch::from(ints(1, 3)))),
            done(),
        ])
        .boxed();
        assert!(ended_already(&mut a_few_more));
        // Still running on the engine: left to the task that waits.
        let mut running = futures::stream::pending().boxed();
        assert!(!ended_already(&mut running));
        // More rows than a point select has: not read to the end here.
        let mut long =
            futures::stream::iter((0..100).map(|i| Ok(QueryEvent::Row(vec![Value::Int(i)]))))
                .chain(futures::stream::iter(vec![done()]))
                .boxed();
        assert!(!ended_already(&mut long));
    }

    #[tokio::test]
    async fn rows_before_an_error_are_sent_before_it() {
        let events = vec![
            Ok(QueryEvent::Rows(RowBatch::from(ints(0, 5)))),
            Err(Error::invalid_argument("cannot decode column 1")),
        ];
        let (result, batches, summary) = pumped(events, Limits::default()).await;
        assert_eq!(
            result.expect_err("the error").kind(),
            ErrorKind::InvalidArgument
        );
        assert!(!summary);
        assert_eq!(batches.concat(), ints(0, 5));
    }

    #[tokio::test]
    async fn a_panic_in_a_call_is_internal() {
        let result: Result<(), Error> = caught(async { panic!("bug") }).await;
        assert_eq!(result.expect_err("panic").kind(), ErrorKind::Internal);
        let mut events = caught_events(panicking_events(1));
        assert!(matches!(events.next().await, Some(Ok(QueryEvent::Row(_)))));
        let error = events.next().await.expect("an item").expect_err("panic");
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert!(
            events.next().await.is_none(),
            "the stream ends after a panic"
        );
    }

    #[test]
    fn read_consistency_is_strong_unless_bounded() {
        let options = |consistency: i32, max_staleness_ms: u32| proto::QueryOptions {
            consistency,
            max_staleness_ms,
            ..Default::default()
        };
        let staleness_bound = |options: Option<&proto::QueryOptions>| read_bound(options, None);
        assert_eq!(staleness_bound(None).unwrap(), None);
        assert_eq!(staleness_bound(Some(&options(0, 900))).unwrap(), None);
        assert_eq!(
            staleness_bound(Some(&options(proto::ReadConsistency::Strong.into(), 900))).unwrap(),
            None
        );
        assert_eq!(
            staleness_bound(Some(&options(
                proto::ReadConsistency::BoundedStaleness.into(),
                250
            )))
            .unwrap(),
            Some(Duration::from_millis(250))
        );
        let unknown = staleness_bound(Some(&options(7, 0))).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::InvalidArgument);

        // A token that prefers replicas: its reads that do not choose are
        // bounded; an explicit STRONG or bound still wins.
        let token = Identity {
            name: Arc::from("reporting"),
            scope: Scope::Read,
            databases: Arc::new(crate::auth::Databases::All),
            max_staleness: Some(Duration::from_millis(750)),
        };
        let by_token =
            |options: Option<&proto::QueryOptions>| read_bound(options, Some(&token)).unwrap();
        assert_eq!(by_token(None), Some(Duration::from_millis(750)));
        assert_eq!(
            by_token(Some(&options(0, 0))),
            Some(Duration::from_millis(750))
        );
        assert_eq!(
            by_token(Some(&options(proto::ReadConsistency::Strong.into(), 0))),
            None
        );
        assert_eq!(
            by_token(Some(&options(
                proto::ReadConsistency::BoundedStaleness.into(),
                100
            ))),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn grpc_timeout_header() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
