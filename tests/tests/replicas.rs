//! Issue 15: scale-out on PostgreSQL's own replication, on a real cluster
//! each test builds (a primary and a streaming hot standby on their own
//! loopback ports, `tests/src/pg_cluster.rs`), never the shared server.
//!
//! - bounded-staleness reads run on the standby, strong reads and writes on
//!   the primary; with the standby's replay paused, a read bounded at
//!   500 ms goes back to the primary and sees the write; two iadb servers
//!   in front of the same cluster route alike;
//! - the standby stopped mid-load: bounded reads keep succeeding, and it is
//!   back in rotation after it starts again;
//! - a read-scoped token set to prefer replicas (`max_staleness_ms` in the
//!   tokens file) reads on the standby without asking; another read token
//!   reads on the primary;
//! - the primary stopped and the standby promoted: writes succeed again
//!   through iadb (no restart) and every acknowledged write is there
//!   (synchronous replication).
//!
//! Every wait polls a condition under a deadline.
//!
//! `cargo test --no-default-features -p iadb-tests --test replicas`; the
//! throughput figure: `... --test replicas -- --ignored --nocapture`.

use iadb::{DatabaseInterface, ErrorKind, Value, proto};
use iadb_client::{RemoteDatabase, RetryPolicy, TransactionOptions};
use iadb_tests::{TestServer, harness::skip, pg_cluster::PgCluster};
use sqlx::Connection as _;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// A primary and a standby streaming from it, or `None` (skipped, or a
/// failure in CI) where clusters cannot be made here.
async fn primary_and_standby() -> Option<(Arc<PgCluster>, Arc<PgCluster>)> {
    let made = tokio::task::spawn_blocking(|| {
        let primary = PgCluster::start()?;
        let standby = PgCluster::standby_of(&primary)?;
        Ok::<_, String>((Arc::new(primary), Arc::new(standby)))
    })
    .await
    .expect("cluster task");
    match made {
        Ok(pair) => Some(pair),
        Err(why) => {
            skip(
                "throwaway postgresql primary and standby (replica test)",
                &why,
            );
            None
        }
    }
}

/// A client of `server` that never retries (so every error is seen) with a
/// 10 s deadline per call; with `bound`, its reads are of bounded
/// staleness.
async fn client(server: &TestServer, bound: Option<Duration>) -> RemoteDatabase {
    let db = RemoteDatabase::new(server.endpoint.clone())
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_secs(10))
        .with_max_staleness(bound);
    db.connect().await.expect("connect to test server");
    db
}

/// Runs `sql` on `cluster` directly (not through iadb).
async fn admin(cluster: &PgCluster, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(&cluster.url())
        .await
        .expect("connect to the cluster");
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `SELECT pg_is_in_recovery()` through iadb: true when a standby answered.
async fn on_standby(db: &RemoteDatabase) -> Result<bool, iadb::Error> {
    let row = db.fetch_one("SELECT pg_is_in_recovery()", &[]).await?;
    match row.as_ref().and_then(|r| r.values().first()) {
        Some(Value::Bool(b)) => Ok(*b),
        other => panic!("pg_is_in_recovery() gave {other:?}"),
    }
}

/// Polls `check` every 25 ms until it gives true or `limit` passes; how
/// long it took, or `None`.
async fn poll<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The default database's members as Health reports them.
async fn members(db: &RemoteDatabase) -> Vec<proto::MemberHealth> {
    db.health(false)
        .await
        .expect("health")
        .into_iter()
        .next()
        .expect("the default database's health")
        .members
}

/// Whether Health shows the replica in rotation.
async fn replica_in_rotation(db: &RemoteDatabase) -> bool {
    members(db)
        .await
        .iter()
        .any(|m| m.role == "replica" && m.in_rotation)
}

fn int(row: &iadb::Row, i: usize) -> i64 {
    match row.values().get(i) {
        Some(Value::Int(n)) => *n,
        other => panic!("column {i}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_reads_use_the_standby_until_its_lag_passes_the_bound() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let args = [
        "--database-url",
        &primary.url(),
        "--replica",
        &format!("default={}", standby.url()),
        "--replica-check-interval-ms",
        "100",
    ];
    // Two servers in front of the same cluster: they share nothing, and
    // route alike.
    let servers = [TestServer::start(&args), TestServer::start(&args)];
    let strong = client(&servers[0], None).await;
    strong
        .execute("CREATE TABLE seen (id INT PRIMARY KEY)", &[])
        .await
        .expect("a write runs on the primary");
    strong
        .execute("INSERT INTO seen VALUES (1)", &[])
        .await
        .expect("insert");

    for (i, server) in servers.iter().enumerate() {
        let strong = client(server, None).await;
        let bounded = client(server, Some(Duration::from_secs(5))).await;
        let ready = poll(Duration::from_secs(20), || replica_in_rotation(&strong)).await;
        assert!(
            ready.is_some(),
            "server {i}: the replica is not in rotation after 20 s: {:?}",
            members(&strong).await
        );
        let health = members(&strong).await;
        let replica = health
            .iter()
            .find(|m| m.role == "replica")
            .expect("a replica member");
        assert!(replica.reachable, "{health:?}");
        assert!(replica.replay_lag_ms.is_some(), "{health:?}");
        assert!(
            replica.address.ends_with(&format!(":{}", standby.port)),
            "{health:?}"
        );
        let primary_member = health
            .iter()
            .find(|m| m.role == "primary")
            .expect("a primary member");
        assert!(primary_member.reachable, "{health:?}");

        for _ in 0..20 {
            assert!(
                on_standby(&bounded).await.expect("bounded read"),
                "server {i}: a bounded read ran on the primary"
            );
            assert!(
                !on_standby(&strong).await.expect("strong read"),
                "server {i}: a strong read ran on the standby"
            );
        }
        // FetchAll routes as FetchOne does.
        let rows = bounded
            .fetch_all("SELECT pg_is_in_recovery() FROM generate_series(1, 3)", &[])
            .await
            .expect("bounded FetchAll");
        assert!(
            rows.iter()
                .all(|r| matches!(r.values().first(), Some(Value::Bool(true)))),
            "server {i}: a bounded FetchAll ran on the primary"
        );
        // A read-only transaction of the bounded client runs on the
        // standby; one that may write, on the primary.
        for (read_only, standby_expected) in [(true, true), (false, false)] {
            let mut tx = bounded
                .transaction(TransactionOptions {
                    read_only,
                    ..Default::default()
                })
                .await
                .expect("begin");
            let row = tx
                .fetch_one("SELECT pg_is_in_recovery()", &[])
                .await
                .expect("fetch in a transaction")
                .expect("a row");
            assert_eq!(
                row.values().first(),
                Some(&Value::Bool(standby_expected)),
                "server {i}: read_only {read_only}"
            );
            tx.commit().await.expect("commit");
        }
        // A write sent as a bounded read runs on the standby, which refuses
        // it; it is the caller's error, not run again on the primary.
        let refused = bounded
            .fetch_all("INSERT INTO seen VALUES (99) RETURNING id", &[])
            .await
            .expect_err("a write on a standby");
        assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
        let none = strong
            .fetch_one("SELECT count(*) FROM seen WHERE id = 99", &[])
            .await
            .expect("count")
            .expect("row");
        assert_eq!(int(&none, 0), 0, "server {i}: the refused write ran");
        // The bounded client's writes run on the primary too.
        bounded
            .execute("INSERT INTO seen VALUES (?)", &[Value::Int(10 + i as i64)])
            .await
            .expect("a bounded client's write runs on the primary");
        let returned = bounded
            .execute_query(
                "INSERT INTO seen VALUES (?) RETURNING id",
                &[Value::Int(20 + i as i64)],
            )
            .await;
        assert!(returned.success, "{:?}", returned.error_message);
    }

    // Replay paused on the standby, then a write: a read bounded at 500 ms
    // keeps running on the standby (not seeing the write) until the lag
    // passes the bound, then goes to the primary and sees it.
    admin(&standby, "SELECT pg_wal_replay_pause()").await;
    let paused = poll(Duration::from_secs(10), || async {
        let mut conn = sqlx::PgConnection::connect(&standby.url())
            .await
            .expect("connect to the standby");
        sqlx::query_scalar::<_, String>("SELECT pg_get_wal_replay_pause_state()")
            .fetch_one(&mut conn)
            .await
            .expect("pause state")
            == "paused"
    })
    .await;
    assert!(paused.is_some(), "replay did not pause");
    strong
        .execute("INSERT INTO seen VALUES (2)", &[])
        .await
        .expect("a write while replay is paused");
    let written = Instant::now();
    for (i, server) in servers.iter().enumerate() {
        let bounded = client(server, Some(Duration::from_millis(500))).await;
        let query = "SELECT pg_is_in_recovery(), (SELECT count(*) FROM seen WHERE id = 2)";
        let on_standby_reads = AtomicUsize::new(0);
        let fell_back = poll(Duration::from_secs(10), || async {
            let row = bounded
                .fetch_one(query, &[])
                .await
                .expect("bounded read")
                .expect("a row");
            let standby_answered = matches!(row.values().first(), Some(Value::Bool(true)));
            // A standby whose replay is paused cannot have the write.
            assert_eq!(
                int(&row, 1),
                i64::from(!standby_answered),
                "server {i}: {row:?}"
            );
            on_standby_reads.fetch_add(usize::from(standby_answered), Ordering::Relaxed);
            !standby_answered
        })
        .await;
        let fell_back = fell_back.unwrap_or_else(|| {
            panic!("server {i}: bounded reads still on the paused standby 10 s after the write")
        });
        println!(
            "server {i}: lag-bound fallback: a 500 ms-bound read went to the primary {} ms after \
             the write ({} ms after the write on this server's first poll; {} \
             reads on the standby before)",
            written.elapsed().as_millis(),
            fell_back.as_millis(),
            on_standby_reads.load(Ordering::Relaxed)
        );
        // The lag only grows while replay is paused: every later bounded
        // read sees the write.
        for _ in 0..10 {
            let row = bounded
                .fetch_one(query, &[])
                .await
                .expect("read")
                .expect("row");
            assert_eq!(int(&row, 1), 1, "server {i}: {row:?}");
        }
        // Health reports the lag its last check measured.
        let strong = client(server, None).await;
        let reported = poll(Duration::from_secs(5), || async {
            members(&strong)
                .await
                .iter()
                .any(|m| m.role == "replica" && m.replay_lag_ms.is_some_and(|ms| ms > 500.0))
        })
        .await;
        assert!(
            reported.is_some(),
            "server {i}: {:?}",
            members(&strong).await
        );
    }

    // Replay resumed: bounded reads go back to the standby, which has it.
    admin(&standby, "SELECT pg_wal_replay_resume()").await;
    for (i, server) in servers.iter().enumerate() {
        let bounded = client(server, Some(Duration::from_millis(500))).await;
        let back = poll(Duration::from_secs(10), || async {
            on_standby(&bounded).await.expect("bounded read")
        })
        .await;
        assert!(back.is_some(), "server {i}: the standby is not back");
        let row = bounded
            .fetch_one(
                "SELECT pg_is_in_recovery(), (SELECT count(*) FROM seen WHERE id = 2)",
                &[],
            )
            .await
            .expect("read")
            .expect("row");
        assert_eq!(int(&row, 1), 1, "server {i}: {row:?}");
    }
}

/// A tokens file in `dir` of read-scoped tokens, each `(name, token, an
/// extra line)`, for every database; its path.
fn read_tokens(dir: &tempfile::TempDir, tokens: &[(&str, &str, &str)]) -> String {
    use sha2::Digest as _;
    let text: String = tokens
        .iter()
        .map(|(name, token, extra)| {
            format!(
                "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = \"read\"\n\
                 databases = [\"*\"]\n{extra}\n\n",
                hex::encode(sha2::Sha256::digest(token.as_bytes()))
            )
        })
        .collect();
    let path = dir.path().join("tokens.toml");
    std::fs::write(&path, text).expect("write the tokens file");
    path.display().to_string()
}

/// A client of `server` that sends `token`, never retries, with a 20 s
/// deadline per call.
async fn token_client(server: &TestServer, token: &str) -> RemoteDatabase {
    let db = RemoteDatabase::new(server.endpoint.clone())
        .with_retry(RetryPolicy::none())
        .with_timeout(Duration::from_secs(20))
        .with_token(token);
    db.connect().await.expect("connect to test server");
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_token_that_prefers_replicas_reads_on_the_standby() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = read_tokens(
        &dir,
        &[
            ("reports", "t-reports", "max_staleness_ms = 5000"),
            ("plain", "t-plain", ""),
        ],
    );
    let server = TestServer::start(&[
        "--tokens-file",
        &tokens,
        "--database-url",
        &primary.url(),
        "--replica",
        &format!("default={}", standby.url()),
        "--replica-check-interval-ms",
        "100",
    ]);
    let reports = token_client(&server, "t-reports").await;
    let plain = token_client(&server, "t-plain").await;
    let ready = poll(Duration::from_secs(20), || replica_in_rotation(&plain)).await;
    assert!(
        ready.is_some(),
        "the replica is not in rotation: {:?}",
        members(&plain).await
    );
    // The request names no consistency; the token's preference routes it.
    let on_replica = poll(Duration::from_secs(10), || async {
        on_standby(&reports)
            .await
            .expect("a read of the reports token")
    })
    .await;
    assert!(
        on_replica.is_some(),
        "the reports token's reads never ran on the standby: {:?}",
        members(&plain).await
    );
    for _ in 0..5 {
        assert!(
            !on_standby(&plain).await.expect("a read of the plain token"),
            "a token without the preference read on the standby"
        );
    }
}

/// A read-scoped token's reads run as read-only transactions of their own
/// (FetchAll and FetchOne alike). One that finds its replica gone before
/// anything was sent runs again on the primary: the caller sees no error.
/// The checker looks only once a minute here, so the read itself is what
/// finds the replica gone (each server keeps its own view: one is asked by
/// FetchAll first, the other by FetchOne).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_token_whose_replica_is_gone_reads_on_the_primary_without_an_error() {
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = read_tokens(
        &dir,
        &[("reports", "t-reports", "max_staleness_ms = 60000")],
    );
    let replica = format!("default={}", standby.url());
    let mut readers = Vec::new();
    for _ in 0..2 {
        let server = TestServer::start(&[
            "--tokens-file",
            &tokens,
            "--database-url",
            &primary.url(),
            "--replica",
            &replica,
            "--replica-check-interval-ms",
            "60000",
        ]);
        let db = token_client(&server, "t-reports").await;
        let on_replica = poll(Duration::from_secs(20), || async {
            on_standby(&db).await.expect("a read of the reports token")
        })
        .await;
        assert!(
            on_replica.is_some(),
            "the reports token's reads never ran on the standby: {:?}",
            members(&db).await
        );
        readers.push((server, db));
    }

    let away = standby.clone();
    tokio::task::spawn_blocking(move || away.stop_fast())
        .await
        .expect("stop task")
        .expect("stop the standby");
    let (_fetch_all_server, by_fetch_all) = &readers[0];
    let rows = by_fetch_all
        .fetch_all("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("FetchAll of a read token with its replica gone");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].values().first(), Some(&Value::Bool(false)));
    let (_fetch_one_server, by_fetch_one) = &readers[1];
    assert!(
        !on_standby(by_fetch_one)
            .await
            .expect("FetchOne of a read token with its replica gone"),
        "read on the stopped standby"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_that_stops_mid_load_costs_no_bounded_read_and_comes_back() {
    const READERS: usize = 8;
    const BACKOFF_SECS: u64 = 2;
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    let backoff = BACKOFF_SECS.to_string();
    let server = TestServer::start(&[
        "--database-url",
        &primary.url(),
        "--replica",
        &format!("default={}", standby.url()),
        "--replica-check-interval-ms",
        "100",
        "--replica-backoff-secs",
        &backoff,
    ]);
    let strong = client(&server, None).await;
    assert!(
        poll(Duration::from_secs(20), || replica_in_rotation(&strong))
            .await
            .is_some(),
        "the replica is not in rotation: {:?}",
        members(&strong).await
    );

    let stop = Arc::new(AtomicBool::new(false));
    let on_standby_count = Arc::new(AtomicUsize::new(0));
    let on_primary_count = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let db = client(&server, Some(Duration::from_secs(5))).await;
        let (stop, s, p) = (
            stop.clone(),
            on_standby_count.clone(),
            on_primary_count.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            // Bounded in count as well as by the stop flag.
            for _ in 0..200_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                match on_standby(&db).await {
                    Ok(true) => s.fetch_add(1, Ordering::AcqRel),
                    Ok(false) => p.fetch_add(1, Ordering::AcqRel),
                    Err(e) => {
                        errors.push(format!("{:?}: {}", e.kind(), e.message()));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        0
                    }
                };
            }
            errors
        }));
    }
    let warm = poll(Duration::from_secs(20), || async {
        on_standby_count.load(Ordering::Acquire) >= 200
    })
    .await;
    assert!(warm.is_some(), "no bounded reads on the standby");

    let away = standby.clone();
    tokio::task::spawn_blocking(move || away.stop_fast())
        .await
        .expect("stop task")
        .expect("stop the standby");
    let primary_before = on_primary_count.load(Ordering::Acquire);
    let served = poll(Duration::from_secs(20), || async {
        on_primary_count.load(Ordering::Acquire) >= primary_before + 200
    })
    .await;
    assert!(
        served.is_some(),
        "bounded reads stopped while the standby was away"
    );
    // The checker marks the member unreachable on its own schedule (every
    // 100 ms here), which the 200 reads above may outrun: wait for it.
    let out = poll(Duration::from_secs(20), || async {
        members(&strong)
            .await
            .iter()
            .any(|m| m.role == "replica" && !m.in_rotation && !m.reachable)
    })
    .await;
    assert!(
        out.is_some(),
        "the stopped standby is still reported in rotation or reachable: {:?}",
        members(&strong).await
    );

    let back = standby.clone();
    tokio::task::spawn_blocking(move || back.start_again())
        .await
        .expect("start task")
        .expect("start the standby again");
    let started = Instant::now();
    let standby_before = on_standby_count.load(Ordering::Acquire);
    let returned = poll(Duration::from_secs(30), || async {
        on_standby_count.load(Ordering::Acquire) > standby_before
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut errors = Vec::new();
    for reader in readers {
        errors.extend(reader.await.expect("reader task"));
    }
    assert!(
        errors.is_empty(),
        "{} bounded reads failed, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    let returned = returned.expect("the standby is not back in rotation 30 s after it started");
    println!(
        "standby back in rotation {} ms after it accepted connections again (back-off {BACKOFF_SECS} s); \
         reads: {} on the standby, {} on the primary, 0 failed",
        returned.as_millis(),
        on_standby_count.load(Ordering::Acquire),
        on_primary_count.load(Ordering::Acquire)
    );
    let _ = started;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promoted_standby_takes_the_writes_with_every_acknowledged_one() {
    const WRITERS: i64 = 4;
    const MAX_INSERTS_PER_WRITER: i64 = 20_000;
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    // Synchronous replication: a commit is acknowledged once the standby
    // has it. Set on the primary only, after the standby was copied (a
    // promoted standby with it would wait for a standby it does not have).
    admin(&primary, "ALTER SYSTEM SET synchronous_standby_names = '*'").await;
    admin(&primary, "SELECT pg_reload_conf()").await;
    let sync = poll(Duration::from_secs(20), || async {
        let mut conn = sqlx::PgConnection::connect(&primary.url())
            .await
            .expect("connect to the primary");
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_replication")
            == 1
    })
    .await;
    assert!(sync.is_some(), "the standby never became synchronous");

    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let args = ["--database-url", &url, "--pool-timeout-secs", "2"];
    let servers = [TestServer::start(&args), TestServer::start(&args)];
    let setup = client(&servers[0], None).await;
    setup
        .execute(
            "CREATE TABLE acked (server INT, task INT, n INT, PRIMARY KEY (server, task, n))",
            &[],
        )
        .await
        .expect("create the table");

    let failed_over = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicUsize::new(0));
    let recovered = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for task in 0..WRITERS {
            let db = client(server, None).await;
            let (failed_over, stop, acked_total, recovered) = (
                failed_over.clone(),
                stop.clone(),
                acked_total.clone(),
                recovered.clone(),
            );
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut first_after: Option<Instant> = None;
                let mut errors = Vec::new();
                for n in 0..MAX_INSERTS_PER_WRITER {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let after = failed_over.load(Ordering::Acquire);
                    let result = db
                        .execute(
                            "INSERT INTO acked VALUES (?, ?, ?)",
                            &[Value::Int(s as i64), Value::Int(task), Value::Int(n)],
                        )
                        .await;
                    match result {
                        Ok(_) => {
                            acked.push(n);
                            acked_total.fetch_add(1, Ordering::AcqRel);
                            if after && first_after.is_none() {
                                first_after = Some(Instant::now());
                                recovered.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        Err(e) => {
                            errors.push(e.kind());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (s as i64, task, acked, first_after, errors)
            }));
        }
    }
    let warm = poll(Duration::from_secs(30), || async {
        acked_total.load(Ordering::Acquire) >= 200
    })
    .await;
    assert!(warm.is_some(), "no writes acknowledged before the failover");

    // The primary goes away at once; the standby is promoted.
    let stopped = Instant::now();
    let away = primary.clone();
    tokio::task::spawn_blocking(move || away.stop_immediate())
        .await
        .expect("stop task")
        .expect("stop the primary");
    let promoted = standby.clone();
    tokio::task::spawn_blocking(move || promoted.promote())
        .await
        .expect("promote task")
        .expect("promote the standby");
    let promoted_at = Instant::now();
    failed_over.store(true, Ordering::Release);

    // Writes through both servers succeed again, without a restart: every
    // writer's (10 s asserted below; waited for up to 30 s so that the
    // figure is known when it is too slow).
    let resumed = poll(Duration::from_secs(30), || async {
        recovered.load(Ordering::Acquire) == 2 * WRITERS as usize
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut logs = Vec::new();
    for writer in writers {
        logs.push(writer.await.expect("writer task"));
    }
    assert!(
        resumed.is_some(),
        "not every writer succeeded within 30 s of the promotion"
    );
    let mut gap = Duration::ZERO;
    for (s, task, _, first_after, errors) in &logs {
        let first = first_after.unwrap_or_else(|| {
            panic!("server {s} writer {task}: no write succeeded after the promotion")
        });
        let waited = first.duration_since(promoted_at);
        assert!(
            waited <= Duration::from_secs(10),
            "server {s} writer {task}: first write {} ms after the promotion",
            waited.as_millis()
        );
        gap = gap.max(first.duration_since(stopped));
        for kind in errors {
            assert!(
                matches!(kind, ErrorKind::Unavailable | ErrorKind::DeadlineExceeded),
                "server {s} writer {task}: a failed write was {kind:?}, not UNAVAILABLE"
            );
        }
    }
    println!(
        "failover gap: {:.1} s from the primary stopping to every writer succeeding on the \
         promoted standby ({:.1} s of it pg_ctl promote)",
        gap.as_secs_f64(),
        promoted_at.duration_since(stopped).as_secs_f64()
    );

    // Every acknowledged write is on the new primary.
    let rows = setup
        .fetch_all("SELECT server, task, n FROM acked", &[])
        .await
        .expect("read the table back");
    let present: std::collections::HashSet<(i64, i64, i64)> = rows
        .iter()
        .map(|r| (int(r, 0), int(r, 1), int(r, 2)))
        .collect();
    let mut acked_count = 0;
    for (s, task, acked, _, _) in &logs {
        for n in acked {
            acked_count += 1;
            assert!(
                present.contains(&(*s, *task, *n)),
                "acknowledged write ({s}, {task}, {n}) is missing after the failover"
            );
        }
    }
    println!("{acked_count} acknowledged writes, all on the new primary");
    let promoted = format!(":{}", standby.port);
    let reported = poll(Duration::from_secs(10), || async {
        members(&setup)
            .await
            .iter()
            .any(|m| m.role == "primary" && m.address.ends_with(&promoted))
    })
    .await;
    assert!(
        reported.is_some(),
        "Health does not name the promoted standby as the primary: {:?}",
        members(&setup).await
    );
}

/// Read throughput with 32 clients: the primary alone, then the primary
/// and one standby (bounded reads), in the same run. Prints figures only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: cargo test -p iadb-tests --test replicas -- --ignored --nocapture"]
async fn read_throughput_primary_alone_and_with_a_standby() {
    const CLIENTS: usize = 32;
    const RUN: Duration = Duration::from_secs(5);
    let Some((primary, standby)) = primary_and_standby().await else {
        return;
    };
    // An engine-bound read, and a trivial one (what routing costs).
    for sql in ["SELECT sum(g) FROM generate_series(1, 20000) g", "SELECT 1"] {
        measure(&primary, &standby, sql, CLIENTS, RUN).await;
    }
}

/// One figure of [`read_throughput_primary_alone_and_with_a_standby`].
async fn measure(
    primary: &PgCluster,
    standby: &PgCluster,
    sql: &'static str,
    clients: usize,
    run: Duration,
) {
    let mut figures = Vec::new();
    let url = primary.url();
    let replica = format!("default={}", standby.url());
    for with_standby in [false, true] {
        let mut args = vec![
            "--database-url",
            url.as_str(),
            "--pool-max",
            "16",
            "--max-concurrent-calls",
            "64",
        ];
        if with_standby {
            args.extend(["--replica", replica.as_str()]);
        }
        let server = TestServer::start(&args);
        let strong = client(&server, None).await;
        if with_standby {
            assert!(
                poll(Duration::from_secs(20), || replica_in_rotation(&strong))
                    .await
                    .is_some()
            );
        }
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let db = client(&server, with_standby.then_some(Duration::from_secs(5))).await;
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < run {
                    db.fetch_one(sql, &[]).await.expect("read");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        println!(
            "{sql}: {clients} clients, {}: {rate:.0} reads/s",
            if with_standby {
                "primary + 1 standby (bounded staleness 5 s)"
            } else {
                "primary alone"
            }
        );
        figures.push(rate);
    }
    println!(
        "ratio with a standby / primary alone: {:.2} (both clusters on this machine's cores)",
        figures[1] / figures[0]
    );
}
