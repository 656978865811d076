//! The D1 adapter against the fake D1 API: what it sends (asserted on the
//! fake's side), every error path with the code a caller sees, retries, the
//! limits checked before sending, and the token kept out of errors, `Debug`
//! and logs.

use iadb::{ConnectionConfig, DatabaseInterface, ErrorKind, Value};
use iadb_server::backend::{Backend, BatchOptions, D1Backend, PoolSettings, backend_for};
use iadb_tests::{
    TestServer,
    d1_fake::{D1Fake, ErrorResult, Fault, RecordedRequest},
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// A connected adapter on `fake`, with `extra` URL options; the requests of
/// connecting are forgotten.
async fn backend(fake: &D1Fake, extra: &str) -> Arc<dyn Backend> {
    let config = ConnectionConfig::from_url(&format!("{}{extra}", fake.url())).expect("URL");
    let db = backend_for(&config, PoolSettings::default()).expect("adapter");
    db.connect().await.expect("connect");
    fake.clear_requests();
    db
}

fn error<T: std::fmt::Debug>(r: iadb::Result<T>) -> iadb::Error {
    r.expect_err("an error")
}

fn endpoint(fake: &D1Fake, last: &str) -> String {
    format!(
        "/client/v4/accounts/{}/d1/database/{}/{last}",
        fake.account_id, fake.database_id
    )
}

fn assert_spec_headers(fake: &D1Fake, r: &RecordedRequest) {
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {}", fake.token).as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn requests_match_the_spec() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, f INTEGER)",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO t (id, b, f) VALUES (?, ?, ?)",
        &[Value::Int(1), Value::Bytes(vec![0, 255]), Value::Bool(true)],
    )
    .await
    .unwrap();
    let rows = db
        .fetch_all("SELECT id, b, f FROM t WHERE id = ?", &[Value::Int(1)])
        .await
        .unwrap();
    assert_eq!(
        rows[0].values(),
        [Value::Int(1), Value::Bytes(vec![0, 255]), Value::Int(1)]
    );
    db.execute_many(
        "INSERT INTO t (id) VALUES (?)",
        &[vec![Value::Int(2)], vec![Value::Int(3)]],
    )
    .await
    .unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    for r in &requests {
        assert_spec_headers(&fake, r);
    }
    // Executes go to /query, fetches to /raw.
    assert_eq!(requests[0].path, endpoint(&fake, "query"));
    assert_eq!(
        requests[0].json(),
        serde_json::json!({"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, f INTEGER)"})
    );
    assert_eq!(requests[1].path, endpoint(&fake, "query"));
    assert_eq!(
        requests[1].json(),
        serde_json::json!({"sql": "INSERT INTO t (id, b, f) VALUES (?, ?, ?)", "params": [1, [0, 255], 1]})
    );
    assert_eq!(requests[2].path, endpoint(&fake, "raw"));
    assert_eq!(
        requests[2].json(),
        serde_json::json!({"sql": "SELECT id, b, f FROM t WHERE id = ?", "params": [1]})
    );
    // ExecuteMany is one batch.
    assert_eq!(requests[3].path, endpoint(&fake, "query"));
    assert_eq!(
        requests[3].json(),
        serde_json::json!({"batch": [
            {"sql": "INSERT INTO t (id) VALUES (?)", "params": [2]},
            {"sql": "INSERT INTO t (id) VALUES (?)", "params": [3]},
        ]})
    );
}

#[tokio::test]
async fn sql_errors_400_map_like_sqlite_whatever_result_holds() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER CHECK (n >= 0))",
        &[],
    )
    .await
    .unwrap();
    db.execute("INSERT INTO t VALUES (1, 'a', 1)", &[])
        .await
        .unwrap();
    for shape in [
        ErrorResult::Null,
        ErrorResult::EmptyList,
        ErrorResult::Absent,
    ] {
        fake.set_error_result(shape);
        let e = error(db.execute("INSERT INTO t VALUES (1, 'b', 1)", &[]).await);
        assert_eq!(
            e.kind(),
            ErrorKind::AlreadyExists,
            "{shape:?}: {}",
            e.message()
        );
        assert!(e.message().contains("UNIQUE constraint failed: t.id"));
        assert_eq!(e.code(), Some("SQLITE_CONSTRAINT"));
        let e = error(db.execute("INSERT INTO t VALUES (2, NULL, 1)", &[]).await);
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{}", e.message());
        let e = error(db.execute("INSERT INTO t VALUES (3, 'c', -1)", &[]).await);
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{}", e.message());
        let e = error(db.fetch_all("SELECT * FROM nope", &[]).await);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().contains("no such table: nope"),
            "{}",
            e.message()
        );
        let e = error(db.fetch_all("SELEC 1", &[]).await);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("syntax error"), "{}", e.message());
    }
    // SQL errors are the statement's fault: never retried.
    let before = fake.requests().len();
    let _ = db.fetch_all("SELECT * FROM nope", &[]).await;
    assert_eq!(fake.requests().len(), before + 1);
}

#[tokio::test]
async fn sql_errors_500_as_before_april_2024_map_the_same() {
    let fake = D1Fake::start();
    fake.set_sql_error_status(500);
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    fake.clear_requests();
    let e = error(db.execute("INSERT INTO t VALUES (1)", &[]).await);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{}", e.message());
    let e = error(db.fetch_all("SELECT * FROM nope", &[]).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.message());
    // A 500 that is the statement's fault is not retried, even for a read.
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn bad_token_401_is_permission_denied_and_not_retried() {
    let fake = D1Fake::start();
    let url = fake.url().replace(&fake.token, "wrong-token-0123456789");
    let config = ConnectionConfig::from_url(&url).unwrap();
    let db = backend_for(&config, PoolSettings::default()).unwrap();
    let e = error(db.connect().await);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{}", e.message());
    assert_eq!(fake.requests().len(), 1, "never retried");
    assert!(!e.message().contains("wrong-token-0123456789"));
}

#[tokio::test]
async fn forbidden_403_and_code_7403_are_permission_denied_and_not_retried() {
    let fake = D1Fake::start();
    // A wrong account: the fake answers 403 with code 7403.
    let url = fake.url().replace(
        &format!("account_id={}", fake.account_id),
        "account_id=other",
    );
    let db = backend_for(
        &ConnectionConfig::from_url(&url).unwrap(),
        PoolSettings::default(),
    )
    .unwrap();
    let e = error(db.connect().await);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{}", e.message());
    assert_eq!(e.code(), Some("7403"));
    assert_eq!(fake.requests().len(), 1);

    // Code 7403 under another status is refused the same way.
    let db = backend(&fake, "").await;
    fake.push_fault(Fault::error(
        400,
        7403,
        "The given account is not valid or is not authorized to access this service",
    ));
    let e = error(db.fetch_all("SELECT 1", &[]).await);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{}", e.message());
    assert_eq!(fake.requests().len(), 1, "never retried");
}

#[tokio::test]
async fn rate_limit_429_is_retried_honouring_retry_after() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
    fake.clear_requests();
    // A write is retried too: a 429 means D1 did not run it.
    fake.push_fault(Fault::rate_limited(1));
    let started = Instant::now();
    let out = db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert_eq!(out.rows_affected, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn rate_limit_429_becomes_resource_exhausted_after_retries() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    for _ in 0..3 {
        fake.push_fault(Fault::rate_limited(0));
    }
    let e = error(db.fetch_all("SELECT 1", &[]).await);
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("429"), "{}", e.message());
    assert_eq!(fake.requests().len(), 3, "bounded retries");

    // A retry-after of minutes (an over-limit token) is not waited for.
    fake.clear_requests();
    fake.push_fault(Fault::rate_limited(300));
    let started = Instant::now();
    let e = error(db.fetch_all("SELECT 1", &[]).await);
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    assert!(e.message().contains("retry-after 300"), "{}", e.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn timeouts_are_retried_for_reads_then_unavailable() {
    let fake = D1Fake::start();
    let db = backend(&fake, "&timeout_ms=300").await;
    for _ in 0..3 {
        fake.push_fault(Fault::Delay(Duration::from_secs(1)));
    }
    let e = error(db.fetch_all("SELECT 1", &[]).await);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert!(e.message().contains("in time"), "{}", e.message());
    assert_eq!(fake.requests().len(), 3, "bounded retries of a read");

    // One slow answer: the retry succeeds.
    fake.clear_requests();
    fake.push_fault(Fault::Delay(Duration::from_secs(1)));
    let row = db.fetch_one("SELECT 7 AS v", &[]).await.unwrap().unwrap();
    assert_eq!(row.values(), [Value::Int(7)]);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn timeouts_of_writes_are_not_retried() {
    let fake = D1Fake::start();
    let db = backend(&fake, "&timeout_ms=300").await;
    db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
    fake.clear_requests();
    fake.push_fault(Fault::Delay(Duration::from_secs(1)));
    let e = error(db.execute("INSERT INTO t VALUES (1)", &[]).await);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert!(e.message().contains("not retried"), "{}", e.message());
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_5xx_are_retried_for_reads_only() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
    fake.clear_requests();
    // A read: retried past a 502 (HTML body) and a 7500 internal error.
    fake.push_fault(Fault::body(502, "<html>Bad gateway</html>"));
    fake.push_fault(Fault::error(
        500,
        7500,
        "internal error; reference = 1234abcd",
    ));
    let rows = db.fetch_all("SELECT 1 AS v", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(fake.requests().len(), 3);

    // Always failing: UNAVAILABLE after bounded retries.
    fake.clear_requests();
    for _ in 0..3 {
        fake.push_fault(Fault::error(
            503,
            7500,
            "D1 DB is overloaded. Too many requests queued.",
        ));
    }
    let e = error(db.fetch_all("SELECT 1", &[]).await);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert!(e.message().contains("overloaded"));
    assert_eq!(fake.requests().len(), 3);

    // A write: not retried.
    fake.clear_requests();
    fake.push_fault(Fault::body(502, "<html>Bad gateway</html>"));
    let e = error(db.execute("INSERT INTO t VALUES (1)", &[]).await);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert_eq!(fake.requests().len(), 1);
    let n = db
        .fetch_one("SELECT COUNT(*) FROM t", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.values(), [Value::Int(0)]);
}

#[tokio::test]
async fn dropped_connections_are_retried_for_reads_only() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    fake.push_fault(Fault::DropConnection);
    let rows = db.fetch_all("SELECT 1 AS v", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(fake.requests().len(), 2);

    fake.clear_requests();
    fake.push_fault(Fault::DropConnection);
    let e = error(db.execute("CREATE TABLE t (x INTEGER)", &[]).await);
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn bodies_that_are_not_json_or_of_another_shape_are_clear_errors() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    let cases = [
        (200, "<html>hello</html>", "not JSON"),
        (200, "{\"result\": [", "not JSON"),
        (200, "[1, 2, 3]", "without a `result` list"),
        (
            200,
            "{\"success\": true, \"result\": {\"a\": 1}}",
            "without a `result` list",
        ),
        (
            200,
            "{\"success\": true, \"result\": [{\"results\": {\"columns\": [\"a\"], \"rows\": [[1, 2]]}}]}",
            "2 values for 1 columns",
        ),
        (
            200,
            "{\"success\": true, \"result\": [{\"results\": {\"columns\": [1], \"rows\": []}}]}",
            "not text",
        ),
        (418, "{\"weird\": true}", "418"),
    ];
    for (status, body, expected) in cases {
        fake.push_fault(Fault::body(status, body));
        // A write, so a 5xx-like answer is not retried and the fault is the answer.
        let e = match db.fetch_all("SELECT 1 AS a", &[]).await {
            Err(e) => e,
            Ok(rows) => panic!("{body}: expected an error, got {rows:?}"),
        };
        assert!(
            e.message().contains(expected),
            "{body}: {:?} {}",
            e.kind(),
            e.message()
        );
        assert_ne!(e.kind(), ErrorKind::AlreadyExists);
    }
    // Still serving.
    assert_eq!(
        db.fetch_one("SELECT 1", &[])
            .await
            .unwrap()
            .unwrap()
            .values(),
        [Value::Int(1)]
    );
}

#[tokio::test]
async fn limits_are_checked_before_sending() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    let sql = format!("SELECT {}", vec!["?"; 101].join(", "));
    let e = error(db.fetch_all(&sql, &vec![Value::Int(1); 101]).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("limit of 100"), "{}", e.message());

    let long = format!("SELECT 1 /* {} */", "x".repeat(100_000));
    let e = error(db.execute(&long, &[]).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("100,000 bytes"), "{}", e.message());

    let big = Value::Text("x".repeat(2_000_001));
    let e = error(db.execute("SELECT ?", std::slice::from_ref(&big)).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("2,000,000 bytes"), "{}", e.message());
    let e = error(
        db.execute_many("SELECT ?", &[vec![Value::Int(1)], vec![big]])
            .await,
    );
    assert!(
        e.message().starts_with("parameter set 1:"),
        "{}",
        e.message()
    );

    assert!(fake.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn integers_beyond_2_pow_53_are_refused_unless_opted_in() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    let safe = (1i64 << 53) - 1;
    let row = db
        .fetch_one("SELECT ? AS v", &[Value::Int(safe)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.values(), [Value::Int(safe)]);
    let e = error(db.fetch_one("SELECT ? AS v", &[Value::Int(safe + 2)]).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("2^53"), "{}", e.message());
    // A result D1 has already rounded is refused, not passed on.
    let e = error(db.fetch_one("SELECT 9007199254740993 AS v", &[]).await);
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("CAST"), "{}", e.message());
    // As text it is exact.
    let row = db
        .fetch_one("SELECT CAST(9007199254740993 AS TEXT) AS v", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.values(), [Value::Text("9007199254740993".into())]);

    // Opted in: rounded like D1 rounds, no error.
    let lossy = backend(&fake, "&lossy_integers=true").await;
    let row = lossy
        .fetch_one("SELECT 9007199254740993 AS v", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.values(), [Value::Int(9007199254740992)]);
}

#[tokio::test]
async fn list_and_get_endpoints_serve_the_documented_shapes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = D1Fake::start();
    let get = |path: String, token: String| {
        let host = fake
            .base_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        async move {
            let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            (
                status,
                serde_json::from_str::<serde_json::Value>(body).unwrap(),
            )
        }
    };
    let list = format!(
        "/client/v4/accounts/{}/d1/database?name=iadb-fake&page=1&per_page=10",
        fake.account_id
    );
    let (status, body) = get(list, fake.token.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["result"][0]["uuid"], fake.database_id.as_str());
    assert_eq!(body["result_info"]["count"], 1);
    let one = format!(
        "/client/v4/accounts/{}/d1/database/{}",
        fake.account_id, fake.database_id
    );
    let (status, body) = get(one.clone(), fake.token.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["name"], "iadb-fake");
    let (status, body) = get(one, "nope".into()).await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], false);
    assert_eq!(body["result"], serde_json::Value::Null);
    assert_eq!(body["errors"][0]["code"], 10000);
}

#[tokio::test]
async fn the_fake_refuses_sql_transactions_like_d1() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    let e = error(db.execute("BEGIN TRANSACTION", &[]).await);
    assert!(e.message().contains("batch"), "{}", e.message());
}

#[tokio::test]
async fn a_failing_batch_applies_nothing_and_names_its_set() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    fake.clear_requests();
    let sets: Vec<Vec<Value>> = [1, 2, 3, 2, 5]
        .iter()
        .map(|i| vec![Value::Int(*i)])
        .collect();
    let e = error(db.execute_many("INSERT INTO t VALUES (?)", &sets).await);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(
        e.message().starts_with("parameter set 3:"),
        "{}",
        e.message()
    );
    let n = db
        .fetch_one("SELECT COUNT(*) FROM t", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.values(), [Value::Int(0)]);
    // The first request is the whole batch; the rest are rolled-back probes.
    let requests = fake.requests();
    assert_eq!(
        requests[0].json()["batch"].as_array().map(Vec::len),
        Some(5)
    );
    for probe in &requests[1..requests.len() - 1] {
        let batch = probe.json()["batch"].as_array().cloned().unwrap();
        assert!(
            batch.last().unwrap()["sql"]
                .as_str()
                .unwrap()
                .contains("iadb_probe")
        );
    }
}

#[tokio::test]
async fn the_token_is_never_in_errors_or_debug() {
    let fake = D1Fake::start();
    let config = ConnectionConfig::from_url(&fake.url()).unwrap();
    let adapter = D1Backend::new(&config, PoolSettings::default()).unwrap();
    let shown = format!("{adapter:?} {config:?} {}", config.redacted_url());
    assert!(!shown.contains(&fake.token), "{shown}");
    adapter.connect().await.unwrap();

    let mut messages = Vec::new();
    fake.push_fault(Fault::rate_limited(0));
    fake.push_fault(Fault::rate_limited(0));
    fake.push_fault(Fault::rate_limited(0));
    messages.push(error(adapter.fetch_all("SELECT 1", &[]).await).to_string());
    // A proxy echoing the request's header back.
    fake.push_fault(Fault::body(
        400,
        &format!(
            "{{\"errors\": [{{\"code\": 1, \"message\": \"bad header Bearer {}\"}}]}}",
            fake.token
        ),
    ));
    messages.push(error(adapter.execute("SELECT 1", &[]).await).to_string());
    messages.push(error(adapter.fetch_all("SELECT * FROM nope", &[]).await).to_string());
    let bad = ConnectionConfig::from_url(&fake.url().replace(
        &fake.base_url.replace(':', "%3A").replace('/', "%2F"),
        "http%3A%2F%2F127.0.0.1%3A9%2Fv4",
    ))
    .unwrap();
    let unreachable = D1Backend::new(&bad, PoolSettings::default()).unwrap();
    messages.push(format!("{:?}", error(unreachable.connect().await)));
    for m in &messages {
        assert!(!m.contains(&fake.token), "{m}");
    }
    assert!(messages[1].contains("***"), "{}", messages[1]);
}

#[tokio::test]
async fn the_token_is_never_in_server_logs() {
    let fake = D1Fake::start();
    // The token comes from the environment here (CLOUDFLARE_API_TOKEN).
    let mut server = TestServer::start_with_env(
        &["--database-url", &fake.url_without_token()],
        &[
            ("CLOUDFLARE_API_TOKEN", fake.token.as_str()),
            ("RUST_LOG", "trace"),
        ],
    );
    let client = server.client("").await;
    client
        .execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    fake.push_fault(Fault::rate_limited(0));
    fake.push_fault(Fault::DropConnection);
    client.fetch_all("SELECT * FROM t", &[]).await.unwrap();
    client
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    let e = error(client.execute("INSERT INTO t VALUES (1)", &[]).await);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(!e.message().contains(&fake.token));
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Bearer {}", fake.token).as_str())),
        "the token from the environment is sent"
    );
    server.terminate(Duration::from_secs(5));
    let log = server.log_text();
    assert!(log.contains("retrying"), "retries are logged: {log}");
    assert!(!log.contains(&fake.token), "the token is in the log");
}

fn opts(read_only: bool) -> BatchOptions {
    BatchOptions {
        read_only,
        result_limit: 1 << 20,
        session_state: false,
    }
}

fn stmt(sql: &str, params: &[Value]) -> (String, Vec<Value>) {
    (sql.to_owned(), params.to_vec())
}

/// A Batch on D1 is one `/raw` request with a `batch` body; each statement's
/// result (rows with their column order, rows affected, last insert id)
/// comes back in order.
#[tokio::test]
async fn a_batch_is_one_raw_request_with_a_result_per_statement() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)", &[])
        .await
        .unwrap();
    fake.clear_requests();
    let results = db
        .batch(
            &[
                stmt(
                    "INSERT INTO t (name) VALUES (?)",
                    &[Value::Text("a".into())],
                ),
                stmt(
                    "INSERT INTO t (name) VALUES (?)",
                    &[Value::Text("b".into())],
                ),
                stmt("SELECT name, id FROM t ORDER BY id", &[]),
            ],
            opts(false),
        )
        .await
        .expect("batch");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].outcome.rows_affected, 1);
    assert_eq!(results[1].outcome.last_insert_id, Some(2));
    let names: Vec<&str> = results[2].columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["name", "id"]);
    assert_eq!(
        results[2].rows,
        vec![
            vec![Value::Text("a".into()), Value::Int(1)],
            vec![Value::Text("b".into()), Value::Int(2)],
        ]
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "one request for the whole batch");
    assert!(requests[0].path.ends_with("/raw"), "{}", requests[0].path);
    assert_eq!(
        requests[0].json()["batch"].as_array().map(Vec::len),
        Some(3)
    );
}

/// The third of five statements fails: nothing of the batch stays, and the
/// error names index 2 and carries SQLite's code.
#[tokio::test]
async fn a_failing_batch_statement_is_named_by_index_and_nothing_stays() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", &[])
        .await
        .unwrap();
    let statements: Vec<(String, Vec<Value>)> = [1, 2, 1, 3, 4]
        .iter()
        .map(|i| stmt("INSERT INTO t VALUES (?)", &[Value::Int(*i)]))
        .collect();
    let e = error(db.batch(&statements, opts(false)).await);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.message().starts_with("statement 2:"), "{}", e.message());
    assert!(e.code().is_some(), "the engine's code travels: {e:?}");
    let n = db
        .fetch_one("SELECT COUNT(*) FROM t", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.values(), [Value::Int(0)]);
}

/// What D1 cannot do is refused before anything is sent: a read-only batch
/// that writes, an entry holding two statements, and interactive
/// transactions (UNIMPLEMENTED, naming Batch).
#[tokio::test]
async fn d1_refuses_what_it_cannot_do_before_sending() {
    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    let e = error(
        db.batch(
            &[stmt("SELECT 1", &[]), stmt("DELETE FROM t", &[])],
            opts(true),
        )
        .await,
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.message().starts_with("statement 1:"), "{}", e.message());
    let e = error(
        db.batch(&[stmt("SELECT 1; SELECT 2", &[])], opts(false))
            .await,
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("holds 2"), "{}", e.message());
    assert!(fake.requests().is_empty(), "nothing was sent");
    let e = error(db.session().await.map(|_| ()));
    assert_eq!(e.kind(), ErrorKind::Unimplemented);
    assert!(e.message().contains("Batch"), "{}", e.message());
    // A read-only batch of reads runs.
    let results = db
        .batch(&[stmt("SELECT 1 AS one", &[])], opts(true))
        .await
        .expect("reads");
    assert_eq!(results[0].rows, vec![vec![Value::Int(1)]]);
}

/// A read-only call on D1 (`QueryOptions.read_only`), the documented best
/// effort: a statement that is not a read is PERMISSION_DENIED before any
/// request is sent; a read runs and returns its rows.
#[tokio::test]
async fn d1_read_only_calls_send_only_reads() {
    use iadb::Column;
    use iadb_server::backend::{ReadOnlyCall, session::RowSink};

    #[derive(Default)]
    struct Rows(Vec<Vec<Value>>);
    #[async_trait::async_trait]
    impl RowSink for Rows {
        async fn columns(&mut self, _: Arc<[Column]>) -> iadb::Result<()> {
            Ok(())
        }
        async fn row(&mut self, values: Vec<Value>) -> iadb::Result<()> {
            self.0.push(values);
            Ok(())
        }
    }

    let fake = D1Fake::start();
    let db = backend(&fake, "").await;
    db.execute("CREATE TABLE ro (id INTEGER)", &[])
        .await
        .expect("create");
    db.execute("INSERT INTO ro VALUES (1), (2)", &[])
        .await
        .expect("insert");
    fake.clear_requests();
    for sql in [
        "INSERT INTO ro VALUES (3)",
        "DELETE FROM ro",
        "DROP TABLE ro",
        "WITH x AS (SELECT 1) DELETE FROM ro",
    ] {
        let e = error(
            db.read_only_call(ReadOnlyCall::Execute { sql, params: &[] })
                .await,
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{sql}: {e}");
    }
    assert!(fake.requests().is_empty(), "nothing was sent");
    let mut rows = Rows::default();
    db.read_only_call(ReadOnlyCall::Query {
        sql: "SELECT id FROM ro ORDER BY id",
        params: &[],
        sink: &mut rows,
    })
    .await
    .expect("a read");
    assert_eq!(rows.0, vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
}
