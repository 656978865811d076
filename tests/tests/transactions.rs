//! Batch and Transaction through the Rust client against a real server on
//! loopback, on SQLite, PostgreSQL, MySQL/MariaDB and DuckDB: what commits, what is
//! rolled back (explicitly, by a dropped handle, by the idle timeout, by an
//! error), the connection each one holds and gives back, isolation levels,
//! and the protocol's refusals.

use futures::StreamExt;
use iadb::{
    DatabaseInterface, ErrorKind, Value,
    proto::{
        self, database_client::DatabaseClient, transaction_request::Request as Req,
        transaction_response::Response as Resp,
    },
};
use iadb_client::{Isolation, RemoteDatabase, Statement, Transaction, TransactionOptions};
use iadb_tests::{Engine, TestServer};
use std::time::{Duration, Instant};

/// A server in front of one engine, a client of it, and a table of its own
/// (`id INTEGER PRIMARY KEY, v INTEGER`).
struct Setup {
    engine: Engine,
    server: TestServer,
    db: RemoteDatabase,
    table: String,
    _dir: tempfile::TempDir,
}

/// A table name unique to this run (PostgreSQL and MySQL are shared).
fn unique_table(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_tx_{base}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a server for `engine` with `args`; `None` (with the harness'
/// notice, a failure in CI) when the engine is not available here.
async fn setup(engine: Engine, base: &str, args: &[&str]) -> Option<Setup> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match engine.url(&dir) {
        Ok(url) => url,
        Err(why) => {
            iadb_tests::harness::skip(&format!("transactions on {}", engine.name()), &why);
            return None;
        }
    };
    let mut all = vec!["--database-url", url.as_str()];
    all.extend_from_slice(args);
    let server = TestServer::start(&all);
    let db = server.client("").await;
    let table = unique_table(base);
    db.execute(
        &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)"),
        &[],
    )
    .await
    .expect("create table");
    Some(Setup {
        engine,
        server,
        db,
        table,
        _dir: dir,
    })
}

const ENGINES: [Engine; 4] = [
    Engine::Sqlite,
    Engine::Postgres,
    Engine::Mysql,
    Engine::Duckdb,
];

impl Setup {
    /// Rows in the table, read by a pooled call (committed data only).
    async fn count(&self) -> i64 {
        let row = self
            .db
            .fetch_one(&format!("SELECT COUNT(*) AS c FROM {}", self.table), &[])
            .await
            .expect("count")
            .expect("a row");
        int(row.get("c"))
    }

    /// Connections held (open and not idle) in the database's pool.
    async fn held(&self) -> (u32, u32) {
        let health = self.db.health(false).await.expect("health");
        let h = health.first().expect("a report");
        (h.pool_size - h.pool_idle, h.pool_size)
    }

    /// Waits (polling Health, at most 10 s) until `want` connections are
    /// held; fails with the last figures.
    async fn wait_held(&self, want: u32, when: &str) {
        let started = Instant::now();
        loop {
            let (held, size) = self.held().await;
            if held == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?} {when}: {held} of {size} connections held, expected {want}",
                self.engine
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn insert(&self) -> String {
        format!("INSERT INTO {} (id, v) VALUES (?, ?)", self.table)
    }
}

fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Int(n)) => *n,
        Some(Value::Decimal(d)) => d.parse().expect("an integer"),
        other => panic!("not an integer: {other:?}"),
    }
}

fn level(isolation: Isolation) -> TransactionOptions {
    TransactionOptions {
        isolation,
        ..Default::default()
    }
}

/// Every write of a committed transaction is visible afterwards, and none
/// before the commit; reads inside see its own writes; the transaction
/// holds one connection and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_makes_every_write_visible() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "commit", &[]).await else {
            continue;
        };
        s.wait_held(0, "before").await;
        let mut tx = s.db.transaction(Default::default()).await.expect("begin");
        assert_eq!(tx.engine(), engine.name());
        let one = tx
            .execute(&s.insert(), &[Value::Int(1), Value::Int(10)])
            .await
            .expect("insert");
        assert_eq!(one.rows_affected, 1);
        let many = tx
            .execute_many(
                &s.insert(),
                &[
                    vec![Value::Int(2), Value::Int(20)],
                    vec![Value::Int(3), Value::Int(30)],
                ],
            )
            .await
            .expect("execute_many");
        assert_eq!(many.rows_affected, 2);
        let updated = tx
            .execute(
                &format!("UPDATE {} SET v = v + 1 WHERE id >= ?", s.table),
                &[Value::Int(2)],
            )
            .await
            .expect("update");
        assert_eq!(updated.rows_affected, 2);
        // Inside: its own writes, streamed.
        let rows = tx
            .fetch_all(&format!("SELECT id, v FROM {} ORDER BY id", s.table), &[])
            .await
            .expect("fetch inside");
        let seen: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| (int(r.get("id")), int(r.get("v"))))
            .collect();
        assert_eq!(seen, [(1, 10), (2, 21), (3, 31)], "{engine:?}");
        let one = tx
            .fetch_one(
                &format!("SELECT v FROM {} WHERE id = ?", s.table),
                &[Value::Int(3)],
            )
            .await
            .expect("fetch_one inside")
            .expect("a row");
        assert_eq!(int(one.get("v")), 31);
        // A fetch dropped half-read does not disturb the next request.
        {
            let mut partial = tx
                .fetch_stream(&format!("SELECT id FROM {} ORDER BY id", s.table), &[])
                .await
                .expect("fetch_stream");
            let first = partial.rows.next().await.expect("a row").expect("ok");
            assert_eq!(int(first.get("id")), 1);
        }
        // Outside: nothing yet; one connection held by the transaction.
        assert_eq!(
            s.count().await,
            0,
            "{engine:?}: uncommitted writes are invisible"
        );
        s.wait_held(1, "during").await;
        tx.commit().await.expect("commit");
        assert_eq!(s.count().await, 3, "{engine:?}");
        let row =
            s.db.fetch_one(&format!("SELECT SUM(v) AS t FROM {}", s.table), &[])
                .await
                .expect("sum")
                .expect("a row");
        assert_eq!(int(row.get("t")), 62, "{engine:?}");
        s.wait_held(0, "after commit").await;
    }
}

/// An explicit rollback, a dropped handle and the idle timeout each leave
/// nothing behind and give the connection back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_drop_and_idle_timeout_leave_nothing() {
    for engine in ENGINES {
        let Some(s) = setup(
            engine,
            "rollback",
            &["--transaction-idle-timeout-secs", "1"],
        )
        .await
        else {
            continue;
        };
        // Explicit rollback.
        let mut tx = s.db.transaction(Default::default()).await.expect("begin");
        tx.execute(&s.insert(), &[Value::Int(1), Value::Int(1)])
            .await
            .expect("insert");
        s.wait_held(1, "during the rolled-back transaction").await;
        tx.rollback().await.expect("rollback");
        assert_eq!(s.count().await, 0, "{engine:?}: rolled back");
        s.wait_held(0, "after rollback").await;

        // A dropped handle: the request stream closes and the server rolls
        // back.
        let mut tx = s.db.transaction(Default::default()).await.expect("begin");
        tx.execute(&s.insert(), &[Value::Int(2), Value::Int(2)])
            .await
            .expect("insert");
        s.wait_held(1, "during the dropped transaction").await;
        drop(tx);
        s.wait_held(0, "after the drop").await;
        assert_eq!(s.count().await, 0, "{engine:?}: dropped = rolled back");

        // The idle timeout (1 s): waited three times over, the next request
        // finds the transaction aborted and rolled back.
        let mut tx = s.db.transaction(Default::default()).await.expect("begin");
        tx.execute(&s.insert(), &[Value::Int(3), Value::Int(3)])
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let err = tx
            .execute(&s.insert(), &[Value::Int(4), Value::Int(4)])
            .await
            .expect_err("the transaction timed out");
        assert_eq!(err.kind(), ErrorKind::Aborted, "{engine:?}: {err}");
        assert!(
            err.message().contains("--transaction-idle-timeout-secs"),
            "{err}"
        );
        // The handle knows it ended.
        let again = tx.fetch_all("SELECT 1", &[]).await.expect_err("ended");
        assert_eq!(again.kind(), ErrorKind::FailedPrecondition, "{again}");
        let commit = tx.commit().await.expect_err("nothing to commit");
        assert_eq!(commit.kind(), ErrorKind::FailedPrecondition, "{commit}");
        assert_eq!(s.count().await, 0, "{engine:?}: timed out = rolled back");
        s.wait_held(0, "after the idle timeout").await;
    }
}

/// A batch runs in one transaction: its results come per statement, and
/// when its 3rd of 5 statements fails nothing is applied, and the error
/// names index 2 and carries the engine's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_nothing() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "batch", &[]).await else {
            continue;
        };
        let insert =
            |id: i64| Statement::with_params(s.insert(), vec![Value::Int(id), Value::Int(id * 10)]);
        let results =
            s.db.batch(
                &[
                    insert(1),
                    insert(2),
                    Statement::new(format!("UPDATE {} SET v = v + 1", s.table)),
                    Statement::new(format!("SELECT id, v FROM {} ORDER BY id", s.table)),
                ],
                false,
            )
            .await
            .expect("batch");
        let affected: Vec<u64> = results.iter().map(|r| r.rows_affected).collect();
        assert_eq!(affected[..3], [1, 1, 2], "{engine:?}");
        let rows: Vec<(i64, i64)> = results[3]
            .rows
            .iter()
            .map(|r| (int(r.get("id")), int(r.get("v"))))
            .collect();
        assert_eq!(rows, [(1, 11), (2, 21)], "{engine:?}");
        assert_eq!(s.count().await, 2);

        // 3rd of 5: a duplicate key.
        let err =
            s.db.batch(
                &[insert(3), insert(4), insert(1), insert(5), insert(6)],
                false,
            )
            .await
            .expect_err("a duplicate key");
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{engine:?}: {err}");
        assert!(err.message().starts_with("statement 2:"), "{err}");
        let code = match engine {
            Engine::Postgres => "23505",
            Engine::Mysql => "23000",
            Engine::Duckdb => "CONSTRAINT",
            _ => "1555",
        };
        assert_eq!(err.code(), Some(code), "{engine:?}: {err}");
        assert_eq!(s.count().await, 2, "{engine:?}: nothing of the batch");

        // A read-only batch that writes: refused, nothing changes.
        let err = s.db.batch(&[insert(7)], true).await.expect_err("read-only");
        assert!(err.message().starts_with("statement 0:"), "{err}");
        assert_eq!(s.count().await, 2, "{engine:?}");
        s.wait_held(0, "after the batches").await;
    }
}

/// A read-only transaction that writes fails with the engine's own error
/// as a clear status, changes nothing, and ends the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transaction_refuses_writes() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "readonly", &[]).await else {
            continue;
        };
        let mut tx =
            s.db.transaction(TransactionOptions {
                read_only: true,
                ..Default::default()
            })
            .await
            .expect("begin");
        assert_eq!(
            int(tx
                .fetch_one(&format!("SELECT COUNT(*) AS c FROM {}", s.table), &[])
                .await
                .expect("a read is fine")
                .expect("a row")
                .get("c")),
            0
        );
        let err = tx
            .execute(&s.insert(), &[Value::Int(1), Value::Int(1)])
            .await
            .expect_err("a write in a read-only transaction");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{engine:?}: {err}");
        let code = match engine {
            Engine::Postgres | Engine::Mysql => "25006",
            Engine::Duckdb => "TRANSACTIONCONTEXT",
            _ => "8",
        };
        assert_eq!(
            err.code(),
            Some(code),
            "{engine:?}: the engine's code: {err}"
        );
        assert!(tx.is_ended());
        assert_eq!(s.count().await, 0, "{engine:?}");
        s.wait_held(0, "after the refused write").await;
        // DDL is refused too: on MySQL/MariaDB it commits the transaction
        // it meets and would run outside it.
        let created = format!("{}_ddl", s.table);
        for ddl in [
            format!("DROP TABLE {}", s.table),
            format!("CREATE TABLE {created} (x INTEGER)"),
        ] {
            let mut tx =
                s.db.transaction(TransactionOptions {
                    read_only: true,
                    ..Default::default()
                })
                .await
                .expect("begin");
            let err = tx.execute(&ddl, &[]).await.expect_err(&ddl);
            assert_eq!(
                err.kind(),
                ErrorKind::PermissionDenied,
                "{engine:?}: {ddl}: {err}"
            );
            s.wait_held(0, "after the refused DDL").await;
        }
        assert_eq!(s.count().await, 0, "{engine:?}: the table is still there");
        assert!(
            !s.db.table_exists(&created).await.expect("table_exists"),
            "{engine:?}: {created} was not created"
        );
        // The pool's connections are writable again.
        s.db.execute(&s.insert(), &[Value::Int(1), Value::Int(1)])
            .await
            .expect("a pooled write after the read-only transaction");
    }
}

/// `BEGIN` (or `COMMIT`) as SQL inside a transaction is FAILED_PRECONDITION,
/// and the transaction is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_sql_inside_is_refused() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "control", &[]).await else {
            continue;
        };
        for sql in ["BEGIN", "COMMIT", "SAVEPOINT a"] {
            let mut tx = s.db.transaction(Default::default()).await.expect("begin");
            tx.execute(&s.insert(), &[Value::Int(1), Value::Int(1)])
                .await
                .expect("insert");
            let err = tx.execute(sql, &[]).await.expect_err(sql);
            assert_eq!(
                err.kind(),
                ErrorKind::FailedPrecondition,
                "{engine:?} {sql}: {err}"
            );
            assert!(err.message().contains("Transaction stream"), "{err}");
            let later = tx.commit().await.expect_err("the transaction ended");
            assert_eq!(later.kind(), ErrorKind::FailedPrecondition, "{later}");
            assert_eq!(s.count().await, 0, "{engine:?} {sql}: rolled back");
        }
        s.wait_held(0, "after the refusals").await;
    }
}

/// A slow statement for each engine (about 2 s).
fn slow_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "SELECT pg_sleep(2) IS NULL AS slept",
        Engine::Mysql => "SELECT SLEEP(2) AS slept",
        _ => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) \
             SELECT COUNT(*) AS slept FROM c"
        }
    }
}

fn request(request: Req) -> proto::TransactionRequest {
    proto::TransactionRequest {
        request: Some(request),
    }
}

/// A request sent while the previous one runs is FAILED_PRECONDITION and
/// the transaction is rolled back (through the raw stub: the client never
/// sends out of turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_out_of_turn_is_refused() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "turn", &[]).await else {
            continue;
        };
        let mut stub = DatabaseClient::new(s.server.channel().await);
        let (requests, outbound) = futures::channel::mpsc::unbounded();
        let send = |r: Req| requests.unbounded_send(request(r)).expect("send");
        send(Req::Begin(proto::BeginTransaction::default()));
        let mut answers = stub.transaction(outbound).await.expect("open").into_inner();
        let begun = answers.message().await.expect("begun").expect("an answer");
        assert!(matches!(begun.response, Some(Resp::Begun(_))), "{begun:?}");
        send(Req::Execute(proto::Statement {
            sql: format!("INSERT INTO {} (id, v) VALUES (1, 1)", s.table),
            params: vec![],
            ..Default::default()
        }));
        let executed = answers
            .message()
            .await
            .expect("executed")
            .expect("an answer");
        assert!(
            matches!(executed.response, Some(Resp::Executed(_))),
            "{executed:?}"
        );
        // Two requests without waiting for the first's answer.
        let slow = proto::Statement {
            sql: slow_sql(engine).to_owned(),
            params: vec![],
            ..Default::default()
        };
        send(Req::Fetch(slow.clone()));
        send(Req::Fetch(slow));
        let status = loop {
            match answers.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{engine:?}: the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(
            status.code(),
            tonic::Code::FailedPrecondition,
            "{engine:?}: {status:?}"
        );
        assert!(
            status.message().contains("one request at a time"),
            "{status:?}"
        );
        drop(requests);
        assert_eq!(s.count().await, 0, "{engine:?}: rolled back");
        s.wait_held(0, "after the refusal").await;
    }
}

/// Two SERIALIZABLE transactions that read the same rows and then each
/// write one of them conflict: exactly one of them ends with ABORTED (and
/// the engine's code), the other commits, and only its write is there.
/// Both read, then both write, then the first commits, then the second.
/// (PostgreSQL: both writes succeed, the second commit fails; MySQL: the
/// reads take shared locks, so the writes deadlock and one is chosen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_conflict_aborts_one() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let Some(s) = setup(engine, "serial", &[]).await else {
            continue;
        };
        s.db.execute(
            &format!("INSERT INTO {} (id, v) VALUES (1, 0), (2, 0)", s.table),
            &[],
        )
        .await
        .expect("seed");
        let serializable = level(Isolation::Serializable);
        let mut a = s.db.transaction(serializable).await.expect("begin a");
        let mut b = s.db.transaction(serializable).await.expect("begin b");
        let sum = format!("SELECT SUM(v) AS t FROM {}", s.table);
        for tx in [&mut a, &mut b] {
            let row = tx.fetch_one(&sum, &[]).await.expect("read").expect("a row");
            assert_eq!(int(row.get("t")), 0);
        }
        // Both write (concurrently: on MySQL one write waits for the
        // other's lock until the deadlock is found).
        let update = |id: i64| format!("UPDATE {} SET v = v + 1 WHERE id = {id}", s.table);
        let write = |mut tx: Transaction, sql: String| {
            tokio::spawn(async move {
                let outcome = tx.execute(&sql, &[]).await;
                (tx, outcome.map(|o| o.rows_affected))
            })
        };
        let wa = write(a, update(1));
        let wb = write(b, update(2));
        let (a, ra) = wa.await.expect("task a");
        let (b, rb) = wb.await.expect("task b");
        let mut aborted = Vec::new();
        let mut committed = Vec::new();
        for (name, tx, written) in [("a", a, ra), ("b", b, rb)] {
            let outcome = match written {
                Ok(n) => {
                    assert_eq!(n, 1);
                    tx.commit().await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => committed.push(name),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Aborted, "{engine:?} {name}: {e}");
                    // Serialization failure; MySQL's deadlock (1213) has
                    // SQLSTATE 40001 too.
                    assert_eq!(e.code(), Some("40001"), "{engine:?} {name}: {e}");
                    aborted.push(name);
                }
            }
        }
        assert_eq!(
            (aborted.len(), committed.len()),
            (1, 1),
            "{engine:?}: {aborted:?} {committed:?}"
        );
        let row =
            s.db.fetch_one(&sum, &[])
                .await
                .expect("sum")
                .expect("a row");
        assert_eq!(
            int(row.get("t")),
            1,
            "{engine:?}: only the survivor's write"
        );
        if engine == Engine::Postgres {
            assert_eq!(committed, ["a"], "PostgreSQL: the first to commit wins");
        }
        s.wait_held(0, "after the conflict").await;
    }
}

/// REPEATABLE READ does not see a commit made after its first read; READ
/// COMMITTED does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_keeps_its_snapshot_read_committed_does_not() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let Some(s) = setup(engine, "levels", &[]).await else {
            continue;
        };
        let count_sql = format!("SELECT COUNT(*) AS c FROM {}", s.table);
        let mut next_id = 0;
        for (isolation, sees_commit) in [
            (Isolation::RepeatableRead, false),
            (Isolation::ReadCommitted, true),
        ] {
            let mut tx = s.db.transaction(level(isolation)).await.expect("begin");
            let before = int(tx
                .fetch_one(&count_sql, &[])
                .await
                .expect("first read")
                .expect("a row")
                .get("c"));
            next_id += 1;
            s.db.execute(&s.insert(), &[Value::Int(next_id), Value::Int(0)])
                .await
                .expect("a concurrent commit");
            let after = int(tx
                .fetch_one(&count_sql, &[])
                .await
                .expect("second read")
                .expect("a row")
                .get("c"));
            let expected = if sees_commit { before + 1 } else { before };
            assert_eq!(after, expected, "{engine:?} {isolation:?}");
            tx.commit().await.expect("commit");
        }
    }
}

/// DuckDB's snapshot isolation: a transaction keeps the snapshot of its
/// begin, and two transactions that write the same row conflict — the
/// second writer is ABORTED with DuckDB's code, and only the first write
/// stays. A level DuckDB does not have is INVALID_ARGUMENT naming SNAPSHOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_snapshot_isolation_and_write_conflicts() {
    let Some(s) = setup(Engine::Duckdb, "snapshot", &[]).await else {
        return;
    };
    s.db.execute(
        &format!("INSERT INTO {} (id, v) VALUES (1, 0)", s.table),
        &[],
    )
    .await
    .expect("seed");
    let refused =
        s.db.transaction(level(Isolation::Serializable))
            .await
            .expect_err("no serializable on DuckDB");
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    assert!(refused.message().contains("SNAPSHOT"), "{refused}");

    let count_sql = format!("SELECT COUNT(*) AS c FROM {}", s.table);
    let mut reader =
        s.db.transaction(level(Isolation::Snapshot))
            .await
            .expect("begin");
    let first = int(reader
        .fetch_one(&count_sql, &[])
        .await
        .expect("read")
        .expect("a row")
        .get("c"));
    s.db.execute(&s.insert(), &[Value::Int(2), Value::Int(0)])
        .await
        .expect("a concurrent commit");
    let again = int(reader
        .fetch_one(&count_sql, &[])
        .await
        .expect("read again")
        .expect("a row")
        .get("c"));
    assert_eq!((first, again), (1, 1), "the snapshot of the begin");
    reader.commit().await.expect("commit the reader");

    let update = format!("UPDATE {} SET v = v + 1 WHERE id = 1", s.table);
    let mut a = s.db.transaction(Default::default()).await.expect("begin a");
    let mut b = s.db.transaction(Default::default()).await.expect("begin b");
    a.execute(&update, &[]).await.expect("a writes first");
    let conflict = match b.execute(&update, &[]).await {
        Err(e) => e,
        Ok(_) => b.commit().await.expect_err("b conflicts with a"),
    };
    assert_eq!(conflict.kind(), ErrorKind::Aborted, "{conflict}");
    assert!(
        conflict.code().is_some(),
        "DuckDB's code travels: {conflict:?}"
    );
    a.commit().await.expect("a commits");
    let v = int(s
        .db
        .fetch_one(&format!("SELECT v FROM {} WHERE id = 1", s.table), &[])
        .await
        .expect("read")
        .expect("a row")
        .get("v"));
    assert_eq!(v, 1, "only a's write");
    s.wait_held(0, "after the conflict").await;
}

/// The call's deadline (the client's `with_timeout`) covers the whole
/// transaction: past it the transaction is rolled back, the client sees
/// DEADLINE_EXCEEDED, and the connection goes back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_rolls_back() {
    let Some(s) = setup(Engine::Sqlite, "deadline", &[]).await else {
        return;
    };
    let timed = s
        .server
        .client("")
        .await
        .with_timeout(Duration::from_millis(1500));
    let mut tx = timed.transaction(Default::default()).await.expect("begin");
    tx.execute(&s.insert(), &[Value::Int(1), Value::Int(1)])
        .await
        .expect("insert");
    s.wait_held(1, "during").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = tx
        .execute(&s.insert(), &[Value::Int(2), Value::Int(2)])
        .await
        .expect_err("past the deadline");
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert_eq!(s.count().await, 0, "rolled back");
    s.wait_held(0, "after the deadline").await;
}

/// `QueryOptions.read_only` on pooled calls (issue 12): each call runs in a
/// read-only transaction of its own, enforced by the engine. Reads work and
/// stream; a write, a script that writes, DDL, and on PostgreSQL a
/// data-modifying CTE and `nextval`, are PERMISSION_DENIED and change
/// nothing; the pool's connections stay writable for other callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_are_enforced_by_the_engine() {
    for engine in ENGINES {
        let Some(s) = setup(engine, "rocall", &["--pool-max", "2"]).await else {
            continue;
        };
        for id in 1..=3 {
            s.db.execute(&s.insert(), &[Value::Int(id), Value::Int(id * 10)])
                .await
                .expect("seed");
        }
        let ro = s.server.client("").await.with_read_only(true);
        let rows = ro
            .fetch_all(&format!("SELECT id, v FROM {} ORDER BY id", s.table), &[])
            .await
            .expect("a read-only FetchAll");
        assert_eq!(rows.len(), 3, "{engine:?}");
        assert_eq!(int(rows[2].get("v")), 30, "{engine:?}");
        let one = ro
            .fetch_one(
                &format!("SELECT v FROM {} WHERE id = ?", s.table),
                &[Value::Int(2)],
            )
            .await
            .expect("a read-only FetchOne")
            .expect("a row");
        assert_eq!(int(one.get("v")), 20, "{engine:?}");

        // (SQL, parameters, sent as a FetchAll rather than an Execute)
        let mut refused = vec![
            (s.insert(), vec![Value::Int(9), Value::Int(9)], false),
            (format!("UPDATE {} SET v = v + 1", s.table), vec![], false),
            (
                format!("SELECT 1 AS one; DELETE FROM {}", s.table),
                vec![],
                false,
            ),
            (format!("DROP TABLE {}", s.table), vec![], false),
            (
                format!("CREATE TABLE {}_new (x INTEGER)", s.table),
                vec![],
                false,
            ),
        ];
        if engine == Engine::Postgres {
            let seq = format!("{}_seq", s.table);
            s.db.execute(&format!("CREATE SEQUENCE {seq}"), &[])
                .await
                .expect("sequence");
            refused.push((format!("SELECT nextval('{seq}') AS n"), vec![], true));
            refused.push((
                format!(
                    "WITH gone AS (DELETE FROM {} RETURNING id) SELECT count(*) AS n FROM gone",
                    s.table
                ),
                vec![],
                true,
            ));
        }
        for (sql, params, fetch) in &refused {
            let err = if *fetch {
                ro.fetch_all(sql, params).await.map(|_| ())
            } else {
                ro.execute(sql, params).await.map(|_| ())
            }
            .expect_err(sql);
            assert_eq!(
                err.kind(),
                ErrorKind::PermissionDenied,
                "{engine:?}: {sql}: {err}"
            );
        }
        let err = ro
            .execute_many(&s.insert(), &[vec![Value::Int(7), Value::Int(7)]])
            .await
            .expect_err("a read-only ExecuteMany that writes");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{engine:?}: {err}");

        assert_eq!(s.count().await, 3, "{engine:?}: nothing changed");
        let sum =
            s.db.fetch_one(&format!("SELECT SUM(v) AS s FROM {}", s.table), &[])
                .await
                .expect("sum")
                .expect("a row");
        assert_eq!(int(sum.get("s")), 60, "{engine:?}: no row was updated");
        assert!(
            !s.db
                .table_exists(&format!("{}_new", s.table))
                .await
                .expect("table_exists"),
            "{engine:?}"
        );
        s.wait_held(0, "after the read-only calls").await;
        // Every pooled connection is writable again.
        for id in 10..14 {
            s.db.execute(&s.insert(), &[Value::Int(id), Value::Int(1)])
                .await
                .expect("a pooled write after the read-only calls");
        }
        assert_eq!(s.count().await, 7, "{engine:?}");
    }
}
