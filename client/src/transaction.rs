//! Batches and interactive transactions: [`RemoteDatabase::batch`] and
//! [`RemoteDatabase::transaction`].

use super::{ArrowStream, Call, Deadline, Failure, RemoteDatabase, exchange};
use futures::{StreamExt, channel::mpsc, stream::BoxStream};
use iadb::{
    Column, Error, ErrorKind, ExecuteOutcome, Result, Row, Value,
    proto::{
        self, fetch_all_response::Frame, transaction_request::Request as Req,
        transaction_response::Response as Resp,
    },
};
use std::sync::Arc;

/// One statement of a batch, with its parameters (`?` placeholders).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL: exactly one statement.
    pub sql: String,
    /// Its parameters, bound in order.
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// A statement with parameters.
    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

impl From<&str> for Statement {
    fn from(sql: &str) -> Self {
        Self::new(sql)
    }
}

impl From<String> for Statement {
    fn from(sql: String) -> Self {
        Self::new(sql)
    }
}

/// What one statement of a committed batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// The id of the last inserted row, where the engine has one.
    pub last_insert_id: Option<i64>,
    /// The columns of a statement that returns rows (empty otherwise).
    pub columns: Arc<[Column]>,
    /// Its rows.
    pub rows: Vec<Row>,
}

/// Isolation level of a transaction. Each engine accepts the ones it has;
/// another is INVALID_ARGUMENT naming those it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The engine's default (PostgreSQL: read committed; MySQL/MariaDB:
    /// repeatable read; SQLite: serializable).
    #[default]
    Default,
    /// PostgreSQL, MySQL/MariaDB.
    ReadCommitted,
    /// PostgreSQL, MySQL/MariaDB.
    RepeatableRead,
    /// PostgreSQL, MySQL/MariaDB, SQLite (whose transactions always are).
    Serializable,
    /// DuckDB.
    Snapshot,
}

impl From<Isolation> for proto::IsolationLevel {
    fn from(level: Isolation) -> Self {
        match level {
            Isolation::Default => proto::IsolationLevel::Unspecified,
            Isolation::ReadCommitted => proto::IsolationLevel::ReadCommitted,
            Isolation::RepeatableRead => proto::IsolationLevel::RepeatableRead,
            Isolation::Serializable => proto::IsolationLevel::Serializable,
            Isolation::Snapshot => proto::IsolationLevel::Snapshot,
        }
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransactionOptions {
    /// Its isolation level.
    pub isolation: Isolation,
    /// Statements that write fail with the engine's own error.
    pub read_only: bool,
    /// SQLite only: take the write lock at once (`BEGIN IMMEDIATE`).
    pub immediate: bool,
}

/// The rows of a fetch inside a transaction, read as they are pulled.
///
/// It borrows the transaction: the next request waits until it is dropped.
/// Rows not read by then are read and discarded first (the server answers
/// one request at a time, in order).
pub struct TransactionRows<'a> {
    /// The result's columns.
    pub columns: Arc<[Column]>,
    /// The rows.
    pub rows: BoxStream<'a, Result<Row>>,
}

/// An open transaction on one server connection: one Transaction stream.
///
/// Requests are answered one at a time, in order (every method takes
/// `&mut self`). [`Transaction::commit`] and [`Transaction::rollback`] end
/// it. Any error ends it too: the server has rolled it back, and later
/// calls are FAILED_PRECONDITION. Dropping it without a commit closes the
/// request stream, and the server rolls it back.
///
/// Nothing inside a transaction is retried, and neither is its commit: an
/// UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED answer to a commit means its
/// outcome is unknown, and the message says so.
pub struct Transaction {
    /// Where requests go; `None` once the transaction ended.
    requests: Option<mpsc::UnboundedSender<proto::TransactionRequest>>,
    responses: tonic::Streaming<proto::TransactionResponse>,
    deadline: Option<Deadline>,
    database: String,
    engine: String,
    /// A fetch whose frames have not all been read yet.
    unread_fetch: bool,
    /// The rows affected of the last fetch that ended.
    fetched_rows_affected: u64,
    /// Why the transaction ended, once it did.
    ended: Option<String>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("database", &self.database)
            .field("engine", &self.engine)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

fn unexpected(what: &str, answer: &Resp) -> Error {
    let name = match answer {
        Resp::Begun(_) => "begun",
        Resp::Executed(_) => "executed",
        Resp::Fetched(_) => "fetched",
        Resp::ExecutedMany(_) => "executed_many",
        Resp::Ended(_) => "ended",
    };
    Error::internal(format!(
        "transaction stream broken: `{what}` was answered by `{name}`"
    ))
}

impl Transaction {
    /// The database's configured name on the server.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The engine behind it ("postgresql", "mysql", "sqlite", ...).
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Whether the transaction ended (after an error; commit and rollback
    /// consume it).
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Marks the transaction ended by `error` and closes the request stream.
    fn end(&mut self, error: Error) -> Error {
        self.requests = None;
        self.unread_fetch = false;
        if self.ended.is_none() {
            self.ended = Some(format!("{} ({})", error.message(), error.kind()));
        }
        error
    }

    fn check_open(&self) -> Result<()> {
        match &self.ended {
            Some(why) => Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("the transaction has ended and was rolled back: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// The next answer, or the status that ended the stream.
    async fn receive(&mut self) -> Result<Resp> {
        let deadline = self.deadline;
        match exchange(deadline, self.responses.message()).await {
            Ok(Some(proto::TransactionResponse {
                response: Some(answer),
            })) => Ok(answer),
            Ok(Some(_)) => Err(Error::internal(
                "transaction stream broken: an empty answer",
            )),
            Ok(None) => Err(Error::internal(
                "transaction stream broken: it ended without an answer or a status",
            )),
            Err(Failure { error, .. }) => Err(error),
        }
    }

    /// Reads what is left of an unfinished fetch.
    async fn settle(&mut self) -> Result<()> {
        while self.unread_fetch {
            match self.receive().await {
                Ok(Resp::Fetched(proto::FetchAllResponse {
                    frame: Some(Frame::Summary(_)),
                })) => self.unread_fetch = false,
                Ok(Resp::Fetched(_)) => {}
                Ok(other) => return Err(self.end(unexpected("fetch", &other))),
                Err(e) => return Err(self.end(e)),
            }
        }
        Ok(())
    }

    /// Sends one request (after any unfinished fetch is read).
    async fn send(&mut self, request: Req) -> Result<()> {
        self.check_open()?;
        self.settle().await?;
        let sent = self.requests.as_ref().is_some_and(|requests| {
            requests
                .unbounded_send(proto::TransactionRequest {
                    request: Some(request),
                })
                .is_ok()
        });
        if !sent {
            // The server ended the stream: its status says why.
            let error = match self.receive().await {
                Err(e) => e,
                Ok(other) => unexpected("request", &other),
            };
            return Err(self.end(error));
        }
        Ok(())
    }

    /// Sends `request` and reads its one answer.
    async fn call(&mut self, request: Req) -> Result<Resp> {
        self.send(request).await?;
        match self.receive().await {
            Ok(answer) => Ok(answer),
            Err(e) => Err(self.end(e)),
        }
    }

    /// Runs one statement and reports the rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        let request = Req::Execute(proto::Statement {
            sql: sql.to_owned(),
            params: RemoteDatabase::params(params),
            ..Default::default()
        });
        match self.call(request).await? {
            Resp::Executed(r) => Ok(ExecuteOutcome {
                rows_affected: r.rows_affected,
                last_insert_id: r.last_insert_id,
            }),
            other => Err(self.end(unexpected("execute", &other))),
        }
    }

    /// Runs one statement once per parameter set.
    pub async fn execute_many(
        &mut self,
        sql: &str,
        param_sets: &[Vec<Value>],
    ) -> Result<ExecuteOutcome> {
        let request = Req::ExecuteMany(proto::ExecuteManyStatement {
            sql: sql.to_owned(),
            param_sets: param_sets
                .iter()
                .map(|set| proto::Row {
                    values: RemoteDatabase::params(set),
                })
                .collect(),
        });
        match self.call(request).await? {
            Resp::ExecutedMany(r) => Ok(ExecuteOutcome {
                rows_affected: r.rows_affected,
                last_insert_id: None,
            }),
            other => Err(self.end(unexpected("execute_many", &other))),
        }
    }

    /// Streams the rows of a statement. The stream borrows the
    /// transaction; the result is an error, never a short success, unless
    /// it ends with its summary.
    pub async fn fetch_stream(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<TransactionRows<'_>> {
        let request = Req::Fetch(proto::Statement {
            sql: sql.to_owned(),
            params: RemoteDatabase::params(params),
            ..Default::default()
        });
        let columns: Arc<[Column]> = match self.call(request).await? {
            Resp::Fetched(proto::FetchAllResponse {
                frame: Some(Frame::Header(header)),
            }) => header.columns.into_iter().map(Column::from).collect(),
            other => return Err(self.end(unexpected("fetch", &other))),
        };
        self.unread_fetch = true;
        let row_columns = columns.clone();
        let tx = self;
        let rows = async_stream::try_stream! {
            let mut count: u64 = 0;
            loop {
                let frame = match tx.receive().await {
                    Ok(Resp::Fetched(proto::FetchAllResponse { frame: Some(frame) })) => frame,
                    Ok(other) => Err(tx.end(unexpected("fetch", &other)))?,
                    Err(e) => Err(tx.end(e))?,
                };
                match frame {
                    Frame::Batch(batch) => {
                        for values in batch.into_rows() {
                            let values = match values {
                                Ok(values) => values,
                                Err(e) => Err(tx.end(e))?,
                            };
                            count += 1;
                            yield Row::new(row_columns.clone(), values);
                        }
                    }
                    Frame::Summary(summary) => {
                        tx.unread_fetch = false;
                        tx.fetched_rows_affected = summary.rows_affected;
                        if summary.row_count != count {
                            Err(tx.end(Error::internal(format!(
                                "result stream broken: its summary counts {} rows but {count} \
                                 arrived",
                                summary.row_count
                            ))))?;
                        }
                        break;
                    }
                    Frame::Header(_) => Err(tx.end(Error::internal(
                        "result stream broken: a second header",
                    )))?,
                    Frame::Arrow(_) => Err(tx.end(Error::internal(
                        "result stream broken: Arrow data for a fetch that asked for rows",
                    )))?,
                }
            }
        };
        Ok(TransactionRows {
            columns,
            rows: rows.boxed(),
        })
    }

    /// Runs a statement whose rows come as Apache Arrow record batches
    /// (docs/arrow.md); the stream borrows the transaction. The result is
    /// an error, never a short success, unless it comes whole.
    pub async fn fetch_arrow(&mut self, sql: &str, params: &[Value]) -> Result<ArrowStream<'_>> {
        let request = Req::Fetch(proto::Statement {
            sql: sql.to_owned(),
            params: RemoteDatabase::params(params),
            result_format: proto::ResultFormat::Arrow.into(),
        });
        let columns: Arc<[Column]> = match self.call(request).await? {
            Resp::Fetched(proto::FetchAllResponse {
                frame: Some(Frame::Header(header)),
            }) => header.columns.into_iter().map(Column::from).collect(),
            other => return Err(self.end(unexpected("fetch", &other))),
        };
        self.unread_fetch = true;
        let tx = self;
        let frames = async_stream::try_stream! {
            // The frames are checked here, so that a broken stream ends the
            // transaction, as a broken row fetch does.
            let mut reader = crate::arrow::ArrowFrames::default();
            loop {
                let frame = match tx.receive().await {
                    Ok(Resp::Fetched(proto::FetchAllResponse { frame: Some(frame) })) => frame,
                    Ok(other) => Err(tx.end(unexpected("fetch", &other)))?,
                    Err(e) => Err(tx.end(e))?,
                };
                let affected = match &frame {
                    Frame::Summary(summary) => Some(summary.rows_affected),
                    _ => None,
                };
                let checked = match reader.check(frame) {
                    Ok(checked) => checked,
                    Err(e) => Err(tx.end(e))?,
                };
                if let Some(affected) = affected {
                    tx.unread_fetch = false;
                    tx.fetched_rows_affected = affected;
                    yield checked;
                    break;
                }
                yield checked;
            }
        };
        crate::arrow::open(columns, Box::pin(frames)).await
    }

    /// Every row of a statement.
    pub async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let TransactionRows { mut rows, .. } = self.fetch_stream(sql, params).await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(row?);
        }
        Ok(out)
    }

    /// Runs any statement and returns what it did: its columns and rows
    /// for a query, the rows it changed otherwise (`last_insert_id` is not
    /// reported here; use `execute`).
    pub async fn execute_query(&mut self, sql: &str, params: &[Value]) -> Result<StatementResult> {
        let (columns, rows) = {
            let TransactionRows { columns, mut rows } = self.fetch_stream(sql, params).await?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await {
                out.push(row?);
            }
            (columns, out)
        };
        Ok(StatementResult {
            rows_affected: self.fetched_rows_affected,
            last_insert_id: None,
            columns,
            rows,
        })
    }

    /// The first row of a statement, or `None`. The server sends the whole
    /// result, which is read and discarded: add a `LIMIT` to a large one.
    pub async fn fetch_one(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        let first = {
            let TransactionRows { mut rows, .. } = self.fetch_stream(sql, params).await?;
            rows.next().await.transpose()?
        };
        self.settle().await?;
        Ok(first)
    }

    /// Commits the transaction. Never retried: when the answer is lost
    /// (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, a broken stream) the
    /// commit's outcome is unknown, and the error says so.
    pub async fn commit(mut self) -> Result<()> {
        // An error before the request left (the transaction had ended) is
        // returned as it is: nothing was committed.
        self.send(Req::Commit(proto::CommitTransaction {})).await?;
        match self.receive().await {
            Ok(Resp::Ended(proto::TransactionEnded {
                committed: true, ..
            })) => Ok(()),
            Ok(other) => Err(unknown_outcome(unexpected("commit", &other))),
            Err(e) => Err(unknown_outcome(e)),
        }
    }

    /// Rolls the transaction back. A transaction that an error already
    /// ended was rolled back by the server: `Ok`.
    pub async fn rollback(mut self) -> Result<()> {
        if self.ended.is_some() {
            return Ok(());
        }
        match self
            .call(Req::Rollback(proto::RollbackTransaction {}))
            .await?
        {
            Resp::Ended(proto::TransactionEnded {
                committed: false, ..
            }) => Ok(()),
            other => Err(self.end(unexpected("rollback", &other))),
        }
    }
}

/// A commit whose answer was lost: say that it may have been committed.
fn unknown_outcome(e: Error) -> Error {
    match e.kind() {
        ErrorKind::Unavailable
        | ErrorKind::DeadlineExceeded
        | ErrorKind::Cancelled
        | ErrorKind::Internal => e.in_context(
            "the commit was sent but its answer was lost, so its outcome is unknown (it may \
             have been committed; check before repeating the transaction)",
        ),
        _ => e,
    }
}

impl RemoteDatabase {
    /// Runs `statements` in one transaction: all of them or none. The error
    /// of a failing statement begins `statement N:` (0-based) and carries the
    /// engine's code. With `read_only` the transaction is read-only (a
    /// statement that writes fails) and the call is retried as a read;
    /// otherwise it is a write, retried only when its request never left the
    /// client.
    pub async fn batch(
        &self,
        statements: &[Statement],
        read_only: bool,
    ) -> Result<Vec<StatementResult>> {
        let message = proto::BatchRequest {
            database: self.database.clone(),
            statements: statements
                .iter()
                .map(|s| proto::Statement {
                    sql: s.sql.clone(),
                    params: Self::params(&s.params),
                    ..Default::default()
                })
                .collect(),
            read_only,
            options: None,
        };
        let call = if read_only { Call::Read } else { Call::Write };
        let deadline = self.deadline();
        let response = self
            .run(call, deadline, || async {
                let mut client = self.client()?;
                let request = self.request(message.clone(), deadline)?;
                Ok(exchange(deadline, client.batch(request))
                    .await?
                    .into_inner())
            })
            .await?;
        response
            .results
            .into_iter()
            .map(|r| {
                let columns: Arc<[Column]> = r.columns.into_iter().map(Column::from).collect();
                let rows = r
                    .rows
                    .into_iter()
                    .map(|row| Ok(Row::new(columns.clone(), Vec::<Value>::try_from(row)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(StatementResult {
                    rows_affected: r.rows_affected,
                    last_insert_id: r.last_insert_id,
                    columns,
                    rows,
                })
            })
            .collect()
    }

    /// Begins a transaction: one Transaction stream, holding one connection
    /// on the server until it ends. The call's deadline (`with_timeout`)
    /// covers the whole transaction, from begin to commit. Opening it is
    /// retried as a read (nothing has run yet); nothing after that is.
    pub async fn transaction(&self, options: TransactionOptions) -> Result<Transaction> {
        let deadline = self.deadline();
        let begin = proto::BeginTransaction {
            database: self.database.clone(),
            isolation: proto::IsolationLevel::from(options.isolation) as i32,
            read_only: options.read_only,
            immediate: options.immediate,
            ..self.begin_consistency(options.read_only)
        };
        self.run(Call::Read, deadline, || async {
            let mut client = self.client()?;
            let (requests, outbound) = mpsc::unbounded();
            requests
                .unbounded_send(proto::TransactionRequest {
                    request: Some(Req::Begin(begin.clone())),
                })
                .map_err(|_| Error::internal("cannot queue the begin request"))?;
            let request = self.request(outbound, deadline)?;
            let mut responses = exchange(deadline, client.transaction(request))
                .await?
                .into_inner();
            match exchange(deadline, responses.message()).await? {
                Some(proto::TransactionResponse {
                    response: Some(Resp::Begun(begun)),
                }) => Ok(Transaction {
                    requests: Some(requests),
                    responses,
                    deadline,
                    database: begun.database,
                    engine: begun.engine,
                    unread_fetch: false,
                    fetched_rows_affected: 0,
                    ended: None,
                }),
                Some(proto::TransactionResponse {
                    response: Some(other),
                }) => Err(unexpected("begin", &other).into()),
                _ => Err(Error::internal(
                    "transaction stream broken: it ended without answering `begin`",
                )
                .into()),
            }
        })
        .await
    }
}
