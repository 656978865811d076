//! The one place where [`Error`] and `tonic::Status` turn into each other.

use crate::{Error, ErrorKind};
use tonic::{Code, Status, metadata::MetadataValue};

/// Response metadata key carrying the SQLSTATE or engine error code.
pub const SQLSTATE_METADATA_KEY: &str = "iadb-sqlstate";

/// Response metadata key carrying the engine's own error number, where it
/// has one besides the SQLSTATE (MySQL/MariaDB).
pub const ENGINE_CODE_METADATA_KEY: &str = "iadb-engine-code";

impl From<ErrorKind> for Code {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Cancelled => Code::Cancelled,
            ErrorKind::Unimplemented => Code::Unimplemented,
            ErrorKind::Aborted => Code::Aborted,
            ErrorKind::Internal => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = Code::from(e.kind());
        let mut status = Status::new(code, e.message());
        if let Some(value) = e.code().and_then(|c| MetadataValue::try_from(c).ok()) {
            status.metadata_mut().insert(SQLSTATE_METADATA_KEY, value);
        }
        if let Some(value) = e
            .engine_code()
            .and_then(|c| MetadataValue::try_from(c).ok())
        {
            status
                .metadata_mut()
                .insert(ENGINE_CODE_METADATA_KEY, value);
        }
        status
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let kind = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::Unimplemented => ErrorKind::Unimplemented,
            Code::Aborted => ErrorKind::Aborted,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => ErrorKind::Internal,
        };
        let code = s
            .metadata()
            .get(SQLSTATE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = if s.message().is_empty() {
            format!("server answered {:?}", s.code())
        } else {
            s.message().to_owned()
        };
        let engine_code = s
            .metadata()
            .get(ENGINE_CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut error = Error::new(kind, message);
        if let Some(c) = code {
            error = error.with_code(c);
        }
        if let Some(c) = engine_code {
            error = error.with_engine_code(c);
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_travels_in_metadata() {
        let status = Status::from(
            Error::new(ErrorKind::AlreadyExists, "dup")
                .with_code("23000")
                .with_engine_code("1062"),
        );
        assert_eq!(status.code(), Code::AlreadyExists);
        let back = Error::from(status);
        assert_eq!(back.kind(), ErrorKind::AlreadyExists);
        assert_eq!(back.code(), Some("23000"));
        assert_eq!(back.engine_code(), Some("1062"));
        assert_eq!(back.message(), "dup");
    }
}
