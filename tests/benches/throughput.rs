//! Throughput and latency of iadb against the direct driver, measured in the
//! same run on the same database: `cargo bench -p iadb-tests --bench
//! throughput` (add `--no-default-features` to skip building DuckDB).
//!
//! Prints rows/s streaming through a server process vs sqlx reading the same
//! query, the ratio, the server's peak RSS, and the median point-select
//! latency through iadb vs sqlx. PostgreSQL runs when IADB_TEST_POSTGRES_URL
//! is set.

use futures::StreamExt;
use iadb::{DatabaseInterface, Value};
use iadb_tests::TestServer;
use std::time::{Duration, Instant};

const SQLITE_ROWS: u64 = 2_000_000;
const PG_ROWS: u64 = 1_000_000;
const POINT_SELECTS: usize = 2_000;

/// CPU time (user + system) a process has used so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 11 and 12 here.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Streams `sql` through the server; prints how much of the wall time the
/// server and this process spent on a CPU, to show which side limits.
async fn stream_through_iadb(
    db: &iadb_client::RemoteDatabase,
    sql: &str,
    server: &TestServer,
) -> (u64, Duration) {
    let (server_cpu, own_cpu) = (cpu_time(server.pid()), cpu_time(std::process::id()));
    let started = Instant::now();
    let mut rows = db.fetch_stream(sql, &[]).await.expect("stream").rows;
    let mut n = 0;
    while let Some(row) = rows.next().await {
        row.expect("row");
        n += 1;
    }
    let wall = started.elapsed();
    println!(
        "  stream: wall {:.2} s, server CPU {:.2} s, client CPU {:.2} s",
        wall.as_secs_f64(),
        (cpu_time(server.pid()) - server_cpu).as_secs_f64(),
        (cpu_time(std::process::id()) - own_cpu).as_secs_f64()
    );
    (n, wall)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(engine: &str, rows: u64, iadb: Duration, direct: Duration, server: &TestServer) {
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "{engine}: {rows} rows  iadb {:>9.0} rows/s  sqlx {:>9.0} rows/s  ratio {:.2}  server peak RSS {} MiB",
        rate(iadb),
        rate(direct),
        direct.as_secs_f64() / iadb.as_secs_f64(),
        server.proc_status_kib("VmHWM").unwrap_or(0) / 1024
    );
}

/// The floor under every call: the median round trip of the standard health
/// Check, which touches no engine.
async fn grpc_floor(server: &TestServer) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel);
    let mut times = Vec::with_capacity(POINT_SELECTS);
    for _ in 0..POINT_SELECTS {
        let started = Instant::now();
        health
            .check(HealthCheckRequest {
                service: "iadb.v1.Database".into(),
            })
            .await
            .expect("health check");
        times.push(started.elapsed());
    }
    println!(
        "grpc: health Check round trip median {} µs (no engine work)",
        median(times).as_micros()
    );
}

async fn sqlite() {
    let server = TestServer::start(&["--database-url", "sqlite:///./bench.db"]);
    grpc_floor(&server).await;
    let db = server.client("").await;
    db.execute(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, label TEXT, score REAL)",
        &[],
    )
    .await
    .expect("create");
    db.execute(
        &format!("INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {SQLITE_ROWS}) SELECT x, 'label-' || x, x * 0.25 FROM c"),
        &[],
    )
    .await
    .expect("fill");
    let sql = "SELECT id, label, score FROM big";
    let (n, iadb) = stream_through_iadb(&db, sql, &server).await;
    assert_eq!(n, SQLITE_ROWS);
    // The baselines' pools skip sqlx's ping before each acquire, as the
    // server's pools do (the server pings a networked connection only after
    // 1 s idle): the difference measured is the gateway, not pool settings.
    let pool = sqlx::pool::PoolOptions::<sqlx::Sqlite>::new()
        .test_before_acquire(false)
        .connect(&format!(
            "sqlite://{}",
            server.dir.path().join("bench.db").display()
        ))
        .await
        .expect("sqlx");
    let started = Instant::now();
    let mut direct = sqlx::query_as::<_, (i64, String, f64)>(sql).fetch(&pool);
    while let Some(row) = direct.next().await {
        row.expect("row");
    }
    report("sqlite", SQLITE_ROWS, iadb, started.elapsed(), &server);
    point_selects(
        "sqlite",
        &db,
        &pool,
        "SELECT id, label, score FROM big WHERE id = ?",
    )
    .await;
}

async fn point_selects<DB: sqlx::Database>(
    engine: &str,
    db: &iadb_client::RemoteDatabase,
    pool: &sqlx::Pool<DB>,
    sql: &str,
) where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64, String, f64): sqlx::FromRow<'r, DB::Row>,
{
    let direct_sql = if engine == "postgresql" {
        sql.replace('?', "$1")
    } else {
        sql.to_owned()
    };
    let mut through = Vec::with_capacity(POINT_SELECTS);
    let mut direct = Vec::with_capacity(POINT_SELECTS);
    for i in 0..POINT_SELECTS {
        let id = (i as i64 * 7919) % 100_000 + 1;
        let started = Instant::now();
        let row = db
            .fetch_one(sql, &[Value::Int(id)])
            .await
            .expect("point select");
        assert!(row.is_some(), "id {id} is in the table");
        through.push(started.elapsed());
        let started = Instant::now();
        // Decoded, as iadb decodes every value it sends.
        let row: Option<(i64, String, f64)> = sqlx::query_as(&direct_sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .expect("direct");
        assert!(row.is_some(), "id {id} is in the table");
        direct.push(started.elapsed());
    }
    let (a, b) = (median(through), median(direct));
    println!(
        "{engine}: point select median  iadb {} µs  sqlx {} µs  overhead {} µs",
        a.as_micros(),
        b.as_micros(),
        a.as_micros() as i128 - b.as_micros() as i128
    );
}

async fn postgres(url: &str) {
    let server = TestServer::start(&["--database-url", url]);
    let db = server.client("").await;
    let sql = format!(
        "SELECT x::int8 AS id, 'label-' || x AS label, x * 0.5::float8 AS score, TIMESTAMP '2024-01-01' + x * INTERVAL '1 second' AS at FROM generate_series(1, {PG_ROWS}) AS g(x)"
    );
    let (n, iadb) = stream_through_iadb(&db, &sql, &server).await;
    assert_eq!(n, PG_ROWS);
    let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("sqlx");
    let started = Instant::now();
    let mut direct =
        sqlx::query_as::<_, (i64, String, f64, chrono::NaiveDateTime)>(&sql).fetch(&pool);
    while let Some(row) = direct.next().await {
        row.expect("row");
    }
    report("postgresql", PG_ROWS, iadb, started.elapsed(), &server);
    db.execute("DROP TABLE IF EXISTS bench_points", &[])
        .await
        .expect("drop");
    db.execute(
        "CREATE TABLE bench_points AS SELECT x::int8 AS id, 'label-' || x AS label, x * 0.25::float8 AS score FROM generate_series(1, 100000) AS g(x)",
        &[],
    )
    .await
    .expect("fill");
    db.execute("ALTER TABLE bench_points ADD PRIMARY KEY (id)", &[])
        .await
        .expect("pk");
    point_selects(
        "postgresql",
        &db,
        &pool,
        "SELECT id, label, score FROM bench_points WHERE id = ?",
    )
    .await;
    db.execute("DROP TABLE bench_points", &[])
        .await
        .expect("drop");
}

#[tokio::main]
async fn main() {
    // Measured from a task on the runtime's workers, as a service's handler
    // calls its database, not from `block_on` on the main thread: there,
    // every socket wake-up crosses from a worker to the main thread, which
    // adds about 35 µs to each gRPC round trip on the 2-core machine. The
    // driver's calls run in the same task.
    let run = tokio::spawn(async {
        sqlite().await;
        match std::env::var("IADB_TEST_POSTGRES_URL") {
            Ok(url) => postgres(&url).await,
            Err(_) => println!("postgresql: skipped (IADB_TEST_POSTGRES_URL is not set)"),
        }
    });
    if let Err(e) = run.await {
        std::panic::resume_unwind(e.into_panic());
    }
}
