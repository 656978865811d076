//! The tracking table `ia_migrations` and the migration lock, written once
//! over a [`MigrationSession`] with per-dialect DDL and lock statements.

use super::{
    MigrateError,
    migration::{Migration, MigrationType},
    session::{MigrationSession, StoreDialect},
};
use iadb::{Error, ErrorKind, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The tracking table.
pub const TRACKING_TABLE: &str = "ia_migrations";
/// How long a lease-row lock (SQLite, DuckDB, D1) lasts if its holder dies.
pub const LEASE: Duration = Duration::from_secs(300);

/// Where an applied migration came from, stored in `ia_migrations.origin`.
///
/// A migration sent in a `Migrate` request has no file on the server; its
/// row says so, and a later run without it does not call it missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationOrigin {
    /// Embedded in the server (system) or from a folder given at start-up.
    /// Rows written before the column existed read as this.
    Server,
    /// Sent in a `Migrate` request.
    Request,
}

impl MigrationOrigin {
    /// The name stored in `ia_migrations.origin`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Request => "request",
        }
    }
}

/// A row of `ia_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The version, as a number.
    pub version: u64,
    /// System or app.
    pub migration_type: MigrationType,
    /// The file it came from.
    pub filename: String,
    /// Its description.
    pub description: String,
    /// `sha256:...` of the file when applied.
    pub checksum: String,
    /// `applied`, `pending` (started, not finished) or `failed`.
    pub state: String,
    /// When, as the engine prints it.
    pub applied_at: String,
    /// How long it ran.
    pub execution_ms: i64,
    /// Where it came from.
    pub origin: MigrationOrigin,
}

impl AppliedMigration {
    /// Whether the row records a finished migration.
    pub fn is_applied(&self) -> bool {
        self.state == "applied"
    }
}

fn create_tracking_table(dialect: StoreDialect) -> String {
    let (text, key, kind, name) = match dialect {
        StoreDialect::MySql => ("TEXT", "VARCHAR(32)", "VARCHAR(16)", "VARCHAR(255)"),
        _ => ("TEXT", "TEXT", "TEXT", "TEXT"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (\
         version {key} NOT NULL, \
         filename {name} NOT NULL, \
         migration_type {kind} NOT NULL CHECK (migration_type IN ('system', 'app')), \
         description {text} NOT NULL, \
         applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
         checksum {name} NOT NULL, \
         state {kind} NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'pending', 'failed')), \
         execution_ms BIGINT NOT NULL DEFAULT 0, \
         error_message {text}, \
         origin {kind}, \
         PRIMARY KEY (version, migration_type))"
    )
}

/// Adds the `origin` column to a tracking table created before it existed
/// (nullable: older rows read as [`MigrationOrigin::Server`]).
fn add_origin_column(dialect: StoreDialect) -> String {
    let kind = if dialect == StoreDialect::MySql {
        "VARCHAR(16)"
    } else {
        "TEXT"
    };
    format!("ALTER TABLE {TRACKING_TABLE} ADD COLUMN origin {kind}")
}

fn create_lock_table(dialect: StoreDialect) -> String {
    let owner = if dialect == StoreDialect::MySql {
        "VARCHAR(128)"
    } else {
        "TEXT"
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {TRACKING_TABLE}_lock (id INTEGER PRIMARY KEY, owner {owner} NOT NULL, expires_at BIGINT NOT NULL)"
    )
}

fn applied_at_text(dialect: StoreDialect) -> &'static str {
    match dialect {
        StoreDialect::MySql => "CAST(applied_at AS CHAR)",
        StoreDialect::DuckDb => "CAST(applied_at AS VARCHAR)",
        _ => "CAST(applied_at AS TEXT)",
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The tracking table and lock of one database, over one session.
pub struct MigrationStore {
    session: Box<dyn MigrationSession>,
    owner: String,
    locked: bool,
    lease_table_ready: bool,
    /// The tracking table has its `origin` column.
    has_origin: bool,
}

impl MigrationStore {
    /// A store over `session`.
    pub fn new(session: Box<dyn MigrationSession>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let owner = format!(
            "pid {} run {} at {}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            now_secs()
        );
        Self {
            session,
            owner,
            locked: false,
            lease_table_ready: false,
            has_origin: false,
        }
    }

    /// The session's dialect.
    pub fn dialect(&self) -> StoreDialect {
        self.session.dialect()
    }

    /// Whether a script and its tracking row can commit together: MySQL
    /// commits DDL implicitly, and D1's REST API has no BEGIN/COMMIT.
    fn has_transactions(&self) -> bool {
        !matches!(self.dialect(), StoreDialect::MySql | StoreDialect::D1)
    }

    /// Creates the tracking table if missing. Two sessions creating it at
    /// once can collide on PostgreSQL even with IF NOT EXISTS; the loser
    /// finds it created and goes on. A table from before the `origin`
    /// column gets it when the lock is held (a changing run); a read-only
    /// run reads such a table as it is.
    pub async fn ensure_table(&mut self) -> Result<(), MigrateError> {
        let sql = create_tracking_table(self.dialect());
        match self.session.run_script(&sql).await {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.session.run_script(&sql).await?,
            other => other?,
        }
        let probe = format!("SELECT origin FROM {TRACKING_TABLE} WHERE 1 = 0");
        self.has_origin = self.session.fetch(&probe, &[]).await.is_ok();
        if !self.has_origin && self.locked {
            self.session
                .run_script(&add_origin_column(self.dialect()))
                .await?;
            self.has_origin = true;
        }
        Ok(())
    }

    /// Takes the database-wide migration lock, waiting at most `timeout`.
    /// Returns how long it waited.
    pub async fn lock(&mut self, timeout: Duration) -> Result<Duration, MigrateError> {
        let started = Instant::now();
        loop {
            if self.try_lock().await? {
                self.locked = true;
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(MigrateError::LockTimeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_lock(&mut self) -> Result<bool, MigrateError> {
        if matches!(
            self.dialect(),
            StoreDialect::Sqlite | StoreDialect::DuckDb | StoreDialect::D1
        ) && !self.lease_table_ready
        {
            // SQLite, DuckDB and D1 serialise DDL, so creating it concurrently is safe.
            self.session
                .run_script(&create_lock_table(self.dialect()))
                .await?;
            self.lease_table_ready = true;
        }
        match self.dialect() {
            StoreDialect::Postgres => {
                // Session-level advisory lock on this connection, keyed by
                // database, schema and table so they do not block each other.
                let rows = self
                    .session
                    .fetch(
                        "SELECT pg_try_advisory_lock(hashtext(current_database() || '.' || current_schema() || '.ia_migrations'))",
                        &[],
                    )
                    .await?;
                Ok(matches!(
                    rows.first().and_then(|r| r.first()),
                    Some(Value::Bool(true))
                ))
            }
            StoreDialect::MySql => {
                let rows = self
                    .session
                    .fetch(
                        "SELECT GET_LOCK(CONCAT(DATABASE(), '.ia_migrations'), 1)",
                        &[],
                    )
                    .await?;
                match rows.first().and_then(|r| r.first()) {
                    Some(Value::Int(1)) => Ok(true),
                    Some(Value::Int(0)) => Ok(false),
                    other => Err(MigrateError::Engine(Error::internal(format!(
                        "GET_LOCK answered {other:?}"
                    )))),
                }
            }
            StoreDialect::Sqlite | StoreDialect::DuckDb | StoreDialect::D1 => {
                let now = now_secs();
                self.session
                    .execute(
                        &format!(
                            "DELETE FROM {TRACKING_TABLE}_lock WHERE id = 1 AND expires_at < ?"
                        ),
                        &[Value::Int(now)],
                    )
                    .await?;
                let lease = i64::try_from(LEASE.as_secs()).unwrap_or(300);
                match self
                    .session
                    .execute(
                        &format!("INSERT INTO {TRACKING_TABLE}_lock (id, owner, expires_at) VALUES (1, ?, ?)"),
                        &[Value::Text(self.owner.clone()), Value::Int(now + lease)],
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    // Another writer holds SQLite's write lock right now.
                    Err(e) if e.kind() == ErrorKind::Unavailable => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Releases the lock if held.
    pub async fn unlock(&mut self) -> Result<(), MigrateError> {
        if !self.locked {
            return Ok(());
        }
        self.locked = false;
        match self.dialect() {
            StoreDialect::Postgres => {
                self.session
                    .fetch("SELECT pg_advisory_unlock(hashtext(current_database() || '.' || current_schema() || '.ia_migrations'))", &[])
                    .await?;
            }
            StoreDialect::MySql => {
                self.session
                    .fetch(
                        "SELECT RELEASE_LOCK(CONCAT(DATABASE(), '.ia_migrations'))",
                        &[],
                    )
                    .await?;
            }
            StoreDialect::Sqlite | StoreDialect::DuckDb | StoreDialect::D1 => {
                self.session
                    .execute(
                        &format!("DELETE FROM {TRACKING_TABLE}_lock WHERE id = 1 AND owner = ?"),
                        &[Value::Text(self.owner.clone())],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Every row of the tracking table.
    pub async fn applied(&mut self) -> Result<Vec<AppliedMigration>, MigrateError> {
        let sql = format!(
            "SELECT version, migration_type, filename, description, checksum, state, {}, execution_ms, {} FROM {TRACKING_TABLE}",
            applied_at_text(self.dialect()),
            if self.has_origin { "origin" } else { "NULL" }
        );
        let rows = self.session.fetch(&sql, &[]).await?;
        let text = |v: Option<&Value>| match v {
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        rows.into_iter()
            .map(|row| {
                let version_text = text(row.first());
                let version = version_text.parse().map_err(|_| {
                    MigrateError::Corrupt(format!("{TRACKING_TABLE} has version `{version_text}`"))
                })?;
                let type_text = text(row.get(1));
                let migration_type = type_text.parse().map_err(|_| {
                    MigrateError::Corrupt(format!(
                        "{TRACKING_TABLE} has migration_type `{type_text}`"
                    ))
                })?;
                Ok(AppliedMigration {
                    version,
                    migration_type,
                    filename: text(row.get(2)),
                    description: text(row.get(3)),
                    checksum: text(row.get(4)),
                    state: text(row.get(5)),
                    applied_at: text(row.get(6)),
                    execution_ms: row.get(7).and_then(Value::as_i64).unwrap_or(0),
                    origin: match row.get(8) {
                        Some(Value::Text(t)) if t == MigrationOrigin::Request.as_str() => {
                            MigrationOrigin::Request
                        }
                        _ => MigrationOrigin::Server,
                    },
                })
            })
            .collect()
    }

    /// Inserts the tracking row of `m`.
    async fn insert_row(
        &mut self,
        m: &Migration,
        state: &str,
        ms: i64,
        origin: MigrationOrigin,
    ) -> Result<(), Error> {
        let mut params = vec![
            Value::Text(m.version.to_string()),
            Value::Text(m.filename.clone()),
            Value::Text(m.migration_type.as_str().to_owned()),
            Value::Text(m.description.clone()),
            Value::Text(m.checksum.clone()),
            Value::Text(state.to_owned()),
            Value::Int(ms),
        ];
        let sql = if self.has_origin {
            params.push(Value::Text(origin.as_str().to_owned()));
            "INSERT INTO ia_migrations (version, filename, migration_type, description, checksum, state, execution_ms, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        } else {
            "INSERT INTO ia_migrations (version, filename, migration_type, description, checksum, state, execution_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
        };
        self.session.execute(sql, &params).await.map(|_| ())
    }

    /// Records `m` in `state` without running it (baseline, pending rows).
    pub async fn record(
        &mut self,
        m: &Migration,
        state: &str,
        origin: MigrationOrigin,
    ) -> Result<(), MigrateError> {
        Ok(self.insert_row(m, state, 0, origin).await?)
    }

    async fn set_state(
        &mut self,
        m: &Migration,
        state: &str,
        ms: i64,
        error: Option<&str>,
    ) -> Result<(), MigrateError> {
        self.session
            .execute(
                "UPDATE ia_migrations SET state = ?, execution_ms = ?, error_message = ? WHERE version = ? AND migration_type = ?",
                &[
                    Value::Text(state.to_owned()),
                    Value::Int(ms),
                    error.map_or(Value::Null, |e| Value::Text(e.to_owned())),
                    Value::Text(m.version.to_string()),
                    Value::Text(m.migration_type.as_str().to_owned()),
                ],
            )
            .await?;
        Ok(())
    }

    /// Runs `m` and records it. Where the engine has transactional DDL and
    /// the file allows it, the script and its row commit together; otherwise
    /// (MySQL, D1, `-- iadb:no-transaction`) the row is written as pending
    /// first, so a failure leaves a visible failed row rather than a silent half.
    pub async fn apply(
        &mut self,
        m: &Migration,
        origin: MigrationOrigin,
    ) -> Result<Duration, MigrateError> {
        let started = Instant::now();
        let transactional = !m.no_transaction && self.has_transactions();
        if transactional {
            self.session.run_script("BEGIN").await?;
            let run = async {
                self.session.run_script(&m.sql).await?;
                let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                self.insert_row(m, "applied", ms, origin).await?;
                self.session.run_script("COMMIT").await
            };
            if let Err(e) = run.await {
                let _ = self.session.run_script("ROLLBACK").await;
                // Nothing of it remains; record the failure so the next run
                // refuses until it is repaired.
                let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                self.insert_row(m, "failed", ms, origin).await?;
                self.set_state(m, "failed", ms, Some(e.message())).await?;
                return Err(MigrateError::Engine(e));
            }
        } else {
            self.record(m, "pending", origin).await?;
            let result = self.session.run_script(&m.sql).await;
            let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            match result {
                Ok(()) => self.set_state(m, "applied", ms, None).await?,
                Err(e) => {
                    self.set_state(m, "failed", ms, Some(e.message())).await?;
                    return Err(MigrateError::Engine(e));
                }
            }
        }
        Ok(started.elapsed())
    }

    /// Runs `undo_sql` for `m` and deletes its row, in one transaction where
    /// the engine allows it.
    pub async fn revert(&mut self, m: &Migration, undo_sql: &str) -> Result<(), MigrateError> {
        let transactional = self.has_transactions();
        if transactional {
            self.session.run_script("BEGIN").await?;
        }
        let run = async {
            self.session.run_script(undo_sql).await?;
            self.delete_row_inner(m.version, m.migration_type).await
        };
        match run.await {
            Ok(()) if transactional => Ok(self.session.run_script("COMMIT").await?),
            Ok(()) => Ok(()),
            Err(e) => {
                if transactional {
                    let _ = self.session.run_script("ROLLBACK").await;
                }
                Err(MigrateError::Engine(e))
            }
        }
    }

    async fn delete_row_inner(
        &mut self,
        version: u64,
        migration_type: MigrationType,
    ) -> Result<(), Error> {
        self.session
            .execute(
                "DELETE FROM ia_migrations WHERE version = ? AND migration_type = ?",
                &[
                    Value::Text(version.to_string()),
                    Value::Text(migration_type.as_str().to_owned()),
                ],
            )
            .await
            .map(|_| ())
    }

    /// Deletes a row (repair of failed or pending rows).
    pub async fn delete_row(
        &mut self,
        version: u64,
        migration_type: MigrationType,
    ) -> Result<(), MigrateError> {
        Ok(self.delete_row_inner(version, migration_type).await?)
    }

    /// Sets the stored checksum of an applied row (repair).
    pub async fn update_checksum(&mut self, m: &Migration) -> Result<(), MigrateError> {
        self.session
            .execute(
                "UPDATE ia_migrations SET checksum = ?, filename = ? WHERE version = ? AND migration_type = ?",
                &[
                    Value::Text(m.checksum.clone()),
                    Value::Text(m.filename.clone()),
                    Value::Text(m.version.to_string()),
                    Value::Text(m.migration_type.as_str().to_owned()),
                ],
            )
            .await?;
        Ok(())
    }
}
