//! What the sqlx-based adapters share: mapping sqlx errors to iadb errors.

use super::WaitGuard;
use iadb::{Error, ErrorKind};
use sqlx::error::{DatabaseError, ErrorKind as SqlxKind};
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// How an engine's error codes map to iadb error kinds beyond what sqlx's
/// own classification tells.
pub(crate) type CodeClassifier = fn(&dyn DatabaseError) -> Option<ErrorKind>;

/// Maps a sqlx error to an iadb error; `classify` refines database errors by
/// the engine's codes. The message is the engine's text (never a URL).
pub(crate) fn map_sqlx_error(e: sqlx::Error, classify: CodeClassifier) -> Error {
    match e {
        sqlx::Error::Database(db) => {
            let kind = match db.kind() {
                SqlxKind::UniqueViolation => ErrorKind::AlreadyExists,
                SqlxKind::ForeignKeyViolation
                | SqlxKind::NotNullViolation
                | SqlxKind::CheckViolation => ErrorKind::FailedPrecondition,
                _ => classify(db.as_ref()).unwrap_or(ErrorKind::InvalidArgument),
            };
            let mut err = Error::new(kind, db.message().to_owned());
            if let Some(code) = db.code() {
                err = err.with_code(code.into_owned());
            }
            err
        }
        sqlx::Error::PoolTimedOut => {
            Error::unavailable("timed out waiting for a free connection from the pool")
        }
        sqlx::Error::PoolClosed => Error::unavailable("the connection pool is closed"),
        sqlx::Error::Io(io) => Error::unavailable(format!("engine unreachable: {io}")),
        sqlx::Error::Tls(tls) => Error::unavailable(format!("TLS error: {tls}")),
        sqlx::Error::WorkerCrashed => Error::unavailable("the database worker stopped"),
        sqlx::Error::Configuration(c) => {
            Error::invalid_argument(format!("bad connection configuration: {c}"))
        }
        sqlx::Error::ColumnDecode { index, source } => {
            Error::invalid_argument(format!("cannot decode column {index}: {source}"))
        }
        sqlx::Error::Decode(source) => {
            Error::invalid_argument(format!("cannot decode value: {source}"))
        }
        sqlx::Error::Encode(source) => {
            Error::invalid_argument(format!("cannot encode parameter: {source}"))
        }
        sqlx::Error::Protocol(p) => Error::internal(format!("protocol error: {p}")),
        other => Error::internal(other.to_string()),
    }
}

/// A pooled connection that went back to the pool less than this long ago is
/// handed out without a ping. Under load, calls reuse connections within
/// microseconds, and skipping the ping saves them a round trip to the engine
/// each (50–70 µs of a PostgreSQL point select here). A connection idle
/// longer is pinged first, and one that fails the ping is closed and
/// replaced. This is pgbouncer's `server_check_delay`, whose default is 30 s,
/// with a shorter delay.
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pools' `before_acquire` hook (with sqlx's `test_before_acquire` off):
/// pings a connection only when it has been idle for [`PING_AFTER_IDLE`] or
/// longer. A failed ping makes sqlx close the connection and hand out
/// another (or open a new one).
pub(crate) fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for < PING_AFTER_IDLE {
            return Ok(true);
        }
        Ok(conn.ping().await.is_ok())
    })
}

/// The pool of a sqlx adapter: empty until `connect`, emptied by
/// `disconnect`; what every sqlx adapter needs to hold, hand out and report.
pub(crate) struct PoolSlot<DB: sqlx::Database> {
    pool: std::sync::RwLock<Option<sqlx::Pool<DB>>>,
    /// Calls inside [`PoolSlot::acquire`] right now (sqlx does not count
    /// its waiters).
    waiting: std::sync::Arc<AtomicU32>,
    /// Connections found inside a transaction and rolled back.
    rolled_back: std::sync::atomic::AtomicU64,
}

impl<DB: sqlx::Database> PoolSlot<DB> {
    /// No pool yet.
    pub(crate) fn new() -> Self {
        Self {
            pool: std::sync::RwLock::new(None),
            waiting: Default::default(),
            rolled_back: Default::default(),
        }
    }

    /// Counts a connection that was found inside a transaction and rolled
    /// back (reported as `pool_transactions_rolled_back_total`).
    pub(crate) fn count_rollback(&self) {
        self.rolled_back.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection from the open pool, counted as waiting until it comes;
    /// `map_err` is the engine's error mapping.
    pub(crate) async fn acquire(
        &self,
        map_err: fn(sqlx::Error) -> Error,
    ) -> Result<sqlx::pool::PoolConnection<DB>, Error> {
        let pool = self.get()?;
        let _waiting = WaitGuard::new(&self.waiting);
        pool.acquire().await.map_err(map_err)
    }

    /// The open pool, or UNAVAILABLE.
    pub(crate) fn get(&self) -> Result<sqlx::Pool<DB>, Error> {
        self.pool
            .read()
            .map_err(|_| Error::internal("pool lock poisoned"))?
            .clone()
            .filter(|p| !p.is_closed())
            .ok_or_else(|| Error::unavailable("database is not connected"))
    }

    /// Holds `pool` from now on.
    pub(crate) fn set(&self, pool: sqlx::Pool<DB>) -> Result<(), Error> {
        *self
            .pool
            .write()
            .map_err(|_| Error::internal("pool lock poisoned"))? = Some(pool);
        Ok(())
    }

    /// Closes and forgets the pool, if any.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        let pool = self
            .pool
            .write()
            .map_err(|_| Error::internal("pool lock poisoned"))?
            .take();
        if let Some(pool) = pool {
            pool.close().await;
        }
        Ok(())
    }

    /// Size, idle and max of the open pool.
    pub(crate) fn status(&self) -> Option<iadb::PoolStatus> {
        let pool = self.get().ok()?;
        Some(iadb::PoolStatus {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
            waiting: self.waiting.load(Ordering::Relaxed),
            rolled_back: self.rolled_back.load(Ordering::Relaxed),
        })
    }
}
