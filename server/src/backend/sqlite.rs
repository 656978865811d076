//! SQLite through sqlx: a pool in WAL mode with a busy timeout and foreign
//! keys on. `:memory:` is one connection that never closes, so every call
//! sees the same database (calls on it run one at a time). Every connection
//! is sandboxed as it opens (`sqlite_sandbox`: no ATTACH, VACUUM INTO,
//! load_extension or schema writes).

use super::{
    sqlite_sandbox::{ALLOW_ATTACH_OPTION, REFUSED_HINT, SqliteSandbox},
    sqlx_common::{PoolSlot, Readied, Step, finds_a_row, prelude::*, step_batch_full},
};
use crate::placeholders::Dialect;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use iadb::{RowBatch, RowWriter};
use sqlx::TransactionManager as _;
use sqlx::{
    Connection, Either,
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous,
    },
};
use std::{path::Path, str::FromStr};

/// The SQLite adapter: the generic sqlx adapter on [`SqliteEngine`].
pub type SqliteBackend = SqlxBackend<SqliteEngine>;

/// SQLite, for the generic sqlx adapter and session: the settings from its
/// URL.
pub struct SqliteEngine {
    options: SqliteConnectOptions,
    memory: bool,
    /// Installed on every connection as it opens.
    sandbox: SqliteSandbox,
}

/// The settings of a `sqlite:` URL.
impl TryFrom<&ConnectionConfig> for SqliteEngine {
    type Error = Error;

    fn try_from(config: &ConnectionConfig) -> Result<Self> {
        let path = config
            .path
            .as_deref()
            .ok_or_else(|| Error::invalid_argument("sqlite URL has no path"))?;
        let memory = config.is_memory();
        let read_only = config.option("mode") == Some("ro");
        let sandbox = SqliteSandbox::from_option(config.option(ALLOW_ATTACH_OPTION))
            .map_err(Error::invalid_argument)?;
        let mut options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(sqlite_error)?
        } else if read_only {
            // Setting the journal mode writes to the file: a read-only
            // database is opened as it is, and never created.
            SqliteConnectOptions::new().filename(path)
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
        options = options
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .read_only(read_only)
            // sqlx would log each statement's text, literals and all; the
            // server logs its fingerprint instead.
            .disable_statement_logging();
        Ok(SqliteEngine {
            options,
            memory,
            sandbox,
        })
    }
}

/// Rolls back the connection's open transaction, keeping sqlx's count of
/// open transactions (which decides between BEGIN and SAVEPOINT later) in
/// step with SQLite's: each level sqlx counts is rolled back through sqlx
/// (after a `BEGIN` where SQLite has already ended the transaction, so that
/// the rollback has one to end), then whatever SQLite still has open.
/// Boxed: an `Executor` call inline in `ready` trips rustc's
/// higher-ranked lifetime check on the async trait methods that await
/// a connection through it.
fn rollback(
    conn: &mut sqlx::SqliteConnection,
) -> futures::future::BoxFuture<'_, std::result::Result<(), sqlx::Error>> {
    Box::pin(async move {
        while conn.is_in_transaction() {
            if is_autocommit(conn).await? {
                conn.execute("BEGIN").await?;
            }
            <sqlx::Sqlite as sqlx::Database>::TransactionManager::rollback(conn).await?;
        }
        if !is_autocommit(conn).await? {
            conn.execute("ROLLBACK").await?;
        }
        Ok(())
    })
}

/// Whether the connection's main database is in memory (it has no file).
fn is_memory(handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>) -> bool {
    // SAFETY: the handle is locked for the duration of the call, so the
    // pointer is a live, open connection that no other thread uses; the
    // name is a NUL-terminated static string, and the returned pointer is
    // only read before the lock is released.
    unsafe {
        let name =
            libsqlite3_sys::sqlite3_db_filename(handle.as_raw_handle().as_ptr(), c"main".as_ptr());
        name.is_null() || *name == 0
    }
}

/// Whether the connection is inside a transaction (not in autocommit mode).
fn in_transaction(handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>) -> bool {
    // SAFETY: the handle is locked for the duration of the call, so the
    // pointer is a live, open connection that no other thread uses; the
    // function only reads the connection's autocommit flag.
    unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) == 0 }
}

/// SQLite virtual machine steps between two looks at the interrupt flag
/// (a few microseconds of work).
const PROGRESS_OPS: i32 = 10_000;

/// Stops the statement on its connection when dropped before [`done`]: the
/// connection's progress handler sees the flag and SQLite interrupts the
/// statement, even inside one long step (an aggregate over a huge join),
/// which dropping the call alone would leave running and holding the
/// connection.
///
/// [`done`]: Interrupt::done
#[derive(Default)]
pub struct Interrupt(Option<Arc<AtomicBool>>);

impl Interrupt {
    /// The statement ended: nothing to stop.
    fn done(&mut self) {
        self.0 = None;
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// SQLite's primary result codes that mean "try again" rather than "your SQL
/// is wrong": SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_IOERR (10),
/// SQLITE_CANTOPEN (14), SQLITE_FULL (13) is an exhausted resource.
fn classify_sqlite(e: &dyn DatabaseError) -> Option<ErrorKind> {
    let code: i64 = e.code()?.parse().ok()?;
    match code & 0xff {
        5 | 6 | 10 | 14 => Some(ErrorKind::Unavailable),
        13 => Some(ErrorKind::ResourceExhausted),
        8 => Some(ErrorKind::PermissionDenied),
        19 => Some(ErrorKind::FailedPrecondition),
        // "table t already exists", "index i already exists", ... (a
        // generic SQLITE_ERROR: only the message tells).
        1 if e.message().ends_with("already exists") => Some(ErrorKind::AlreadyExists),
        _ => None,
    }
}

fn sqlite_error(e: sqlx::Error) -> Error {
    let err = map_sqlx_error(e, classify_sqlite);
    // SQLITE_AUTH: the sandbox's authorizer refused the statement, and
    // SQLite's own message ("not authorized") does not say why. A refused
    // function is a plain SQLITE_ERROR ("not authorized to use function:
    // load_extension"), as is `load_extension` while loading is off.
    let refused = err
        .code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == i64::from(libsqlite3_sys::SQLITE_AUTH))
        || err.message().starts_with("not authorized");
    if !refused {
        return err;
    }
    let code = err.code().map(str::to_owned);
    let mut refusal = Error::new(
        ErrorKind::PermissionDenied,
        format!("{}: {REFUSED_HINT}", err.message()),
    );
    if let Some(code) = code {
        refusal = refusal.with_code(code);
    }
    refusal
}

fn bind_all<'q>(params: &[Value]) -> Result<SqliteArguments<'q>> {
    use sqlx::Arguments;
    let mut args = SqliteArguments::default();
    for (i, p) in params.iter().enumerate() {
        let added = match p {
            Value::Null => args.add(None::<i64>),
            Value::Bool(b) => args.add(*b),
            Value::Int(n) => args.add(*n),
            Value::Float(f) if f.is_nan() => {
                return Err(Error::invalid_argument(format!(
                    "parameter {}: SQLite cannot store NaN (it would become NULL)",
                    i + 1
                )));
            }
            Value::Float(f) => args.add(*f),
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => args.add(s.clone()),
            Value::Bytes(b) => args.add(b.clone()),
            Value::Date(d) => args.add(d.format("%Y-%m-%d").to_string()),
            Value::Time(t) => args.add(t.format("%H:%M:%S%.f").to_string()),
            Value::DateTime(t) => args.add(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
            Value::TimestampTz(t) => args.add(t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
        };
        added.map_err(|e| Error::invalid_argument(format!("parameter {}: {e}", i + 1)))?;
    }
    Ok(args)
}

/// Whether `sql` is a statement that changes rows. SQLite's change count is
/// not reset by other statements: after `CREATE TABLE` it still reports the
/// previous INSERT's count, which must not reach the caller.
fn changes_rows(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let keyword = &rest[..end];
    ["INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"]
        .iter()
        .any(|k| keyword.eq_ignore_ascii_case(k))
}

/// Reads column `i` of `row`: the storage class of the value decides the
/// kind, refined by the column's declared type (BOOLEAN, DATE, TIME,
/// DATETIME, NUMERIC).
fn decode_value(row: &SqliteRow, i: usize, declared: &str) -> Result<Value> {
    let raw = row.try_get_raw(i).map_err(sqlite_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // Borrowed, not copied: this runs for every value of every row.
    let storage = raw.type_info();
    let get_err = |e| sqlite_error(e);
    Ok(match storage.name() {
        "INTEGER" => {
            let n: i64 = row.try_get_unchecked(i).map_err(get_err)?;
            if declared == "BOOLEAN" {
                Value::Bool(n != 0)
            } else {
                Value::Int(n)
            }
        }
        "REAL" => Value::Float(row.try_get_unchecked(i).map_err(get_err)?),
        "BLOB" => Value::Bytes(row.try_get_unchecked(i).map_err(get_err)?),
        _ => {
            let s: String = row.try_get_unchecked(i).map_err(get_err)?;
            typed_text(s, declared)
        }
    })
}

/// Writes column `i` of `row` into a batch's row: as [`decode_value`]
/// reads it, with integers, doubles and plain text (the common kinds)
/// written straight from the row, without a [`Value`] in between.
fn write_value(row: &SqliteRow, i: usize, declared: &str, out: &mut RowWriter<'_>) -> Result<()> {
    let raw = row.try_get_raw(i).map_err(sqlite_error)?;
    if raw.is_null() {
        out.null();
        return Ok(());
    }
    match raw.type_info().name() {
        "INTEGER" if declared != "BOOLEAN" => {
            out.int(row.try_get_unchecked(i).map_err(sqlite_error)?);
        }
        "REAL" => out.double(row.try_get_unchecked(i).map_err(sqlite_error)?),
        "TEXT" if !matches!(declared, "DATE" | "TIME" | "DATETIME" | "NUMERIC") => {
            out.text(row.try_get_unchecked::<&str, _>(i).map_err(sqlite_error)?);
        }
        _ => out.value(&decode_value(row, i, declared)?),
    }
    Ok(())
}

/// A TEXT value in a column declared as a date, time or number becomes that
/// kind when it parses as one; otherwise it stays text.
fn typed_text(s: String, declared: &str) -> Value {
    match declared {
        "DATE" => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .map(Value::Date)
            .unwrap_or(Value::Text(s)),
        "TIME" => NaiveTime::parse_from_str(&s, "%H:%M:%S%.f")
            .map(Value::Time)
            .unwrap_or(Value::Text(s)),
        "DATETIME" => parse_datetime(&s).unwrap_or(Value::Text(s)),
        "NUMERIC" if is_decimal(&s) => Value::Decimal(s),
        _ => Value::Text(s),
    }
}

fn parse_datetime(s: &str) -> Option<Value> {
    // The common form (`YYYY-MM-DD HH:MM:SS[.f]`, what SQLite's own
    // `datetime()` writes) first: it has no zone, so none of the zoned
    // forms below would read it.
    if let Some(t) = iadb::parse_naive_datetime(s) {
        return Some(Value::DateTime(t));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Value::TimestampTz(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.fZ"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(Value::TimestampTz(t.with_timezone(&Utc)));
        }
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(Value::DateTime)
}

fn is_decimal(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

/// The columns of a statement or of one of its rows.
fn columns_of(columns: &[sqlx::sqlite::SqliteColumn]) -> Arc<[Column]> {
    columns
        .iter()
        .map(|c| Column::new(c.name(), declared_type(c)))
        .collect()
}

/// The declared type as sqlx reports it; "NULL" means unknown (an expression).
fn declared_type(column: &sqlx::sqlite::SqliteColumn) -> String {
    super::sqlx_common::declared_type_name(column.type_info())
}

/// Runs one statement (without parameters: a script) on `conn`, once
/// `SqliteEngine::check` has passed it (`SqlxEngine::execute_on`).
async fn execute_checked(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<ExecuteOutcome> {
    let mut done = run_statement(conn, sql, params).await?;
    if let Err(e) = &done
        && may_be_stale_schema(e)
        && crate::placeholders::statement_shape(sql, Dialect::Sqlite).statements == 1
    {
        // Another pooled connection changed the schema and this one's
        // cached copy does not know yet. A statement refused for that has
        // not run: read the schema again and run it once more.
        conn.execute("SELECT count(*) FROM sqlite_master")
            .await
            .map_err(sqlite_error)?;
        done = run_statement(conn, sql, params).await?;
    }
    let done = done.map_err(sqlite_error)?;
    if !changes_rows(sql) {
        return Ok(ExecuteOutcome::default());
    }
    Ok(ExecuteOutcome {
        rows_affected: done.rows_affected(),
        last_insert_id: (done.rows_affected() > 0).then(|| done.last_insert_rowid()),
    })
}

/// One run of `sql`: without parameters as a script, with them prepared.
async fn run_statement(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<std::result::Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>> {
    Ok(if params.is_empty() {
        // No parameters: the text may be a script of several statements.
        conn.execute(sqlx::raw_sql(sql)).await
    } else {
        conn.execute(sqlx::query_with(sql, bind_all(params)?)).await
    })
}

/// Whether SQLite refused a statement for an object that its connection's
/// cached schema may not know yet (created on another connection a moment
/// ago): such a statement fails before it runs, so it can be run again.
fn may_be_stale_schema(e: &sqlx::Error) -> bool {
    const STALE: [&str; 5] = [
        "unable to identify the object to be reindexed",
        "no such table",
        "no such index",
        "no such view",
        "no such trigger",
    ];
    matches!(e, sqlx::Error::Database(db) if STALE.iter().any(|s| db.message().starts_with(s)))
}

/// A statement checked and bound for SQLite.
pub struct SqliteStatement {
    sql: String,
    args: SqliteArguments<'static>,
    /// It changes rows ([`changes_rows`]): only then does its outcome
    /// count them.
    dml: bool,
}

/// Runs `statement` on `conn`. It runs at once and its columns come with
/// its first row: one trip to the connection's worker thread, where a
/// prepare first would take two. Only a result without rows asks for its
/// columns afterwards (from the statement cache, without running it
/// again).
fn steps(conn: &mut sqlx::SqliteConnection, statement: SqliteStatement) -> Steps<'_> {
    let SqliteStatement { sql, args, dml } = statement;
    Box::pin(async_stream::try_stream! {
        let mut outcome = ExecuteOutcome::default();
        let mut declared: Option<Vec<String>> = None;
        let mut batch = RowBatch::new();
        let mut failed = None;
        {
            // Created and started outside the call's span (super::unspanned).
            let mut results = super::unspanned::Unspanned::new(|| {
                conn.fetch_many(sqlx::query_with(&sql, args))
            });
            while let Some(item) = results.next().await {
                match item.map_err(sqlite_error) {
                    Ok(Either::Left(done)) if dml => {
                        outcome.rows_affected += done.rows_affected();
                        if done.rows_affected() > 0 {
                            outcome.last_insert_id = Some(done.last_insert_rowid());
                        }
                    }
                    Ok(Either::Left(_)) => {}
                    Ok(Either::Right(row)) => {
                        if declared.is_none() {
                            let columns = columns_of(row.columns());
                            declared =
                                Some(columns.iter().map(|c| c.declared_type.clone()).collect());
                            yield Step::Columns(columns);
                        }
                        let types = declared.as_deref().unwrap_or_default();
                        let mut writer = batch.row();
                        let written = types
                            .iter()
                            .enumerate()
                            .try_for_each(|(i, ty)| write_value(&row, i, ty, &mut writer));
                        if let Err(e) = written {
                            failed = Some(e);
                            break;
                        }
                        writer.end();
                        if step_batch_full(&batch) {
                            yield Step::Rows(batch.take());
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
        if !batch.is_empty() {
            yield Step::Rows(batch.take());
        }
        if let Some(e) = failed {
            Err(e)?;
        }
        if declared.is_none() {
            let statement = conn.prepare(&sql).await.map_err(sqlite_error)?;
            yield Step::Columns(columns_of(statement.columns()));
        }
        yield Step::Done(outcome);
    })
}

impl SqlxEngine for SqliteEngine {
    type DB = sqlx::Sqlite;
    type Guard = Interrupt;
    type Statement = SqliteStatement;
    const ENGINE: DatabaseType = DatabaseType::Sqlite;

    fn map_error(e: sqlx::Error) -> Error {
        sqlite_error(e)
    }

    fn begin_plan(options: &TxOptions) -> Result<BeginPlan> {
        match options.isolation {
            Isolation::Default | Isolation::Serializable => {}
            other => {
                return Err(other.refused(DatabaseType::Sqlite, "SERIALIZABLE (its only level)"));
            }
        }
        let begin = if options.immediate {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN DEFERRED"
        };
        Ok(if options.read_only {
            // SQLite has no read-only transactions; `query_only` refuses
            // every write on the connection until it is turned off again.
            BeginPlan {
                before: Some("PRAGMA query_only = ON".to_owned()),
                begin: begin.to_owned(),
                after: Some("PRAGMA query_only = OFF"),
            }
        } else {
            BeginPlan {
                before: None,
                begin: begin.to_owned(),
                after: None,
            }
        })
    }

    fn statement(sql: &str, params: &[Value]) -> Result<SqliteStatement> {
        Self::check(sql, params)?;
        Ok(SqliteStatement {
            sql: sql.to_owned(),
            args: bind_all(params)?,
            dml: changes_rows(sql),
        })
    }

    sqlx_statement_paths!(sqlx::SqliteConnection);

    fn table_exists<'a>(
        conn: &'a mut sqlx::SqliteConnection,
        table: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let (sql, name) = super::sqlite_table_lookup(table);
        finds_a_row::<Self>(conn, sql, vec![Value::Text(name.to_owned())])
    }

    fn connect_options(&self) -> SqliteConnectOptions {
        self.options.clone()
    }

    /// No ping before a connection is handed out: an embedded database's
    /// connection does not drop, and the ping is a trip to its worker
    /// thread on every call. Every connection is sandboxed as it opens.
    fn pool_options(
        &self,
        base: PoolOptions<sqlx::Sqlite>,
        _rolled_back: Arc<AtomicU64>,
    ) -> Result<PoolOptions<sqlx::Sqlite>> {
        let folder = self.options.get_filename().parent();
        if let Some(path) = folder.filter(|p| !self.memory && !p.as_os_str().is_empty())
            && !Path::new(path).exists()
        {
            std::fs::create_dir_all(path).map_err(|e| {
                Error::unavailable(format!("cannot create folder {}: {e}", path.display()))
            })?;
        }
        let mut pool_options = base;
        if self.memory {
            // One connection that never closes: an in-memory database lives
            // and dies with its connection.
            pool_options = pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let sandbox = self.sandbox;
        Ok(pool_options.after_connect(move |conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                // SAFETY: the handle is locked for the duration of the
                // call, so the connection is open and used by no other
                // thread.
                unsafe { sandbox.install(handle.as_raw_handle()) }.map_err(|rc| {
                    sqlx::Error::Configuration(
                        format!("SQLite refused iadb's sandbox settings (code {rc})").into(),
                    )
                })
            })
        }))
    }

    /// A fresh progress handler, so that no statement runs under an
    /// earlier call's handler, and the [`Interrupt`] that stops its
    /// statement if the call is dropped (its deadline passed, its client
    /// left) before the statement finished. Every statement on a pooled
    /// connection goes through here.
    fn ready(
        conn: PoolConnection<sqlx::Sqlite>,
        pool: &PoolSlot<sqlx::Sqlite>,
    ) -> BoxFuture<'_, Result<Readied<Self>>> {
        Box::pin(async move {
            let mut conn = conn;
            let stop = Arc::new(AtomicBool::new(false));
            let seen = stop.clone();
            let in_transaction = {
                let mut handle = conn.lock_handle().await.map_err(sqlite_error)?;
                handle.set_progress_handler(PROGRESS_OPS, move || !seen.load(Ordering::Relaxed));
                in_transaction(&mut handle)
            };
            if in_transaction || conn.is_in_transaction() {
                // The second line of defence: pooled calls refuse transaction
                // control, so this is a statement that slipped past (or sqlx's
                // count of open transactions drifted from SQLite's); whatever
                // it left open is not the next caller's.
                tracing::warn!("a pooled SQLite connection was inside a transaction; rolled back");
                pool.count_rollback();
                if let Err(e) = rollback(&mut conn).await {
                    // A connection in a state that cannot be repaired is not
                    // lent again.
                    conn.close_on_drop();
                    return Err(Error::unavailable(format!(
                        "a pooled connection was left inside a transaction and could not be \
                         rolled back, so it was closed ({}); retry the call",
                        sqlite_error(e).message()
                    )));
                }
            }
            Ok((conn, Interrupt(Some(stop))))
        })
    }

    fn disarm(guard: &mut Interrupt) {
        guard.done();
    }

    /// Detached from the pool for a file database (so nothing the run
    /// leaves behind reaches other calls), pooled for `:memory:` (whose one
    /// connection is the database).
    fn migrates_on_pool(&self) -> bool {
        self.memory
    }

    /// SQLite has no reset: the connection is closed, except the one
    /// connection of a `:memory:` database, which is the database itself
    /// (there what a transaction set stays; see docs/transactions.md).
    fn reset_session(
        conn: &mut sqlx::SqliteConnection,
    ) -> BoxFuture<'_, std::result::Result<bool, sqlx::Error>> {
        Box::pin(async move {
            let mut handle = conn.lock_handle().await?;
            Ok(is_memory(&mut handle))
        })
    }

    /// The statement left running is stopped (the guard's flag), and the
    /// connection gets a handler that never stops, so that the rollback
    /// itself runs to its end.
    fn settle<'a>(
        conn: &'a mut sqlx::SqliteConnection,
        guard: Interrupt,
        in_transaction: bool,
        after: Option<&'static str>,
    ) -> BoxFuture<'a, std::result::Result<(), sqlx::Error>> {
        drop(guard);
        Box::pin(async move {
            conn.lock_handle()
                .await?
                .set_progress_handler(PROGRESS_OPS, || true);
            if in_transaction {
                rollback(conn).await?;
            }
            if let Some(after) = after {
                conn.execute(sqlx::raw_sql(after)).await?;
            }
            Ok(())
        })
    }
}

/// Whether the connection is outside any transaction.
async fn is_autocommit(
    conn: &mut sqlx::SqliteConnection,
) -> std::result::Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    Ok(!in_transaction(&mut handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, PoolSettings, session::CollectSink};
    use iadb::{DatabaseInterface, QueryEvent};

    #[test]
    fn only_dml_reports_changes() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "  -- c\n/* d */ update t set x = 1",
            "WITH a AS (SELECT 1) DELETE FROM t",
            "REPLACE INTO t VALUES (1)",
        ] {
            assert!(changes_rows(sql), "{sql}");
        }
        for sql in [
            "CREATE TABLE t (x)",
            "SELECT 1",
            "-- INSERT\nDROP TABLE t",
            "PRAGMA foo",
            "",
        ] {
            assert!(!changes_rows(sql), "{sql}");
        }
    }

    /// The columns come with the first row, or from the statement cache
    /// after a result without rows, even when the statement removed what
    /// it named.
    #[tokio::test]
    async fn query_columns_with_and_without_rows() {
        let config = ConnectionConfig::from_url("sqlite:///:memory:").unwrap();
        let db = SqliteBackend::new(&config, PoolSettings::default()).unwrap();
        db.connect().await.unwrap();
        let names = |columns: &[Column]| -> Vec<String> {
            columns.iter().map(|c| c.name.clone()).collect()
        };
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE)", &[])
            .await
            .unwrap();
        let stream = db
            .query(
                "INSERT INTO t (d) VALUES (?) RETURNING id, d",
                &[Value::Text("2024-02-29".into())],
            )
            .await
            .unwrap();
        assert_eq!(names(&stream.columns), ["id", "d"]);
        assert_eq!(stream.columns[1].declared_type, "DATE");
        let events: Vec<QueryEvent> = stream.events.map(|e| e.unwrap()).collect().await;
        assert_eq!(
            events,
            [
                QueryEvent::Rows(RowBatch::from(vec![vec![
                    Value::Int(1),
                    Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
                ]])),
                QueryEvent::Done(ExecuteOutcome {
                    rows_affected: 1,
                    last_insert_id: Some(1)
                }),
            ]
        );
        let empty = db
            .query("SELECT id, d FROM t WHERE id > 5", &[])
            .await
            .unwrap();
        assert_eq!(names(&empty.columns), ["id", "d"]);
        // `:memory:` is one connection: the unread result gives it back.
        drop(empty);
        let dropped = db.query("DROP TABLE t", &[]).await.unwrap();
        assert!(dropped.columns.is_empty());
        let events: Vec<QueryEvent> = dropped.events.map(|e| e.unwrap()).collect().await;
        assert_eq!(events, [QueryEvent::Done(ExecuteOutcome::default())]);
        let error = db
            .query("SELECT * FROM t", &[])
            .await
            .err()
            .expect("the table is gone");
        assert!(
            error.message().contains("no such table"),
            "{}",
            error.message()
        );
        // An error on the first step is the call's error, not a stream's.
        let error = db
            .query("SELECT abs(-9223372036854775807 - 1)", &[])
            .await
            .err()
            .expect("integer overflow");
        assert!(error.message().contains("overflow"), "{}", error.message());
    }

    #[tokio::test]
    async fn ddl_after_an_insert_reports_no_rows() {
        let config = ConnectionConfig::from_url("sqlite:///:memory:").unwrap();
        let db = SqliteBackend::new(&config, PoolSettings::default()).unwrap();
        db.connect().await.unwrap();
        db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
        let insert = db
            .execute("INSERT INTO t VALUES (1), (2), (3), (4)", &[])
            .await
            .unwrap();
        assert_eq!((insert.rows_affected, insert.last_insert_id), (4, Some(4)));
        let ddl = db.execute("CREATE TABLE u (y INTEGER)", &[]).await.unwrap();
        assert_eq!(ddl, ExecuteOutcome::default());
        let result = db.execute_query("CREATE TABLE v (z INTEGER)", &[]).await;
        assert!(result.success);
        assert_eq!((result.rows_affected, result.last_insert_id), (0, None));
    }

    async fn memory_backend() -> SqliteBackend {
        let config = ConnectionConfig::from_url("sqlite:///:memory:").unwrap();
        let db = SqliteBackend::new(&config, PoolSettings::default()).unwrap();
        db.connect().await.unwrap();
        db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
        db
    }

    async fn count(db: &SqliteBackend) -> Vec<Vec<Value>> {
        db.fetch_all("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.into_values())
            .collect()
    }

    /// A session's transaction: its writes are seen inside it, by no one
    /// else before the commit, and by everyone after; a rollback keeps none.
    #[tokio::test]
    async fn session_commit_and_rollback() {
        let db = memory_backend().await;
        let mut session = db.session().await.unwrap();
        session.begin(TxOptions::default()).await.unwrap();
        let outcome = session
            .execute("INSERT INTO t VALUES (?)", &[Value::Int(1)])
            .await
            .unwrap();
        assert_eq!(outcome.rows_affected, 1);
        let mut sink = CollectSink::new(1 << 20);
        session
            .query("SELECT x FROM t", &[], &mut sink)
            .await
            .unwrap();
        assert_eq!(sink.rows, vec![vec![Value::Int(1)]]);
        assert_eq!(sink.columns[0].name, "x");
        session.commit().await.unwrap();
        drop(session);
        assert_eq!(count(&db).await, vec![vec![Value::Int(1)]]);

        let mut session = db.session().await.unwrap();
        session.begin(TxOptions::default()).await.unwrap();
        session
            .execute_many(
                "INSERT INTO t VALUES (?)",
                &[vec![Value::Int(2)], vec![Value::Int(3)]],
            )
            .await
            .unwrap();
        session.rollback().await.unwrap();
        drop(session);
        assert_eq!(count(&db).await, vec![vec![Value::Int(1)]]);
    }

    /// A session dropped inside its transaction is rolled back before its
    /// connection serves anyone else; on `:memory:` (one connection, which
    /// is the database) the connection and the committed rows survive.
    #[tokio::test]
    async fn a_dropped_session_is_rolled_back_and_its_connection_kept() {
        let db = memory_backend().await;
        db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        let mut session = db.session().await.unwrap();
        session
            .begin(TxOptions {
                read_only: true,
                ..TxOptions::default()
            })
            .await
            .unwrap();
        let refused = session
            .execute("INSERT INTO t VALUES (2)", &[])
            .await
            .expect_err("read-only");
        assert!(
            refused.message().contains("readonly")
                || refused.message().contains("read only")
                || refused.message().contains("query_only"),
            "{}",
            refused.message()
        );
        drop(session);
        // The next call waits for the settled connection (the pool has one).
        assert_eq!(count(&db).await, vec![vec![Value::Int(1)]]);
        // And it is writable again: `query_only` was turned off.
        db.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
        assert_eq!(count(&db).await, vec![vec![Value::Int(2)]]);

        let mut session = db.session().await.unwrap();
        session.begin(TxOptions::default()).await.unwrap();
        session.execute("DELETE FROM t", &[]).await.unwrap();
        drop(session);
        assert_eq!(count(&db).await, vec![vec![Value::Int(2)]]);
        assert_eq!(db.pool_status().map(|p| p.rolled_back), Some(0));
    }

    #[tokio::test]
    async fn sqlite_refuses_isolation_levels_it_does_not_have() {
        let db = memory_backend().await;
        let mut session = db.session().await.unwrap();
        let refused = session
            .begin(TxOptions {
                isolation: Isolation::ReadCommitted,
                ..TxOptions::default()
            })
            .await
            .expect_err("no read committed on SQLite");
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
        assert!(
            refused.message().contains("SERIALIZABLE"),
            "{}",
            refused.message()
        );
        session
            .begin(TxOptions {
                isolation: Isolation::Serializable,
                immediate: true,
                ..TxOptions::default()
            })
            .await
            .unwrap();
        session.commit().await.unwrap();
    }
}
