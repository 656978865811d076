//! Bearer tokens through a real server (issue 12, items 1, 2, 7, 8): no
//! token, a wrong token, each scope (a read token writing leaves the rows
//! as they were; a write token cannot Migrate), a token for another
//! database, rotation on SIGHUP, the refusal to serve an open non-loopback
//! address, per-token limits, the audit line, and the token never in the
//! server's log.

use iadb::{DatabaseInterface, ErrorKind, Value, proto};
use iadb_client::{RemoteDatabase, RetryPolicy, Statement, TransactionOptions};
use iadb_tests::harness::{Engine, TestServer, server_binary, skip};
use sha2::Digest as _;
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const READ: &str = "iadb_test_read_7f1c2b";
const WRITE: &str = "iadb_test_write_93ad0e";
const ADMIN: &str = "iadb_test_admin_c4e5a1";
const OTHER_DB: &str = "iadb_test_otherdb_55aa10";

fn sha(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// One `[[token]]` entry.
fn entry(name: &str, token: &str, scope: &str, databases: &str, extra: &str) -> String {
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = \"{scope}\"\ndatabases = {databases}\n{extra}\n",
        sha(token)
    )
}

/// The usual file: a reader, a writer and an admin of every database, and
/// a writer of the `other` database only.
fn standard_tokens() -> String {
    [
        entry("reporting", READ, "read", "[\"*\"]", ""),
        entry("app", WRITE, "write", "[\"*\"]", ""),
        entry("ops", ADMIN, "admin", "[\"*\"]", ""),
        entry("other-app", OTHER_DB, "write", "[\"other\"]", ""),
    ]
    .concat()
}

/// A tokens file in its own folder (kept as long as the folder).
fn tokens_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.toml");
    std::fs::write(&path, text).expect("write tokens file");
    (dir, path)
}

fn start(tokens: &Path, url: &str, extra: &[&str], log_level: &str) -> TestServer {
    let path = tokens.to_str().expect("utf-8 path");
    let mut args = vec!["--tokens-file", path, "--database-url", url];
    args.extend_from_slice(extra);
    TestServer::start_with_env(&args, &[("RUST_LOG", log_level)])
}

async fn client(server: &TestServer, database: &str, token: Option<&str>) -> RemoteDatabase {
    let mut db = RemoteDatabase::new(server.endpoint.clone())
        .with_database(database)
        .with_retry(RetryPolicy::none());
    if let Some(token) = token {
        db = db.with_token(token);
    }
    db.connect().await.expect("connect");
    db
}

fn migrate_status() -> proto::MigrateRequest {
    proto::MigrateRequest {
        action: proto::MigrateAction::Status as i32,
        ..Default::default()
    }
}

async fn count(db: &RemoteDatabase, table: &str) -> i64 {
    match db
        .fetch_one(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
        .await
        .expect("count")
        .and_then(|row| row.get("n").cloned())
    {
        Some(Value::Int(n)) => n,
        other => panic!("count: {other:?}"),
    }
}

#[tokio::test]
async fn no_token_or_an_unknown_one_is_unauthenticated_and_probes_stay_open() {
    let (dir, tokens) = tokens_file(&standard_tokens());
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let server = start(&tokens, &url, &[], "warn");
    for token in [None, Some("iadb_not_a_token"), Some(&READ[1..])] {
        let db = client(&server, "", token).await;
        let err = db
            .fetch_all("SELECT 1 AS one", &[])
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{token:?}: {err}");
        let err = db.health(true).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    }
    // A malformed header (not `Bearer ...`) is no token either.
    let mut raw = proto::database_client::DatabaseClient::new(server.channel().await);
    let mut request = tonic::Request::new(proto::HealthRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Basic {READ}").parse().unwrap());
    let status = raw.health(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // The standard health service and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "default".into(),
        })
        .await
        .expect("health check without a token");
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            server.channel().await,
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    assert!(answers.message().await.expect("answer").is_some());
    // A good token works.
    let db = client(&server, "", Some(READ)).await;
    assert_eq!(db.fetch_all("SELECT 1 AS one", &[]).await.unwrap().len(), 1);
}

/// Each scope on one engine: a read token's writes (Execute, ExecuteMany, a
/// Batch, a Transaction that is not read-only) are PERMISSION_DENIED and
/// change nothing; its reads and read-only Batch and Transaction work; a
/// write token writes but cannot Migrate; an admin token migrates.
async fn scopes_on(engine: Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match engine.url(&dir) {
        Ok(url) => url,
        Err(why) => return skip(&format!("auth scopes on {}", engine.name()), &why),
    };
    let (_tokens_dir, tokens) = tokens_file(&standard_tokens());
    let server = start(&tokens, &url, &[], "warn");
    let admin = client(&server, "", Some(ADMIN)).await;
    let writer = client(&server, "", Some(WRITE)).await;
    let reader = client(&server, "", Some(READ)).await;
    let table = format!("auth_scopes_{}", std::process::id());
    let _ = admin.execute(&format!("DROP TABLE {table}"), &[]).await;
    admin
        .execute(&format!("CREATE TABLE {table} (id INTEGER, v TEXT)"), &[])
        .await
        .expect("admin creates");
    writer
        .execute(
            &format!("INSERT INTO {table} (id, v) VALUES (?, ?)"),
            &[Value::Int(1), Value::Text("a".into())],
        )
        .await
        .expect("writer inserts");
    let insert = format!("INSERT INTO {table} (id, v) VALUES (?, ?)");
    let denied = |what: &str, result: Result<(), iadb::Error>| {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{what}: {err}");
        assert!(err.message().contains("reporting"), "{what}: {err}");
    };
    denied(
        "Execute",
        reader
            .execute(&insert, &[Value::Int(2), Value::Text("b".into())])
            .await
            .map(|_| ()),
    );
    denied(
        "ExecuteMany",
        reader
            .execute_many(&insert, &[vec![Value::Int(3), Value::Text("c".into())]])
            .await
            .map(|_| ()),
    );
    denied(
        "Batch",
        reader
            .batch(
                &[Statement::with_params(
                    insert.clone(),
                    vec![Value::Int(4), Value::Text("d".into())],
                )],
                false,
            )
            .await
            .map(|_| ()),
    );
    denied(
        "Transaction",
        reader
            .transaction(TransactionOptions::default())
            .await
            .map(|_| ()),
    );
    denied(
        "DDL",
        reader
            .execute(&format!("DROP TABLE {table}"), &[])
            .await
            .map(|_| ()),
    );
    denied(
        "Migrate",
        reader.migrate(migrate_status()).await.map(|_| ()),
    );
    // A write sent as a query runs in a read-only transaction, where the
    // engine refuses it (issue 12 item 4), also through the seed-style
    // `execute_query`, which streams.
    let returning = format!("INSERT INTO {table} (id, v) VALUES (5, 'e') RETURNING id");
    let err = reader
        .fetch_all(&returning, &[])
        .await
        .expect_err("a read token's INSERT ... RETURNING");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{engine:?}: {err}");
    let seed = reader.execute_query(&returning, &[]).await;
    assert!(!seed.success, "{engine:?}: {seed:?}");
    let err = reader
        .fetch_one(&returning, &[])
        .await
        .expect_err("a read token's FetchOne that writes");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{engine:?}: {err}");
    assert_eq!(count(&reader, &table).await, 1, "a read token changed rows");
    // What a read token may do.
    assert!(reader.table_exists(&table).await.expect("table exists"));
    let rows = reader
        .batch(&[Statement::new(format!("SELECT id FROM {table}"))], true)
        .await
        .expect("read-only batch");
    assert_eq!(rows[0].rows.len(), 1);
    let mut tx = reader
        .transaction(TransactionOptions {
            read_only: true,
            ..Default::default()
        })
        .await
        .expect("read-only transaction");
    assert_eq!(
        tx.fetch_all(&format!("SELECT id FROM {table}"), &[])
            .await
            .expect("fetch in tx")
            .len(),
        1
    );
    tx.commit().await.expect("commit read-only");
    // A write token cannot Migrate, with any action.
    for action in [proto::MigrateAction::Status, proto::MigrateAction::Repair] {
        let err = writer
            .migrate(proto::MigrateRequest {
                action: action as i32,
                ..Default::default()
            })
            .await
            .expect_err("write token migrating");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.message().contains("admin"), "{err}");
    }
    let status = admin
        .migrate(migrate_status())
        .await
        .expect("admin migrates");
    assert!(!status.migrations.is_empty(), "{status:?}");
    assert_eq!(count(&admin, &table).await, 1);
    admin
        .execute(&format!("DROP TABLE {table}"), &[])
        .await
        .expect("drop");
}

#[tokio::test]
async fn scopes_sqlite() {
    scopes_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn scopes_postgres() {
    scopes_on(Engine::Postgres).await;
}

#[tokio::test]
async fn scopes_mysql() {
    scopes_on(Engine::Mysql).await;
}

#[tokio::test]
async fn a_token_for_another_database_is_permission_denied() {
    let (dir, tokens) = tokens_file(&standard_tokens());
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let other = format!("other=sqlite:///{}", dir.path().join("other.db").display());
    let server = start(&tokens, &url, &["--database", &other], "warn");
    let on_default = client(&server, "", Some(OTHER_DB)).await;
    let err = on_default
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .expect_err("default is not granted");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.message().contains("default"), "{err}");
    // A name that does not exist is refused the same way (a token learns
    // no names).
    let nowhere = client(&server, "nowhere", Some(OTHER_DB)).await;
    let err = nowhere
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .expect_err("not granted");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = client(&server, "", Some(OTHER_DB))
        .await
        .transaction(TransactionOptions::default())
        .await
        .map(|_| ())
        .expect_err("transaction on default");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    // Its own database works, and the health of "every database" is that
    // of its own only.
    let on_other = client(&server, "other", Some(OTHER_DB)).await;
    on_other
        .execute("CREATE TABLE t (id INTEGER)", &[])
        .await
        .expect("granted database");
    let names: Vec<String> = on_other
        .health(true)
        .await
        .expect("health")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["other"]);
    let all: Vec<String> = client(&server, "", Some(READ))
        .await
        .health(true)
        .await
        .expect("health")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(all, ["default", "other"]);
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hangup(server: &TestServer) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

async fn answers(server: &TestServer, token: &str) -> Result<(), ErrorKind> {
    client(server, "", Some(token))
        .await
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .map(|_| ())
        .map_err(|e| e.kind())
}

#[tokio::test]
async fn sighup_rotates_tokens_and_a_bad_file_keeps_the_old_ones() {
    const OLD: &str = "iadb_test_rotate_old_0001";
    const NEW: &str = "iadb_test_rotate_new_0002";
    let (dir, tokens) = tokens_file(&entry("rotating", OLD, "read", "[\"*\"]", ""));
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let server = start(&tokens, &url, &[], "info");
    assert_eq!(answers(&server, OLD).await, Ok(()));
    assert_eq!(answers(&server, NEW).await, Err(ErrorKind::Unauthenticated));
    // A file that does not parse: the old token stays, the error is logged.
    std::fs::write(&tokens, "[[token]]\nname = \"broken\"\nscope = \n").expect("write");
    hangup(&server);
    eventually("the reload error in the log", async || {
        server.log_text().contains("the tokens in force are kept")
    })
    .await;
    assert!(
        server.log_text().contains("line 3"),
        "{}",
        server.log_text()
    );
    assert_eq!(answers(&server, OLD).await, Ok(()));
    // Rotation: the new token replaces the old.
    std::fs::write(&tokens, entry("rotating", NEW, "read", "[\"*\"]", "")).expect("write");
    hangup(&server);
    eventually("the new token accepted", async || {
        answers(&server, NEW).await.is_ok()
    })
    .await;
    assert_eq!(answers(&server, OLD).await, Err(ErrorKind::Unauthenticated));
}

/// Runs the server binary with `args` until it exits (at most 30 s; it is
/// expected to refuse to start): its exit code and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let mut child = Command::new(server_binary())
        .args(["--database-url", &url])
        .args(args)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("IADB_TOKENS_FILE")
        .env_remove("IADB_INSECURE_NO_AUTH")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the server started instead of refusing: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_tokens_on_a_non_loopback_address_refuses_to_start() {
    let (code, stderr) = refused_start(&["--listen", "0.0.0.0:0"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without tokens")
            && stderr.contains("--insecure-no-auth")
            && stderr.contains("--tokens-file"),
        "{stderr}"
    );
    // A bad tokens file refuses the start too, naming the line.
    let (_dir, tokens) = tokens_file(&format!(
        "{}[[token]]\nname = \"b\"\nsha256 = \"{}\"\nscope = \"superuser\"\ndatabases = [\"*\"]\n",
        entry("a", READ, "read", "[\"*\"]", ""),
        sha(WRITE)
    ));
    let (code, stderr) = refused_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tokens-file",
        tokens.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 10"), "{stderr}");
    assert!(stderr.contains("tokens.toml"), "{stderr}");
}

#[tokio::test]
async fn insecure_no_auth_and_a_tokens_file_allow_a_non_loopback_address() {
    for extra in [vec!["--insecure-no-auth"], vec!["--tokens-file", "TOKENS"]] {
        let (_dir, tokens) = tokens_file(&standard_tokens());
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:///{}", dir.path().join("a.db").display());
        let args: Vec<&str> = extra
            .iter()
            .map(|a| {
                if *a == "TOKENS" {
                    tokens.to_str().unwrap()
                } else {
                    a
                }
            })
            .collect();
        let mut child = Command::new(server_binary())
            .args(["--listen", "0.0.0.0:0", "--database-url", &url])
            .args(&args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read stdout");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            line.starts_with("iadb-server listening on 0.0.0.0:"),
            "{args:?}: {line}"
        );
    }
}

#[tokio::test]
async fn per_token_concurrency_and_rate_limits_are_resource_exhausted() {
    const ONE_AT_A_TIME: &str = "iadb_test_single_0003";
    const TWO_PER_SECOND: &str = "iadb_test_slow_0004";
    let (dir, tokens) = tokens_file(
        &[
            entry(
                "single",
                ONE_AT_A_TIME,
                "write",
                "[\"*\"]",
                "max_concurrent_calls = 1",
            ),
            entry(
                "slow",
                TWO_PER_SECOND,
                "read",
                "[\"*\"]",
                "requests_per_second = 2",
            ),
            entry("app", WRITE, "write", "[\"*\"]", ""),
        ]
        .concat(),
    );
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let server = start(&tokens, &url, &[], "warn");
    // An open transaction is a running call: a second one is refused.
    let single = client(&server, "", Some(ONE_AT_A_TIME)).await;
    let tx = single
        .transaction(TransactionOptions::default())
        .await
        .expect("first call");
    let err = single
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .expect_err("second call at once");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.message().contains("single"), "{err}");
    // Other tokens are not held up.
    assert_eq!(answers(&server, WRITE).await, Ok(()));
    tx.commit().await.expect("commit");
    eventually("the permit given back", async || {
        single.fetch_all("SELECT 1 AS one", &[]).await.is_ok()
    })
    .await;
    // Two calls a second: a burst of two passes, the third at once is
    // refused.
    let slow = client(&server, "", Some(TWO_PER_SECOND)).await;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(
            slow.fetch_one("SELECT 1 AS one", &[])
                .await
                .map(|_| ())
                .map_err(|e| e.kind()),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(outcomes[..2], [Ok(()), Ok(())], "{outcomes:?}");
    let passed = outcomes.iter().filter(|o| o.is_ok()).count() as f64;
    assert!(
        passed <= 2.0 + 2.0 * elapsed + 1.0,
        "{outcomes:?} in {elapsed} s"
    );
    if elapsed < 0.4 {
        assert!(
            outcomes.contains(&Err(ErrorKind::ResourceExhausted)),
            "{outcomes:?} in {elapsed} s"
        );
    }
}

#[tokio::test]
async fn writes_are_audited_and_no_token_reaches_the_log() {
    const WRONG: &str = "iadb_test_wrong_token_0005";
    let (dir, tokens) = tokens_file(&standard_tokens());
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let server = start(&tokens, &url, &["--metrics-listen", "127.0.0.1:0"], "trace");
    let writer = client(&server, "", Some(WRITE)).await;
    writer
        .execute("CREATE TABLE au (id INTEGER, secret TEXT)", &[])
        .await
        .expect("create");
    writer
        .execute(
            "INSERT INTO au (id, secret) VALUES (?, ?)",
            &[Value::Int(1), Value::Text("param-value-0006".into())],
        )
        .await
        .expect("insert");
    writer
        .execute_many(
            "INSERT INTO au (id, secret) VALUES (?, 'literal-0007')",
            &[vec![Value::Int(2)], vec![Value::Int(3)]],
        )
        .await
        .expect("insert many");
    let err = writer
        .execute("UPDATE nope SET x = 1", &[])
        .await
        .expect_err("no table");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    writer
        .batch(&[Statement::new("DELETE FROM au WHERE id = 3")], false)
        .await
        .expect("batch");
    let mut tx = writer
        .transaction(TransactionOptions::default())
        .await
        .expect("tx");
    tx.execute("UPDATE au SET id = id + 10", &[])
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    client(&server, "", Some(ADMIN))
        .await
        .migrate(migrate_status())
        .await
        .expect("migrate");
    // The refused ones, with their tokens.
    let _ = client(&server, "", Some(WRONG))
        .await
        .fetch_all("SELECT 1", &[])
        .await;
    let _ = client(&server, "", Some(READ))
        .await
        .execute("DELETE FROM au", &[])
        .await;
    let expected = [
        "INSERT INTO au (id, secret) VALUES (?, ?)",
        "INSERT INTO au (id, secret) VALUES (?, ?)",
        "UPDATE nope SET x = ?",
        "DELETE FROM au WHERE id = ?",
        "UPDATE au SET id = id + ?",
        "migrate status",
    ];
    let mut log = String::new();
    eventually("the audit lines", async || {
        log = server.log_text();
        log.contains("migrate status") && log.contains("call refused")
    })
    .await;
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("iadb::audit")).collect();
    let find = |fingerprint: &str| {
        audit
            .iter()
            .find(|l| l.contains(fingerprint))
            .unwrap_or_else(|| panic!("no audit line for {fingerprint}:\n{}", audit.join("\n")))
    };
    for fingerprint in expected {
        let line = find(fingerprint);
        assert!(line.contains(" INFO "), "{line}");
        assert!(
            line.contains("database=\"default\"") || line.contains("database=default"),
            "{line}"
        );
    }
    let insert = find("VALUES (?, ?)");
    assert!(
        insert.contains("token=\"app\"") || insert.contains("token=app"),
        "{insert}"
    );
    assert!(insert.contains("rows_affected=1"), "{insert}");
    assert!(
        insert.contains("outcome=\"OK\"") || insert.contains("outcome=OK"),
        "{insert}"
    );
    let many = find("VALUES (?, ?)");
    assert!(many.contains("rows_affected="), "{many}");
    let failed = find("UPDATE nope");
    assert!(failed.contains("INVALID_ARGUMENT"), "{failed}");
    let tx_line = find("UPDATE au SET id = id + ?");
    assert!(tx_line.contains("rows_affected=2"), "{tx_line}");
    let migrate = find("migrate status");
    assert!(
        migrate.contains("token=\"ops\"") || migrate.contains("token=ops"),
        "{migrate}"
    );
    // The refused calls are logged by token name.
    assert!(
        log.lines().any(|l| l.contains("call refused")
            && l.contains("reporting")
            && l.contains("PermissionDenied")),
        "{log}"
    );
    // The call's span (opened by the call layer) names the token.
    assert!(
        log.lines()
            .any(|l| l.contains("rpc{") && l.contains("token=app")),
        "{log}"
    );
    // Never a token or a value.
    // (SQL literals at trace level are sqlx's statement log: issue 12
    // item 6, redaction, is another change.)
    for secret in [READ, WRITE, ADMIN, WRONG, "param-value-0006"] {
        assert!(!log.contains(secret), "{secret} is in the server's log");
    }
    for line in audit {
        assert!(!line.contains("literal-0007"), "{line}");
    }
    // Metrics by token name. A stream's call is counted when its response
    // body ends on the server, which may be a moment after the client saw
    // the end: scrape until every series is there (at most 10 s).
    let wanted = [
        r#"iadb_token_calls_total{token="app",rpc="Execute",code="OK"}"#,
        r#"iadb_token_calls_total{token="reporting",rpc="Execute",code="PERMISSION_DENIED"}"#,
        r#"iadb_token_calls_total{token="(unauthenticated)",rpc="FetchAll",code="UNAUTHENTICATED"}"#,
        r#"iadb_token_calls_total{token="app",rpc="Transaction",code="OK"}"#,
    ];
    let scraping = Instant::now();
    let metrics = loop {
        let metrics = scrape_metrics(&log).await;
        if wanted.iter().all(|series| metrics.contains(series))
            || scraping.elapsed() > Duration::from_secs(10)
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for series in wanted {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    for secret in [READ, WRITE, ADMIN, WRONG] {
        assert!(!metrics.contains(secret));
    }
}

/// `GET /metrics` at the address the server logged.
async fn scrape_metrics(log: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr: std::net::SocketAddr = log
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("metrics on http://")? + "metrics on http://".len()..];
            rest.split('/').next()?.parse().ok()
        })
        .expect("metrics address in the log");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    String::from_utf8_lossy(&raw).into_owned()
}
