//! SQLite's answers to the conformance hooks.

use super::TestDialect;
use iadb::Value;

/// SQLite.
pub struct Sqlite;

impl TestDialect for Sqlite {
    fn double_type(&self) -> &'static str {
        "REAL"
    }
    // NUMERIC affinity would turn a long decimal into a REAL and lose digits;
    // SQLite keeps exact decimals only as TEXT.
    fn decimal_type(&self) -> &'static str {
        "TEXT"
    }
    fn decimal_result(&self, digits: &str) -> Value {
        Value::Text(digits.to_owned())
    }
    fn timestamptz_type(&self) -> &'static str {
        "DATETIME"
    }
    fn datetime_type(&self) -> &'static str {
        "DATETIME"
    }
    // SQLite has no JSON type: a document is text.
    fn json_type(&self) -> &'static str {
        "TEXT"
    }
    fn json_result(&self, doc: &str) -> Value {
        Value::Text(doc.to_owned())
    }
    fn bool_param_result(&self, b: bool) -> Value {
        Value::Int(i64::from(b))
    }
    // SQLite turns NaN into NULL; iadb refuses it instead.
    fn stores_nan(&self) -> bool {
        false
    }
    fn has_last_insert_id(&self) -> bool {
        true
    }
    fn table_names_case_insensitive(&self) -> bool {
        true
    }
    fn qualified(&self, table: &str) -> String {
        format!("main.{table}")
    }
    // abs(i64::MIN) overflows at run time; a plain scan (no ORDER BY, which
    // would compute every row before the first) yields rows in insert order.
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String {
        format!(
            "SELECT CASE WHEN x = {fail_at} THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM {table}"
        )
    }
    fn series_sql(&self, n: u64) -> String {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x, 'row-' || x AS label FROM c"
        )
    }
}
