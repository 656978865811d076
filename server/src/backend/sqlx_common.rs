//! What the sqlx-based adapters share: the [`SqlxEngine`] trait (what an
//! engine is to them), mapping sqlx errors to iadb errors, the pool slot,
//! and the generic [`SqlxSession`]. The generic pooled adapter is
//! `sqlx_adapter`.

pub(crate) use super::session::step_batch_full;
use super::{
    WaitGuard,
    session::{RowSink, Session, TxOptions},
};
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use iadb::{Error, ErrorKind, ExecuteOutcome, RowBatch, Value};
use sqlx::TransactionManager as _;
use sqlx::error::{DatabaseError, ErrorKind as SqlxKind};
use std::sync::{
    Arc,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

/// What every sqlx engine module starts from: the generic adapter and its
/// trait, the session's options, and the domain, sqlx and std items each of
/// them uses (`use super::sqlx_common::prelude::*;`).
pub(crate) mod prelude {
    pub(crate) use super::super::{
        session::{Isolation, TxOptions},
        sqlx_adapter::SqlxBackend,
    };
    pub(crate) use super::{BeginPlan, SqlxEngine, Steps, map_sqlx_error, sqlx_statement_paths};
    pub(crate) use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
    pub(crate) use futures::future::BoxFuture;
    pub(crate) use iadb::{
        Column, ConnectionConfig, DatabaseType, Error, ErrorKind, ExecuteOutcome, Result, Value,
    };
    pub(crate) use sqlx::{
        Column as _, ConnectOptions as _, Executor, Row as _, Statement as _, TypeInfo, ValueRef,
        error::DatabaseError,
        pool::{PoolConnection, PoolOptions},
    };
    // Not every engine uses every item: a build with one engine alone
    // (`--features postgres`) would warn about the others'.
    #[allow(unused_imports)]
    pub(crate) use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering},
        },
        time::Duration,
    };
}

/// How an engine's error codes map to iadb error kinds beyond what sqlx's
/// own classification tells.
pub(crate) type CodeClassifier = fn(&dyn DatabaseError) -> Option<ErrorKind>;

/// Maps a sqlx error to an iadb error; `classify` refines database errors by
/// the engine's codes. The message is the engine's text (never a URL).
pub(crate) fn map_sqlx_error(e: sqlx::Error, classify: CodeClassifier) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            let kind = match db.kind() {
                SqlxKind::UniqueViolation => ErrorKind::AlreadyExists,
                SqlxKind::ForeignKeyViolation
                | SqlxKind::NotNullViolation
                | SqlxKind::CheckViolation => ErrorKind::FailedPrecondition,
                _ => classify(db.as_ref()).unwrap_or(ErrorKind::InvalidArgument),
            };
            let mut err = Error::new(kind, db.message().to_owned());
            if let Some(code) = db.code() {
                err = err.with_code(code.into_owned());
            }
            err
        }
        sqlx::Error::PoolTimedOut => {
            Error::unavailable("timed out waiting for a free connection from the pool")
        }
        sqlx::Error::PoolClosed => Error::unavailable("the connection pool is closed"),
        sqlx::Error::Io(io) => Error::unavailable(format!("engine unreachable: {io}")),
        sqlx::Error::Tls(tls) => Error::unavailable(format!("TLS error: {tls}")),
        sqlx::Error::WorkerCrashed => Error::unavailable("the database worker stopped"),
        sqlx::Error::Configuration(c) => {
            Error::invalid_argument(format!("bad connection configuration: {c}"))
        }
        sqlx::Error::ColumnDecode { index, source } => {
            Error::invalid_argument(format!("cannot decode column {index}: {source}"))
        }
        sqlx::Error::Decode(source) => {
            Error::invalid_argument(format!("cannot decode value: {source}"))
        }
        sqlx::Error::Encode(source) => {
            Error::invalid_argument(format!("cannot encode parameter: {source}"))
        }
        sqlx::Error::Protocol(p) => Error::internal(format!("protocol error: {p}")),
        other => Error::internal(other.to_string()),
    }
}

/// A pooled connection that went back to the pool less than this long ago is
/// handed out without a ping. Under load, calls reuse connections within
/// microseconds, and skipping the ping saves them a round trip to the engine
/// each (50–70 µs of a PostgreSQL point select here). A connection idle
/// longer is pinged first, and one that fails the ping is closed and
/// replaced. This is pgbouncer's `server_check_delay`, whose default is 30 s,
/// with a shorter delay.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The pools' `before_acquire` hook (with sqlx's `test_before_acquire` off):
/// pings a connection only when it has been idle for [`PING_AFTER_IDLE`] or
/// longer. A failed ping makes sqlx close the connection and hand out
/// another (or open a new one).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for < PING_AFTER_IDLE {
            return Ok(true);
        }
        Ok(conn.ping().await.is_ok())
    })
}

/// The pool of a sqlx adapter: empty until `connect`, emptied by
/// `disconnect`; what every sqlx adapter needs to hold, hand out and report.
pub struct PoolSlot<DB: sqlx::Database> {
    pool: std::sync::RwLock<Option<sqlx::Pool<DB>>>,
    /// Calls inside [`PoolSlot::acquire`] right now (sqlx does not count
    /// its waiters).
    waiting: std::sync::Arc<AtomicU32>,
    /// Connections found inside a transaction (or with state the reset
    /// could not clear) when they came back, and rolled back or closed.
    rolled_back: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<DB: sqlx::Database> PoolSlot<DB> {
    /// No pool yet.
    pub(crate) fn new() -> Self {
        Self {
            pool: std::sync::RwLock::new(None),
            waiting: Default::default(),
            rolled_back: Default::default(),
        }
    }

    /// Counts a connection that was found inside a transaction and rolled
    /// back (reported as `pool_transactions_rolled_back_total`).
    #[cfg(feature = "sqlite")]
    pub(crate) fn count_rollback(&self) {
        self.rolled_back.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter behind [`PoolSlot::count_rollback`], for a pool hook
    /// that outlives `&self`.
    pub(crate) fn rollback_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.rolled_back.clone()
    }

    /// A connection from the open pool, counted as waiting until it comes;
    /// `map_err` is the engine's error mapping.
    pub(crate) async fn acquire(
        &self,
        map_err: fn(sqlx::Error) -> Error,
    ) -> Result<sqlx::pool::PoolConnection<DB>, Error> {
        let pool = self.get()?;
        let _waiting = WaitGuard::new(&self.waiting);
        pool.acquire().await.map_err(map_err)
    }

    /// The open pool, or UNAVAILABLE.
    pub(crate) fn get(&self) -> Result<sqlx::Pool<DB>, Error> {
        self.pool
            .read()
            .map_err(|_| Error::internal("pool lock poisoned"))?
            .clone()
            .filter(|p| !p.is_closed())
            .ok_or_else(|| Error::unavailable("database is not connected"))
    }

    /// Holds `pool` from now on.
    pub(crate) fn set(&self, pool: sqlx::Pool<DB>) -> Result<(), Error> {
        *self
            .pool
            .write()
            .map_err(|_| Error::internal("pool lock poisoned"))? = Some(pool);
        Ok(())
    }

    /// Closes and forgets the pool, if any.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        let pool = self
            .pool
            .write()
            .map_err(|_| Error::internal("pool lock poisoned"))?
            .take();
        if let Some(pool) = pool {
            pool.close().await;
        }
        Ok(())
    }

    /// Size, idle and max of the open pool.
    pub(crate) fn status(&self) -> Option<iadb::PoolStatus> {
        let pool = self.get().ok()?;
        Some(iadb::PoolStatus {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
            waiting: self.waiting.load(Ordering::Relaxed),
            rolled_back: self.rolled_back.load(Ordering::Relaxed),
        })
    }
}

/// One step of a statement's result as its engine reads it: the columns
/// once, before any row; the rows, batch by batch; then what the statement
/// changed.
pub enum Step {
    /// The result's columns (empty for a statement without a result).
    Columns(Arc<[iadb::Column]>),
    /// The next rows (never empty), each written straight from the
    /// engine's row into the batch's wire form, up to
    /// [`step_batch_full`].
    Rows(RowBatch),
    /// The next rows as a record batch (never empty), built straight from
    /// the engine's rows when the statement was asked for Arrow
    /// ([`iadb::arrow::ArrowWanted`]) and its columns' types allow it.
    Arrow(iadb::arrow::RecordBatch),
    /// The statement ended: what it changed.
    Done(ExecuteOutcome),
}

/// The steps of one statement run on one connection.
pub type Steps<'c> = BoxStream<'c, Result<Step, Error>>;

/// What a pooled call lends its connection for, which decides what
/// becomes of a connection whose call is dropped before its statement
/// ended ([`SqlxEngine::abandon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A result streamed to the caller (FetchAll, FetchOne).
    Stream,
    /// A statement whose outcome the call awaits (Execute, ExecuteMany, a
    /// catalogue lookup).
    Statement,
}

/// A pooled connection readied for a call or a session
/// ([`SqlxEngine::ready`]), and its guard.
pub type Readied<E> = (
    sqlx::pool::PoolConnection<<E as SqlxEngine>::DB>,
    <E as SqlxEngine>::Guard,
);

/// What makes a sqlx driver an iadb engine: how it binds, decodes and maps
/// errors (its statement paths), how it begins a transaction, and what its
/// pool does as connections open, are lent and come back. The generic
/// adapter ([`super::sqlx_adapter::SqlxBackend`]) and the generic
/// [`SqlxSession`] are the rest. The value is the engine's settings from
/// its URL (how to connect, what the pool hooks need); the session needs
/// none of them.
pub trait SqlxEngine:
    for<'c> TryFrom<&'c iadb::ConnectionConfig, Error = Error> + Send + Sync + Sized + 'static
{
    /// The sqlx driver.
    type DB: sqlx::Database;
    /// Held while a connection runs a call or a session, and dropped before
    /// the connection (SQLite: the interrupt that stops a statement left
    /// running). The default guard guards nothing.
    type Guard: Send + Default;
    /// A statement checked and bound, before any connection is taken for it.
    type Statement: Send + 'static;
    /// The engine.
    const ENGINE: iadb::DatabaseType;

    /// The engine's error mapping.
    fn map_error(e: sqlx::Error) -> Error;

    /// How a transaction with `options` begins, or INVALID_ARGUMENT for
    /// options the engine does not have (`immediate` is checked before).
    fn begin_plan(options: &TxOptions) -> Result<BeginPlan, Error>;

    /// Checks `sql` and its parameters before a pooled call takes a
    /// connection for it: not empty, and as many parameters as `?`
    /// placeholders in the engine's dialect.
    fn check(sql: &str, params: &[Value]) -> Result<(), Error> {
        super::check_sql(sql)?;
        super::check_param_count(sql, Self::ENGINE.spec().dialect, params.len())
    }

    /// Checks `sql` ([`SqlxEngine::check`]) and binds `params` for it.
    fn statement(sql: &str, params: &[Value]) -> Result<Self::Statement, Error>;

    /// `statement`, asked to give its rows as Arrow record batches built
    /// from the cursor ([`Step::Arrow`]). An engine that cannot build them
    /// keeps the default, which ignores the request (its rows are then
    /// converted by the server).
    fn with_arrow(statement: Self::Statement, wanted: iadb::arrow::ArrowWanted) -> Self::Statement {
        let _ = wanted;
        statement
    }

    /// `statement`, to run alone on a connection lent for its call: one
    /// that is closed, not reused, when the call fails after its columns
    /// ([`SqlxBackend::query_statement`](super::sqlx_adapter)), which lets
    /// an engine read it in ways that leave the connection unusable after
    /// an error (PostgreSQL's COPY). By default nothing changes.
    fn alone(statement: Self::Statement) -> Self::Statement {
        statement
    }

    /// Runs `statement` on `conn`: its columns, its rows, then its outcome
    /// ([`Step`]).
    fn steps(
        conn: &mut <Self::DB as sqlx::Database>::Connection,
        statement: Self::Statement,
    ) -> Steps<'_>;

    /// Runs one statement (without parameters: a script): checks it
    /// ([`SqlxEngine::check`]), then [`SqlxEngine::execute_checked`].
    fn execute_on<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<ExecuteOutcome, Error>> {
        Box::pin(async move {
            Self::check(sql, params)?;
            Self::execute_checked(conn, sql, params).await
        })
    }

    /// [`SqlxEngine::execute_on`] for parameters that [`SqlxEngine::check`]
    /// has passed with `sql` (as many as it has placeholders): ExecuteMany
    /// checks its statement once, not once per set.
    fn execute_checked<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<ExecuteOutcome, Error>>;

    /// Runs one statement per parameter set in a transaction of its own (a
    /// savepoint inside a session's transaction), each as
    /// [`SqlxEngine::execute_on`] runs it; the error of a failing set names
    /// its index. The statement is checked once, with the first set; a set
    /// of another length is checked on its own (and refused).
    fn execute_many_on<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        sql: &'a str,
        param_sets: &'a [Vec<Value>],
    ) -> BoxFuture<'a, Result<ExecuteOutcome, Error>> {
        Box::pin(async move {
            super::check_sql(sql)?;
            let checked = param_sets
                .first()
                .filter(|first| Self::check(sql, first).is_ok())
                .map(Vec::len);
            let mut tx = sqlx::Connection::begin(conn)
                .await
                .map_err(Self::map_error)?;
            let mut outcome = ExecuteOutcome::default();
            for (index, params) in param_sets.iter().enumerate() {
                let run = if checked == Some(params.len()) {
                    Self::execute_checked(&mut tx, sql, params)
                } else {
                    Self::execute_on(&mut tx, sql, params)
                };
                let done = run
                    .await
                    .map_err(|e| e.in_context(format_args!("parameter set {index}")))?;
                outcome.rows_affected += done.rows_affected;
                if done.last_insert_id.is_some() {
                    outcome.last_insert_id = done.last_insert_id;
                }
            }
            tx.commit().await.map_err(Self::map_error)?;
            Ok(outcome)
        })
    }

    /// Runs `sql`, without parameters, as a script.
    fn run_script<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Whether a table or view `table` exists (`schema.table` where the
    /// engine has schemas).
    fn table_exists<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        table: &'a str,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Quotes an identifier the way the engine reads one.
    fn quote_identifier(name: &str) -> String {
        iadb::quote_identifier(name)
    }

    /// What the engine's user may do beyond its own databases
    /// (`Backend::broad_privileges`), asked through `db`.
    fn broad_privileges(
        db: &dyn iadb::DatabaseInterface,
    ) -> BoxFuture<'_, Result<Vec<String>, Error>> {
        let _ = db;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// How to reach the engine.
    fn connect_options(
        &self,
    ) -> <<Self::DB as sqlx::Database>::Connection as sqlx::Connection>::Options;

    /// How the pool's first connections reach the engine: where the URL
    /// lists several hosts, the engine picks one here (PostgreSQL: the one
    /// not in recovery). By default [`Self::connect_options`].
    fn first_connect_options(
        &self,
    ) -> BoxFuture<
        '_,
        Result<<<Self::DB as sqlx::Database>::Connection as sqlx::Connection>::Options, Error>,
    > {
        Box::pin(async { Ok(self.connect_options()) })
    }

    /// The pool is open: an engine that follows a primary moving between
    /// the URL's hosts starts watching it here. By default nothing.
    fn watch_pool(&self, pool: &sqlx::Pool<Self::DB>) {
        let _ = pool;
    }

    /// The pool's options: `base` (its size, its acquire timeout, no ping
    /// before a connection is lent) with the engine's hooks for a
    /// connection that opens, is lent or comes back; `rolled_back` counts
    /// the connections found inside a transaction when they came back.
    fn pool_options(
        &self,
        base: sqlx::pool::PoolOptions<Self::DB>,
        rolled_back: Arc<AtomicU64>,
    ) -> Result<sqlx::pool::PoolOptions<Self::DB>, Error>;

    /// Readies a connection the pool lent for a call or a session, with
    /// its guard; `pool` counts one found inside a transaction.
    fn ready(
        conn: sqlx::pool::PoolConnection<Self::DB>,
        pool: &PoolSlot<Self::DB>,
    ) -> BoxFuture<'_, Result<Readied<Self>, Error>> {
        let _ = pool;
        Box::pin(async move { Ok((conn, Self::Guard::default())) })
    }

    /// The call ended, well or not: its guard has nothing left to stop.
    fn disarm(guard: &mut Self::Guard) {
        let _ = guard;
    }

    /// A pooled call was dropped (its caller left, its deadline passed)
    /// before the statement it lent `conn` for ended. By default the
    /// guard is dropped, then the connection goes back to the pool.
    fn abandon(conn: sqlx::pool::PoolConnection<Self::DB>, guard: Self::Guard, call: Call) {
        let _ = call;
        drop(guard);
        drop(conn);
    }

    /// Whether a migration run keeps its connection in the pool (SQLite's
    /// `:memory:`, whose one connection is the database) rather than taking
    /// it out, so that its locks and whatever state it leaves end with it.
    fn migrates_on_pool(&self) -> bool {
        false
    }

    /// Clears what statements of a session left on its connection (TEMP
    /// objects, settings, prepared statements, session locks) after its
    /// transaction ended: `true` when the connection is clean again,
    /// `false` when the engine has no cheap way and the connection is to
    /// be closed instead (the default).
    fn reset_session(
        conn: &mut <Self::DB as sqlx::Database>::Connection,
    ) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
        let _ = conn;
        Box::pin(async { Ok(false) })
    }

    /// Stops the statement an abandoned session's connection may still be
    /// running, through its guard (disarmed when none runs). By default
    /// the guard is dropped.
    fn stop_statement(guard: Self::Guard) -> BoxFuture<'static, ()> {
        drop(guard);
        Box::pin(async {})
    }

    /// Brings an abandoned session's connection back to a clean state: its
    /// statement stopped ([`Self::stop_statement`]), its transaction rolled
    /// back, `after` run.
    fn settle<'a>(
        conn: &'a mut <Self::DB as sqlx::Database>::Connection,
        guard: Self::Guard,
        in_transaction: bool,
        after: Option<&'static str>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        let stopped = Self::stop_statement(guard);
        Box::pin(async move {
            stopped.await;
            if in_transaction {
                <Self::DB as sqlx::Database>::TransactionManager::rollback(conn).await?;
            }
            if let Some(after) = after {
                Self::run_script(conn, after).await?;
            }
            Ok(())
        })
    }
}

/// Runs one statement of engine `E` on `conn` and sends its columns and
/// rows to `sink` (a session's statement; the pooled adapter streams the
/// same steps to its caller).
pub(crate) async fn query_into<E: SqlxEngine>(
    conn: &mut <E::DB as sqlx::Database>::Connection,
    sql: &str,
    params: &[Value],
    sink: &mut dyn RowSink,
) -> Result<ExecuteOutcome, Error> {
    let mut statement = E::statement(sql, params)?;
    if let Some(wanted) = sink.arrow_wanted() {
        statement = E::with_arrow(statement, wanted);
    }
    let mut steps = E::steps(conn, statement);
    while let Some(step) = steps.next().await {
        match step? {
            Step::Columns(columns) => sink.columns(columns).await?,
            Step::Rows(batch) => sink.rows(batch).await?,
            Step::Arrow(batch) => sink.arrow(batch).await?,
            Step::Done(outcome) => return Ok(outcome),
        }
    }
    Err(Error::internal(format!(
        "{}: a result without its outcome",
        E::ENGINE
    )))
}

/// The steps of a statement prepared on `conn` (its `columns` known from
/// the prepare, its arguments bound as `args`): the columns, its rows,
/// each decoded by `decode` (given the row and its number in the result,
/// from 1), then the outcome, to which `count` adds what
/// each statement of it changed. `E` maps the driver's errors. With
/// `arrow`, and columns whose declared types decide their Arrow types, the
/// rows come as record batches built as they are read
/// ([`iadb::arrow::ArrowRows`]), not as rows.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn prepared_steps<'c, E, A, D>(
    conn: &'c mut <E::DB as sqlx::Database>::Connection,
    columns: Arc<[iadb::Column]>,
    sql: String,
    args: A,
    decode: D,
    count: fn(&mut ExecuteOutcome, &<E::DB as sqlx::Database>::QueryResult),
    arrow: Option<iadb::arrow::ArrowWanted>,
) -> Steps<'c>
where
    E: SqlxEngine,
    A: for<'q> sqlx::IntoArguments<'q, E::DB> + Send + 'c,
    D: Fn(&<E::DB as sqlx::Database>::Row, u64, &mut dyn iadb::ValueWriter) -> Result<(), Error>
        + Send
        + 'c,
    for<'e> &'e mut <E::DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = E::DB>,
{
    let mut out = match arrow.and_then(|wanted| {
        iadb::arrow::ArrowRows::new(E::ENGINE, columns.clone(), wanted.batch_rows)
            .map(|rows| (rows, wanted))
    }) {
        Some((rows, wanted)) => StepRows::Arrow(Box::new(rows), wanted),
        None => StepRows::Rows(RowBatch::new()),
    };
    Box::pin(async_stream::try_stream! {
        yield Step::Columns(columns);
        let mut outcome = ExecuteOutcome::default();
        let mut row_number = 0u64;
        let mut failed = None;
        {
            // Created and started outside the call's span (super::unspanned).
            let mut results = super::unspanned::Unspanned::new(|| {
                sqlx::Executor::fetch_many(&mut *conn, sqlx::query_with(&sql, args))
            });
            while let Some(item) = results.next().await {
                match item.map_err(E::map_error) {
                    Ok(sqlx::Either::Left(done)) => count(&mut outcome, &done),
                    Ok(sqlx::Either::Right(row)) => {
                        row_number += 1;
                        if let Err(e) = out.push(&row, row_number, &decode) {
                            failed = Some(e);
                            break;
                        }
                        if out.full() {
                            yield out.take()?;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        // The rows read before an error go out before it.
        if !out.is_empty() {
            yield out.take()?;
        }
        if let Some(e) = failed {
            Err(e)?;
        }
        yield Step::Done(outcome);
    })
}

/// Where [`prepared_steps`] gathers rows: a row batch, or Arrow arrays.
#[cfg(any(feature = "postgres", feature = "mysql"))]
enum StepRows {
    Rows(RowBatch),
    Arrow(Box<iadb::arrow::ArrowRows>, iadb::arrow::ArrowWanted),
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl StepRows {
    /// Decodes `row` (the `number`th) into the rows gathered.
    fn push<R>(
        &mut self,
        row: &R,
        number: u64,
        decode: &impl Fn(&R, u64, &mut dyn iadb::ValueWriter) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match self {
            StepRows::Rows(batch) => {
                let mut writer = batch.row();
                decode(row, number, &mut writer)?;
                writer.end();
                Ok(())
            }
            StepRows::Arrow(rows, _) => {
                let mut writer = rows.row();
                decode(row, number, &mut writer)?;
                writer
                    .end()
                    .map_err(|e| e.in_context(format_args!("row {number}")))
            }
        }
    }

    /// Whether the rows gathered go to the consumer now.
    fn full(&self) -> bool {
        match self {
            StepRows::Rows(batch) => step_batch_full(batch),
            StepRows::Arrow(rows, wanted) => {
                rows.len() >= wanted.batch_rows || rows.byte_len() >= wanted.batch_bytes
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            StepRows::Rows(batch) => batch.is_empty(),
            StepRows::Arrow(rows, _) => rows.is_empty(),
        }
    }

    /// The rows gathered, as a step; gathering starts again.
    fn take(&mut self) -> Result<Step, Error> {
        Ok(match self {
            StepRows::Rows(batch) => Step::Rows(batch.take()),
            StepRows::Arrow(rows, _) => Step::Arrow(rows.take()?),
        })
    }
}

/// Whether `sql` (a catalogue lookup, with `params`) finds a row on
/// `conn`, run through the engine's own statement path (its binding, its
/// decoding and its errors are those of any call).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn finds_a_row<E: SqlxEngine>(
    conn: &mut <E::DB as sqlx::Database>::Connection,
    sql: String,
    params: Vec<Value>,
) -> BoxFuture<'_, Result<bool, Error>> {
    Box::pin(async move {
        let statement = E::statement(&sql, &params)?;
        let mut steps = E::steps(conn, statement);
        let mut found = false;
        while let Some(step) = steps.next().await {
            found |= matches!(step?, Step::Rows(batch) if !batch.is_empty());
        }
        Ok(found)
    })
}

/// A column's declared type as sqlx reports it; `NULL` (SQLite: an
/// expression; MySQL: a NULL literal) is unknown, the empty string.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn declared_type_name(ty: &impl sqlx::TypeInfo) -> String {
    match ty.name() {
        "NULL" => String::new(),
        name => name.to_owned(),
    }
}

/// `schema.table` split at its first dot; a bare name has no schema.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn split_schema(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

/// The statement paths of an [`SqlxEngine`] impl whose module defines
/// `steps` and `execute_checked` over `$conn` (the same functions its
/// session runs), and a raw script path.
macro_rules! sqlx_statement_paths {
    ($conn:ty) => {
        fn steps(
            conn: &mut $conn,
            statement: Self::Statement,
        ) -> $crate::backend::sqlx_common::Steps<'_> {
            steps(conn, statement)
        }

        fn execute_checked<'a>(
            conn: &'a mut $conn,
            sql: &'a str,
            params: &'a [iadb::Value],
        ) -> futures::future::BoxFuture<'a, iadb::Result<iadb::ExecuteOutcome>> {
            Box::pin(execute_checked(conn, sql, params))
        }

        fn run_script<'a>(
            conn: &'a mut $conn,
            sql: &'a str,
        ) -> futures::future::BoxFuture<'a, std::result::Result<(), sqlx::Error>> {
            Box::pin(async move {
                sqlx::Executor::execute(conn, sqlx::raw_sql(sql))
                    .await
                    .map(|_| ())
            })
        }
    };
}
pub(crate) use sqlx_statement_paths;

/// The statements that begin a transaction.
pub struct BeginPlan {
    /// Run before the begin (MySQL: `SET TRANSACTION ISOLATION LEVEL ...`,
    /// which applies to the next transaction only).
    pub before: Option<String>,
    /// The begin itself.
    pub begin: String,
    /// Run after the transaction ended, to undo `before` where it outlives
    /// the transaction (SQLite: `PRAGMA query_only = OFF`).
    pub after: Option<&'static str>,
}

fn gone() -> Error {
    Error::internal("the session's connection is gone")
}

/// How long an abandoned session may take to roll back before its
/// connection is closed instead.
const CLEANUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// A session's connection: lent by the pool, or taken out of it.
enum Held<DB: sqlx::Database> {
    Pooled(sqlx::pool::PoolConnection<DB>),
    Detached(DB::Connection),
}

impl<DB: sqlx::Database> std::ops::Deref for Held<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        match self {
            Held::Pooled(c) => c,
            Held::Detached(c) => c,
        }
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Held<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Held::Pooled(c) => c,
            Held::Detached(c) => c,
        }
    }
}

/// A [`Session`] on one pooled connection of a sqlx engine. The connection
/// goes back to the pool when the session is dropped, in a known state: a
/// session dropped with a transaction or a statement unfinished (the caller
/// left, its deadline passed, a commit failed) is rolled back first by a
/// task of its own, and its connection is closed instead if that fails or
/// takes longer than [`CLEANUP_BUDGET`].
pub(crate) struct SqlxSession<E: SqlxEngine> {
    held: Option<(Held<E::DB>, E::Guard)>,
    in_transaction: bool,
    busy: bool,
    /// A statement's future was dropped part-way (its call's deadline, a
    /// client that left): the connection may still be running it.
    cut_off: bool,
    after: Option<&'static str>,
    /// A statement changed the connection's session state: when the
    /// transaction ends the connection is reset where the engine can
    /// (`SqlxEngine::reset_session`), else closed.
    session_state: bool,
    /// Closed rather than given back at the end.
    close_at_end: bool,
}

impl<E: SqlxEngine> SqlxSession<E> {
    /// A session on the pooled `conn`, back to the pool at its end.
    pub(crate) fn new(conn: sqlx::pool::PoolConnection<E::DB>, guard: E::Guard) -> Self {
        Self::holding(Held::Pooled(conn), guard)
    }

    /// A session on `conn` taken out of its pool (a migration run: the
    /// locks it takes and whatever state it leaves end with it), closed at
    /// its end.
    pub(crate) fn detached(conn: sqlx::pool::PoolConnection<E::DB>, guard: E::Guard) -> Self {
        Self::holding(Held::Detached(conn.detach()), guard)
    }

    fn holding(held: Held<E::DB>, guard: E::Guard) -> Self {
        Self {
            held: Some((held, guard)),
            in_transaction: false,
            busy: false,
            cut_off: false,
            after: None,
            session_state: false,
            close_at_end: false,
        }
    }

    fn conn(&mut self) -> Result<&mut <E::DB as sqlx::Database>::Connection, Error> {
        match self.held.as_mut() {
            Some((conn, _)) => Ok(&mut **conn),
            None => Err(gone()),
        }
    }

    /// Ends the transaction with `end` (commit or rollback), then undoes
    /// what its begin changed on the connection.
    #[allow(clippy::type_complexity)]
    async fn end(
        &mut self,
        end: for<'c> fn(
            &'c mut <E::DB as sqlx::Database>::Connection,
        ) -> BoxFuture<'c, Result<(), sqlx::Error>>,
    ) -> Result<(), Error> {
        if !self.in_transaction {
            return Err(Error::new(
                iadb::ErrorKind::FailedPrecondition,
                "no transaction is open on this session",
            ));
        }
        if self.cut_off {
            // Ending it here would first wait for the statement (MySQL
            // reads the rest of its result first; SQLite queues behind
            // it). Dropping the session stops it, then rolls back.
            return Err(Error::new(
                iadb::ErrorKind::FailedPrecondition,
                "a statement was cut off part-way; the transaction is rolled back as the \
                 session is dropped",
            ));
        }
        self.busy = true;
        end(self.conn()?).await.map_err(E::map_error)?;
        self.in_transaction = false;
        if let Some(after) = self.after {
            E::run_script(self.conn()?, after)
                .await
                .map_err(E::map_error)?;
            self.after = None;
        }
        if self.session_state {
            let reset = E::reset_session(self.conn()?).await;
            if !matches!(reset, Ok(true)) {
                self.close_at_end = true;
            }
            self.session_state = false;
        }
        self.busy = false;
        Ok(())
    }
}

impl<E: SqlxEngine> Drop for SqlxSession<E> {
    fn drop(&mut self) {
        if self.close_at_end
            && let Some((Held::Pooled(conn), _)) = self.held.as_mut()
        {
            conn.close_on_drop();
            return;
        }
        if !(self.in_transaction || self.busy || self.after.is_some() || self.session_state) {
            return;
        }
        let Some((Held::Pooled(mut conn), mut guard)) = self.held.take() else {
            // A detached connection closes as it drops, which rolls back.
            return;
        };
        if !self.busy {
            // No statement runs: nothing for the guard to stop.
            E::disarm(&mut guard);
        }
        let (in_transaction, after, session_state) =
            (self.in_transaction, self.after, self.session_state);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            conn.close_on_drop();
            return;
        };
        runtime.spawn(async move {
            let settled = tokio::time::timeout(CLEANUP_BUDGET, async {
                E::settle(&mut conn, guard, in_transaction, after).await?;
                if session_state {
                    E::reset_session(&mut conn).await
                } else {
                    Ok(true)
                }
            })
            .await;
            if !matches!(settled, Ok(Ok(true))) {
                if !session_state {
                    tracing::warn!(
                        "an abandoned session could not be rolled back; its connection is closed"
                    );
                }
                conn.close_on_drop();
            }
        });
    }
}

#[async_trait::async_trait]
impl<E: SqlxEngine> Session for SqlxSession<E> {
    fn engine(&self) -> iadb::DatabaseType {
        E::ENGINE
    }

    fn changes_session_state(&mut self) {
        self.session_state = true;
    }

    async fn begin(&mut self, options: TxOptions) -> Result<(), Error> {
        if self.in_transaction {
            return Err(Error::new(
                iadb::ErrorKind::FailedPrecondition,
                "a transaction is already open on this session",
            ));
        }
        options.check_immediate(E::ENGINE)?;
        let plan = E::begin_plan(&options)?;
        // From here on the connection's state is the transaction's.
        self.busy = true;
        self.after = plan.after;
        if let Some(before) = plan.before {
            E::run_script(self.conn()?, &before)
                .await
                .map_err(E::map_error)?;
        }
        self.in_transaction = true;
        <E::DB as sqlx::Database>::TransactionManager::begin(self.conn()?, Some(plan.begin.into()))
            .await
            .map_err(E::map_error)?;
        self.busy = false;
        Ok(())
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        sink: &mut dyn RowSink,
    ) -> Result<ExecuteOutcome, Error> {
        self.busy = true;
        self.cut_off = true;
        let result = match self.held.as_mut() {
            Some((conn, _)) => query_into::<E>(conn, sql, params, sink).await,
            None => Err(gone()),
        };
        self.busy = false;
        self.cut_off = false;
        result
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome, Error> {
        self.busy = true;
        self.cut_off = true;
        let result = match self.held.as_mut() {
            Some((conn, _)) => E::execute_on(conn, sql, params).await,
            None => Err(gone()),
        };
        self.busy = false;
        self.cut_off = false;
        result
    }

    async fn execute_many(
        &mut self,
        sql: &str,
        param_sets: &[Vec<Value>],
    ) -> Result<ExecuteOutcome, Error> {
        self.busy = true;
        self.cut_off = true;
        let result = match self.held.as_mut() {
            Some((conn, _)) => E::execute_many_on(conn, sql, param_sets).await,
            None => Err(gone()),
        };
        self.busy = false;
        self.cut_off = false;
        result
    }

    async fn run_script(&mut self, sql: &str) -> Result<(), Error> {
        self.busy = true;
        self.cut_off = true;
        let result = match self.held.as_mut() {
            Some((conn, _)) => E::run_script(conn, sql).await.map_err(E::map_error),
            None => Err(gone()),
        };
        self.busy = false;
        self.cut_off = false;
        result
    }

    async fn commit(&mut self) -> Result<(), Error> {
        self.end(<E::DB as sqlx::Database>::TransactionManager::commit)
            .await
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        self.end(<E::DB as sqlx::Database>::TransactionManager::rollback)
            .await
    }
}
