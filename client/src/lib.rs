//! iadb-client: [`RemoteDatabase`], the [`DatabaseInterface`] over gRPC, so a
//! Rust program uses a remote iadb server exactly as it would a local adapter.
//!
//! Reads (`FetchAll`, `FetchOne`, `TableExists`, `Health`) are retried with
//! exponential backoff when the server answers UNAVAILABLE; writes
//! (`Execute`, `ExecuteMany`) are not, since a write that reached the engine
//! before the connection failed must not be applied twice.

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use iadb::{
    Column, DatabaseInterface, Error, ErrorKind, ExecuteOutcome, QueryEvent, QueryStream, Result,
    Value,
    proto::{self, database_client::DatabaseClient, fetch_all_response::Frame},
};
use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};
use tonic::transport::{Channel, Endpoint};

pub use iadb;

/// Largest message the client sends or accepts (a row batch with a large
/// value, a request with large parameters).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How reads are retried when the server answers UNAVAILABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// Delay before the first retry; doubles each time.
    pub initial_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// A database behind an iadb server.
pub struct RemoteDatabase {
    endpoint: String,
    database: String,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    retry: RetryPolicy,
    client: RwLock<Option<DatabaseClient<Channel>>>,
}

impl RemoteDatabase {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:50051`), using the
    /// server's default database; `connect` opens it.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            database: String::new(),
            timeout: None,
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            client: RwLock::new(None),
        }
    }

    /// Connects to `endpoint` and uses `database` (empty: the default).
    pub async fn connect_to(
        endpoint: impl Into<String>,
        database: impl Into<String>,
    ) -> Result<Self> {
        let db = Self::new(endpoint).with_database(database);
        db.connect().await?;
        Ok(db)
    }

    /// Uses the database named `name` on the server.
    pub fn with_database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// Gives every call this deadline (sent to the server, which stops the
    /// query when it passes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long `connect` tries to reach the server.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How reads are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The database name requests carry.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn client(&self) -> Result<DatabaseClient<Channel>> {
        self.client
            .read()
            .map_err(|_| Error::internal("client lock poisoned"))?
            .clone()
            .ok_or_else(|| Error::unavailable("not connected: call connect() first"))
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(t) = self.timeout {
            request.set_timeout(t);
        }
        request
    }

    /// Runs a read, retrying UNAVAILABLE answers per the retry policy.
    async fn read<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        call.retry(self.retry.backoff())
            .when(Error::is_retryable)
            .await
    }

    /// The server's health report for this database (or, with `all`, every
    /// database), with pool figures.
    pub async fn health(&self, all: bool) -> Result<Vec<proto::DatabaseHealth>> {
        let database = if all {
            String::new()
        } else {
            self.database.clone()
        };
        self.read(|| async {
            let mut client = self.client()?;
            let response = client
                .health(self.request(proto::HealthRequest {
                    database: database.clone(),
                }))
                .await?;
            Ok(response.into_inner().databases)
        })
        .await
    }

    /// Runs a migration action on this database (`files`: app migrations
    /// sent with the request, in addition to the server's own).
    pub async fn migrate(&self, request: proto::MigrateRequest) -> Result<proto::MigrateResponse> {
        let mut client = self.client()?;
        let request = proto::MigrateRequest {
            database: self.database.clone(),
            ..request
        };
        Ok(client.migrate(self.request(request)).await?.into_inner())
    }

    /// Opens a FetchAll stream and reads its header; with `retry`,
    /// UNAVAILABLE answers before the header are retried.
    async fn open_stream(&self, sql: &str, params: &[Value], retry: bool) -> Result<QueryStream> {
        let open = || async {
            let mut client = self.client()?;
            let mut inbound = client
                .fetch_all(self.request(proto::FetchAllRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    params: Self::params(params),
                    options: None,
                }))
                .await?
                .into_inner();
            match inbound.message().await? {
                Some(proto::FetchAllResponse {
                    frame: Some(Frame::Header(header)),
                }) => {
                    let columns: Arc<[Column]> =
                        header.columns.into_iter().map(Column::from).collect();
                    Ok((columns, inbound))
                }
                _ => Err(Error::internal("stream did not start with a header")),
            }
        };
        let (columns, mut inbound) = if retry {
            self.read(open).await?
        } else {
            open().await?
        };
        let events = async_stream::try_stream! {
            let mut finished = false;
            while let Some(message) = inbound.message().await.map_err(Error::from)? {
                match message.frame {
                    Some(Frame::Batch(batch)) => {
                        for row in batch.rows {
                            yield QueryEvent::Row(Vec::<Value>::try_from(row)?);
                        }
                    }
                    Some(Frame::Summary(summary)) => {
                        finished = true;
                        yield QueryEvent::Done(ExecuteOutcome {
                            rows_affected: summary.rows_affected,
                            last_insert_id: None,
                        });
                    }
                    _ => Err(Error::internal("unexpected frame in a result stream"))?,
                }
            }
            if !finished {
                Err(Error::new(ErrorKind::Unavailable, "result stream ended without a summary"))?;
            }
        };
        Ok(QueryStream {
            columns,
            events: events.boxed(),
        })
    }

    fn params(params: &[Value]) -> Vec<proto::Value> {
        params.iter().cloned().map(Into::into).collect()
    }
}

#[async_trait]
impl DatabaseInterface for RemoteDatabase {
    async fn connect(&self) -> Result<()> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| {
                Error::invalid_argument(format!("bad server address `{}`: {e}", self.endpoint))
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            Error::unavailable(format!(
                "cannot reach iadb server at {}: {e}",
                self.endpoint
            ))
        })?;
        let client = DatabaseClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        *self
            .client
            .write()
            .map_err(|_| Error::internal("client lock poisoned"))? = Some(client);
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        self.client
            .write()
            .map_err(|_| Error::internal("client lock poisoned"))?
            .take();
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.client.read().map(|c| c.is_some()).unwrap_or(false)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        self.open_stream(sql, params, true).await
    }

    /// Not retried, unlike the fetches: the statement may be a write, and a
    /// write that reached the engine before the connection failed must not
    /// run twice.
    async fn execute_query(&self, sql: &str, params: &[Value]) -> iadb::QueryResult {
        let started = std::time::Instant::now();
        iadb::collect_query_result(self.open_stream(sql, params, false).await, started).await
    }

    async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Option<iadb::Row>> {
        self.read(|| async {
            let mut client = self.client()?;
            let response = client
                .fetch_one(self.request(proto::FetchOneRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    params: Self::params(params),
                    options: None,
                }))
                .await?
                .into_inner();
            let columns: Arc<[Column]> = response.columns.into_iter().map(Column::from).collect();
            response
                .row
                .map(|row| Ok(iadb::Row::new(columns, Vec::<Value>::try_from(row)?)))
                .transpose()
        })
        .await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        let mut client = self.client()?;
        let response = client
            .execute(self.request(proto::ExecuteRequest {
                database: self.database.clone(),
                sql: sql.to_owned(),
                params: Self::params(params),
                options: None,
            }))
            .await?
            .into_inner();
        Ok(ExecuteOutcome {
            rows_affected: response.rows_affected,
            last_insert_id: response.last_insert_id,
        })
    }

    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome> {
        let mut client = self.client()?;
        let response = client
            .execute_many(
                self.request(proto::ExecuteManyRequest {
                    database: self.database.clone(),
                    sql: sql.to_owned(),
                    param_sets: param_sets
                        .iter()
                        .map(|set| proto::Row {
                            values: Self::params(set),
                        })
                        .collect(),
                    options: None,
                }),
            )
            .await?
            .into_inner();
        Ok(ExecuteOutcome {
            rows_affected: response.rows_affected,
            last_insert_id: None,
        })
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        self.read(|| async {
            let mut client = self.client()?;
            let response = client
                .table_exists(self.request(proto::TableExistsRequest {
                    database: self.database.clone(),
                    table: table.to_owned(),
                }))
                .await?;
            Ok(response.into_inner().exists)
        })
        .await
    }

    /// Quotes names the way the server's engine reads them (MySQL:
    /// backticks), which it learns from the server's health report.
    async fn create_table(&self, table: &str, columns: &[(String, String)]) -> Result<()> {
        let engine = self
            .health(false)
            .await?
            .first()
            .map(|h| h.engine.clone())
            .unwrap_or_default();
        let sql = iadb::create_table_sql(table, columns, |name| {
            if engine == "mysql" {
                format!("`{}`", name.replace('`', "``"))
            } else {
                iadb::quote_identifier(name)
            }
        })?;
        self.execute(&sql, &[]).await?;
        Ok(())
    }

    async fn health_check(&self) -> Result<()> {
        let report = self.health(false).await?;
        match report.first() {
            Some(h) if h.healthy => Ok(()),
            Some(h) => Err(Error::unavailable(format!(
                "database `{}` is unhealthy: {}",
                h.name, h.message
            ))),
            None => Err(Error::internal("empty health report")),
        }
    }
}
