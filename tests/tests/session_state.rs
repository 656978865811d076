//! Session state on a pooled gateway (docs/transactions.md, "Session
//! state"): a statement that changes its connection's session (a TEMP
//! table, `SET`, a connection `PRAGMA`) is refused on a pooled call, where
//! the next caller to get the connection would inherit it; inside a
//! Transaction stream it holds for the life of the stream, and after it the
//! connection is reset (PostgreSQL `DISCARD ALL`) or closed, so no later
//! call sees it. On SQLite, PostgreSQL, MySQL/MariaDB and DuckDB.

use iadb::{DatabaseInterface, ErrorKind, Value};
use iadb_client::RemoteDatabase;
use iadb_tests::{Engine, TestServer};

const ENGINES: [Engine; 4] = [
    Engine::Sqlite,
    Engine::Postgres,
    Engine::Mysql,
    Engine::Duckdb,
];

/// Later pooled calls (more than the pool's connections, so every one of
/// them is asked).
const LATER_CALLS: usize = 20;

async fn start(engine: Engine, dir: &tempfile::TempDir) -> Option<(TestServer, RemoteDatabase)> {
    let url = match engine.url(dir) {
        Ok(url) => url,
        Err(why) => {
            iadb_tests::harness::skip(&format!("session state on {}", engine.name()), &why);
            return None;
        }
    };
    let server = TestServer::start(&["--database-url", &url, "--pool-max", "4"]);
    let db = server.client("").await;
    Some((server, db))
}

fn unique(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{base}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TEMP table: refused on a pooled call (FAILED_PRECONDITION naming the
/// Transaction RPC); inside a Transaction stream, visible to every later
/// statement of the stream; after it, seen by none of 20 pooled calls nor
/// by the next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_live_in_a_transaction_and_never_reach_other_calls() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("temp dir");
        let Some((_server, db)) = start(engine, &dir).await else {
            continue;
        };
        let table = unique("tmp_state");
        let create = format!("CREATE TEMPORARY TABLE {table} (x INTEGER)");
        let refused = db.execute(&create, &[]).await.expect_err("refused");
        assert_eq!(
            refused.kind(),
            ErrorKind::FailedPrecondition,
            "{engine:?}: {refused}"
        );
        assert!(
            refused.message().contains("Transaction"),
            "{engine:?}: {refused}"
        );

        let mut tx = db.transaction(Default::default()).await.expect("begin");
        tx.execute(&create, &[]).await.expect("create inside");
        tx.execute(
            &format!("INSERT INTO {table} (x) VALUES (?)"),
            &[Value::Int(7)],
        )
        .await
        .expect("insert");
        let rows = tx
            .fetch_all(&format!("SELECT x FROM {table}"), &[])
            .await
            .expect("visible inside");
        assert_eq!(rows.len(), 1, "{engine:?}");
        assert_eq!(rows[0].get("x"), Some(&Value::Int(7)), "{engine:?}");
        tx.commit().await.expect("commit");

        let select = format!("SELECT x FROM {table}");
        for call in 0..LATER_CALLS {
            let err = db
                .fetch_all(&select, &[])
                .await
                .expect_err("the temp table is gone");
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidArgument,
                "{engine:?} call {call}: {err}"
            );
        }
        let mut next = db.transaction(Default::default()).await.expect("begin");
        next.fetch_all(&select, &[])
            .await
            .expect_err("not in the next transaction either");
    }
}

/// A session setting: refused on a pooled call; set inside a Transaction
/// stream it holds there, and none of 20 later pooled calls sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_in_a_transaction_do_not_reach_later_calls() {
    for engine in [Engine::Sqlite, Engine::Postgres, Engine::Mysql] {
        let dir = tempfile::tempdir().expect("temp dir");
        let Some((_server, db)) = start(engine, &dir).await else {
            continue;
        };
        // (setting, reading it back, the value it is set to)
        let (set, read, changed) = match engine {
            Engine::Postgres => (
                "SET TIME ZONE 'Pacific/Auckland'",
                "SELECT current_setting('TimeZone') AS v",
                Value::Text("Pacific/Auckland".into()),
            ),
            Engine::Mysql => (
                "SET time_zone = '+05:00'",
                "SELECT @@session.time_zone AS v",
                Value::Text("+05:00".into()),
            ),
            _ => (
                "PRAGMA recursive_triggers = ON",
                "SELECT * FROM pragma_recursive_triggers AS v",
                Value::Int(1),
            ),
        };
        let refused = db.execute(set, &[]).await.expect_err("refused");
        assert_eq!(
            refused.kind(),
            ErrorKind::FailedPrecondition,
            "{engine:?}: {refused}"
        );
        let before = db
            .fetch_one(read, &[])
            .await
            .expect("read")
            .expect("a row")
            .into_values();
        assert_ne!(before, vec![changed.clone()], "{engine:?}");

        let mut tx = db.transaction(Default::default()).await.expect("begin");
        tx.execute(set, &[]).await.expect("set inside");
        let inside = tx
            .fetch_one(read, &[])
            .await
            .expect("read inside")
            .expect("a row")
            .into_values();
        assert_eq!(inside, vec![changed.clone()], "{engine:?}");
        tx.commit().await.expect("commit");

        for call in 0..LATER_CALLS {
            let after = db
                .fetch_one(read, &[])
                .await
                .expect("read after")
                .expect("a row")
                .into_values();
            assert_eq!(after, before, "{engine:?} call {call}");
        }
    }
}

/// DDL on one pooled connection is seen by the next statement on any
/// other: SQLite connections keep a cached schema, and `REINDEX` of an
/// index created a moment before on another connection failed with
/// "unable to identify the object to be reindexed" (1–5 of 6 fresh
/// databases). Now a statement that fails that way is retried once after
/// the schema is read again. 50 fresh databases, a pool of 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ddl_is_seen_by_every_pooled_connection() {
    let mut failures = Vec::new();
    for round in 0..50 {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:///{}", dir.path().join("schema.db").display());
        let server = TestServer::start(&["--database-url", &url, "--pool-max", "4"]);
        let db = server.client("").await;
        // Open every pooled connection first, so that they all cache the
        // schema before it changes.
        let warm: Vec<_> = (0..4)
            .map(|_| db.fetch_all("SELECT count(*) FROM sqlite_master", &[]))
            .collect();
        for result in futures::future::join_all(warm).await {
            result.expect("warm up");
        }
        for sql in [
            "CREATE TABLE t1 (x INTEGER)",
            "CREATE INDEX t1i1 ON t1 (x)",
            "REINDEX t1i1",
            "INSERT INTO t1 (x) VALUES (1)",
            "DROP INDEX t1i1",
        ] {
            if let Err(e) = db.execute(sql, &[]).await {
                failures.push(format!("round {round}: {sql}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A MySQL/MariaDB error carries the server's own error number beside its
/// SQLSTATE (many errors share `HY000`), in `iadb-engine-code`; an object
/// that exists is ALREADY_EXISTS, as on every engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_errors_carry_the_engine_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((_server, db)) = start(Engine::Mysql, &dir).await else {
        return;
    };
    let table = unique("engine_code");
    let create = format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY)");
    db.execute(&create, &[]).await.expect("create");
    let err = db.execute(&create, &[]).await.expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.code(), Some("42S01"), "{err:?}");
    assert_eq!(err.engine_code(), Some("1050"), "{err:?}");
    let err = db
        .execute("SELECT * FROM no_such_table_for_codes", &[])
        .await
        .expect_err("unknown table");
    assert_eq!(err.code(), Some("42S02"), "{err:?}");
    assert_eq!(err.engine_code(), Some("1146"), "{err:?}");
    db.execute(&format!("DROP TABLE {table}"), &[])
        .await
        .expect("drop");
}

/// Session settings an operator wants on every connection come from the
/// database's URL: PostgreSQL `timezone` (and `search_path`), MySQL
/// `sql_mode` (added to the server's, after `ANSI_QUOTES`). Every pooled
/// connection has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_session_settings_come_from_the_url() {
    for (engine, option, read, wanted) in [
        (
            Engine::Postgres,
            "timezone=Pacific/Auckland",
            "SELECT current_setting('TimeZone') AS v",
            "Pacific/Auckland",
        ),
        (
            Engine::Mysql,
            "sql_mode=NO_ZERO_DATE",
            "SELECT @@session.sql_mode AS v",
            "NO_ZERO_DATE",
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match engine.url(&dir) {
            Ok(url) => url,
            Err(why) => {
                iadb_tests::harness::skip(&format!("session settings on {}", engine.name()), &why);
                continue;
            }
        };
        let joined = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{joined}{option}");
        let server = TestServer::start(&["--database-url", &url, "--pool-max", "4"]);
        let db = server.client("").await;
        let reads: Vec<_> = (0..8).map(|_| db.fetch_one(read, &[])).collect();
        for row in futures::future::join_all(reads).await {
            let row = row.expect("read").expect("a row");
            let text = match row.get("v") {
                Some(Value::Text(t)) => t.clone(),
                Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{engine:?}: {other:?}"),
            };
            assert!(text.contains(wanted), "{engine:?}: {text}");
            if engine == Engine::Mysql {
                assert!(text.contains("ANSI_QUOTES"), "{text}");
            }
        }
    }
}

/// Session state that slips past the checks of pooled calls (here through a
/// PostgreSQL function: `set_config(..., false)`, a TEMP table and a
/// session advisory lock) does not reach the next caller: every connection
/// is reset when it goes back to the pool, and the URL's own settings (here
/// `timezone`) hold again after the reset. A pool of one connection, so the
/// next call gets the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_state_that_slips_through_is_reset_before_the_next_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match Engine::Postgres.url(&dir) {
        Ok(url) => url,
        Err(why) => {
            iadb_tests::harness::skip("session reset on postgresql", &why);
            return;
        }
    };
    let joined = if url.contains('?') { '&' } else { '?' };
    let server = TestServer::start(&[
        "--database-url",
        &format!("{url}{joined}timezone=Pacific/Auckland"),
        "--pool-max",
        "1",
    ]);
    let db = server.client("").await;
    let function = unique("iadb_slip");
    let temp = unique("slipped_temp");
    let lock_key = 4_200_000_000_i64 + i64::from(std::process::id());
    db.execute(
        &format!(
            "CREATE FUNCTION {function}() RETURNS void LANGUAGE plpgsql AS $$ BEGIN \
             PERFORM set_config('TimeZone', 'Asia/Tokyo', false); \
             CREATE TEMP TABLE {temp} (x integer); \
             PERFORM pg_advisory_lock({lock_key}); END $$"
        ),
        &[],
    )
    .await
    .expect("create function");
    db.fetch_one(&format!("SELECT {function}()::text AS done"), &[])
        .await
        .expect("the function runs on a pooled call");

    assert_eq!(
        one(&db, "SELECT current_setting('TimeZone') AS v").await,
        vec![Value::Text("Pacific/Auckland".into())],
        "the URL's zone again, not the function's"
    );
    let found = db
        .fetch_one(
            &format!("SELECT to_regclass('pg_temp.{temp}') IS NULL AS gone"),
            &[],
        )
        .await
        .expect("look for the temp table")
        .expect("a row")
        .into_values();
    assert_eq!(found, vec![Value::Bool(true)], "the TEMP table is gone");
    assert_eq!(
        one(&db, "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").await,
        vec![Value::Int(0)],
        "the advisory lock was released"
    );
    assert_eq!(
        one(
            &db,
            "SELECT current_setting('client_connection_check_interval') AS v"
        )
        .await,
        vec![Value::Text("500ms".into())],
        "iadb's own setting holds after the reset"
    );
    db.execute(&format!("DROP FUNCTION {function}()"), &[])
        .await
        .expect("drop function");
}

/// The values of the one row `sql` returns.
async fn one(db: &RemoteDatabase, sql: &str) -> Vec<Value> {
    db.fetch_one(sql, &[])
        .await
        .expect(sql)
        .expect("a row")
        .into_values()
}
