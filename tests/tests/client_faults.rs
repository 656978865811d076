//! The Rust client (`iadb-client`) against a fake server that misbehaves on
//! purpose (`iadb_tests::fake_server`): what a caller sees when a result
//! stream is cut short, when the deadline passes with no answer, and when a
//! write is answered UNAVAILABLE (issue 10, cases 2, 7 and 8, client side).

use futures::StreamExt;
use iadb::{DatabaseInterface, ErrorKind, QueryEvent};
use iadb_client::{RemoteDatabase, RetryPolicy};
use iadb_tests::fake_server::FakeServer;
use std::time::{Duration, Instant};

/// Quick retries, so that a test that exhausts them stays short.
fn quick_retries(max_retries: usize) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

async fn client(fake: &FakeServer) -> RemoteDatabase {
    let db = RemoteDatabase::new(fake.endpoint.clone()).with_retry(quick_retries(3));
    db.connect().await.expect("connect to the fake server");
    db
}

/// Every bounded call of these tests: a hang is a failure, not a stuck run.
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

/// How often the fake server saw `METHOD TAG`.
async fn count(db: &RemoteDatabase, key: &str) -> i64 {
    let row = db
        .fetch_one(&format!("count {key}"), &[])
        .await
        .expect("count")
        .expect("a count row");
    match row.get("n") {
        Some(iadb::Value::Int(n)) => *n,
        other => panic!("count {key}: {other:?}"),
    }
}

/// Case 2, client side: a stream that ends (status OK) after some rows but
/// without its summary is an error, never a short success — whichever way
/// the caller reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_without_summary_is_an_error_not_a_short_result() {
    let fake = FakeServer::spawn().await;
    let db = client(&fake).await;

    // Control: a complete stream.
    let rows = bounded("rows", db.fetch_all("rows 250", &[])).await;
    assert_eq!(rows.expect("complete stream").len(), 250);

    // fetch_all: an error, INTERNAL (a broken server, not worth retrying as
    // is, and not UNAVAILABLE, which invites retrying a write).
    let err = bounded("truncate", db.fetch_all("truncate 250", &[]))
        .await
        .expect_err("a stream without its summary is an error");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        err.message().contains("without its summary") && err.message().contains("250 rows"),
        "{err}"
    );

    // The raw stream: the 250 rows, then the error, and no Done event.
    let stream = bounded("query", db.query("truncate 250", &[]))
        .await
        .expect("the header arrives");
    let events: Vec<_> = bounded("events", stream.events.collect::<Vec<_>>()).await;
    let rows = events
        .iter()
        .filter(|e| matches!(e, Ok(QueryEvent::Row(_))))
        .count();
    assert_eq!(rows, 250);
    assert!(
        !events.iter().any(|e| matches!(e, Ok(QueryEvent::Done(_)))),
        "no Done event for a cut stream"
    );
    let last = events.last().expect("events");
    assert!(
        matches!(last, Err(e) if e.kind() == ErrorKind::Internal),
        "the last event is the error: {last:?}"
    );

    // The seed-style result: success false, no rows presented as complete.
    let result = bounded("execute_query", db.execute_query("truncate 250", &[])).await;
    assert!(!result.success, "{result:?}");
    assert!(result.data.is_empty());
    assert!(
        result
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("without its summary")),
        "{result:?}"
    );

    // A summary that does not count the rows that arrived, and rows before
    // the header: INTERNAL too.
    for sql in ["miscount 3", "batch-first"] {
        let err = bounded(sql, db.fetch_all(sql, &[])).await.expect_err(sql);
        assert_eq!(err.kind(), ErrorKind::Internal, "{sql}: {err}");
    }
}

/// Case 7: the client's own timer is DEADLINE_EXCEEDED, never CANCELLED.
/// The fake server never answers, so only the client's timer can end the
/// call: no race between two timers, the same answer every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_deadline_is_deadline_exceeded_every_time() {
    let fake = FakeServer::spawn().await;
    let timeout = Duration::from_millis(200);
    let db = RemoteDatabase::new(fake.endpoint.clone()).with_timeout(timeout);
    db.connect().await.expect("connect");

    let check = |what: &str, started: Instant, err: iadb::Error| {
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            ErrorKind::DeadlineExceeded,
            "{what}: {err} after {took:?}"
        );
        assert!(
            took >= timeout && took < Duration::from_secs(5),
            "{what}: ended after {took:?}"
        );
    };
    for i in 0..20 {
        let started = Instant::now();
        let err = bounded("execute", db.execute("hang", &[]))
            .await
            .expect_err("no answer");
        check(&format!("execute #{i}"), started, err);
    }
    let started = Instant::now();
    let err = bounded("fetch_one", db.fetch_one("hang", &[]))
        .await
        .expect_err("no answer");
    check("fetch_one", started, err);
    let started = Instant::now();
    let err = bounded("fetch_all", db.fetch_all("hang", &[]))
        .await
        .expect_err("no answer");
    check("fetch_all", started, err);
    // The header arrives, then nothing: the deadline covers the stream too.
    let started = Instant::now();
    let err = bounded("fetch_all", db.fetch_all("header-then-hang", &[]))
        .await
        .expect_err("no summary");
    check("fetch_all after the header", started, err);
    let started = Instant::now();
    let err = bounded("table_exists", db.table_exists("hang"))
        .await
        .expect_err("no answer");
    check("table_exists", started, err);
    let started = Instant::now();
    let result = bounded("execute_query", db.execute_query("hang", &[])).await;
    assert!(!result.success);
    assert!(
        result
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("deadline exceeded")),
        "{result:?} after {:?}",
        started.elapsed()
    );
}

/// Case 8: a write answered UNAVAILABLE after its request arrived may have
/// been applied, so the client does not send it again; a read is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_write_is_not_sent_again_but_a_read_is_retried() {
    let fake = FakeServer::spawn().await;
    let db = client(&fake).await;

    let err = bounded("execute", db.execute("unavailable w1", &[]))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(count(&db, "Execute w1").await, 1, "Execute was sent once");

    let err = bounded(
        "execute_many",
        db.execute_many("unavailable w2", &[vec![], vec![]]),
    )
    .await
    .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        count(&db, "ExecuteMany w2").await,
        1,
        "ExecuteMany sent once"
    );

    let result = bounded("execute_query", db.execute_query("unavailable w3", &[])).await;
    assert!(!result.success);
    assert_eq!(
        count(&db, "FetchAll w3").await,
        1,
        "execute_query sent once"
    );

    let err = bounded(
        "migrate",
        db.migrate(iadb::proto::MigrateRequest {
            action: iadb::proto::MigrateAction::Apply as i32,
            target_version: "unavailable w4".to_owned(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(count(&db, "Migrate w4").await, 1, "Migrate sent once");

    // Reads: the first attempt and 3 retries.
    let err = bounded("fetch_one", db.fetch_one("unavailable r1", &[]))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        count(&db, "FetchOne r1").await,
        4,
        "FetchOne retried 3 times"
    );

    let err = bounded("fetch_all", db.fetch_all("unavailable r2", &[]))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        count(&db, "FetchAll r2").await,
        4,
        "FetchAll retried 3 times"
    );

    let err = bounded("table_exists", db.table_exists("unavailable r3"))
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(count(&db, "TableExists r3").await, 4);
}

/// Case 8, the other half: a write whose request never left the client (the
/// server was down, the connection refused) is retried, and arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_is_retried_when_its_request_never_left_the_client() {
    let mut fake = FakeServer::start();
    let addr = fake.addr.to_string();
    // Up to 60 retries 100 ms apart: the server is back long before.
    let db = RemoteDatabase::new(fake.endpoint.clone()).with_retry(RetryPolicy {
        max_retries: 60,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
    });
    db.connect().await.expect("connect");
    db.execute("record before", &[]).await.expect("server up");

    fake.stop();
    // While the server is down: refused, retried, still UNAVAILABLE at the end.
    let refused = RemoteDatabase::new(fake.endpoint.clone()).with_retry(quick_retries(2));
    let started = Instant::now();
    let err = refused
        .connect()
        .await
        .expect_err("nothing listens on the port");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let write = tokio::spawn(async move {
        let outcome = db.execute("record after", &[]).await;
        (db, outcome)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _back = tokio::task::spawn_blocking(move || FakeServer::start_on(&addr))
        .await
        .expect("restart the fake server");
    let (db, outcome) = bounded("the retried write", write)
        .await
        .expect("the write task");
    let outcome = outcome.expect("the write succeeds once the server is back");
    assert_eq!(outcome.rows_affected, 1);
    assert_eq!(
        count(&db, "Execute after").await,
        1,
        "the new server saw the write once"
    );
}

/// A commit answered UNAVAILABLE (the engine went away after the commit
/// arrived) may have been committed: the client never sends it again, nor
/// replays the transaction, and its error says that the outcome is
/// unknown. The read beside it shows that retries are on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_never_retried() {
    let fake = FakeServer::spawn().await;
    let db = RemoteDatabase::new(fake.endpoint.clone())
        .with_database("unavailable c1")
        .with_retry(quick_retries(3));
    db.connect().await.expect("connect to the fake server");

    // Control: a read answered UNAVAILABLE is retried (1 + 3 attempts).
    let err = bounded("read", db.fetch_one("unavailable r1", &[]))
        .await
        .expect_err("every attempt is UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(count(&db, "FetchOne r1").await, 4);

    let mut tx = bounded("begin", db.transaction(Default::default()))
        .await
        .expect("begin");
    let outcome = bounded("execute", tx.execute("insert", &[]))
        .await
        .expect("execute inside the transaction");
    assert_eq!(outcome.rows_affected, 1);
    let err = bounded("commit", tx.commit())
        .await
        .expect_err("the commit is answered UNAVAILABLE");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains("outcome is unknown"),
        "the error says the commit may have happened: {err}"
    );
    assert_eq!(count(&db, "Commit c1").await, 1, "the commit was sent once");
    assert_eq!(
        count(&db, "Transaction c1").await,
        1,
        "the transaction was not replayed"
    );

    // A commit answered: committed, sent once.
    let recorded = RemoteDatabase::new(fake.endpoint.clone())
        .with_database("record c2")
        .with_retry(quick_retries(3));
    recorded.connect().await.expect("connect");
    let tx = bounded("begin", recorded.transaction(Default::default()))
        .await
        .expect("begin");
    bounded("commit", tx.commit()).await.expect("committed");
    assert_eq!(count(&db, "Commit c2").await, 1);
}

/// A broken Arrow result inside a transaction (its summary counts a row
/// that never came) is an error, and it ends the transaction, as a broken
/// row fetch does: the next statement is refused, not run on a stream in
/// an unknown state. A whole Arrow result leaves the transaction open.
#[tokio::test]
async fn broken_arrow_fetch_ends_the_transaction() {
    let fake = FakeServer::spawn().await;
    let db = client(&fake).await;

    let mut tx = bounded("begin", db.transaction(Default::default()))
        .await
        .expect("begin");
    let whole = bounded("whole", async {
        tx.fetch_arrow("rows 250", &[])
            .await
            .expect("an Arrow result")
            .collect()
            .await
    })
    .await
    .expect("a whole result");
    assert_eq!(whole.iter().map(|b| b.num_rows()).sum::<usize>(), 250);
    bounded("execute", tx.execute("insert", &[]))
        .await
        .expect("the transaction is still open");

    let err = bounded("miscount", async {
        tx.fetch_arrow("miscount 3", &[]).await?.collect().await
    })
    .await
    .expect_err("a summary that miscounts");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.message().contains("summary counts 4"), "{err}");
    let err = bounded("after", tx.execute("insert", &[]))
        .await
        .expect_err("the transaction has ended");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("has ended"), "{err}");
}
