//! PostgreSQL's answers to the conformance hooks.

use super::TestDialect;

/// PostgreSQL.
pub struct Postgres;

impl TestDialect for Postgres {
    fn bytes_type(&self) -> &'static str {
        "BYTEA"
    }
    // PostgreSQL text cannot hold U+0000.
    fn text_allows_nul(&self) -> bool {
        false
    }
    fn qualified(&self, table: &str) -> String {
        format!("public.{table}")
    }
    // Division by (x - x) fails only when that row is computed; a constant
    // 1 / 0 would fail at plan time, before any row.
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String {
        format!("SELECT CASE WHEN x = {fail_at} THEN 1 / (x - x) ELSE x END AS v FROM {table}")
    }
    fn series_sql(&self, n: u64) -> String {
        format!("SELECT x, 'row-' || x AS label FROM generate_series(1, {n}) AS g(x)")
    }
}
