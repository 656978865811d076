//! The [`DatabaseInterface`] trait: one way to talk to a database, whether the
//! adapter is in this process or behind the gRPC server.

use crate::{Column, Error, QueryResult, Result, Row, RowBatch, Value};
use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use std::{sync::Arc, time::Instant};

/// What a statement that changes rows reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecuteOutcome {
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// Id of the last inserted row, where the engine has one.
    pub last_insert_id: Option<i64>,
}

/// One event of a running statement: a row or a batch of rows, or the end
/// with what it changed.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryEvent {
    /// The next row's values, in column order.
    Row(Vec<Value>),
    /// The next rows, encoded as the wire carries them (never empty): what
    /// the server's adapters give, so that a result travels from the
    /// engine's cursor to the wire batch by batch.
    Rows(RowBatch),
    /// The next rows as an Arrow record batch (never empty): what an
    /// adapter gives when the server asked it for Arrow
    /// (RESULT_FORMAT_ARROW) and it builds the arrays from its cursor.
    /// Every batch of one result has the same schema.
    Arrow(crate::arrow::RecordBatch),
    /// The statement finished; no event follows.
    Done(ExecuteOutcome),
}

/// The error of a consumer of rows given a [`QueryEvent::Arrow`], which
/// only a server's Arrow fetch asks an adapter for.
pub fn arrow_where_rows_were_expected() -> Error {
    Error::internal("an Arrow batch where rows were expected")
}

/// A running statement: its columns, known before the first row, and its
/// events, read from the engine's cursor as the consumer pulls them.
/// Dropping it stops the statement and gives its connection back.
pub struct QueryStream {
    /// The result's columns (empty for a statement that returns no rows).
    pub columns: Arc<[Column]>,
    /// Rows, then one [`QueryEvent::Done`].
    pub events: BoxStream<'static, Result<QueryEvent>>,
}

/// The rows of a running statement, with its columns.
pub struct RowStream {
    /// The result's columns.
    pub columns: Arc<[Column]>,
    /// The rows, read as they are pulled.
    pub rows: BoxStream<'static, Result<Row>>,
}

/// Pool figures reported by health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections open.
    pub size: u32,
    /// Of those, the idle ones.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
    /// Calls waiting for a connection right now (the pool is exhausted).
    pub waiting: u32,
    /// Connections found inside a transaction when handed out again, and
    /// rolled back, since the pool opened (a statement slipped past the
    /// pooled-call checks; each one is a bug to report).
    pub rolled_back: u64,
}

/// Quotes an identifier for SQL (`"name"`, inner quotes doubled), the form
/// every engine iadb serves accepts (MySQL with `ANSI_QUOTES`; adapters that
/// need backticks quote for themselves).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drains a running statement into the seed-shaped [`QueryResult`]: rows for
/// a query, rows affected otherwise; an error becomes `success: false`.
pub async fn collect_query_result(stream: Result<QueryStream>, started: Instant) -> QueryResult {
    let run = async {
        let QueryStream {
            columns,
            mut events,
        } = stream?;
        let mut data = Vec::new();
        let mut outcome = ExecuteOutcome::default();
        while let Some(event) = events.next().await {
            match event? {
                QueryEvent::Row(values) => data.push(Row::new(columns.clone(), values)),
                QueryEvent::Rows(batch) => {
                    for values in batch.rows() {
                        data.push(Row::new(columns.clone(), values?));
                    }
                }
                QueryEvent::Done(o) => outcome = o,
                QueryEvent::Arrow(_) => return Err(arrow_where_rows_were_expected()),
            }
        }
        Ok::<_, Error>((columns, data, outcome))
    };
    let result = run.await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((columns, data, outcome)) if !columns.is_empty() => {
            let mut r = QueryResult::with_rows(columns.to_vec(), data, ms);
            r.rows_affected = outcome.rows_affected;
            r
        }
        Ok((_, _, outcome)) => {
            QueryResult::with_rows_affected(outcome.rows_affected, outcome.last_insert_id, ms)
        }
        Err(e) => QueryResult::from_error(&e, ms),
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `(column name, SQL type)` pairs, with
/// names quoted by `quote` (`schema.table` is quoted part by part).
pub fn create_table_sql(
    table: &str,
    columns: &[(String, String)],
    quote: impl Fn(&str) -> String,
) -> Result<String> {
    if columns.is_empty() {
        return Err(Error::invalid_argument(format!(
            "create_table `{table}`: no columns given"
        )));
    }
    let body = columns
        .iter()
        .map(|(name, ty)| format!("{} {}", quote(name), ty))
        .collect::<Vec<_>>()
        .join(", ");
    let name = table.split('.').map(&quote).collect::<Vec<_>>().join(".");
    Ok(format!("CREATE TABLE IF NOT EXISTS {name} ({body})"))
}

/// A database, local or remote. Object-safe: a service can hold an
/// `Arc<dyn DatabaseInterface>` and be handed either an adapter or the gRPC
/// client.
///
/// Every statement uses `?` placeholders, bound in order from `params`.
#[async_trait]
pub trait DatabaseInterface: Send + Sync {
    /// Opens the connection or pool.
    async fn connect(&self) -> Result<()>;

    /// Closes the connection or pool; later calls fail until `connect`.
    async fn disconnect(&self) -> Result<()>;

    /// Whether `connect` succeeded and `disconnect` has not been called.
    fn is_connected(&self) -> bool;

    /// Runs one statement and streams its events; the core every fetch is
    /// built on.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream>;

    /// [`DatabaseInterface::query`] for a consumer that wants the rows as
    /// Arrow (the server, for RESULT_FORMAT_ARROW): an implementation that
    /// builds record batches from its cursor gives them as
    /// [`QueryEvent::Arrow`], batched as `wanted` says; the default gives
    /// rows, which the consumer converts.
    async fn query_arrow(
        &self,
        sql: &str,
        params: &[Value],
        wanted: crate::arrow::ArrowWanted,
    ) -> Result<QueryStream> {
        let _ = wanted;
        self.query(sql, params).await
    }

    /// Runs one statement (with no parameters, possibly a script of several)
    /// and reports the rows it changed.
    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome>;

    /// Runs one statement once per parameter set, in one transaction: all or
    /// nothing. The error of a failing set names its index.
    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome>;

    /// Whether a table exists (`schema.table` where the engine has schemas).
    async fn table_exists(&self, table: &str) -> Result<bool>;

    /// Quotes an identifier the way this engine reads one (`"name"` by
    /// default; MySQL uses backticks).
    fn quote_identifier(&self, name: &str) -> String {
        quote_identifier(name)
    }

    /// Pool figures, where the adapter has a pool.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    /// Streams the rows of a statement.
    async fn fetch_stream(&self, sql: &str, params: &[Value]) -> Result<RowStream> {
        let QueryStream { columns, events } = self.query(sql, params).await?;
        let row_columns = columns.clone();
        let rows = events
            .flat_map(move |event| {
                let columns = row_columns.clone();
                // A batch's rows are decoded one by one as they are read.
                let rows: Box<dyn Iterator<Item = Result<Row>> + Send> = match event {
                    Ok(QueryEvent::Row(values)) => {
                        Box::new(std::iter::once(Ok(Row::new(columns, values))))
                    }
                    Ok(QueryEvent::Rows(batch)) => Box::new(
                        batch
                            .into_rows()
                            .map(move |values| Ok(Row::new(columns.clone(), values?))),
                    ),
                    Ok(QueryEvent::Done(_)) => Box::new(std::iter::empty()),
                    Ok(QueryEvent::Arrow(_)) => {
                        Box::new(std::iter::once(Err(arrow_where_rows_were_expected())))
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                futures::stream::iter(rows)
            })
            .boxed();
        Ok(RowStream { columns, rows })
    }

    /// Every row of a statement.
    async fn fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let RowStream { mut rows, .. } = self.fetch_stream(sql, params).await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(row?);
        }
        Ok(out)
    }

    /// The first row of a statement, or `None`; the rest are not read.
    async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        let RowStream { mut rows, .. } = self.fetch_stream(sql, params).await?;
        rows.next().await.transpose()
    }

    /// Runs any statement and returns the seed-shaped result: rows for a
    /// query, rows affected otherwise; an error becomes `success: false`.
    async fn execute_query(&self, sql: &str, params: &[Value]) -> QueryResult {
        let started = Instant::now();
        collect_query_result(self.query(sql, params).await, started).await
    }

    /// Creates a table from `(column name, SQL type)` pairs, if it does not
    /// exist yet.
    async fn create_table(&self, table: &str, columns: &[(String, String)]) -> Result<()> {
        let sql = create_table_sql(table, columns, |name| self.quote_identifier(name))?;
        self.execute(&sql, &[]).await?;
        Ok(())
    }

    /// Checks that the database answers (`SELECT 1`).
    async fn health_check(&self) -> Result<()> {
        self.fetch_one("SELECT 1", &[]).await.map(|_| ())
    }
}
