//! The conformance cases of `shared/specs/conformance.md`, written once.
//!
//! Each case is an `async fn(&Target)`; [`conformance_suite!`] instantiates
//! every case as its own test for one engine, reached directly or through the
//! gRPC client. Where an engine truly differs, the case asks a small
//! per-dialect hook ([`crate::dialect::TestDialect`]) instead of being copied.

use crate::Target;
use futures::StreamExt;
use iadb::{ErrorKind, Value};
use std::time::Duration;

fn kind_of<T: std::fmt::Debug>(result: iadb::Result<T>) -> (ErrorKind, String) {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => (e.kind(), e.message().to_owned()),
    }
}

async fn still_serves(t: &Target) {
    let row =
        t.db.fetch_one("SELECT 1", &[])
            .await
            .expect("serves after an error");
    assert_eq!(
        row.and_then(|r| r.get_index(0).cloned()),
        Some(Value::Int(1))
    );
}

async fn round_trip_column(t: &Target, sql_type: &str, value: Value) -> Value {
    let table = t.table("rt");
    t.db.execute(&format!("CREATE TABLE {table} (v {sql_type})"), &[])
        .await
        .expect("create");
    t.db.execute(&format!("INSERT INTO {table} (v) VALUES (?)"), &[value])
        .await
        .expect("insert");
    let row =
        t.db.fetch_one(&format!("SELECT v FROM {table}"), &[])
            .await
            .expect("select")
            .expect("one row");
    row.get_index(0).cloned().expect("a value")
}

async fn select_param(t: &Target, value: Value) -> Value {
    let row =
        t.db.fetch_one("SELECT ? AS v", &[value])
            .await
            .expect("select ?")
            .expect("one row");
    row.get_index(0).cloned().expect("a value")
}

/// NULL of every kind comes back as NULL.
pub async fn null_of_every_kind(t: &Target) {
    assert_eq!(select_param(t, Value::Null).await, Value::Null);
    let e = t.dialect();
    for ty in [
        e.bigint_type(),
        e.double_type(),
        e.text_type(),
        e.bytes_type(),
        e.bool_type(),
        e.decimal_type(),
        e.date_type(),
        e.time_type(),
        e.datetime_type(),
        e.timestamptz_type(),
        e.json_type(),
    ] {
        assert_eq!(
            round_trip_column(t, ty, Value::Null).await,
            Value::Null,
            "{ty}"
        );
    }
}

/// int64 min, max, 0 and -1 are exact (or, where the engine carries only a
/// narrower range exactly, its limits are exact and beyond them is refused).
pub async fn int64_exact(t: &Target) {
    let limit = t.dialect().exact_integer_limit();
    let mut cases = vec![i64::MIN, i64::MAX, 0, -1];
    if let Some(max) = limit {
        cases.extend([max, -max]);
    }
    for n in cases {
        if limit.is_some_and(|max| n.unsigned_abs() > max.unsigned_abs()) {
            let (kind, message) = kind_of(t.db.fetch_one("SELECT ? AS v", &[Value::Int(n)]).await);
            assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
            assert!(message.contains(&n.to_string()), "{message}");
            continue;
        }
        assert_eq!(select_param(t, Value::Int(n)).await, Value::Int(n));
        assert_eq!(
            round_trip_column(t, t.dialect().bigint_type(), Value::Int(n)).await,
            Value::Int(n)
        );
    }
}

/// Doubles keep their bit pattern; NaN and the infinities are stored, or
/// refused clearly where the engine cannot store them.
pub async fn doubles_exact(t: &Target) {
    let d = t.dialect();
    for x in [
        0.1,
        1e308,
        -1.5e-300,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        if x.is_infinite() && !d.stores_infinity() {
            let (kind, message) =
                kind_of(t.db.fetch_one("SELECT ? AS v", &[Value::Float(x)]).await);
            assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
            assert!(message.contains("infinit"), "{message}");
            continue;
        }
        let back = round_trip_column(t, d.double_type(), Value::Float(x)).await;
        assert_eq!(back.as_f64().map(f64::to_bits), Some(x.to_bits()), "{x}");
        let back = select_param(t, Value::Float(x)).await;
        assert_eq!(
            back.as_f64().map(f64::to_bits),
            Some(x.to_bits()),
            "SELECT ? {x}"
        );
    }
    let back = select_param(t, Value::Float(-0.0)).await;
    match d.negative_zero_result() {
        Value::Float(zero) => {
            assert_eq!(back.as_f64().map(f64::to_bits), Some(zero.to_bits()));
        }
        other => assert_eq!(back, other),
    }
    let nan =
        t.db.fetch_one("SELECT ? AS v", &[Value::Float(f64::NAN)])
            .await;
    if d.stores_nan() {
        let v = nan.expect("NaN").expect("row").get_index(0).cloned();
        assert!(v.and_then(|v| v.as_f64()).is_some_and(f64::is_nan));
        let back = round_trip_column(t, d.double_type(), Value::Float(f64::NAN)).await;
        assert!(back.as_f64().is_some_and(f64::is_nan), "{back:?}");
    } else {
        let (kind, message) = kind_of(nan);
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(message.contains("NaN"), "{message}");
    }
}

/// An exact decimal keeps every digit.
pub async fn decimal_exact(t: &Target) {
    let digits = "12345678901234567890.123456789";
    let back =
        round_trip_column(t, t.dialect().decimal_type(), Value::Decimal(digits.into())).await;
    assert_eq!(back, t.dialect().decimal_result(digits));
}

/// Text is byte-exact: empty (not NULL), unicode, 1 MiB, embedded NUL.
pub async fn text_exact(t: &Target) {
    let mut cases = vec![
        String::new(),
        "é ✓ 𝄞 שלום".to_owned(),
        "x".repeat(1024 * 1024),
    ];
    if t.dialect().text_allows_nul() {
        cases.push("a\0b".to_owned());
    }
    for s in cases {
        assert_eq!(
            round_trip_column(t, t.dialect().text_type(), Value::Text(s.clone())).await,
            Value::Text(s.clone())
        );
        assert_eq!(
            select_param(t, Value::Text(s.clone())).await,
            Value::Text(s)
        );
    }
}

/// Bytes are byte-exact: empty, with zeros, 1 MiB.
pub async fn bytes_exact(t: &Target) {
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for b in [vec![], vec![0, 0, 1, 0], big] {
        assert_eq!(
            round_trip_column(t, t.dialect().bytes_type(), Value::Bytes(b.clone())).await,
            Value::Bytes(b)
        );
    }
}

/// Booleans come back as booleans from a boolean column.
pub async fn bool_values(t: &Target) {
    for b in [true, false] {
        assert_eq!(
            round_trip_column(t, t.dialect().bool_type(), Value::Bool(b)).await,
            t.dialect().typed_column_result(Value::Bool(b))
        );
        assert_eq!(
            select_param(t, Value::Bool(b)).await,
            t.dialect().bool_param_result(b)
        );
    }
}

/// Dates, times and timestamps are exact to the engine's precision;
/// timestamps with time zone come back in UTC.
pub async fn dates_and_times(t: &Target) {
    use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
    let time = NaiveTime::from_hms_micro_opt(23, 59, 58, 123_456).expect("time");
    let naive = date.and_time(time);
    let tz = DateTime::parse_from_rfc3339("2024-02-29T23:59:58.123456+02:00")
        .expect("rfc3339")
        .with_timezone(&Utc);
    let d = t.dialect();
    assert_eq!(
        round_trip_column(t, d.date_type(), Value::Date(date)).await,
        d.typed_column_result(Value::Date(date))
    );
    assert_eq!(
        round_trip_column(t, d.time_type(), Value::Time(time)).await,
        d.typed_column_result(Value::Time(time))
    );
    assert_eq!(
        round_trip_column(t, d.datetime_type(), Value::DateTime(naive)).await,
        d.typed_column_result(Value::DateTime(naive))
    );
    assert_eq!(
        round_trip_column(t, d.timestamptz_type(), Value::TimestampTz(tz)).await,
        d.typed_column_result(Value::TimestampTz(tz))
    );
}

/// A JSON document comes back the same.
pub async fn json_document(t: &Target) {
    let doc = r#"{"a":[1,2,{"b":null}],"c":"é"}"#;
    assert_eq!(
        round_trip_column(t, t.dialect().json_type(), Value::Json(doc.into())).await,
        t.dialect().json_result(doc)
    );
}

/// 0 to 100 `?` placeholders bind in order; `?` in literals, identifiers and
/// comments is left alone.
pub async fn placeholders_bind_in_order(t: &Target) {
    for n in [0usize, 1, 2, 17, 100] {
        let sql = if n == 0 {
            "SELECT 42 AS v".to_owned()
        } else {
            format!("SELECT {}", vec!["?"; n].join(", "))
        };
        let params: Vec<Value> = (0..n as i64).map(|i| Value::Int(i * 7)).collect();
        let row =
            t.db.fetch_one(&sql, &params)
                .await
                .expect("bind")
                .expect("row");
        if n == 0 {
            assert_eq!(row.values(), [Value::Int(42)]);
        } else {
            assert_eq!(row.values(), params.as_slice());
        }
    }
    let row =
        t.db.fetch_one(
            "SELECT '?' AS \"q?\", ? /* ? */ AS v -- ?\n",
            &[Value::Int(5)],
        )
        .await
        .expect("literals left alone")
        .expect("row");
    assert_eq!(row.values(), [Value::Text("?".into()), Value::Int(5)]);
    assert_eq!(row.columns()[0].name, "q?");
}

/// A wrong parameter count names the expected and given counts.
pub async fn wrong_parameter_count(t: &Target) {
    let (kind, message) = kind_of(t.db.fetch_all("SELECT ?, ?", &[Value::Int(1)]).await);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains('2') && message.contains('1'), "{message}");
    let (kind, _) = kind_of(t.db.execute("SELECT 1", &[Value::Int(1)]).await);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    still_serves(t).await;
}

/// INSERT, UPDATE, DELETE report exact rows affected (and the last id).
pub async fn execute_rows_affected(t: &Target) {
    let table = t.table("exec");
    t.db.execute(
        &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, v BIGINT)"),
        &[],
    )
    .await
    .expect("create");
    for i in 1..=5 {
        let out =
            t.db.execute(
                &format!("INSERT INTO {table} (id, v) VALUES (?, ?)"),
                &[Value::Int(i), Value::Int(i * 10)],
            )
            .await
            .expect("insert");
        assert_eq!(out.rows_affected, 1);
        if t.dialect().has_last_insert_id() {
            assert_eq!(out.last_insert_id, Some(i));
        }
    }
    let up =
        t.db.execute(
            &format!("UPDATE {table} SET v = v + 1 WHERE id > ?"),
            &[Value::Int(2)],
        )
        .await
        .expect("update");
    assert_eq!(up.rows_affected, 3);
    let del =
        t.db.execute(
            &format!("DELETE FROM {table} WHERE v < ?"),
            &[Value::Int(25)],
        )
        .await
        .expect("delete");
    assert_eq!(del.rows_affected, 2);
    let none =
        t.db.execute(&format!("DELETE FROM {table} WHERE id > 100"), &[])
            .await
            .expect("delete none");
    assert_eq!(none.rows_affected, 0);
}

/// `SELECT COUNT(*)` of `table`, as the engine gives it.
async fn row_count(t: &Target, table: &str) -> Value {
    let count = format!("SELECT COUNT(*) AS n FROM {table}");
    let row =
        t.db.fetch_one(&count, &[])
            .await
            .expect("count")
            .expect("row");
    row.get("n").cloned().expect("column n")
}

/// ExecuteMany of 10,000 sets applies all, in one transaction; one failing
/// set applies none and is named by index.
pub async fn execute_many_atomic(t: &Target) {
    let table = t.table("many");
    t.db.execute(
        &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT)"),
        &[],
    )
    .await
    .expect("create");
    let insert = format!("INSERT INTO {table} (id, label) VALUES (?, ?)");
    let sets: Vec<Vec<Value>> = (0..10_000)
        .map(|i| vec![Value::Int(i), Value::Text(format!("row {i}"))])
        .collect();
    let out =
        t.db.execute_many(&insert, &sets)
            .await
            .expect("execute_many");
    assert_eq!(out.rows_affected, 10_000);
    assert_eq!(row_count(t, &table).await, Value::Int(10_000));

    let failing: Vec<Vec<Value>> = (10_000..20_000)
        .map(|i| {
            // Set 5000 repeats an id already inserted: a unique violation.
            let id = if i == 15_000 { 3 } else { i };
            vec![Value::Int(id), Value::Text(format!("row {i}"))]
        })
        .collect();
    let (kind, message) = kind_of(t.db.execute_many(&insert, &failing).await);
    assert_eq!(kind, ErrorKind::AlreadyExists);
    assert!(
        message.contains("5000"),
        "the failing set's index: {message}"
    );
    assert_eq!(
        row_count(t, &table).await,
        Value::Int(10_000),
        "nothing of the failed batch"
    );
}

/// ExecuteMany whose sets differ in their values' kinds (a NULL, then an
/// integer where a double fits) applies each set as given; a set with the
/// wrong number of values is INVALID_ARGUMENT and nothing of the call is
/// applied.
pub async fn execute_many_mixed_kinds(t: &Target) {
    let d = t.dialect();
    let table = t.table("manykinds");
    t.db.execute(
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT, score {})",
            d.double_type()
        ),
        &[],
    )
    .await
    .expect("create");
    let insert = format!("INSERT INTO {table} (id, label, score) VALUES (?, ?, ?)");
    let text = |s: &str| Value::Text(s.to_owned());
    let sets = vec![
        vec![Value::Int(1), text("a"), Value::Float(1.5)],
        vec![Value::Int(2), Value::Null, Value::Null],
        vec![Value::Int(3), text("c"), Value::Int(2)],
        vec![Value::Int(4), text("d"), Value::Float(2.5)],
        vec![Value::Int(5), text("e"), Value::Float(-0.25)],
    ];
    let out =
        t.db.execute_many(&insert, &sets)
            .await
            .expect("execute_many");
    assert_eq!(out.rows_affected, 5);
    let rows =
        t.db.fetch_all(
            &format!("SELECT id, label, score FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .expect("read back");
    let got: Vec<Vec<Value>> = rows.iter().map(|r| r.values().to_vec()).collect();
    // D1 answers in JSON, where a whole double is a whole number.
    let two = if t.d1_fake.is_some() {
        Value::Int(2)
    } else {
        Value::Float(2.0)
    };
    assert_eq!(
        got,
        [
            vec![Value::Int(1), text("a"), Value::Float(1.5)],
            vec![Value::Int(2), Value::Null, Value::Null],
            vec![Value::Int(3), text("c"), two],
            vec![Value::Int(4), text("d"), Value::Float(2.5)],
            vec![Value::Int(5), text("e"), Value::Float(-0.25)],
        ]
    );

    let short = vec![
        vec![Value::Int(10), text("x"), Value::Float(1.0)],
        vec![Value::Int(11), text("y")],
    ];
    let (kind, _) = kind_of(t.db.execute_many(&insert, &short).await);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert_eq!(
        row_count(t, &table).await,
        Value::Int(5),
        "nothing of the failed call"
    );
}

/// An empty result still has its columns.
pub async fn empty_result_has_columns(t: &Target) {
    let table = t.table("empty");
    t.db.execute(&format!("CREATE TABLE {table} (a BIGINT, b TEXT)"), &[])
        .await
        .expect("create");
    let stream =
        t.db.fetch_stream(&format!("SELECT a, b FROM {table}"), &[])
            .await
            .expect("fetch");
    let names: Vec<&str> = stream.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(stream.rows.count().await, 0);
    let result =
        t.db.execute_query(&format!("SELECT a, b FROM {table}"), &[])
            .await;
    assert!(result.success);
    assert_eq!(result.row_count, 0);
    assert_eq!(result.columns.len(), 2);
}

/// FetchOne: no row is `None`, many rows give the first.
pub async fn fetch_one_first_or_none(t: &Target) {
    let table = t.table("one");
    t.db.execute(&format!("CREATE TABLE {table} (x BIGINT)"), &[])
        .await
        .expect("create");
    let q = format!("SELECT x FROM {table} ORDER BY x");
    assert!(t.db.fetch_one(&q, &[]).await.expect("fetch_one").is_none());
    t.db.execute_many(
        &format!("INSERT INTO {table} (x) VALUES (?)"),
        &(1..=50)
            .rev()
            .map(|i| vec![Value::Int(i)])
            .collect::<Vec<_>>(),
    )
    .await
    .expect("insert");
    let first =
        t.db.fetch_one(&q, &[])
            .await
            .expect("fetch_one")
            .expect("row");
    assert_eq!(first.get("x"), Some(&Value::Int(1)));
}

/// Column names: duplicates and unicode preserved in order.
pub async fn column_names_preserved(t: &Target) {
    let stream =
        t.db.fetch_stream("SELECT 1 AS a, 2 AS a, 3 AS \"é✓\"", &[])
            .await
            .expect("fetch");
    let names: Vec<&str> = stream.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "a", "é✓"]);
}

/// TableExists: existing, missing, case, schema-qualified; create_table.
pub async fn table_exists_and_create(t: &Target) {
    let table = t.table("exists");
    assert!(!t.db.table_exists(&table).await.expect("missing"));
    t.db.create_table(
        &table,
        &[
            ("id".into(), t.dialect().bigint_type().into()),
            ("name".into(), t.dialect().text_type().into()),
        ],
    )
    .await
    .expect("create_table");
    assert!(t.db.table_exists(&table).await.expect("exists"));
    assert_eq!(
        t.db.table_exists(&table.to_uppercase())
            .await
            .expect("case"),
        t.dialect().table_names_case_insensitive()
    );
    let qualified = t.dialect().qualified(&table);
    assert!(t.db.table_exists(&qualified).await.expect("qualified"));
    assert!(
        !t.db
            .table_exists("no_such_table_anywhere")
            .await
            .expect("missing")
    );
}

/// DDL then DML in one session.
pub async fn ddl_then_dml(t: &Target) {
    let table = t.table("ddl");
    t.db.execute(&format!("CREATE TABLE {table} (x BIGINT)"), &[])
        .await
        .expect("create");
    t.db.execute(
        &format!("INSERT INTO {table} (x) VALUES (?)"),
        &[Value::Int(9)],
    )
    .await
    .expect("insert");
    t.db.execute(&format!("ALTER TABLE {table} ADD COLUMN y TEXT"), &[])
        .await
        .expect("alter");
    let rows =
        t.db.fetch_all(&format!("SELECT x, y FROM {table}"), &[])
            .await
            .expect("select");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values(), [Value::Int(9), Value::Null]);
}

/// Each bad statement gets the design's code and a message naming the
/// problem; the next call is served.
pub async fn errors_map_to_codes(t: &Target) {
    for sql in ["", "   \n\t "] {
        let (kind, message) = kind_of(t.db.execute(sql, &[]).await);
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(message.contains("empty"), "{message}");
        let (kind, _) = kind_of(t.db.fetch_all(sql, &[]).await);
        assert_eq!(kind, ErrorKind::InvalidArgument);
    }
    let (kind, message) = kind_of(t.db.fetch_all("SELEC 1", &[]).await);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.to_lowercase().contains("syntax"), "{message}");
    still_serves(t).await;

    let (kind, message) = kind_of(t.db.fetch_all("SELECT * FROM no_such_table_xyz", &[]).await);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains("no_such_table_xyz"), "{message}");
    still_serves(t).await;

    let table = t.table("errs");
    let parent = t.table("parent");
    t.db.execute(
        &format!("CREATE TABLE {parent} (id BIGINT PRIMARY KEY)"),
        &[],
    )
    .await
    .expect("parent");
    t.db.execute(
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, n BIGINT CHECK (n >= 0), p BIGINT REFERENCES {parent}(id))"
        ),
        &[],
    )
    .await
    .expect("create");
    let (kind, message) = kind_of(
        t.db.fetch_all(&format!("SELECT no_such_column FROM {table}"), &[])
            .await,
    );
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains("no_such_column"), "{message}");

    let insert = format!("INSERT INTO {table} (id, name, n, p) VALUES (?, ?, ?, ?)");
    t.db.execute(
        &insert,
        &[Value::Int(1), "a".into(), Value::Int(1), Value::Null],
    )
    .await
    .expect("first insert");
    let cases = [
        (
            vec![Value::Int(1), "dup".into(), Value::Int(1), Value::Null],
            ErrorKind::AlreadyExists,
        ),
        (
            vec![Value::Int(2), Value::Null, Value::Int(1), Value::Null],
            ErrorKind::FailedPrecondition,
        ),
        (
            vec![Value::Int(3), "c".into(), Value::Int(-1), Value::Null],
            ErrorKind::FailedPrecondition,
        ),
        (
            vec![Value::Int(4), "d".into(), Value::Int(1), Value::Int(999)],
            ErrorKind::FailedPrecondition,
        ),
    ];
    for (params, expected) in cases {
        let (kind, message) = kind_of(t.db.execute(&insert, &params).await);
        assert_eq!(kind, expected, "{message}");
        still_serves(t).await;
    }
}

/// Creating an object that exists (a table, an index, a view) is
/// ALREADY_EXISTS on every engine, as a duplicate key is; dropping a table
/// that other rows still reference is FAILED_PRECONDITION.
pub async fn objects_that_exist_or_are_depended_on(t: &Target) {
    let parent = t.table("exists_parent");
    let child = t.table("exists_child");
    let create = format!("CREATE TABLE {parent} (id BIGINT PRIMARY KEY, v BIGINT)");
    t.db.execute(&create, &[]).await.expect("create");
    let (kind, message) = kind_of(t.db.execute(&create, &[]).await);
    assert_eq!(kind, ErrorKind::AlreadyExists, "table: {message}");
    let index = format!("CREATE INDEX {parent}_v ON {parent} (v)");
    t.db.execute(&index, &[]).await.expect("index");
    let (kind, message) = kind_of(t.db.execute(&index, &[]).await);
    assert_eq!(kind, ErrorKind::AlreadyExists, "index: {message}");
    let view = format!("CREATE VIEW {parent}_view AS SELECT id FROM {parent}");
    t.db.execute(&view, &[]).await.expect("view");
    let (kind, message) = kind_of(t.db.execute(&view, &[]).await);
    assert_eq!(kind, ErrorKind::AlreadyExists, "view: {message}");
    t.db.execute(&format!("DROP VIEW {parent}_view"), &[])
        .await
        .expect("drop view");
    still_serves(t).await;

    t.db.execute(
        &format!("CREATE TABLE {child} (id BIGINT PRIMARY KEY, p BIGINT REFERENCES {parent}(id))"),
        &[],
    )
    .await
    .expect("child");
    t.db.execute(&format!("INSERT INTO {parent} (id, v) VALUES (1, 1)"), &[])
        .await
        .expect("parent row");
    t.db.execute(&format!("INSERT INTO {child} (id, p) VALUES (1, 1)"), &[])
        .await
        .expect("child row");
    let (kind, message) = kind_of(t.db.execute(&format!("DROP TABLE {parent}"), &[]).await);
    assert_eq!(
        kind,
        ErrorKind::FailedPrecondition,
        "drop referenced: {message}"
    );
    still_serves(t).await;
}

/// An engine error in the middle of a stream ends it with the error, after
/// the rows already produced.
pub async fn error_mid_stream(t: &Target) {
    let table = t.table("mid");
    t.db.execute(&format!("CREATE TABLE {table} (x BIGINT)"), &[])
        .await
        .expect("create");
    t.db.execute_many(
        &format!("INSERT INTO {table} (x) VALUES (?)"),
        &(1..=3000).map(|i| vec![Value::Int(i)]).collect::<Vec<_>>(),
    )
    .await
    .expect("insert");
    let started =
        t.db.fetch_stream(&t.dialect().failing_at_row_sql(&table, 2500), &[])
            .await;
    let mut rows = 0;
    let error = match started {
        Ok(stream) => {
            let mut stream = stream.rows;
            loop {
                match stream.next().await {
                    Some(Ok(_)) => rows += 1,
                    Some(Err(e)) => break e,
                    None => panic!("stream ended without the error after {rows} rows"),
                }
            }
        }
        // An engine that answers whole fails before the stream starts.
        Err(e) if !t.dialect().streams_rows_before_error() => e,
        Err(e) => panic!("stream did not start: {e}"),
    };
    if t.dialect().streams_rows_before_error() {
        assert!(rows > 0 && rows < 2500, "rows before the error: {rows}");
    } else {
        assert_eq!(rows, 0, "rows before the error");
    }
    assert!(!error.message().is_empty());
    still_serves(t).await;
}

/// 100 concurrent streams all complete.
pub async fn concurrent_streams(t: &Target) {
    let sql = t.dialect().series_sql(2000);
    let runs = (0..100).map(|_| async {
        let stream = t.db.fetch_stream(&sql, &[]).await.expect("stream");
        let rows: Vec<_> = stream.rows.collect().await;
        assert!(rows.iter().all(Result::is_ok));
        rows.len()
    });
    let counts = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(runs))
        .await
        .expect("100 streams finish");
    assert!(counts.iter().all(|n| *n == 2000), "{counts:?}");
}

/// Instantiates every conformance case as a test of `$target` (an async
/// expression giving `Option<Target>`; `None` means skipped with a notice);
/// or, given two module names and an engine, as tests of the engine's
/// adapter in this process (the first) and through a server (the second).
#[macro_export]
macro_rules! conformance_suite {
    ($direct:ident, $remote:ident: $engine:expr) => {
        $crate::conformance_suite!($direct, $crate::Target::direct($engine));
        $crate::conformance_suite!($remote, $crate::Target::remote($engine));
    };
    ($module:ident, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@cases $target;
                null_of_every_kind, int64_exact, doubles_exact, decimal_exact, text_exact,
                bytes_exact, bool_values, dates_and_times, json_document,
                placeholders_bind_in_order, wrong_parameter_count, execute_rows_affected,
                execute_many_atomic, execute_many_mixed_kinds, empty_result_has_columns, fetch_one_first_or_none,
                column_names_preserved, table_exists_and_create, ddl_then_dml,
                errors_map_to_codes, objects_that_exist_or_are_depended_on,
                error_mid_stream, concurrent_streams);
        }
    };
    (@cases $target:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(target) = $target.await {
                    $crate::conformance::$case(&target).await;
                }
            }
        )*
    };
}
