//! The connection pool.

use super::errors::map_duckdb_error;
use crate::backend::PoolSettings;
use duckdb::{AccessMode, Config, Connection};
use iadb::{Error, PoolStatus, Result};
use std::{
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// iadb's sandbox: DuckDB settings applied when the database opens, before
/// the URL's own options (which override any of them, per database).
///
/// * `enable_external_access = false`: no file of the host other than the
///   database itself (and its WAL and temporary folder) can be read or
///   written, no URL fetched: `read_text`, `read_csv`, `COPY ... TO`,
///   `ATTACH` of another file, `LOAD` of an extension file are refused.
/// * no extension is installed or loaded on demand, nor any community one.
/// * `lock_configuration = true`: no `SET`/`RESET` of any setting, global
///   or per connection, so a client cannot undo the above nor change the
///   database's `memory_limit` or `threads` for everyone. The one setting
///   iadb itself sets on each new connection (the streaming buffer, after
///   the lock is on) is let through by `allowed_configs`; a client may set
///   it too, on its own connection.
pub(super) const SANDBOX_SETTINGS: &[(&str, &str)] = &[
    ("enable_external_access", "false"),
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("allow_community_extensions", "false"),
    ("allowed_configs", "[max_streaming_buffer_size]"),
    ("lock_configuration", "true"),
];

/// Opens the database and returns its root connection (blocking: it may
/// create the file or replay DuckDB's write-ahead log).
pub(super) fn open_database(
    path: &str,
    memory: bool,
    options: &[(String, String)],
) -> Result<Connection> {
    if !memory
        && let Some(folder) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::create_dir_all(folder).map_err(|e| {
            Error::unavailable(format!("cannot create folder {}: {e}", folder.display()))
        })?;
    }
    let config_error = |e: duckdb::Error| {
        Error::invalid_argument(format!("bad DuckDB option in the database URL: {e}"))
    };
    let mut config = Config::default();
    for (key, value) in SANDBOX_SETTINGS {
        if options.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        config = config.with(key, value).map_err(config_error)?;
    }
    for (key, value) in options {
        config = if key == "mode" {
            let mode = match value.as_str() {
                "ro" | "read_only" => AccessMode::ReadOnly,
                "rw" | "read_write" => AccessMode::ReadWrite,
                other => {
                    return Err(Error::invalid_argument(format!(
                        "duckdb URL option mode={other}: expected ro or rw"
                    )));
                }
            };
            config.access_mode(mode)
        } else {
            config.with(key, value)
        }
        .map_err(config_error)?;
    }
    let opened = if memory {
        Connection::open_in_memory_with_flags(config)
    } else {
        Connection::open_with_flags(path, config)
    };
    opened.map_err(map_duckdb_error)
}

/// Clones of the root connection, lent out one call at a time.
pub(super) struct ConnectionPool {
    /// Keeps the database open and is the source of new connections.
    root: Mutex<Option<Connection>>,
    idle: Mutex<Vec<Connection>>,
    /// Clones open (lent out or idle).
    open: AtomicU32,
    /// One permit per connection that may be lent out; closed on disconnect.
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit right now.
    waiting: Arc<AtomicU32>,
    max: u32,
    acquire_timeout: Duration,
    /// Run on each new connection.
    connection_setup: String,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data (a list, a flag set) stays consistent whatever a
    // panicking holder was doing, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnectionPool {
    pub(super) fn new(root: Connection, settings: PoolSettings, connection_setup: String) -> Self {
        let max = settings.max_connections.max(1);
        Self {
            root: Mutex::new(Some(root)),
            idle: Mutex::new(Vec::new()),
            open: AtomicU32::new(0),
            permits: Arc::new(Semaphore::new(max as usize)),
            waiting: Default::default(),
            max,
            acquire_timeout: settings.acquire_timeout,
            connection_setup,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    pub(super) async fn acquire(self: &Arc<Self>) -> Result<PooledConnection> {
        let waiting = crate::backend::WaitGuard::new(&self.waiting);
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "timed out after {:?} waiting for a free DuckDB connection ({} in use)",
                        self.acquire_timeout, self.max
                    ))
                })?
                .map_err(|_| Error::unavailable("database is not connected"))?;
        drop(waiting);
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                // Connecting to an open database creates a client context
                // and sets a setting: no I/O, quick enough for the async
                // thread.
                let conn = {
                    let root = lock(&self.root);
                    let root = root
                        .as_ref()
                        .ok_or_else(|| Error::unavailable("database is not connected"))?;
                    root.try_clone().map_err(map_duckdb_error)?
                };
                conn.execute_batch(&self.connection_setup)
                    .map_err(map_duckdb_error)?;
                self.open.fetch_add(1, Ordering::Relaxed);
                conn
            }
        };
        Ok(PooledConnection {
            conn: Some(conn),
            pool: self.clone(),
            reuse: true,
            _permit: permit,
        })
    }

    /// Stops lending and hands back every connection it holds, for the
    /// caller to close off the async threads (closing the last connection of
    /// a file database checkpoints it).
    pub(super) fn close(&self) -> Vec<Connection> {
        self.permits.close();
        let mut all: Vec<Connection> = lock(&self.idle).drain(..).collect();
        self.open
            .fetch_sub(u32::try_from(all.len()).unwrap_or(0), Ordering::Relaxed);
        all.extend(lock(&self.root).take());
        all
    }

    pub(super) fn status(&self) -> PoolStatus {
        PoolStatus {
            size: self.open.load(Ordering::Relaxed),
            idle: u32::try_from(lock(&self.idle).len()).unwrap_or(u32::MAX),
            max: self.max,
            waiting: self.waiting.load(Ordering::Relaxed),
            rolled_back: 0,
        }
    }
}

/// A connection lent to one call; back to the pool when dropped, or closed
/// when `reuse` was turned off (its statement was interrupted or panicked).
pub(super) struct PooledConnection {
    conn: Option<Connection>,
    pool: Arc<ConnectionPool>,
    pub(super) reuse: bool,
    // Released after `drop` has put the connection back.
    _permit: OwnedSemaphorePermit,
}

impl PooledConnection {
    pub(super) fn get(&self) -> Result<&Connection> {
        self.conn
            .as_ref()
            .ok_or_else(|| Error::internal("DuckDB connection used after release"))
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.reuse && !self.pool.is_closed() {
            lock(&self.pool.idle).push(conn);
        } else {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            drop(conn);
        }
    }
}
