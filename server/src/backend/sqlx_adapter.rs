//! The pooled adapter of the three sqlx engines (SQLite, PostgreSQL,
//! MySQL/MariaDB), generic over [`SqlxEngine`]: the pool's life, lending a
//! connection for one call and what becomes of it when the call is dropped,
//! the row stream of a query, Execute and ExecuteMany, sessions. What is an
//! engine's own (binding, decoding, error mapping, its pool hooks and its
//! connect options) is its `SqlxEngine` impl.

use super::{
    Backend, PoolSettings,
    session::Session,
    sqlx_common::{Call, PoolSlot, Readied, SqlxEngine, SqlxSession, Step},
};
use crate::migrate::{MigrationSession, OnSession};
use async_trait::async_trait;
use futures::StreamExt;
use iadb::{
    DatabaseInterface, Error, ExecuteOutcome, PoolStatus, QueryEvent, QueryStream, Value,
    arrow::ArrowWanted,
};
use sqlx::pool::PoolConnection;

/// The pooled adapter of a sqlx engine `E`; `E` holds the engine's
/// settings from its URL.
pub struct SqlxBackend<E: SqlxEngine> {
    engine: E,
    settings: PoolSettings,
    pool: PoolSlot<E::DB>,
}

impl<E: SqlxEngine> SqlxBackend<E> {
    /// Runs `statement` on a lent connection: the steps of
    /// [`DatabaseInterface::query`] (and of [`Backend::query_arrow`]).
    async fn query_statement(&self, statement: E::Statement) -> Result<QueryStream, Error> {
        let lent = self.lend(Call::Stream).await?;
        let mut steps = async_stream::try_stream! {
            let mut lent = lent;
            let mut columns_sent = false;
            let ended = {
                let mut steps = E::steps(lent.conn()?, statement);
                loop {
                    match steps.next().await {
                        Some(Ok(Step::Done(outcome))) => break Ok(outcome),
                        Some(Ok(step)) => {
                            columns_sent |= matches!(step, Step::Columns(_));
                            yield step;
                        }
                        Some(Err(e)) => break Err(e),
                        None => {
                            break Err(Error::internal(format!(
                                "{}: a result without its outcome",
                                E::ENGINE
                            )));
                        }
                    }
                }
            };
            // Ended, or failed before its columns (the statement did not
            // start, or ended with its error): the connection is as good
            // as it was. An error past them leaves the result unread, and
            // the connection to the engine ([`SqlxEngine::abandon`]).
            if ended.is_ok() || !columns_sent {
                lent.finish();
            }
            let outcome = ended?;
            yield Step::Done(outcome);
        }
        .boxed();
        let columns = match steps.next().await {
            Some(Ok(Step::Columns(columns))) => columns,
            Some(Err(e)) => return Err(e),
            Some(Ok(_)) | None => {
                return Err(Error::internal(format!(
                    "{}: a result without its columns",
                    E::ENGINE
                )));
            }
        };
        let events = steps.map(|step| match step {
            Ok(Step::Rows(batch)) => Ok(QueryEvent::Rows(batch)),
            Ok(Step::Arrow(batch)) => Ok(QueryEvent::Arrow(batch)),
            Ok(Step::Done(outcome)) => Ok(QueryEvent::Done(outcome)),
            Ok(Step::Columns(_)) => Err(Error::internal(format!(
                "{}: columns given twice",
                E::ENGINE
            ))),
            Err(e) => Err(e),
        });
        Ok(QueryStream {
            columns,
            events: events.boxed(),
        })
    }

    /// An adapter for `config` (a URL of `E`'s engine; its settings are
    /// read and checked here); `connect` opens its pool.
    pub fn new(config: &iadb::ConnectionConfig, settings: PoolSettings) -> Result<Self, Error> {
        Ok(Self {
            engine: E::try_from(config)?,
            settings,
            pool: PoolSlot::new(),
        })
    }

    /// The engine's settings.
    #[cfg(feature = "postgres")]
    pub(crate) fn engine(&self) -> &E {
        &self.engine
    }

    /// A pooled connection readied for a call or a session
    /// ([`SqlxEngine::ready`]), with its guard.
    async fn acquire(&self) -> Result<Readied<E>, Error> {
        let conn = self.pool.acquire(E::map_error).await?;
        E::ready(conn, &self.pool).await
    }

    /// A pooled connection lent for one call.
    async fn lend(&self, call: Call) -> Result<Lent<E>, Error> {
        let (conn, guard) = self.acquire().await?;
        Ok(Lent {
            conn: Some(conn),
            guard: Some(guard),
            call,
        })
    }
}

/// A pooled connection lent for one call, and its guard. Dropped before
/// [`Lent::finish`] (the call was dropped while its statement ran), the
/// engine decides what becomes of the connection ([`SqlxEngine::abandon`]).
struct Lent<E: SqlxEngine> {
    conn: Option<PoolConnection<E::DB>>,
    guard: Option<E::Guard>,
    call: Call,
}

impl<E: SqlxEngine> Lent<E> {
    fn conn(&mut self) -> Result<&mut <E::DB as sqlx::Database>::Connection, Error> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| Error::internal("connection gone"))
    }

    /// The statement ended, well or not: the connection goes back to the
    /// pool as it is.
    fn finish(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            E::disarm(&mut guard);
        }
    }
}

impl<E: SqlxEngine> Drop for Lent<E> {
    fn drop(&mut self) {
        if let (Some(guard), Some(conn)) = (self.guard.take(), self.conn.take()) {
            E::abandon(conn, guard, self.call);
        }
    }
}

#[async_trait]
impl<E: SqlxEngine> DatabaseInterface for SqlxBackend<E> {
    async fn connect(&self) -> Result<(), Error> {
        let base = sqlx::pool::PoolOptions::<E::DB>::new()
            .max_connections(self.settings.max_connections.max(1))
            .acquire_timeout(self.settings.acquire_timeout)
            .test_before_acquire(false);
        let options = self.engine.first_connect_options().await?;
        let pool = self
            .engine
            .pool_options(base, self.pool.rollback_counter())?
            .connect_with(options)
            .await
            .map_err(E::map_error)?;
        self.engine.watch_pool(&pool);
        self.pool.set(pool)
    }

    async fn disconnect(&self) -> Result<(), Error> {
        self.pool.close().await
    }

    fn is_connected(&self) -> bool {
        self.pool.get().is_ok()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        self.pool.status()
    }

    fn quote_identifier(&self, name: &str) -> String {
        E::quote_identifier(name)
    }

    /// The statement runs as the first step is read, here: an error there
    /// is the call's, and the columns come before the stream.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream, Error> {
        self.query_statement(E::statement(sql, params)?).await
    }

    async fn query_arrow(
        &self,
        sql: &str,
        params: &[Value],
        wanted: ArrowWanted,
    ) -> Result<QueryStream, Error> {
        let statement = E::alone(E::with_arrow(E::statement(sql, params)?, wanted));
        self.query_statement(statement).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome, Error> {
        E::check(sql, params)?;
        let mut lent = self.lend(Call::Statement).await?;
        let outcome = E::execute_on(lent.conn()?, sql, params).await;
        lent.finish();
        outcome
    }

    async fn execute_many(
        &self,
        sql: &str,
        param_sets: &[Vec<Value>],
    ) -> Result<ExecuteOutcome, Error> {
        super::check_sql(sql)?;
        let mut lent = self.lend(Call::Statement).await?;
        // Committed or rolled back: the connection can go back to the pool.
        let outcome = E::execute_many_on(lent.conn()?, sql, param_sets).await;
        lent.finish();
        outcome
    }

    async fn table_exists(&self, table: &str) -> Result<bool, Error> {
        let mut lent = self.lend(Call::Statement).await?;
        let found = E::table_exists(lent.conn()?, table).await;
        lent.finish();
        found
    }
}

#[async_trait]
impl<E: SqlxEngine> Backend for SqlxBackend<E> {
    async fn migration_session(&self) -> Result<Box<dyn MigrationSession>, Error> {
        let (conn, guard) = self.acquire().await?;
        let session = if self.engine.migrates_on_pool() {
            SqlxSession::<E>::new(conn, guard)
        } else {
            SqlxSession::<E>::detached(conn, guard)
        };
        Ok(Box::new(OnSession(Box::new(session))))
    }

    async fn session(&self) -> Result<Box<dyn Session>, Error> {
        let (conn, guard) = self.acquire().await?;
        Ok(Box::new(SqlxSession::<E>::new(conn, guard)))
    }

    async fn broad_privileges(&self) -> Result<Vec<String>, Error> {
        E::broad_privileges(self).await
    }
}
