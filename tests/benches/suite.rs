//! The benchmark suite of issue 14, part 1: iadb against each engine's own
//! driver, both measured in the same run on the same database, from one
//! command:
//!
//! ```text
//! IADB_TEST_POSTGRES_URL=postgresql://... IADB_TEST_MYSQL_URL=mysql://... \
//!   cargo bench -p iadb-tests --no-default-features --bench suite
//! ```
//!
//! Without `--no-default-features` the bench is built with DuckDB (its
//! C++ compiled in release mode once, which takes a while) and measures it
//! too, against the `duckdb` crate (`suite/duckdb.rs`).
//!
//! It starts its own server (`iadb-test-server`, built with the bench) on
//! 127.0.0.1 for each engine and measures, through iadb and directly through
//! sqlx (pgbench for TPC-B):
//! - streaming 1,000,000 rows (bigint, text(32), double, timestamp): rows/s;
//! - a point select by primary key from 1 client: p50 and p99;
//! - point selects from 32 concurrent clients: requests/s;
//! - ExecuteMany of 100,000 rows vs the same prepared INSERT run 100,000
//!   times in one transaction: rows/s;
//! - pgbench's default TPC-B-like script over the Transaction RPC, 8
//!   clients, vs `pgbench -n -c 8 -j 2 -t N` on the same database;
//! - the server's peak RSS over idle while streaming 1M and 5M rows (a fresh
//!   server per size).
//!
//! - streaming the same 1,000,000 rows as Arrow record batches
//!   (`fetch_arrow`, docs/arrow.md) against the same sqlx pass: rows/s.
//!
//! `IADB_BENCH_ONLY` runs only the workloads it lists, comma-separated:
//! `stream` (rows and Arrow), `point` (1 client, and the gRPC floor),
//! `clients` (32 clients), `many` (ExecuteMany), `tpcb`, `rss`; e.g.
//! `IADB_BENCH_ONLY=point,many`.
//!
//! An engine whose URL (`IADB_TEST_POSTGRES_URL`, `IADB_TEST_MYSQL_URL`) is
//! not set is skipped with a notice. The output ends with a markdown table
//! for `bench/RESULTS.md`. Every loop is bounded in count; nothing asserts a
//! time.

#[cfg(feature = "duckdb")]
#[path = "suite/duckdb.rs"]
mod duckdb_suite;

use chrono::NaiveDateTime;
use futures::StreamExt;
use iadb::{DatabaseInterface, Value};
use iadb_client::{RemoteDatabase, TransactionOptions};
use iadb_tests::TestServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STREAM_ROWS: u64 = 1_000_000;
/// Each side runs the stream, 32-client, ExecuteMany and TPC-B workloads
/// this many times, alternating with the other side; the best pass counts,
/// so that a burst of load from another process on the machine does not
/// decide a ratio.
const PASSES: usize = 3;
const POINT_SELECTS: usize = 2_000;
const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 200;
const INSERT_ROWS: usize = 100_000;
const TPCB_CLIENTS: usize = 8;
const TPCB_TRANSACTIONS_PER_CLIENT: usize = 250;
const RSS_SIZES: [u64; 2] = [1_000_000, 5_000_000];
/// The server's default pool size; the direct pools get the same.
const POOL_SIZE: u32 = 10;

type Row4 = (i64, String, f64, NaiveDateTime);

/// One line of the closing table.
struct Line {
    workload: String,
    engine: &'static str,
    iadb: String,
    direct: String,
    ratio: String,
    target: String,
    met: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
            Kind::Mysql => "MariaDB",
        }
    }

    /// `CREATE TABLE` for the four benchmark columns.
    fn create(self, table: &str) -> String {
        let (double, timestamp) = match self {
            Kind::Sqlite => ("DOUBLE", "TIMESTAMP"),
            Kind::Postgres => ("DOUBLE PRECISION", "TIMESTAMP"),
            // MariaDB's TIMESTAMP is zoned and ends in 2038.
            Kind::Mysql => ("DOUBLE", "DATETIME"),
        };
        format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, label VARCHAR(32) NOT NULL, \
             score {double} NOT NULL, at {timestamp} NOT NULL)"
        )
    }

    /// Fills `table` with ids 1..=n, a 32-character label, a double and a
    /// timestamp, inside the engine.
    fn fill(self, table: &str, n: u64) -> String {
        match self {
            Kind::Sqlite => format!(
                "INSERT INTO {table} WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 \
                 FROM c WHERE x < {n}) SELECT x, printf('%032d', x), x * 0.25, \
                 datetime('2024-01-01', '+' || x || ' seconds') FROM c"
            ),
            Kind::Postgres => format!(
                "INSERT INTO {table} SELECT x, lpad(x::text, 32, 'x'), x * 0.25, \
                 TIMESTAMP '2024-01-01' + x * INTERVAL '1 second' FROM generate_series(1, {n}) AS g(x)"
            ),
            // MariaDB's SEQUENCE engine.
            Kind::Mysql => format!(
                "INSERT INTO {table} SELECT seq, LPAD(seq, 32, 'x'), seq * 0.25, \
                 TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_{n}"
            ),
        }
    }

    /// A query generating `n` rows of the four columns without a table (the
    /// memory runs).
    fn generate(self, n: u64) -> String {
        match self {
            Kind::Sqlite => format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
                 SELECT x AS id, printf('%032d', x) AS label, x * 0.25 AS score, \
                 datetime('2024-01-01', '+' || x || ' seconds') AS at FROM c"
            ),
            _ => format!(
                "SELECT x::int8 AS id, lpad(x::text, 32, 'x') AS label, x * 0.25::float8 AS score, \
                 TIMESTAMP '2024-01-01' + x * INTERVAL '1 second' AS at \
                 FROM generate_series(1, {n}) AS g(x)"
            ),
        }
    }

    /// `sql` with iadb's `?` placeholders in the driver's own syntax.
    fn direct_sql(self, sql: &str) -> String {
        if self != Kind::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// A deterministic generator (splitmix64): the same ids on both sides, no
/// dependency for a bench.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }
}

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A workload measured as a ratio, iadb over the direct driver (higher is
/// better), whose target is at least `at_least`; `direct_text` is how the
/// direct figure is shown.
fn ratio_line(
    workload: String,
    engine: &'static str,
    iadb: f64,
    direct: f64,
    direct_text: String,
    at_least: f64,
) -> Line {
    Line {
        workload,
        engine,
        iadb: thousands(iadb),
        direct: direct_text,
        ratio: format!("{:.2}", iadb / direct),
        target: format!("≥ {at_least:.1}×"),
        met: met(iadb / direct >= at_least),
    }
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "not met" }.to_owned()
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64()
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Row `i` of the ExecuteMany workload, as the direct loops bind it.
fn insert_row(i: usize) -> Row4 {
    let epoch = NaiveDateTime::parse_from_str("2024-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
        .expect("a timestamp");
    (
        i as i64 + 1,
        format!("{:0>32}", i + 1),
        i as f64 * 0.25,
        epoch + chrono::Duration::seconds(i as i64),
    )
}

/// The ExecuteMany workload's parameter sets, as iadb sends them.
fn insert_sets() -> Vec<Vec<Value>> {
    (0..INSERT_ROWS)
        .map(|i| {
            let (id, label, score, at) = insert_row(i);
            vec![
                Value::Int(id),
                Value::Text(label),
                Value::Float(score),
                Value::DateTime(at),
            ]
        })
        .collect()
}

/// Prints the 1-client point selects' p50 and p99 through iadb and
/// through `driver`, and gives their line.
fn point_select_line(
    name: &'static str,
    driver: &str,
    mut through: Vec<Duration>,
    mut direct: Vec<Duration>,
) -> Line {
    through.sort();
    direct.sort();
    let us = |d: Duration| d.as_micros();
    let (p50, p99, d50, d99) = (
        percentile(&through, 0.5),
        percentile(&through, 0.99),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
    );
    println!(
        "{name}: point select  iadb p50 {} µs p99 {} µs  {driver} p50 {} µs p99 {} µs",
        us(p50),
        us(p99),
        us(d50),
        us(d99)
    );
    let over = us(p50) as i128 - us(d50) as i128;
    Line {
        workload: "point select, 1 client (p50 / p99)".into(),
        engine: name,
        iadb: format!("{} / {} µs", us(p50), us(p99)),
        direct: format!("{} / {} µs", us(d50), us(d99)),
        ratio: format!("p50 +{over} µs"),
        target: "p50 ≤ direct + 100 µs".into(),
        met: met(over <= 100),
    }
}

/// `POINT_SELECTS` point selects by random id, each through iadb and then
/// through the driver (`direct` runs one for an id and gives its time,
/// having checked the row), interleaved; gives their line.
async fn point_selects<F, Fut>(
    db: &RemoteDatabase,
    point: &str,
    name: &'static str,
    driver: &str,
    mut direct: F,
) -> Line
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut ids = Ids(1);
    let (mut through, mut direct_times) = (
        Vec::with_capacity(POINT_SELECTS),
        Vec::with_capacity(POINT_SELECTS),
    );
    for _ in 0..POINT_SELECTS {
        let id = ids.between(1, STREAM_ROWS as i64);
        let started = Instant::now();
        let row = db
            .fetch_one(point, &[Value::Int(id)])
            .await
            .expect("point select");
        through.push(started.elapsed());
        assert!(row.is_some(), "id {id} is in the table");
        direct_times.push(direct(id).await);
    }
    point_select_line(name, driver, through, direct_times)
}

/// One ExecuteMany of the `INSERT_ROWS` sets through iadb: its time.
async fn execute_many_pass(db: &RemoteDatabase, insert: &str, sets: &[Vec<Value>]) -> Duration {
    let started = Instant::now();
    let outcome = db.execute_many(insert, sets).await.expect("execute_many");
    let took = started.elapsed();
    assert_eq!(
        outcome.rows_affected, INSERT_ROWS as u64,
        "every row inserted"
    );
    took
}

/// Prints the best ExecuteMany pass against the best pass of `driver`'s
/// prepared INSERT in one transaction, and gives their line.
fn execute_many_line(
    name: &'static str,
    driver: &str,
    through: Duration,
    direct: Duration,
) -> Line {
    let (a, b) = (
        rate(INSERT_ROWS as f64, through),
        rate(INSERT_ROWS as f64, direct),
    );
    println!(
        "{name}: insert {INSERT_ROWS} rows  iadb ExecuteMany {a:.0} rows/s  {driver} prepared INSERT in one transaction {b:.0} rows/s  ratio {:.2}",
        a / b
    );
    ratio_line(
        format!("ExecuteMany 100k rows (rows/s, best of {PASSES})"),
        name,
        a,
        b,
        thousands(b),
        0.9,
    )
}

/// Prints the best stream passes (iadb as rows and as Arrow, against
/// `driver`'s rows) and gives their two lines.
fn stream_lines(
    name: &'static str,
    driver: &str,
    through: Duration,
    arrow: Duration,
    direct: Duration,
) -> [Line; 2] {
    let [a, arrow, b] = [through, arrow, direct].map(|d| rate(STREAM_ROWS as f64, d));
    println!(
        "{name}: stream {STREAM_ROWS} rows  iadb {a:.0} rows/s  {driver} {b:.0} rows/s  ratio {:.2}",
        a / b
    );
    println!(
        "{name}: stream {STREAM_ROWS} rows as Arrow  iadb {arrow:.0} rows/s  {driver} {b:.0} rows/s  \
         ratio {:.2}",
        arrow / b
    );
    [
        ratio_line(
            format!("stream 1M rows (rows/s, best of {PASSES})"),
            name,
            a,
            b,
            thousands(b),
            0.8,
        ),
        ratio_line(
            format!("stream 1M rows, Arrow (rows/s, best of {PASSES})"),
            name,
            arrow,
            b,
            thousands(b),
            0.9,
        ),
    ]
}

/// Streams `sql` through the server; returns the wall time and prints the
/// CPU time each side used, to show which side limits.
async fn stream_iadb(db: &RemoteDatabase, sql: &str, server: &TestServer) -> Duration {
    let (server_cpu, own_cpu) = (cpu_time(server.pid()), cpu_time(std::process::id()));
    let started = Instant::now();
    let mut rows = db.fetch_stream(sql, &[]).await.expect("stream").rows;
    let mut n = 0;
    while let Some(row) = rows.next().await {
        row.expect("row");
        n += 1;
    }
    let wall = started.elapsed();
    assert_eq!(n, STREAM_ROWS, "every row arrived");
    println!(
        "    iadb pass: {:.2} s wall, server CPU {:.2} s, bench CPU {:.2} s",
        wall.as_secs_f64(),
        (cpu_time(server.pid()) - server_cpu).as_secs_f64(),
        (cpu_time(std::process::id()) - own_cpu).as_secs_f64()
    );
    wall
}

/// Streams `sql` through the server as Arrow record batches; returns the
/// wall time, with the CPU time each side used.
async fn stream_arrow(db: &RemoteDatabase, sql: &str, server: &TestServer) -> Duration {
    let (server_cpu, own_cpu) = (cpu_time(server.pid()), cpu_time(std::process::id()));
    let started = Instant::now();
    let mut batches = db.fetch_arrow(sql, &[]).await.expect("stream").batches;
    let mut n = 0u64;
    while let Some(batch) = batches.next().await {
        n += batch.expect("batch").num_rows() as u64;
    }
    let wall = started.elapsed();
    assert_eq!(n, STREAM_ROWS, "every row arrived");
    println!(
        "    arrow pass: {:.2} s wall, server CPU {:.2} s, bench CPU {:.2} s",
        wall.as_secs_f64(),
        (cpu_time(server.pid()) - server_cpu).as_secs_f64(),
        (cpu_time(std::process::id()) - own_cpu).as_secs_f64()
    );
    wall
}

/// Whether `workload` runs: every one does unless `IADB_BENCH_ONLY`
/// lists some.
fn runs(workload: &str) -> bool {
    match std::env::var("IADB_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|w| w.trim() == workload),
        _ => true,
    }
}

/// [`REQUESTS_PER_CLIENT`] point selects from each of `clients`, all at
/// once, each on a task of its own; returns the wall time.
async fn concurrent_iadb(clients: Vec<Arc<RemoteDatabase>>, point: &str) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, db)| {
            let point = point.to_owned();
            tokio::spawn(async move {
                let mut ids = Ids(100 + c as u64);
                for _ in 0..REQUESTS_PER_CLIENT {
                    let id = ids.between(1, STREAM_ROWS as i64);
                    let row = db
                        .fetch_one(&point, &[Value::Int(id)])
                        .await
                        .expect("point select");
                    assert!(row.is_some(), "id {id} is in the table");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

/// [`REQUESTS_PER_CLIENT`] health Checks from each of 32 clients with a
/// connection each, all at once: the transport's own ceiling for the
/// 32-client workload (a gRPC round trip with no engine work).
async fn concurrent_floor(server: &TestServer) -> Duration {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(HealthClient::new(server.channel().await));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut health| {
            tokio::spawn(async move {
                for _ in 0..REQUESTS_PER_CLIENT {
                    health
                        .check(HealthCheckRequest {
                            service: "iadb.v1.Database".into(),
                        })
                        .await
                        .expect("health check");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

/// The same from 32 tasks sharing the direct pool.
async fn concurrent_direct<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, point: &str) -> Duration
where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> Row4: sqlx::FromRow<'r, DB::Row>,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (pool, point) = (pool.clone(), point.to_owned());
            tokio::spawn(async move {
                let mut ids = Ids(100 + c as u64);
                for _ in 0..REQUESTS_PER_CLIENT {
                    let id = ids.between(1, STREAM_ROWS as i64);
                    let row: Option<Row4> = sqlx::query_as(&point)
                        .bind(id)
                        .fetch_optional(&pool)
                        .await
                        .expect("direct point select");
                    assert!(row.is_some(), "id {id} is in the table");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

/// Everything one engine is measured on, with the direct pool `pool`.
async fn engine<DB: sqlx::Database>(
    kind: Kind,
    pool: sqlx::Pool<DB>,
    server: &TestServer,
    lines: &mut Vec<Line>,
) where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> NaiveDateTime: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> Row4: sqlx::FromRow<'r, DB::Row>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
{
    let name = kind.name();
    let version = match kind {
        Kind::Sqlite => "SELECT sqlite_version()",
        _ => "SELECT version()",
    };
    let version: (String,) = sqlx::query_as(version)
        .fetch_one(&pool)
        .await
        .expect("version");
    println!("{name}: version {}", version.0);
    let table = format!("bench_rows_{}", std::process::id());
    let db = Arc::new(server.client("").await);
    println!("{name}: filling {table} with {STREAM_ROWS} rows");
    for sql in [
        format!("DROP TABLE IF EXISTS {table}"),
        kind.create(&table),
        kind.fill(&table, STREAM_ROWS),
    ] {
        sqlx::query(&sql).execute(&pool).await.expect("setup");
    }

    // Streaming.
    if runs("stream") {
        let sql = format!("SELECT id, label, score, at FROM {table}");
        let (mut best_iadb, mut best_direct) = (Duration::MAX, Duration::MAX);
        let mut best_arrow = Duration::MAX;
        for _ in 0..PASSES {
            best_iadb = best_iadb.min(stream_iadb(&db, &sql, server).await);
            best_arrow = best_arrow.min(stream_arrow(&db, &sql, server).await);
            let started = Instant::now();
            let mut rows = sqlx::query_as::<_, Row4>(&sql).fetch(&pool);
            let mut n = 0;
            while let Some(row) = rows.next().await {
                row.expect("row");
                n += 1;
            }
            let wall = started.elapsed();
            assert_eq!(n, STREAM_ROWS, "every row arrived");
            println!("    sqlx pass: {:.2} s wall", wall.as_secs_f64());
            best_direct = best_direct.min(wall);
        }
        lines.extend(stream_lines(
            name,
            "sqlx",
            best_iadb,
            best_arrow,
            best_direct,
        ));
    }

    // Point select, 1 client, interleaved.
    let point = format!("SELECT id, label, score, at FROM {table} WHERE id = ?");
    let point_direct = kind.direct_sql(&point);
    if runs("point") {
        let (pool, point_direct) = (&pool, point_direct.as_str());
        let line = point_selects(&db, &point, name, "sqlx", |id| async move {
            let started = Instant::now();
            // Decoded, as iadb decodes every value it sends.
            let row: Option<Row4> = sqlx::query_as(point_direct)
                .bind(id)
                .fetch_optional(pool)
                .await
                .expect("direct point select");
            let took = started.elapsed();
            assert!(row.is_some(), "id {id} is in the table");
            took
        })
        .await;
        lines.push(line);
    }

    // Point select, 32 clients (PostgreSQL and SQLite): through iadb both
    // as 32 clients with a connection each and as 32 tasks sharing one
    // client (one HTTP/2 connection); directly, 32 tasks sharing a pool of
    // the server's size.
    if kind != Kind::Mysql && runs("clients") {
        let mut own = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            own.push(Arc::new(server.client("").await));
        }
        let (mut separate, mut shared, mut direct) = (Duration::MAX, Duration::MAX, Duration::MAX);
        let mut floor = Duration::MAX;
        for _ in 0..PASSES {
            separate = separate.min(concurrent_iadb(own.clone(), &point).await);
            shared = shared.min(concurrent_iadb(vec![db.clone(); CLIENTS], &point).await);
            direct = direct.min(concurrent_direct(&pool, &point_direct).await);
            floor = floor.min(concurrent_floor(server).await);
        }
        let total = (CLIENTS * REQUESTS_PER_CLIENT) as f64;
        let b = rate(total, direct);
        let ceiling = rate(total, floor);
        println!(
            "{name}: gRPC floor, {CLIENTS} clients (health Check, no engine work)  {ceiling:.0} req/s  \
             = {:.2} of sqlx's {b:.0} req/s",
            ceiling / b
        );
        lines.push(Line {
            workload: format!(
                "gRPC floor, {CLIENTS} clients, a connection each (health Checks/s, no engine work, best of {PASSES})"
            ),
            engine: name,
            iadb: thousands(ceiling),
            direct: thousands(b),
            ratio: format!("{:.2}", ceiling / b),
            target: "(the ceiling of the ratio above)".into(),
            met: "".into(),
        });
        for (how, through) in [
            ("a connection each", separate),
            ("one shared connection", shared),
        ] {
            let a = rate(total, through);
            println!(
                "{name}: point select, {CLIENTS} clients ({how})  iadb {a:.0} req/s  sqlx {b:.0} req/s (pool {POOL_SIZE})  ratio {:.2}",
                a / b
            );
            lines.push(ratio_line(
                format!("point select, {CLIENTS} clients, {how} (requests/s, best of {PASSES})"),
                name,
                a,
                b,
                thousands(b),
                0.8,
            ));
        }
    }
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .expect("drop");

    // ExecuteMany of 100,000 rows vs the prepared INSERT in one transaction.
    if !runs("many") {
        return;
    }
    let insert_table = format!("bench_insert_{}", std::process::id());
    let insert = format!("INSERT INTO {insert_table} (id, label, score, at) VALUES (?, ?, ?, ?)");
    let insert_direct = kind.direct_sql(&insert);
    let fresh = async || {
        for sql in [
            format!("DROP TABLE IF EXISTS {insert_table}"),
            kind.create(&insert_table),
        ] {
            sqlx::query(&sql).execute(&pool).await.expect("setup");
        }
    };
    let sets = insert_sets();
    let (mut through, mut direct) = (Duration::MAX, Duration::MAX);
    for _ in 0..PASSES {
        fresh().await;
        through = through.min(execute_many_pass(&db, &insert, &sets).await);
        fresh().await;
        let rows: Vec<Row4> = (0..INSERT_ROWS).map(insert_row).collect();
        let started = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        for (id, label, score, at) in rows {
            sqlx::query(&insert_direct)
                .bind(id)
                .bind(label)
                .bind(score)
                .bind(at)
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx.commit().await.expect("commit");
        direct = direct.min(started.elapsed());
    }
    sqlx::query(&format!("DROP TABLE {insert_table}"))
        .execute(&pool)
        .await
        .expect("drop");
    lines.push(execute_many_line(name, "sqlx", through, direct));
}

/// One pass of pgbench's TPC-B-like script through iadb: transactions/s.
async fn tpcb_iadb(db: &Arc<RemoteDatabase>, pass: u64) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TPCB_CLIENTS)
        .map(|c| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut random = Ids(1000 + 100 * pass + c as u64);
                for _ in 0..TPCB_TRANSACTIONS_PER_CLIENT {
                    let aid = random.between(1, 100_000);
                    let bid = 1;
                    let tid = random.between(1, 10);
                    let delta = random.between(-5000, 5000);
                    let mut tx = db
                        .transaction(TransactionOptions::default())
                        .await
                        .expect("begin");
                    tx.execute(
                        "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?",
                        &[Value::Int(delta), Value::Int(aid)],
                    )
                    .await
                    .expect("update accounts");
                    tx.fetch_one(
                        "SELECT abalance FROM pgbench_accounts WHERE aid = ?",
                        &[Value::Int(aid)],
                    )
                    .await
                    .expect("select");
                    tx.execute(
                        "UPDATE pgbench_tellers SET tbalance = tbalance + ? WHERE tid = ?",
                        &[Value::Int(delta), Value::Int(tid)],
                    )
                    .await
                    .expect("update tellers");
                    tx.execute(
                        "UPDATE pgbench_branches SET bbalance = bbalance + ? WHERE bid = ?",
                        &[Value::Int(delta), Value::Int(bid)],
                    )
                    .await
                    .expect("update branches");
                    tx.execute(
                        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                         VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP)",
                        &[
                            Value::Int(tid),
                            Value::Int(bid),
                            Value::Int(aid),
                            Value::Int(delta),
                        ],
                    )
                    .await
                    .expect("insert history");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    rate(
        (TPCB_CLIENTS * TPCB_TRANSACTIONS_PER_CLIENT) as f64,
        started.elapsed(),
    )
}

/// pgbench's default TPC-B-like script over the Transaction RPC, 8 clients,
/// against `pgbench -c 8 -j 2 -t N` on the same database.
async fn tpcb(url: &str, server: &TestServer, lines: &mut Vec<Line>) {
    let pgbench = |args: &[&str]| {
        let out = std::process::Command::new("pgbench")
            .args(args)
            .arg(url)
            .output();
        match out {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => Err(format!(
                "pgbench {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("pgbench could not start: {e}")),
        }
    };
    // Scale 1 (pgbench's default): 100,000 accounts, 10 tellers, 1 branch.
    if let Err(why) = pgbench(&["-i", "-q"]) {
        println!("PostgreSQL: TPC-B skipped ({why})");
        lines.push(Line {
            workload: "TPC-B-like, 8 clients (tps)".into(),
            engine: "PostgreSQL",
            iadb: "skipped".into(),
            direct: "skipped (no pgbench)".into(),
            ratio: "".into(),
            target: "≥ 0.7×".into(),
            met: "not measured".into(),
        });
        return;
    }
    let db = Arc::new(server.client("").await);
    let clients = TPCB_CLIENTS.to_string();
    let per_client = TPCB_TRANSACTIONS_PER_CLIENT.to_string();
    let (mut through, mut direct) = (0.0_f64, Ok(0.0_f64));
    for pass in 0..PASSES {
        // Each side starts from vacuumed tables (`-n` below: pgbench does
        // not vacuum on its own).
        pgbench(&["-i", "-I", "v"]).expect("vacuum");
        through = through.max(tpcb_iadb(&db, pass as u64).await);
        pgbench(&["-i", "-I", "v"]).expect("vacuum");
        let tps = pgbench(&["-n", "-c", &clients, "-j", "2", "-t", &per_client]).map(|out| {
            out.lines()
                .find_map(|l| {
                    l.strip_prefix("tps = ")?
                        .split_whitespace()
                        .next()?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        });
        direct = match (direct, tps) {
            (Ok(best), Ok(tps)) => Ok(best.max(tps)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    if let Err(why) = pgbench(&["-i", "-I", "d"]) {
        println!("PostgreSQL: dropping pgbench's tables failed: {why}");
    }
    let direct = direct.expect("pgbench run");
    println!(
        "PostgreSQL: TPC-B-like, {TPCB_CLIENTS} clients × {TPCB_TRANSACTIONS_PER_CLIENT}  iadb {through:.0} tps  pgbench {direct:.0} tps  ratio {:.2}",
        through / direct
    );
    lines.push(ratio_line(
        format!(
            "TPC-B-like, {TPCB_CLIENTS} clients × {TPCB_TRANSACTIONS_PER_CLIENT} (tps, best of {PASSES})"
        ),
        "PostgreSQL",
        through,
        direct,
        format!("{} (pgbench)", thousands(direct)),
        0.7,
    ));
}

/// The server's peak RSS over idle while streaming each of [`RSS_SIZES`],
/// a fresh server per size.
async fn memory(kind: Kind, url: &str, lines: &mut Vec<Line>) {
    let mut over = Vec::new();
    for n in RSS_SIZES {
        let server = TestServer::start(&["--database-url", url]);
        let db = server.client("").await;
        db.fetch_one("SELECT 1", &[]).await.expect("warm up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle = server.proc_status_kib("VmRSS").unwrap_or(0);
        let mut rows = db
            .fetch_stream(&kind.generate(n), &[])
            .await
            .expect("stream")
            .rows;
        let mut count = 0;
        while let Some(row) = rows.next().await {
            row.expect("row");
            count += 1;
        }
        assert_eq!(count, n, "every row arrived");
        let peak = server.proc_status_kib("VmHWM").unwrap_or(0);
        let mib = peak.saturating_sub(idle) as f64 / 1024.0;
        println!(
            "{}: server RSS streaming {n} rows  idle {} MiB  peak {} MiB  over idle {mib:.1} MiB",
            kind.name(),
            idle / 1024,
            peak / 1024
        );
        over.push(mib);
    }
    let (small, large) = (over[0], over[1]);
    // "The same at 1M and 5M": within 4 MiB of each other.
    let flat = (large - small).abs() <= 4.0;
    lines.push(Line {
        workload: "server peak RSS over idle, 1M / 5M rows".into(),
        engine: kind.name(),
        iadb: format!("{small:.1} / {large:.1} MiB"),
        direct: "n/a".into(),
        ratio: "".into(),
        target: "≤ 64 MiB, flat (±4 MiB)".into(),
        met: met(small <= 64.0 && large <= 64.0 && flat),
    });
}

/// The floor under every call: the median round trip of the standard health
/// Check, which touches no engine.
async fn grpc_floor(server: &TestServer) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(server.channel().await);
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
    times.sort();
    println!(
        "gRPC floor: health Check round trip p50 {} µs (no engine work)",
        percentile(&times, 0.5).as_micros()
    );
}

fn skipped(lines: &mut Vec<Line>, engine: &'static str, why: &str) {
    println!("{engine}: skipped ({why})");
    lines.push(Line {
        workload: "all".into(),
        engine,
        iadb: format!("skipped: {why}"),
        direct: "".into(),
        ratio: "".into(),
        target: "".into(),
        met: "not measured".into(),
    });
}

fn url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

async fn run() -> Vec<Line> {
    let mut lines = Vec::new();
    println!(
        "iadb benchmark suite: both sides in this run, {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    {
        let server = TestServer::start(&["--database-url", "sqlite:///./bench.db"]);
        if runs("point") {
            grpc_floor(&server).await;
        }
        // The server's settings (WAL, synchronous=NORMAL, busy timeout,
        // foreign keys). The baselines' pools skip sqlx's ping before each
        // acquire, as the server's pools do: the difference measured is the
        // gateway, not pool settings.
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(server.dir.path().join("bench.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = sqlx::pool::PoolOptions::<sqlx::Sqlite>::new()
            .max_connections(POOL_SIZE)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("sqlx");
        engine(Kind::Sqlite, pool, &server, &mut lines).await;
    }

    let postgres = url("IADB_TEST_POSTGRES_URL");
    match &postgres {
        Some(url) => {
            let server = TestServer::start(&["--database-url", url]);
            let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
                .max_connections(POOL_SIZE)
                .test_before_acquire(false)
                .connect(url)
                .await
                .expect("sqlx");
            engine(Kind::Postgres, pool, &server, &mut lines).await;
            if runs("tpcb") {
                tpcb(url, &server, &mut lines).await;
            }
        }
        None => skipped(
            &mut lines,
            "PostgreSQL",
            "IADB_TEST_POSTGRES_URL is not set",
        ),
    }

    match url("IADB_TEST_MYSQL_URL") {
        Some(url) => {
            let server = TestServer::start(&["--database-url", &url]);
            let pool = sqlx::pool::PoolOptions::<sqlx::MySql>::new()
                .max_connections(POOL_SIZE)
                .test_before_acquire(false)
                .connect(&url)
                .await
                .expect("sqlx");
            engine(Kind::Mysql, pool, &server, &mut lines).await;
        }
        None => skipped(&mut lines, "MariaDB", "IADB_TEST_MYSQL_URL is not set"),
    }

    #[cfg(feature = "duckdb")]
    duckdb_suite::engine(&mut lines).await;
    #[cfg(not(feature = "duckdb"))]
    skipped(
        &mut lines,
        "DuckDB",
        "not built: the bench was built with --no-default-features",
    );

    if runs("rss") {
        memory(Kind::Sqlite, "sqlite:///./rss.db", &mut lines).await;
        match &postgres {
            Some(url) => memory(Kind::Postgres, url, &mut lines).await,
            None => println!("PostgreSQL: memory skipped (IADB_TEST_POSTGRES_URL is not set)"),
        }
    }

    lines.push(Line {
        workload: "Python: 1M rows to tuples / to a DataFrame".into(),
        engine: "PostgreSQL",
        iadb: "see client/python/bench".into(),
        direct: "".into(),
        ratio: "".into(),
        target: "≥ 1.0× psycopg 3; ≥ connectorx, adbc".into(),
        met: "see client/python/bench".into(),
    });
    lines
}

#[tokio::main]
async fn main() {
    // Measured from a task on the runtime's workers, as a service's handler
    // calls its database, not from `block_on` on the main thread: there,
    // every socket wake-up crosses from a worker to the main thread, which
    // adds about 35 µs to each gRPC round trip on the 2-core machine. The
    // driver's calls run in the same task.
    let lines = match tokio::spawn(run()).await {
        Ok(lines) => lines,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    println!(
        "\nload average after: {}\n",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("| workload | engine | iadb | direct | ratio | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for l in lines {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            l.workload, l.engine, l.iadb, l.direct, l.ratio, l.target, l.met
        );
    }
}
