//! Backend adapters: one module per engine, each implementing
//! [`DatabaseInterface`], behind its cargo feature.

use iadb::{ConnectionConfig, DatabaseInterface, DatabaseType, Error, Result};
use std::{sync::Arc, time::Duration};

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sqlx_common;

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteBackend;

/// Pool settings shared by the engines that pool connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a call waits for a free connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds the adapter for `config`'s engine (not yet connected).
pub fn backend_for(
    config: &ConnectionConfig,
    pool: PoolSettings,
) -> Result<Arc<dyn DatabaseInterface>> {
    match config.db_type {
        #[cfg(feature = "sqlite")]
        DatabaseType::Sqlite => Ok(Arc::new(SqliteBackend::new(config, pool)?)),
        other => Err(Error::invalid_argument(format!(
            "engine {other} is not compiled into this server (enable its cargo feature)"
        ))),
    }
}

/// Checks the number of `?` placeholders against the parameters given.
pub(crate) fn check_param_count(
    sql: &str,
    dialect: crate::placeholders::Dialect,
    given: usize,
) -> Result<()> {
    let expected = crate::placeholders::count_placeholders(sql, dialect);
    if expected != given {
        return Err(Error::invalid_argument(format!(
            "wrong parameter count: the statement has {expected} placeholder(s), {given} parameter(s) given"
        )));
    }
    Ok(())
}

/// Rejects empty or whitespace-only SQL.
pub(crate) fn check_sql(sql: &str) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(Error::invalid_argument("empty SQL statement"));
    }
    Ok(())
}
