//! Errors.

use iadb::{Error, ErrorKind};

/// Maps a DuckDB error to an iadb error. DuckDB's message starts with the
/// kind of its exception ("Parser Error: ...", "Constraint Error: ..."),
/// which decides the code; the message is kept whole and the kind becomes
/// the error code.
pub(super) fn map_duckdb_error(e: duckdb::Error) -> Error {
    let mapped = match &e {
        duckdb::Error::DuckDBFailure(_, Some(message)) => classify_message(message),
        duckdb::Error::InvalidParameterCount(given, expected) => Error::invalid_argument(format!(
            "wrong parameter count: the statement has {expected} placeholder(s), {given} parameter(s) given"
        )),
        duckdb::Error::FromSqlConversionFailure(index, ty, source) => {
            Error::invalid_argument(format!(
                "result column {} has type {ty}, which iadb cannot return ({source}); cast it, e.g. to VARCHAR",
                index.saturating_add(1)
            ))
        }
        duckdb::Error::ToSqlConversionFailure(source) => {
            Error::invalid_argument(format!("cannot bind a parameter: {source}"))
        }
        duckdb::Error::NulError(_) => {
            Error::invalid_argument("the SQL text contains a NUL character")
        }
        duckdb::Error::InvalidPath(path) => {
            Error::invalid_argument(format!("invalid database path {}", path.display()))
        }
        other => Error::internal(format!("DuckDB: {other}")),
    };
    mapped.with_source(e)
}

/// What a caller refused by the sandbox is told after DuckDB's message.
const SANDBOX_HINT: &str = "refused by iadb's DuckDB sandbox: no host files, network, \
    extension loads or SET on a served database; the database URL's own settings \
    (e.g. enable_external_access=true) lift it for that database, see docs/security.md";

fn classify_message(message: &str) -> Error {
    let first_line = message.lines().next().unwrap_or_default();
    let exception = first_line
        .split_once(" Error:")
        .map(|(kind, _)| kind.trim())
        .unwrap_or("");
    let kind = match exception {
        "Constraint" => {
            let lower = first_line.to_lowercase();
            if lower.contains("duplicate key")
                || lower.contains("unique constraint")
                || lower.contains("primary key or unique")
                || lower.contains("contains duplicates")
            {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::FailedPrecondition
            }
        }
        // "Table with name t already exists!"
        "Catalog" if first_line.contains("already exists") => ErrorKind::AlreadyExists,
        // "Could not drop the table because this table is main key table
        // of the table ...", "Cannot drop entry ... because there are
        // entries that depend on it".
        "Catalog" if first_line.contains("depend") || first_line.contains("main key table") => {
            ErrorKind::FailedPrecondition
        }
        "Dependency" | "Sequence" | "Missing Extension" | "Extension Autoloading" => {
            ErrorKind::FailedPrecondition
        }
        // A write inside a read-only transaction: retrying cannot help.
        "TransactionContext" if first_line.contains("read-only mode") => {
            ErrorKind::PermissionDenied
        }
        "TransactionContext" | "Transaction" => ErrorKind::Aborted,
        "IO" | "HTTP" | "Connection" | "Resource In Use" => ErrorKind::Unavailable,
        "Out of Memory" => ErrorKind::ResourceExhausted,
        "Permission" => ErrorKind::PermissionDenied,
        // iadb's sandbox: a `SET` after `lock_configuration`, or an attempt
        // to switch external access or community extensions back on.
        "Invalid Input"
            if first_line.contains("configuration has been locked")
                || first_line.contains("while database is running") =>
        {
            ErrorKind::PermissionDenied
        }
        "INTERRUPT" => ErrorKind::Cancelled,
        "FATAL" | "INTERNAL" | "Data Corruption" => ErrorKind::Internal,
        // Parser, Binder, Catalog, Conversion, Out of Range, Invalid Input,
        // Not implemented, ...: the statement or its values are wrong.
        _ => ErrorKind::InvalidArgument,
    };
    let error = if kind == ErrorKind::PermissionDenied && exception != "TransactionContext" {
        Error::new(kind, format!("{message}\n({SANDBOX_HINT})"))
    } else {
        Error::new(kind, message)
    };
    if exception.is_empty() {
        error
    } else {
        error.with_code(exception.to_uppercase().replace(' ', "_"))
    }
}

/// Prefixes an error with the parameter set it happened in.
pub(super) fn in_set(index: usize, e: Error) -> Error {
    e.in_context(format_args!("parameter set {index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_by_duckdb_exception_kind() {
        let kind = |m: &str| classify_message(m).kind();
        assert_eq!(
            kind("Parser Error: syntax error at or near \"SELEC\""),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            kind("Constraint Error: Duplicate key \"id: 1\" violates primary key constraint."),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind("Constraint Error: NOT NULL constraint failed: t.name"),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            kind("IO Error: Could not set lock on file"),
            ErrorKind::Unavailable
        );
        assert_eq!(classify_message("Catalog Error: x").code(), Some("CATALOG"));
        assert_eq!(
            kind("Catalog Error: Table with name t already exists!"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind("TransactionContext Error: Catalog write-write conflict on alter with \"t\""),
            ErrorKind::Aborted
        );
        assert_eq!(
            kind(
                "TransactionContext Error: Cannot write to database \"x\" - transaction is \
                 launched in read-only mode"
            ),
            ErrorKind::PermissionDenied
        );
        let locked = classify_message(
            "Invalid Input Error: Cannot change configuration option \"memory_limit\" - the \
             configuration has been locked",
        );
        assert_eq!(locked.kind(), ErrorKind::PermissionDenied);
        assert!(locked.message().contains("sandbox"), "{}", locked.message());
        assert_eq!(
            kind(
                "Permission Error: Cannot access file \"/etc/passwd\" - file system operations are disabled by configuration"
            ),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind("Invalid Input Error: Could not convert"),
            ErrorKind::InvalidArgument
        );
    }
}
