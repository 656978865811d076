//! The server as a user meets it: a real process on a loopback port, bad
//! input, streaming memory, cancelled streams, health, shutdown.

use futures::StreamExt;
use iadb::{DatabaseInterface, ErrorKind, Value};
use iadb_client::{RemoteDatabase, RetryPolicy};
use iadb_tests::TestServer;
use std::time::{Duration, Instant};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn sqlite_server() -> TestServer {
    TestServer::start(&[
        "--database-url",
        "sqlite:///./main.db",
        "--database",
        "mem=sqlite:///:memory:",
    ])
}

async fn assert_healthy(db: &RemoteDatabase) {
    let report = db.health(true).await.expect("health answers");
    assert!(report.iter().all(|h| h.healthy), "{report:?}");
}

#[tokio::test]
async fn unknown_database_is_invalid_argument() {
    let server = sqlite_server();
    let db = server.client("nope").await;
    let err = db.fetch_all("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.message().contains("unknown database `nope`"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("default") && err.message().contains("mem"));
    let err = db.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_healthy(&server.client("").await).await;
    // The named in-memory database is served, and keeps its data across calls.
    let mem = server.client("mem").await;
    mem.execute("CREATE TABLE kept (x BIGINT)", &[])
        .await
        .unwrap();
    mem.execute("INSERT INTO kept VALUES (?)", &[Value::Int(7)])
        .await
        .unwrap();
    let row = mem
        .fetch_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get("x"), Some(&Value::Int(7)));
}

#[tokio::test]
async fn oversized_sql_is_resource_exhausted() {
    let server = sqlite_server();
    let db = server.client("").await;
    let sql = format!("SELECT '{}'", "x".repeat(10 * 1024 * 1024));
    for err in [
        db.fetch_all(&sql, &[]).await.unwrap_err(),
        db.execute(&sql, &[]).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert!(
            err.message().contains("over the limit"),
            "{}",
            err.message()
        );
    }
    assert_healthy(&db).await;
}

#[tokio::test]
async fn bad_value_parameter_is_invalid_argument() {
    let server = sqlite_server();
    let mut client = iadb::proto::database_client::DatabaseClient::connect(server.endpoint.clone())
        .await
        .unwrap();
    let err = client
        .fetch_one(iadb::proto::FetchOneRequest {
            database: String::new(),
            sql: "SELECT ?".into(),
            params: vec![iadb::proto::Value {
                kind: Some(iadb::proto::value::Kind::Date("2024-02-30".into())),
            }],
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("parameter 1: bad date"),
        "{}",
        err.message()
    );
    let err = client
        .execute(iadb::proto::ExecuteRequest {
            database: String::new(),
            sql: "SELEC nonsense".into(),
            params: vec![],
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("syntax error"), "{}", err.message());
    assert_healthy(&server.client("").await).await;
}

/// The engine's error code reaches the caller (`iadb-sqlstate` metadata)
/// from every RPC, also when the error is wrapped with the parameter set it
/// happened in, or ends a stream before its first row.
#[tokio::test]
async fn engine_error_codes_reach_the_caller_from_every_rpc() {
    let server = sqlite_server();
    let db = server.client("").await;
    db.execute("CREATE TABLE u (k INTEGER UNIQUE)", &[])
        .await
        .expect("create");
    let err = db
        .execute_many(
            "INSERT INTO u (k) VALUES (?)",
            &[vec![Value::Int(1)], vec![Value::Int(1)]],
        )
        .await
        .expect_err("duplicate key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(
        err.message().starts_with("parameter set 1: "),
        "{}",
        err.message()
    );
    // SQLITE_CONSTRAINT_UNIQUE
    assert_eq!(err.code(), Some("2067"), "{}", err.message());
    let err = db
        .execute("INSERT INTO u (k) VALUES (1), (1)", &[])
        .await
        .expect_err("duplicate key");
    assert_eq!(err.code(), Some("2067"));
    let err = db
        .fetch_all("SELEC nonsense", &[])
        .await
        .expect_err("syntax error");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // SQLITE_ERROR
    assert_eq!(err.code(), Some("1"), "{}", err.message());
    let rows = db
        .fetch_all("SELECT COUNT(*) AS n FROM u", &[])
        .await
        .expect("count");
    assert_eq!(
        rows[0].get("n"),
        Some(&Value::Int(0)),
        "the failed batch left nothing"
    );
}

#[test]
fn malformed_url_at_startup_exits_with_a_clear_message() {
    let cases = [
        (
            "postgresql://user:hunter2@host:notaport/db",
            "malformed postgresql URL",
        ),
        ("oracle://x/y", "unknown database URL scheme `oracle`"),
        ("sqlite://", "no file path"),
        ("no scheme at all", "no scheme"),
    ];
    for (url, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(iadb_tests::harness::server_binary())
            .args(["--listen", "127.0.0.1:0", "--database-url", url])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

#[tokio::test]
async fn unreachable_database_at_startup_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(iadb_tests::harness::server_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "sqlite:////proc/iadb-cannot-create/x.db",
            "--require-all-databases",
        ])
        .current_dir(dir.path())
        .env("IADB_POOL_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database `default`"), "{stderr}");
    assert!(stderr.contains("/proc/iadb-cannot-create"), "{stderr}");
}

#[test]
fn unreachable_engine_at_startup_fails_without_leaking_credentials() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let out = std::process::Command::new(iadb_tests::harness::server_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgresql://u:hunter2@127.0.0.1:9/db",
            "--require-all-databases",
        ])
        .current_dir(dir.path())
        .env("IADB_POOL_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("database `default` (postgresql)"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[tokio::test]
async fn standard_health_service_per_database() {
    let server = sqlite_server();
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel);
    // Every configured database has its status from the first call on.
    for service in ["", "default", "mem", "iadb.v1.Database"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status());
        assert_eq!(
            status.as_ref().ok(),
            Some(&ServingStatus::Serving),
            "{service:?} right after start: {status:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for service in ["", "default", "mem", "iadb.v1.Database"] {
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status());
            if status.as_ref().ok() == Some(&ServingStatus::Serving) {
                break;
            }
            assert!(Instant::now() < deadline, "{service:?}: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no-such-db".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_rpc_reports_pool_figures() {
    let server = sqlite_server();
    let db = server.client("").await;
    let report = db.health(true).await.unwrap();
    let names: Vec<&str> = report.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["default", "mem"]);
    let main = &report[0];
    assert_eq!(main.engine, "sqlite");
    assert!(main.healthy);
    assert_eq!(main.pool_max, 10);
    assert!(main.pool_idle <= main.pool_size);
    // Figures are read before the health query runs; the first query opened
    // a connection (start-up migrations used a detached one), so now there
    // is one, idle. sqlx gives a connection back to its pool in a task of
    // its own, so the figures settle a moment after the call that used it
    // has answered: read them again until they do, for at most 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let health = db.health(false).await.unwrap().remove(0);
        if (health.pool_size >= 1 && health.pool_idle == health.pool_size)
            || Instant::now() > deadline
        {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        again.pool_size >= 1 && again.pool_idle == again.pool_size,
        "{again:?}"
    );
    assert_eq!(
        report[1].pool_max, 1,
        "an in-memory database is one connection"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_calls_then_exits_zero() {
    let mut server = sqlite_server();
    let db = server.client("").await;
    db.execute("CREATE TABLE t (x BIGINT)", &[]).await.unwrap();
    let stream = db
        .fetch_stream(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) SELECT x FROM c",
            &[],
        )
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        // Shutdown begins while the stream is open...
        server.terminate(Duration::from_secs(30))
    });
    // ...and the stream still delivers every row.
    let rows: Vec<_> = stream.rows.collect().await;
    let error = rows.iter().find_map(|r| r.as_ref().err());
    assert_eq!(
        (rows.len(), error.map(ToString::to_string)),
        (200_000, None),
        "every row, and no error"
    );
    let status = status.await.unwrap().expect("server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn deadline_shorter_than_the_query_is_deadline_exceeded() {
    let server = sqlite_server();
    let db = RemoteDatabase::new(server.endpoint.clone())
        .with_timeout(Duration::from_millis(300))
        .with_retry(RetryPolicy::none());
    db.connect().await.unwrap();
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000000) SELECT x FROM c";
    let started = Instant::now();
    let err = match db.fetch_stream(slow, &[]).await {
        Ok(stream) => {
            let mut rows = stream.rows;
            loop {
                match rows.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e,
                    None => panic!("a 50-billion-row result finished"),
                }
            }
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = db
        .fetch_one(&format!("SELECT count(*) FROM ({slow})"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{}", err.message());
    assert_healthy(&server.client("").await).await;
}

/// A deadline stops a SQLite statement inside one long step (a count over
/// a huge generated series produces no row until it is done): with a pool
/// of one connection (and a 5 s pool timeout), the next call is answered
/// instead of waiting for the runaway count and failing UNAVAILABLE.
#[tokio::test]
async fn deadline_interrupts_one_long_sqlite_step() {
    let server = TestServer::start(&[
        "--database-url",
        "sqlite:///./main.db",
        "--pool-max",
        "1",
        "--pool-timeout-secs",
        "5",
    ]);
    let db = RemoteDatabase::new(server.endpoint.clone())
        .with_timeout(Duration::from_millis(300))
        .with_retry(RetryPolicy::none());
    db.connect().await.unwrap();
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000000) SELECT count(*) FROM c";
    let calm = server.client("").await;
    for rpc in ["FetchOne", "Execute", "ExecuteMany"] {
        let err = match rpc {
            "FetchOne" => db.fetch_one(endless, &[]).await.map(|_| ()),
            "Execute" => db
                .execute(&format!("CREATE TABLE IF NOT EXISTS n AS {endless}"), &[])
                .await
                .map(|_| ()),
            _ => db.execute_many(endless, &[vec![]]).await.map(|_| ()),
        }
        .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::DeadlineExceeded,
            "{rpc}: {}",
            err.message()
        );
        let started = Instant::now();
        let row = calm
            .fetch_one("SELECT 7 AS seven", &[])
            .await
            .unwrap_or_else(|e| panic!("after {rpc}: the one connection is still busy: {e}"))
            .unwrap();
        assert_eq!(row.get("seven"), Some(&Value::Int(7)));
        println!(
            "{rpc}: next call answered {} ms after DEADLINE_EXCEEDED",
            started.elapsed().as_millis()
        );
    }
}

/// Dropping a stream after 10 rows gives its connection back to the pool
/// within a second.
#[tokio::test]
async fn dropped_stream_frees_its_connection() {
    let server = sqlite_server();
    let db = server.client("").await;
    let idle_and_size = || async {
        let h = db.health(false).await.unwrap().remove(0);
        (h.pool_idle, h.pool_size)
    };
    let before = idle_and_size().await;
    let stream = db
        .fetch_stream(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT x, 'payload ' || x FROM c",
            &[],
        )
        .await
        .unwrap();
    let mut rows = stream.rows;
    for _ in 0..10 {
        rows.next().await.unwrap().unwrap();
    }
    let (idle_during, size_during) = idle_and_size().await;
    assert!(
        idle_during < size_during,
        "a connection is busy while streaming"
    );
    drop(rows);
    let dropped = Instant::now();
    loop {
        let (idle, size) = idle_and_size().await;
        if idle == size {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "connection not back after 1 s: idle {idle} of {size} (before: {before:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "connection back in the pool {:?} after the drop",
        dropped.elapsed()
    );
}

/// Streams 2,000,000 rows through a server process and checks its peak
/// resident memory stays bounded; prints the time against sqlx reading the
/// same rows directly from the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_two_million_rows_keeps_server_memory_flat() {
    const ROWS: u64 = 2_000_000;
    const BOUND_MIB: u64 = 96;
    let server = TestServer::start(&["--database-url", "sqlite:///./big.db"]);
    let db = server.client("").await;
    db.execute(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, label TEXT, score REAL)",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        &format!("INSERT INTO big (id, label, score) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS}) SELECT x, 'label-' || x, x * 0.25 FROM c"),
        &[],
    )
    .await
    .unwrap();
    let rss_before = server.proc_status_kib("VmRSS").unwrap();
    let sql = "SELECT id, label, score FROM big ORDER BY id";

    let started = Instant::now();
    let mut rows = db.fetch_stream(sql, &[]).await.unwrap().rows;
    let mut n = 0u64;
    let mut last_id = 0;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        let id = row.get_index(0).and_then(Value::as_i64).unwrap();
        assert_eq!(id, last_id + 1, "rows in order");
        last_id = id;
        n += 1;
    }
    let through_iadb = started.elapsed();
    assert_eq!(n, ROWS);
    let peak_kib = server.proc_status_kib("VmHWM").unwrap();

    // Baseline: sqlx on the same file, in this process.
    let path = server.dir.path().join("big.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let started = Instant::now();
    let mut direct = sqlx::query_as::<_, (i64, String, f64)>(sql).fetch(&pool);
    let mut m = 0u64;
    while let Some(row) = direct.next().await {
        row.unwrap();
        m += 1;
    }
    let through_sqlx = started.elapsed();
    assert_eq!(m, ROWS);

    println!(
        "streamed {ROWS} rows: iadb {:.2}s ({:.0} rows/s), sqlx direct {:.2}s ({:.0} rows/s), iadb/sqlx throughput ratio {:.2}",
        through_iadb.as_secs_f64(),
        ROWS as f64 / through_iadb.as_secs_f64(),
        through_sqlx.as_secs_f64(),
        ROWS as f64 / through_sqlx.as_secs_f64(),
        through_sqlx.as_secs_f64() / through_iadb.as_secs_f64(),
    );
    println!(
        "server RSS before {} MiB, peak while streaming {} MiB (bound {BOUND_MIB} MiB)",
        rss_before / 1024,
        peak_kib / 1024
    );
    assert!(
        peak_kib / 1024 < BOUND_MIB,
        "server peak RSS {} MiB over {BOUND_MIB} MiB",
        peak_kib / 1024
    );
}

/// App migrations given at start-up are applied before serving; more sent
/// through the Migrate RPC by a client; bad files are refused by name.
#[tokio::test]
async fn migrations_at_startup_and_over_the_wire() {
    use iadb::proto::{MigrateAction, MigrateRequest, MigrationFile};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("V1__items.sql"),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\n",
    )
    .unwrap();
    let folder = dir.path().to_str().unwrap();
    let server = TestServer::start(&[
        "--database-url",
        "sqlite:///./app.db",
        "--app-migrations",
        folder,
    ]);
    let db = server.client("").await;
    assert!(
        db.table_exists("items").await.unwrap(),
        "applied before serving"
    );
    assert!(
        db.table_exists("ia_settings").await.unwrap(),
        "system migration applied"
    );

    let request = |action: MigrateAction, files: Vec<MigrationFile>| MigrateRequest {
        database: String::new(),
        action: action as i32,
        target_version: String::new(),
        files,
        allow_missing: false,
        allow_out_of_order: false,
    };
    let sent = vec![MigrationFile {
        filename: "V2__tags.sql".into(),
        content: "CREATE TABLE tags (id INTEGER);".into(),
    }];
    let plan = db
        .migrate(request(MigrateAction::Plan, sent.clone()))
        .await
        .unwrap();
    assert_eq!(plan.migrations.len(), 1);
    assert_eq!(plan.migrations[0].filename, "V2__tags.sql");
    assert_eq!(plan.migrations[0].sql, "CREATE TABLE tags (id INTEGER);");
    assert!(
        !db.table_exists("tags").await.unwrap(),
        "plan changes nothing"
    );
    let applied = db
        .migrate(request(MigrateAction::Apply, sent.clone()))
        .await
        .unwrap();
    assert_eq!(applied.changed, ["V2__tags.sql"]);
    assert!(db.table_exists("tags").await.unwrap());
    let status = db
        .migrate(request(MigrateAction::Status, sent))
        .await
        .unwrap();
    let listed: Vec<(&str, &str, &str)> = status
        .migrations
        .iter()
        .map(|m| {
            (
                m.migration_type.as_str(),
                m.filename.as_str(),
                m.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("system", "V001__iadb_settings.sql", "applied"),
            ("app", "V1__items.sql", "applied"),
            ("app", "V2__tags.sql", "applied")
        ]
    );

    for (filename, content, expected) in [
        ("V3-bad-name.sql", "SELECT 1;", "V3-bad-name.sql"),
        ("V1__clash.sql", "SELECT 1;", "V1__clash.sql"),
        ("V4__empty.sql", "  -- nothing\n", "V4__empty.sql"),
    ] {
        let err = db
            .migrate(request(
                MigrateAction::Apply,
                vec![MigrationFile {
                    filename: filename.into(),
                    content: content.into(),
                }],
            ))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidArgument,
            "{filename}: {}",
            err.message()
        );
        assert!(
            err.message().contains(expected),
            "{filename}: {}",
            err.message()
        );
    }
    let err = db
        .migrate(request(MigrateAction::Unspecified, vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn bad_migration_folder_at_startup_exits_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("V1__ok.sql"),
        "CREATE TABLE ok (id INTEGER);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("V01__dup.sql"),
        "CREATE TABLE dup (id INTEGER);",
    )
    .unwrap();
    std::fs::write(dir.path().join("V2__latin1.sql"), b"SELECT '\xe9';").unwrap();
    let out = std::process::Command::new(iadb_tests::harness::server_binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "sqlite:///:memory:",
            "--app-migrations",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("V01__dup.sql") || stderr.contains("V2__latin1.sql"),
        "{stderr}"
    );
}

/// Server reflection (v1 and v1alpha) lists the services, so grpcurl works
/// with no proto file.
#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = sqlite_server();
    let channel = server.channel().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "iadb.v1.Database"
        ]
    );
    let mut old = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "iadb.v1.Database".into(),
            ),
        ),
    };
    let mut responses = old
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{response:?}"
    );
}
