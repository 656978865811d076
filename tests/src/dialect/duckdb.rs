//! DuckDB's answers to the conformance hooks.

use super::TestDialect;
use iadb::Value;

/// DuckDB.
pub struct Duckdb;

impl TestDialect for Duckdb {
    // JSON is a type of DuckDB's json extension, which the bundled engine
    // does not include (and iadb does not download extensions at query
    // time): documents live in VARCHAR and come back as text. With the
    // extension installed, a JSON column comes back as json.
    fn json_type(&self) -> &'static str {
        "VARCHAR"
    }
    fn json_result(&self, doc: &str) -> Value {
        Value::Text(doc.to_owned())
    }
    // DuckDB resolves identifiers without regard to case (a catalogue cannot
    // hold `t` and `T`), so TableExists matches the same way.
    fn table_names_case_insensitive(&self) -> bool {
        true
    }
    fn qualified(&self, table: &str) -> String {
        format!("main.{table}")
    }
    // 1 / 0 is NULL in DuckDB, not an error; a failed cast is. Within one
    // scan DuckDB computes the next data chunk before handing over the
    // current one, and an error discards what it had ready, so a CASE on the
    // failing row (chunk 2 of 3,000 rows) fails before any row arrives. The
    // branches of a UNION ALL run one after the other (insertion order is
    // kept), and the adapter keeps DuckDB's read-ahead to one chunk, so the
    // rows before `fail_at` are handed over before the failing branch runs.
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String {
        format!(
            "SELECT x AS v FROM {table} WHERE x < {fail_at} \
             UNION ALL SELECT CAST('boom ' || x AS BIGINT) FROM {table} WHERE x = {fail_at}"
        )
    }
    fn series_sql(&self, n: u64) -> String {
        format!("SELECT x, 'row-' || x AS label FROM range(1, {n} + 1) AS g(x)")
    }
}
