//! The sessions that hold one pooled connection: a migration run's, and a
//! transaction's or a batch's.

use super::{
    DuckDbBackend, ROW_CHANNEL_CAPACITY,
    binding::bind_params,
    call::{AbandonOnDrop, CallState, panic_error},
    decoding::prepare_checked,
    errors::{in_set, map_duckdb_error},
    pool::PooledConnection,
    streaming::{Flow, apply_sets, fetch_rows, produce_rows},
};
use crate::{
    backend::{
        check_param_count, check_sql,
        session::{Isolation, RowSink, Session, TxOptions},
    },
    migrate::{MigrationSession, StoreDialect},
    placeholders::Dialect,
};
use async_trait::async_trait;
use duckdb::Connection;
use iadb::{DatabaseType, Error, ErrorKind, ExecuteOutcome, QueryEvent, Result, Value};
use std::panic::{AssertUnwindSafe, catch_unwind};
use tokio::sync::{mpsc, oneshot};

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
    pub(super) conn: Option<PooledConnection>,
    pub(super) in_transaction: bool,
    /// A statement was interrupted or panicked: the connection is closed at
    /// the end, whatever happens.
    pub(super) broken: bool,
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

    /// DuckDB has no session reset: the connection is closed at the end
    /// (the database lives on in the pool's root connection).
    fn changes_session_state(&mut self) {
        self.broken = true;
        if let Some(conn) = self.conn.as_mut() {
            conn.reuse = false;
        }
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
        let arrow = sink.arrow_wanted();
        let worker = tokio::task::spawn_blocking(move || {
            let mut header = Some(header_tx);
            let run = catch_unwind(AssertUnwindSafe(|| {
                produce_rows(&conn, &call, &sql, &params, arrow, &mut header, &rows_tx)
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
                    Ok(QueryEvent::Rows(batch)) => sink.rows(batch).await,
                    Ok(QueryEvent::Done(_)) => Ok(()),
                    Ok(QueryEvent::Arrow(batch)) => sink.arrow(batch).await,
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
pub(super) fn execute_statement(
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
