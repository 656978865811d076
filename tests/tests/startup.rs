//! Start-up as an operator meets it: a database that is down at start (the
//! server serves the others, reports it NOT_SERVING with the real cause,
//! and connects it when it answers), `--require-all-databases`, a busy pool
//! that stays SERVING, migrations sent over the wire surviving a restart,
//! `iadb-server migrate ACTION` without serving, read-only URLs, and a huge
//! database name that is not echoed whole.

use futures::StreamExt;
use iadb::{ConnectionConfig, DatabaseInterface, ErrorKind, Value};
use iadb_tests::{
    TestServer,
    engine_proxy::{EngineProxy, health_status, wait_for},
    harness::skip,
};
use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Runs the server binary with `args` to its exit (bounded: it is killed
/// after `limit`); returns exit code, stdout, stderr and how long it took.
fn run_server(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    limit: Duration,
) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(iadb_tests::harness::server_binary())
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn iadb-test-server");
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("server output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// A PostgreSQL database that is down at start: the server starts at once
/// and serves the other database; the standard health service and the
/// Health RPC report it NOT_SERVING with the real cause; calls to it are
/// UNAVAILABLE at once, with that cause.
#[tokio::test]
async fn database_down_at_start_is_reported_with_its_cause() {
    let port = closed_port();
    let url = format!("pg=postgresql://u:hunter2@127.0.0.1:{port}/db");
    let started = Instant::now();
    let server = TestServer::start_with_env(
        &["--database", &url, "--health-interval-secs", "1"],
        &[("RUST_LOG", "info")],
    );
    let start_took = started.elapsed();
    assert!(
        start_took < Duration::from_secs(10),
        "start took {start_took:?}"
    );
    let mut health = HealthClient::new(server.channel().await);
    assert_eq!(
        health_status(&mut health, "pg").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        health_status(&mut health, "").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        health_status(&mut health, "default").await,
        Some(ServingStatus::Serving)
    );

    let pg = server.client("pg").await;
    let report = pg.health(false).await.expect("Health answers");
    assert_eq!(report.len(), 1);
    assert!(!report[0].healthy, "{report:?}");
    assert!(
        report[0]
            .message
            .to_lowercase()
            .contains("connection refused"),
        "{report:?}"
    );

    let call = Instant::now();
    let err = pg
        .execute("SELECT 1", &[])
        .await
        .expect_err("the database is down");
    let took = call.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.message());
    assert!(
        err.message().to_lowercase().contains("connection refused"),
        "{}",
        err.message()
    );
    assert!(took < Duration::from_secs(2), "UNAVAILABLE after {took:?}");

    // The other database serves.
    let default = server.client("").await;
    default
        .execute("CREATE TABLE t (x INTEGER)", &[])
        .await
        .unwrap();

    let log = server.log_text();
    assert!(log.to_lowercase().contains("connection refused"), "{log}");
    assert!(!log.contains("hunter2"), "password in the log: {log}");
    assert!(!err.message().contains("hunter2"));
    println!(
        "started in {} ms with a database down; a call to it: UNAVAILABLE in {} ms",
        start_took.as_millis(),
        took.as_millis()
    );
}

/// `--require-all-databases` (or IADB_REQUIRE_ALL_DATABASES) keeps the
/// strict start: exit 1 at once, with the real cause and the way out.
#[test]
fn require_all_databases_exits_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let url = format!("postgresql://u:hunter2@127.0.0.1:{port}/db");
    let flag = format!("pg={url}");
    for (extra, env) in [
        (vec!["--require-all-databases"], vec![]),
        (vec![], vec![("IADB_REQUIRE_ALL_DATABASES", "true")]),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--database", &flag];
        args.extend(extra);
        let (code, _, stderr, took) = run_server(&args, &env, dir.path(), Duration::from_secs(20));
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("database `pg` (postgresql)"), "{stderr}");
        assert!(
            stderr.to_lowercase().contains("connection refused"),
            "{stderr}"
        );
        assert!(stderr.contains("--require-all-databases"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
        assert!(took < Duration::from_secs(10), "exit after {took:?}");
    }
}

/// PostgreSQL comes up after the server started: within a few health
/// intervals the database turns SERVING, its pending start-up migrations
/// have run, and calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_that_comes_up_later_is_connected_and_migrated() {
    let Ok(base) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip(
            "a database that comes up later",
            "IADB_TEST_POSTGRES_URL is not set",
        );
        return;
    };
    let config = ConnectionConfig::from_url(&base).expect("IADB_TEST_POSTGRES_URL parses");
    let host = config.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let pg_port = config.port.unwrap_or(5432);
    let upstream: SocketAddr = tokio::net::lookup_host((host.as_str(), pg_port))
        .await
        .expect("resolve PostgreSQL host")
        .next()
        .expect("an address");
    // A schema of its own, so the start-up migrations are seen to run.
    let schema = format!("startup_late_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let port = closed_port();
    let from = format!("{host}:{pg_port}");
    assert!(base.contains(&from), "expected {from} in the URL");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}search_path={schema}",
        base.replacen(&from, &format!("127.0.0.1:{port}"), 1)
    );
    let flag = format!("pg={url}");
    let server = TestServer::start_with_env(
        &[
            "--database",
            &flag,
            "--health-interval-secs",
            "1",
            "--pool-timeout-secs",
            "5",
        ],
        &[("RUST_LOG", "info")],
    );
    let mut health = HealthClient::new(server.channel().await);
    assert_eq!(
        health_status(&mut health, "pg").await,
        Some(ServingStatus::NotServing)
    );
    let _proxy = EngineProxy::start(port, upstream);
    let up = wait_for(
        &mut health,
        "pg",
        ServingStatus::Serving,
        Duration::from_secs(15),
    )
    .await;
    wait_for(
        &mut health,
        "",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    let pg = server.client("pg").await;
    let row = pg
        .fetch_one(
            "SELECT count(*) AS n FROM ia_migrations WHERE migration_type = 'system' AND state = 'applied'",
            &[],
        )
        .await
        .expect("start-up migrations ran in the new schema")
        .expect("a row");
    assert!(
        matches!(row.get("n"), Some(Value::Int(n)) if *n >= 1),
        "{row:?}"
    );
    let report = pg.health(false).await.unwrap();
    assert!(report[0].healthy, "{report:?}");
    println!(
        "engine came up: SERVING after {} ms (health interval 1 s)",
        up.as_millis()
    );
    drop(server);
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await;
}

/// Every connection of the pool held by a stream nobody reads: the pool is
/// busy, not down, so the standard health service stays SERVING.
#[tokio::test]
async fn saturated_pool_stays_serving() {
    let server = TestServer::start(&[
        "--database-url",
        "sqlite:///./busy.db",
        "--pool-max",
        "1",
        "--health-interval-secs",
        "1",
    ]);
    let db = server.client("").await;
    let mut health = HealthClient::new(server.channel().await);
    wait_for(
        &mut health,
        "default",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    let stream = db
        .fetch_stream(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT x, 'payload ' || x FROM c",
            &[],
        )
        .await
        .unwrap();
    let mut rows = stream.rows;
    rows.next().await.expect("a row").expect("a row");
    // The one connection is held by the stream.
    let report = db.health(false).await.unwrap();
    assert_eq!(
        (report[0].pool_size, report[0].pool_idle, report[0].pool_max),
        (1, 0, 1),
        "{report:?}"
    );
    assert!(report[0].healthy, "{report:?}");
    // Several health rounds (1 s apart; a queued health query would give
    // up after 3 s): the status stays SERVING throughout.
    let watch = Instant::now();
    let mut checks = 0;
    while watch.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            health_status(&mut health, "default").await,
            Some(ServingStatus::Serving),
            "after {:?} with the pool saturated",
            watch.elapsed()
        );
        assert_eq!(
            health_status(&mut health, "").await,
            Some(ServingStatus::Serving)
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = db.health(false).await.unwrap();
    assert!(report[0].healthy, "{report:?}");
    assert_eq!(report[0].pool_idle, 0, "still saturated: {report:?}");
    drop(rows);
    println!("pool of 1 saturated for 6 s: SERVING in {checks} checks of 2 services");
}

fn migrate_request(
    action: iadb::proto::MigrateAction,
    files: Vec<iadb::proto::MigrationFile>,
) -> iadb::proto::MigrateRequest {
    iadb::proto::MigrateRequest {
        database: String::new(),
        action: action as i32,
        target_version: String::new(),
        files,
        allow_missing: false,
        allow_out_of_order: false,
    }
}

/// Migrations applied through the Migrate RPC are recorded as sent in a
/// request: a later plain start neither refuses nor calls them missing.
#[tokio::test]
async fn migrations_sent_over_the_wire_survive_a_plain_restart() {
    use iadb::proto::{MigrateAction, MigrationFile};
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", data.path().join("app.db").display());
    {
        let server = TestServer::start(&["--database-url", &url]);
        let db = server.client("").await;
        let applied = db
            .migrate(migrate_request(
                MigrateAction::Apply,
                vec![MigrationFile {
                    filename: "V1__items.sql".into(),
                    content: "CREATE TABLE items (id INTEGER PRIMARY KEY);".into(),
                }],
            ))
            .await
            .unwrap();
        assert_eq!(applied.changed, ["V1__items.sql"]);
    }
    // A plain start: no app folder, the file is nowhere on the server.
    let server = TestServer::start(&["--database-url", &url]);
    let db = server.client("").await;
    assert!(db.table_exists("items").await.unwrap());
    let status = db
        .migrate(migrate_request(MigrateAction::Status, vec![]))
        .await
        .unwrap();
    let app: Vec<(&str, &str)> = status
        .migrations
        .iter()
        .filter(|m| m.migration_type == "app")
        .map(|m| (m.filename.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(app, [("V1__items.sql", "applied")]);
    // Another client run with a newer file applies on top of it.
    let next = db
        .migrate(migrate_request(
            MigrateAction::Apply,
            vec![MigrationFile {
                filename: "V2__tags.sql".into(),
                content: "CREATE TABLE tags (id INTEGER);".into(),
            }],
        ))
        .await
        .unwrap();
    assert_eq!(next.changed, ["V2__tags.sql"]);
}

/// A failed migration stops the start, and the message names the way out;
/// `iadb-server migrate` shows the state, repairs it and applies, without
/// serving; then the server starts.
#[test]
fn migrate_subcommand_repairs_what_blocks_the_start() {
    let data = tempfile::tempdir().unwrap();
    let app = data.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("V1__items.sql"),
        "CREATE TABLE items (id INTEGER);",
    )
    .unwrap();
    std::fs::write(app.join("V2__broken.sql"), "CREATE TABLE oops (;").unwrap();
    let url = format!("sqlite:///{}", data.path().join("app.db").display());
    let app_flag = app.to_str().unwrap();
    let limit = Duration::from_secs(30);
    let dir = data.path();
    let serve = [
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        url.as_str(),
        "--app-migrations",
        app_flag,
    ];

    // 1. The start refuses and says what to do.
    let (code, _, stderr, _) = run_server(&serve, &[], dir, limit);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("V2__broken.sql"), "{stderr}");
    assert!(stderr.contains("iadb-server migrate repair"), "{stderr}");
    assert!(stderr.contains("--migrate=false"), "{stderr}");
    // Again: now the failed row refuses it, also with the way out.
    let (code, _, stderr, _) = run_server(&serve, &[], dir, limit);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("iadb-server migrate repair"), "{stderr}");

    let migrate = |action: &[&str]| {
        let mut args = vec!["migrate"];
        args.extend_from_slice(action);
        args.extend(["--database-url", url.as_str(), "--app-migrations", app_flag]);
        run_server(&args, &[], dir, limit)
    };
    // 2. status: without serving, V2 is failed.
    let (code, stdout, stderr, _) = migrate(&["status"]);
    assert_eq!(code, Some(0), "{stderr}");
    let v2 = stdout
        .lines()
        .find(|l| l.ends_with("V2__broken.sql"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(v2.contains("\tfailed\t"), "{stdout}");
    assert!(
        !stdout.contains("listening"),
        "the subcommand does not serve: {stdout}"
    );

    // 3. Fix the file, repair, apply.
    std::fs::write(
        app.join("V2__broken.sql"),
        "CREATE TABLE oops (id INTEGER);",
    )
    .unwrap();
    let (code, stdout, stderr, _) = migrate(&["repair"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("changed: V2__broken.sql"), "{stdout}");
    let (code, stdout, stderr, _) = migrate(&["apply"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("changed: V2__broken.sql"), "{stdout}");
    let (code, stdout, _, _) = migrate(&["validate"]);
    assert_eq!(code, Some(0), "{stdout}");
    // A target is required where the RPC requires one.
    let (code, _, stderr, _) = migrate(&["rollback"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("needs --target"), "{stderr}");

    // 4. The server starts.
    let server = TestServer::start(&["--database-url", &url, "--app-migrations", app_flag]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = server.client("").await;
        assert!(db.table_exists("oops").await.unwrap());
    });
}

/// Read-only URLs start: migrations are skipped for them, with a notice,
/// and reads work.
#[tokio::test]
// Without DuckDB the argument list is never extended.
#[cfg_attr(not(feature = "duckdb"), allow(unused_mut, clippy::useless_vec))]
async fn read_only_urls_start_without_migrations() {
    let data = tempfile::tempdir().unwrap();
    let sqlite_path = data.path().join("ro.db");
    {
        let conn = rusqlite::Connection::open(&sqlite_path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (42);")
            .unwrap();
    }
    let sqlite_url = format!("sqlite:///{}?mode=ro", sqlite_path.display());
    let mut args = vec!["--database-url".to_owned(), sqlite_url];
    #[cfg(feature = "duckdb")]
    {
        let duck_path = data.path().join("ro.duckdb");
        {
            let conn = duckdb::Connection::open(&duck_path).unwrap();
            conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
                .unwrap();
        }
        args.push("--database".to_owned());
        args.push(format!("duck=duckdb:///{}?mode=ro", duck_path.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with_env(&args, &[("RUST_LOG", "info")]);
    let db = server.client("").await;
    let row = db.fetch_one("SELECT x FROM t", &[]).await.unwrap().unwrap();
    assert_eq!(row.get("x"), Some(&Value::Int(42)));
    assert!(
        !db.table_exists("ia_migrations").await.unwrap(),
        "nothing was written"
    );
    let err = db
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect_err("read-only");
    assert_ne!(err.kind(), ErrorKind::Internal, "{}", err.message());
    let log = server.log_text();
    assert!(
        log.contains("read-only") && log.contains("start-up migrations skipped"),
        "{log}"
    );
    #[cfg(feature = "duckdb")]
    {
        let duck = server.client("duck").await;
        let row = duck
            .fetch_one("SELECT x FROM t", &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get("x"), Some(&Value::Int(7)));
        assert_eq!(
            log.matches("start-up migrations skipped").count(),
            2,
            "one notice per read-only database: {log}"
        );
    }
    let report = db.health(true).await.unwrap();
    assert!(report.iter().all(|h| h.healthy), "{report:?}");
}

/// A 4 MB database name is not echoed whole: the status message and every
/// log line stay short.
#[tokio::test]
async fn huge_unknown_database_name_is_not_echoed_whole() {
    let server = TestServer::start_with_env(
        &["--database-url", "sqlite:///:memory:"],
        &[("RUST_LOG", "info")],
    );
    let name = "n".repeat(4 * 1024 * 1024);
    let db = server.client(&name).await;
    let err = db
        .execute("SELECT 1", &[])
        .await
        .expect_err("unknown database");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().len() < 1000, "{} bytes", err.message().len());
    assert!(
        err.message().contains("unknown database"),
        "{}",
        &err.message()[..100]
    );
    let err = db.health(false).await.expect_err("unknown database");
    assert!(err.message().len() < 1000, "{} bytes", err.message().len());
    // The log line of the failed calls is written before the answer.
    let longest = server.log_text().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    println!(
        "4 MiB name: message {} bytes, longest log line {longest} bytes",
        err.message().len()
    );
}
