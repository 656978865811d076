//! Per-dialect hooks of the conformance suite: SQL type names and the
//! documented differences between engines. The defaults are the common
//! answer; each engine's file overrides only where it truly differs.

use crate::d1_fake::D1Fake;
use iadb::{DatabaseType, Value};

mod d1;
mod duckdb;
mod mysql;
mod postgres;
mod sqlite;

pub use d1::D1;
pub use duckdb::Duckdb;
pub use mysql::Mysql;
pub use postgres::Postgres;
pub use sqlite::Sqlite;

/// The conformance hooks of `kind` (one exhaustive match: a new engine is
/// a compile error here until it has its hooks).
pub fn of(kind: DatabaseType) -> &'static dyn TestDialect {
    match kind {
        DatabaseType::Sqlite => &Sqlite,
        DatabaseType::Postgresql => &Postgres,
        DatabaseType::Mysql => &Mysql,
        DatabaseType::Duckdb => &Duckdb,
        DatabaseType::CloudflareD1 => &D1,
    }
}

/// What the conformance cases ask of an engine.
pub trait TestDialect: Sync {
    /// A local fake of the engine's service, started when no test database
    /// is configured for it (`IADB_TEST_<SCHEME>_URL`); `None`: it has none.
    fn start_fake(&self) -> Option<D1Fake> {
        None
    }
    /// Column type for 64-bit integers.
    fn bigint_type(&self) -> &'static str {
        "BIGINT"
    }
    /// Column type for doubles.
    fn double_type(&self) -> &'static str {
        "DOUBLE PRECISION"
    }
    /// Column type for text.
    fn text_type(&self) -> &'static str {
        "TEXT"
    }
    /// Column type for exact decimals.
    fn decimal_type(&self) -> &'static str {
        "DECIMAL(38, 9)"
    }
    /// How an exact decimal comes back from its column.
    fn decimal_result(&self, digits: &str) -> Value {
        Value::Decimal(digits.to_owned())
    }
    /// Column type for binary data.
    fn bytes_type(&self) -> &'static str {
        "BLOB"
    }
    /// Column type for booleans.
    fn bool_type(&self) -> &'static str {
        "BOOLEAN"
    }
    /// Column type for dates.
    fn date_type(&self) -> &'static str {
        "DATE"
    }
    /// Column type for times of day.
    fn time_type(&self) -> &'static str {
        "TIME"
    }
    /// Column type for timestamps with time zone.
    fn timestamptz_type(&self) -> &'static str {
        "TIMESTAMP WITH TIME ZONE"
    }
    /// Column type for naive timestamps.
    fn datetime_type(&self) -> &'static str {
        "TIMESTAMP"
    }
    /// Column type for JSON.
    fn json_type(&self) -> &'static str {
        "JSON"
    }
    /// How a JSON document comes back from its column.
    fn json_result(&self, doc: &str) -> Value {
        Value::Json(doc.to_owned())
    }
    /// How a bool parameter comes back from `SELECT ?` (no declared type).
    fn bool_param_result(&self, b: bool) -> Value {
        Value::Bool(b)
    }
    /// Whether NaN can be stored (otherwise it is INVALID_ARGUMENT).
    fn stores_nan(&self) -> bool {
        true
    }
    /// Whether ±infinity can be stored.
    fn stores_infinity(&self) -> bool {
        true
    }
    /// Whether a double keeps the sign of -0.0 (otherwise it comes back as
    /// 0.0, which compares equal).
    fn keeps_negative_zero(&self) -> bool {
        true
    }
    /// How `-0.0` comes back from `SELECT ?` (compared bit for bit when a
    /// double).
    fn negative_zero_result(&self) -> Value {
        Value::Float(if self.keeps_negative_zero() {
            -0.0
        } else {
            0.0
        })
    }
    /// The largest integer magnitude the engine carries exactly (`None`: all
    /// of int64); beyond it a value is refused with INVALID_ARGUMENT.
    fn exact_integer_limit(&self) -> Option<i64> {
        None
    }
    /// How a value of a typed kind (bool, date, time, timestamp) comes back
    /// from a column declared with that kind's type.
    fn typed_column_result(&self, sent: Value) -> Value {
        sent
    }
    /// Whether a statement that fails at some row first streams the rows
    /// before it (otherwise the error comes before any row: the engine
    /// answers whole).
    fn streams_rows_before_error(&self) -> bool {
        true
    }
    /// Whether text may contain U+0000.
    fn text_allows_nul(&self) -> bool {
        true
    }
    /// Whether Execute of an INSERT reports the new row's id.
    fn has_last_insert_id(&self) -> bool {
        false
    }
    /// Whether TableExists matches table names case-insensitively.
    fn table_names_case_insensitive(&self) -> bool {
        false
    }
    /// `table` qualified with the engine's default schema.
    fn qualified(&self, table: &str) -> String;
    /// A query over `table` (column `x` = 1..=n, inserted in order) that
    /// fails on the engine when it reaches row `fail_at`, after earlier rows
    /// were produced.
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String;
    /// A query producing `n` rows of (x bigint, label text) without a table.
    fn series_sql(&self, n: u64) -> String;
}
