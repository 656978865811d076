//! The migration run: validate what is applied, then status, plan, apply,
//! rollback, validate, repair or baseline — the same logic on every engine.

use super::{
    MigrateError,
    migration::{Migration, MigrationType},
    store::{AppliedMigration, MigrationOrigin, MigrationStore},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateAction {
    /// Every migration with its state; changes nothing.
    Status,
    /// The pending migrations and their SQL; changes nothing.
    Plan,
    /// Applies system migrations, then app migrations up to `target`.
    Apply {
        /// Newest app version to apply; `None` applies all.
        target: Option<u64>,
    },
    /// Runs app undo files in reverse down to `target`, which stays applied.
    Rollback {
        /// The version to return to (0: roll back every app migration).
        target: u64,
    },
    /// Checks applied migrations against the files; changes nothing.
    Validate,
    /// Deletes failed/pending rows and realigns changed checksums.
    Repair,
    /// Marks app migrations up to `target` applied without running them.
    Baseline {
        /// Newest app version to mark.
        target: u64,
    },
}

/// How strict a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Applied migrations without a file are not an error.
    pub allow_missing: bool,
    /// Pending migrations older than the newest applied one may be applied.
    pub allow_out_of_order: bool,
    /// How long to wait for another runner's lock.
    pub lock_timeout: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            allow_missing: false,
            allow_out_of_order: false,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// One migration as a run sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// Version number.
    pub version: u64,
    /// Description.
    pub description: String,
    /// System or app.
    pub migration_type: MigrationType,
    /// File name.
    pub filename: String,
    /// `applied`, `pending`, `failed` (or `missing`: applied, file gone).
    pub state: String,
    /// When it was applied; empty if not.
    pub applied_at: String,
    /// The file's checksum (the recorded one when the file is missing).
    pub checksum: String,
    /// Whether the recorded checksum matches the file.
    pub checksum_ok: bool,
    /// The SQL (plan only).
    pub sql: String,
}

/// What a run reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrateReport {
    /// Every known or recorded migration, system first, by version.
    pub migrations: Vec<MigrationState>,
    /// Files applied, rolled back, repaired or baselined by this run.
    pub changed: Vec<String>,
    /// How long the run waited for the lock.
    pub lock_wait: Duration,
}

/// The migrations of one database: system ones, then app ones.
#[derive(Debug, Clone, Default)]
pub struct Migrator {
    migrations: Vec<Migration>,
    /// The app migrations sent in a request (recorded with that origin).
    sent: BTreeSet<Key>,
}

type Key = (MigrationType, u64);

impl Migrator {
    /// A migrator over `system` and `app` migrations.
    pub fn new(system: Vec<Migration>, app: Vec<Migration>) -> Self {
        let mut migrations: Vec<Migration> = system.into_iter().chain(app).collect();
        migrations.sort_by_key(|m| (m.migration_type, m.version));
        Self {
            migrations,
            sent: BTreeSet::new(),
        }
    }

    /// Adds app migrations sent in a request: they run as the others, and
    /// their rows record that they came from a request, so a later run
    /// without them does not call them missing.
    pub fn with_sent(mut self, sent: Vec<Migration>) -> Self {
        for m in sent {
            self.sent.insert((m.migration_type, m.version));
            self.migrations.push(m);
        }
        self.migrations
            .sort_by_key(|m| (m.migration_type, m.version));
        self
    }

    fn origin(&self, m: &Migration) -> MigrationOrigin {
        if self.sent.contains(&(m.migration_type, m.version)) {
            MigrationOrigin::Request
        } else {
            MigrationOrigin::Server
        }
    }

    /// The migrations, system first, by version.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// Runs `action` on the database behind `store`. Changing actions hold
    /// the database's migration lock for the whole run.
    pub async fn run(
        &self,
        store: &mut MigrationStore,
        action: MigrateAction,
        options: MigrateOptions,
    ) -> Result<MigrateReport, MigrateError> {
        let changes = !matches!(
            action,
            MigrateAction::Status | MigrateAction::Plan | MigrateAction::Validate
        );
        // The lock first: replicas starting together then create the
        // tracking table one at a time.
        let lock_wait = if changes {
            store.lock(options.lock_timeout).await?
        } else {
            Duration::ZERO
        };
        let result = match store.ensure_table().await {
            Ok(()) => self.run_locked(store, action, options).await,
            Err(e) => Err(e),
        };
        let unlocked = if changes {
            store.unlock().await
        } else {
            Ok(())
        };
        let mut report = result?;
        unlocked?;
        report.lock_wait = lock_wait;
        Ok(report)
    }

    async fn run_locked(
        &self,
        store: &mut MigrationStore,
        action: MigrateAction,
        options: MigrateOptions,
    ) -> Result<MigrateReport, MigrateError> {
        let applied: BTreeMap<Key, AppliedMigration> = store
            .applied()
            .await?
            .into_iter()
            .map(|row| ((row.migration_type, row.version), row))
            .collect();
        let mut changed = Vec::new();
        match action {
            MigrateAction::Status | MigrateAction::Plan => {}
            MigrateAction::Validate => self.validate(&applied, options)?,
            MigrateAction::Apply { target } => {
                self.validate(&applied, options)?;
                for m in &self.migrations {
                    let wanted = m.migration_type == MigrationType::System
                        || target.is_none_or(|t| m.version <= t);
                    if !wanted || applied.contains_key(&(m.migration_type, m.version)) {
                        continue;
                    }
                    if let Err(e) = store.apply(m, self.origin(m)).await {
                        return Err(MigrateError::Failed {
                            filename: m.filename.clone(),
                            applied: changed,
                            source: Box::new(e),
                        });
                    }
                    changed.push(m.filename.clone());
                }
            }
            MigrateAction::Rollback { target } => {
                self.validate(&applied, options)?;
                let mut to_revert: Vec<&AppliedMigration> = applied
                    .values()
                    .filter(|r| r.migration_type == MigrationType::App && r.version > target)
                    .collect();
                to_revert.sort_by_key(|r| std::cmp::Reverse(r.version));
                // Refuse before touching anything if an undo file is missing.
                let mut plan = Vec::with_capacity(to_revert.len());
                let mut missing = Vec::new();
                for row in to_revert {
                    match self.find(row.migration_type, row.version) {
                        Some(m) => match &m.undo {
                            Some(undo) => plan.push((m, undo.sql.clone())),
                            None => missing.push(m.filename.clone()),
                        },
                        None => missing.push(row.filename.clone()),
                    }
                }
                if !missing.is_empty() {
                    return Err(MigrateError::NoUndo(missing.join(", ")));
                }
                for (m, undo) in plan {
                    if let Err(e) = store.revert(m, &undo).await {
                        return Err(MigrateError::Failed {
                            filename: m
                                .undo
                                .as_ref()
                                .map_or(m.filename.clone(), |u| u.filename.clone()),
                            applied: changed,
                            source: Box::new(e),
                        });
                    }
                    changed.push(m.filename.clone());
                }
            }
            MigrateAction::Repair => {
                for row in applied.values() {
                    if !row.is_applied() {
                        store.delete_row(row.version, row.migration_type).await?;
                        changed.push(row.filename.clone());
                    } else if let Some(m) = self.find(row.migration_type, row.version)
                        && m.checksum != row.checksum
                    {
                        store.update_checksum(m).await?;
                        changed.push(m.filename.clone());
                    }
                }
            }
            MigrateAction::Baseline { target } => {
                if !self
                    .migrations
                    .iter()
                    .any(|m| m.migration_type == MigrationType::App && m.version == target)
                {
                    return Err(MigrateError::BadRequest(format!(
                        "baseline target {target} is not the version of an app migration"
                    )));
                }
                for m in &self.migrations {
                    if m.migration_type == MigrationType::App
                        && m.version <= target
                        && !applied.contains_key(&(m.migration_type, m.version))
                    {
                        store.record(m, "applied", self.origin(m)).await?;
                        changed.push(m.filename.clone());
                    }
                }
            }
        }
        let applied = if changed.is_empty() {
            applied
        } else {
            store
                .applied()
                .await?
                .into_iter()
                .map(|row| ((row.migration_type, row.version), row))
                .collect()
        };
        Ok(MigrateReport {
            migrations: self.states(&applied, action == MigrateAction::Plan),
            changed,
            lock_wait: Duration::ZERO,
        })
    }

    fn find(&self, migration_type: MigrationType, version: u64) -> Option<&Migration> {
        self.migrations
            .iter()
            .find(|m| m.migration_type == migration_type && m.version == version)
    }

    /// Refuses changed, missing, dirty and out-of-order migrations.
    fn validate(
        &self,
        applied: &BTreeMap<Key, AppliedMigration>,
        options: MigrateOptions,
    ) -> Result<(), MigrateError> {
        for row in applied.values() {
            if !row.is_applied() {
                return Err(MigrateError::Dirty {
                    filename: row.filename.clone(),
                    migration_type: row.migration_type,
                    state: row.state.clone(),
                });
            }
            match self.find(row.migration_type, row.version) {
                // Sent in a request: the server never had its file.
                None if !options.allow_missing && row.origin != MigrationOrigin::Request => {
                    return Err(MigrateError::Missing {
                        filename: row.filename.clone(),
                        version: row.version,
                        migration_type: row.migration_type,
                    });
                }
                Some(m) if m.checksum != row.checksum => {
                    return Err(MigrateError::ChecksumMismatch {
                        filename: m.filename.clone(),
                        migration_type: m.migration_type,
                        recorded: row.checksum.clone(),
                        found: m.checksum.clone(),
                    });
                }
                _ => {}
            }
        }
        if !options.allow_out_of_order {
            for m in &self.migrations {
                let newest = applied
                    .keys()
                    .filter(|(t, _)| *t == m.migration_type)
                    .map(|(_, v)| *v)
                    .max();
                if let Some(newest) = newest
                    && m.version < newest
                    && !applied.contains_key(&(m.migration_type, m.version))
                {
                    return Err(MigrateError::OutOfOrder {
                        filename: m.filename.clone(),
                        newest,
                    });
                }
            }
        }
        Ok(())
    }

    fn states(
        &self,
        applied: &BTreeMap<Key, AppliedMigration>,
        with_sql: bool,
    ) -> Vec<MigrationState> {
        let mut states: Vec<MigrationState> = self
            .migrations
            .iter()
            .map(|m| {
                let row = applied.get(&(m.migration_type, m.version));
                MigrationState {
                    version: m.version,
                    description: m.description.clone(),
                    migration_type: m.migration_type,
                    filename: m.filename.clone(),
                    state: row.map_or("pending".to_owned(), |r| r.state.clone()),
                    applied_at: row.map(|r| r.applied_at.clone()).unwrap_or_default(),
                    checksum: m.checksum.clone(),
                    checksum_ok: row.is_none_or(|r| r.checksum == m.checksum),
                    sql: if with_sql && row.is_none() {
                        m.sql.clone()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        for row in applied.values() {
            if self.find(row.migration_type, row.version).is_none() {
                // A migration sent in a request is as applied as its row
                // says; only a server file that went away is missing.
                let sent = row.origin == MigrationOrigin::Request;
                states.push(MigrationState {
                    version: row.version,
                    description: row.description.clone(),
                    migration_type: row.migration_type,
                    filename: row.filename.clone(),
                    state: if sent {
                        row.state.clone()
                    } else {
                        "missing".to_owned()
                    },
                    applied_at: row.applied_at.clone(),
                    checksum: row.checksum.clone(),
                    checksum_ok: sent,
                    sql: String::new(),
                });
            }
        }
        if with_sql {
            states.retain(|s| s.state == "pending");
        }
        states.sort_by_key(|s| (s.migration_type, s.version));
        states
    }
}

impl From<MigrationState> for iadb::proto::MigrationStatus {
    fn from(s: MigrationState) -> Self {
        let MigrationState {
            version,
            description,
            migration_type,
            filename,
            state,
            applied_at,
            checksum,
            checksum_ok,
            sql,
        } = s;
        iadb::proto::MigrationStatus {
            version: version.to_string(),
            description,
            migration_type: migration_type.as_str().to_owned(),
            filename,
            state,
            applied_at,
            checksum,
            checksum_ok,
            sql,
        }
    }
}
