//! The cost of a transaction through iadb against the direct driver,
//! measured in the same run on the same database:
//! `cargo bench -p iadb-tests --no-default-features --bench transactions`.
//!
//! For each engine (SQLite always; PostgreSQL and MySQL when
//! IADB_TEST_POSTGRES_URL / IADB_TEST_MYSQL_URL are set), the median time of
//! - an interactive transaction (begin, one UPDATE, commit) over the
//!   Transaction RPC, three round trips, vs sqlx's `begin`/`execute`/`commit`;
//! - the commit round trip alone (the commit request until `ended`) vs
//!   sqlx's `commit`;
//! - the same UPDATE as a one-statement Batch (one round trip).

use futures::StreamExt;
use iadb::DatabaseInterface;
use iadb::proto::{
    self, database_client::DatabaseClient, transaction_request::Request as Req,
    transaction_response::Response as Resp,
};
use iadb_tests::TestServer;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const ROUNDS: usize = 500;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn statement(sql: &str, id: i64) -> proto::Statement {
    proto::Statement {
        sql: sql.to_owned(),
        params: vec![iadb::proto::Value::from(iadb::Value::Int(id))],
        ..Default::default()
    }
}

/// One transaction over the Transaction RPC; returns its whole time and the
/// commit's.
async fn through_iadb(
    client: &mut DatabaseClient<Channel>,
    sql: &str,
    id: i64,
) -> (Duration, Duration) {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(4);
    let send = |request: Req| {
        let tx = tx.clone();
        async move {
            tx.send(proto::TransactionRequest {
                request: Some(request),
            })
            .await
            .expect("send");
        }
    };
    send(Req::Begin(proto::BeginTransaction::default())).await;
    let mut answers = client
        .transaction(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|request| (request, rx))
        }))
        .await
        .expect("transaction")
        .into_inner();
    let mut next = async || {
        answers
            .next()
            .await
            .expect("an answer")
            .expect("no error")
            .response
            .expect("a response")
    };
    assert!(matches!(next().await, Resp::Begun(_)));
    send(Req::Execute(statement(sql, id))).await;
    match next().await {
        Resp::Executed(e) => assert_eq!(e.rows_affected, 1),
        other => panic!("unexpected {other:?}"),
    }
    let committing = Instant::now();
    send(Req::Commit(proto::CommitTransaction {})).await;
    assert!(matches!(
        next().await,
        Resp::Ended(proto::TransactionEnded {
            committed: true,
            ..
        })
    ));
    (started.elapsed(), committing.elapsed())
}

async fn through_batch(client: &mut DatabaseClient<Channel>, sql: &str, id: i64) -> Duration {
    let started = Instant::now();
    let answer = client
        .batch(proto::BatchRequest {
            statements: vec![statement(sql, id)],
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(answer.results[0].rows_affected, 1);
    started.elapsed()
}

async fn direct<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    id: i64,
) -> (Duration, Duration)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let started = Instant::now();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(sql)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("update");
    let committing = Instant::now();
    tx.commit().await.expect("commit");
    (started.elapsed(), committing.elapsed())
}

async fn compare<DB: sqlx::Database>(engine: &str, server: &TestServer, pool: sqlx::Pool<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let table = "bench_tx";
    for sql in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)"),
        format!("INSERT INTO {table} (id, n) VALUES (1, 0), (2, 0), (3, 0), (4, 0)"),
    ] {
        sqlx::query(&sql).execute(&pool).await.expect("setup");
    }
    let via_iadb = format!("UPDATE {table} SET n = n + 1 WHERE id = ?");
    let via_sqlx = if engine == "postgresql" {
        via_iadb.replace('?', "$1")
    } else {
        via_iadb.clone()
    };
    let mut client = DatabaseClient::new(server.channel().await);
    let (mut whole, mut commit, mut whole_direct, mut commit_direct, mut batch) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        let id = (i % 4) as i64 + 1;
        let (w, c) = through_iadb(&mut client, &via_iadb, id).await;
        whole.push(w);
        commit.push(c);
        let (w, c) = direct(&pool, &via_sqlx, id).await;
        whole_direct.push(w);
        commit_direct.push(c);
        batch.push(through_batch(&mut client, &via_iadb, id).await);
    }
    let db = server.client("").await;
    let sum = db
        .fetch_one(&format!("SELECT SUM(n) FROM {table}"), &[])
        .await
        .expect("sum")
        .expect("a row");
    let n = match sum.values().first() {
        Some(iadb::Value::Int(n)) => *n,
        Some(iadb::Value::Decimal(s)) => s.parse().expect("an integral sum"),
        other => panic!("unexpected sum {other:?}"),
    };
    assert_eq!(n, 3 * ROUNDS as i64, "every transaction committed once");
    let us = |d: Duration| d.as_micros();
    let (w, wd, c, cd, b) = (
        median(whole),
        median(whole_direct),
        median(commit),
        median(commit_direct),
        median(batch),
    );
    println!(
        "{engine}: transaction (begin, update, commit) median  iadb {} µs  sqlx {} µs  ratio {:.2}",
        us(w),
        us(wd),
        w.as_secs_f64() / wd.as_secs_f64()
    );
    println!(
        "{engine}: commit round trip median  iadb {} µs  sqlx {} µs  overhead {} µs",
        us(c),
        us(cd),
        us(c) as i128 - us(cd) as i128
    );
    println!(
        "{engine}: one-statement Batch median  iadb {} µs  (vs sqlx's whole transaction {} µs)",
        us(b),
        us(wd)
    );
}

#[tokio::main]
async fn main() {
    println!("{ROUNDS} rounds per figure, on this machine, in one run");
    {
        let server = TestServer::start(&["--database-url", "sqlite:///./bench.db"]);
        // The server's settings (WAL, synchronous=NORMAL, busy timeout,
        // foreign keys): a commit's cost depends on them.
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(server.dir.path().join("bench.db"))
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = sqlx::pool::PoolOptions::<sqlx::Sqlite>::new()
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("sqlx");
        compare("sqlite", &server, pool).await;
    }
    match std::env::var("IADB_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let server = TestServer::start(&["--database-url", &url]);
            let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
                .test_before_acquire(false)
                .connect(&url)
                .await
                .expect("sqlx");
            compare("postgresql", &server, pool).await;
        }
        _ => println!("postgresql: skipped (IADB_TEST_POSTGRES_URL is not set)"),
    }
    match std::env::var("IADB_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => {
            let server = TestServer::start(&["--database-url", &url]);
            let pool = sqlx::pool::PoolOptions::<sqlx::MySql>::new()
                .test_before_acquire(false)
                .connect(&url)
                .await
                .expect("sqlx");
            compare("mysql", &server, pool).await;
        }
        _ => println!("mysql: skipped (IADB_TEST_MYSQL_URL is not set)"),
    }
}
