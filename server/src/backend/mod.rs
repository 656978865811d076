//! Backend adapters: one module per engine, each implementing
//! [`DatabaseInterface`], behind its cargo feature.

use crate::migrate::MigrationSession;
use iadb::{
    ConnectionConfig, DatabaseInterface, DatabaseType, Error, ExecuteOutcome, Result, Value,
};
use session::{CollectSink, RowSink, Session, TxOptions};
use std::{sync::Arc, time::Duration};

#[cfg(feature = "d1")]
pub(crate) mod d1;
#[cfg(feature = "duckdb")]
pub(crate) mod duckdb;
#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub mod session;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_sandbox;
#[cfg(feature = "sqlx-adapter")]
mod sqlx_adapter;
#[cfg(feature = "sqlx-adapter")]
mod sqlx_common;
#[cfg(feature = "sqlx-adapter")]
mod unspanned;

#[cfg(feature = "duckdb")]
pub use self::duckdb::DuckDbBackend;
#[cfg(feature = "d1")]
pub use d1::D1Backend;
#[cfg(feature = "mysql")]
pub use mysql::MySqlBackend;
#[cfg(feature = "postgres")]
pub use postgres::PostgresBackend;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteBackend;

/// Pool settings shared by the engines that pool connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a call waits for a free connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// An adapter as the server holds it: the [`DatabaseInterface`] every
/// caller uses, plus what only the server needs.
#[async_trait::async_trait]
pub trait Backend: DatabaseInterface {
    /// A dedicated connection for one migration run (locks are held per
    /// session, so the run keeps one connection throughout).
    async fn migration_session(&self) -> Result<Box<dyn MigrationSession>>;

    /// A pooled connection held for a series of statements (a transaction
    /// or a batch); it goes back to the pool when the session is dropped.
    async fn session(&self) -> Result<Box<dyn Session>>;

    /// What the engine's user may do beyond its own databases (superuser,
    /// the server host's files or programs), named for the warning logged
    /// when the database connects; empty when nothing, and for embedded
    /// engines (no users) and D1 (an API token's scope is not visible).
    async fn broad_privileges(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Runs `statements` in one transaction, all or nothing, stopping at
    /// the first that fails (its error names its 0-based index). The rows
    /// of all statements together are bounded by `result_limit` bytes.
    async fn batch(
        &self,
        statements: &[(String, Vec<Value>)],
        options: BatchOptions,
    ) -> Result<Vec<StatementResult>> {
        let mut session = self.session().await?;
        if options.session_state {
            session.changes_session_state();
        }
        session
            .begin(TxOptions {
                read_only: options.read_only,
                ..TxOptions::default()
            })
            .await?;
        let mut results = Vec::with_capacity(statements.len());
        let mut budget = options.result_limit;
        for (index, (sql, params)) in statements.iter().enumerate() {
            let mut sink = CollectSink::new(budget);
            let outcome = match session.query(sql, params, &mut sink).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    // A failed rollback closes the connection (the session
                    // is dropped inside its transaction): nothing is kept.
                    let _ = session.rollback().await;
                    return Err(e.in_context(format_args!("statement {index}")));
                }
            };
            budget = budget.saturating_sub(sink.bytes);
            results.push(StatementResult {
                outcome,
                columns: sink.columns,
                rows: sink.rows,
            });
        }
        session.commit().await?;
        Ok(results)
    }

    /// Runs one pooled call in a read-only transaction of its own
    /// (`QueryOptions.read_only`), so that the engine itself refuses a
    /// write, a data-modifying CTE, `nextval` or DDL (PERMISSION_DENIED) and
    /// nothing changes. The transaction is committed when the call
    /// succeeds (there is nothing to keep) and rolled back otherwise.
    async fn read_only_call(&self, call: ReadOnlyCall<'_>) -> Result<ExecuteOutcome> {
        let mut session = self.session().await?;
        session
            .begin(TxOptions {
                read_only: true,
                ..TxOptions::default()
            })
            .await?;
        let outcome = match call {
            ReadOnlyCall::Execute { sql, params } => session.execute(sql, params).await,
            ReadOnlyCall::ExecuteMany { sql, param_sets } => {
                session.execute_many(sql, param_sets).await
            }
            ReadOnlyCall::Query { sql, params, sink } => session.query(sql, params, sink).await,
        };
        match outcome {
            Ok(outcome) => {
                session.commit().await?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = session.rollback().await;
                Err(e)
            }
        }
    }
}

/// A pooled call run read-only ([`Backend::read_only_call`]).
pub enum ReadOnlyCall<'a> {
    /// Execute: one statement (without parameters: a script).
    Execute { sql: &'a str, params: &'a [Value] },
    /// ExecuteMany: one statement, once per parameter set.
    ExecuteMany {
        sql: &'a str,
        param_sets: &'a [Vec<Value>],
    },
    /// FetchAll or FetchOne: one statement's rows, into `sink`.
    Query {
        sql: &'a str,
        params: &'a [Value],
        sink: &'a mut dyn RowSink,
    },
}

impl ReadOnlyCall<'_> {
    /// The statement.
    pub fn sql(&self) -> &str {
        match self {
            ReadOnlyCall::Execute { sql, .. }
            | ReadOnlyCall::ExecuteMany { sql, .. }
            | ReadOnlyCall::Query { sql, .. } => sql,
        }
    }

    /// Runs the call on `backend` ([`Backend::read_only_call`]), with its
    /// parameter values scrubbed out of an engine's error message, as the
    /// registry's gate does for pooled calls.
    pub async fn run_on(self, backend: &dyn Backend) -> Result<ExecuteOutcome> {
        let scrubber = match &self {
            ReadOnlyCall::Execute { params, .. } | ReadOnlyCall::Query { params, .. } => {
                iadb::ValueScrubber::new(params)
            }
            ReadOnlyCall::ExecuteMany { param_sets, .. } => {
                iadb::ValueScrubber::for_sets(param_sets.iter().map(Vec::as_slice))
            }
        };
        backend
            .read_only_call(self)
            .await
            .map_err(|e| scrubber.scrub(e))
    }
}

/// How a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// In a read-only transaction.
    pub read_only: bool,
    /// The most bytes all its rows may take.
    pub result_limit: usize,
    /// One of its statements changes the connection's session state (see
    /// [`Session::changes_session_state`]).
    pub session_state: bool,
}

/// What one statement of a batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    /// Rows changed and the last insert id.
    pub outcome: ExecuteOutcome,
    /// The result's columns (empty for a statement without rows).
    pub columns: Arc<[iadb::Column]>,
    /// The result's rows.
    pub rows: Vec<Vec<Value>>,
}

/// Builds an engine's adapter for a URL (not yet connected).
type Open = fn(&ConnectionConfig, PoolSettings) -> Result<Arc<dyn Backend>>;

/// How an engine's adapter is built: the cargo feature that compiles it in,
/// and, when that feature is on, its type's `new(config, pool)`.
macro_rules! adapter {
    ($feature:literal, $backend:ty) => {{
        #[cfg(feature = $feature)]
        const OPEN: Option<Open> =
            Some(|config, pool| Ok(Arc::new(<$backend>::new(config, pool)?)));
        #[cfg(not(feature = $feature))]
        const OPEN: Option<Open> = None;
        ($feature, OPEN)
    }};
}

/// The adapter of each engine: the only thing the server adds to the
/// engine's description ([`iadb::EngineSpec`]). One exhaustive match, so a
/// new engine is a compile error here until its adapter is named.
fn adapter(kind: DatabaseType) -> (&'static str, Option<Open>) {
    match kind {
        DatabaseType::Sqlite => adapter!("sqlite", sqlite::SqliteBackend),
        DatabaseType::Postgresql => adapter!("postgres", postgres::PostgresBackend),
        DatabaseType::Mysql => adapter!("mysql", mysql::MySqlBackend),
        DatabaseType::Duckdb => adapter!("duckdb", self::duckdb::DuckDbBackend),
        DatabaseType::CloudflareD1 => adapter!("d1", d1::D1Backend),
    }
}

/// Whether `kind`'s adapter is compiled into this build; if not, the cargo
/// feature that compiles it in.
pub fn compiled_in(kind: DatabaseType) -> std::result::Result<(), &'static str> {
    match adapter(kind) {
        (_, Some(_)) => Ok(()),
        (feature, None) => Err(feature),
    }
}

/// Builds the adapter for `config`'s engine (not yet connected).
pub fn backend_for(config: &ConnectionConfig, pool: PoolSettings) -> Result<Arc<dyn Backend>> {
    match adapter(config.db_type) {
        (_, Some(open)) => open(config, pool),
        (feature, None) => Err(Error::invalid_argument(format!(
            "engine {} is not compiled into this server (enable its cargo feature `{feature}`)",
            config.db_type
        ))),
    }
}

#[cfg(feature = "pooled")]
/// Counts one waiter for as long as it lives (also when the waiting call is
/// dropped, e.g. on a deadline).
pub(crate) struct WaitGuard(Arc<std::sync::atomic::AtomicU32>);

#[cfg(feature = "pooled")]
impl WaitGuard {
    pub(crate) fn new(counter: &Arc<std::sync::atomic::AtomicU32>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter.clone())
    }
}

#[cfg(feature = "pooled")]
impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// SQLite's (and so D1's) table lookup for `table`: the query, and the bare
/// name to bind to its one placeholder. `schema.table` names an attached
/// schema (`main`, `temp`, ...); names match case-insensitively, as SQLite's
/// do.
#[cfg(any(feature = "sqlite", feature = "d1"))]
pub(crate) fn sqlite_table_lookup(table: &str) -> (String, &str) {
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (s, t),
        None => ("main", table),
    };
    let master = if schema.eq_ignore_ascii_case("temp") {
        "sqlite_temp_master".to_owned()
    } else {
        format!("{}.sqlite_master", iadb::quote_identifier(schema))
    };
    let sql = format!(
        "SELECT 1 FROM {master} WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE LIMIT 1"
    );
    (sql, name)
}

/// The URL option `key` of a value that goes into SQL text as it is (a
/// session setting): `None` when not given; refused with `expected` unless
/// it is not empty and every byte is `allowed`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn sql_text_option<'a>(
    config: &'a ConnectionConfig,
    key: &str,
    allowed: fn(u8) -> bool,
    expected: &str,
) -> Result<Option<&'a str>> {
    match config.option(key) {
        None => Ok(None),
        Some(value) if !value.is_empty() && value.bytes().all(allowed) => Ok(Some(value)),
        Some(_) => Err(Error::invalid_argument(format!(
            "{} URL option {key}: expected {expected}",
            config.db_type
        ))),
    }
}

/// Checks the number of `?` placeholders against the parameters given.
pub(crate) fn check_param_count(
    sql: &str,
    dialect: crate::placeholders::Dialect,
    given: usize,
) -> Result<()> {
    let expected = crate::placeholders::count_placeholders(sql, dialect);
    if expected != given {
        return Err(Error::invalid_argument(format!(
            "wrong parameter count: the statement has {expected} placeholder(s), {given} parameter(s) given"
        )));
    }
    Ok(())
}

/// Rejects empty or whitespace-only SQL.
pub(crate) fn check_sql(sql: &str) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(Error::invalid_argument("empty SQL statement"));
    }
    Ok(())
}

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod tests {
    use super::*;

    #[test]
    fn sql_text_options_are_checked_byte_by_byte_and_never_echoed() {
        let check = |url: &str| {
            let config = ConnectionConfig::from_url(url).expect("url parses");
            sql_text_option(&config, "timezone", |b| b.is_ascii_alphanumeric(), "a name")
                .map(|v| v.map(str::to_owned))
        };
        assert_eq!(check("postgresql://h/db").ok(), Some(None));
        assert_eq!(
            check("postgresql://h/db?timezone=UTC").ok(),
            Some(Some("UTC".to_owned()))
        );
        for bad in ["timezone=", "timezone=UTC%27%3B%20DROP"] {
            let err = check(&format!("postgresql://h/db?{bad}")).expect_err("refused");
            assert_eq!(err.kind(), iadb::ErrorKind::InvalidArgument);
            assert_eq!(
                err.message(),
                "postgresql URL option timezone: expected a name"
            );
        }
    }
}
