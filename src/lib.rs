//! The iadb API and the domain types every iadb crate shares.
//!
//! `proto` is the generated gRPC API (from `proto/iadb/v1`); everything else is
//! the domain side of it: [`Value`], [`DatabaseType`], [`ConnectionConfig`],
//! [`QueryResult`], [`Error`] and the [`DatabaseInterface`] trait that both the
//! server's local adapters and the remote client implement. Conversions between
//! the two sides live in one module (`convert`), and so does the mapping of
//! errors to gRPC status codes (`status`).

pub mod arrow;
mod batch;
pub mod codec;
mod config;
pub mod convert;
mod error;
mod interface;
mod result;
mod scrub;
mod status;
mod value;

/// The generated gRPC API, package `iadb.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("iadb.v1");

    /// `iadb.v1.RowBatch`: rows kept in their encoded form
    /// ([`crate::RowBatch`]).
    pub use crate::RowBatch;

    /// The encoded `FileDescriptorSet` of `proto/`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("iadb_descriptor");
}

pub use batch::{Cell, EncodedRows, IntoRows, RowBatch, RowWriter, ValueWriter};
pub use config::{
    ConnectionConfig, DatabaseType, Dialect, EngineSpec, StoreDialect, UrlError, UrlForm,
    is_secret_option, redact_url_text,
};
pub use error::{ECHO_MAX_BYTES, Error, ErrorKind, Result, clip};
pub use interface::{
    DatabaseInterface, ExecuteOutcome, PoolStatus, QueryEvent, QueryStream, RowStream,
    arrow_where_rows_were_expected, collect_query_result, create_table_sql, quote_identifier,
};
pub use result::{Column, QueryResult, Row};
pub use scrub::ValueScrubber;
pub use status::SQLSTATE_METADATA_KEY;
pub use value::{Value, parse_naive_datetime};
