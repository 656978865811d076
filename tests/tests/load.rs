//! A load test through a server process: 64 concurrent clients, each on a
//! connection of its own, run a fixed mix of 50 reads and writes, on SQLite
//! and on PostgreSQL. No call may fail, every client reads its own
//! acknowledged writes, and the table ends with exactly the acknowledged
//! inserts. Latency percentiles go to stderr directly, so they are visible
//! when the tests pass.

use iadb::{DatabaseInterface, Value};
use iadb_client::{RemoteDatabase, RetryPolicy};
use iadb_tests::{TestServer, harness::skip};
use std::{
    collections::BTreeMap,
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Barrier;

const CLIENTS: i64 = 64;

/// One load at a time: the two engines' runs would otherwise share the
/// machine's cores, and each one's latencies would measure the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const OPS_PER_CLIENT: i64 = 50;

/// One kind of operation of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Insert,
    Update,
    PointRead,
    RangeRead,
    Count,
}

/// Operation `k` of a client: 40% inserts, 20% updates of the client's own
/// rows, 20% point reads of them, 10% range reads, 10% counts. The first is
/// an insert, so reads and updates always have a row of the client's own.
fn op_of(k: i64) -> Op {
    match k % 10 {
        0 | 3 | 5 | 8 => Op::Insert,
        1 | 6 => Op::PointRead,
        2 | 7 => Op::Update,
        4 => Op::RangeRead,
        _ => Op::Count,
    }
}

/// What one client saw: latencies by operation, inserts acknowledged,
/// failures (with what was being done).
#[derive(Default)]
struct ClientLog {
    latencies: Vec<(Op, Duration)>,
    inserted: Vec<i64>,
    failures: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn run_client(db: RemoteDatabase, table: Arc<str>, client: i64) -> ClientLog {
    let mut log = ClientLog::default();
    for k in 0..OPS_PER_CLIENT {
        let op = op_of(k);
        // The client's own rows: ids client * 1000 + k.
        let id = client * 1000 + k;
        let own = log.inserted.last().copied();
        let started = Instant::now();
        let outcome: Result<(), String> = match op {
            Op::Insert => db
                .execute(
                    &format!("INSERT INTO {table} (id, client, k, payload) VALUES (?, ?, ?, ?)"),
                    &[
                        Value::Int(id),
                        Value::Int(client),
                        Value::Int(0),
                        Value::Text(format!("row {id} of client {client}")),
                    ],
                )
                .await
                .map_err(|e| format!("{:?}: {}", e.kind(), e.message()))
                .and_then(|o| {
                    if o.rows_affected == 1 {
                        log.inserted.push(id);
                        Ok(())
                    } else {
                        Err(format!("insert affected {} rows", o.rows_affected))
                    }
                }),
            Op::Update => match own {
                Some(own) => db
                    .execute(
                        &format!("UPDATE {table} SET k = k + 1 WHERE id = ?"),
                        &[Value::Int(own)],
                    )
                    .await
                    .map_err(|e| format!("{:?}: {}", e.kind(), e.message()))
                    .and_then(|o| match o.rows_affected {
                        1 => Ok(()),
                        n => Err(format!("update of own row {own} affected {n} rows")),
                    }),
                None => Err("no own row to update".to_owned()),
            },
            Op::PointRead => match own {
                Some(own) => db
                    .fetch_one(
                        &format!("SELECT id, client, payload FROM {table} WHERE id = ?"),
                        &[Value::Int(own)],
                    )
                    .await
                    .map_err(|e| format!("{:?}: {}", e.kind(), e.message()))
                    .and_then(|row| match row {
                        Some(row) if row.get("client") == Some(&Value::Int(client)) => Ok(()),
                        other => Err(format!("own row {own} read back as {other:?}")),
                    }),
                None => Err("no own row to read".to_owned()),
            },
            Op::RangeRead => db
                .fetch_all(
                    &format!("SELECT id, k, payload FROM {table} WHERE client = ? ORDER BY id"),
                    &[Value::Int(client)],
                )
                .await
                .map_err(|e| format!("{:?}: {}", e.kind(), e.message()))
                .and_then(|rows| {
                    if rows.len() == log.inserted.len() {
                        Ok(())
                    } else {
                        Err(format!(
                            "range read {} rows, {} inserted",
                            rows.len(),
                            log.inserted.len()
                        ))
                    }
                }),
            Op::Count => db
                .fetch_one(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
                .await
                .map_err(|e| format!("{:?}: {}", e.kind(), e.message()))
                .and_then(|row| match row.as_ref().and_then(|r| r.get("n")) {
                    Some(Value::Int(n)) if *n >= log.inserted.len() as i64 => Ok(()),
                    other => Err(format!("count read {other:?}")),
                }),
        };
        log.latencies.push((op, started.elapsed()));
        if let Err(e) = outcome {
            log.failures
                .push(format!("client {client} op {k} {op:?}: {e}"));
        }
    }
    log
}

/// Runs the load against a server on `url`; `table` is created first.
async fn load(engine: &str, url: &str, table: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(&["--database-url", url]);
    let setup = RemoteDatabase::new(server.endpoint.clone()).with_retry(RetryPolicy::none());
    setup.connect().await.expect("connect");
    setup
        .execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
        .await
        .expect("drop old table");
    setup
        .execute(
            &format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, client BIGINT NOT NULL, k BIGINT NOT NULL, payload TEXT NOT NULL)"
            ),
            &[],
        )
        .await
        .expect("create table");

    let table: Arc<str> = table.into();
    let barrier = Arc::new(Barrier::new(CLIENTS as usize));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        // No retries: every error counts. A per-call deadline so no call can
        // hang the test.
        let db = RemoteDatabase::new(server.endpoint.clone())
            .with_retry(RetryPolicy::none())
            .with_timeout(Duration::from_secs(60));
        db.connect().await.expect("connect a client");
        let barrier = barrier.clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            run_client(db, table, client).await
        }));
    }
    let started = Instant::now();
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(
            tokio::time::timeout(Duration::from_secs(300), task)
                .await
                .expect("a client finished its operations within 300 s")
                .expect("client task"),
        );
    }
    let wall = started.elapsed();

    let acked: usize = logs.iter().map(|l| l.inserted.len()).sum();
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    let mut all: Vec<Duration> = logs
        .iter()
        .flat_map(|l| l.latencies.iter().map(|(_, d)| *d))
        .collect();
    all.sort();
    let mut by_op: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
    for (op, d) in logs.iter().flat_map(|l| &l.latencies) {
        by_op.entry(*op).or_default().push(*d);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut line = format!(
        "load {engine}: {CLIENTS} clients x {OPS_PER_CLIENT} ops = {} calls in {:.2} s ({:.0} calls/s); all ops p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default()),
    );
    for (op, mut durations) in by_op {
        durations.sort();
        line.push_str(&format!(
            "; {op:?} p50 {:.2} ms p99 {:.2} ms",
            ms(percentile(&durations, 50.0)),
            ms(percentile(&durations, 99.0)),
        ));
    }
    line.push_str(&format!(
        "; {acked} inserts acknowledged, {} failures",
        failures.len()
    ));
    report(&line);

    assert!(
        failures.is_empty(),
        "{} unexpected errors, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let expected_inserts = (0..OPS_PER_CLIENT)
        .filter(|k| op_of(*k) == Op::Insert)
        .count()
        * CLIENTS as usize;
    assert_eq!(acked, expected_inserts);
    let row = setup
        .fetch_one(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
        .await
        .expect("final count")
        .expect("a row");
    assert_eq!(row.get("n"), Some(&Value::Int(acked as i64)));
    let row = setup
        .fetch_one(&format!("SELECT SUM(k) AS n FROM {table}"), &[])
        .await
        .expect("final sum")
        .expect("a row");
    let updates = (0..OPS_PER_CLIENT)
        .filter(|k| op_of(*k) == Op::Update)
        .count() as i64
        * CLIENTS;
    // SUM of BIGINT is NUMERIC on PostgreSQL: compare its digits.
    let sum = match row.get("n") {
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::Decimal(d)) => d.clone(),
        other => panic!("SUM(k) read as {other:?}"),
    };
    assert_eq!(
        sum,
        updates.to_string(),
        "every acknowledged update applied"
    );
    setup
        .execute(&format!("DROP TABLE {table}"), &[])
        .await
        .expect("drop table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_mixed_load_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("load.db").display());
    load("sqlite", &url, "load_t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_mixed_load_on_postgres() {
    let Ok(url) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip("postgresql", "IADB_TEST_POSTGRES_URL is not set");
        return;
    };
    let table = format!("load_t_{}", std::process::id());
    load("postgresql", &url, &table).await;
}
