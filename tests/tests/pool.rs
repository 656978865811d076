//! Pooled connections on the networked engines. A connection goes back to
//! its pool after each call and is handed out again without a ping when it
//! was used less than a second ago. One idle for longer is pinged first, so
//! a connection that the engine closed meanwhile (a restart, an idle
//! timeout, an administrator's kill) is replaced before a call gets it.

use iadb::{DatabaseInterface, Value};
use iadb_client::{RemoteDatabase, RetryPolicy};
use iadb_tests::{TestServer, harness::skip};
use std::time::Duration;

/// Longer than the server's ping-after-idle delay (1 s).
const IDLE: Duration = Duration::from_millis(1500);

/// A client that does not retry: a call that met a dead connection on the
/// server would fail here instead of being hidden by the client's retry.
async fn client_without_retry(server: &TestServer) -> RemoteDatabase {
    let db = RemoteDatabase::new(server.endpoint.clone()).with_retry(RetryPolicy::none());
    db.connect().await.expect("connect to test server");
    db
}

async fn one_int(db: &RemoteDatabase, sql: &str) -> i64 {
    match db
        .fetch_one(sql, &[])
        .await
        .expect("the call succeeds")
        .and_then(|row| row.into_values().into_iter().next())
    {
        Some(Value::Int(n)) => n,
        other => panic!("{sql}: expected one integer, got {other:?}"),
    }
}

/// A server with one pooled connection to `url`. `id_sql` names the
/// connection (the engine's session id), `kill` ends it from outside while
/// it sits idle, and the next call, after more than the ping delay, must
/// get a new connection and succeed.
async fn killed_while_idle_is_replaced<Kill, Killed>(url: &str, id_sql: &str, kill: Kill)
where
    Kill: FnOnce(i64) -> Killed,
    Killed: Future<Output = ()>,
{
    let server = TestServer::start(&["--database-url", url, "--pool-max", "1"]);
    let db = client_without_retry(&server).await;
    let first = one_int(&db, id_sql).await;
    // Reused at once, without a new login.
    assert_eq!(one_int(&db, id_sql).await, first);
    kill(first).await;
    tokio::time::sleep(IDLE).await;
    let second = one_int(&db, id_sql).await;
    assert_ne!(second, first, "the killed connection was handed out again");
    assert_eq!(one_int(&db, "SELECT 41 + 1").await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_killed_while_idle_is_replaced() {
    let Ok(url) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip("postgresql", "IADB_TEST_POSTGRES_URL is not set");
        return;
    };
    let admin_url = url.clone();
    killed_while_idle_is_replaced(&url, "SELECT pg_backend_pid()::int8", |pid| async move {
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("direct connection");
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1::int4)")
            .bind(pid as i32)
            .fetch_one(&admin)
            .await
            .expect("terminate the server's connection");
        assert!(killed, "pg_terminate_backend found no backend {pid}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connection_killed_while_idle_is_replaced() {
    let Ok(url) = std::env::var("IADB_TEST_MYSQL_URL") else {
        skip("mysql", "IADB_TEST_MYSQL_URL is not set");
        return;
    };
    let admin_url = url.clone();
    killed_while_idle_is_replaced(
        &url,
        "SELECT CAST(CONNECTION_ID() AS SIGNED)",
        |id| async move {
            let admin = sqlx::MySqlPool::connect(&admin_url)
                .await
                .expect("direct connection");
            sqlx::query(&format!("KILL CONNECTION {id}"))
                .execute(&admin)
                .await
                .expect("kill the server's connection");
        },
    )
    .await;
}
