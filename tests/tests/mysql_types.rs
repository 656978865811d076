//! Every row of docs/types/mysql.md, round-tripped on MySQL / MariaDB: a
//! table with one column per type, a row inserted through parameters, read
//! back as exact `Value`s; directly on the adapter and through the gRPC
//! client. Skipped (with a notice) when `IADB_TEST_MYSQL_URL` is not set.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use iadb::{ErrorKind, Value};
use iadb_tests::{Engine, Target};

/// Which server the suite talks to: the two differ on JSON.
async fn is_mariadb(t: &Target) -> bool {
    let row =
        t.db.fetch_one("SELECT VERSION() AS v", &[])
            .await
            .expect("version")
            .expect("row");
    row.get("v")
        .and_then(Value::as_str)
        .is_some_and(|v| v.contains("MariaDB"))
}

/// A server variable as text.
async fn variable(t: &Target, name: &str) -> Value {
    let row =
        t.db.fetch_one(&format!("SELECT @@{name} AS v"), &[])
            .await
            .expect("variable")
            .expect("row");
    row.get("v").cloned().expect("value")
}

async fn drop_tables(t: &Target, tables: &[&str]) {
    for table in tables {
        t.db.execute(&format!("DROP TABLE {table}"), &[])
            .await
            .expect("drop");
    }
}

/// One row of the type table: column type, the parameter inserted, the value
/// read back.
struct TypeCase {
    sql_type: &'static str,
    param: Value,
    expected: Value,
}

fn case(sql_type: &'static str, param: Value, expected: Value) -> TypeCase {
    TypeCase {
        sql_type,
        param,
        expected,
    }
}

fn same(sql_type: &'static str, value: Value) -> TypeCase {
    case(sql_type, value.clone(), value)
}

async fn type_cases(t: &Target) -> Vec<TypeCase> {
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
    let time = NaiveTime::from_hms_micro_opt(23, 59, 58, 123_456).expect("time");
    let instant = DateTime::parse_from_rfc3339("2024-02-29T23:59:58.123456+02:00")
        .expect("rfc3339")
        .with_timezone(&Utc);
    let doc = r#"{"a":[1,2,{"b":null}],"c":"é"}"#;
    let point: Vec<u8> = [0u8, 0, 0, 0, 1, 1, 0, 0, 0]
        .into_iter()
        .chain(1.0f64.to_le_bytes())
        .chain(2.0f64.to_le_bytes())
        .collect();
    let mut cases = vec![
        same("TINYINT", Value::Int(-128)),
        same("TINYINT UNSIGNED", Value::Int(255)),
        same("SMALLINT", Value::Int(-32768)),
        same("SMALLINT UNSIGNED", Value::Int(65535)),
        same("MEDIUMINT", Value::Int(-8_388_608)),
        same("MEDIUMINT UNSIGNED", Value::Int(16_777_215)),
        same("INT", Value::Int(i64::from(i32::MIN))),
        same("INT UNSIGNED", Value::Int(i64::from(u32::MAX))),
        same("BIGINT", Value::Int(i64::MIN)),
        same("BIGINT UNSIGNED", Value::Int(i64::MAX)),
        // Beyond i64::MAX: exact digits, bound and read as a decimal.
        same("BIGINT UNSIGNED", Value::Decimal(u64::MAX.to_string())),
        same("BOOLEAN", Value::Bool(true)),
        same("TINYINT(1)", Value::Bool(false)),
        // A TINYINT(1) is a bool: any non-zero value reads as true.
        case("TINYINT(1)", Value::Int(7), Value::Bool(true)),
        // FLOAT is single precision: a value it holds exactly comes back
        // exactly; others are the nearest f32, widened.
        same("FLOAT", Value::Float(1.25)),
        case("FLOAT", Value::Float(0.1), Value::Float(f64::from(0.1f32))),
        same("DOUBLE", Value::Float(0.1)),
        same("DOUBLE", Value::Float(-1.5e-300)),
        same(
            "DECIMAL(65, 30)",
            Value::Decimal(
                "-12345678901234567890123456789012345.123456789012345678901234567890".into(),
            ),
        ),
        // The column's scale is kept: 1.5 in DECIMAL(10, 2) reads as 1.50.
        case(
            "DECIMAL(10, 2)",
            Value::Decimal("1.5".into()),
            Value::Decimal("1.50".into()),
        ),
        // CHAR pads with spaces on disk and strips them when read.
        case(
            "CHAR(10)",
            Value::Text("ab  ".into()),
            Value::Text("ab".into()),
        ),
        same("VARCHAR(100)", Value::Text("é ✓ 𝄞 שלום".into())),
        same("TINYTEXT", Value::Text("tiny".into())),
        same("TEXT", Value::Text("a\0b".into())),
        same("MEDIUMTEXT", Value::Text(String::new())),
        same("LONGTEXT", Value::Text("x".repeat(70_000))),
        // A `_bin` collation makes the protocol flag the column BINARY, like a
        // binary string: its text comes back as UTF-8 bytes.
        case(
            "VARCHAR(20) COLLATE utf8mb4_bin",
            Value::Text("Abc".into()),
            Value::Bytes(b"Abc".to_vec()),
        ),
        // BINARY pads with zero bytes to its length.
        case(
            "BINARY(4)",
            Value::Bytes(vec![1, 0]),
            Value::Bytes(vec![1, 0, 0, 0]),
        ),
        same("VARBINARY(10)", Value::Bytes(vec![0, 255, 0])),
        same("TINYBLOB", Value::Bytes(vec![])),
        same("BLOB", Value::Bytes(vec![0; 10])),
        same("MEDIUMBLOB", Value::Bytes((0..=255).collect())),
        same("LONGBLOB", Value::Bytes(vec![7; 70_000])),
        same("DATE", Value::Date(date)),
        same("TIME(6)", Value::Time(time)),
        // TIME is a duration: outside 00:00:00..24:00:00 it stays MySQL's text.
        same("TIME", Value::Text("-838:59:59".into())),
        same("TIME(1)", Value::Text("100:00:00.5".into())),
        same("DATETIME(6)", Value::DateTime(date.and_time(time))),
        // TIMESTAMP is an instant; the session is in UTC.
        same("TIMESTAMP(6) NULL", Value::TimestampTz(instant)),
        same("YEAR", Value::Int(2024)),
        same("ENUM('small', 'large')", Value::Text("large".into())),
        same("SET('a', 'b', 'c')", Value::Text("a,c".into())),
        same("BIT(10)", Value::Int(1023)),
        // GEOMETRY is MySQL's internal form: SRID (4 bytes), then WKB.
        same("POINT", Value::Bytes(point)),
    ];
    if is_mariadb(t).await {
        // MariaDB's JSON is LONGTEXT COLLATE utf8mb4_bin: BINARY-flagged.
        cases.push(case(
            "JSON",
            Value::Json(doc.into()),
            Value::Bytes(doc.as_bytes().to_vec()),
        ));
        // With a case-insensitive collation it is plain text.
        cases.push(case(
            "JSON COLLATE utf8mb4_general_ci",
            Value::Json(doc.into()),
            Value::Text(doc.into()),
        ));
    } else {
        // MySQL's JSON is its own type; it normalises the document.
        cases.push(case(
            "JSON",
            Value::Json(doc.into()),
            Value::Json(r#"{"a": [1, 2, {"b": null}], "c": "é"}"#.into()),
        ));
    }
    let sql_mode = variable(t, "sql_mode").await;
    if !sql_mode
        .as_str()
        .unwrap_or_default()
        .contains("NO_ZERO_DATE")
    {
        // Zero dates are no calendar value: they keep MySQL's text.
        cases.push(same("DATE", Value::Text("0000-00-00".into())));
        cases.push(same("DATETIME", Value::Text("0000-00-00 00:00:00".into())));
        cases.push(same(
            "TIMESTAMP NULL",
            Value::Text("0000-00-00 00:00:00".into()),
        ));
    }
    cases
}

async fn column_types_round_trip(t: &Target) {
    let cases = type_cases(t).await;
    let table = t.table("types");
    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("c{i} {}", c.sql_type))
        .collect();
    t.db.execute(
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, {})",
            columns.join(", ")
        ),
        &[],
    )
    .await
    .expect("create the table");
    let names: Vec<String> = (0..cases.len()).map(|i| format!("c{i}")).collect();
    let insert = format!(
        "INSERT INTO {table} (id, {}) VALUES (?, {})",
        names.join(", "),
        vec!["?"; cases.len()].join(", ")
    );
    let mut values = vec![Value::Int(1)];
    values.extend(cases.iter().map(|c| c.param.clone()));
    t.db.execute(&insert, &values).await.expect("insert values");
    let mut nulls = vec![Value::Int(2)];
    nulls.extend(cases.iter().map(|_| Value::Null));
    t.db.execute(&insert, &nulls).await.expect("insert nulls");

    let rows =
        t.db.fetch_all(
            &format!("SELECT {} FROM {table} ORDER BY id", names.join(", ")),
            &[],
        )
        .await
        .expect("select");
    assert_eq!(rows.len(), 2);
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(
            rows[0].get_index(i),
            Some(&c.expected),
            "{} from {:?}",
            c.sql_type,
            c.param
        );
        assert_eq!(
            rows[1].get_index(i),
            Some(&Value::Null),
            "NULL {}",
            c.sql_type
        );
    }
    drop_tables(t, &[&table]).await;
}

/// What each kind of parameter becomes in `SELECT ?`, with no column type.
async fn parameters_without_a_column(t: &Target) {
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
    let time = NaiveTime::from_hms_micro_opt(1, 2, 3, 456_789).expect("time");
    let instant = DateTime::parse_from_rfc3339("2024-02-29T23:59:58.5+02:00")
        .expect("rfc3339")
        .with_timezone(&Utc);
    let cases = [
        (Value::Null, Value::Null),
        (Value::Bool(true), Value::Int(1)),
        (Value::Int(i64::MIN), Value::Int(i64::MIN)),
        (Value::Float(0.1), Value::Float(0.1)),
        (Value::Text("é".into()), Value::Text("é".into())),
        (Value::Bytes(vec![0, 1, 255]), Value::Bytes(vec![0, 1, 255])),
        (
            Value::Decimal("12345678901234567890.123456789".into()),
            Value::Decimal("12345678901234567890.123456789".into()),
        ),
        (Value::Date(date), Value::Date(date)),
        (Value::Time(time), Value::Time(time)),
        (
            Value::DateTime(date.and_time(time)),
            Value::DateTime(date.and_time(time)),
        ),
        // Bound as its UTC wall-clock time: with no TIMESTAMP column to say
        // it is an instant, it reads back as that naive time.
        (
            Value::TimestampTz(instant),
            Value::DateTime(instant.naive_utc()),
        ),
        (Value::Json("[1]".into()), Value::Text("[1]".into())),
    ];
    for (param, expected) in cases {
        let row =
            t.db.fetch_one("SELECT ? AS v", std::slice::from_ref(&param))
                .await
                .expect("select ?")
                .expect("row");
        assert_eq!(row.get("v"), Some(&expected), "SELECT ? of {param:?}");
    }
}

/// Values MySQL cannot hold are refused before any engine work.
async fn unstorable_parameters_are_refused(t: &Target) {
    for (param, words) in [
        (Value::Float(f64::NAN), "NaN"),
        (Value::Float(f64::INFINITY), "infinit"),
        (Value::Float(f64::NEG_INFINITY), "infinit"),
        (Value::Decimal("12,5".into()), "decimal"),
    ] {
        let err =
            t.db.fetch_one("SELECT ? AS v", std::slice::from_ref(&param))
                .await
                .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{param:?}");
        assert!(err.message().contains(words), "{}", err.message());
    }
}

/// An AUTO_INCREMENT insert reports its id; the catalogue's case rule is
/// the server's `lower_case_table_names`.
async fn insert_id_and_names(t: &Target) {
    let table = t.table("auto");
    t.db.execute(
        &format!("CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)"),
        &[],
    )
    .await
    .expect("create");
    for expected in 1..=3 {
        let out =
            t.db.execute(
                &format!("INSERT INTO {table} (v) VALUES (?)"),
                &[Value::Int(expected * 10)],
            )
            .await
            .expect("insert");
        assert_eq!(out.rows_affected, 1);
        assert_eq!(out.last_insert_id, Some(expected));
    }
    let case_insensitive = variable(t, "lower_case_table_names").await != Value::Int(0);
    assert!(t.db.table_exists(&table).await.expect("exists"));
    assert_eq!(
        t.db.table_exists(&table.to_uppercase())
            .await
            .expect("upper"),
        case_insensitive
    );
    let row =
        t.db.fetch_one("SELECT DATABASE() AS d", &[])
            .await
            .expect("database")
            .expect("row");
    let schema = row.get("d").and_then(Value::as_str).expect("a database");
    assert!(
        t.db.table_exists(&format!("{schema}.{table}"))
            .await
            .expect("qualified")
    );
    assert!(
        !t.db
            .table_exists(&format!("no_such_database_xyz.{table}"))
            .await
            .expect("other database")
    );
    // Backtick quoting through create_table, on the adapter and the client.
    let odd = format!("{table}_odd");
    t.db.create_table(&odd, &[("select".into(), "INT".into())])
        .await
        .expect("create_table with a reserved word");
    assert!(t.db.table_exists(&odd).await.expect("odd exists"));
    drop_tables(t, &[&table, &odd]).await;
}

/// A stream dropped after 10 rows of a long result frees its connection
/// within a second and the query stops on the server (MySQL would otherwise
/// read the whole rest of the result before reusing the connection).
async fn dropped_stream_stops_the_query(t: &Target) {
    use futures::StreamExt;
    use std::time::{Duration, Instant};
    let marker = format!("drop_marker_{}", std::process::id());
    let sql = format!(
        "SELECT '{marker}' AS m, a.x + b.x * 1000 + c.x * 1000000 AS n FROM \
         ({s}) AS a CROSS JOIN ({s}) AS b CROSS JOIN ({s}) AS c",
        s = t.dialect().series_sql(1000).replace(" ORDER BY x", "")
    );
    let stream = t.db.fetch_stream(&sql, &[]).await.expect("stream");
    let mut rows = stream.rows;
    for _ in 0..10 {
        rows.next().await.expect("a row").expect("no error");
    }
    drop(rows);
    let dropped = Instant::now();
    let running = format!(
        "SELECT COUNT(*) AS n FROM information_schema.processlist \
         WHERE info LIKE '%{marker}%' AND info NOT LIKE '%processlist%'"
    );
    loop {
        let row = t.db.fetch_one(&running, &[]).await.expect("processlist");
        let n = row.and_then(|r| r.get("n").cloned());
        if n == Some(Value::Int(0)) {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "the query still runs 1 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Direct, the pool has the connection back (or a fresh one); remote,
    // the server's pool is not visible here.
    while let Some(pool) = t.db.pool_status()
        && pool.idle != pool.size
    {
        assert!(dropped.elapsed() < Duration::from_secs(1), "{pool:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Leap seconds: MySQL and MariaDB store none. Bound as a parameter, a
/// leap second went as second 59 plus a million microseconds and came back
/// as another time (`00:00:00`); it is refused instead. As a result the
/// server never produces one: `23:59:60` cast to TIME is its NULL, and a
/// TIME column refuses it, never a silent midnight.
async fn leap_seconds_are_refused_never_changed(t: &Target) {
    let leap = NaiveTime::from_hms_nano_opt(23, 59, 59, 1_000_000_000).expect("leap second");
    let day = NaiveDate::from_ymd_opt(2016, 12, 31).expect("date");
    let table = t.table("leap");
    t.db.execute(
        &format!("CREATE TABLE {table} (t TIME(6), d DATETIME(6), ts TIMESTAMP(6) NULL)"),
        &[],
    )
    .await
    .expect("create");
    for (column, value) in [
        ("t", Value::Time(leap)),
        ("d", Value::DateTime(day.and_time(leap))),
        ("ts", Value::TimestampTz(day.and_time(leap).and_utc())),
    ] {
        for sql in [
            "SELECT ? AS v".to_owned(),
            format!("INSERT INTO {table} ({column}) VALUES (?)"),
        ] {
            let err =
                t.db.execute(&sql, std::slice::from_ref(&value))
                    .await
                    .expect_err("a leap second is refused");
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidArgument,
                "{sql}: {}",
                err.message()
            );
            assert!(
                err.message().contains("parameter 1") && err.message().contains("leap second"),
                "{}",
                err.message()
            );
        }
    }
    let row =
        t.db.fetch_one(&format!("SELECT count(*) AS n FROM {table}"), &[])
            .await
            .expect("count")
            .expect("row");
    assert_eq!(row.get("n"), Some(&Value::Int(0)), "nothing was stored");
    let row =
        t.db.fetch_one("SELECT CAST('23:59:60' AS TIME) AS v", &[])
            .await
            .expect("cast")
            .expect("row");
    assert_eq!(row.get("v"), Some(&Value::Null), "not a silent midnight");
    let err =
        t.db.execute(&format!("INSERT INTO {table} (t) VALUES ('23:59:60')"), &[])
            .await
            .expect_err("strict mode refuses it");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.message());
    // The last microsecond before it is kept exactly.
    let before = NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("time");
    t.db.execute(
        &format!("INSERT INTO {table} (t) VALUES (?)"),
        &[Value::Time(before)],
    )
    .await
    .expect("insert");
    let row =
        t.db.fetch_one(&format!("SELECT t FROM {table}"), &[])
            .await
            .expect("select")
            .expect("row");
    assert_eq!(row.get("t"), Some(&Value::Time(before)));
    drop_tables(t, &[&table]).await;
}

async fn all(t: &Target) {
    column_types_round_trip(t).await;
    parameters_without_a_column(t).await;
    unstorable_parameters_are_refused(t).await;
    leap_seconds_are_refused_never_changed(t).await;
    insert_id_and_names(t).await;
    dropped_stream_stops_the_query(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_types_direct() {
    if let Some(t) = Target::direct(Engine::Mysql).await {
        all(&t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_types_remote() {
    if let Some(t) = Target::remote(Engine::Mysql).await {
        all(&t).await;
    }
}

/// A wrong password is UNAUTHENTICATED, and the message does not carry it.
#[tokio::test]
async fn mysql_wrong_password_is_unauthenticated_without_the_password() {
    let Ok(url) = std::env::var("IADB_TEST_MYSQL_URL") else {
        iadb_tests::harness::skip("mysql", "IADB_TEST_MYSQL_URL is not set");
        return;
    };
    let good = iadb::ConnectionConfig::from_url(&url).expect("url");
    let wrong = "not-the-Pw-4821";
    let user = good.username.clone().unwrap_or_else(|| "root".into());
    let host = good.host.clone().unwrap_or_else(|| "localhost".into());
    let port = good.port.unwrap_or(3306);
    let database = good.database.clone().unwrap_or_default();
    let config = iadb::ConnectionConfig::from_url(&format!(
        "mysql://{user}:{wrong}@{host}:{port}/{database}"
    ))
    .expect("url");
    let settings = iadb_server::backend::PoolSettings {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(3),
    };
    let db = iadb_server::backend::backend_for(&config, settings).expect("adapter");
    let err = db.connect().await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{}", err.message());
    assert!(!err.message().contains(wrong), "{}", err.message());
}

/// FetchOne of a one-row result returns its connection to the pool: the
/// same connection answers every call (`--pool-max 1`), so a point select
/// does not log in anew each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_fetch_one_keeps_its_connection() {
    use iadb::DatabaseInterface;
    let Ok(url) = std::env::var("IADB_TEST_MYSQL_URL") else {
        iadb_tests::harness::skip("mysql", "IADB_TEST_MYSQL_URL is not set");
        return;
    };
    let server = iadb_tests::TestServer::start(&["--database-url", &url, "--pool-max", "1"]);
    let db = server.client("").await;
    let id = || async {
        db.fetch_one("SELECT CONNECTION_ID() AS id", &[])
            .await
            .expect("fetch one")
            .and_then(|row| row.get("id").cloned())
            .expect("a connection id")
    };
    let first = id().await;
    for _ in 0..5 {
        assert_eq!(id().await, first, "FetchOne closed its connection");
    }
}

/// A statement that sends nothing for long (`SLEEP`) whose call's deadline
/// passes is stopped on the server (`KILL QUERY` from a second connection):
/// it is gone from the process list within seconds after
/// DEADLINE_EXCEEDED, through Execute, FetchAll, ExecuteMany and inside a
/// Transaction alike, and the pool's one connection serves the next call. Before, it ran its 30 s
/// to the end (closing the connection does not stop it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_deadline_stops_a_silent_statement_on_the_server() {
    use iadb::DatabaseInterface;
    use std::time::Duration;
    let Ok(url) = std::env::var("IADB_TEST_MYSQL_URL") else {
        iadb_tests::harness::skip("mysql", "IADB_TEST_MYSQL_URL is not set");
        return;
    };
    let server = iadb_tests::TestServer::start(&["--database-url", &url, "--pool-max", "1"]);
    let db = iadb_client::RemoteDatabase::new(server.endpoint.clone())
        .with_timeout(Duration::from_millis(500))
        .with_retry(iadb_client::RetryPolicy::none());
    db.connect().await.expect("connect");
    let observer = sqlx::MySqlPool::connect(&url).await.expect("observer");
    let marker = format!("iadb_kill_marker_{}", std::process::id());
    let running = |tag: String| {
        let observer = observer.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE CONCAT('%', ?, '%') AND ID <> CONNECTION_ID() \
                 AND COMMAND <> 'Sleep'",
            )
            .bind(tag)
            .fetch_one(&observer)
            .await
            .expect("processlist")
        }
    };
    iadb_tests::deadline::deadline_stops_silent_statements(
        &db,
        &marker,
        &["Execute", "FetchAll", "ExecuteMany", "Transaction"],
        |tag| format!("SELECT SLEEP(30) AS slept /* {tag} */"),
        running,
    )
    .await;
    let row = db
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect("the server still serves")
        .expect("a row");
    assert_eq!(row.get("one"), Some(&Value::Int(1)));
}
