//! Arrow results (RESULT_FORMAT_ARROW, docs/arrow.md) through the Rust
//! client against a real server on loopback, on SQLite, PostgreSQL,
//! MySQL/MariaDB and DuckDB: the same values as rows, in the documented
//! Arrow types; multi-batch results; empty results with their schema;
//! NULLs; a value that does not fit its column; an error mid-stream; a
//! fetch inside a transaction; read-only calls; an unknown format.

use futures::StreamExt;
use iadb::{
    DatabaseInterface, ErrorKind, Value,
    arrow::{
        DataType, RecordBatch, TimeUnit,
        arrow_array::{
            Array, BinaryArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
            Time64NanosecondArray, TimestampMicrosecondArray, UInt64Array,
        },
        value_arrow_type,
    },
    proto::{self, database_client::DatabaseClient},
};
use iadb_client::{RemoteDatabase, TransactionOptions};
use iadb_tests::{Engine, TestServer};

const ENGINES: [Engine; 4] = [
    Engine::Sqlite,
    Engine::Postgres,
    Engine::Mysql,
    Engine::Duckdb,
];

/// A server in front of one engine and a client of it.
struct Setup {
    engine: Engine,
    server: TestServer,
    db: RemoteDatabase,
    _dir: tempfile::TempDir,
}

fn unique_table(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_arrow_{base}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn setup(engine: Engine, args: &[&str]) -> Option<Setup> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match engine.url(&dir) {
        Ok(url) => url,
        Err(why) => {
            iadb_tests::harness::skip(&format!("Arrow results on {}", engine.name()), &why);
            return None;
        }
    };
    let mut all = vec!["--database-url", url.as_str()];
    all.extend_from_slice(args);
    let server = TestServer::start(&all);
    let db = server.client("").await;
    Some(Setup {
        engine,
        server,
        db,
        _dir: dir,
    })
}

/// One Arrow cell as the iadb value the row format carries for it (text
/// for decimals and JSON, which Arrow carries as Utf8).
fn cell(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    let any = array.as_any();
    match array.data_type() {
        DataType::Boolean => Value::Bool(any.downcast_ref::<BooleanArray>().unwrap().value(i)),
        DataType::Int64 => Value::Int(any.downcast_ref::<Int64Array>().unwrap().value(i)),
        DataType::UInt64 => {
            let n = any.downcast_ref::<UInt64Array>().unwrap().value(i);
            i64::try_from(n).map_or_else(|_| Value::Text(n.to_string()), Value::Int)
        }
        DataType::Float64 => Value::Float(any.downcast_ref::<Float64Array>().unwrap().value(i)),
        DataType::Utf8 => Value::Text(any.downcast_ref::<StringArray>().unwrap().value(i).into()),
        DataType::Binary => {
            Value::Bytes(any.downcast_ref::<BinaryArray>().unwrap().value(i).to_vec())
        }
        DataType::Date32 => Value::Date(
            any.downcast_ref::<Date32Array>()
                .unwrap()
                .value_as_date(i)
                .unwrap(),
        ),
        DataType::Time64(TimeUnit::Nanosecond) => Value::Time(
            any.downcast_ref::<Time64NanosecondArray>()
                .unwrap()
                .value_as_time(i)
                .unwrap(),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let t = any
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .value_as_datetime(i)
                .unwrap();
            match tz {
                Some(_) => Value::TimestampTz(t.and_utc()),
                None => Value::DateTime(t),
            }
        }
        other => panic!("an Arrow type iadb does not send: {other}"),
    }
}

/// A row value as [`cell`] gives it back.
fn as_arrow_reads_it(value: Value) -> Value {
    match value {
        Value::Decimal(s) | Value::Json(s) => Value::Text(s),
        other => other,
    }
}

fn arrow_rows(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), i))
                    .collect(),
            );
        }
    }
    rows
}

async fn rows_of(db: &RemoteDatabase, sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
    db.fetch_all(sql, params)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.into_values().into_iter().map(as_arrow_reads_it).collect())
        .collect()
}

/// Every kind the conformance suite stores: the same values as rows, each
/// in the Arrow type docs/arrow.md gives it; a row of NULLs.
#[tokio::test]
async fn every_type_comes_as_the_rows_do() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &[]).await else {
            continue;
        };
        let d = engine.dialect();
        let table = unique_table("types");
        let columns = [
            ("i", d.bigint_type()),
            ("f", d.double_type()),
            ("t", d.text_type()),
            ("dc", d.decimal_type()),
            ("b", d.bytes_type()),
            ("bo", d.bool_type()),
            ("dt", d.date_type()),
            ("tm", d.time_type()),
            ("tz", d.timestamptz_type()),
            ("ts", d.datetime_type()),
            ("j", d.json_type()),
        ];
        let ddl = columns
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        s.db.execute(&format!("CREATE TABLE {table} (k INTEGER, {ddl})"), &[])
            .await
            .expect("create");
        let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let values = vec![
            Value::Int(1),
            Value::Int(-9_007_199_254_740_993),
            Value::Float(1.25),
            Value::Text("héllo, wörld".into()),
            Value::Decimal("12345.678900000".into()),
            Value::Bytes(vec![0, 1, 254, 255]),
            Value::Bool(true),
            Value::Date(date),
            Value::Time(chrono::NaiveTime::from_hms_micro_opt(12, 34, 56, 789_000).unwrap()),
            Value::TimestampTz(date.and_hms_micro_opt(1, 2, 3, 456_000).unwrap().and_utc()),
            Value::DateTime(date.and_hms_micro_opt(23, 59, 59, 999_999).unwrap()),
            Value::Json(r#"{"a": [1, 2]}"#.into()),
        ];
        let marks = vec!["?"; values.len()].join(", ");
        s.db.execute(&format!("INSERT INTO {table} VALUES ({marks})"), &values)
            .await
            .expect("insert");
        let mut nulls = vec![Value::Null; values.len()];
        nulls[0] = Value::Int(2);
        s.db.execute(&format!("INSERT INTO {table} VALUES ({marks})"), &nulls)
            .await
            .expect("insert NULLs");
        let sql = format!("SELECT * FROM {table} ORDER BY k");
        let want = rows_of(&s.db, &sql, &[]).await;
        let stream = s.db.fetch_arrow(&sql, &[]).await.expect("arrow");
        let schema = stream.schema.clone();
        let batches = stream.collect().await.expect("batches");
        assert_eq!(arrow_rows(&batches), want, "{}", engine.name());
        // Each column's type is the one of the kind its rows carry.
        let rows = s.db.fetch_all(&sql, &[]).await.expect("rows");
        for (i, value) in rows[0].values().iter().enumerate() {
            let kind = value_arrow_type(value).expect("a value");
            assert_eq!(
                schema.field(i).data_type(),
                &kind.data_type(),
                "{}: column {}",
                engine.name(),
                schema.field(i).name()
            );
        }
        for batch in &batches {
            assert_eq!(batch.schema(), schema);
        }
    }
}

/// A result of many batches: the same rows as FetchAll's, one record
/// batch per server batch, the summary's count checked by the client.
#[tokio::test]
async fn a_large_result_comes_in_many_batches_with_the_same_rows() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &["--batch-rows", "700"]).await else {
            continue;
        };
        let sql = engine.dialect().series_sql(10_050);
        let want = rows_of(&s.db, &sql, &[]).await;
        let stream = s.db.fetch_arrow(&sql, &[]).await.expect("arrow");
        assert_eq!(stream.schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(stream.schema.field(1).data_type(), &DataType::Utf8);
        let batches = stream.collect().await.expect("batches");
        assert_eq!(batches.len(), 15, "{}: 10,050 rows by 700", engine.name());
        assert!(batches.iter().all(|b| b.num_rows() <= 700));
        let got = arrow_rows(&batches);
        assert_eq!(got.len(), 10_050);
        assert_eq!(got, want, "{}", engine.name());
    }
}

/// An empty result still has its schema, from the declared types.
#[tokio::test]
async fn an_empty_result_has_its_schema() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &[]).await else {
            continue;
        };
        let d = engine.dialect();
        let table = unique_table("empty");
        s.db.execute(
            &format!(
                "CREATE TABLE {table} (n {}, f {}, t {}, b {})",
                d.bigint_type(),
                d.double_type(),
                d.text_type(),
                d.bytes_type()
            ),
            &[],
        )
        .await
        .expect("create");
        let stream =
            s.db.fetch_arrow(&format!("SELECT n, f, t, b FROM {table}"), &[])
                .await
                .expect("arrow");
        let types: Vec<_> = stream
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Float64,
                DataType::Utf8,
                DataType::Binary
            ],
            "{}",
            engine.name()
        );
        let names: Vec<_> = stream
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["n", "f", "t", "b"]);
        assert!(stream.collect().await.expect("batches").is_empty());
    }
}

/// SQLite's dynamic typing: text in an INTEGER column, past the first
/// batch, is FAILED_PRECONDITION naming the column after the batches
/// before it; the value is not in the message; the server keeps serving.
#[tokio::test]
async fn a_value_that_does_not_fit_its_column_is_failed_precondition() {
    let Some(s) = setup(Engine::Sqlite, &["--batch-rows", "4"]).await else {
        return;
    };
    let table = unique_table("mixed");
    s.db.execute(&format!("CREATE TABLE {table} (k INTEGER, n INTEGER)"), &[])
        .await
        .expect("create");
    for k in 1..=10 {
        s.db.execute(
            &format!("INSERT INTO {table} VALUES (?, ?)"),
            &[Value::Int(k), Value::Int(k * 10)],
        )
        .await
        .expect("insert");
    }
    s.db.execute(
        &format!("INSERT INTO {table} VALUES (11, 'private-text')"),
        &[],
    )
    .await
    .expect("insert text");
    let sql = format!("SELECT k, n FROM {table} ORDER BY k");
    let mut stream = s.db.fetch_arrow(&sql, &[]).await.expect("arrow starts");
    let mut rows = 0;
    let error = loop {
        match stream.batches.next().await {
            Some(Ok(batch)) => rows += batch.num_rows(),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error after {rows} rows"),
        }
    };
    assert_eq!(rows, 8, "the two whole batches before the one that fails");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    assert!(error.message().contains("`n`"), "{}", error.message());
    assert!(error.message().contains("Int64"), "{}", error.message());
    assert!(error.message().contains("text"), "{}", error.message());
    assert!(!error.message().contains("private"), "{}", error.message());
    // In the first batch: the call fails before any batch.
    let error =
        s.db.fetch_arrow(&format!("SELECT k, n FROM {table} WHERE k > 9"), &[])
            .await
            .expect_err("fails");
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    // The same rows as rows are fine, and the server still serves Arrow.
    assert_eq!(rows_of(&s.db, &sql, &[]).await.len(), 11);
    let ok =
        s.db.fetch_arrow(&format!("SELECT k FROM {table}"), &[])
            .await
            .expect("arrow")
            .collect()
            .await
            .expect("batches");
    assert_eq!(ok.iter().map(RecordBatch::num_rows).sum::<usize>(), 11);
}

/// An engine error in the middle of a result: the batches before it,
/// then the error; never a result that looks whole.
#[tokio::test]
async fn an_error_mid_stream_ends_the_batches_with_it() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &["--batch-rows", "100"]).await else {
            continue;
        };
        let d = engine.dialect();
        let table = unique_table("mid");
        s.db.execute(
            &format!("CREATE TABLE {table} (x {})", d.bigint_type()),
            &[],
        )
        .await
        .expect("create");
        s.db.execute_many(
            &format!("INSERT INTO {table} (x) VALUES (?)"),
            &(1..=3000).map(|i| vec![Value::Int(i)]).collect::<Vec<_>>(),
        )
        .await
        .expect("insert");
        let started =
            s.db.fetch_arrow(&d.failing_at_row_sql(&table, 2500), &[])
                .await;
        let mut rows = 0;
        let error = match started {
            Ok(mut stream) => loop {
                match stream.batches.next().await {
                    Some(Ok(batch)) => rows += batch.num_rows(),
                    Some(Err(e)) => break e,
                    None => panic!("{}: ended without the error after {rows}", engine.name()),
                }
            },
            Err(e) if !d.streams_rows_before_error() => e,
            Err(e) => panic!("{}: the stream did not start: {e}", engine.name()),
        };
        if d.streams_rows_before_error() {
            assert!(rows > 0 && rows < 2500, "{}: {rows} rows", engine.name());
        }
        assert_ne!(
            error.kind(),
            ErrorKind::Internal,
            "{}: {error}",
            engine.name()
        );
        // The server still serves.
        let batches =
            s.db.fetch_arrow(&format!("SELECT x FROM {table} WHERE x <= 3"), &[])
                .await
                .expect("arrow")
                .collect()
                .await
                .expect("batches");
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    }
}

/// A fetch inside a transaction as Arrow sees the transaction's own
/// writes; the transaction goes on after it.
#[tokio::test]
async fn a_fetch_in_a_transaction_comes_as_arrow() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &["--batch-rows", "3"]).await else {
            continue;
        };
        let table = unique_table("tx");
        s.db.execute(
            &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)"),
            &[],
        )
        .await
        .expect("create");
        let mut tx =
            s.db.transaction(TransactionOptions::default())
                .await
                .expect("begin");
        for id in 1..=10 {
            tx.execute(
                &format!("INSERT INTO {table} VALUES (?, ?)"),
                &[Value::Int(id), Value::Int(id * 2)],
            )
            .await
            .expect("insert");
        }
        let sql = format!("SELECT id, v FROM {table} ORDER BY id");
        let stream = tx.fetch_arrow(&sql, &[]).await.expect("arrow");
        assert_eq!(stream.schema.fields().len(), 2);
        let batches = stream.collect().await.expect("batches");
        assert_eq!(batches.len(), 4, "{}: 10 rows by 3", engine.name());
        let rows = arrow_rows(&batches);
        assert_eq!(rows[9], vec![Value::Int(10), Value::Int(20)]);
        // An unread Arrow fetch is read to its end before the next request.
        let stream = tx.fetch_arrow(&sql, &[]).await.expect("arrow");
        drop(stream);
        let after = tx.fetch_all(&sql, &[]).await.expect("rows");
        assert_eq!(after.len(), 10);
        tx.commit().await.expect("commit");
    }
}

/// A read-only FetchAll (and so a read-scoped token's) streams Arrow as
/// well.
#[tokio::test]
async fn a_read_only_fetch_comes_as_arrow() {
    for engine in ENGINES {
        let Some(s) = setup(engine, &["--batch-rows", "50"]).await else {
            continue;
        };
        let sql = engine.dialect().series_sql(120);
        let want = rows_of(&s.db, &sql, &[]).await;
        let db = s.server.client("").await.with_read_only(true);
        let batches = db
            .fetch_arrow(&sql, &[])
            .await
            .expect("arrow")
            .collect()
            .await
            .expect("batches");
        assert_eq!(batches.len(), 3, "{}", engine.name());
        assert_eq!(arrow_rows(&batches), want, "{}", engine.name());
    }
}

/// A result format the server does not know is INVALID_ARGUMENT, in
/// FetchAll and in a transaction's fetch.
#[tokio::test]
async fn an_unknown_result_format_is_invalid_argument() {
    let Some(s) = setup(Engine::Sqlite, &[]).await else {
        return;
    };
    let mut client = DatabaseClient::new(s.server.channel().await);
    for read_only in [false, true] {
        let status = client
            .fetch_all(proto::FetchAllRequest {
                sql: "SELECT 1".into(),
                options: Some(proto::QueryOptions {
                    result_format: 7,
                    read_only,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("an unknown format");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("result format"), "{status:?}");
    }
    // Inside a transaction.
    use proto::{transaction_request::Request as Req, transaction_response::Response as Resp};
    // One request at a time: the begin, its answer, then the fetch.
    let (requests, stream) = futures::channel::mpsc::unbounded();
    requests
        .unbounded_send(proto::TransactionRequest {
            request: Some(Req::Begin(proto::BeginTransaction::default())),
        })
        .expect("send");
    let mut responses = client
        .transaction(stream)
        .await
        .expect("transaction")
        .into_inner();
    match responses.message().await {
        Ok(Some(proto::TransactionResponse {
            response: Some(Resp::Begun(_)),
        })) => {}
        other => panic!("{other:?}"),
    }
    requests
        .unbounded_send(proto::TransactionRequest {
            request: Some(Req::Fetch(proto::Statement {
                sql: "SELECT 1".into(),
                result_format: 9,
                ..Default::default()
            })),
        })
        .expect("send");
    let status = responses.message().await.expect_err("an unknown format");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // ROWS and UNSPECIFIED are rows.
    let stream = client
        .fetch_all(proto::FetchAllRequest {
            sql: "SELECT 1".into(),
            options: Some(proto::QueryOptions {
                result_format: proto::ResultFormat::Rows.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("rows");
    let frames: Vec<_> = stream.into_inner().collect().await;
    assert!(matches!(
        frames[1].as_ref().expect("frame").frame,
        Some(proto::fetch_all_response::Frame::Batch(_))
    ));
    let _ = s.engine;
}

/// PostgreSQL's and MySQL's adapters build Arrow straight from the cursor
/// (no row encoding in between): `query_arrow` gives record batches of at
/// most the batch size asked for, holding the values `query` gives as
/// rows, in the schema the server's conversion would give. SQLite's
/// declared types do not decide every column's type, so it gives rows,
/// which the server converts.
#[tokio::test]
async fn postgres_and_mysql_adapters_build_arrow_from_the_cursor() {
    use iadb::{QueryEvent, arrow::ArrowWanted};
    let wanted = ArrowWanted {
        batch_rows: 256,
        batch_bytes: 1 << 20,
    };
    // MySQL's recursive CTEs stop at 1,000 levels by default.
    const ROWS: usize = 900;
    for engine in [Engine::Postgres, Engine::Mysql, Engine::Sqlite] {
        let Some(target) = iadb_tests::Target::direct(engine).await else {
            continue;
        };
        let sql = match engine {
            Engine::Postgres => format!(
                "SELECT i::bigint AS n, 'v' || i AS s, i * 0.5::float8 AS x, \
                 timestamp '2020-01-01' + i * interval '1 second' AS t, \
                 CASE WHEN i % 7 = 0 THEN NULL ELSE i::int4 END AS maybe \
                 FROM generate_series(1, {ROWS}) i"
            ),
            _ => format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS}) \
                 SELECT i AS n, CONCAT('v', i) AS s, i * 0.5e0 AS x, \
                 CASE WHEN i % 7 = 0 THEN NULL ELSE i END AS maybe FROM c"
            ),
        };
        let (columns, events) = arrow_events(&target, &sql, wanted).await;
        let rows = rows_of_events(&target, &sql).await;
        assert_eq!(rows.len(), ROWS, "{}", engine.name());
        if engine == Engine::Sqlite {
            assert!(
                events.iter().all(|e| !matches!(e, QueryEvent::Arrow(_))),
                "SQLite gives rows"
            );
            continue;
        }
        let batches = only_batches(events, engine.name());
        assert_eq!(batches.len(), ROWS.div_ceil(256), "{}", engine.name());
        assert!(batches.iter().all(|b| b.num_rows() <= 256));
        // The schema the server's conversion of rows gives the same result.
        assert_eq!(
            batches[0].schema(),
            converted_schema(engine, &columns, &rows[0]),
            "{}",
            engine.name()
        );
        assert_eq!(
            arrow_rows(&batches),
            as_arrow_reads_them(rows),
            "{}",
            engine.name()
        );
    }
}

/// DuckDB's `query_arrow` gives its own Arrow arrays where they are iadb's
/// types for the columns, and decodes the chunks where they are not (a
/// DECIMAL, which iadb gives as text): either way the values `query` gives
/// as rows, in the schema the server's conversion gives, in batches of at
/// most the rows and about the bytes asked for, over several of DuckDB's
/// chunks (2,048 rows each).
#[tokio::test]
async fn duckdb_gives_its_own_arrow_arrays() {
    use iadb::arrow::ArrowWanted;
    let Some(target) = iadb_tests::Target::direct(Engine::Duckdb).await else {
        return;
    };
    const ROWS: usize = 5_000;
    let native = format!(
        "SELECT i AS n, CAST(i AS INTEGER) AS i32, CAST(i % 100 AS TINYINT) AS i8, \
         CAST(i AS UINTEGER) AS u32, 'v' || i AS s, CAST(i AS DOUBLE) * 0.5 AS x, CAST(i AS FLOAT) AS f, \
         i % 2 = 0 AS b, CAST('b' || i AS BLOB) AS blob, \
         TIMESTAMP '2020-01-01' + to_seconds(i) AS t, DATE '2020-01-01' + CAST(i AS INTEGER) AS d, \
         TIME '00:00:00' + to_seconds(i) AS tod, \
         CAST(TIMESTAMP '2020-01-01' + to_seconds(i) AS TIMESTAMPTZ) AS tz, \
         CASE WHEN i % 7 = 0 THEN NULL ELSE CAST(i AS INTEGER) END AS maybe \
         FROM range(1, {} + 1) r(i)",
        ROWS
    );
    let decoded = format!(
        "SELECT i AS n, CAST(i AS DECIMAL(18, 3)) / 8 AS dec FROM range(1, {} + 1) r(i)",
        ROWS
    );
    for (sql, wanted) in [
        (
            &native,
            ArrowWanted {
                batch_rows: 1_000,
                batch_bytes: 1 << 20,
            },
        ),
        (
            &native,
            ArrowWanted {
                batch_rows: 100_000,
                batch_bytes: 30_000,
            },
        ),
        (
            &decoded,
            ArrowWanted {
                batch_rows: 1_000,
                batch_bytes: 1 << 20,
            },
        ),
    ] {
        let (columns, events) = arrow_events(&target, sql, wanted).await;
        let batches = only_batches(events, sql);
        // Each of DuckDB's chunks is cut on its own: 2,048 rows make
        // batches of 1,000, 1,000 and 48.
        assert!(batches.len() >= ROWS.div_ceil(wanted.batch_rows), "{sql}");
        for batch in &batches {
            assert!(batch.num_rows() <= wanted.batch_rows);
            let bytes: usize = batch
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Utf8 => c
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .map_or(0, |a| (0..a.len()).map(|i| a.value(i).len()).sum()),
                    DataType::Binary => c
                        .as_any()
                        .downcast_ref::<BinaryArray>()
                        .map_or(0, |a| (0..a.len()).map(|i| a.value(i).len()).sum()),
                    _ => 8 * c.len(),
                })
                .sum();
            // A batch ends at the row that reaches the byte size.
            let widest_row = 8 * batch.num_columns() + 64;
            assert!(bytes < wanted.batch_bytes + widest_row, "{bytes} bytes");
        }
        let rows = rows_of_events(&target, sql).await;
        assert_eq!(rows.len(), ROWS);
        let schema = converted_schema(Engine::Duckdb, &columns, &rows[0]);
        assert!(batches.iter().all(|b| b.schema() == schema), "{sql}");
        assert_eq!(arrow_rows(&batches), as_arrow_reads_them(rows), "{sql}");
    }
}

/// A value DuckDB's arrays hold but iadb's Arrow type for the column
/// cannot (the `infinity` date, which the row path gives as text) is the
/// error the conversion gives (FAILED_PRECONDITION, naming the column, not
/// the value), after the whole batches before it; the result is never
/// shorter without an error.
#[tokio::test]
async fn duckdb_arrow_refuses_a_value_its_column_cannot_hold() {
    use iadb::{QueryEvent, arrow::ArrowWanted};
    let Some(target) = iadb_tests::Target::direct(Engine::Duckdb).await else {
        return;
    };
    let sql = "SELECT i AS n, CASE WHEN i = 3000 THEN DATE 'infinity' \
               ELSE DATE '2020-01-01' + CAST(i AS INTEGER) END AS d FROM range(1, 5001) r(i)";
    let wanted = ArrowWanted {
        batch_rows: 1_000,
        batch_bytes: 1 << 20,
    };
    let mut events = target
        .db
        .query_arrow(sql, &[], wanted)
        .await
        .expect("query_arrow")
        .events;
    let mut rows = 0;
    let error = loop {
        match events.next().await {
            Some(Ok(QueryEvent::Arrow(batch))) => rows += batch.num_rows(),
            Some(Ok(QueryEvent::Done(_))) | None => {
                panic!("ended without an error after {rows} rows")
            }
            Some(Ok(_)) => panic!("rows where Arrow was asked for"),
            Some(Err(e)) => break e,
        }
    };
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}");
    assert!(error.message().contains("`d`"), "{error}");
    assert!(!error.message().contains("infinity"), "{error}");
    // The first chunk (2,048 rows) went as DuckDB's arrays; the second
    // was decoded, and its rows before the 3,000th went first.
    assert_eq!(rows, 2_999);
}

/// What a session's statement gave a sink: record batches built by the
/// adapter, or rows.
#[derive(Default)]
struct SessionSink {
    wanted: Option<iadb::arrow::ArrowWanted>,
    batches: Vec<RecordBatch>,
    rows: Vec<Vec<Value>>,
}

#[async_trait::async_trait]
impl iadb_server::backend::session::RowSink for SessionSink {
    async fn columns(&mut self, _: std::sync::Arc<[iadb::Column]>) -> iadb::Result<()> {
        Ok(())
    }
    async fn row(&mut self, values: Vec<Value>) -> iadb::Result<()> {
        self.rows.push(values);
        Ok(())
    }
    fn arrow_wanted(&self) -> Option<iadb::arrow::ArrowWanted> {
        self.wanted
    }
    async fn arrow(&mut self, batch: RecordBatch) -> iadb::Result<()> {
        self.batches.push(batch);
        Ok(())
    }
}

/// A fetch inside a transaction and a read-only call (both on a session
/// of their own) build Arrow from the cursor as FetchAll does, on
/// PostgreSQL, MySQL/MariaDB and DuckDB, when the consumer takes Arrow: the
/// values the same statement gives as rows.
#[tokio::test]
async fn sessions_build_arrow_from_the_cursor() {
    use iadb_server::backend::{
        PoolSettings, ReadOnlyCall, backend_for,
        session::{RowSink, TxOptions},
    };
    let wanted = iadb::arrow::ArrowWanted {
        batch_rows: 100,
        batch_bytes: 1 << 20,
    };
    const ROWS: usize = 450;
    for engine in [Engine::Postgres, Engine::Mysql, Engine::Duckdb] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match engine.start(&dir) {
            Ok((url, _)) => url,
            Err(why) => {
                iadb_tests::harness::skip(engine.name(), &why);
                continue;
            }
        };
        let config = iadb::ConnectionConfig::from_url(&url).expect("URL");
        let backend = backend_for(&config, PoolSettings::default()).expect("adapter");
        backend.connect().await.expect("connect");
        let sql = match engine {
            Engine::Postgres => {
                format!("SELECT i::bigint AS n, 'v' || i AS s FROM generate_series(1, {ROWS}) i")
            }
            Engine::Mysql => format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS}) \
                 SELECT i AS n, CONCAT('v', i) AS s FROM c"
            ),
            _ => format!("SELECT i AS n, 'v' || i AS s FROM range(1, {ROWS} + 1) r(i)"),
        };
        let expected: Vec<Vec<Value>> = (1..=ROWS as i64)
            .map(|i| vec![Value::Int(i), Value::Text(format!("v{i}"))])
            .collect();
        let fetch = async |sink: &mut SessionSink| {
            let mut session = backend.session().await.expect("session");
            session.begin(TxOptions::default()).await.expect("begin");
            session.query(&sql, &[], sink).await.expect("fetch");
            session.commit().await.expect("commit");
        };
        // Inside a transaction: as rows, then as Arrow.
        let mut rows = SessionSink::default();
        fetch(&mut rows).await;
        assert_eq!(rows.rows, expected, "{}", engine.name());
        assert!(rows.batches.is_empty());
        let mut arrow = SessionSink {
            wanted: Some(wanted),
            ..SessionSink::default()
        };
        fetch(&mut arrow).await;
        assert!(
            arrow.rows.is_empty(),
            "{}: rows where Arrow was asked for",
            engine.name()
        );
        assert_eq!(arrow.batches.len(), ROWS.div_ceil(100), "{}", engine.name());
        assert_eq!(arrow_rows(&arrow.batches), expected, "{}", engine.name());
        // A read-only call.
        let mut read = SessionSink {
            wanted: Some(wanted),
            ..SessionSink::default()
        };
        backend
            .read_only_call(ReadOnlyCall::Query {
                sql: &sql,
                params: &[],
                sink: &mut read as &mut dyn RowSink,
            })
            .await
            .expect("read-only fetch");
        assert!(read.rows.is_empty(), "{}", engine.name());
        assert_eq!(arrow_rows(&read.batches), expected, "{}", engine.name());
    }
}

/// The columns and every event of `sql` through the target's
/// `query_arrow`.
async fn arrow_events(
    target: &iadb_tests::Target,
    sql: &str,
    wanted: iadb::arrow::ArrowWanted,
) -> (std::sync::Arc<[iadb::Column]>, Vec<iadb::QueryEvent>) {
    let iadb::QueryStream { columns, events } = target
        .db
        .query_arrow(sql, &[], wanted)
        .await
        .expect("query_arrow");
    let events = events.map(|e| e.expect("an event")).collect().await;
    (columns, events)
}

/// The record batches among `events`; rows among them fail the test
/// (`what` says which result).
fn only_batches(events: Vec<iadb::QueryEvent>, what: &str) -> Vec<RecordBatch> {
    use iadb::QueryEvent;
    events
        .into_iter()
        .filter_map(|e| match e {
            QueryEvent::Arrow(batch) => Some(batch),
            QueryEvent::Rows(_) | QueryEvent::Row(_) => {
                panic!("{what}: rows where Arrow was asked for")
            }
            QueryEvent::Done(_) => None,
        })
        .collect()
}

/// The schema the server's conversion of rows gives a result of `engine`
/// with `columns` whose first row is `first`.
fn converted_schema(
    engine: Engine,
    columns: &std::sync::Arc<[iadb::Column]>,
    first: &[Value],
) -> iadb::arrow::SchemaRef {
    let mut converted = iadb::arrow::ArrowEncoder::new(engine.0, columns.clone());
    let mut batch = iadb::RowBatch::new();
    batch.push(first);
    converted.batch(&batch).expect("conversion");
    converted.schema().expect("schema")
}

/// Rows as their Arrow arrays read back (decimals and JSON as text).
fn as_arrow_reads_them(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|row| row.into_iter().map(as_arrow_reads_it).collect())
        .collect()
}

/// Every row of `sql` through the target's row path.
async fn rows_of_events(target: &iadb_tests::Target, sql: &str) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    let mut events = target.db.query(sql, &[]).await.expect("query").events;
    while let Some(event) = events.next().await {
        match event.expect("an event") {
            iadb::QueryEvent::Row(values) => rows.push(values),
            iadb::QueryEvent::Rows(batch) => rows.extend(batch.to_rows().expect("rows")),
            iadb::QueryEvent::Arrow(_) => panic!("Arrow from query"),
            iadb::QueryEvent::Done(_) => {}
        }
    }
    rows
}

/// Runs `sql` on `db` (a statement the test needs to succeed).
async fn run(db: &dyn DatabaseInterface, sql: &str) {
    if let Err(e) = db.execute(sql, &[]).await {
        panic!("{sql}: {e}");
    }
}

/// PostgreSQL's adapter alone, on a pool of one connection (so that
/// every call reuses the connection the last one left), and its URL.
async fn postgres_on_one_connection(what: &str) -> Option<std::sync::Arc<dyn DatabaseInterface>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match Engine::Postgres.url(&dir) {
        Ok(url) => url,
        Err(why) => {
            iadb_tests::harness::skip(what, &why);
            return None;
        }
    };
    let config = iadb::ConnectionConfig::from_url(&url).expect("URL");
    let settings = iadb_server::backend::PoolSettings {
        max_connections: 1,
        ..Default::default()
    };
    let db = iadb_server::backend::backend_for(&config, settings).expect("adapter");
    db.connect().await.expect("connect");
    Some(db)
}

/// The record batches of `sql` through `query_arrow`, until its end or
/// its first error (the batches before it, and the error).
async fn arrow_batches(
    db: &dyn DatabaseInterface,
    sql: &str,
    params: &[Value],
    wanted: iadb::arrow::ArrowWanted,
) -> (Vec<RecordBatch>, Option<iadb::Error>) {
    let mut events = match db.query_arrow(sql, params, wanted).await {
        Ok(stream) => stream.events,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut batches = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(iadb::QueryEvent::Arrow(batch)) => batches.push(batch),
            Ok(iadb::QueryEvent::Done(_)) => {}
            Ok(_) => panic!("{sql}: rows where Arrow was asked for"),
            Err(e) => return (batches, Some(e)),
        }
    }
    (batches, None)
}

/// Whether `db` reads an Arrow fetch (without parameters, or with
/// `params`) through PostgreSQL's COPY: PostgreSQL's `current_query()` is
/// then the COPY that holds it (the word spelt in two halves here, since
/// the word itself would keep the statement off COPY).
async fn arrow_comes_through_copy(db: &dyn DatabaseInterface, params: &[Value]) -> bool {
    let sql = match params {
        [] => "SELECT starts_with(current_query(), 'CO' || 'PY (') AS copied",
        _ => "SELECT starts_with(current_query(), 'CO' || 'PY (') AS copied WHERE ? = 1",
    };
    let (batches, error) = arrow_batches(db, sql, params, thousand_rows()).await;
    assert!(error.is_none(), "{error:?}");
    let column = batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool")
        .value(0)
}

/// Batches of at most 1,000 rows and 1 MiB.
fn thousand_rows() -> iadb::arrow::ArrowWanted {
    iadb::arrow::ArrowWanted {
        batch_rows: 1000,
        batch_bytes: 1 << 20,
    }
}

/// A pooled PostgreSQL Arrow fetch without parameters is read through
/// binary COPY (docs/arrow.md): the same record batches — schema with its
/// metadata, values, NULLs, NaN and infinities, batch bounds — as the same
/// query read the usual way (given a parameter, which keeps it off COPY),
/// over every type the COPY path reads.
#[tokio::test]
async fn postgres_arrow_through_copy_gives_the_usual_batches() {
    let what = "PostgreSQL Arrow through COPY";
    let Some(db) = postgres_on_one_connection(what).await else {
        return;
    };
    let db = db.as_ref();
    assert!(arrow_comes_through_copy(db, &[]).await, "COPY's path");
    assert!(
        !arrow_comes_through_copy(db, &[Value::Int(1)]).await,
        "the usual path"
    );
    let t = unique_table("copy");
    run(
        db,
        &format!(
            "CREATE TABLE {t} (n bigint, i int4, s int2, f float8, r float4, b bool, \
             tx text, vc varchar(10), bp char(3), nm name, by bytea, u uuid, j json, jb jsonb, \
             d date, tm time, ts timestamp, tz timestamptz)"
        ),
    )
    .await;
    let null_every =
        |k: u32, expr: &str| format!("CASE WHEN g % {k} = 0 THEN NULL ELSE {expr} END");
    let insert = format!(
        "INSERT INTO {t} SELECT g, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {} \
         FROM generate_series(1, 3000) g",
        null_every(5, "-g * 1000"),
        null_every(6, "(g % 30000)::int2"),
        null_every(
            7,
            "CASE g % 11 WHEN 1 THEN 'NaN'::float8 WHEN 2 THEN '-Infinity'::float8 ELSE g / 3.0 END"
        ),
        null_every(8, "(g / 7.0)::float4"),
        null_every(9, "g % 2 = 0"),
        null_every(10, "'€ ' || g || repeat('x', g % 40)"),
        null_every(11, "left('v' || g, 10)"),
        null_every(12, "'ab'"),
        null_every(13, "('n' || g)::name"),
        null_every(14, "decode(lpad(to_hex(g), 8, '0'), 'hex')"),
        null_every(15, "md5(g::text)::uuid"),
        null_every(16, "(' {\"a\": [' || g || ', 2]} ')::json"),
        null_every(17, "('{\"b\": ' || g || ', \"c\": null}')::jsonb"),
        null_every(18, "date '0001-01-01' + g * 200"),
        null_every(
            19,
            "time '00:00' + g * interval '28.8 seconds' + interval '0.000001 second'"
        ),
        null_every(
            20,
            "timestamp '1900-01-01 00:00:00.5' + g * interval '37 days 1 hour'"
        ),
        null_every(
            21,
            "timestamptz '1999-12-31 23:59:59.999999+00' + g * interval '1 minute'"
        ),
    );
    run(db, &insert).await;
    for wanted in [
        thousand_rows(),
        // Batches cut by their size before their row count.
        iadb::arrow::ArrowWanted {
            batch_rows: 4096,
            batch_bytes: 20_000,
        },
    ] {
        let (copied, error) =
            arrow_batches(db, &format!("SELECT * FROM {t} ORDER BY n"), &[], wanted).await;
        assert!(error.is_none(), "{error:?}");
        let (usual, error) = arrow_batches(
            db,
            &format!("SELECT * FROM {t} WHERE n > ? ORDER BY n"),
            &[Value::Int(0)],
            wanted,
        )
        .await;
        assert!(error.is_none(), "{error:?}");
        assert!(copied.len() > 1, "several batches");
        assert_eq!(
            copied.iter().map(RecordBatch::num_rows).sum::<usize>(),
            3000
        );
        assert_eq!(copied, usual);
    }
    run(db, &format!("DROP TABLE {t}")).await;
}

/// The COPY path reads the statement's columns from a describe made
/// inside its transaction, never from the statement cache alone: a column
/// whose type another connection changed after the statement was cached
/// comes in its new type, with its new values (read as the old type, the
/// bytes of a double would be taken for an integer's).
#[tokio::test]
async fn postgres_arrow_through_copy_follows_a_changed_column() {
    let what = "PostgreSQL Arrow through COPY after ALTER";
    let Some(db) = postgres_on_one_connection(what).await else {
        return;
    };
    let Some(other) = iadb_tests::Target::direct(Engine::Postgres).await else {
        return;
    };
    let db = db.as_ref();
    let t = unique_table("copy_alter");
    run(db, &format!("CREATE TABLE {t} (n bigint)")).await;
    run(db, &format!("INSERT INTO {t} VALUES (1), (2), (3)")).await;
    let sql = format!("SELECT n FROM {t} ORDER BY n");
    let wanted = thousand_rows();
    let (before, error) = arrow_batches(db, &sql, &[], wanted).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(before[0].schema().field(0).data_type(), &DataType::Int64);
    run(
        other.db.as_ref(),
        &format!("ALTER TABLE {t} ALTER COLUMN n TYPE float8 USING n + 0.5"),
    )
    .await;
    // Twice: once after the cache was found stale, once from the cache
    // made again.
    for _ in 0..2 {
        let (after, error) = arrow_batches(db, &sql, &[], wanted).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(after[0].schema().field(0).data_type(), &DataType::Float64);
        assert_eq!(
            arrow_rows(&after),
            vec![
                vec![Value::Float(1.5)],
                vec![Value::Float(2.5)],
                vec![Value::Float(3.5)]
            ]
        );
    }
    run(db, &format!("DROP TABLE {t}")).await;
}

/// Errors on the COPY path: one mid-stream (division by zero at row
/// 3,000) ends the whole batches before it with the usual path's error; one
/// before the first row (a table its owner may not read) is the usual
/// path's PERMISSION_DENIED; a stream dropped mid-way; a statement that
/// tries to end the COPY early runs the usual way and does nothing else.
/// After each, the pool's one connection serves the next call: a
/// connection whose COPY failed is closed, not reused half-read.
#[tokio::test]
async fn postgres_arrow_through_copy_fails_cleanly_and_the_pool_goes_on() {
    let what = "PostgreSQL Arrow through COPY, errors";
    let Some(db) = postgres_on_one_connection(what).await else {
        return;
    };
    let db = db.as_ref();
    let wanted = thousand_rows();
    async fn still_serves(db: &dyn DatabaseInterface) {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            db.fetch_one("SELECT 41 + 1 AS n", &[]),
        )
        .await
        .expect("answers in time")
        .expect("a row");
        assert_eq!(
            answer.and_then(|r| r.get("n").cloned()),
            Some(Value::Int(42))
        );
    }

    let divide = "SELECT CASE WHEN i = 3000 THEN 1 / (i - i) ELSE i END AS n \
                  FROM generate_series(1, 5000) i";
    let (batches, error) = arrow_batches(db, divide, &[], wanted).await;
    let error = error.expect("division by zero");
    let (_, usual) = arrow_batches(
        db,
        &format!("{divide} WHERE ? = 1"),
        &[Value::Int(1)],
        wanted,
    )
    .await;
    assert_eq!(Some(error.kind()), usual.map(|e| e.kind()));
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 2999, "the rows before the error");
    still_serves(db).await;

    let t = unique_table("copy_denied");
    run(db, &format!("CREATE TABLE {t} (n int8)")).await;
    run(db, &format!("REVOKE SELECT ON {t} FROM CURRENT_USER")).await;
    let (batches, error) = arrow_batches(db, &format!("SELECT n FROM {t}"), &[], wanted).await;
    assert!(batches.is_empty());
    assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::PermissionDenied));
    still_serves(db).await;

    let mut events = db
        .query_arrow(
            "SELECT i AS n FROM generate_series(1, 1000000) i",
            &[],
            wanted,
        )
        .await
        .expect("a stream")
        .events;
    assert!(matches!(
        events.next().await,
        Some(Ok(iadb::QueryEvent::Arrow(_)))
    ));
    drop(events);
    still_serves(db).await;

    let (_, error) = arrow_batches(
        db,
        &format!("SELECT 1 AS a) TO STDOUT (FORMAT binary); DROP TABLE {t}; COPY (SELECT 1"),
        &[],
        wanted,
    )
    .await;
    assert!(error.is_some(), "a syntax error");
    assert!(
        db.table_exists(&t).await.expect("lookup"),
        "nothing else ran"
    );
    still_serves(db).await;
    run(db, &format!("DROP TABLE {t}")).await;
}
