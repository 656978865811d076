//! DuckDB in the suite: iadb against the `duckdb` crate (the engine's own
//! Rust driver, the same bundled DuckDB the server links), both in this run.
//!
//! A DuckDB file belongs to one process, so the two sides read two files
//! filled by the same SQL (the timestamp column is `ts`: `at` is a keyword
//! in DuckDB): `bench.duckdb`, the server's, and
//! `direct.duckdb`, the bench's own, in the server's folder. Every DuckDB
//! call blocks: the direct side runs on this task's worker under
//! `block_in_place`, as a service would run it off its async workers.

use super::*;
use duckdb::types::{TimeUnit, Value as DuckValue, ValueRef};

const SERVED_FILE: &str = "bench.duckdb";
const DIRECT_FILE: &str = "direct.duckdb";

fn create(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, label VARCHAR NOT NULL, \
         score DOUBLE NOT NULL, ts TIMESTAMP NOT NULL)"
    )
}

fn fill(table: &str, n: u64) -> String {
    format!(
        "INSERT INTO {table} SELECT x, lpad(CAST(x AS VARCHAR), 32, 'x'), x * 0.25, \
         TIMESTAMP '2024-01-01' + to_seconds(x) FROM range(1, {n} + 1) r(x)"
    )
}

/// A TIMESTAMP column's value as the bench's row type holds it.
fn timestamp(value: ValueRef<'_>) -> NaiveDateTime {
    match value {
        ValueRef::Timestamp(TimeUnit::Microsecond, micros) => {
            chrono::DateTime::from_timestamp_micros(micros)
                .expect("a timestamp in range")
                .naive_utc()
        }
        other => panic!("not a TIMESTAMP in microseconds: {:?}", other.data_type()),
    }
}

fn row4(row: &duckdb::Row<'_>) -> duckdb::Result<Row4> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        timestamp(row.get_ref(3)?),
    ))
}

/// Streams `sql` with the driver, decoding each row into the bench's row
/// type; returns the wall time.
fn stream_direct(conn: &duckdb::Connection, sql: &str) -> Duration {
    let started = Instant::now();
    let mut stmt = conn.prepare(sql).expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut n = 0u64;
    while let Some(row) = rows.next().expect("row") {
        row4(row).expect("decode");
        n += 1;
    }
    let wall = started.elapsed();
    assert_eq!(n, STREAM_ROWS, "every row arrived");
    println!("    duckdb pass: {:.2} s wall", wall.as_secs_f64());
    wall
}

/// Streams `sql` as the driver's Arrow record batches (`query_arrow`);
/// returns the wall time.
fn stream_direct_arrow(conn: &duckdb::Connection, sql: &str) -> Duration {
    let started = Instant::now();
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n: usize = stmt
        .query_arrow([])
        .expect("query_arrow")
        .map(|b| b.num_rows())
        .sum();
    let wall = started.elapsed();
    assert_eq!(n as u64, STREAM_ROWS, "every row arrived");
    println!("    duckdb arrow pass: {:.2} s wall", wall.as_secs_f64());
    wall
}

/// DuckDB's workloads: stream (rows and Arrow), point select from 1
/// client, ExecuteMany.
pub(super) async fn engine(lines: &mut Vec<Line>) {
    let name = "DuckDB";
    let server = TestServer::start(&["--database-url", &format!("duckdb:///./{SERVED_FILE}")]);
    let db = Arc::new(server.client("").await);
    let mut direct = duckdb::Connection::open(server.dir.path().join(DIRECT_FILE)).expect("DuckDB");
    let version: String = direct
        .query_row("SELECT version()", [], |r| r.get(0))
        .expect("version");
    println!("{name}: version {version}");
    let table = format!("bench_rows_{}", std::process::id());
    println!("{name}: filling {table} with {STREAM_ROWS} rows on both sides");
    let setup = [
        format!("DROP TABLE IF EXISTS {table}"),
        create(&table),
        fill(&table, STREAM_ROWS),
    ];
    for sql in &setup {
        db.execute(sql, &[]).await.expect("setup through iadb");
        tokio::task::block_in_place(|| direct.execute_batch(sql)).expect("setup");
    }

    if runs("stream") {
        let sql = format!("SELECT id, label, score, ts FROM {table}");
        let (mut best_iadb, mut best_arrow) = (Duration::MAX, Duration::MAX);
        let (mut best_direct, mut best_direct_arrow) = (Duration::MAX, Duration::MAX);
        for _ in 0..PASSES {
            best_iadb = best_iadb.min(stream_iadb(&db, &sql, &server).await);
            best_arrow = best_arrow.min(stream_arrow(&db, &sql, &server).await);
            best_direct =
                best_direct.min(tokio::task::block_in_place(|| stream_direct(&direct, &sql)));
            best_direct_arrow = best_direct_arrow.min(tokio::task::block_in_place(|| {
                stream_direct_arrow(&direct, &sql)
            }));
        }
        lines.extend(stream_lines(
            name,
            "duckdb",
            best_iadb,
            best_arrow,
            best_direct,
        ));
        let [arrow, b_arrow] = [best_arrow, best_direct_arrow].map(|d| rate(STREAM_ROWS as f64, d));
        println!(
            "{name}: stream {STREAM_ROWS} rows as Arrow  iadb {arrow:.0} rows/s  duckdb query_arrow \
             {b_arrow:.0} rows/s  ratio {:.2}",
            arrow / b_arrow
        );
        lines.push(Line {
            workload: format!(
                "stream 1M rows, Arrow vs the driver's query_arrow (rows/s, best of {PASSES})"
            ),
            engine: name,
            iadb: thousands(arrow),
            direct: thousands(b_arrow),
            ratio: format!("{:.2}", arrow / b_arrow),
            target: "(no target)".into(),
            met: "".into(),
        });
    }

    if runs("point") {
        let point = format!("SELECT id, label, score, ts FROM {table} WHERE id = ?");
        // A unique borrow: the connection is Send but not Sync, and the
        // borrow lives across the loop's awaits.
        let (direct, statement) = (&mut direct, point.as_str());
        let line = point_selects(&db, &point, name, "duckdb", move |id| {
            let (row, took) = tokio::task::block_in_place(|| {
                let started = Instant::now();
                // Decoded, as iadb decodes every value it sends; the
                // statement cached, as the server's prepared one is.
                let row = direct
                    .prepare_cached(statement)
                    .and_then(|mut stmt| stmt.query_row([id], row4));
                (row, started.elapsed())
            });
            row.expect("direct point select");
            std::future::ready(took)
        })
        .await;
        lines.push(line);
    }
    let drop = format!("DROP TABLE {table}");
    db.execute(&drop, &[]).await.expect("drop");
    tokio::task::block_in_place(|| direct.execute_batch(&drop)).expect("drop");

    if !runs("many") {
        return;
    }
    let insert_table = format!("bench_insert_{}", std::process::id());
    let insert = format!("INSERT INTO {insert_table} (id, label, score, ts) VALUES (?, ?, ?, ?)");
    let sets = insert_sets();
    let fresh = [
        format!("DROP TABLE IF EXISTS {insert_table}"),
        create(&insert_table),
    ];
    let (mut through, mut direct_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..PASSES {
        for sql in &fresh {
            db.execute(sql, &[]).await.expect("setup through iadb");
        }
        through = through.min(execute_many_pass(&db, &insert, &sets).await);

        let took = tokio::task::block_in_place(|| {
            for sql in &fresh {
                direct.execute_batch(sql).expect("setup");
            }
            let rows: Vec<(i64, String, f64, DuckValue)> = (0..INSERT_ROWS)
                .map(|i| {
                    let (id, label, score, at) = insert_row(i);
                    let at = at.and_utc().timestamp_micros();
                    (
                        id,
                        label,
                        score,
                        DuckValue::Timestamp(TimeUnit::Microsecond, at),
                    )
                })
                .collect();
            let started = Instant::now();
            direct.execute_batch("BEGIN").expect("begin");
            {
                let mut stmt = direct.prepare(&insert).expect("prepare");
                for (id, label, score, at) in &rows {
                    stmt.execute(duckdb::params![id, label, score, at])
                        .expect("insert");
                }
            }
            direct.execute_batch("COMMIT").expect("commit");
            started.elapsed()
        });
        direct_best = direct_best.min(took);
    }
    let drop = format!("DROP TABLE {insert_table}");
    db.execute(&drop, &[]).await.expect("drop");
    tokio::task::block_in_place(|| direct.execute_batch(&drop)).expect("drop");
    lines.push(execute_many_line(name, "duckdb", through, direct_best));
}
