//! The one error type callers of iadb see, whatever the engine or transport.

use std::fmt;

/// What went wrong, in the terms of the gRPC status codes it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed request or SQL error (syntax, unknown table or column).
    InvalidArgument,
    /// Something named does not exist (outside SQL).
    NotFound,
    /// A unique constraint was violated.
    AlreadyExists,
    /// Another constraint was violated, or migration state forbids the action.
    FailedPrecondition,
    /// No or bad credentials.
    Unauthenticated,
    /// Credentials without the right to do this.
    PermissionDenied,
    /// The engine cannot be reached or the pool is exhausted. Safe to retry
    /// for a read; a write may have been applied (see the README's table).
    Unavailable,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// A request or result is over a configured limit.
    ResourceExhausted,
    /// The caller went away.
    Cancelled,
    /// The call is not implemented (yet) for this engine.
    Unimplemented,
    /// A transaction conflict; the whole transaction may be retried.
    Aborted,
    /// A bug.
    Internal,
}

impl ErrorKind {
    /// A short lowercase name, used in logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An iadb error: a kind, the engine's (or iadb's) message, and the SQLSTATE
/// or engine error code where one is known.
///
/// The message never contains a credential: adapters build it from the
/// engine's error text, never from a connection URL.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    code: Option<String>,
    engine_code: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            engine_code: None,
            source: None,
        }
    }

    /// Attaches the SQLSTATE or engine error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Attaches the engine's own error number where it has one besides the
    /// SQLSTATE (MySQL/MariaDB: `1050` for `42S01`, and `HY000` errors that
    /// only their number tells apart).
    pub fn with_engine_code(mut self, code: impl Into<String>) -> Self {
        self.engine_code = Some(code.into());
        self
    }

    /// The same error (kind, code, source) with `context` before its message:
    /// `context: message`.
    pub fn in_context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same error (kind, codes) with another message and without its
    /// source: for a message rewritten to leave something out (a parameter
    /// value), which the source would still hold.
    pub fn with_message_only(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self.source = None;
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, naming the thing that is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The SQLSTATE or engine error code, where known.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The engine's own error number, where it has one besides the
    /// SQLSTATE (MySQL/MariaDB).
    pub fn engine_code(&self) -> Option<&str> {
        self.engine_code.as_deref()
    }

    /// Whether repeating the same call may succeed (the engine was unreachable
    /// or busy).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

/// Longest piece of a caller's input (a database or table name, a keyword)
/// echoed into an error message or a log line, in bytes.
pub const ECHO_MAX_BYTES: usize = 200;

/// `text` as it may be echoed into a message: whole when short, else its
/// first [`ECHO_MAX_BYTES`] (cut on a character) and how long it was, so a
/// 10 MB name never becomes a 10 MB error or log line.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= ECHO_MAX_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = ECHO_MAX_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", &text[..cut], text.len()))
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    #[test]
    fn long_input_is_clipped_on_a_character() {
        assert_eq!(clip("default"), "default");
        let long = "é".repeat(1_000_000);
        let clipped = clip(&long);
        assert!(clipped.len() < ECHO_MAX_BYTES + 40, "{}", clipped.len());
        assert!(clipped.ends_with("... (2000000 bytes)"), "{clipped}");
    }
}
