//! Cloudflare D1's answers to the conformance hooks: SQLite's, except where
//! D1's JSON API differs (its numbers are JavaScript doubles, and it reports
//! no declared column types).

use super::{Sqlite, TestDialect};
use iadb::Value;

/// Cloudflare D1 (through the fake of its REST API).
pub struct D1;

impl TestDialect for D1 {
    fn start_fake(&self) -> Option<crate::d1_fake::D1Fake> {
        Some(crate::d1_fake::D1Fake::start())
    }
    // SQLite underneath: the same types and SQL.
    fn double_type(&self) -> &'static str {
        Sqlite.double_type()
    }
    fn decimal_type(&self) -> &'static str {
        Sqlite.decimal_type()
    }
    fn decimal_result(&self, digits: &str) -> Value {
        Sqlite.decimal_result(digits)
    }
    fn timestamptz_type(&self) -> &'static str {
        Sqlite.timestamptz_type()
    }
    fn datetime_type(&self) -> &'static str {
        Sqlite.datetime_type()
    }
    fn json_type(&self) -> &'static str {
        Sqlite.json_type()
    }
    fn json_result(&self, doc: &str) -> Value {
        Sqlite.json_result(doc)
    }
    fn bool_param_result(&self, b: bool) -> Value {
        Sqlite.bool_param_result(b)
    }
    fn has_last_insert_id(&self) -> bool {
        Sqlite.has_last_insert_id()
    }
    fn table_names_case_insensitive(&self) -> bool {
        Sqlite.table_names_case_insensitive()
    }
    fn qualified(&self, table: &str) -> String {
        Sqlite.qualified(table)
    }
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String {
        Sqlite.failing_at_row_sql(table, fail_at)
    }
    fn series_sql(&self, n: u64) -> String {
        Sqlite.series_sql(n)
    }

    // Where D1 differs. JSON has no NaN or infinity: both are refused.
    fn stores_nan(&self) -> bool {
        false
    }
    fn stores_infinity(&self) -> bool {
        false
    }
    // D1 prints numbers as JavaScript does: -0 as `0`, an integer.
    fn negative_zero_result(&self) -> Value {
        Value::Int(0)
    }
    // JSON numbers are doubles in D1: only ±(2^53 − 1) is exact.
    fn exact_integer_limit(&self) -> Option<i64> {
        Some((1 << 53) - 1)
    }
    // D1 reports no declared column types, so a value comes back as what
    // SQLite stored: booleans as 0/1, dates and times as the text iadb sent.
    fn typed_column_result(&self, sent: Value) -> Value {
        match sent {
            Value::Bool(b) => Value::Int(i64::from(b)),
            Value::Date(d) => Value::Text(d.format("%Y-%m-%d").to_string()),
            Value::Time(t) => Value::Text(t.format("%H:%M:%S%.f").to_string()),
            Value::DateTime(t) => Value::Text(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
            Value::TimestampTz(t) => Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
            other => other,
        }
    }
    // D1 answers a statement whole: a failing one yields no rows at all.
    fn streams_rows_before_error(&self) -> bool {
        false
    }
}
