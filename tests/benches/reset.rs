//! The cost of cleaning a pooled connection when it goes back to the pool
//! (docs/transactions.md, "Session state"), against one plain round trip on
//! the same connection, measured in the same run:
//! `cargo bench -p iadb-tests --no-default-features --bench reset`
//! (PostgreSQL and MySQL/MariaDB when IADB_TEST_POSTGRES_URL /
//! IADB_TEST_MYSQL_URL are set).
//!
//! The reset runs after the caller's answer has been sent (sqlx's
//! `after_release`, on its own task), so it adds to how long a connection
//! is busy per call, not to the call's latency.

use iadb::ConnectionConfig;
use iadb_server::backend::{PoolSettings, PostgresBackend};
use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};

const ROUNDS: usize = 2_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of `ROUNDS` runs of `sql` (simple protocol) on `conn`, after 100
/// unmeasured ones.
async fn time<C>(conn: &mut C, sql: &str) -> Duration
where
    for<'c> &'c mut C: Executor<'c>,
{
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 100 {
        let started = Instant::now();
        conn.execute(sqlx::raw_sql(sql)).await.expect(sql);
        if round >= 100 {
            times.push(started.elapsed());
        }
    }
    median(times)
}

fn report(engine: &str, what: &str, reset: Duration, round_trip: Duration) {
    println!(
        "{engine:<11} {what:<40} {:>8.1} µs   SELECT 1 {:>6.1} µs   ratio {:.2}",
        reset.as_secs_f64() * 1e6,
        round_trip.as_secs_f64() * 1e6,
        reset.as_secs_f64() / round_trip.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    println!("median of {ROUNDS} runs on one connection, same run, loopback");
    match std::env::var("IADB_TEST_POSTGRES_URL") {
        Ok(url) => {
            let config = ConnectionConfig::from_url(&url).expect("url");
            let backend = PostgresBackend::new(&config, PoolSettings::default()).expect("adapter");
            let reset = backend.reset_statement().to_owned();
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let round_trip = time(&mut conn, "SELECT 1").await;
            let cost = time(&mut conn, &reset).await;
            report("postgresql", "reset on release", cost, round_trip);
        }
        Err(_) => println!("postgresql: skipped (IADB_TEST_POSTGRES_URL is not set)"),
    }
    match std::env::var("IADB_TEST_MYSQL_URL") {
        Ok(url) => {
            let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("connect");
            let round_trip = time(&mut conn, "SELECT 1").await;
            let cost = time(&mut conn, "SELECT CAST(@@in_transaction AS SIGNED)").await;
            report("mariadb", "transaction check on release", cost, round_trip);
        }
        Err(_) => println!("mysql: skipped (IADB_TEST_MYSQL_URL is not set)"),
    }
}
