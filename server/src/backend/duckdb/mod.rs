//! DuckDB through the `duckdb` crate, with the engine bundled into the binary.
//!
//! **Connections.** `connect` opens the database once and keeps that first
//! connection as the *root*: it holds the database open and every other
//! connection is cloned from it (`Connection::try_clone`, a new DuckDB
//! connection to the same database instance). Calls run on a small pool of
//! such clones: at most `max_connections` are checked out at once (a call
//! waits up to `acquire_timeout` for one, then UNAVAILABLE), and a finished
//! call puts its connection back for the next. Because clones share one
//! database, `duckdb:///:memory:` is a single database seen by every call.
//! DuckDB parallelises each query over its own threads; the pool bounds how
//! many statements run at once. `pool_status` counts the clones (the root is
//! not lent out). A pool rather than a fresh clone per call, because creating
//! a DuckDB connection builds a client context each time, which a point
//! select would pay on every call.
//!
//! **Blocking.** Every DuckDB call blocks, so each runs on tokio's blocking
//! threads (`spawn_blocking`), never on the async workers. When the caller
//! goes away while DuckDB is working (a deadline passed, a stream dropped),
//! the statement is interrupted (`duckdb_interrupt`) and that connection is
//! closed rather than reused, so no interrupt can leak into the next call.
//!
//! **Streaming.** `query` executes with DuckDB's streaming API
//! (`Statement::stream_arrow`, i.e. `duckdb_execute_prepared_streaming`) and
//! pulls the result one data chunk (at most 2,048 rows) at a time with
//! `Statement::step`; the crate's `Statement::query` and `query_arrow` would
//! materialise the whole result inside DuckDB first. The columns are read
//! from the executed statement before the first chunk, so an empty result
//! still has them. A blocking thread decodes each row and `blocking_send`s it
//! into a bounded channel: a slow consumer stops the engine (backpressure),
//! and a dropped consumer makes the send fail, which drops the result (ending
//! the query) and gives the connection back. DuckDB's own read-ahead is
//! kept to about one chunk (see [`STREAMING_BUFFER_SIZE`]). A statement that
//! returns no rows of its own (INSERT, UPDATE, DELETE, DDL) gets a one-column
//! `Count` result from DuckDB; `query` turns it into no columns and the rows
//! affected of its end event.
//!
//! **Options.** The URL's query options are DuckDB settings, passed through
//! (`duckdb:///./a.duckdb?threads=4&memory_limit=2GB`); `mode=ro` opens the
//! file read-only. Installing extensions on demand is switched off (a server
//! does not download code while answering a query); extensions already
//! installed on the machine still load when a statement needs them.
//!
//! How DuckDB's types become [`Value`]s, and how parameters bind, is the
//! table in `docs/types/duckdb.md`.

use super::{
    Backend, PoolSettings, check_param_count, check_sql,
    session::{Isolation, RowSink, Session, TxOptions},
};
use crate::{
    migrate::{MigrationSession, StoreDialect},
    placeholders::Dialect,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use duckdb::{
    AccessMode, Config, Connection, InterruptHandle, Statement,
    arrow::{
        array::{Array, AsArray, StructArray},
        datatypes::{
            ArrowDictionaryKeyType, ArrowNativeType, DataType, Date32Type, Decimal32Type,
            Decimal64Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type,
            Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
            IntervalYearMonthType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
            TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
            TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
        },
    },
    core::{LogicalTypeHandle, LogicalTypeId},
    params_from_iter,
    types::{
        Decimal as DuckDecimal, TimeUnit as DuckTimeUnit, ToSql, ToSqlOutput, Value as DuckValue,
        ValueRef,
    },
};
use futures::StreamExt;
use iadb::{
    Column, ConnectionConfig, DatabaseInterface, DatabaseType, Error, ErrorKind, ExecuteOutcome,
    PoolStatus, QueryEvent, QueryStream, Result, Value,
};
use std::{
    any::Any,
    fmt::Write as _,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// Rows buffered between DuckDB and the consumer of one stream. Small: the
/// engine is already one data chunk ahead, and a row may be large.
const ROW_CHANNEL_CAPACITY: usize = 256;

/// DuckDB's own read-ahead for a streaming result (`streaming_buffer_size`,
/// about 1 MB by default, set per connection). iadb's channel is the buffer
/// that matters, so DuckDB keeps about one data chunk ready (it always
/// admits one): memory stays flat across many concurrent streams, a slow
/// reader pauses the engine, and rows computed before an error later in the
/// result reach the reader first (an error discards DuckDB's buffer). A
/// `streaming_buffer_size` URL option overrides it.
const STREAMING_BUFFER_SIZE: &str = "1B";
const STREAMING_BUFFER_OPTION: &str = "streaming_buffer_size";

/// The DuckDB adapter.
pub struct DuckDbBackend {
    path: String,
    memory: bool,
    /// Database settings for `open`.
    options: Vec<(String, String)>,
    /// Run on every new connection (settings DuckDB keeps per connection).
    connection_setup: String,
    settings: PoolSettings,
    pool: RwLock<Option<Arc<ConnectionPool>>>,
}

impl DuckDbBackend {
    /// An adapter for `config` (a `duckdb:` URL); `connect` opens it.
    pub fn new(config: &ConnectionConfig, settings: PoolSettings) -> Result<Self> {
        let path = config
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::invalid_argument("duckdb URL has no path"))?;
        let streaming_buffer = config
            .option(STREAMING_BUFFER_OPTION)
            .unwrap_or(STREAMING_BUFFER_SIZE);
        Ok(Self {
            memory: config.is_memory(),
            path,
            options: config
                .options
                .iter()
                .filter(|(k, _)| k.as_str() != STREAMING_BUFFER_OPTION)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            connection_setup: format!(
                "SET {STREAMING_BUFFER_OPTION} = '{}'",
                streaming_buffer.replace('\'', "''")
            ),
            settings,
            pool: RwLock::new(None),
        })
    }

    fn pool(&self) -> Result<Arc<ConnectionPool>> {
        self.pool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|p| !p.is_closed())
            .ok_or_else(|| Error::unavailable("database is not connected"))
    }

    async fn acquire(&self) -> Result<PooledConnection> {
        self.pool()?.acquire().await
    }
}

/// Opens the database and returns its root connection (blocking: it may
/// create the file or replay DuckDB's write-ahead log).
fn open_database(path: &str, memory: bool, options: &[(String, String)]) -> Result<Connection> {
    if !memory
        && let Some(folder) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::create_dir_all(folder).map_err(|e| {
            Error::unavailable(format!("cannot create folder {}: {e}", folder.display()))
        })?;
    }
    let config_error = |e: duckdb::Error| {
        Error::invalid_argument(format!("bad DuckDB option in the database URL: {e}"))
    };
    let mut config = Config::default()
        .with("autoinstall_known_extensions", "false")
        .and_then(|c| c.with("autoload_known_extensions", "true"))
        .map_err(config_error)?;
    for (key, value) in options {
        config = if key == "mode" {
            let mode = match value.as_str() {
                "ro" | "read_only" => AccessMode::ReadOnly,
                "rw" | "read_write" => AccessMode::ReadWrite,
                other => {
                    return Err(Error::invalid_argument(format!(
                        "duckdb URL option mode={other}: expected ro or rw"
                    )));
                }
            };
            config.access_mode(mode)
        } else {
            config.with(key, value)
        }
        .map_err(config_error)?;
    }
    let opened = if memory {
        Connection::open_in_memory_with_flags(config)
    } else {
        Connection::open_with_flags(path, config)
    };
    opened.map_err(map_duckdb_error)
}

// ---------------------------------------------------------------------------
// The connection pool.

/// Clones of the root connection, lent out one call at a time.
struct ConnectionPool {
    /// Keeps the database open and is the source of new connections.
    root: Mutex<Option<Connection>>,
    idle: Mutex<Vec<Connection>>,
    /// Clones open (lent out or idle).
    open: AtomicU32,
    /// One permit per connection that may be lent out; closed on disconnect.
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit right now.
    waiting: Arc<AtomicU32>,
    max: u32,
    acquire_timeout: Duration,
    /// Run on each new connection.
    connection_setup: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data (a list, a flag set) stays consistent whatever a
    // panicking holder was doing, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnectionPool {
    fn new(root: Connection, settings: PoolSettings, connection_setup: String) -> Self {
        let max = settings.max_connections.max(1);
        Self {
            root: Mutex::new(Some(root)),
            idle: Mutex::new(Vec::new()),
            open: AtomicU32::new(0),
            permits: Arc::new(Semaphore::new(max as usize)),
            waiting: Default::default(),
            max,
            acquire_timeout: settings.acquire_timeout,
            connection_setup,
        }
    }

    fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    async fn acquire(self: &Arc<Self>) -> Result<PooledConnection> {
        let waiting = super::WaitGuard::new(&self.waiting);
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "timed out after {:?} waiting for a free DuckDB connection ({} in use)",
                        self.acquire_timeout, self.max
                    ))
                })?
                .map_err(|_| Error::unavailable("database is not connected"))?;
        drop(waiting);
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                // Connecting to an open database creates a client context
                // and sets a setting: no I/O, quick enough for the async
                // thread.
                let conn = {
                    let root = lock(&self.root);
                    let root = root
                        .as_ref()
                        .ok_or_else(|| Error::unavailable("database is not connected"))?;
                    root.try_clone().map_err(map_duckdb_error)?
                };
                conn.execute_batch(&self.connection_setup)
                    .map_err(map_duckdb_error)?;
                self.open.fetch_add(1, Ordering::Relaxed);
                conn
            }
        };
        Ok(PooledConnection {
            conn: Some(conn),
            pool: self.clone(),
            reuse: true,
            _permit: permit,
        })
    }

    /// Stops lending and hands back every connection it holds, for the
    /// caller to close off the async threads (closing the last connection of
    /// a file database checkpoints it).
    fn close(&self) -> Vec<Connection> {
        self.permits.close();
        let mut all: Vec<Connection> = lock(&self.idle).drain(..).collect();
        self.open
            .fetch_sub(u32::try_from(all.len()).unwrap_or(0), Ordering::Relaxed);
        all.extend(lock(&self.root).take());
        all
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            size: self.open.load(Ordering::Relaxed),
            idle: u32::try_from(lock(&self.idle).len()).unwrap_or(u32::MAX),
            max: self.max,
            waiting: self.waiting.load(Ordering::Relaxed),
            rolled_back: 0,
        }
    }
}

/// A connection lent to one call; back to the pool when dropped, or closed
/// when `reuse` was turned off (its statement was interrupted or panicked).
struct PooledConnection {
    conn: Option<Connection>,
    pool: Arc<ConnectionPool>,
    reuse: bool,
    // Released after `drop` has put the connection back.
    _permit: OwnedSemaphorePermit,
}

impl PooledConnection {
    fn get(&self) -> Result<&Connection> {
        self.conn
            .as_ref()
            .ok_or_else(|| Error::internal("DuckDB connection used after release"))
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.reuse && !self.pool.is_closed() {
            lock(&self.pool.idle).push(conn);
        } else {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            drop(conn);
        }
    }
}

// ---------------------------------------------------------------------------
// Interrupting a statement whose caller left.

/// Where a call's blocking worker is, shared with the caller's side so that
/// the caller leaving interrupts DuckDB only while it is working for it.
///
/// One interrupt is not always enough: DuckDB clears a pending interrupt
/// when a statement starts its transaction, and notices one only at its
/// checkpoints (between optimizer passes, between data chunks), so a caller
/// that leaves while a statement is being prepared or bound (a statement
/// with 20,000 parameters spends seconds there) would be forgotten. So once
/// the caller has left, the interrupt is sent again every
/// [`REINTERRUPT_EVERY`] until the worker is out of DuckDB, and binding
/// stops between parameters.
struct CallState {
    interrupt: Arc<InterruptHandle>,
    phase: Mutex<Phase>,
    /// The caller left (also in `phase`; here for a lock-free check per
    /// parameter).
    abandoned: AtomicBool,
}

/// How often an abandoned call's statement is interrupted again.
const REINTERRUPT_EVERY: Duration = Duration::from_millis(20);
/// For how long at most (a statement DuckDB cannot stop is left to finish).
const REINTERRUPT_FOR: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Phase {
    in_engine: bool,
    abandoned: bool,
    interrupted: bool,
    finished: bool,
}

impl CallState {
    fn new(conn: &Connection) -> Arc<Self> {
        Arc::new(Self {
            interrupt: conn.interrupt_handle(),
            phase: Mutex::new(Phase::default()),
            abandoned: AtomicBool::new(false),
        })
    }

    /// Whether the caller has left.
    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The worker is about to call DuckDB; false if the caller already left.
    fn enter(&self) -> bool {
        let mut phase = lock(&self.phase);
        phase.in_engine = !phase.abandoned;
        phase.in_engine
    }

    /// The worker is back from DuckDB (to decode or hand over rows).
    fn leave(&self) {
        lock(&self.phase).in_engine = false;
    }

    /// The worker is done with the connection; whether it may be reused.
    fn finish(&self) -> bool {
        let mut phase = lock(&self.phase);
        phase.finished = true;
        phase.in_engine = false;
        !phase.interrupted
    }

    /// The caller left: interrupt the statement if DuckDB is running it;
    /// whether the worker is still busy with the call.
    fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::Relaxed);
        let mut phase = lock(&self.phase);
        phase.abandoned = true;
        self.interrupt_if_in_engine(&mut phase);
        !phase.finished
    }

    /// Interrupts the statement again if DuckDB is still running it; false
    /// once the worker is done with the call.
    fn reinterrupt(&self) -> bool {
        let mut phase = lock(&self.phase);
        self.interrupt_if_in_engine(&mut phase);
        !phase.finished
    }

    fn interrupt_if_in_engine(&self, phase: &mut Phase) {
        if phase.in_engine && !phase.finished {
            // Under the lock, so the worker cannot finish and lend the
            // connection to another call in between.
            self.interrupt.interrupt();
            phase.interrupted = true;
        }
    }
}

/// Held by the caller's side of a call; dropping it before the call is over
/// abandons it, and keeps interrupting the statement until DuckDB lets go.
struct AbandonOnDrop(Arc<CallState>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.0.abandon() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let call = self.0.clone();
        runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(REINTERRUPT_EVERY);
            while started.elapsed() < REINTERRUPT_FOR {
                tick.tick().await;
                if !call.reinterrupt() {
                    break;
                }
            }
        });
    }
}

fn panic_error(panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::internal(format!("the DuckDB worker panicked: {what}"))
}

/// Runs `work` on a blocking thread with the connection, interrupting it if
/// the returned future is dropped before it finishes.
async fn run_call<T, F>(conn: PooledConnection, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &CallState) -> Result<T> + Send + 'static,
{
    let call = CallState::new(conn.get()?);
    let guard = AbandonOnDrop(call.clone());
    let worker = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        if !call.enter() {
            conn.reuse = call.finish();
            return Err(Error::new(ErrorKind::Cancelled, "the call was abandoned"));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| conn.get().and_then(|c| work(c, &call))));
        conn.reuse = call.finish() && outcome.is_ok();
        drop(conn);
        outcome.unwrap_or_else(|panic| Err(panic_error(panic)))
    });
    let result = worker
        .await
        .map_err(|e| Error::internal(format!("the DuckDB worker failed: {e}")))?;
    drop(guard);
    result
}

// ---------------------------------------------------------------------------
// Errors.

/// Maps a DuckDB error to an iadb error. DuckDB's message starts with the
/// kind of its exception ("Parser Error: ...", "Constraint Error: ..."),
/// which decides the code; the message is kept whole and the kind becomes
/// the error code.
fn map_duckdb_error(e: duckdb::Error) -> Error {
    let mapped = match &e {
        duckdb::Error::DuckDBFailure(_, Some(message)) => classify_message(message),
        duckdb::Error::InvalidParameterCount(given, expected) => Error::invalid_argument(format!(
            "wrong parameter count: the statement has {expected} placeholder(s), {given} parameter(s) given"
        )),
        duckdb::Error::FromSqlConversionFailure(index, ty, source) => {
            Error::invalid_argument(format!(
                "result column {} has type {ty}, which iadb cannot return ({source}); cast it, e.g. to VARCHAR",
                index.saturating_add(1)
            ))
        }
        duckdb::Error::ToSqlConversionFailure(source) => {
            Error::invalid_argument(format!("cannot bind a parameter: {source}"))
        }
        duckdb::Error::NulError(_) => {
            Error::invalid_argument("the SQL text contains a NUL character")
        }
        duckdb::Error::InvalidPath(path) => {
            Error::invalid_argument(format!("invalid database path {}", path.display()))
        }
        other => Error::internal(format!("DuckDB: {other}")),
    };
    mapped.with_source(e)
}

fn classify_message(message: &str) -> Error {
    let first_line = message.lines().next().unwrap_or_default();
    let exception = first_line
        .split_once(" Error:")
        .map(|(kind, _)| kind.trim())
        .unwrap_or("");
    let kind = match exception {
        "Constraint" => {
            let lower = first_line.to_lowercase();
            if lower.contains("duplicate key")
                || lower.contains("unique constraint")
                || lower.contains("primary key or unique")
                || lower.contains("contains duplicates")
            {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::FailedPrecondition
            }
        }
        "Dependency" | "Sequence" | "Missing Extension" | "Extension Autoloading" => {
            ErrorKind::FailedPrecondition
        }
        // A write inside a read-only transaction: retrying cannot help.
        "TransactionContext" if first_line.contains("read-only mode") => {
            ErrorKind::PermissionDenied
        }
        "TransactionContext" | "Transaction" => ErrorKind::Aborted,
        "IO" | "HTTP" | "Connection" | "Resource In Use" => ErrorKind::Unavailable,
        "Out of Memory" => ErrorKind::ResourceExhausted,
        "Permission" => ErrorKind::PermissionDenied,
        "INTERRUPT" => ErrorKind::Cancelled,
        "FATAL" | "INTERNAL" | "Data Corruption" => ErrorKind::Internal,
        // Parser, Binder, Catalog, Conversion, Out of Range, Invalid Input,
        // Not implemented, ...: the statement or its values are wrong.
        _ => ErrorKind::InvalidArgument,
    };
    let error = Error::new(kind, message);
    if exception.is_empty() {
        error
    } else {
        error.with_code(exception.to_uppercase().replace(' ', "_"))
    }
}

/// Prefixes an error with the parameter set it happened in.
fn in_set(index: usize, e: Error) -> Error {
    e.in_context(format_args!("parameter set {index}"))
}

// ---------------------------------------------------------------------------
// Parameters.

/// A parameter as DuckDB binds it (see the table in docs/types/duckdb.md),
/// with the call it is bound for: binding stops between parameters once
/// that call's caller has left.
struct Param<'a> {
    value: &'a Value,
    call: Option<&'a CallState>,
}

/// `params` for DuckDB to bind, for `call` (if any).
fn bind_params<'a>(params: &'a [Value], call: Option<&'a CallState>) -> impl duckdb::Params + 'a {
    params_from_iter(params.iter().map(move |value| Param { value, call }))
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        let bad = |what: String| duckdb::Error::ToSqlConversionFailure(what.into());
        if self.call.is_some_and(CallState::is_abandoned) {
            return Err(bad("the call was abandoned".into()));
        }
        let nanos = match self.value {
            Value::Time(t) => t.nanosecond(),
            Value::DateTime(t) => t.nanosecond(),
            Value::TimestampTz(t) => t.nanosecond(),
            _ => 0,
        };
        if nanos >= 1_000_000_000 {
            // chrono's leap second: DuckDB has none and would store the
            // next second (`24:00:00` for a time) instead.
            return Err(bad(
                "a leap second (second 60) cannot be stored by DuckDB, which would turn it into the next second"
                    .into(),
            ));
        }
        Ok(match self.value {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Boolean(*b)),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::BigInt(*n)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Double(*f)),
            // JSON binds as text: DuckDB casts it where a JSON column or
            // parameter is expected.
            Value::Text(s) | Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            // Exact DECIMAL(38, scale); digits DuckDB's DECIMAL cannot hold
            // (or an exponent) go as text, for DuckDB to cast where needed.
            Value::Decimal(s) => match parse_decimal(s) {
                Some(d) => ToSqlOutput::Borrowed(ValueRef::Decimal(d)),
                None => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            },
            Value::Date(d) => {
                let days = d.signed_duration_since(unix_epoch_date()).num_days();
                let days = i32::try_from(days)
                    .map_err(|_| bad(format!("date {d} is out of DuckDB's range")))?;
                ToSqlOutput::Borrowed(ValueRef::Date32(days))
            }
            Value::Time(t) => {
                let micros = i64::from(t.num_seconds_from_midnight()) * 1_000_000
                    + i64::from(t.nanosecond() / 1_000);
                ToSqlOutput::Borrowed(ValueRef::Time64(DuckTimeUnit::Microsecond, micros))
            }
            Value::DateTime(t) => ToSqlOutput::Borrowed(ValueRef::Timestamp(
                DuckTimeUnit::Microsecond,
                t.and_utc().timestamp_micros(),
            )),
            // The driver binds timestamps without a zone only; as text with
            // an explicit UTC offset the instant survives whatever TimeZone
            // setting the session has.
            Value::TimestampTz(t) => ToSqlOutput::Owned(DuckValue::Text(
                t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            )),
        })
    }
}

/// Plain decimal digits (`-123.4500`) as a DuckDB DECIMAL(38, scale), if they fit.
fn parse_decimal(s: &str) -> Option<DuckDecimal> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !all_digits(frac_part) || int_part.len() + frac_part.len() == 0 {
        return None;
    }
    let int_part = int_part.trim_start_matches('0');
    let width = int_part.len() + frac_part.len();
    if width > usize::from(DuckDecimal::MAX_WIDTH) {
        return None;
    }
    let unscaled: i128 = if width == 0 {
        0
    } else {
        format!("{int_part}{frac_part}").parse().ok()?
    };
    let scale = u8::try_from(frac_part.len()).ok()?;
    DuckDecimal::new(
        DuckDecimal::MAX_WIDTH,
        scale,
        if negative { -unscaled } else { unscaled },
    )
    .ok()
}

fn unix_epoch_date() -> NaiveDate {
    DateTime::<Utc>::UNIX_EPOCH.date_naive()
}

// ---------------------------------------------------------------------------
// Result columns: their DuckDB types, and how their values become `Value`s.

/// A DuckDB type, as far as decoding needs it.
#[derive(Debug)]
struct TypeDesc {
    id: LogicalTypeId,
    raw_id: u32,
    alias: Option<String>,
    decimal: (u8, u8),
    /// Struct and union members by name; the element of a list or array;
    /// key and value of a map.
    children: Vec<(String, TypeDesc)>,
}

/// DuckDB's C API id of TIMESTAMP_TZ_NS, newer than the crate's enum.
const RAW_TIMESTAMP_TZ_NS: u32 = 42;

/// The deepest a result column's type may nest LIST, ARRAY, STRUCT, MAP and
/// UNION types (`INTEGER[]` is one level, `INTEGER[][]` two). Describing
/// and decoding a type walks it one level per call, so a deeper column is
/// refused with INVALID_ARGUMENT, before the statement runs, rather than
/// let that walk (or the driver's) exhaust the thread's stack.
const MAX_TYPE_DEPTH: usize = 64;

/// How many levels of LIST, ARRAY, STRUCT, MAP and UNION `t` nests (0 for a
/// plain type), walked without recursion; the count stops just past
/// [`MAX_TYPE_DEPTH`].
fn nesting_depth(t: LogicalTypeHandle) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(t, 0usize)];
    while let Some((t, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if deepest > MAX_TYPE_DEPTH {
            break;
        }
        if matches!(
            t.id(),
            LogicalTypeId::List
                | LogicalTypeId::Array
                | LogicalTypeId::Map
                | LogicalTypeId::Struct
                | LogicalTypeId::Union
        ) {
            for i in 0..t.num_children() {
                pending.push((t.child(i), depth + 1));
            }
        }
    }
    deepest
}

fn too_deep(column: &str) -> Error {
    Error::invalid_argument(format!(
        "{column} nests LIST, ARRAY, STRUCT, MAP or UNION types more than {MAX_TYPE_DEPTH} levels deep, which iadb does not return; cast it in the query (e.g. to VARCHAR) or return its parts"
    ))
}

/// Refuses a prepared statement, before it runs, if a column of its result
/// nests deeper than [`MAX_TYPE_DEPTH`] (the name of a column is known only
/// once it ran, so the column is named by position).
fn check_result_depth(stmt: &Statement<'_>) -> Result<()> {
    for i in 0..stmt.column_count() {
        if nesting_depth(stmt.column_logical_type(i)) > MAX_TYPE_DEPTH {
            return Err(too_deep(&format!("result column {}", i + 1)));
        }
    }
    Ok(())
}

/// Prepares `sql` (running every statement of a script but the last) and
/// checks the result's columns before anything else walks their types.
fn prepare_checked<'c>(conn: &'c Connection, sql: &str) -> Result<Statement<'c>> {
    let stmt = conn.prepare(sql).map_err(map_duckdb_error)?;
    check_result_depth(&stmt)?;
    Ok(stmt)
}

impl TypeDesc {
    fn of(t: &LogicalTypeHandle) -> Self {
        let id = t.id();
        let children = match id {
            LogicalTypeId::Struct | LogicalTypeId::Union => (0..t.num_children())
                .map(|i| (t.child_name(i), Self::of(&t.child(i))))
                .collect(),
            LogicalTypeId::List | LogicalTypeId::Array | LogicalTypeId::Map => (0..t
                .num_children())
                .map(|i| (String::new(), Self::of(&t.child(i))))
                .collect(),
            _ => Vec::new(),
        };
        let decimal = if id == LogicalTypeId::Decimal {
            (t.decimal_width(), t.decimal_scale())
        } else {
            (0, 0)
        };
        Self {
            id,
            raw_id: t.raw_id(),
            alias: t.get_alias().filter(|a| !a.is_empty()),
            decimal,
            children,
        }
    }

    fn child(&self, index: usize) -> Option<&TypeDesc> {
        self.children.get(index).map(|(_, t)| t)
    }

    fn is_json(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("JSON"))
    }

    /// The type's SQL name, as DuckDB spells it (`DECIMAL(38,9)`,
    /// `INTEGER[]`, `STRUCT(a INTEGER)`); `arrow` supplies an ARRAY's size.
    fn sql_name(&self, arrow: &DataType) -> String {
        if let Some(alias) = &self.alias {
            return alias.clone();
        }
        let child_arrow = |i: usize| arrow_child(arrow, i).unwrap_or(DataType::Null);
        match self.id {
            LogicalTypeId::Boolean => "BOOLEAN".into(),
            LogicalTypeId::Tinyint => "TINYINT".into(),
            LogicalTypeId::Smallint => "SMALLINT".into(),
            LogicalTypeId::Integer | LogicalTypeId::IntegerLiteral => "INTEGER".into(),
            LogicalTypeId::Bigint => "BIGINT".into(),
            LogicalTypeId::Hugeint => "HUGEINT".into(),
            LogicalTypeId::UTinyint => "UTINYINT".into(),
            LogicalTypeId::USmallint => "USMALLINT".into(),
            LogicalTypeId::UInteger => "UINTEGER".into(),
            LogicalTypeId::UBigint => "UBIGINT".into(),
            LogicalTypeId::UHugeint => "UHUGEINT".into(),
            LogicalTypeId::Float => "FLOAT".into(),
            LogicalTypeId::Double => "DOUBLE".into(),
            LogicalTypeId::Decimal => format!("DECIMAL({},{})", self.decimal.0, self.decimal.1),
            LogicalTypeId::Varchar | LogicalTypeId::StringLiteral => "VARCHAR".into(),
            LogicalTypeId::Blob => "BLOB".into(),
            LogicalTypeId::Bit => "BIT".into(),
            LogicalTypeId::Bignum => "BIGNUM".into(),
            LogicalTypeId::Uuid => "UUID".into(),
            LogicalTypeId::Date => "DATE".into(),
            LogicalTypeId::Time => "TIME".into(),
            LogicalTypeId::TimeNs => "TIME_NS".into(),
            LogicalTypeId::TimeTZ => "TIME WITH TIME ZONE".into(),
            LogicalTypeId::Timestamp => "TIMESTAMP".into(),
            LogicalTypeId::TimestampS => "TIMESTAMP_S".into(),
            LogicalTypeId::TimestampMs => "TIMESTAMP_MS".into(),
            LogicalTypeId::TimestampNs => "TIMESTAMP_NS".into(),
            LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE".into(),
            LogicalTypeId::Interval => "INTERVAL".into(),
            LogicalTypeId::Enum => "ENUM".into(),
            LogicalTypeId::Geometry => "GEOMETRY".into(),
            LogicalTypeId::Variant => "VARIANT".into(),
            LogicalTypeId::SqlNull => "NULL".into(),
            LogicalTypeId::List => match self.child(0) {
                Some(c) => format!("{}[]", c.sql_name(&child_arrow(0))),
                None => "LIST".into(),
            },
            LogicalTypeId::Array => {
                let size = match arrow {
                    DataType::FixedSizeList(_, n) => n.to_string(),
                    _ => String::new(),
                };
                match self.child(0) {
                    Some(c) => format!("{}[{size}]", c.sql_name(&child_arrow(0))),
                    None => "ARRAY".into(),
                }
            }
            LogicalTypeId::Map => {
                let entry = child_arrow(0);
                match (self.child(0), self.child(1)) {
                    (Some(k), Some(v)) => format!(
                        "MAP({}, {})",
                        k.sql_name(&arrow_child(&entry, 0).unwrap_or(DataType::Null)),
                        v.sql_name(&arrow_child(&entry, 1).unwrap_or(DataType::Null))
                    ),
                    _ => "MAP".into(),
                }
            }
            LogicalTypeId::Struct | LogicalTypeId::Union => {
                let members = self
                    .children
                    .iter()
                    .enumerate()
                    .map(|(i, (name, t))| {
                        format!("{} {}", sql_member_name(name), t.sql_name(&child_arrow(i)))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let word = if self.id == LogicalTypeId::Struct {
                    "STRUCT"
                } else {
                    "UNION"
                };
                format!("{word}({members})")
            }
            _ if self.raw_id == RAW_TIMESTAMP_TZ_NS => "TIMESTAMP_NS WITH TIME ZONE".into(),
            _ => format!("DuckDB type #{}", self.raw_id),
        }
    }

    /// Why iadb cannot return this type, if it cannot.
    fn unsupported(&self) -> Option<&'static str> {
        match self.id {
            LogicalTypeId::TimeTZ => Some("the DuckDB driver drops its UTC offset"),
            LogicalTypeId::Variant => Some("the DuckDB driver cannot read it"),
            _ => self.children.iter().find_map(|(_, c)| c.unsupported()),
        }
    }
}

fn sql_member_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if plain {
        name.to_owned()
    } else {
        iadb::quote_identifier(name)
    }
}

/// The arrow type of child `index` (list element, struct member, map entry).
fn arrow_child(arrow: &DataType, index: usize) -> Option<DataType> {
    match arrow {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => (index == 0).then(|| f.data_type().clone()),
        DataType::Struct(fields) => fields.get(index).map(|f| f.data_type().clone()),
        DataType::Union(fields, _) => fields.iter().nth(index).map(|(_, f)| f.data_type().clone()),
        _ => None,
    }
}

/// Whether the decoder below can read this arrow layout.
fn arrow_decodable(arrow: &DataType) -> bool {
    use DataType as D;
    match arrow {
        D::Null
        | D::Boolean
        | D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::UInt8
        | D::UInt16
        | D::UInt32
        | D::UInt64
        | D::Float32
        | D::Float64
        | D::Decimal32(..)
        | D::Decimal64(..)
        | D::Decimal128(..)
        | D::Utf8
        | D::LargeUtf8
        | D::Utf8View
        | D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::FixedSizeBinary(_)
        | D::Date32
        | D::Time64(_)
        | D::Timestamp(..)
        | D::Interval(_) => true,
        D::Dictionary(key, value) => {
            matches!(**key, D::UInt8 | D::UInt16 | D::UInt32)
                && matches!(**value, D::Utf8 | D::LargeUtf8)
        }
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::Map(f, _) => {
            arrow_decodable(f.data_type())
        }
        D::Struct(fields) => fields.iter().all(|f| arrow_decodable(f.data_type())),
        D::Union(fields, _) => fields.iter().all(|(_, f)| arrow_decodable(f.data_type())),
        _ => false,
    }
}

/// The columns of an executed statement, and how to decode each.
struct ResultLayout {
    columns: Arc<[Column]>,
    types: Vec<TypeDesc>,
}

impl ResultLayout {
    fn of(stmt: &Statement<'_>) -> Result<Self> {
        let count = stmt.column_count();
        let mut columns = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        for i in 0..count {
            let name = stmt.column_name(i).map_err(map_duckdb_error)?.clone();
            // Checked before the statement ran too; its types may have
            // changed if it was bound again against a changed schema.
            if nesting_depth(stmt.column_logical_type(i)) > MAX_TYPE_DEPTH {
                return Err(too_deep(&format!("column `{name}`")));
            }
            let arrow = stmt.column_type(i);
            let desc = TypeDesc::of(&stmt.column_logical_type(i));
            let sql_type = desc.sql_name(&arrow);
            let why = desc.unsupported().or_else(|| {
                (!arrow_decodable(&arrow)).then_some("the DuckDB driver has no decoder for it")
            });
            if let Some(why) = why {
                return Err(Error::invalid_argument(format!(
                    "column `{name}` has type {sql_type}, which iadb cannot return: {why}; cast it in the query (e.g. CAST({name} AS VARCHAR))"
                )));
            }
            columns.push(Column::new(name, sql_type));
            types.push(desc);
        }
        Ok(Self {
            columns: columns.into(),
            types,
        })
    }

    /// Whether this is the `Count` result DuckDB gives a statement that
    /// returns no rows of its own (INSERT, UPDATE, DELETE without RETURNING
    /// report the rows they changed in it; DDL an empty one): what it
    /// changed, not rows of a query.
    fn is_changed_rows(&self, sql: &str) -> bool {
        self.columns.len() == 1
            && self.columns[0].name == "Count"
            && self.types[0].id == LogicalTypeId::Bigint
            && !returns_rows(sql)
    }

    /// Row `row` of `chunk`, the `number`th of the result (from 1, which an
    /// error names, with the column).
    fn decode_row(&self, chunk: &StructArray, row: usize, number: u64) -> Result<Vec<Value>> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, desc)| {
                decode_value(chunk.column(i).as_ref(), row, desc).map_err(|why| {
                    let column = &self.columns[i];
                    Error::invalid_argument(format!(
                        "row {number}: column `{}` ({}): {why}; cast it in the query (e.g. CAST({} AS VARCHAR))",
                        column.name, column.declared_type, column.name
                    ))
                })
            })
            .collect()
    }
}

/// Whether `sql` is a statement whose result is rows of its own (a query,
/// or a change with RETURNING).
fn returns_rows(sql: &str) -> bool {
    const QUERY_WORDS: &[&str] = &[
        "SELECT",
        "WITH",
        "VALUES",
        "FROM",
        "TABLE",
        "SHOW",
        "DESCRIBE",
        "DESC",
        "SUMMARIZE",
        "PRAGMA",
        "CALL",
        "EXPLAIN",
        "PIVOT",
        "UNPIVOT",
    ];
    let keyword = leading_keyword(sql);
    keyword.is_empty()
        || QUERY_WORDS.iter().any(|w| w.eq_ignore_ascii_case(keyword))
        || sql.to_ascii_uppercase().contains("RETURNING")
}

/// The first word of `sql`, after whitespace and comments.
fn leading_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Why a value could not be decoded (the caller names the column).
type DecodeResult<T> = std::result::Result<T, String>;

fn layout_error(arrow: &DataType) -> String {
    format!("unexpected arrow layout {arrow}")
}

fn is_null_at(array: &dyn Array, row: usize) -> bool {
    match array.data_type() {
        DataType::Null => true,
        // A union has no validity of its own: it is NULL when its member is.
        DataType::Union(..) => array.as_union_opt().is_some_and(|union| {
            let member = union.child(union.type_id(row));
            is_null_at(member.as_ref(), union.value_offset(row))
        }),
        _ => array.is_null(row),
    }
}

/// One top-level value of a result column.
fn decode_value(array: &dyn Array, row: usize, desc: &TypeDesc) -> DecodeResult<Value> {
    use DataType as D;
    if is_null_at(array, row) {
        return Ok(Value::Null);
    }
    let arrow = array.data_type();
    let wrong = || layout_error(arrow);
    Ok(match arrow {
        D::Boolean => Value::Bool(array.as_boolean_opt().ok_or_else(wrong)?.value(row)),
        D::Int8 => Value::Int(primitive::<Int8Type>(array, row)?.into()),
        D::Int16 => Value::Int(primitive::<Int16Type>(array, row)?.into()),
        D::Int32 => Value::Int(primitive::<Int32Type>(array, row)?.into()),
        D::Int64 => Value::Int(primitive::<Int64Type>(array, row)?),
        D::UInt8 => Value::Int(primitive::<UInt8Type>(array, row)?.into()),
        D::UInt16 => Value::Int(primitive::<UInt16Type>(array, row)?.into()),
        D::UInt32 => Value::Int(primitive::<UInt32Type>(array, row)?.into()),
        // UBIGINT's range goes past int64: exact digits, whatever the value.
        D::UInt64 => Value::Decimal(primitive::<UInt64Type>(array, row)?.to_string()),
        D::Float32 => Value::Float(primitive::<Float32Type>(array, row)?.into()),
        D::Float64 => Value::Float(primitive::<Float64Type>(array, row)?),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) => {
            Value::Decimal(decimal_text(array, row, desc)?)
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => {
            let text = string_at(array, row)?.to_owned();
            if desc.is_json() {
                Value::Json(text)
            } else {
                Value::Text(text)
            }
        }
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            let bytes = bytes_at(array, row)?;
            match desc.id {
                LogicalTypeId::Bit => Value::Text(bit_text(bytes)?),
                LogicalTypeId::Bignum => Value::Decimal(bignum_text(bytes)?),
                LogicalTypeId::Uuid => Value::Text(uuid_text(bytes)?),
                _ => Value::Bytes(bytes.to_vec()),
            }
        }
        D::Date32 => match date_at(primitive::<Date32Type>(array, row)?)? {
            Ok(d) => Value::Date(d),
            Err(special) => Value::Text(special),
        },
        D::Time64(unit) => match time_at(array, row, unit)? {
            Ok(t) => Value::Time(t),
            Err(text) => Value::Text(text),
        },
        D::Timestamp(unit, tz) => match timestamp_at(array, row, unit)? {
            Ok(t) if tz.is_some() => Value::TimestampTz(t),
            Ok(t) => Value::DateTime(t.naive_utc()),
            Err(special) => Value::Text(special),
        },
        D::Interval(unit) => Value::Text(interval_at(array, row, unit)?),
        D::Dictionary(..) => Value::Text(enum_at(array, row)?.to_owned()),
        D::List(_)
        | D::LargeList(_)
        | D::FixedSizeList(..)
        | D::Struct(_)
        | D::Map(..)
        | D::Union(..) => {
            let mut json = String::new();
            write_json(&mut json, array, row, Some(desc))?;
            Value::Json(json)
        }
        _ => return Err(wrong()),
    })
}

fn primitive<T: duckdb::arrow::datatypes::ArrowPrimitiveType>(
    array: &dyn Array,
    row: usize,
) -> DecodeResult<T::Native> {
    array
        .as_primitive_opt::<T>()
        .map(|a| a.value(row))
        .ok_or_else(|| layout_error(array.data_type()))
}

fn string_at(array: &dyn Array, row: usize) -> DecodeResult<&str> {
    let text = match array.data_type() {
        DataType::Utf8 => array.as_string_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeUtf8 => array.as_string_opt::<i64>().map(|a| a.value(row)),
        DataType::Utf8View => array.as_string_view_opt().map(|a| a.value(row)),
        _ => None,
    };
    text.ok_or_else(|| layout_error(array.data_type()))
}

fn bytes_at(array: &dyn Array, row: usize) -> DecodeResult<&[u8]> {
    let bytes = match array.data_type() {
        DataType::Binary => array.as_binary_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeBinary => array.as_binary_opt::<i64>().map(|a| a.value(row)),
        DataType::BinaryView => array.as_binary_view_opt().map(|a| a.value(row)),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary_opt().map(|a| a.value(row)),
        _ => None,
    };
    bytes.ok_or_else(|| layout_error(array.data_type()))
}

/// Exact decimal digits; HUGEINT, UHUGEINT and DECIMAL(38,0) share arrow's
/// Decimal128(38, 0), and the DuckDB type says which is unsigned.
fn decimal_text(array: &dyn Array, row: usize, desc: &TypeDesc) -> DecodeResult<String> {
    let (unscaled, scale) = match array.data_type() {
        DataType::Decimal32(_, s) => (i128::from(primitive::<Decimal32Type>(array, row)?), *s),
        DataType::Decimal64(_, s) => (i128::from(primitive::<Decimal64Type>(array, row)?), *s),
        DataType::Decimal128(_, s) => (primitive::<Decimal128Type>(array, row)?, *s),
        other => return Err(layout_error(other)),
    };
    if desc.id == LogicalTypeId::UHugeint {
        // The bits are an unsigned 128-bit integer.
        return Ok((unscaled as u128).to_string());
    }
    let scale = u32::try_from(scale).map_err(|_| format!("negative decimal scale {scale}"))?;
    Ok(scaled_digits(unscaled, scale))
}

fn scaled_digits(unscaled: i128, scale: u32) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{sign}{int_part}.{frac_part}")
}

/// DuckDB's BIT: a padding count, then the bits, most significant first.
fn bit_text(bytes: &[u8]) -> DecodeResult<String> {
    let (&padding, data) = bytes
        .split_first()
        .ok_or_else(|| "empty BIT value".to_owned())?;
    let mut out = String::with_capacity(data.len() * 8);
    for (i, byte) in data.iter().enumerate() {
        let skip = if i == 0 {
            usize::from(padding.min(8))
        } else {
            0
        };
        for bit in skip..8 {
            out.push(if byte & (0x80 >> bit) != 0 { '1' } else { '0' });
        }
    }
    Ok(out)
}

/// DuckDB's BIGNUM: a 3-byte header (sign in its top bit, then the byte
/// count), then the magnitude big-endian; a negative number has every bit
/// inverted.
fn bignum_text(bytes: &[u8]) -> DecodeResult<String> {
    if bytes.len() < 3 {
        return Err("short BIGNUM value".into());
    }
    let negative = bytes[0] & 0x80 == 0;
    let mut magnitude: Vec<u8> = bytes[3..]
        .iter()
        .map(|b| if negative { !b } else { *b })
        .collect();
    // Repeated division by 10^9 of the big-endian base-256 number.
    let mut groups = Vec::new();
    while magnitude.iter().any(|b| *b != 0) {
        let mut remainder: u64 = 0;
        for byte in magnitude.iter_mut() {
            let current = (remainder << 8) | u64::from(*byte);
            *byte = (current / 1_000_000_000) as u8;
            remainder = current % 1_000_000_000;
        }
        groups.push(remainder);
    }
    let mut out = String::from(if negative && !groups.is_empty() {
        "-"
    } else {
        ""
    });
    match groups.split_last() {
        None => out.push('0'),
        Some((most, rest)) => {
            let _ = write!(out, "{most}");
            for group in rest.iter().rev() {
                let _ = write!(out, "{group:09}");
            }
        }
    }
    Ok(out)
}

fn uuid_text(bytes: &[u8]) -> DecodeResult<String> {
    if bytes.len() != 16 {
        return Err(format!("UUID of {} bytes", bytes.len()));
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A DATE; DuckDB's `infinity` and `-infinity` as their text. A date
/// chrono cannot hold (past the year 262142) is an error.
fn date_at(days: i32) -> DecodeResult<std::result::Result<NaiveDate, String>> {
    match days {
        i32::MAX => Ok(Err("infinity".into())),
        d if d == -i32::MAX => Ok(Err("-infinity".into())),
        d => chrono::Duration::try_days(i64::from(d))
            .and_then(|days| unix_epoch_date().checked_add_signed(days))
            .map(Ok)
            .ok_or_else(|| {
                format!("the date {d} days from 1970-01-01 is outside the years iadb carries (-262143 to 262142)")
            }),
    }
}

/// A TIME; `24:00:00`, which DuckDB allows and chrono does not, as text.
fn time_at(
    array: &dyn Array,
    row: usize,
    unit: &TimeUnit,
) -> DecodeResult<std::result::Result<NaiveTime, String>> {
    let nanos: i64 = match unit {
        TimeUnit::Microsecond => primitive::<Time64MicrosecondType>(array, row)?
            .checked_mul(1_000)
            .ok_or_else(|| "TIME out of range".to_owned())?,
        TimeUnit::Nanosecond => primitive::<Time64NanosecondType>(array, row)?,
        _ => return Err(layout_error(array.data_type())),
    };
    let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).map_err(|_| "TIME out of range")?;
    let frac = u32::try_from(nanos.rem_euclid(1_000_000_000)).map_err(|_| "TIME out of range")?;
    Ok(NaiveTime::from_num_seconds_from_midnight_opt(secs, frac)
        .ok_or_else(|| format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)))
}

/// A TIMESTAMP as a UTC instant; `infinity` and `-infinity` as text.
fn timestamp_at(
    array: &dyn Array,
    row: usize,
    unit: &TimeUnit,
) -> DecodeResult<std::result::Result<DateTime<Utc>, String>> {
    let raw = match unit {
        TimeUnit::Second => primitive::<TimestampSecondType>(array, row)?,
        TimeUnit::Millisecond => primitive::<TimestampMillisecondType>(array, row)?,
        TimeUnit::Microsecond => primitive::<TimestampMicrosecondType>(array, row)?,
        TimeUnit::Nanosecond => primitive::<TimestampNanosecondType>(array, row)?,
    };
    if raw == i64::MAX {
        return Ok(Err("infinity".into()));
    }
    if raw == -i64::MAX {
        return Ok(Err("-infinity".into()));
    }
    let instant = match unit {
        TimeUnit::Second => DateTime::from_timestamp(raw, 0),
        TimeUnit::Millisecond => DateTime::from_timestamp_millis(raw),
        TimeUnit::Microsecond => DateTime::from_timestamp_micros(raw),
        TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(raw)),
    };
    instant
        .map(Ok)
        .ok_or_else(|| format!("timestamp {raw} ({unit:?}) is out of range"))
}

/// An INTERVAL in DuckDB's own text form (`1 year 2 months 3 days
/// 04:05:06.5`), which DuckDB reads back.
fn interval_at(array: &dyn Array, row: usize, unit: &IntervalUnit) -> DecodeResult<String> {
    let (months, days, nanos) = match unit {
        IntervalUnit::MonthDayNano => {
            let v = primitive::<IntervalMonthDayNanoType>(array, row)?;
            (v.months, v.days, v.nanoseconds)
        }
        IntervalUnit::DayTime => {
            let v = primitive::<IntervalDayTimeType>(array, row)?;
            (0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        IntervalUnit::YearMonth => (primitive::<IntervalYearMonthType>(array, row)?, 0, 0),
    };
    Ok(format_interval(months, days, nanos / 1_000))
}

fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut unit = |value: i32, name: &str| {
        if value != 0 {
            let plural = if value == 1 || value == -1 { "" } else { "s" };
            parts.push(format!("{value} {name}{plural}"));
        }
    };
    unit(months / 12, "year");
    unit(months % 12, "month");
    unit(days, "day");
    if micros != 0 {
        let sign = if micros < 0 { "-" } else { "" };
        let total = micros.unsigned_abs();
        let (hours, minutes, seconds, fraction) = (
            total / 3_600_000_000,
            total / 60_000_000 % 60,
            total / 1_000_000 % 60,
            total % 1_000_000,
        );
        let mut time = format!("{sign}{hours:02}:{minutes:02}:{seconds:02}");
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            let _ = write!(time, ".{}", digits.trim_end_matches('0'));
        }
        parts.push(time);
    }
    if parts.is_empty() {
        "00:00:00".into()
    } else {
        parts.join(" ")
    }
}

/// An ENUM's label (DuckDB exports an enum as a dictionary).
fn enum_at(array: &dyn Array, row: usize) -> DecodeResult<&str> {
    fn label<K: ArrowDictionaryKeyType>(array: &dyn Array, row: usize) -> Option<&str> {
        let dict = array.as_dictionary_opt::<K>()?;
        let key = dict.keys().value(row).as_usize();
        let values = dict.values();
        match values.data_type() {
            DataType::Utf8 => {
                let labels = values.as_string_opt::<i32>()?;
                (key < labels.len()).then(|| labels.value(key))
            }
            DataType::LargeUtf8 => {
                let labels = values.as_string_opt::<i64>()?;
                (key < labels.len()).then(|| labels.value(key))
            }
            _ => None,
        }
    }
    let found = match array.data_type() {
        DataType::Dictionary(key, _) => match **key {
            DataType::UInt8 => label::<UInt8Type>(array, row),
            DataType::UInt16 => label::<UInt16Type>(array, row),
            DataType::UInt32 => label::<UInt32Type>(array, row),
            _ => None,
        },
        _ => None,
    };
    found.ok_or_else(|| layout_error(array.data_type()))
}

// ---------------------------------------------------------------------------
// LIST, STRUCT, MAP, ARRAY and UNION values as JSON text.

/// Writes one value as JSON. Numbers (decimals and 128-bit integers too)
/// keep their exact digits; NaN and the infinities become strings; dates,
/// times, intervals and UUIDs are strings in DuckDB's text form; bytes are a
/// string with `\xHH` escapes (DuckDB's BLOB text); a JSON member is embedded
/// as a document; a map is an object keyed by its keys' text.
fn write_json(
    out: &mut String,
    array: &dyn Array,
    row: usize,
    desc: Option<&TypeDesc>,
) -> DecodeResult<()> {
    use DataType as D;
    if is_null_at(array, row) {
        out.push_str("null");
        return Ok(());
    }
    let arrow = array.data_type();
    let id = desc.map(|d| d.id);
    let child = |i: usize| desc.and_then(|d| d.child(i));
    match arrow {
        D::Boolean => {
            let b = array
                .as_boolean_opt()
                .ok_or_else(|| layout_error(arrow))?
                .value(row);
            out.push_str(if b { "true" } else { "false" });
        }
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
            let Value::Int(n) = decode_value(array, row, &plain_desc())? else {
                return Err(layout_error(arrow));
            };
            let _ = write!(out, "{n}");
        }
        D::UInt64 => {
            let _ = write!(out, "{}", primitive::<UInt64Type>(array, row)?);
        }
        D::Float32 => write_json_double(out, primitive::<Float32Type>(array, row)?.into()),
        D::Float64 => write_json_double(out, primitive::<Float64Type>(array, row)?),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) => {
            let fallback = plain_desc();
            out.push_str(&decimal_text(array, row, desc.unwrap_or(&fallback))?);
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => {
            let text = string_at(array, row)?;
            if desc.is_some_and(TypeDesc::is_json) {
                out.push_str(text);
            } else {
                write_json_string(out, text);
            }
        }
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            let bytes = bytes_at(array, row)?;
            match id {
                Some(LogicalTypeId::Bit) => write_json_string(out, &bit_text(bytes)?),
                Some(LogicalTypeId::Bignum) => out.push_str(&bignum_text(bytes)?),
                Some(LogicalTypeId::Uuid) => write_json_string(out, &uuid_text(bytes)?),
                _ => write_json_string(out, &blob_text(bytes)),
            }
        }
        D::Date32 => {
            let text = match date_at(primitive::<Date32Type>(array, row)?)? {
                Ok(d) => d.format("%Y-%m-%d").to_string(),
                Err(special) => special,
            };
            write_json_string(out, &text);
        }
        D::Time64(unit) => {
            let text = match time_at(array, row, unit)? {
                Ok(t) => format!("{}{}", t.format("%H:%M:%S"), fraction_text(t.nanosecond())),
                Err(text) => text,
            };
            write_json_string(out, &text);
        }
        D::Timestamp(unit, tz) => {
            let text = match timestamp_at(array, row, unit)? {
                Ok(t) => format!(
                    "{}{}{}",
                    t.format("%Y-%m-%d %H:%M:%S"),
                    fraction_text(t.nanosecond()),
                    if tz.is_some() { "+00" } else { "" }
                ),
                Err(special) => special,
            };
            write_json_string(out, &text);
        }
        D::Interval(unit) => write_json_string(out, &interval_at(array, row, unit)?),
        D::Dictionary(..) => write_json_string(out, enum_at(array, row)?),
        D::List(_) | D::LargeList(_) | D::FixedSizeList(..) => {
            let items = match arrow {
                D::List(_) => array.as_list_opt::<i32>().map(|a| a.value(row)),
                D::LargeList(_) => array.as_list_opt::<i64>().map(|a| a.value(row)),
                _ => array.as_fixed_size_list_opt().map(|a| a.value(row)),
            }
            .ok_or_else(|| layout_error(arrow))?;
            out.push('[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, items.as_ref(), i, child(0))?;
            }
            out.push(']');
        }
        D::Struct(fields) => {
            let members = array.as_struct_opt().ok_or_else(|| layout_error(arrow))?;
            out.push('{');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, field.name());
                out.push(':');
                write_json(out, members.column(i).as_ref(), row, child(i))?;
            }
            out.push('}');
        }
        D::Map(..) => {
            let map = array.as_map_opt().ok_or_else(|| layout_error(arrow))?;
            let entries = map.value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                let key = match keys.data_type() {
                    D::Utf8 | D::LargeUtf8 | D::Utf8View => string_at(keys.as_ref(), i)?.to_owned(),
                    _ => {
                        let mut text = String::new();
                        write_json(&mut text, keys.as_ref(), i, child(0))?;
                        // A key that is itself a JSON string: its content.
                        match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                            Some(inner) => inner.to_owned(),
                            None => text,
                        }
                    }
                };
                write_json_string(out, &key);
                out.push(':');
                write_json(out, values.as_ref(), i, child(1))?;
            }
            out.push('}');
        }
        D::Union(fields, _) => {
            let union = array.as_union_opt().ok_or_else(|| layout_error(arrow))?;
            let type_id = union.type_id(row);
            let member = fields
                .iter()
                .position(|(id, _)| id == type_id)
                .ok_or_else(|| layout_error(arrow))?;
            let value = union.child(type_id);
            write_json(out, value.as_ref(), union.value_offset(row), child(member))?;
        }
        _ => return Err(layout_error(arrow)),
    }
    Ok(())
}

/// Fractional seconds as DuckDB prints them: none for whole seconds, else
/// up to nine digits without trailing zeros (`.5`, `.123456`).
fn fraction_text(nanos: u32) -> String {
    if nanos == 0 {
        return String::new();
    }
    let digits = format!("{:09}", nanos.min(999_999_999));
    format!(".{}", digits.trim_end_matches('0'))
}

/// A type description with no DuckDB refinement (plain arrow decoding).
fn plain_desc() -> TypeDesc {
    TypeDesc {
        id: LogicalTypeId::Invalid,
        raw_id: 0,
        alias: None,
        decimal: (0, 0),
        children: Vec::new(),
    }
}

fn write_json_double(out: &mut String, x: f64) {
    match serde_json::Number::from_f64(x) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None if x.is_nan() => out.push_str("\"NaN\""),
        None if x > 0.0 => out.push_str("\"Infinity\""),
        None => out.push_str("\"-Infinity\""),
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes as DuckDB prints a BLOB: printable ASCII as is, the rest `\xHH`.
fn blob_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Streaming a statement.

/// How a streamed statement ended on the worker side.
enum Flow {
    /// Every row was sent; this is what the statement changed.
    Done(ExecuteOutcome),
    /// The consumer left; nothing more to send.
    Stopped,
}

/// The blocking half of `query`: runs the statement, sends the columns,
/// then every row, then the end (after the connection is back in the pool).
fn stream_statement(
    mut conn: PooledConnection,
    call: Arc<CallState>,
    sql: String,
    params: Vec<Value>,
    header: oneshot::Sender<Result<Arc<[Column]>>>,
    rows: mpsc::Sender<Result<QueryEvent>>,
) {
    let mut header = Some(header);
    let run = catch_unwind(AssertUnwindSafe(|| {
        produce_rows(&conn, &call, &sql, &params, &mut header, &rows)
    }));
    let panicked = run.is_err();
    let result = run.unwrap_or_else(|panic| Err(panic_error(panic)));
    conn.reuse = call.finish() && !panicked;
    // Back in the pool before the consumer hears of the end.
    drop(conn);
    match (result, header.take()) {
        (Err(e), Some(header)) => {
            let _ = header.send(Err(e));
        }
        (Err(e), None) => {
            let _ = rows.blocking_send(Err(e));
        }
        (Ok(Flow::Done(outcome)), None) => {
            let _ = rows.blocking_send(Ok(QueryEvent::Done(outcome)));
        }
        (Ok(Flow::Done(_)), Some(header)) => {
            let _ = header.send(Err(Error::internal(
                "DuckDB result ended before its columns",
            )));
        }
        (Ok(Flow::Stopped), _) => {}
    }
}

fn produce_rows(
    conn: &PooledConnection,
    call: &CallState,
    sql: &str,
    params: &[Value],
    header: &mut Option<oneshot::Sender<Result<Arc<[Column]>>>>,
    rows: &mpsc::Sender<Result<QueryEvent>>,
) -> Result<Flow> {
    let conn = conn.get()?;
    if !call.enter() {
        return Ok(Flow::Stopped);
    }
    let mut stmt = prepare_checked(conn, sql)?;
    // Executes in streaming mode; the returned iterator is not used: rows
    // are pulled chunk by chunk with `step` below.
    let executed = stmt
        .stream_arrow(bind_params(params, Some(call)))
        .map_err(map_duckdb_error)?;
    drop(executed);
    call.leave();
    let layout = ResultLayout::of(&stmt)?;
    let changed_rows = layout.is_changed_rows(sql);
    let columns: Arc<[Column]> = if changed_rows {
        Arc::from(Vec::new())
    } else {
        layout.columns.clone()
    };
    if let Some(header) = header.take()
        && header.send(Ok(columns)).is_err()
    {
        return Ok(Flow::Stopped);
    }
    let mut outcome = ExecuteOutcome::default();
    let mut number = 0u64;
    loop {
        if !call.enter() {
            return Ok(Flow::Stopped);
        }
        let chunk = stmt.step().map_err(map_duckdb_error);
        call.leave();
        let Some(chunk) = chunk? else {
            break;
        };
        if changed_rows {
            for row in 0..chunk.len() {
                number += 1;
                if let Value::Int(n) = layout.decode_row(&chunk, row, number)?[0] {
                    outcome.rows_affected += u64::try_from(n).unwrap_or(0);
                }
            }
            continue;
        }
        for row in 0..chunk.len() {
            number += 1;
            let values = layout.decode_row(&chunk, row, number)?;
            if rows.blocking_send(Ok(QueryEvent::Row(values))).is_err() {
                return Ok(Flow::Stopped);
            }
        }
    }
    Ok(Flow::Done(outcome))
}

/// Runs `sql` once per parameter set inside the caller's transaction; the
/// error of a failing set names its index.
fn apply_sets(
    conn: &Connection,
    call: &CallState,
    sql: &str,
    param_sets: &[Vec<Value>],
) -> Result<u64> {
    let mut rows_affected = 0u64;
    if param_sets.is_empty() {
        return Ok(rows_affected);
    }
    let mut stmt = prepare_checked(conn, sql).map_err(|e| in_set(0, e))?;
    for (index, params) in param_sets.iter().enumerate() {
        let changed = stmt
            .execute(bind_params(params, Some(call)))
            .map_err(|e| in_set(index, map_duckdb_error(e)))?;
        rows_affected += changed as u64;
    }
    Ok(rows_affected)
}

/// Every row of a statement, decoded (for the migration runner, whose
/// queries return a handful of rows).
fn fetch_rows(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
    let mut stmt = prepare_checked(conn, sql)?;
    let executed = stmt
        .stream_arrow(bind_params(params, None))
        .map_err(map_duckdb_error)?;
    drop(executed);
    let layout = ResultLayout::of(&stmt)?;
    let mut rows = Vec::new();
    while let Some(chunk) = stmt.step().map_err(map_duckdb_error)? {
        for row in 0..chunk.len() {
            let number = u64::try_from(rows.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            rows.push(layout.decode_row(&chunk, row, number)?);
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Migrations.

/// One pooled connection held for a whole migration run. Each step runs on a
/// blocking thread, taking the connection there and back.
pub struct DuckDbSession {
    conn: Option<PooledConnection>,
}

impl DuckDbSession {
    async fn run<T, F>(&mut self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| Error::unavailable("the migration session lost its connection"))?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = catch_unwind(AssertUnwindSafe(|| conn.get().and_then(work)))
                .unwrap_or_else(|panic| Err(panic_error(panic)));
            (conn, result)
        })
        .await
        .map_err(|e| Error::internal(format!("the DuckDB worker failed: {e}")))?;
        self.conn = Some(conn);
        result
    }
}

#[async_trait]
impl MigrationSession for DuckDbSession {
    fn dialect(&self) -> StoreDialect {
        StoreDialect::DuckDb
    }

    async fn run_script(&mut self, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.run(move |conn| conn.execute_batch(&sql).map_err(map_duckdb_error))
            .await
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        self.run(move |conn| {
            let mut stmt = prepare_checked(conn, &sql)?;
            let changed = stmt
                .execute(bind_params(&params, None))
                .map_err(map_duckdb_error)?;
            Ok(changed as u64)
        })
        .await
    }

    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        self.run(move |conn| fetch_rows(conn, &sql, &params)).await
    }
}

impl DuckDbBackend {
    /// A dedicated connection for one migration run (the migration lock is
    /// held per session, so the run keeps one connection throughout). What
    /// `Backend::migration_session` returns for DuckDB.
    pub async fn open_migration_session(&self) -> Result<Box<dyn MigrationSession>> {
        let conn = self.acquire().await?;
        Ok(Box::new(DuckDbSession { conn: Some(conn) }))
    }
}

// ---------------------------------------------------------------------------
// Transactions.

/// One pooled connection held for a transaction or a batch. Each statement
/// runs on a blocking thread, taking the connection there and back, and is
/// interrupted like a pooled call's when the caller leaves. While a
/// transaction is open the connection is marked not to be reused, so a
/// session dropped before its end closes it (which rolls the transaction
/// back) instead of lending it to another caller.
pub struct DuckDbTxSession {
    conn: Option<PooledConnection>,
    in_transaction: bool,
    /// A statement was interrupted or panicked: the connection is closed at
    /// the end, whatever happens.
    broken: bool,
}

impl DuckDbTxSession {
    fn taken(&mut self) -> Result<PooledConnection> {
        self.conn
            .take()
            .ok_or_else(|| Error::unavailable("the session lost its connection"))
    }

    /// Gives the connection back to the session, with whether the work on it
    /// ended cleanly.
    fn put_back(&mut self, mut conn: PooledConnection, clean: bool) {
        if !clean {
            self.broken = true;
        }
        conn.reuse = !self.broken && !self.in_transaction;
        self.conn = Some(conn);
    }

    async fn run<T, F>(&mut self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &CallState) -> Result<T> + Send + 'static,
    {
        let conn = self.taken()?;
        let call = CallState::new(conn.get()?);
        let guard = AbandonOnDrop(call.clone());
        let worker = tokio::task::spawn_blocking(move || {
            if !call.enter() {
                call.finish();
                return (
                    conn,
                    false,
                    Err(Error::new(ErrorKind::Cancelled, "the call was abandoned")),
                );
            }
            let outcome =
                catch_unwind(AssertUnwindSafe(|| conn.get().and_then(|c| work(c, &call))));
            let clean = call.finish() && outcome.is_ok();
            (
                conn,
                clean,
                outcome.unwrap_or_else(|panic| Err(panic_error(panic))),
            )
        });
        let (conn, clean, result) = worker
            .await
            .map_err(|e| Error::internal(format!("the DuckDB worker failed: {e}")))?;
        drop(guard);
        self.put_back(conn, clean);
        result
    }

    /// Ends the transaction with `sql` (COMMIT or ROLLBACK).
    async fn end(&mut self, sql: &'static str) -> Result<()> {
        if !self.in_transaction {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                "no transaction is open on this session",
            ));
        }
        self.run(move |conn, _| conn.execute_batch(sql).map_err(map_duckdb_error))
            .await?;
        self.in_transaction = false;
        if let Some(conn) = self.conn.as_mut() {
            conn.reuse = !self.broken;
        }
        Ok(())
    }
}

#[async_trait]
impl Session for DuckDbTxSession {
    fn engine(&self) -> DatabaseType {
        DatabaseType::Duckdb
    }

    async fn begin(&mut self, options: TxOptions) -> Result<()> {
        options.check_immediate(DatabaseType::Duckdb)?;
        match options.isolation {
            Isolation::Default | Isolation::Snapshot => {}
            other => {
                return Err(other.refused(
                    DatabaseType::Duckdb,
                    "SNAPSHOT (its only level: snapshot isolation with optimistic concurrency)",
                ));
            }
        }
        if self.in_transaction {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                "a transaction is already open on this session",
            ));
        }
        let sql = if options.read_only {
            "BEGIN TRANSACTION READ ONLY"
        } else {
            "BEGIN TRANSACTION"
        };
        self.in_transaction = true;
        if let Some(conn) = self.conn.as_mut() {
            conn.reuse = false;
        }
        self.run(move |conn, _| conn.execute_batch(sql).map_err(map_duckdb_error))
            .await
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        sink: &mut dyn RowSink,
    ) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let conn = self.taken()?;
        let call = CallState::new(conn.get()?);
        let guard = AbandonOnDrop(call.clone());
        let (header_tx, header_rx) = oneshot::channel();
        let (rows_tx, mut rows_rx) = mpsc::channel(ROW_CHANNEL_CAPACITY);
        let (sql, params) = (sql.to_owned(), params.to_vec());
        let worker = tokio::task::spawn_blocking(move || {
            let mut header = Some(header_tx);
            let run = catch_unwind(AssertUnwindSafe(|| {
                produce_rows(&conn, &call, &sql, &params, &mut header, &rows_tx)
            }));
            let clean = call.finish() && run.is_ok();
            (
                conn,
                clean,
                run.unwrap_or_else(|panic| Err(panic_error(panic))),
            )
        });
        // Forward the worker's columns and rows to the sink; a sink that
        // fails (the client left) stops the worker at its next row.
        let mut stopped = None;
        match header_rx.await {
            Ok(Ok(columns)) => stopped = sink.columns(columns).await.err(),
            Ok(Err(e)) => stopped = Some(e),
            // The worker ended before the columns: its result says why.
            Err(_) => {}
        }
        if stopped.is_none() {
            while let Some(event) = rows_rx.recv().await {
                let sent = match event {
                    Ok(QueryEvent::Row(values)) => sink.row(values).await,
                    Ok(QueryEvent::Done(_)) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    stopped = Some(e);
                    break;
                }
            }
        }
        drop(rows_rx);
        let (conn, clean, flow) = worker
            .await
            .map_err(|e| Error::internal(format!("the DuckDB worker failed: {e}")))?;
        drop(guard);
        self.put_back(conn, clean);
        if let Some(e) = stopped {
            return Err(e);
        }
        match flow? {
            Flow::Done(outcome) => Ok(outcome),
            Flow::Stopped => Err(Error::new(
                ErrorKind::Cancelled,
                "the statement was stopped",
            )),
        }
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        self.run(move |conn, call| execute_statement(conn, call, &sql, &params))
            .await
    }

    /// Inside the session's transaction (DuckDB has no savepoints): a
    /// failing set fails the call, and the transaction is then rolled back
    /// whole by its owner.
    async fn execute_many(
        &mut self,
        sql: &str,
        param_sets: &[Vec<Value>],
    ) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        for (index, params) in param_sets.iter().enumerate() {
            check_param_count(sql, Dialect::DuckDb, params.len()).map_err(|e| in_set(index, e))?;
        }
        if !self.in_transaction {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                "execute_many on a DuckDB session needs an open transaction",
            ));
        }
        let (sql, param_sets) = (sql.to_owned(), param_sets.to_vec());
        let rows_affected = self
            .run(move |conn, call| apply_sets(conn, call, &sql, &param_sets))
            .await?;
        Ok(ExecuteOutcome {
            rows_affected,
            last_insert_id: None,
        })
    }

    async fn run_script(&mut self, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.run(move |conn, _| conn.execute_batch(&sql).map_err(map_duckdb_error))
            .await
    }

    async fn commit(&mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }
}

/// One statement (without parameters: a script, whose last statement runs
/// here) and the rows it changed.
fn execute_statement(
    conn: &Connection,
    call: &CallState,
    sql: &str,
    params: &[Value],
) -> Result<ExecuteOutcome> {
    // With no parameters the text may be a script: `prepare` runs every
    // statement but the last, which runs here.
    let mut stmt = prepare_checked(conn, sql)?;
    let changed = stmt
        .execute(bind_params(params, Some(call)))
        .map_err(map_duckdb_error)?;
    Ok(ExecuteOutcome {
        rows_affected: changed as u64,
        last_insert_id: None,
    })
}

// ---------------------------------------------------------------------------
// The adapter.

#[async_trait]
impl DatabaseInterface for DuckDbBackend {
    async fn connect(&self) -> Result<()> {
        if self.pool().is_ok() {
            return Ok(());
        }
        let (path, memory, options) = (self.path.clone(), self.memory, self.options.clone());
        let root = tokio::task::spawn_blocking(move || open_database(&path, memory, &options))
            .await
            .map_err(|e| Error::internal(format!("opening the DuckDB database failed: {e}")))??;
        // Fail `connect`, not the first call, on a bad per-connection setting.
        root.execute_batch(&self.connection_setup).map_err(|e| {
            Error::invalid_argument(format!("bad DuckDB option in the database URL: {e}"))
        })?;
        let pool = Arc::new(ConnectionPool::new(
            root,
            self.settings,
            self.connection_setup.clone(),
        ));
        let previous = self
            .pool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(pool);
        if let Some(previous) = previous {
            let stale = previous.close();
            tokio::task::spawn_blocking(move || drop(stale));
        }
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        let pool = self
            .pool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(pool) = pool {
            let connections = pool.close();
            // Closing the last connection checkpoints a file database.
            tokio::task::spawn_blocking(move || drop(connections))
                .await
                .map_err(|e| Error::internal(format!("closing DuckDB failed: {e}")))?;
        }
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.pool().is_ok()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        self.pool().ok().map(|p| p.status())
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        check_sql(sql)?;
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let conn = self.acquire().await?;
        let call = CallState::new(conn.get()?);
        let guard = AbandonOnDrop(call.clone());
        let (header_tx, header_rx) = oneshot::channel();
        let (rows_tx, rows_rx) = mpsc::channel(ROW_CHANNEL_CAPACITY);
        let (sql, params) = (sql.to_owned(), params.to_vec());
        tokio::task::spawn_blocking(move || {
            stream_statement(conn, call, sql, params, header_tx, rows_tx);
        });
        let columns = header_rx.await.map_err(|_| {
            Error::internal("the DuckDB worker stopped before the result's columns")
        })??;
        // The guard travels with the stream: dropping the stream early
        // interrupts the statement if DuckDB is busy computing it.
        let events = ReceiverStream::new(rows_rx).map(move |event| {
            let _ = &guard;
            event
        });
        Ok(QueryStream {
            columns,
            events: events.boxed(),
        })
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let conn = self.acquire().await?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        run_call(conn, move |conn, call| {
            execute_statement(conn, call, &sql, &params)
        })
        .await
    }

    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        for (index, params) in param_sets.iter().enumerate() {
            check_param_count(sql, Dialect::DuckDb, params.len()).map_err(|e| in_set(index, e))?;
        }
        let conn = self.acquire().await?;
        let (sql, param_sets) = (sql.to_owned(), param_sets.to_vec());
        run_call(conn, move |conn, call| {
            conn.execute_batch("BEGIN TRANSACTION")
                .map_err(map_duckdb_error)?;
            let applied = apply_sets(conn, call, &sql, &param_sets).and_then(|rows_affected| {
                conn.execute_batch("COMMIT").map_err(map_duckdb_error)?;
                Ok(rows_affected)
            });
            match applied {
                Ok(rows_affected) => Ok(ExecuteOutcome {
                    rows_affected,
                    last_insert_id: None,
                }),
                Err(e) => {
                    // Nothing of the batch stays; a failed COMMIT has
                    // already ended the transaction, hence the ignored error.
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        })
        .await
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        // `table`, `schema.table` or `catalog.schema.table`; a two-part name
        // is a schema of this database or an attached database (`temp`
        // included) with its `main` schema. Names match as DuckDB resolves
        // identifiers: without regard to case.
        let parts: Vec<&str> = table.split('.').collect();
        let (filter, params): (&str, Vec<Value>) = match parts.as_slice() {
            [name] => (
                "table_catalog IN (current_database(), 'temp') AND table_schema = current_schema() AND lower(table_name) = lower(?)",
                vec![Value::Text((*name).to_owned())],
            ),
            [schema, name] => (
                "((table_catalog = current_database() AND lower(table_schema) = lower(?)) OR (lower(table_catalog) = lower(?) AND table_schema = 'main')) AND lower(table_name) = lower(?)",
                vec![
                    Value::Text((*schema).to_owned()),
                    Value::Text((*schema).to_owned()),
                    Value::Text((*name).to_owned()),
                ],
            ),
            [catalog, schema, name] => (
                "lower(table_catalog) = lower(?) AND lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
                vec![
                    Value::Text((*catalog).to_owned()),
                    Value::Text((*schema).to_owned()),
                    Value::Text((*name).to_owned()),
                ],
            ),
            _ => {
                return Err(Error::invalid_argument(format!(
                    "table name `{table}` has too many parts (at most catalog.schema.table)"
                )));
            }
        };
        let sql = format!("SELECT 1 FROM information_schema.tables WHERE {filter} LIMIT 1");
        let conn = self.acquire().await?;
        run_call(conn, move |conn, call| {
            let mut stmt = prepare_checked(conn, &sql)?;
            let mut rows = stmt
                .query(bind_params(&params, Some(call)))
                .map_err(map_duckdb_error)?;
            Ok(rows.next().map_err(map_duckdb_error)?.is_some())
        })
        .await
    }
}

#[async_trait]
impl Backend for DuckDbBackend {
    async fn migration_session(&self) -> Result<Box<dyn crate::migrate::MigrationSession>> {
        self.open_migration_session().await
    }

    async fn session(&self) -> Result<Box<dyn Session>> {
        let conn = self.acquire().await?;
        Ok(Box::new(DuckDbTxSession {
            conn: Some(conn),
            in_transaction: false,
            broken: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        let d = parse_decimal("12345678901234567890.123456789").map(|d| d.to_string());
        assert_eq!(d.as_deref(), Some("12345678901234567890.123456789"));
        assert_eq!(
            parse_decimal("-0.50").map(|d| d.to_string()).as_deref(),
            Some("-0.50")
        );
        assert!(parse_decimal("1e5").is_none());
        assert!(parse_decimal("").is_none());
        assert!(parse_decimal(&"9".repeat(39)).is_none());
    }

    #[test]
    fn scaled_digits_keep_leading_zeros() {
        assert_eq!(scaled_digits(5, 3), "0.005");
        assert_eq!(scaled_digits(-12345, 2), "-123.45");
        assert_eq!(scaled_digits(7, 0), "7");
    }

    #[test]
    fn intervals_print_as_duckdb_does() {
        assert_eq!(
            format_interval(14, 3, 4 * 3_600_000_000 + 500_000),
            "1 year 2 months 3 days 04:00:00.5"
        );
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(
            format_interval(-1, -1, -1_000_000),
            "-1 month -1 day -00:00:01"
        );
    }

    #[test]
    fn bits_and_bignums_decode() {
        // BIT '10110': 3 padding bits, then 111 10110 (padding bits are 1s).
        assert_eq!(bit_text(&[3, 0b1111_0110]).as_deref(), Ok("10110"));
        // BIGNUM 258 = 0x0102, positive: header 0x80 0x00 0x02.
        assert_eq!(
            bignum_text(&[0x80, 0x00, 0x02, 0x01, 0x02]).as_deref(),
            Ok("258")
        );
        // Negative: every bit inverted.
        assert_eq!(
            bignum_text(&[!0x80, !0x00, !0x02, !0x01, !0x02]).as_deref(),
            Ok("-258")
        );
    }

    #[test]
    fn errors_map_by_duckdb_exception_kind() {
        let kind = |m: &str| classify_message(m).kind();
        assert_eq!(
            kind("Parser Error: syntax error at or near \"SELEC\""),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind("Constraint Error: Duplicate key \"id: 1\" violates primary key constraint."),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind("Constraint Error: NOT NULL constraint failed: t.name"),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            kind("IO Error: Could not set lock on file"),
            ErrorKind::Unavailable
        );
        assert_eq!(classify_message("Catalog Error: x").code(), Some("CATALOG"));
        assert_eq!(
            kind("TransactionContext Error: Catalog write-write conflict on alter with \"t\""),
            ErrorKind::Aborted
        );
        assert_eq!(
            kind(
                "TransactionContext Error: Cannot write to database \"x\" - transaction is \
                 launched in read-only mode"
            ),
            ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn only_queries_and_returning_return_rows() {
        for sql in [
            "SELECT 1",
            " -- c\n with a AS (SELECT 1) SELECT * FROM a",
            "(SELECT 1)",
            "FROM t",
            "DELETE FROM t RETURNING id",
        ] {
            assert!(returns_rows(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "update t set x = 1",
            "CREATE TABLE t (x INTEGER)",
            "DROP TABLE t",
        ] {
            assert!(!returns_rows(sql), "{sql}");
        }
    }

    #[test]
    fn json_alias_decodes_as_json() {
        use duckdb::arrow::array::StringArray;
        let docs = StringArray::from(vec![Some(r#"{"a":1}"#), None]);
        let mut desc = plain_desc();
        desc.id = LogicalTypeId::Varchar;
        desc.alias = Some("JSON".into());
        assert_eq!(
            decode_value(&docs, 0, &desc),
            Ok(Value::Json(r#"{"a":1}"#.into()))
        );
        assert_eq!(decode_value(&docs, 1, &desc), Ok(Value::Null));
        let mut out = String::new();
        write_json(&mut out, &docs, 0, Some(&desc)).expect("json");
        assert_eq!(out, r#"{"a":1}"#);
        desc.alias = None;
        assert_eq!(
            decode_value(&docs, 0, &desc),
            Ok(Value::Text(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn leading_keyword_skips_comments() {
        assert_eq!(leading_keyword("  -- hi\n /* x */ insert into t"), "insert");
        assert_eq!(leading_keyword("SELECT 1"), "SELECT");
    }
}
