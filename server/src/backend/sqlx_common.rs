//! What the sqlx-based adapters share: mapping sqlx errors to iadb errors.

use iadb::{Error, ErrorKind};
use sqlx::error::{DatabaseError, ErrorKind as SqlxKind};

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
