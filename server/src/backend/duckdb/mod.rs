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
//! affected of its end event. `query_arrow` sends the chunks' own Arrow
//! arrays where they are iadb's Arrow types for the columns
//! ([`arrow::ArrowChunks`], docs/arrow.md).
//!
//! **Options.** The URL's query options are DuckDB settings, passed through
//! (`duckdb:///./a.duckdb?threads=4&memory_limit=2GB`); `mode=ro` opens the
//! file read-only.
//!
//! **Sandbox.** A client's SQL runs inside the server's process, as its OS
//! user, so by default it may not reach beyond the database
//! ([`pool::SANDBOX_SETTINGS`]): `enable_external_access = false` (no host
//! file other than the database's own, no network: `read_text`,
//! `read_csv`, `COPY ... TO`, `ATTACH`, `LOAD` are refused), no extension
//! installed or loaded on demand, and `lock_configuration = true` once the
//! database is open, so no `SET` can undo it. Each is a DuckDB setting, and
//! the same setting in the URL overrides it for that database
//! (`?enable_external_access=true` to read the host's files again);
//! docs/security.md lists them.
//!
//! How DuckDB's types become [`Value`]s, and how parameters bind, is the
//! table in `docs/types/duckdb.md`.

use super::{Backend, PoolSettings, check_param_count, check_sql, session::Session};
use crate::placeholders::Dialect;
use async_trait::async_trait;
use futures::StreamExt;
use iadb::{
    ConnectionConfig, DatabaseInterface, Error, ExecuteOutcome, PoolStatus, QueryStream, Result,
    Value, arrow::ArrowWanted,
};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

mod arrow;
mod binding;
mod call;
mod decoding;
mod errors;
mod pool;
mod session;
mod streaming;

use binding::bind_params;
use call::{AbandonOnDrop, CallState, run_call};
use decoding::prepare_checked;
use errors::{in_set, map_duckdb_error};
use pool::{ConnectionPool, PooledConnection, open_database};
use session::{DuckDbTxSession, execute_statement};
use streaming::{apply_sets, stream_statement};

/// Batches of rows (each bounded as `session::step_batch_full` says)
/// buffered between DuckDB and the consumer of one stream. Small: the
/// engine is already one data chunk ahead, and memory stays bounded.
const ROW_CHANNEL_CAPACITY: usize = 2;

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

    /// `query`, and with `arrow` `query_arrow`.
    async fn stream(
        &self,
        sql: &str,
        params: &[Value],
        arrow: Option<ArrowWanted>,
    ) -> Result<QueryStream> {
        check_sql(sql)?;
        check_param_count(sql, Dialect::DuckDb, params.len())?;
        let conn = self.acquire().await?;
        let call = CallState::new(conn.get()?);
        let guard = AbandonOnDrop(call.clone());
        let (header_tx, header_rx) = oneshot::channel();
        let (rows_tx, rows_rx) = mpsc::channel(ROW_CHANNEL_CAPACITY);
        let (sql, params) = (sql.to_owned(), params.to_vec());
        tokio::task::spawn_blocking(move || {
            stream_statement(conn, call, sql, params, arrow, header_tx, rows_tx);
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

    async fn acquire(&self) -> Result<PooledConnection> {
        self.pool()?.acquire().await
    }
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
        self.stream(sql, params, None).await
    }

    /// The result's chunks go as DuckDB's own Arrow arrays where their
    /// types are iadb's for the columns (`arrow::ArrowChunks`).
    async fn query_arrow(
        &self,
        sql: &str,
        params: &[Value],
        wanted: ArrowWanted,
    ) -> Result<QueryStream> {
        self.stream(sql, params, Some(wanted)).await
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
