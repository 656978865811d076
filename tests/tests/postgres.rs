//! PostgreSQL beyond the shared conformance cases: every row of the type
//! table round-trips, a dropped stream ends its query on the server, and a
//! large stream keeps the server's memory flat.

use futures::StreamExt;
use iadb::{DatabaseInterface, Value};
use iadb_tests::{Engine, Target, TestServer, harness::skip};
use std::time::{Duration, Instant};

fn postgres_url() -> Option<String> {
    match std::env::var("IADB_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            skip("postgresql", "IADB_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// Each PostgreSQL type of the docs' table, written as a parameter and read
/// back, directly and through the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips() {
    for target in [
        Target::direct(Engine::Postgres).await,
        Target::remote(Engine::Postgres).await,
    ] {
        let Some(t) = target else { return };
        let table = t.table("pgtypes");
        let mood = format!("{table}_mood");
        t.db.execute(
            &format!("CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'happy')"),
            &[],
        )
        .await
        .unwrap();
        // (column type, value written, value expected back)
        let cases: Vec<(&str, Value, Value)> = vec![
            ("SMALLINT", Value::Int(-32768), Value::Int(-32768)),
            (
                "INTEGER",
                Value::Int(2_147_483_647),
                Value::Int(2_147_483_647),
            ),
            ("BIGINT", Value::Int(i64::MIN), Value::Int(i64::MIN)),
            ("REAL", Value::Float(1.5), Value::Float(1.5)),
            (
                "DOUBLE PRECISION",
                Value::Float(f64::NAN),
                Value::Float(f64::NAN),
            ),
            (
                "NUMERIC(30, 4)",
                Value::Decimal("-123456789012345678.0100".into()),
                Value::Decimal("-123456789012345678.0100".into()),
            ),
            (
                "NUMERIC",
                Value::Decimal("0.000000000000000000001".into()),
                Value::Decimal("0.000000000000000000001".into()),
            ),
            (
                "TEXT",
                Value::Text("é ✓ 𝄞".into()),
                Value::Text("é ✓ 𝄞".into()),
            ),
            (
                "VARCHAR(10)",
                Value::Text("short".into()),
                Value::Text("short".into()),
            ),
            (
                "CHAR(4)",
                Value::Text("ab".into()),
                Value::Text("ab  ".into()),
            ),
            (
                "BYTEA",
                Value::Bytes(vec![0, 1, 255, 0]),
                Value::Bytes(vec![0, 1, 255, 0]),
            ),
            ("BOOLEAN", Value::Bool(true), Value::Bool(true)),
            (
                "DATE",
                Value::Text("2024-02-29".into()),
                Value::Date(chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            ),
            (
                "TIME",
                Value::Time(chrono::NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap()),
                Value::Time(chrono::NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap()),
            ),
            (
                "TIMESTAMP",
                Value::Text("2024-01-02 03:04:05.678".into()),
                Value::DateTime(
                    chrono::NaiveDateTime::parse_from_str(
                        "2024-01-02 03:04:05.678",
                        "%Y-%m-%d %H:%M:%S%.f",
                    )
                    .unwrap(),
                ),
            ),
            (
                "TIMESTAMPTZ",
                Value::Text("2024-01-02T03:04:05+02:00".into()),
                Value::TimestampTz(
                    chrono::DateTime::parse_from_rfc3339("2024-01-02T01:04:05Z")
                        .unwrap()
                        .with_timezone(&chrono::Utc),
                ),
            ),
            (
                "INTERVAL",
                Value::Text("1 year 2 mons 3 days 04:05:06.5".into()),
                Value::Text("P1Y2M3DT4H5M6.5S".into()),
            ),
            (
                "UUID",
                Value::Text("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
                Value::Text("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
            ),
            (
                "JSON",
                Value::Json(r#"{"b": 1, "a": [true, null]}"#.into()),
                Value::Json(r#"{"b": 1, "a": [true, null]}"#.into()),
            ),
            (
                "JSONB",
                Value::Json(r#"{"b": 1, "a": [true, null]}"#.into()),
                Value::Json(r#"{"a": [true, null], "b": 1}"#.into()),
            ),
            (
                "INTEGER[]",
                Value::Text("{1,2,NULL}".into()),
                Value::Json("[1,2,null]".into()),
            ),
            (
                "TEXT[]",
                Value::Text(r#"{"x","y z"}"#.into()),
                Value::Json(r#"["x","y z"]"#.into()),
            ),
            (
                mood.as_str(),
                Value::Text("happy".into()),
                Value::Text("happy".into()),
            ),
        ];
        for (i, (ty, written, expected)) in cases.iter().enumerate() {
            let column = format!("c{i}");
            t.db.execute(&format!("CREATE TABLE {table}_{i} ({column} {ty})"), &[])
                .await
                .unwrap();
            // Types whose binary form is not text take text through a cast.
            let placeholder = match *ty {
                "INTERVAL" | "INTEGER[]" | "TEXT[]" => format!("CAST(? AS TEXT)::{ty}"),
                _ => "?".to_owned(),
            };
            t.db.execute(
                &format!("INSERT INTO {table}_{i} ({column}) VALUES ({placeholder}), (?)"),
                &[written.clone(), Value::Null],
            )
            .await
            .unwrap_or_else(|e| panic!("{ty}: insert {written:?}: {e}"));
            let rows =
                t.db.fetch_all(&format!("SELECT {column} FROM {table}_{i}"), &[])
                    .await
                    .unwrap();
            let got = rows[0].get_index(0).unwrap();
            match (got, expected) {
                (Value::Float(a), Value::Float(b)) if b.is_nan() => assert!(a.is_nan(), "{ty}"),
                _ => assert_eq!(got, expected, "{ty} (remote: {})", t.remote),
            }
            assert_eq!(rows[1].get_index(0), Some(&Value::Null), "{ty} NULL");
        }
        // Text for a type whose binary form is not text says how to cast it.
        let err =
            t.db.execute(
                &format!("INSERT INTO {table}_16 (c16) VALUES (?)"),
                &["1 day".into()],
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), iadb::ErrorKind::InvalidArgument);
        assert!(
            err.message().contains("CAST(? AS TEXT)::interval"),
            "{}",
            err.message()
        );
        // Text for a type whose binary form is not text says how to cast it.
        let err =
            t.db.execute(
                &format!("INSERT INTO {table}_16 (c16) VALUES (?)"),
                &["1 day".into()],
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), iadb::ErrorKind::InvalidArgument);
        assert!(
            err.message().contains("CAST(? AS TEXT)::interval"),
            "{}",
            err.message()
        );
        // A type iadb cannot map is named, with the column, as INVALID_ARGUMENT.
        let err =
            t.db.fetch_all("SELECT '(1,2)'::point AS p", &[])
                .await
                .unwrap_err();
        assert_eq!(err.kind(), iadb::ErrorKind::InvalidArgument);
        assert!(
            err.message().contains("`p`") && err.message().contains("POINT"),
            "{}",
            err.message()
        );
        // The SQLSTATE travels with the error.
        let err =
            t.db.fetch_all("SELECT * FROM no_such_pg_table", &[])
                .await
                .unwrap_err();
        assert_eq!(err.code(), Some("42P01"));
    }
}

/// `??` is PostgreSQL's `?` operator; `$n` SQL passes through.
#[tokio::test]
async fn jsonb_question_operator_and_dollar_parameters() {
    let Some(t) = Target::direct(Engine::Postgres).await else {
        return;
    };
    let row =
        t.db.fetch_one(
            "SELECT '{\"k\": 1}'::jsonb ?? 'k' AS has, ? AS v",
            &[Value::Int(3)],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.values(), [Value::Bool(true), Value::Int(3)]);
    let row =
        t.db.fetch_one(
            "SELECT $1::int8 + $2::int8 AS s",
            &[Value::Int(2), Value::Int(5)],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get("s"), Some(&Value::Int(7)));
    let err =
        t.db.fetch_one("SELECT $1::int8 + $2::int8 AS s", &[Value::Int(2)])
            .await
            .unwrap_err();
    assert_eq!(
        err.kind(),
        iadb::ErrorKind::InvalidArgument,
        "{}",
        err.message()
    );
}

/// Dropping a stream through the server after 10 rows ends the query on
/// PostgreSQL (it leaves pg_stat_activity) and frees the pool slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_ends_the_query_on_the_server() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url]);
    let db = server.client("").await;
    let marker = format!("iadb_cancel_marker_{}", std::process::id());
    let sql = format!(
        "SELECT x, repeat('x', 200) AS pad, '{marker}' AS m FROM generate_series(1, 50000000) AS g(x)"
    );
    let mut rows = db.fetch_stream(&sql, &[]).await.unwrap().rows;
    for _ in 0..10 {
        rows.next().await.unwrap().unwrap();
    }
    let observer = sqlx::PgPool::connect(&url).await.unwrap();
    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() AND state = 'active'",
        )
        .bind(&marker)
        .fetch_one(&observer)
        .await
        .unwrap()
    };
    assert_eq!(running().await, 1, "the query runs while streaming");
    drop(rows);
    let dropped = Instant::now();
    while running().await > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "query still running 5 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "query gone from pg_stat_activity {:?} after the drop",
        dropped.elapsed()
    );
    let h = db.health(false).await.unwrap().remove(0);
    assert_eq!(h.pool_idle, h.pool_size, "no connection left busy: {h:?}");
}

/// A deadline reaches the engine: a statement that sends nothing for long
/// (`pg_sleep`) is gone from pg_stat_activity within seconds after
/// DEADLINE_EXCEEDED, through Execute, FetchAll and ExecuteMany alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_a_silent_statement_on_the_server() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url]);
    let db = iadb_client::RemoteDatabase::new(server.endpoint.clone())
        .with_timeout(Duration::from_millis(500))
        .with_retry(iadb_client::RetryPolicy::none());
    db.connect().await.expect("connect");
    let observer = sqlx::PgPool::connect(&url).await.expect("observer");
    let marker = format!("iadb_deadline_marker_{}", std::process::id());
    let active = |tag: String| {
        let observer = observer.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' \
                 AND pid <> pg_backend_pid() AND state = 'active'",
            )
            .bind(tag)
            .fetch_one(&observer)
            .await
            .expect("pg_stat_activity")
        }
    };
    iadb_tests::deadline::deadline_stops_silent_statements(
        &db,
        &marker,
        &["Execute", "FetchAll", "ExecuteMany"],
        |tag| format!("SELECT pg_sleep(30) /* {tag} */"),
        active,
    )
    .await;
    let row = db
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect("the server still serves")
        .expect("a row");
    assert_eq!(row.get("one"), Some(&Value::Int(1)));
}

/// FetchOne takes one row and answers; a result that ends there finishes
/// normally, so its connection goes back to the pool instead of being closed
/// (which would make every point select log in anew). A FetchOne over a long
/// result stops it and the pool stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_one_keeps_its_connection() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url, "--pool-max", "1"]);
    let db = server.client("").await;
    let pid = || async {
        db.fetch_one("SELECT pg_backend_pid()::int8 AS pid", &[])
            .await
            .expect("fetch one")
            .and_then(|row| row.get("pid").cloned())
            .expect("a pid")
    };
    let first = pid().await;
    for _ in 0..5 {
        assert_eq!(pid().await, first, "FetchOne closed its connection");
    }
    let row = db
        .fetch_one("SELECT x FROM generate_series(1, 50000000) AS g(x)", &[])
        .await
        .expect("fetch one of a long result")
        .expect("a row");
    assert_eq!(row.get("x"), Some(&Value::Int(1)));
    let after = pid().await;
    assert!(matches!(after, Value::Int(_)), "{after:?}");
}

/// 1,000,000 rows of (bigint, text, double, timestamp) through the server:
/// its peak RSS stays bounded; prints rows/s against sqlx on the same query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_million_rows_keeps_server_memory_flat() {
    const ROWS: u64 = 1_000_000;
    const BOUND_MIB: u64 = 96;
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url]);
    let db = server.client("").await;
    let sql = format!(
        "SELECT x::int8 AS id, 'label-' || x AS label, x * 0.5::float8 AS score, TIMESTAMP '2024-01-01' + x * INTERVAL '1 second' AS at FROM generate_series(1, {ROWS}) AS g(x)"
    );
    let started = Instant::now();
    let mut rows = db.fetch_stream(&sql, &[]).await.unwrap().rows;
    let mut n = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        n += 1;
        assert_eq!(row.get_index(0), Some(&Value::Int(n as i64)));
    }
    let iadb_time = started.elapsed();
    assert_eq!(n, ROWS);
    let peak_mib = server.proc_status_kib("VmHWM").unwrap() / 1024;

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let started = Instant::now();
    let mut direct =
        sqlx::query_as::<_, (i64, String, f64, chrono::NaiveDateTime)>(&sql).fetch(&pool);
    let mut m = 0u64;
    while let Some(row) = direct.next().await {
        row.unwrap();
        m += 1;
    }
    let sqlx_time = started.elapsed();
    assert_eq!(m, ROWS);
    println!(
        "postgres {ROWS} rows: iadb {:.0} rows/s, sqlx direct {:.0} rows/s, ratio {:.2}; server peak RSS {peak_mib} MiB (bound {BOUND_MIB})",
        ROWS as f64 / iadb_time.as_secs_f64(),
        ROWS as f64 / sqlx_time.as_secs_f64(),
        sqlx_time.as_secs_f64() / iadb_time.as_secs_f64()
    );
    assert!(peak_mib < BOUND_MIB, "server peak RSS {peak_mib} MiB");
}

/// `infinity` and `-infinity` dates and timestamps come back as that text
/// (as DuckDB's do), and `24:00:00` (a valid PostgreSQL time, and what it
/// makes of `23:59:60`) too: they used to panic inside sqlx's decoding (the
/// stream ended after 2,048 rows with status OK) or wrap to midnight. A
/// value past the years chrono holds fails the call with INVALID_ARGUMENT
/// naming the column and the row, after the rows before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinity_and_out_of_range_dates_and_times() {
    for target in [
        Target::direct(Engine::Postgres).await,
        Target::remote(Engine::Postgres).await,
    ] {
        let Some(t) = target else { return };
        let rows =
            t.db.fetch_all(
                "SELECT CASE WHEN i < 3000 THEN date '2020-01-01' ELSE 'infinity'::date END AS d \
                 FROM generate_series(1, 5000) i",
                &[],
            )
            .await
            .expect("infinity reads");
        assert_eq!(rows.len(), 5000, "every row, none lost");
        let day = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("date");
        assert_eq!(rows[2998].get("d"), Some(&Value::Date(day)));
        assert_eq!(rows[2999].get("d"), Some(&Value::Text("infinity".into())));

        let row =
            t.db.fetch_one(
                "SELECT '-infinity'::date AS d, 'infinity'::timestamp AS ts, \
                 '-infinity'::timestamptz AS tz, time '24:00:00' AS t, time '23:59:60' AS leap, \
                 timetz '24:00:00+01:02:03' AS ttz, timetz '12:30:00-05:30' AS noon, \
                 timestamp '2016-12-31 23:59:60' AS leap_ts",
                &[],
            )
            .await
            .expect("special values read")
            .expect("row");
        let text = |s: &str| Some(Value::Text(s.into()));
        assert_eq!(row.get("d").cloned(), text("-infinity"));
        assert_eq!(row.get("ts").cloned(), text("infinity"));
        assert_eq!(row.get("tz").cloned(), text("-infinity"));
        assert_eq!(row.get("t").cloned(), text("24:00:00"), "not midnight");
        assert_eq!(row.get("leap").cloned(), text("24:00:00"), "not midnight");
        assert_eq!(row.get("ttz").cloned(), text("24:00:00+01:02:03"));
        assert_eq!(row.get("noon").cloned(), text("12:30:00-05:30"));
        // PostgreSQL itself stores this leap second as the next second.
        let next = chrono::NaiveDate::from_ymd_opt(2017, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("timestamp");
        assert_eq!(row.get("leap_ts"), Some(&Value::DateTime(next)));

        // Past chrono's years (262142): the rows before it, then the error.
        for (sql, column) in [
            (
                "SELECT CASE WHEN i < 3000 THEN date '2020-01-01' ELSE date '5874897-12-31' END AS d \
                 FROM generate_series(1, 5000) i",
                "`d`",
            ),
            (
                "SELECT CASE WHEN i < 3000 THEN timestamp '2020-01-01' \
                 ELSE timestamp '294276-12-31 23:59:59' END AS ts FROM generate_series(1, 5000) i",
                "`ts`",
            ),
        ] {
            let mut stream = t.db.fetch_stream(sql, &[]).await.expect("stream").rows;
            let mut read = 0;
            let err = loop {
                match stream.next().await {
                    Some(Ok(_)) => read += 1,
                    Some(Err(e)) => break e,
                    None => panic!("{column}: the stream ended after {read} rows without an error"),
                }
            };
            assert_eq!(read, 2999, "{column}: the rows before the bad one");
            assert_eq!(
                err.kind(),
                iadb::ErrorKind::InvalidArgument,
                "{}",
                err.message()
            );
            assert!(
                err.message().contains("row 3000") && err.message().contains(column),
                "{}",
                err.message()
            );
        }
        let err =
            t.db.fetch_one("SELECT date '5874897-12-31' AS far", &[])
                .await
                .expect_err("FetchOne of a date past the year 262142");
        assert_eq!(
            err.kind(),
            iadb::ErrorKind::InvalidArgument,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("row 1") && err.message().contains("`far`"),
            "{}",
            err.message()
        );
        let row =
            t.db.fetch_one("SELECT 1 AS one", &[])
                .await
                .expect("still serving")
                .expect("row");
        assert_eq!(row.get("one"), Some(&Value::Int(1)));
    }
}

/// A leap second bound as a parameter is refused: PostgreSQL has none and
/// stored it as the next second, which read back as `00:00:00`. A decimal
/// with an exponent near 2^63 is INVALID_ARGUMENT (sqlx's encoding
/// overflowed on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leap_second_and_huge_exponent_parameters_are_refused() {
    for target in [
        Target::direct(Engine::Postgres).await,
        Target::remote(Engine::Postgres).await,
    ] {
        let Some(t) = target else { return };
        let leap =
            chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 1_000_000_000).expect("leap second");
        let day = chrono::NaiveDate::from_ymd_opt(2016, 12, 31).expect("date");
        for value in [
            Value::Time(leap),
            Value::DateTime(day.and_time(leap)),
            Value::TimestampTz(day.and_time(leap).and_utc()),
            Value::Decimal("1e9223372036854775807".into()),
            Value::Decimal("1e-9223372036854775808".into()),
        ] {
            let err =
                t.db.fetch_all("SELECT ? AS v", std::slice::from_ref(&value))
                    .await
                    .expect_err("refused");
            assert_eq!(
                err.kind(),
                iadb::ErrorKind::InvalidArgument,
                "{value:?}: {}",
                err.message()
            );
            assert!(err.message().contains("parameter 1"), "{}", err.message());
        }
        // A leap second one tenth in: the same.
        let leap_and_a_bit =
            chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 1_100_000_000).expect("leap second");
        let err =
            t.db.execute("SELECT ?::time", &[Value::Time(leap_and_a_bit)])
                .await
                .expect_err("refused");
        assert_eq!(err.kind(), iadb::ErrorKind::InvalidArgument);
        // The second before it goes through untouched.
        let before = chrono::NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("time");
        let row =
            t.db.fetch_one("SELECT ? AS v", &[Value::Time(before)])
                .await
                .expect("time")
                .expect("row");
        assert_eq!(row.get("v"), Some(&Value::Time(before)));
    }
}

/// A table dropped and made again with other columns by another client:
/// the pooled connection's cached statement for the same SQL would fail
/// with 0A000 "cached plan must not change result type" (found by
/// SQLAlchemy's dialect suite). Outside a transaction the statement is
/// prepared again and answers with the new columns, through FetchAll,
/// FetchOne and Execute alike; inside a transaction the error is ABORTED
/// and the transaction run again succeeds (`--pool-max 1`: the same server
/// connection every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remade_table_is_read_with_its_new_columns() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url, "--pool-max", "1"]);
    let db = server.client("").await;
    let other = sqlx::PgPool::connect(&url).await.expect("another client");
    let table = format!("remade_{}", std::process::id());
    let remake = |columns: &'static str| {
        let (other, table) = (other.clone(), table.clone());
        async move {
            sqlx::raw_sql(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns}); \
                 INSERT INTO {table} (id) VALUES (1)"
            ))
            .execute(&other)
            .await
            .expect("remake the table");
        }
    };
    let select = format!("SELECT * FROM {table} WHERE id = ?");
    let update = format!("UPDATE {table} SET id = id WHERE id = ? RETURNING *");
    remake("id int8").await;
    let rows = db.fetch_all(&select, &[Value::Int(1)]).await.expect("read");
    assert_eq!(rows[0].values(), &[Value::Int(1)]);
    db.execute(&update, &[Value::Int(1)]).await.expect("update");
    remake("id int8, name text DEFAULT 'one'").await;
    let rows = db
        .fetch_all(&select, &[Value::Int(1)])
        .await
        .expect("FetchAll");
    assert_eq!(
        rows[0].values(),
        &[Value::Int(1), Value::Text("one".into())]
    );
    remake("id int8, name text DEFAULT 'two'").await;
    let row = db
        .fetch_one(&select, &[Value::Int(1)])
        .await
        .expect("FetchOne")
        .expect("a row");
    assert_eq!(row.get("name"), Some(&Value::Text("two".into())));
    remake("id int8, flag bool DEFAULT true").await;
    let done = db
        .execute(&update, &[Value::Int(1)])
        .await
        .expect("Execute");
    assert_eq!(done.rows_affected, 1);
    // Inside a transaction: ABORTED, and the transaction again succeeds.
    db.fetch_all(&select, &[Value::Int(1)])
        .await
        .expect("cache it");
    remake("id int8, n int4 DEFAULT 3").await;
    let mut tx = db.transaction(Default::default()).await.expect("begin");
    let err = tx
        .fetch_all(&select, &[Value::Int(1)])
        .await
        .expect_err("a stale statement inside a transaction");
    assert_eq!(err.kind(), iadb::ErrorKind::Aborted, "{err}");
    let mut tx = db
        .transaction(Default::default())
        .await
        .expect("begin again");
    let rows = tx
        .fetch_all(&select, &[Value::Int(1)])
        .await
        .expect("again");
    assert_eq!(rows[0].values(), &[Value::Int(1), Value::Int(3)]);
    tx.commit().await.expect("commit");
    sqlx::raw_sql(&format!("DROP TABLE {table}"))
        .execute(&other)
        .await
        .expect("drop");
}

/// Catalogue types that SQLAlchemy's reflection reads (found by its dialect
/// suite): the internal one-byte `"char"` comes back as its text, and
/// `int2vector` / `oidvector` (`pg_index.indkey`) as JSON arrays, as other
/// arrays do; both were refused as unmappable. And a JSON document bound to
/// a `json` (not `jsonb`) column is stored as sent: it was stored with a
/// leading space (`' null'`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_types_and_json_parameters() {
    let Some(url) = postgres_url() else { return };
    let server = TestServer::start(&["--database-url", &url]);
    let db = server.client("").await;
    let row = db
        .fetch_one(
            "SELECT 'p'::\"char\" AS c, ''::\"char\" AS e, '1 3'::int2vector AS v, \
             '23 25'::oidvector AS o",
            &[],
        )
        .await
        .expect("catalogue types")
        .expect("a row");
    assert_eq!(row.get("c"), Some(&Value::Text("p".into())));
    assert_eq!(row.get("e"), Some(&Value::Text(String::new())));
    assert_eq!(row.get("v"), Some(&Value::Json("[1,3]".into())));
    assert_eq!(row.get("o"), Some(&Value::Json("[23,25]".into())));
    // A real catalogue read: the primary key's column numbers.
    let table = format!("catalogue_{}", std::process::id());
    db.execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
        .await
        .expect("drop");
    db.execute(
        &format!("CREATE TABLE {table} (a int, b int, j json, PRIMARY KEY (b, a))"),
        &[],
    )
    .await
    .expect("create");
    let row = db
        .fetch_one(
            "SELECT c.contype, i.indkey FROM pg_constraint c \
             JOIN pg_index i ON i.indexrelid = c.conindid \
             WHERE c.conrelid = CAST(? AS TEXT)::regclass",
            &[Value::Text(table.clone())],
        )
        .await
        .expect("pg_constraint")
        .expect("the primary key");
    assert_eq!(row.get("contype"), Some(&Value::Text("p".into())));
    assert_eq!(row.get("indkey"), Some(&Value::Json("[2,1]".into())));
    for (a, doc) in [(1, "null"), (2, r#"{"k": [1, 2]}"#)] {
        db.execute(
            &format!("INSERT INTO {table} (a, b, j) VALUES (?, ?, ?)"),
            &[Value::Int(a), Value::Int(a), Value::Json(doc.into())],
        )
        .await
        .expect("insert json");
        let stored = db
            .fetch_one(
                &format!("SELECT j::text AS t FROM {table} WHERE a = ?"),
                &[Value::Int(a)],
            )
            .await
            .expect("read json")
            .expect("a row");
        assert_eq!(stored.get("t"), Some(&Value::Text(doc.into())), "{doc}");
    }
    db.execute(&format!("DROP TABLE {table}"), &[])
        .await
        .expect("drop");
}
