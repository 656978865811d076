//! Migrations: `V{version}__{description}.sql` files (with optional
//! `U{version}__...` undo files), tracked in `ia_migrations` with SHA-256
//! checksums, system migrations (embedded) before app migrations, one lock
//! per database so replicas apply each migration exactly once.
//!
//! `source` finds and checks files, `migration` is one migration and its
//! checksum, `store` is the tracking table and lock over a `session` (one
//! dedicated connection per engine), `migrator` is the run.

pub mod migration;
pub mod migrator;
pub mod session;
pub mod source;
pub mod store;

pub use migration::{Migration, MigrationType};
pub use migrator::{MigrateAction, MigrateOptions, MigrateReport, MigrationState, Migrator};
pub use session::{MigrationSession, OnSession, StoreDialect};

use iadb::{Error, ErrorKind};

include!(concat!(env!("OUT_DIR"), "/system_migrations.rs"));

/// The system migrations embedded in this binary, parsed.
pub fn system_migrations() -> Result<Vec<Migration>, MigrateError> {
    let files = SYSTEM_MIGRATIONS
        .iter()
        .map(|(name, content)| source::MigrationFile {
            filename: (*name).to_owned(),
            content: content.to_vec(),
        })
        .collect();
    Ok(source::parse(files, MigrationType::System)?)
}
use std::time::Duration;

/// Why a migration run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The files are wrong (bad name, duplicate version, not UTF-8, empty).
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// An applied migration's file changed since.
    #[error(
        "checksum mismatch for applied migration {filename} ({migration_type}): recorded {recorded}, file has {found}; restore the file or run repair"
    )]
    ChecksumMismatch {
        /// The file.
        filename: String,
        /// System or app.
        migration_type: MigrationType,
        /// Checksum in the tracking table.
        recorded: String,
        /// Checksum of the file now.
        found: String,
    },
    /// An applied migration has no file.
    #[error(
        "applied migration {filename} (version {version}, {migration_type}) has no file; restore it or allow missing migrations"
    )]
    Missing {
        /// The recorded file name.
        filename: String,
        /// Its version.
        version: u64,
        /// System or app.
        migration_type: MigrationType,
    },
    /// A pending migration is older than the newest applied one.
    #[error(
        "pending migration {filename} is older than applied version {newest}; allow out-of-order migrations to apply it"
    )]
    OutOfOrder {
        /// The pending file.
        filename: String,
        /// The newest applied version of its type.
        newest: u64,
    },
    /// A previous run failed or stopped half-way.
    #[error(
        "migration {filename} ({migration_type}) is {state} from an earlier run: fix it, then run repair"
    )]
    Dirty {
        /// The file.
        filename: String,
        /// System or app.
        migration_type: MigrationType,
        /// `failed` or `pending`.
        state: String,
    },
    /// Rollback would need undo files that do not exist.
    #[error("cannot roll back: no undo file for {0}; nothing was changed")]
    NoUndo(String),
    /// The requested target version is not a known migration.
    #[error("{0}")]
    BadRequest(String),
    /// Another runner held the lock for too long.
    #[error("timed out after {0:?} waiting for the migration lock held by another runner")]
    LockTimeout(Duration),
    /// The tracking table holds something iadb did not write.
    #[error("corrupt tracking table: {0}")]
    Corrupt(String),
    /// A migration failed on the engine.
    #[error("{0}")]
    Engine(#[from] Error),
    /// A migration failed; `applied` lists what this run applied before it.
    #[error("migration {filename} failed: {source}{}", applied_note(applied))]
    Failed {
        /// The failing file.
        filename: String,
        /// Files applied by this run before the failure.
        applied: Vec<String>,
        /// The engine's error.
        #[source]
        source: Box<MigrateError>,
    },
}

fn applied_note(applied: &[String]) -> String {
    if applied.is_empty() {
        " (nothing was applied before it in this run)".to_owned()
    } else {
        format!(" (applied before it in this run: {})", applied.join(", "))
    }
}

impl MigrateError {
    fn kind(&self) -> ErrorKind {
        match self {
            MigrateError::Source(_) | MigrateError::BadRequest(_) => ErrorKind::InvalidArgument,
            MigrateError::ChecksumMismatch { .. }
            | MigrateError::Missing { .. }
            | MigrateError::OutOfOrder { .. }
            | MigrateError::Dirty { .. }
            | MigrateError::NoUndo(_)
            | MigrateError::Corrupt(_) => ErrorKind::FailedPrecondition,
            MigrateError::LockTimeout(_) => ErrorKind::Unavailable,
            MigrateError::Engine(e) => e.kind(),
            MigrateError::Failed { source, .. } => source.kind(),
        }
    }
}

impl From<MigrateError> for Error {
    fn from(e: MigrateError) -> Self {
        let code = match &e {
            MigrateError::Engine(inner) => inner.code().map(str::to_owned),
            MigrateError::Failed { source, .. } => match source.as_ref() {
                MigrateError::Engine(inner) => inner.code().map(str::to_owned),
                _ => None,
            },
            _ => None,
        };
        let error = Error::new(e.kind(), e.to_string());
        match code {
            Some(c) => error.with_code(c),
            None => error,
        }
    }
}
