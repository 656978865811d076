//! The configured databases by name, and their health.

use crate::{
    backend::{Backend, PoolSettings, backend_for},
    config::{DEFAULT_DATABASE_NAME, DatabaseSpec},
    migrate::{
        MigrateAction, MigrateOptions, MigrateReport, Migration, Migrator, store::MigrationStore,
        system_migrations,
    },
};
use iadb::{DatabaseInterface, DatabaseType, Error, proto};
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tracing::info;

/// How long one health query may take before the database counts as down.
const HEALTH_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

struct Entry {
    engine: DatabaseType,
    backend: Arc<dyn Backend>,
    app_migrations: Vec<Migration>,
}

/// Databases by name; the empty name means [`DEFAULT_DATABASE_NAME`].
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl Registry {
    /// Builds and connects every database. A database that cannot be reached
    /// at start-up fails the start (with its name, never its credentials).
    pub async fn connect(specs: &[DatabaseSpec], pool: PoolSettings) -> Result<Self, Error> {
        let mut entries = BTreeMap::new();
        for spec in specs {
            let backend = backend_for(&spec.config, pool)?;
            backend.connect().await.map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "database `{}` ({}): {}",
                        spec.name,
                        spec.config.db_type,
                        e.message()
                    ),
                )
            })?;
            info!(
                database = %spec.name,
                engine = %spec.config.db_type,
                url = %spec.config.redacted_url(),
                "connected"
            );
            entries.insert(
                spec.name.clone(),
                Entry {
                    engine: spec.config.db_type,
                    backend,
                    app_migrations: spec.app_migrations.clone(),
                },
            );
        }
        Ok(Self { entries })
    }

    /// The database named `name` (empty: the default one).
    pub fn get(&self, name: &str) -> Result<Arc<dyn DatabaseInterface>, Error> {
        Ok(self.entry(name)?.backend.clone())
    }

    /// The adapter of `name`, with the server-side extras (migrations).
    pub fn backend(&self, name: &str) -> Result<Arc<dyn Backend>, Error> {
        Ok(self.entry(name)?.backend.clone())
    }

    fn entry(&self, name: &str) -> Result<&Entry, Error> {
        let name = if name.is_empty() {
            DEFAULT_DATABASE_NAME
        } else {
            name
        };
        self.entries.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
            Error::invalid_argument(format!(
                "unknown database `{name}` (configured: {})",
                known.join(", ")
            ))
        })
    }

    /// The configured name that `name` stands for (empty: the default) and
    /// its engine; `None` when no such database is configured.
    pub fn describe(&self, name: &str) -> Option<(&str, DatabaseType)> {
        let name = if name.is_empty() {
            DEFAULT_DATABASE_NAME
        } else {
            name
        };
        self.entries
            .get_key_value(name)
            .map(|(name, entry)| (name.as_str(), entry.engine))
    }

    /// Pool figures of `name`, read without running anything.
    pub fn pool_status(&self, name: &str) -> Option<iadb::PoolStatus> {
        self.entry(name).ok()?.backend.pool_status()
    }

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Runs the health query of `name` and reports it with pool figures.
    pub async fn check(&self, name: &str) -> Result<proto::DatabaseHealth, Error> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| Error::invalid_argument(format!("unknown database `{name}`")))?;
        // Pool figures first: the health query's own connection would
        // otherwise still be on its way back to the pool.
        let pool = entry.backend.pool_status().unwrap_or_default();
        let started = std::time::Instant::now();
        let outcome =
            tokio::time::timeout(HEALTH_QUERY_TIMEOUT, entry.backend.health_check()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (healthy, message) = match outcome {
            Ok(Ok(())) => (true, String::new()),
            Ok(Err(e)) => (false, e.message().to_owned()),
            Err(_) => (
                false,
                format!(
                    "health query took over {} s",
                    HEALTH_QUERY_TIMEOUT.as_secs()
                ),
            ),
        };
        Ok(proto::DatabaseHealth {
            name: name.to_owned(),
            engine: entry.engine.as_str().to_owned(),
            healthy,
            message,
            pool_size: pool.size,
            pool_idle: pool.idle,
            pool_max: pool.max,
            pool_waiting: pool.waiting,
            latency_ms,
        })
    }

    /// Runs a migration action on `name` with the system migrations, the app
    /// migrations configured for it, and `extra` app migrations (sent in a
    /// request), on a dedicated connection.
    pub async fn migrate(
        &self,
        name: &str,
        action: MigrateAction,
        options: MigrateOptions,
        extra: Vec<Migration>,
    ) -> Result<MigrateReport, Error> {
        let entry = self.entry(name)?;
        let mut app = entry.app_migrations.clone();
        for m in extra {
            if let Some(known) = app.iter().find(|a| a.version == m.version) {
                return Err(Error::invalid_argument(format!(
                    "migration {} has the same version as {} configured on the server",
                    m.filename, known.filename
                )));
            }
            app.push(m);
        }
        let migrator = Migrator::new(system_migrations()?, app);
        let session = entry.backend.migration_session().await?;
        let mut store = MigrationStore::new(session);
        Ok(migrator.run(&mut store, action, options).await?)
    }

    /// Closes every pool.
    pub async fn close(&self) {
        for entry in self.entries.values() {
            let _ = entry.backend.disconnect().await;
        }
    }
}
