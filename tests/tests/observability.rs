//! What an operator sees: Prometheus metrics after a known workload, tracing
//! spans that name the statement's shape but never its values, and the
//! standard health service following an engine that goes away and returns.

use futures::StreamExt;
use iadb::{ConnectionConfig, DatabaseInterface, ErrorKind, Value};
use iadb_tests::{
    TestServer,
    engine_proxy::{EngineProxy, health_status, wait_for},
    harness::skip,
};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

/// Waits (at most 10 s) for the server's log to name its metrics address.
fn metrics_addr(server: &TestServer) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log_text();
        if let Some(addr) = log.lines().find_map(|l| {
            let rest = &l[l.find("metrics on http://")? + "metrics on http://".len()..];
            rest.split('/').next()?.parse().ok()
        }) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "the server never logged its metrics address:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics` over plain HTTP/1.1: (content type, body).
async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("metrics answer in time")
        .expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    // Chunked bodies: the text itself is all we check, so drop chunk sizes.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (content_type, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let server = TestServer::start_with_env(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--health-interval-secs",
            "1",
        ],
        &[("RUST_LOG", "info")],
    );
    let addr = metrics_addr(&server);
    let db = server.client("").await;
    db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT)", &[])
        .await
        .expect("create");
    for i in 0..3 {
        db.execute(
            "INSERT INTO m (id, v) VALUES (?, ?)",
            &[Value::Int(i), Value::Text(format!("v{i}"))],
        )
        .await
        .expect("insert");
    }
    let err = db
        .execute("INSERT INTO no_such_table VALUES (1)", &[])
        .await
        .expect_err("unknown table");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let rows = db
        .fetch_all(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             SELECT i FROM n",
            &[],
        )
        .await
        .expect("fetch all");
    assert_eq!(rows.len(), 2500);
    let one = db
        .fetch_one("SELECT v FROM m WHERE id = ?", &[Value::Int(2)])
        .await
        .expect("fetch one")
        .expect("a row");
    assert_eq!(one.get("v"), Some(&Value::Text("v2".into())));
    let unknown = server.client("no-such-db").await;
    let err = unknown
        .execute("SELECT 1", &[])
        .await
        .expect_err("unknown database");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let (content_type, body) = scrape(addr).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&body, series), Some(value), "{series} in:\n{body}");
    };
    expect(
        r#"iadb_requests_total{rpc="Execute",database="default",code="OK"}"#,
        4.0,
    );
    expect(
        r#"iadb_requests_total{rpc="Execute",database="default",code="INVALID_ARGUMENT"}"#,
        1.0,
    );
    expect(
        r#"iadb_requests_total{rpc="FetchAll",database="default",code="OK"}"#,
        1.0,
    );
    expect(
        r#"iadb_requests_total{rpc="FetchOne",database="default",code="OK"}"#,
        1.0,
    );
    // A name that is not configured never becomes a label of its own.
    expect(
        r#"iadb_requests_total{rpc="Execute",database="(unknown)",code="INVALID_ARGUMENT"}"#,
        1.0,
    );
    assert!(!body.contains("no-such-db"), "{body}");
    expect(
        r#"iadb_request_duration_seconds_count{rpc="Execute",database="default"}"#,
        5.0,
    );
    expect(r#"iadb_rows_streamed_total{database="default"}"#, 2501.0);
    expect(r#"iadb_pool_max_connections{database="default"}"#, 10.0);
    expect(r#"iadb_pool_waiting{database="default"}"#, 0.0);
    let size = sample(&body, r#"iadb_pool_connections{database="default"}"#).expect("pool size");
    let idle =
        sample(&body, r#"iadb_pool_idle_connections{database="default"}"#).expect("pool idle");
    assert!(size >= 1.0 && idle <= size, "size {size}, idle {idle}");
    expect(r#"iadb_database_up{database="default"}"#, 1.0);
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
}

#[tokio::test]
async fn pool_waiting_counts_calls_blocked_on_a_full_pool() {
    let server = TestServer::start_with_env(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--pool-max",
            "1",
            "--pool-timeout-secs",
            "20",
            // More calls may run than the pool has connections, so the
            // second call waits inside the pool (by default it would wait
            // for its turn in admission control, before the pool).
            "--max-concurrent-calls",
            "4",
        ],
        &[("RUST_LOG", "info")],
    );
    let addr = metrics_addr(&server);
    let db = server.client("").await;
    // A stream read only in part holds the one connection.
    let mut stream = db
        .fetch_stream(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000) \
             SELECT i FROM n",
            &[],
        )
        .await
        .expect("open stream");
    let first = stream.rows.next().await.expect("a row").expect("row ok");
    assert_eq!(first.get("i"), Some(&Value::Int(1)));
    let second = server.client("").await;
    let waiter = tokio::spawn(async move { second.fetch_one("SELECT 42 AS x", &[]).await });
    let series = r#"iadb_pool_waiting{database="default"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = scrape(addr).await;
        if sample(&body, series) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached 1:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    let row = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("the waiting call finishes once the stream is dropped")
        .expect("task")
        .expect("query")
        .expect("a row");
    assert_eq!(row.get("x"), Some(&Value::Int(42)));
    let (_, body) = scrape(addr).await;
    assert_eq!(sample(&body, series), Some(0.0), "{body}");
}

#[tokio::test]
async fn spans_carry_the_statement_fingerprint_never_values() {
    let server = TestServer::start_with_env(&[], &[("RUST_LOG", "iadb_server=debug")]);
    let db = server.client("").await;
    db.execute("CREATE TABLE s (a TEXT, b TEXT)", &[])
        .await
        .expect("create");
    db.execute(
        "INSERT INTO s VALUES ('literal-secret-1', ?)",
        &[Value::Text("param-secret-2".into())],
    )
    .await
    .expect("insert");
    let err = db
        .fetch_all(
            "SELECT * FROM s WHERE a = 'literal-secret-3' AND nope = ?",
            &[Value::Text("param-secret-4".into())],
        )
        .await
        .expect_err("unknown column");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.log_text();
        if log.contains("nope = ?") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        log.contains("rpc=\"Execute\"") || log.contains("rpc=Execute"),
        "{log}"
    );
    assert!(log.contains("INSERT INTO s VALUES (?, ?)"), "{log}");
    assert!(
        log.contains("SELECT * FROM s WHERE a = ? AND nope = ?"),
        "{log}"
    );
    assert!(log.contains("database=default"), "{log}");
    for secret in [
        "literal-secret-1",
        "param-secret-2",
        "literal-secret-3",
        "param-secret-4",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

// Multi-threaded: the proxy keeps forwarding while the test thread blocks on
// the server process starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_stopped_and_restarted_engine() {
    let Ok(url) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip(
            "health of a stopped engine",
            "IADB_TEST_POSTGRES_URL is not set",
        );
        return;
    };
    let config = ConnectionConfig::from_url(&url).expect("IADB_TEST_POSTGRES_URL parses");
    let host = config.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let port = config.port.unwrap_or(5432);
    let upstream: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve PostgreSQL host")
        .next()
        .expect("an address");
    let mut proxy = EngineProxy::start(0, upstream);
    let from = format!("{host}:{port}");
    let to = format!("127.0.0.1:{}", proxy.port);
    assert!(url.contains(&from), "expected {from} in the URL");
    let proxied = url.replacen(&from, &to, 1);

    let pg_flag = format!("pg={proxied}");
    let server = TestServer::start_with_env(
        &[
            "--database",
            &pg_flag,
            "--health-interval-secs",
            "1",
            "--pool-timeout-secs",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "info")],
    );
    let metrics = metrics_addr(&server);
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel);
    let limit = Duration::from_secs(15);
    wait_for(&mut health, "pg", ServingStatus::Serving, limit).await;
    wait_for(&mut health, "", ServingStatus::Serving, limit).await;
    let pg = server.client("pg").await;
    let row = pg
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect("query through the proxy")
        .expect("a row");
    assert_eq!(row.get("one"), Some(&Value::Int(1)));

    proxy.stop().await;
    let down = wait_for(&mut health, "pg", ServingStatus::NotServing, limit).await;
    wait_for(&mut health, "", ServingStatus::NotServing, limit).await;
    // The other database, and the process itself, still serve.
    assert_eq!(
        health_status(&mut health, "default").await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(
        health_status(&mut health, "iadb.v1.Database").await,
        Some(ServingStatus::Serving)
    );
    let err = pg
        .execute("SELECT 1", &[])
        .await
        .expect_err("the engine is gone");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.message());
    let (_, body) = scrape(metrics).await;
    assert_eq!(
        sample(&body, r#"iadb_database_up{database="pg"}"#),
        Some(0.0),
        "{body}"
    );

    proxy.resume();
    let up = wait_for(&mut health, "pg", ServingStatus::Serving, limit).await;
    wait_for(&mut health, "", ServingStatus::Serving, limit).await;
    let row = pg
        .fetch_one("SELECT 2 AS two", &[])
        .await
        .expect("query after the engine returned")
        .expect("a row");
    assert_eq!(row.get("two"), Some(&Value::Int(2)));
    let (_, body) = scrape(metrics).await;
    assert_eq!(
        sample(&body, r#"iadb_database_up{database="pg"}"#),
        Some(1.0),
        "{body}"
    );
    println!(
        "engine stopped: NOT_SERVING after {} ms; engine back: SERVING after {} ms \
         (health interval 1 s)",
        down.as_millis(),
        up.as_millis()
    );
    proxy.stop().await;
}

/// Transactions are counted by how they ended, timed, and the open ones are
/// a gauge that returns to 0: a commit, a rollback, a dropped handle
/// (`stream_ended`), one past `--transaction-max-secs` (`max_life`, the
/// client told ABORTED) and a statement that fails (`error`).
#[tokio::test]
async fn transactions_are_counted_by_outcome() {
    let server = TestServer::start_with_env(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--transaction-max-secs",
            "1",
        ],
        &[("RUST_LOG", "info")],
    );
    let addr = metrics_addr(&server);
    let db = server.client("").await;
    db.execute("CREATE TABLE tx_m (id INTEGER PRIMARY KEY)", &[])
        .await
        .expect("create");
    let insert = "INSERT INTO tx_m (id) VALUES (?)";

    let mut tx = db.transaction(Default::default()).await.expect("begin");
    tx.execute(insert, &[Value::Int(1)]).await.expect("insert");
    tx.commit().await.expect("commit");

    let mut tx = db.transaction(Default::default()).await.expect("begin");
    tx.execute(insert, &[Value::Int(2)]).await.expect("insert");
    tx.rollback().await.expect("rollback");

    let mut tx = db.transaction(Default::default()).await.expect("begin");
    tx.execute(insert, &[Value::Int(3)]).await.expect("insert");
    drop(tx);

    let mut tx = db.transaction(Default::default()).await.expect("begin");
    let failed = tx
        .execute(insert, &[Value::Int(1)])
        .await
        .expect_err("a duplicate key");
    assert_eq!(failed.kind(), ErrorKind::AlreadyExists, "{failed}");

    let mut tx = db.transaction(Default::default()).await.expect("begin");
    tx.execute(insert, &[Value::Int(4)]).await.expect("insert");
    // Past the maximum life (1 s): the next request finds it rolled back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let aborted = tx
        .execute(insert, &[Value::Int(5)])
        .await
        .expect_err("past its maximum life");
    assert_eq!(aborted.kind(), ErrorKind::Aborted, "{aborted}");
    assert!(
        aborted.message().contains("--transaction-max-secs"),
        "{aborted}"
    );
    let rows = db
        .fetch_all("SELECT id FROM tx_m", &[])
        .await
        .expect("read");
    assert_eq!(rows.len(), 1, "only the committed row");

    // The dropped handle's end reaches the server a moment after the drop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = scrape(addr).await;
        let ended = |outcome: &str| {
            sample(
                &body,
                &format!(
                    "iadb_transactions_ended_total{{database=\"default\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        let all = ["committed", "client", "stream_ended", "error", "max_life"]
            .map(|o| ended(o) == Some(1.0));
        if all.iter().all(|ok| *ok) || Instant::now() > deadline {
            assert_eq!(all, [true; 5], "{body}");
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&body, "iadb_transactions_open{database=\"default\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "iadb_transaction_duration_seconds_count{database=\"default\"}"
        ),
        Some(5.0),
        "{body}"
    );
}
