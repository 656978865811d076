//! Streams one query from a running iadb server and prints the rows/s: the
//! client side of a profile of the streaming path (issue 14). Run the
//! server under `valgrind --tool=callgrind` (or `perf record`), then:
//!
//! ```text
//! cargo run --release -p iadb-tests --no-default-features --example stream_probe -- \
//!   http://127.0.0.1:50071 "SELECT id, label, score, at FROM bench_rows"
//! ```
//!
//! Every value of every row is read (as a caller would), and the count of
//! rows and a checksum of the integers are printed.

use futures::StreamExt;
use iadb::{DatabaseInterface, Value};
use iadb_client::RemoteDatabase;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50071".into());
    let sql = args
        .next()
        .unwrap_or_else(|| "SELECT id, label, score, at FROM bench_rows".into());
    let passes: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(1);
    let db = RemoteDatabase::connect_to(endpoint, "").await?;
    for _ in 0..passes {
        let started = Instant::now();
        let mut rows = db.fetch_stream(&sql, &[]).await?.rows;
        let (mut n, mut sum, mut bytes) = (0u64, 0i64, 0usize);
        while let Some(row) = rows.next().await {
            for value in row?.values() {
                match value {
                    Value::Int(i) => sum = sum.wrapping_add(*i),
                    Value::Text(s) => bytes += s.len(),
                    _ => {}
                }
            }
            n += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{n} rows in {secs:.3} s: {:.0} rows/s (sum {sum}, text bytes {bytes})",
            n as f64 / secs
        );
    }
    Ok(())
}
