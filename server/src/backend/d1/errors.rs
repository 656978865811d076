//! D1's and SQLite's error texts, classified.

use super::client::D1Client;
use iadb::{Error, ErrorKind};

/// How an SQLite message (as D1 passes it on, `...: SQLITE_CONSTRAINT`)
/// maps to a kind, as the SQLite adapter maps the same errors.
pub(super) fn classify_sqlite_text(message: &str) -> Option<(ErrorKind, Option<&'static str>)> {
    const CODES: &[(&str, ErrorKind)] = &[
        ("SQLITE_CONSTRAINT", ErrorKind::FailedPrecondition),
        ("SQLITE_BUSY", ErrorKind::Unavailable),
        ("SQLITE_LOCKED", ErrorKind::Unavailable),
        ("SQLITE_IOERR", ErrorKind::Unavailable),
        ("SQLITE_FULL", ErrorKind::ResourceExhausted),
        ("SQLITE_TOOBIG", ErrorKind::ResourceExhausted),
        ("SQLITE_AUTH", ErrorKind::PermissionDenied),
        ("SQLITE_READONLY", ErrorKind::PermissionDenied),
        ("SQLITE_MISMATCH", ErrorKind::InvalidArgument),
        ("SQLITE_RANGE", ErrorKind::InvalidArgument),
        ("SQLITE_ERROR", ErrorKind::InvalidArgument),
    ];
    let code = CODES.iter().find(|(name, _)| message.contains(name));
    let kind = if message.contains("UNIQUE constraint failed") || message.contains("already exists")
    {
        Some(ErrorKind::AlreadyExists)
    } else if ["NOT NULL", "CHECK", "FOREIGN KEY"]
        .iter()
        .any(|c| message.contains(&format!("{c} constraint failed")))
    {
        Some(ErrorKind::FailedPrecondition)
    } else if let Some((_, kind)) = code {
        Some(*kind)
    } else if [
        "no such table",
        "no such column",
        "syntax error",
        "incomplete input",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        Some(ErrorKind::InvalidArgument)
    } else {
        None
    };
    kind.map(|k| (k, code.map(|(name, _)| *name)))
}

/// Transient D1 messages: the statement did not run, or may not have.
pub(super) fn is_transient_text(message: &str) -> bool {
    [
        "overloaded",
        "Network connection lost",
        "internal error",
        "try again",
    ]
    .iter()
    .any(|m| message.contains(m))
}

impl D1Client {
    /// The error of a statement D1 ran and refused.
    pub(super) fn statement_error(&self, code: Option<i64>, message: &str) -> Error {
        let (kind, sqlite_code) =
            classify_sqlite_text(message).unwrap_or((ErrorKind::InvalidArgument, None));
        let e = Error::new(kind, self.scrub(message));
        match (sqlite_code, code) {
            (Some(name), _) => e.with_code(name),
            (None, Some(c)) => e.with_code(c.to_string()),
            (None, None) => e,
        }
    }
}

/// Whether D1 ran the statements and refused one (as opposed to not
/// reaching D1, or refusing the request as a whole).
pub(super) fn is_statement_error(e: &Error) -> bool {
    e.code().is_some_and(|c| c.starts_with("SQLITE_"))
        || matches!(
            e.kind(),
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition
        )
}

pub(super) fn at_set(index: usize, e: Error) -> Error {
    e.in_context(format_args!("parameter set {index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_texts_map_like_the_sqlite_adapter() {
        let kind = |m| classify_sqlite_text(m).map(|(k, _)| k);
        assert_eq!(
            kind("UNIQUE constraint failed: t.id: SQLITE_CONSTRAINT"),
            Some(ErrorKind::AlreadyExists)
        );
        assert_eq!(
            kind("NOT NULL constraint failed: t.name: SQLITE_CONSTRAINT"),
            Some(ErrorKind::FailedPrecondition)
        );
        assert_eq!(
            kind("no such table: foo: SQLITE_ERROR"),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind("incomplete input: SQLITE_ERROR"),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(kind("internal error; reference = abc"), None);
    }
}
