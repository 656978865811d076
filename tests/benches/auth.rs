//! The cost of token checking and of TLS on a point select, in one run on
//! one SQLite database: `cargo bench -p iadb-tests --no-default-features
//! --bench auth`. Three servers in front of the same file: open (no
//! tokens), with a tokens file (the caller sends a bearer token), and with
//! tokens and TLS. Prints the median and p99 of each and the difference to
//! the open server.

use iadb::{DatabaseInterface, Value};
use iadb_client::{RemoteDatabase, TlsOptions};
use iadb_tests::{TestServer, certs};
use sha2::Digest as _;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3_000;
const TOKEN: &str = "iadb-bench-token-0123456789abcdef";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Point selects through `db`; sorted times, after 200 unmeasured ones.
async fn point_selects(db: &RemoteDatabase) -> Vec<Duration> {
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 200 {
        let id = (round % 1_000) as i64 + 1;
        let started = Instant::now();
        let row = db
            .fetch_one(
                "SELECT id, name, score FROM t WHERE id = ?",
                &[Value::Int(id)],
            )
            .await
            .expect("point select")
            .expect("a row");
        if round >= 200 {
            times.push(started.elapsed());
        }
        assert_eq!(row.get("id"), Some(&Value::Int(id)));
    }
    times.sort();
    times
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Measured from a task on the runtime's workers, as a service would call.
    runtime.block_on(async {
        tokio::spawn(run()).await.expect("bench task");
    });
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("auth.db").display());
    let certs = certs::make(dir.path(), "bench");
    let tokens = dir.path().join("tokens.toml");
    let hash = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"bench\"\nsha256 = \"{hash}\"\nscope = \"write\"\ndatabases = [\"*\"]\n"
        ),
    )
    .expect("tokens file");
    let tokens = tokens.to_str().expect("utf-8 path").to_owned();
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();

    let open = TestServer::start(&["--database-url", &url]);
    let db = open.client("").await;
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)",
        &[],
    )
    .await
    .expect("create");
    let rows: Vec<Vec<Value>> = (1..=1_000)
        .map(|i| {
            vec![
                Value::Int(i),
                Value::Text(format!("name {i}")),
                Value::Float(i as f64),
            ]
        })
        .collect();
    db.execute_many("INSERT INTO t (id, name, score) VALUES (?, ?, ?)", &rows)
        .await
        .expect("rows");

    let with_tokens = TestServer::start(&["--database-url", &url, "--tokens-file", &tokens]);
    let token_db = RemoteDatabase::new(with_tokens.endpoint.clone()).with_token(TOKEN);
    token_db.connect().await.expect("connect with token");

    let (cert, key) = (path(&certs.server_cert), path(&certs.server_key));
    let with_tls = TestServer::start(&[
        "--database-url",
        &url,
        "--tokens-file",
        &tokens,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let tls_db = RemoteDatabase::new(with_tls.endpoint.replacen("http://", "https://", 1))
        .with_token(TOKEN)
        .with_tls(TlsOptions {
            ca_pem: Some(std::fs::read(&certs.ca).expect("CA")),
            client: None,
        });
    tls_db.connect().await.expect("connect over TLS");

    println!("point select (3 columns, SQLite), {ROUNDS} rounds each, one run, one client");
    let base = point_selects(&db).await;
    let token = point_selects(&token_db).await;
    let tls = point_selects(&tls_db).await;
    // A second pass in the other order, so neither side is always first.
    let tls2 = point_selects(&tls_db).await;
    let token2 = point_selects(&token_db).await;
    let base2 = point_selects(&db).await;
    let b = (us(percentile(&base, 0.5)) + us(percentile(&base2, 0.5))) / 2.0;
    for (name, a, c) in [
        ("open (no tokens)", &base, &base2),
        ("bearer token", &token, &token2),
        ("bearer token + TLS", &tls, &tls2),
    ] {
        let median = (us(percentile(a, 0.5)) + us(percentile(c, 0.5))) / 2.0;
        let p99 = (us(percentile(a, 0.99)) + us(percentile(c, 0.99))) / 2.0;
        println!(
            "{name:<20} median {median:>7.1} µs   p99 {p99:>7.1} µs   vs open {:+7.1} µs",
            median - b
        );
    }
}
