//! The configured databases by name, whether each is ready, and their health.
//!
//! A database that cannot be reached at start-up does not stop the others:
//! it stays *down* (calls to it are UNAVAILABLE at once, with the cause),
//! and [`Registry::retry_not_ready`] connects it, and runs its start-up
//! migrations, once it answers. `--require-all-databases` makes start-up
//! strict again ([`Registry::start_all`]).

use crate::{
    backend::{Backend, PoolSettings, backend_for},
    config::{DEFAULT_DATABASE_NAME, DatabaseSpec, ReplicationSettings},
    migrate::{
        MigrateAction, MigrateOptions, MigrateReport, Migration, Migrator, store::MigrationStore,
        system_migrations,
    },
    replicas::{ReadMember, Replication},
};
use async_trait::async_trait;
use iadb::{
    DatabaseInterface, DatabaseType, Error, ErrorKind, ExecuteOutcome, PoolStatus, QueryResult,
    QueryStream, Result, Row, RowStream, Value, ValueScrubber, proto,
};
use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};
use tracing::{info, warn};

/// How long one health query may take before the database counts as down.
const HEALTH_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a TCP probe of a server engine may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest database name echoed in a message or a log line, in bytes.
const ECHOED_NAME_BYTES: usize = 200;

/// What start-up does for each database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupPolicy {
    /// Apply system and app migrations when a database connects.
    pub migrate: bool,
    /// How start-up migration runs behave.
    pub migrate_options: MigrateOptions,
}

/// Where a database stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    /// Connected, start-up migrations done: calls go through.
    Ready,
    /// Not connected: why the last attempt failed.
    Down(String),
    /// Connected, but its start-up migrations refused or failed.
    MigrationsFailed(String),
}

/// The readiness of one database, shared with its [`GatedDatabase`].
#[derive(Debug)]
struct ReadinessCell {
    name: String,
    state: RwLock<Readiness>,
}

impl ReadinessCell {
    fn get(&self) -> Readiness {
        self.state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set(&self, new: Readiness) {
        match self.state.write() {
            Ok(mut s) => *s = new,
            Err(e) => *e.into_inner() = new,
        }
    }

    /// Ok while ready; otherwise the error a call gets, with the cause.
    fn admit(&self) -> Result<()> {
        match &*self
            .state
            .read()
            .map_err(|_| Error::internal("state lock poisoned"))?
        {
            Readiness::Ready => Ok(()),
            Readiness::Down(cause) => Err(Error::unavailable(format!(
                "database `{}` is not connected: {cause}",
                self.name
            ))),
            Readiness::MigrationsFailed(cause) => Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "database `{}` is not served: its start-up migrations failed: {cause}",
                    self.name
                ),
            )),
        }
    }
}

/// Warns, once per connect, when the engine's user may do more than use its
/// databases. The line names the database and the privileges, never the
/// URL or its credentials.
async fn warn_broad_privileges(name: &str, entry: &Entry) {
    match entry.backend.broad_privileges().await {
        Ok(privileges) if !privileges.is_empty() => warn!(
            database = %name,
            engine = %entry.engine,
            privileges = %privileges.join(", "),
            "the database's user has privileges beyond its own databases, which any client of \
             this database can use through SQL (the host's files, other databases, the \
             server's settings); connect as a least-privilege user (docs/security.md)"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(
            database = %name,
            cause = %e.message(),
            "could not check the database user's privileges"
        ),
    }
}

struct Entry {
    engine: DatabaseType,
    backend: Arc<dyn Backend>,
    /// What callers get: the backend behind the readiness check.
    gate: Arc<dyn DatabaseInterface>,
    readiness: Arc<ReadinessCell>,
    app_migrations: Vec<Migration>,
    /// Opened read-only (`?mode=ro`): start-up migrations are skipped.
    read_only: bool,
    /// Host and port of a server engine, to ask the socket for the cause
    /// of a failed connect.
    address: Option<(String, u16)>,
    /// Its replicas, and the watch on its primary (`--replica`, or a
    /// multi-host URL).
    replication: Option<Arc<Replication>>,
}

/// Databases by name; the empty name means [`DEFAULT_DATABASE_NAME`].
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    policy: StartupPolicy,
    /// Serialises connect attempts (start-up, retries).
    connecting: tokio::sync::Mutex<()>,
}

/// Whether `config` opens its database read-only: `?mode=ro` on SQLite,
/// `?mode=ro` or `?mode=read_only` on DuckDB.
pub fn is_read_only(config: &iadb::ConnectionConfig) -> bool {
    match config.db_type {
        DatabaseType::Sqlite => config.option("mode") == Some("ro"),
        DatabaseType::Duckdb => matches!(config.option("mode"), Some("ro" | "read_only")),
        _ => false,
    }
}

/// `name` as echoed in messages: at most [`ECHOED_NAME_BYTES`] bytes, cut on
/// a character boundary, with the full length said when cut.
pub fn echoed_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= ECHOED_NAME_BYTES {
        return name.into();
    }
    let mut end = ECHOED_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &name[..end], name.len()).into()
}

/// Opens a TCP connection to `host:port` and closes it: the cause when the
/// engine cannot be reached (refused, no route, no answer).
async fn probe(host: &str, port: u16) -> std::result::Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "cannot reach {host}:{port}: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

impl Registry {
    /// Builds the adapter of every database, none connected yet (each is
    /// down until [`Registry::start_all`] or a retry connects it).
    pub fn new(
        specs: &[DatabaseSpec],
        pool: PoolSettings,
        policy: StartupPolicy,
        replication: ReplicationSettings,
    ) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for spec in specs {
            // The URL with its password and secret options hidden, however
            // they are spelled (`ConnectionConfig::redacted_url`).
            info!(
                database = %spec.name,
                engine = %spec.config.db_type,
                url = %spec.config.redacted_url(),
                "database configured"
            );
            let backend = backend_for(&spec.config, pool)?;
            let readiness = Arc::new(ReadinessCell {
                name: spec.name.clone(),
                state: RwLock::new(Readiness::Down("not connected yet".to_owned())),
            });
            let address = match spec.config.db_type {
                // A multi-host URL's first host may be the one that is down.
                DatabaseType::Postgresql | DatabaseType::Mysql if spec.config.hosts.is_empty() => {
                    spec.config
                        .host
                        .clone()
                        .filter(|h| !h.is_empty() && !h.starts_with('/'))
                        .zip(spec.config.port)
                }
                _ => None,
            };
            let replicated = !spec.replicas.is_empty() || !spec.config.hosts.is_empty();
            let replication = if replicated {
                Some(Arc::new(replication_of(spec, pool, replication)?))
            } else {
                None
            };
            entries.insert(
                spec.name.clone(),
                Entry {
                    engine: spec.config.db_type,
                    gate: Arc::new(GatedDatabase {
                        inner: backend.clone(),
                        readiness: readiness.clone(),
                    }),
                    backend,
                    readiness,
                    app_migrations: spec.app_migrations.clone(),
                    read_only: is_read_only(&spec.config),
                    address,
                    replication,
                },
            );
        }
        Ok(Self {
            entries,
            policy,
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Connects every database and runs its start-up migrations. A
    /// database that cannot be reached is logged and left down (retried by
    /// [`Registry::retry_not_ready`]) unless `require_all`, which makes it
    /// fail the start. Migrations that refuse or fail always fail the start,
    /// and the message names the way out.
    pub async fn start_all(&self, require_all: bool) -> Result<()> {
        let _one_at_a_time = self.connecting.lock().await;
        for (name, entry) in &self.entries {
            if let Err(cause) = self.connect_entry(entry).await {
                let what = format!("database `{name}` ({})", entry.engine);
                if require_all {
                    return Err(Error::unavailable(format!(
                        "{what}: {cause} (start without --require-all-databases to serve the other databases while this one is down)"
                    )));
                }
                warn!(
                    database = %name,
                    engine = %entry.engine,
                    cause = %cause,
                    "database is down at start-up: serving without it (NOT_SERVING), retrying every health interval"
                );
                entry.readiness.set(Readiness::Down(cause));
                continue;
            }
            warn_broad_privileges(name, entry).await;
            if let Err(e) = self.migrate_at_start(name, entry).await {
                entry
                    .readiness
                    .set(Readiness::MigrationsFailed(e.message().to_owned()));
                return Err(Error::new(
                    e.kind(),
                    format!(
                        "migrating database `{name}`: {}; {}",
                        e.message(),
                        way_out(name)
                    ),
                ));
            }
            entry.readiness.set(Readiness::Ready);
        }
        Ok(())
    }

    /// Connects the one database `name` (no start-up migrations): for
    /// `iadb-server migrate`, which runs a single action and exits.
    pub async fn connect_only(&self, name: &str) -> Result<()> {
        let (name, entry) = self.named_entry(name)?;
        self.connect_entry(entry).await.map_err(|cause| {
            Error::unavailable(format!("database `{name}` ({}): {cause}", entry.engine))
        })?;
        entry.readiness.set(Readiness::Ready);
        Ok(())
    }

    /// Connects the databases that are down and re-runs the start-up
    /// migrations of those where they failed (a repair may have fixed them);
    /// logs each change.
    pub async fn retry_not_ready(&self) {
        // Another attempt is under way: this round has nothing to add.
        let Ok(_one_at_a_time) = self.connecting.try_lock() else {
            return;
        };
        for (name, entry) in &self.entries {
            let before = entry.readiness.get();
            if before == Readiness::Ready {
                continue;
            }
            if let Readiness::Down(_) = before {
                if let Err(cause) = self.connect_entry(entry).await {
                    if before != Readiness::Down(cause.clone()) {
                        warn!(database = %name, cause = %cause, "database still down");
                    }
                    entry.readiness.set(Readiness::Down(cause));
                    continue;
                }
                info!(database = %name, engine = %entry.engine, "connected");
                warn_broad_privileges(name, entry).await;
            }
            match self.migrate_at_start(name, entry).await {
                Ok(()) => {
                    info!(database = %name, "database ready: serving it");
                    entry.readiness.set(Readiness::Ready);
                }
                Err(e) => {
                    let cause = format!("{}; {}", e.message(), way_out(name));
                    if before != Readiness::MigrationsFailed(cause.clone()) {
                        warn!(database = %name, cause = %cause, "start-up migrations failed: database not served");
                    }
                    entry.readiness.set(Readiness::MigrationsFailed(cause));
                }
            }
        }
    }

    /// One connect attempt: the socket first for a server engine (a refused
    /// connection is reported at once, with its cause, where the pool would
    /// retry it until its timeout), then the adapter.
    async fn connect_entry(&self, entry: &Entry) -> std::result::Result<(), String> {
        if let Some((host, port)) = &entry.address {
            probe(host, *port).await?;
        }
        match entry.backend.connect().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut cause = e.message().to_owned();
                // The engine may have gone between the probe and the pool,
                // whose timeout then hides the refused connection.
                if let Some((host, port)) = &entry.address
                    && let Err(refused) = probe(host, *port).await
                {
                    cause = format!("{refused} ({cause})");
                }
                Err(cause)
            }
        }
    }

    /// The start-up migrations of one connected database, unless switched
    /// off or the database is read-only (then a notice).
    async fn migrate_at_start(&self, name: &str, entry: &Entry) -> Result<()> {
        if !self.policy.migrate {
            return Ok(());
        }
        if entry.read_only {
            info!(
                database = %name,
                "database is opened read-only (mode=ro): start-up migrations skipped"
            );
            return Ok(());
        }
        let report = self
            .run_migrations(
                entry,
                MigrateAction::Apply { target: None },
                self.policy.migrate_options,
                Vec::new(),
            )
            .await?;
        if !report.changed.is_empty() {
            info!(database = %name, applied = ?report.changed, "migrations applied");
        }
        Ok(())
    }

    /// The database named `name` (empty: the default one). Calls to a
    /// database that is not ready fail at once with the cause.
    pub fn get(&self, name: &str) -> Result<Arc<dyn DatabaseInterface>> {
        Ok(self.entry(name)?.gate.clone())
    }

    /// The adapter of `name`, with the server-side extras (migrations).
    pub fn backend(&self, name: &str) -> Result<Arc<dyn Backend>> {
        Ok(self.entry(name)?.backend.clone())
    }

    /// The members a read of `name` tries, in order: with a staleness
    /// `bound`, a replica within it and one more member for a retry
    /// ([`Replication::read_members`]); otherwise, or without replicas,
    /// the primary alone (`primary`, the database as [`Registry::get`]
    /// gave it).
    pub fn read_members(
        &self,
        name: &str,
        bound: Option<std::time::Duration>,
        primary: Arc<dyn DatabaseInterface>,
    ) -> Result<Vec<ReadMember>> {
        let entry = self.entry(name)?;
        let primary = ReadMember::primary(primary, entry.backend.clone());
        Ok(match (bound, &entry.replication) {
            (Some(bound), Some(replication)) => replication.read_members(bound, primary),
            _ => vec![primary],
        })
    }

    /// Starts the checker task of every replicated database.
    pub fn start_replication(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.entries
            .values()
            .filter_map(|entry| entry.replication.clone())
            .map(|replication| tokio::spawn(replication.run_checks()))
            .collect()
    }

    /// The adapter of `name` for a session or a batch; fails at once with
    /// the cause while the database is not ready, as [`Registry::get`]'s
    /// calls do.
    pub fn ready_backend(&self, name: &str) -> Result<Arc<dyn Backend>> {
        let entry = self.entry(name)?;
        entry.readiness.admit()?;
        Ok(entry.backend.clone())
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.named_entry(name).map(|(_, e)| e)
    }

    fn named_entry(&self, name: &str) -> Result<(&str, &Entry)> {
        let name = if name.is_empty() {
            DEFAULT_DATABASE_NAME
        } else {
            name
        };
        self.entries
            .get_key_value(name)
            .map(|(k, e)| (k.as_str(), e))
            .ok_or_else(|| {
                let known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
                Error::invalid_argument(format!(
                    "unknown database `{}` (configured: {})",
                    echoed_name(name),
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
    pub fn pool_status(&self, name: &str) -> Option<PoolStatus> {
        self.entry(name).ok()?.backend.pool_status()
    }

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Reports whether `name` answers, with pool figures. A database that
    /// is not ready reports why. A pool whose every connection is in use is
    /// busy, not down: the engine answered those connections, so it is
    /// healthy (for PostgreSQL, once its socket accepts a connection)
    /// without queueing a health query behind the calls.
    pub async fn check(&self, name: &str) -> Result<proto::DatabaseHealth> {
        let (name, entry) = self.named_entry(name)?;
        // Pool figures first: the health query's own connection would
        // otherwise still be on its way back to the pool.
        let pool = entry.backend.pool_status().unwrap_or_default();
        let started = std::time::Instant::now();
        let (healthy, message) = match entry.readiness.get() {
            Readiness::Ready if saturated(&pool) => self.busy(entry).await,
            Readiness::Ready => {
                match tokio::time::timeout(HEALTH_QUERY_TIMEOUT, entry.backend.health_check()).await
                {
                    Ok(Ok(())) => (true, String::new()),
                    Ok(Err(e)) => (false, e.message().to_owned()),
                    Err(_) => match entry.backend.pool_status() {
                        // It filled up while the health query waited.
                        Some(now) if saturated(&now) => self.busy(entry).await,
                        _ => (
                            false,
                            format!(
                                "health query took over {} s",
                                HEALTH_QUERY_TIMEOUT.as_secs()
                            ),
                        ),
                    },
                }
            }
            Readiness::Down(cause) => (false, format!("not connected: {cause}")),
            Readiness::MigrationsFailed(cause) => {
                (false, format!("start-up migrations failed: {cause}"))
            }
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
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
            members: entry
                .replication
                .as_ref()
                .map(|r| r.members())
                .unwrap_or_default(),
        })
    }

    /// The health of a database whose pool is in full use.
    async fn busy(&self, entry: &Entry) -> (bool, String) {
        // PostgreSQL does not log a connection that sends nothing; MySQL
        // counts it against `max_connect_errors`, so it is not probed.
        if entry.engine == DatabaseType::Postgresql
            && let Some((host, port)) = &entry.address
            && let Err(cause) = probe(host, *port).await
        {
            return (false, cause);
        }
        // Healthy, so no message (the proto's contract); the pool figures
        // show the load.
        (true, String::new())
    }

    /// Runs a migration action on `name` with the system migrations, the app
    /// migrations configured for it, and `extra` app migrations (sent in a
    /// request, and recorded as such), on a dedicated connection.
    pub async fn migrate(
        &self,
        name: &str,
        action: MigrateAction,
        options: MigrateOptions,
        extra: Vec<Migration>,
    ) -> Result<MigrateReport> {
        let entry = self.entry(name)?;
        // A database that is down cannot migrate; one whose start-up
        // migrations failed can (repair is the way out).
        if let Readiness::Down(_) = entry.readiness.get() {
            entry.readiness.admit()?;
        }
        self.run_migrations(entry, action, options, extra).await
    }

    async fn run_migrations(
        &self,
        entry: &Entry,
        action: MigrateAction,
        options: MigrateOptions,
        extra: Vec<Migration>,
    ) -> Result<MigrateReport> {
        let app = entry.app_migrations.clone();
        for m in &extra {
            if let Some(known) = app.iter().find(|a| a.version == m.version) {
                return Err(Error::invalid_argument(format!(
                    "migration {} has the same version as {} configured on the server",
                    m.filename, known.filename
                )));
            }
        }
        let migrator = Migrator::new(system_migrations()?, app).with_sent(extra);
        let session = entry.backend.migration_session().await?;
        let mut store = MigrationStore::new(session);
        Ok(migrator.run(&mut store, action, options).await?)
    }

    /// Closes every pool.
    pub async fn close(&self) {
        for entry in self.entries.values() {
            let _ = entry.backend.disconnect().await;
            if let Some(replication) = &entry.replication {
                replication.close().await;
            }
        }
    }
}

/// Longest wait for a replica's pooled connection: a replica that went
/// away fails its read soon, and the read runs again on another member.
const REPLICA_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The replicas of `spec`, each with its own pool (`pool`'s size, a short
/// wait for a connection), and one-connection pools on the primary and on
/// each replica for the lag checks.
fn replication_of(
    spec: &DatabaseSpec,
    pool: PoolSettings,
    settings: ReplicationSettings,
) -> Result<Replication> {
    let one = PoolSettings {
        max_connections: 1,
        acquire_timeout: REPLICA_ACQUIRE_TIMEOUT,
    };
    let monitor = backend_for(&spec.config, one)?;
    let mut replicas = Vec::with_capacity(spec.replicas.len());
    for config in &spec.replicas {
        let address = format!(
            "{}:{}",
            config.host.as_deref().unwrap_or("localhost"),
            config.port.unwrap_or(5432)
        );
        info!(
            database = %spec.name,
            replica = %address,
            url = %config.redacted_url(),
            "replica configured"
        );
        let backend = backend_for(
            config,
            PoolSettings {
                max_connections: pool.max_connections,
                acquire_timeout: pool.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT),
            },
        )?;
        let gate: Arc<dyn DatabaseInterface> = Arc::new(GatedDatabase {
            inner: backend.clone(),
            readiness: Arc::new(ReadinessCell {
                name: spec.name.clone(),
                state: RwLock::new(Readiness::Ready),
            }),
        });
        replicas.push((address, backend, gate, backend_for(config, one)?));
    }
    Ok(Replication::new(&spec.name, monitor, replicas, settings))
}

/// Every connection in use and the pool at its size limit.
fn saturated(pool: &PoolStatus) -> bool {
    pool.max > 0 && pool.idle == 0 && pool.size >= pool.max
}

/// What an operator can do when start-up migrations refuse.
fn way_out(name: &str) -> String {
    format!(
        "see `iadb-server migrate status --db {name}`, fix with `iadb-server migrate repair --db {name}` \
         (or `baseline`, `--allow-missing`, `--allow-out-of-order`), or start with --migrate=false to serve without migrating"
    )
}

/// A query's stream whose errors, the first and any later one, never show
/// the values of `params`.
fn scrubbed(params: &[Value], stream: Result<QueryStream>) -> Result<QueryStream> {
    let scrubber = ValueScrubber::new(params);
    let stream = stream.map_err(|e| scrubber.scrub(e))?;
    if scrubber.is_empty() {
        return Ok(stream);
    }
    let QueryStream { columns, events } = stream;
    Ok(QueryStream {
        columns,
        events: futures::StreamExt::boxed(futures::StreamExt::map(events, move |event| {
            event.map_err(|e| scrubber.scrub(e))
        })),
    })
}

/// A database as callers see it: the adapter, behind its readiness. Every
/// method checks readiness (one uncontended read lock), then delegates.
struct GatedDatabase {
    inner: Arc<dyn Backend>,
    readiness: Arc<ReadinessCell>,
}

#[async_trait]
impl DatabaseInterface for GatedDatabase {
    async fn connect(&self) -> Result<()> {
        self.inner.connect().await
    }

    async fn disconnect(&self) -> Result<()> {
        self.inner.disconnect().await
    }

    fn is_connected(&self) -> bool {
        self.readiness.admit().is_ok() && self.inner.is_connected()
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        self.readiness.admit()?;
        scrubbed(params, self.inner.query(sql, params).await)
    }

    async fn query_arrow(
        &self,
        sql: &str,
        params: &[Value],
        wanted: iadb::arrow::ArrowWanted,
    ) -> Result<QueryStream> {
        self.readiness.admit()?;
        scrubbed(params, self.inner.query_arrow(sql, params, wanted).await)
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        self.readiness.admit()?;
        self.inner
            .execute(sql, params)
            .await
            .map_err(|e| ValueScrubber::new(params).scrub(e))
    }

    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome> {
        self.readiness.admit()?;
        self.inner
            .execute_many(sql, param_sets)
            .await
            .map_err(|e| ValueScrubber::for_sets(param_sets.iter().map(Vec::as_slice)).scrub(e))
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        self.readiness.admit()?;
        self.inner.table_exists(table).await
    }

    fn quote_identifier(&self, name: &str) -> String {
        self.inner.quote_identifier(name)
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        self.inner.pool_status()
    }

    async fn fetch_stream(&self, sql: &str, params: &[Value]) -> Result<RowStream> {
        self.readiness.admit()?;
        let scrubber = ValueScrubber::new(params);
        let rows = self
            .inner
            .fetch_stream(sql, params)
            .await
            .map_err(|e| scrubber.scrub(e))?;
        if scrubber.is_empty() {
            return Ok(rows);
        }
        let RowStream { columns, rows } = rows;
        Ok(RowStream {
            columns,
            rows: futures::StreamExt::boxed(futures::StreamExt::map(rows, move |row| {
                row.map_err(|e| scrubber.scrub(e))
            })),
        })
    }

    async fn fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.readiness.admit()?;
        self.inner
            .fetch_all(sql, params)
            .await
            .map_err(|e| ValueScrubber::new(params).scrub(e))
    }

    async fn fetch_one(&self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        self.readiness.admit()?;
        self.inner
            .fetch_one(sql, params)
            .await
            .map_err(|e| ValueScrubber::new(params).scrub(e))
    }

    async fn execute_query(&self, sql: &str, params: &[Value]) -> QueryResult {
        // Through `query`, so that the error message is scrubbed of values.
        let started = std::time::Instant::now();
        iadb::collect_query_result(self.query(sql, params).await, started).await
    }

    async fn create_table(&self, table: &str, columns: &[(String, String)]) -> Result<()> {
        self.readiness.admit()?;
        self.inner.create_table(table, columns).await
    }

    async fn health_check(&self) -> Result<()> {
        self.readiness.admit()?;
        self.inner.health_check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        assert_eq!(echoed_name("short"), "short");
        let long = "é".repeat(5_000_000);
        let shown = echoed_name(&long);
        assert!(shown.len() < ECHOED_NAME_BYTES + 40, "{}", shown.len());
        assert!(shown.ends_with("... (10000000 bytes)"), "{shown}");
    }

    #[test]
    fn read_only_urls() {
        let ro = |url: &str| is_read_only(&iadb::ConnectionConfig::from_url(url).unwrap());
        assert!(ro("sqlite:///./a.db?mode=ro"));
        assert!(!ro("sqlite:///./a.db"));
        assert!(ro("duckdb:///./a.duckdb?mode=read_only"));
        assert!(!ro("postgresql://u@h/db"));
    }
}
