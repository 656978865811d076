//! [`Session`]: one connection held for a series of statements — a
//! transaction or a batch. The pooled adapter runs each call on whatever
//! connection the pool hands out; a session keeps one until it is dropped,
//! and gives it back to the pool only in a known state (outside any
//! transaction): a session dropped in the middle of a transaction or of a
//! statement closes its connection instead, which makes the engine roll
//! back.

use async_trait::async_trait;
use iadb::{
    Column, DatabaseType, Error, ErrorKind, ExecuteOutcome, Result, RowBatch, Value,
    arrow::{ArrowWanted, RecordBatch},
};
use std::sync::Arc;

/// Isolation levels a transaction may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The engine's default.
    #[default]
    Default,
    /// PostgreSQL, MySQL/MariaDB.
    ReadCommitted,
    /// PostgreSQL, MySQL/MariaDB.
    RepeatableRead,
    /// PostgreSQL, MySQL/MariaDB, SQLite.
    Serializable,
    /// DuckDB.
    Snapshot,
}

impl Isolation {
    /// The SQL name of the level.
    pub fn sql(self) -> &'static str {
        match self {
            Isolation::Default => "DEFAULT",
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
            Isolation::Snapshot => "SNAPSHOT",
        }
    }

    /// INVALID_ARGUMENT for a level `engine` does not have.
    pub fn refused(self, engine: DatabaseType, accepted: &str) -> Error {
        Error::invalid_argument(format!(
            "isolation level {} is not available on {engine}; it accepts {accepted}",
            self.sql()
        ))
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOptions {
    /// Its isolation level.
    pub isolation: Isolation,
    /// Statements that write fail with the engine's own error.
    pub read_only: bool,
    /// SQLite: take the write lock at begin (`BEGIN IMMEDIATE`).
    pub immediate: bool,
}

impl TxOptions {
    /// INVALID_ARGUMENT when `immediate` is asked of an engine other than
    /// SQLite.
    pub fn check_immediate(&self, engine: DatabaseType) -> Result<()> {
        if self.immediate && engine != DatabaseType::Sqlite {
            return Err(Error::invalid_argument(format!(
                "`immediate` is SQLite's BEGIN IMMEDIATE; {engine} has no such mode"
            )));
        }
        Ok(())
    }
}

/// Where a statement's result goes as the engine reads it: its columns
/// once, before the first row, then its rows. An error returned here (the
/// client left, a limit was passed) stops the statement.
#[async_trait]
pub trait RowSink: Send {
    /// The result's columns (empty for a statement without a result).
    async fn columns(&mut self, columns: Arc<[Column]>) -> Result<()>;
    /// The next row, in column order.
    async fn row(&mut self, values: Vec<Value>) -> Result<()>;
    /// The next rows, as an adapter read them from its cursor. By default
    /// each is decoded and given to [`RowSink::row`].
    async fn rows(&mut self, batch: RowBatch) -> Result<()> {
        for values in batch.into_rows() {
            self.row(values?).await?;
        }
        Ok(())
    }
    /// Record batches of at most this size, when the sink takes the rows
    /// as Arrow arrays an adapter builds from its cursor
    /// ([`RowSink::arrow`]); `None` (the default) for rows.
    fn arrow_wanted(&self) -> Option<ArrowWanted> {
        None
    }
    /// The next rows, as a record batch an adapter built from its cursor:
    /// only for a sink whose [`RowSink::arrow_wanted`] is set.
    async fn arrow(&mut self, batch: RecordBatch) -> Result<()> {
        let _ = batch;
        Err(iadb::arrow_where_rows_were_expected())
    }
}

/// Most rows an adapter reads from its cursor into one batch
/// ([`iadb::QueryEvent::Rows`]). The server sends batches bounded by its
/// own limits (`--batch-rows`, `--batch-bytes`), joining or splitting
/// these; this bound keeps an adapter's batch small, so that a result's
/// memory does not grow with it, and large enough that the work per batch
/// (a trip through the streams between the cursor and the wire, a look
/// for a client that left) is spread over many rows.
pub const ADAPTER_BATCH_ROWS: usize = 512;

/// Most bytes (about: the row that passes it is kept) in one adapter's
/// batch.
pub const ADAPTER_BATCH_BYTES: usize = 128 * 1024;

/// Whether an adapter's `batch` is full ([`ADAPTER_BATCH_ROWS`],
/// [`ADAPTER_BATCH_BYTES`]) and goes to the consumer.
pub fn step_batch_full(batch: &RowBatch) -> bool {
    batch.len() >= ADAPTER_BATCH_ROWS || batch.byte_len() >= ADAPTER_BATCH_BYTES
}

/// A sink that keeps every row, up to a size limit (a batch's results).
pub struct CollectSink {
    /// The columns, once known.
    pub columns: Arc<[Column]>,
    /// The rows read so far.
    pub rows: Vec<Vec<Value>>,
    /// Bytes the rows take on the wire (approximately) so far.
    pub bytes: usize,
    /// The most bytes the rows may take; past it, RESOURCE_EXHAUSTED.
    pub limit: usize,
}

impl CollectSink {
    /// An empty sink bounded by `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            columns: Arc::from(Vec::new()),
            rows: Vec::new(),
            bytes: 0,
            limit,
        }
    }
}

#[async_trait]
impl RowSink for CollectSink {
    async fn columns(&mut self, columns: Arc<[Column]>) -> Result<()> {
        self.columns = columns;
        Ok(())
    }

    async fn row(&mut self, values: Vec<Value>) -> Result<()> {
        self.bytes += values.iter().map(Value::encoded_len_hint).sum::<usize>() + 2;
        if self.bytes > self.limit {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "the rows exceed the result limit of {} bytes (--max-batch-result-bytes); \
                     stream a large result with FetchAll or inside a Transaction",
                    self.limit
                ),
            ));
        }
        self.rows.push(values);
        Ok(())
    }
}

/// One connection held for a series of statements. Statements take `?`
/// placeholders on every engine, as on pooled calls.
#[async_trait]
pub trait Session: Send {
    /// The engine behind the session.
    fn engine(&self) -> DatabaseType;
    /// A statement run (or about to run) on this session changes its
    /// connection's session state (a TEMP object, `SET`, a session lock,
    /// ...): the connection is reset, or closed where the engine has no
    /// cheap reset, before the pool lends it again.
    fn changes_session_state(&mut self);
    /// Begins a transaction.
    async fn begin(&mut self, options: TxOptions) -> Result<()>;
    /// Runs one statement (or, without parameters, a script) and sends
    /// its rows, if any, to `sink`; returns what it changed.
    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        sink: &mut dyn RowSink,
    ) -> Result<ExecuteOutcome>;
    /// Runs a script of statements without parameters, as written (no
    /// placeholder rewriting).
    async fn run_script(&mut self, sql: &str) -> Result<()>;
    /// Runs one statement that returns no rows.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome>;
    /// Runs one statement once per parameter set, all or nothing (inside a
    /// transaction: a savepoint).
    async fn execute_many(
        &mut self,
        sql: &str,
        param_sets: &[Vec<Value>],
    ) -> Result<ExecuteOutcome>;
    /// Commits the transaction.
    async fn commit(&mut self) -> Result<()>;
    /// Rolls the transaction back.
    async fn rollback(&mut self) -> Result<()>;
}

/// The error for an engine without sessions.
pub fn no_sessions(engine: DatabaseType, why: &str) -> Error {
    Error::new(
        ErrorKind::Unimplemented,
        format!("interactive transactions are not available on {engine}: {why}"),
    )
}
