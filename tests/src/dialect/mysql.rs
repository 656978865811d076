//! MySQL's and MariaDB's answers to the conformance hooks. The suite runs on
//! MariaDB 10.11 here; where MySQL 8 answers differently, the comment says
//! so (docs/types/mysql.md has the whole table).

use super::TestDialect;
use iadb::Value;

/// MySQL / MariaDB.
pub struct Mysql;

impl TestDialect for Mysql {
    // DOUBLE PRECISION is accepted as an alias; DOUBLE is the type's name.
    fn double_type(&self) -> &'static str {
        "DOUBLE"
    }
    // TEXT holds 64 KiB; the suite stores 1 MiB.
    fn text_type(&self) -> &'static str {
        "LONGTEXT"
    }
    // BLOB holds 64 KiB; the suite stores 1 MiB.
    fn bytes_type(&self) -> &'static str {
        "LONGBLOB"
    }
    // TIME, DATETIME and TIMESTAMP keep whole seconds unless given a
    // fractional precision; 6 is microseconds, the most MySQL keeps.
    fn time_type(&self) -> &'static str {
        "TIME(6)"
    }
    fn datetime_type(&self) -> &'static str {
        "DATETIME(6)"
    }
    // TIMESTAMP is MySQL's instant type: stored as UTC, shown in the
    // session's time zone, which the adapter sets to UTC.
    fn timestamptz_type(&self) -> &'static str {
        "TIMESTAMP(6)"
    }
    // MariaDB's JSON is LONGTEXT COLLATE utf8mb4_bin with a JSON_VALID
    // check, and the protocol flags `_bin` text columns BINARY exactly like
    // binary ones; sqlx 0.8 does not expose the collation that would tell
    // them apart, so the document comes back as its UTF-8 bytes. (MySQL 8's
    // JSON type is its own wire type and comes back as `Value::Json`.)
    fn json_result(&self, doc: &str) -> Value {
        Value::Bytes(doc.as_bytes().to_vec())
    }
    // `SELECT ?` of a bool is the TINYINT the driver sends (not TINYINT(1)).
    fn bool_param_result(&self, b: bool) -> Value {
        Value::Int(i64::from(b))
    }
    // A DOUBLE cannot hold NaN or the infinities; the adapter refuses them.
    fn stores_nan(&self) -> bool {
        false
    }
    fn stores_infinity(&self) -> bool {
        false
    }
    // MariaDB turns -0.0 into 0.0, in a DOUBLE column and in `SELECT ?`.
    fn keeps_negative_zero(&self) -> bool {
        false
    }
    // MySQL reports an insert id only for an AUTO_INCREMENT column; the
    // suite's table has a plain INTEGER key, for which it reports 0 (none).
    // tests/mysql_types.rs checks the id of an AUTO_INCREMENT insert.
    fn has_last_insert_id(&self) -> bool {
        false
    }
    fn qualified(&self, table: &str) -> String {
        format!("{}.{table}", test_database())
    }
    // BIGINT arithmetic out of range (error 1690) is raised when the row
    // that overflows is computed; the multiplication depends on `x`, so it
    // cannot be folded into a constant before the first row.
    fn failing_at_row_sql(&self, table: &str, fail_at: i64) -> String {
        format!(
            "SELECT CASE WHEN x = {fail_at} THEN x * 9223372036854775807 ELSE x END AS v FROM {table}"
        )
    }
    // A cross join of digits: recursive CTEs stop at 1000 rows by default
    // (MariaDB's max_recursive_iterations, MySQL's cte_max_recursion_depth).
    fn series_sql(&self, n: u64) -> String {
        let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                      UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                      UNION ALL SELECT 8 UNION ALL SELECT 9)";
        let places = n.max(1).to_string().len();
        let terms: Vec<String> = (0..places)
            .map(|p| format!("d{p}.d * {}", 10u64.pow(p as u32)))
            .collect();
        let joins: Vec<String> = (0..places).map(|p| format!("{digits} AS d{p}")).collect();
        format!(
            "SELECT x, CONCAT('row-', x) AS label FROM (SELECT CAST({} + 1 AS SIGNED) AS x FROM {}) AS s WHERE x <= {n} ORDER BY x",
            terms.join(" + "),
            joins.join(" CROSS JOIN ")
        )
    }
}

/// The database named by `IADB_TEST_MYSQL_URL` (`iadb_test` by default).
fn test_database() -> String {
    std::env::var("IADB_TEST_MYSQL_URL")
        .ok()
        .and_then(|url| iadb::ConnectionConfig::from_url(&url).ok())
        .and_then(|c| c.database)
        .unwrap_or_else(|| "iadb_test".to_owned())
}
