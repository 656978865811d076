//! Issue 10's integrity rules on pooled calls, through the server, on every
//! engine: transaction control is refused (a pooled connection never goes
//! back to the pool inside a transaction), a call with parameters runs
//! exactly one statement, SQL without a statement is INVALID_ARGUMENT, and
//! the database keeps serving after each refusal.

use iadb::{ErrorKind, Value};
use iadb_tests::{Engine, Target};

const ENGINES: [Engine; 5] = [
    Engine::Sqlite,
    Engine::Postgres,
    Engine::Mysql,
    Engine::Duckdb,
    Engine::D1,
];

/// A table with one row, `(1)`, unique to this run.
async fn table_with_one_row(t: &Target) -> String {
    let table = t.table("integrity");
    t.db.execute(&format!("CREATE TABLE {table} (n INTEGER)"), &[])
        .await
        .expect("create table");
    t.db.execute(&format!("INSERT INTO {table} (n) VALUES (1)"), &[])
        .await
        .expect("insert");
    table
}

async fn count(t: &Target, table: &str) -> i64 {
    let row =
        t.db.fetch_one(&format!("SELECT COUNT(*) AS c FROM {table}"), &[])
            .await
            .expect("count")
            .expect("a row");
    match row.get("c") {
        Some(Value::Int(n)) => *n,
        Some(Value::Decimal(d)) => d.parse().expect("count is a number"),
        other => panic!("count is {other:?}"),
    }
}

/// Case 3: `BEGIN` (and every other transaction-control statement) through
/// Execute, FetchAll or FetchOne is FAILED_PRECONDITION naming the
/// statement and the transaction API; writes made afterwards by other
/// calls are committed and read back the same every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_is_refused_on_pooled_calls() {
    for engine in ENGINES {
        let Some(t) = Target::remote(engine).await else {
            continue;
        };
        let table = table_with_one_row(&t).await;
        let statements: &[&str] = match engine {
            Engine::Mysql => &[
                "BEGIN",
                "START TRANSACTION",
                "SET autocommit = 0",
                "/*!40101 START TRANSACTION */",
                "XA START 'x'",
            ],
            Engine::Postgres => &["BEGIN", "START TRANSACTION", "ABORT", "SAVEPOINT a"],
            _ => &["BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT a", "END", "COMMIT"],
        };
        for sql in statements.iter().copied().chain([
            "begin",
            "  -- open one\n BEGIN TRANSACTION",
            "ROLLBACK",
        ]) {
            if engine != Engine::Sqlite && sql == "BEGIN IMMEDIATE" {
                continue;
            }
            let refused = t.db.execute(sql, &[]).await.expect_err(sql);
            assert_eq!(
                refused.kind(),
                ErrorKind::FailedPrecondition,
                "{engine:?} {sql}: {refused:?}"
            );
            assert!(
                refused.message().contains("Transaction RPC")
                    && refused.message().contains("pooled call"),
                "{engine:?}: {}",
                refused.message()
            );
        }
        // A script that would leave a transaction open, and the same
        // through the read calls.
        let script = format!("INSERT INTO {table} (n) VALUES (2); BEGIN");
        let refused = t.db.execute(&script, &[]).await.expect_err("script");
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{engine:?}");
        let refused = t.db.fetch_all("BEGIN", &[]).await.expect_err("fetch_all");
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{engine:?}");
        let refused = t.db.fetch_one("COMMIT", &[]).await.expect_err("fetch_one");
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition, "{engine:?}");
        // Nothing of the refused script ran, and later writes from any
        // pooled connection are committed: every read agrees.
        assert_eq!(count(&t, &table).await, 1, "{engine:?}");
        for n in 0..5 {
            t.db.execute(
                &format!("INSERT INTO {table} (n) VALUES (?)"),
                &[Value::Int(n)],
            )
            .await
            .expect("insert after refusals");
        }
        for _ in 0..6 {
            assert_eq!(count(&t, &table).await, 6, "{engine:?}");
        }
        // Words that only look like transaction control run as usual.
        let row =
            t.db.fetch_one("SELECT 'BEGIN' AS begin_at", &[])
                .await
                .expect("a literal BEGIN is just text")
                .expect("a row");
        assert_eq!(row.get("begin_at"), Some(&Value::Text("BEGIN".into())));
    }
}

/// Case 4: with parameters a call runs exactly one statement, so
/// `SELECT ?; DROP TABLE t` is INVALID_ARGUMENT and the table stays; a
/// script without parameters still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_allow_exactly_one_statement() {
    for engine in ENGINES {
        let Some(t) = Target::remote(engine).await else {
            continue;
        };
        let table = table_with_one_row(&t).await;
        let stacked = format!("SELECT ?; DROP TABLE {table}");
        for result in [
            t.db.execute(&stacked, &[Value::Int(1)]).await.map(|_| ()),
            t.db.fetch_all(&stacked, &[Value::Int(1)]).await.map(|_| ()),
            t.db.fetch_one(&stacked, &[Value::Int(1)]).await.map(|_| ()),
            t.db.execute_many(
                &format!("INSERT INTO {table} (n) VALUES (?); DROP TABLE {table}"),
                &[vec![Value::Int(5)]],
            )
            .await
            .map(|_| ()),
        ] {
            let refused = result.expect_err("stacked statements with parameters");
            assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{engine:?}");
            assert!(
                refused.message().contains("exactly one statement"),
                "{engine:?}: {}",
                refused.message()
            );
        }
        assert!(
            t.db.table_exists(&table).await.expect("lookup"),
            "{engine:?}"
        );
        assert_eq!(count(&t, &table).await, 1, "{engine:?}");
        // A script without parameters runs every statement.
        if engine != Engine::D1 {
            t.db.execute(
                &format!("INSERT INTO {table} (n) VALUES (8); INSERT INTO {table} (n) VALUES (9)"),
                &[],
            )
            .await
            .expect("a script without parameters");
            assert_eq!(count(&t, &table).await, 3, "{engine:?}");
        }
    }
}

/// Case 10: SQL that holds no statement (empty, only `;`, only comments) is
/// INVALID_ARGUMENT on every engine, on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_without_a_statement_is_invalid_argument() {
    for engine in ENGINES {
        let Some(t) = Target::remote(engine).await else {
            continue;
        };
        for sql in [
            "",
            "   ",
            ";",
            " ;; ",
            "-- only a comment",
            "/* c */ ; /* d */",
        ] {
            for result in [
                t.db.execute(sql, &[]).await.map(|_| ()),
                t.db.fetch_all(sql, &[]).await.map(|_| ()),
                t.db.fetch_one(sql, &[]).await.map(|_| ()),
            ] {
                let refused = result.expect_err("no statement");
                assert_eq!(
                    refused.kind(),
                    ErrorKind::InvalidArgument,
                    "{engine:?} {sql:?}: {refused:?}"
                );
            }
        }
        let row =
            t.db.fetch_one("SELECT 1 AS one", &[])
                .await
                .expect("still serving")
                .expect("a row");
        assert_eq!(row.get("one"), Some(&Value::Int(1)), "{engine:?}");
    }
}

/// Case 5: clients that open a FetchAll and never read give their pooled
/// connections back after `--stream-stall-timeout-secs`, and each of them
/// then reads the rows that were sent and a RESOURCE_EXHAUSTED status, never
/// a short success. Meanwhile a call past the admission limits is
/// RESOURCE_EXHAUSTED at once instead of UNAVAILABLE after the pool's 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_are_never_read_are_ended_and_free_their_connections() {
    use futures::StreamExt;
    use iadb::DatabaseInterface;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("stall.db").display());
    let server = iadb_tests::TestServer::start(&[
        "--database-url",
        &url,
        "--pool-max",
        "2",
        "--max-queued-calls",
        "0",
        "--stream-stall-timeout-secs",
        "2",
    ]);
    // About 20 MB of rows: far more than HTTP/2's flow-control windows and
    // the server's channel hold, so a client that reads nothing stalls it.
    let big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
               SELECT x, printf('%0100d', x) AS pad FROM c";
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let client = server.client("").await;
        let stream = client.fetch_stream(big, &[]).await.expect("stream opens");
        stalled.push((client, stream));
    }
    // Both connections and both turns are taken: the next call is refused
    // at once.
    let other = server.client("").await;
    let started = Instant::now();
    let refused = other
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect_err("no turn is free");
    assert_eq!(refused.kind(), ErrorKind::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("busy"), "{}", refused.message());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}",
        started.elapsed()
    );
    // Within the stall timeout (2 s) and a margin, the turns come back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match other.fetch_one("SELECT 1 AS one", &[]).await {
            Ok(row) => {
                let row = row.expect("a row");
                assert_eq!(row.get("one"), Some(&Value::Int(1)));
                break;
            }
            Err(e) if e.kind() == ErrorKind::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the stalled streams kept their connections: {e:?}"),
        }
    }
    // Both stalled streams must have been ended by the server before their
    // clients read anything: a stalled stream gives its connection back
    // only when the stall ends it. Reading a stream whose stall timer has not
    // fired yet would unblock it, and it would then arrive whole (that race,
    // not a hidden buffer, made this test flaky on a loaded machine).
    let started = Instant::now();
    loop {
        let health = other.health(false).await.expect("health");
        let pool = health.first().expect("a report");
        if pool.pool_size == pool.pool_idle {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {} connections still held 30 s after the stall timeout:\n{}",
            pool.pool_size - pool.pool_idle,
            pool.pool_size,
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stalled clients get what was sent, then the stall's error: never
    // a short result that looks complete.
    for (_client, stream) in stalled {
        let mut rows = stream.rows;
        let mut read = 0u64;
        let ending = loop {
            match rows.next().await {
                Some(Ok(_)) => read += 1,
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        println!("a stalled client read {read} rows before its stream ended");
        let error = ending.expect("a stalled stream ends with the stall's error");
        assert_eq!(error.kind(), ErrorKind::ResourceExhausted, "{error:?}");
        assert!(
            error.message().contains("--stream-stall-timeout-secs"),
            "{}",
            error.message()
        );
        assert!(read < 200_000, "all {read} rows arrived before the error");
    }
}

/// A message that is not a valid `ExecuteRequest`: field 1 (`database`, a
/// string) sent as a varint, or field 2 (`sql`) as bytes that are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(int64, optional, tag = "1")]
    database: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "2")]
    sql: Option<Vec<u8>>,
}

/// Case 10: a message that does not decode is INVALID_ARGUMENT (it was
/// INTERNAL), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument() {
    use iadb::{DatabaseInterface, proto};
    let server = iadb_tests::TestServer::start(&["--database-url", "sqlite:///:memory:"]);
    for message in [
        Malformed {
            database: Some(7),
            sql: None,
        },
        Malformed {
            database: None,
            sql: Some(vec![b'S', 0xff, 0xfe]),
        },
    ] {
        let mut grpc = tonic::client::Grpc::new(server.channel().await);
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary(
                tonic::Request::new(message),
                tonic::codegen::http::uri::PathAndQuery::from_static("/iadb.v1.Database/Execute"),
                tonic_prost::ProstCodec::<Malformed, proto::ExecuteResponse>::default(),
            )
            .await
            .expect_err("malformed");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("malformed"),
            "{}",
            status.message()
        );
    }
    let row = server
        .client("")
        .await
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect("still serving")
        .expect("a row");
    assert_eq!(row.get("one"), Some(&Value::Int(1)));
}

/// The second line of defence: a pooled SQLite connection that is inside a
/// transaction when it is handed out again (a statement slipped past the
/// server's checks; here the adapter is used directly, which has none) is
/// rolled back first and counted, so the next caller's write commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_connection_left_in_a_transaction_is_rolled_back_before_reuse() {
    use iadb_server::backend::{PoolSettings, backend_for};
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("left-open.db");
    let config =
        iadb::ConnectionConfig::from_url(&format!("sqlite:///{}", path.display())).expect("url");
    let db = backend_for(
        &config,
        PoolSettings {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .expect("adapter");
    db.connect().await.expect("connect");
    db.execute("CREATE TABLE t (n INTEGER)", &[])
        .await
        .expect("create");
    db.execute("BEGIN", &[])
        .await
        .expect("the adapter itself runs BEGIN");
    db.execute("INSERT INTO t (n) VALUES (?)", &[Value::Int(1)])
        .await
        .expect("insert on the same (only) connection");
    assert_eq!(db.pool_status().expect("pool").rolled_back, 1);
    // Another connection sees the row: it was committed, not held in a
    // transaction that would be lost when the connection closes.
    let other = rusqlite::Connection::open(&path).expect("open");
    let n: i64 = other
        .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
        .expect("count");
    assert_eq!(n, 1);
    // A connection in autocommit mode is not counted.
    db.execute("INSERT INTO t (n) VALUES (2)", &[])
        .await
        .expect("insert");
    assert_eq!(db.pool_status().expect("pool").rolled_back, 1);
}

/// The second line of defence on PostgreSQL and MySQL/MariaDB: a pooled
/// connection that goes back to the pool inside a transaction (a statement
/// slipped past the server's checks; here the adapter is used directly,
/// which has none) is closed (PostgreSQL) or rolled back (MariaDB) before
/// anyone else gets it, and counted; the next caller's write commits and
/// another connection sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_left_in_a_transaction_is_cleaned_before_reuse() {
    use iadb_server::backend::{PoolSettings, backend_for};
    use std::time::Duration;

    for engine in [Engine::Postgres, Engine::Mysql] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match engine.url(&dir) {
            Ok(url) => url,
            Err(why) => {
                iadb_tests::harness::skip(
                    &format!("left-open transaction on {}", engine.name()),
                    &why,
                );
                continue;
            }
        };
        let config = iadb::ConnectionConfig::from_url(&url).expect("url");
        let db = backend_for(
            &config,
            PoolSettings {
                max_connections: 1,
                acquire_timeout: Duration::from_secs(5),
            },
        )
        .expect("adapter");
        db.connect().await.expect("connect");
        let table = format!("left_open_{}", std::process::id());
        db.execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
            .await
            .expect("drop");
        db.execute(&format!("CREATE TABLE {table} (n INTEGER)"), &[])
            .await
            .expect("create");
        db.execute("BEGIN", &[])
            .await
            .expect("the adapter itself runs BEGIN");
        db.execute(&format!("INSERT INTO {table} (n) VALUES (1)"), &[])
            .await
            .expect("insert on the (only) connection");
        assert_eq!(
            db.pool_status().expect("pool").rolled_back,
            1,
            "{engine:?}: the connection came back inside the transaction once"
        );
        // Another adapter (its own connection) sees the row: it was
        // committed, not held in a transaction that would be lost.
        let other = backend_for(&config, PoolSettings::default()).expect("adapter");
        other.connect().await.expect("connect");
        let row = other
            .fetch_one(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
            .await
            .expect("count")
            .expect("a row");
        assert_eq!(row.get("n"), Some(&Value::Int(1)), "{engine:?}");
        // A connection in autocommit mode is not counted.
        db.execute(&format!("INSERT INTO {table} (n) VALUES (2)"), &[])
            .await
            .expect("insert");
        db.fetch_all(&format!("SELECT n FROM {table}"), &[])
            .await
            .expect("read");
        assert_eq!(db.pool_status().expect("pool").rolled_back, 1, "{engine:?}");
        other
            .execute(&format!("DROP TABLE {table}"), &[])
            .await
            .expect("drop");
    }
}

/// Case 6: SIGTERM stops the server within its grace period even while work
/// is running: here a stream that its client never reads (it would hold the
/// server until the stall timeout, 30 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_within_its_grace_period() {
    use iadb::DatabaseInterface;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("grace.db").display());
    let mut server =
        iadb_tests::TestServer::start(&["--database-url", &url, "--shutdown-grace-secs", "1"]);
    let client = server.client("").await;
    let big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
               SELECT x, printf('%0100d', x) AS pad FROM c";
    let _unread = client.fetch_stream(big, &[]).await.expect("stream opens");
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(20))
        .expect("the server exits within its grace period, not after the stall timeout");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server.log_text().contains("grace period"),
        "{}",
        server.log_text()
    );
}
