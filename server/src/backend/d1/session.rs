//! Migration sessions and batches: what D1 offers in place of sessions.

use super::{
    D1Backend,
    client::{D1Client, Endpoint, is_read},
    codec::{outcome_of, statement},
    errors::is_statement_error,
};
use crate::{
    backend::{Backend, BatchOptions, ReadOnlyCall, StatementResult, check_sql},
    migrate::{MigrationSession, StoreDialect},
    placeholders::Dialect,
};
use async_trait::async_trait;
use futures::StreamExt;
use iadb::{
    Column, DatabaseInterface, Error, ErrorKind, ExecuteOutcome, QueryEvent, QueryStream, Result,
    Value,
};
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// A migration run on D1: every call is one HTTP request (D1 has no
/// sessions over REST), so the lease-row lock is what serialises runners.
pub struct D1Session(Arc<D1Client>);

#[async_trait]
impl MigrationSession for D1Session {
    fn dialect(&self) -> StoreDialect {
        StoreDialect::D1
    }

    async fn run_script(&mut self, sql: &str) -> Result<()> {
        check_sql(sql)?;
        self.0.query_endpoint(sql, &[]).await.map(|_| ())
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        Ok(self.0.query_endpoint(sql, params).await?.rows_affected)
    }

    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let (columns, rows, _) = self.0.raw(sql, params).await?;
        rows.iter()
            .map(|r| self.0.decode_row(r, columns.len()))
            .collect()
    }
}

#[async_trait]
impl Backend for D1Backend {
    async fn migration_session(&self) -> Result<Box<dyn MigrationSession>> {
        Ok(Box::new(D1Session(self.client()?)))
    }

    /// D1 has no read-only transactions (nor any session): a best effort,
    /// documented as such. A call whose statement is not a read (`SELECT`,
    /// `VALUES`, `EXPLAIN`, a `WITH` without `INSERT`/`UPDATE`/`DELETE`/
    /// `REPLACE`) is refused before it is sent.
    async fn read_only_call(&self, call: ReadOnlyCall<'_>) -> Result<ExecuteOutcome> {
        if !is_read(call.sql()) {
            return Err(read_only_refusal());
        }
        match call {
            ReadOnlyCall::Execute { sql, params } => self.execute(sql, params).await,
            ReadOnlyCall::ExecuteMany { sql, param_sets } => {
                self.execute_many(sql, param_sets).await
            }
            ReadOnlyCall::Query { sql, params, sink } => {
                let QueryStream {
                    columns,
                    mut events,
                } = self.query(sql, params).await?;
                sink.columns(columns).await?;
                let mut outcome = ExecuteOutcome::default();
                while let Some(event) = events.next().await {
                    match event? {
                        QueryEvent::Row(values) => sink.row(values).await?,
                        QueryEvent::Rows(batch) => sink.rows(batch).await?,
                        QueryEvent::Done(done) => outcome = done,
                        QueryEvent::Arrow(_) => return Err(iadb::arrow_where_rows_were_expected()),
                    }
                }
                Ok(outcome)
            }
        }
    }

    /// One `/raw` request with a `batch` of statements, which D1 runs as
    /// one transaction (its Worker `batch()` is documented to; the REST
    /// endpoint runs the same code). Each statement must be exactly one
    /// statement, so that D1's answers (one per statement) line up with
    /// the request's. D1 has no read-only transactions: a read-only batch
    /// is refused unless every statement is a read.
    async fn batch(
        &self,
        statements: &[(String, Vec<Value>)],
        options: BatchOptions,
    ) -> Result<Vec<StatementResult>> {
        let BatchOptions {
            read_only,
            result_limit,
            // Each D1 request stands alone: no state outlives it.
            session_state: _,
        } = options;
        let client = self.client()?;
        let at = |index: usize, e: Error| e.in_context(format_args!("statement {index}"));
        let mut batch = Vec::with_capacity(statements.len());
        for (index, (sql, params)) in statements.iter().enumerate() {
            check_sql(sql).map_err(|e| at(index, e))?;
            let count = crate::placeholders::statement_shape(sql, Dialect::Sqlite).statements;
            if count != 1 {
                return Err(at(
                    index,
                    Error::invalid_argument(format!(
                        "a D1 batch takes one statement per entry (D1 answers per statement), \
                         and this SQL holds {count}"
                    )),
                ));
            }
            if read_only && !is_read(sql) {
                return Err(at(index, read_only_refusal()));
            }
            batch.push(statement(sql, params, client.lossy_integers).map_err(|e| at(index, e))?);
        }
        let reads_only = statements.iter().all(|(sql, _)| is_read(sql));
        let items = match client
            .send(Endpoint::Raw, &json!({ "batch": batch }), reads_only)
            .await
        {
            Ok(items) => items,
            Err(e) if is_statement_error(&e) && batch.len() > 1 => {
                let index = client.failing_statement(&batch).await.unwrap_or(None);
                return Err(match index {
                    Some(i) => at(i, e),
                    None => e.in_context("a statement of the batch (index unknown)"),
                });
            }
            Err(e) if is_statement_error(&e) => return Err(at(0, e)),
            Err(e) => return Err(e),
        };
        if items.len() != statements.len() {
            return Err(Error::internal(format!(
                "D1 answered {} results for a batch of {} statements",
                items.len(),
                statements.len()
            )));
        }
        let mut budget = result_limit;
        let mut results = Vec::with_capacity(items.len());
        for (index, mut item) in items.into_iter().enumerate() {
            let outcome = outcome_of(&item);
            let results_of = item.get_mut("results");
            let names: Vec<String> = results_of
                .as_deref()
                .and_then(|r| r.get("columns"))
                .and_then(Json::as_array)
                .map(|names| {
                    names
                        .iter()
                        .map(|n| n.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .unwrap_or(Some(Vec::new()))
                .ok_or_else(|| {
                    Error::internal("D1 /raw answered with a column name that is not text")
                })?;
            let raw_rows = match results_of.and_then(|r| r.get_mut("rows")).map(Json::take) {
                Some(Json::Array(r)) => r,
                None | Some(Json::Null) => Vec::new(),
                Some(_) => {
                    return Err(Error::internal("D1 /raw answered rows that are not a list"));
                }
            };
            let mut rows = Vec::with_capacity(raw_rows.len());
            for row in &raw_rows {
                let values = client
                    .decode_row(row, names.len())
                    .map_err(|e| at(index, e))?;
                let bytes = values.iter().map(Value::encoded_len_hint).sum::<usize>() + 2;
                budget = budget.checked_sub(bytes).ok_or_else(|| {
                    Error::new(
                        ErrorKind::ResourceExhausted,
                        format!(
                            "the rows of the batch exceed the result limit of {result_limit} \
                             bytes (--max-batch-result-bytes); the batch was committed"
                        ),
                    )
                })?;
                rows.push(values);
            }
            results.push(StatementResult {
                outcome,
                columns: names.into_iter().map(|n| Column::new(n, "")).collect(),
                rows,
            });
        }
        Ok(results)
    }

    async fn session(&self) -> Result<Box<dyn crate::backend::session::Session>> {
        Err(crate::backend::session::no_sessions(
            iadb::DatabaseType::CloudflareD1,
            "D1's REST API has no sessions (each request stands alone); use Batch, which \
             D1 runs as one transaction",
        ))
    }
}

/// A statement that is not a read, in a read-only batch or call on D1.
fn read_only_refusal() -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        "D1 has no read-only transactions, and this statement is not a read \
         (SELECT, VALUES, EXPLAIN, or WITH ... SELECT)",
    )
}
