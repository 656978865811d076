//! Issue 12, items 5 and 6, through a real server: the embedded engines
//! cannot reach the host (SQLite's authorizer, DuckDB's sandbox settings),
//! each switch per database lets its part through again, secrets and
//! parameter values never reach the log (at trace level), and classic
//! SQL-injection payloads sent as parameters are stored as they are.

use iadb::{DatabaseInterface, Error, ErrorKind, Value};
use iadb_client::{RemoteDatabase, Statement, TransactionOptions};
use iadb_tests::{Engine, Target, TestServer, harness::skip};
use std::path::Path;

/// A server in front of one SQLite file database (its URL options after `?`).
fn sqlite_server(dir: &Path, options: &str) -> TestServer {
    let url = format!("sqlite:///{}{options}", dir.join("main.db").display());
    TestServer::start(&["--database-url", &url])
}

/// Asserts that `result` failed with `kind`; returns the message.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, Error>, kind: ErrorKind) -> String {
    match result {
        Ok(v) => panic!("{what}: expected {kind:?}, but it succeeded: {v:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {}", e.message());
            e.message().to_owned()
        }
    }
}

/// Runs `sql` as the only statement of a Transaction stream, where
/// statements that change a connection's session (ATTACH, SET) are allowed
/// by the server and so reach the engine; the transaction is rolled back.
async fn in_transaction(db: &RemoteDatabase, sql: &str) -> Result<(), Error> {
    let mut tx = db.transaction(TransactionOptions::default()).await?;
    let outcome = tx.execute(sql, &[]).await.map(|_| ());
    if outcome.is_ok() {
        tx.rollback().await?;
    }
    outcome
}

// ---------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_refuses_attach_vacuum_into_load_extension_and_schema_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = sqlite_server(dir.path(), "");
    let db = server.client("").await;
    db.execute("CREATE TABLE t (a INTEGER, b TEXT)", &[])
        .await
        .expect("create");
    db.execute("INSERT INTO t VALUES (1, 'x')", &[])
        .await
        .expect("insert");

    // ATTACH opens or creates any file the server's user can reach. A
    // pooled call refuses it before the engine (session state); inside a
    // transaction or a batch it reaches the engine, which refuses it.
    let other = dir.path().join("other.db");
    let attach = format!("ATTACH '{}' AS o", other.display());
    let message = refused(
        "ATTACH in a transaction",
        in_transaction(&db, &attach).await,
        ErrorKind::PermissionDenied,
    );
    assert!(message.contains("sandbox"), "{message}");
    refused(
        "ATTACH in a batch",
        db.batch(&[Statement::new(attach.clone())], false).await,
        ErrorKind::PermissionDenied,
    );
    assert!(!other.exists(), "ATTACH created {}", other.display());
    refused(
        "DETACH in a transaction",
        in_transaction(&db, "DETACH main").await,
        ErrorKind::PermissionDenied,
    );

    // VACUUM INTO writes a copy of the database anywhere.
    let copy = dir.path().join("copy.db");
    refused(
        "VACUUM INTO",
        db.execute(&format!("VACUUM INTO '{}'", copy.display()), &[])
            .await,
        ErrorKind::PermissionDenied,
    );
    refused(
        "VACUUM INTO with the path as a parameter",
        db.execute("VACUUM INTO ?", &[Value::Text(copy.display().to_string())])
            .await,
        ErrorKind::PermissionDenied,
    );
    assert!(!copy.exists(), "VACUUM INTO created {}", copy.display());

    refused(
        "load_extension",
        db.fetch_all("SELECT load_extension('x')", &[]).await,
        ErrorKind::PermissionDenied,
    );
    refused(
        "load_extension in a transaction",
        in_transaction(&db, "SELECT load_extension('/tmp/x.so', 'init')").await,
        ErrorKind::PermissionDenied,
    );

    // Rewriting the schema's text corrupts the database for every caller.
    refused(
        "PRAGMA writable_schema then UPDATE sqlite_master",
        db.batch(
            &[
                Statement::new("PRAGMA writable_schema = 1"),
                Statement::new(
                    "UPDATE sqlite_master SET sql = 'CREATE TABLE t (a INTEGER)' WHERE name = 't'",
                ),
            ],
            false,
        )
        .await,
        ErrorKind::PermissionDenied,
    );
    assert!(
        in_transaction(
            &db,
            "UPDATE sqlite_master SET sql = 'CREATE TABLE t (a INTEGER)' WHERE name = 't'"
        )
        .await
        .is_err(),
        "sqlite_master was written"
    );

    // What iadb itself and ordinary SQL do still works: the rows, a plain
    // VACUUM (SQLite attaches a nameless temporary database for it),
    // read-only and immediate transactions, reading pragmas.
    db.execute("VACUUM", &[]).await.expect("plain VACUUM");
    let rows = db
        .fetch_all("SELECT a, b FROM t", &[])
        .await
        .expect("select");
    assert_eq!(
        rows[0].values(),
        &[Value::Int(1), Value::Text("x".into())],
        "rows after VACUUM"
    );
    let mut tx = db
        .transaction(TransactionOptions {
            read_only: true,
            ..Default::default()
        })
        .await
        .expect("read-only transaction");
    tx.fetch_all("SELECT * FROM t", &[]).await.expect("read");
    tx.commit().await.expect("commit");
    let mut tx = db
        .transaction(TransactionOptions {
            immediate: true,
            ..Default::default()
        })
        .await
        .expect("immediate transaction");
    tx.execute("INSERT INTO t VALUES (2, 'y')", &[])
        .await
        .expect("write");
    tx.commit().await.expect("commit");
    db.fetch_all("PRAGMA writable_schema", &[])
        .await
        .expect("reading a pragma");
    assert!(
        db.table_exists("ia_migrations").await.expect("exists"),
        "the system migrations ran"
    );
}

#[tokio::test]
async fn sqlite_vacuum_into_is_refused_on_a_read_only_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("main.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("create database");
        conn.execute_batch("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);")
            .expect("fill database");
    }
    let server = sqlite_server(dir.path(), "?mode=ro");
    let db = server.client("").await;
    let copy = dir.path().join("copy.db");
    refused(
        "VACUUM INTO on mode=ro",
        db.execute(&format!("VACUUM INTO '{}'", copy.display()), &[])
            .await,
        ErrorKind::PermissionDenied,
    );
    assert!(!copy.exists(), "VACUUM INTO created {}", copy.display());
    let rows = db.fetch_all("SELECT a FROM t", &[]).await.expect("read");
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn sqlite_allow_attach_lets_attach_and_vacuum_into_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = sqlite_server(dir.path(), "?allow_attach=true");
    let db = server.client("").await;
    db.execute("CREATE TABLE t (a INTEGER)", &[])
        .await
        .expect("create");
    let other = dir.path().join("other.db");
    let mut tx = db
        .transaction(TransactionOptions::default())
        .await
        .expect("transaction");
    tx.execute(&format!("ATTACH '{}' AS o", other.display()), &[])
        .await
        .expect("ATTACH with allow_attach=true");
    tx.execute("CREATE TABLE o.u (b INTEGER)", &[])
        .await
        .expect("create in the attached database");
    tx.commit().await.expect("commit");
    assert!(other.exists(), "ATTACH did not create {}", other.display());
    let copy = dir.path().join("copy.db");
    db.execute(&format!("VACUUM INTO '{}'", copy.display()), &[])
        .await
        .expect("VACUUM INTO with allow_attach=true");
    assert!(
        copy.exists(),
        "VACUUM INTO did not create {}",
        copy.display()
    );
    // The switch is for ATTACH only.
    refused(
        "load_extension with allow_attach=true",
        db.fetch_all("SELECT load_extension('x')", &[]).await,
        ErrorKind::PermissionDenied,
    );
}

#[tokio::test]
async fn sqlite_bad_switch_value_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite:///{}?allow_attach=perhaps",
        dir.path().join("main.db").display()
    );
    let dir_log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(iadb_tests::harness::server_binary())
        .args(["--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&dir_log).expect("log file"))
        .spawn()
        .expect("run the server");
    // Bounded: a server that accepted the URL would serve until killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&dir_log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the server started with allow_attach=perhaps: {stderr}"
    );
    assert!(stderr.contains("allow_attach"), "{stderr}");
}

// ---------------------------------------------------------------------------
// DuckDB

#[cfg(feature = "duckdb")]
fn duckdb_server(dir: &Path, options: &str) -> TestServer {
    let url = format!("duckdb:///{}{options}", dir.join("main.duckdb").display());
    TestServer::start(&["--database-url", &url])
}

#[cfg(feature = "duckdb")]
#[tokio::test]
async fn duckdb_cannot_reach_the_host_nor_undo_its_sandbox() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = duckdb_server(dir.path(), "");
    let db = server.client("").await;

    for sql in [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT content FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('/proc/self/environ')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
    ] {
        let message = refused(
            sql,
            db.fetch_all(sql, &[]).await,
            ErrorKind::PermissionDenied,
        );
        assert!(message.contains("sandbox"), "{sql}: {message}");
    }
    let written = dir.path().join("x.csv");
    let copy = format!("COPY (SELECT 1 AS one) TO '{}'", written.display());
    refused(
        "COPY TO",
        db.execute(&copy, &[]).await,
        ErrorKind::PermissionDenied,
    );
    assert!(!written.exists(), "COPY TO created {}", written.display());
    let other = dir.path().join("other.duckdb");
    refused(
        "ATTACH in a transaction",
        in_transaction(&db, &format!("ATTACH '{}' AS o", other.display())).await,
        ErrorKind::PermissionDenied,
    );
    assert!(!other.exists(), "ATTACH created {}", other.display());

    // Extensions: nothing installed or loaded on demand.
    for sql in ["INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL httpfs"] {
        refused(sql, db.execute(sql, &[]).await, ErrorKind::PermissionDenied);
    }

    // No SET can undo the sandbox nor change the database for everyone
    // (a pooled call refuses SET itself; a transaction lets it reach the
    // engine, and DuckDB's PRAGMA form is a SET in disguise).
    let before = db
        .fetch_all("SELECT current_setting('memory_limit') AS m", &[])
        .await
        .expect("memory_limit");
    for sql in [
        "SET enable_external_access = true",
        "SET autoinstall_known_extensions = true",
        "SET autoload_known_extensions = true",
        "SET allow_community_extensions = true",
        "SET lock_configuration = false",
        "SET GLOBAL memory_limit = '1GB'",
        "SET threads = 1",
        "RESET memory_limit",
    ] {
        refused(
            sql,
            in_transaction(&db, sql).await,
            ErrorKind::PermissionDenied,
        );
    }
    refused(
        "PRAGMA memory_limit",
        db.execute("PRAGMA memory_limit = '1GB'", &[]).await,
        ErrorKind::PermissionDenied,
    );
    let after = db
        .fetch_all("SELECT current_setting('memory_limit') AS m", &[])
        .await
        .expect("memory_limit");
    assert_eq!(
        before[0].values(),
        after[0].values(),
        "memory_limit changed"
    );
    let settings = db
        .fetch_all(
            "SELECT name, value FROM duckdb_settings() WHERE name IN \
             ('enable_external_access', 'lock_configuration', 'autoinstall_known_extensions', \
              'autoload_known_extensions', 'allow_community_extensions') ORDER BY name",
            &[],
        )
        .await
        .expect("settings");
    let shown: Vec<(String, String)> = settings
        .iter()
        .map(|r| (text(r.get("name")), text(r.get("value"))))
        .collect();
    assert_eq!(
        shown,
        [
            ("allow_community_extensions", "false"),
            ("autoinstall_known_extensions", "false"),
            ("autoload_known_extensions", "false"),
            ("enable_external_access", "false"),
            ("lock_configuration", "true"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );

    // The database itself works: tables, rows, a transaction, a streamed
    // result, and the system migrations ran at start-up.
    db.execute("CREATE TABLE t (a INTEGER, s VARCHAR)", &[])
        .await
        .expect("create");
    db.execute(
        "INSERT INTO t VALUES (?, ?)",
        &[Value::Int(1), Value::Text("x".into())],
    )
    .await
    .expect("insert");
    let mut tx = db
        .transaction(TransactionOptions::default())
        .await
        .expect("transaction");
    tx.execute("UPDATE t SET s = 'y'", &[])
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    let rows = db
        .fetch_all("SELECT a, s FROM t", &[])
        .await
        .expect("select");
    assert_eq!(rows[0].values(), &[Value::Int(1), Value::Text("y".into())]);
    let many = db
        .fetch_all("SELECT * FROM range(100000)", &[])
        .await
        .expect("stream");
    assert_eq!(many.len(), 100_000);
    assert!(db.table_exists("ia_migrations").await.expect("exists"));
}

#[cfg(feature = "duckdb")]
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Text(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "duckdb")]
#[tokio::test]
async fn duckdb_external_access_switch_reads_files_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello from the host").expect("write file");
    let server = duckdb_server(dir.path(), "?enable_external_access=true");
    let db = server.client("").await;
    let rows = db
        .fetch_all(
            &format!("SELECT content FROM read_text('{}')", file.display()),
            &[],
        )
        .await
        .expect("read_text with enable_external_access=true");
    assert_eq!(
        rows[0].values(),
        &[Value::Text("hello from the host".into())]
    );
    // The rest of the sandbox stays: the configuration is still locked.
    refused(
        "SET with the external access switch",
        in_transaction(&db, "SET GLOBAL memory_limit = '1GB'").await,
        ErrorKind::PermissionDenied,
    );
}

// ---------------------------------------------------------------------------
// Logs

/// Every spelling of `secret` a log could hold: as it is, percent-encoded
/// (upper and lower hex, every byte or only the unsafe ones), form-encoded.
fn spellings(secret: &str) -> Vec<String> {
    let mut all_escaped = String::new();
    let mut unsafe_escaped = String::new();
    let mut form = String::new();
    for b in secret.bytes() {
        let alnum = b.is_ascii_alphanumeric();
        all_escaped.push_str(&if alnum {
            (b as char).to_string()
        } else {
            format!("%{b:02X}")
        });
        unsafe_escaped.push_str(&if alnum || b"-._~".contains(&b) {
            (b as char).to_string()
        } else {
            format!("%{b:02X}")
        });
        form.push_str(&match b {
            b' ' => "+".to_owned(),
            _ if alnum || b"-._*".contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        });
    }
    let mut out = vec![secret.to_owned(), unsafe_escaped, form];
    out.extend([lower_hex(&all_escaped), all_escaped]);
    out.sort();
    out.dedup();
    out
}

/// `%2F` as `%2f`.
fn lower_hex(text: &str) -> String {
    let mut out = String::new();
    let mut hex_left = 0;
    for c in text.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn trace_logs_hold_no_credential_no_value_and_no_literal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite:///{}", dir.path().join("main.db").display());
    // A PostgreSQL database nobody answers for (port 1): the server logs it
    // at start-up and on each retry. Its password is written
    // percent-encoded, as the was.
    let unreachable =
        "pgleak=postgresql://iadb:Leak%20Me@127.0.0.1:1/iadb_test?sslpassword=Zq1SslLeak";
    // A D1 database whose API answers nothing (port 1): its token travels
    // in the URL.
    let d1 = "d1leak=cloudflare_d1://Zq0DatabaseId?account_id=acc&api_token=Zq2Tok%2BLeak%2Fx&base_url=http://127.0.0.1:1";
    let mut args = vec![
        "--database-url".to_owned(),
        sqlite,
        "--database".to_owned(),
        unreachable.to_owned(),
        "--database".to_owned(),
        d1.to_owned(),
        "--health-interval-secs".to_owned(),
        "1".to_owned(),
    ];
    let pg = std::env::var("IADB_TEST_POSTGRES_URL").ok();
    match &pg {
        Some(url) => args.extend(["--database".to_owned(), format!("pg={url}")]),
        None => skip(
            "postgresql part of the log search",
            "IADB_TEST_POSTGRES_URL is not set",
        ),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with_env(&args, &[("RUST_LOG", "trace")]);
    let db = server.client("").await;

    db.execute("CREATE TABLE t (a TEXT, n INTEGER)", &[])
        .await
        .expect("create");
    db.execute(
        "INSERT INTO t (a, n) VALUES (?, ?)",
        &[Value::Text("Zq3ValueMarker".into()), Value::Int(7)],
    )
    .await
    .expect("insert");
    db.fetch_all(
        "SELECT a FROM t WHERE a = ? OR a = 'Zq6LiteralMarker'",
        &[Value::Text("Zq3ValueMarker".into())],
    )
    .await
    .expect("select");
    // iadb's own conversions fail, and say which parameter, not its value.
    let message = refused(
        "a bad decimal",
        db.execute(
            "INSERT INTO t (a) VALUES (?)",
            &[Value::Decimal("Zq4Decimal Marker".into())],
        )
        .await,
        ErrorKind::InvalidArgument,
    );
    assert!(message.contains("parameter 1"), "{message}");
    assert!(!message.contains("Zq4"), "{message}");
    let message = refused(
        "bad JSON",
        db.execute(
            "INSERT INTO t (a, n) VALUES (?, ?)",
            &[Value::Int(1), Value::Json("{Zq5JsonMarker".into())],
        )
        .await,
        ErrorKind::InvalidArgument,
    );
    assert!(message.contains("parameter 2"), "{message}");
    assert!(!message.contains("Zq5"), "{message}");
    // An engine error about a statement with a literal in it.
    refused(
        "a missing table",
        db.fetch_all("SELECT * FROM missing WHERE a = 'Zq7LiteralMarker'", &[])
            .await,
        ErrorKind::InvalidArgument,
    );
    if pg.is_some() {
        let pg = RemoteDatabase::connect_to(server.endpoint.clone(), "pg")
            .await
            .expect("connect pg");
        let table = format!("t_sandbox_log_{}", std::process::id());
        pg.execute(&format!("CREATE TABLE {table} (n INTEGER, s TEXT)"), &[])
            .await
            .expect("create on pg");
        // Text bound to an integer parameter: iadb's own parse fails.
        let message = refused(
            "text for an integer on pg",
            pg.execute(
                &format!("INSERT INTO {table} (n) VALUES (?)"),
                &[Value::Text("Zq8PgIntMarker".into())],
            )
            .await,
            ErrorKind::InvalidArgument,
        );
        assert!(!message.contains("Zq8"), "{message}");
        pg.execute(
            &format!("INSERT INTO {table} (n, s) VALUES (?, ?)"),
            &[Value::Int(1), Value::Text("Zq9PgValueMarker".into())],
        )
        .await
        .expect("insert on pg");
        pg.execute(&format!("DROP TABLE {table}"), &[])
            .await
            .expect("drop on pg");
    }
    // Let a retry of the unreachable databases be logged too.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let log = server.log_text();
    assert!(
        log.contains("database configured") && log.contains("pgleak"),
        "the start-up lines are missing:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(log.lines().count() > 50, "trace logging is not on");
    let mut secrets = vec![
        "Leak Me",
        "Zq1SslLeak",
        "Zq2Tok+Leak/x",
        "Zq3ValueMarker",
        "Zq4Decimal Marker",
        "Zq5JsonMarker",
        "Zq6LiteralMarker",
        "Zq7LiteralMarker",
        "Zq8PgIntMarker",
        "Zq9PgValueMarker",
    ];
    let pg_password = pg
        .as_deref()
        .and_then(|u| iadb::ConnectionConfig::from_url(u).ok())
        .and_then(|c| c.password().map(str::to_owned));
    if let Some(p) = &pg_password {
        secrets.push(p);
    }
    for secret in secrets {
        for spelling in spellings(secret) {
            if let Some(at) = log.find(&spelling) {
                let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = log[at..].find('\n').map_or(log.len(), |i| at + i);
                panic!(
                    "the log holds `{spelling}` (a spelling of `{secret}`):\n{}",
                    &log[start..end]
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SQL injection through parameters

/// Classic payloads, each a parameter: never SQL.
const PAYLOADS: &[&str] = &[
    "'; DROP TABLE t; --",
    "1 OR 1=1",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "Robert'); DROP TABLE students;--",
    "\\'; SELECT 1; --",
    "back\\slash \\\\ and \\0 and \\n",
    "100%_ LIKE '%",
    "$1 $$ $tag$ ?? ? :name @v",
    "*/ SELECT 1 /*",
    "-- comment",
    "'' '' \\' ",
    "😀 ünïcödé \u{202e}",
    "line\nbreak\r\ttab",
];

#[tokio::test]
async fn injection_payloads_are_stored_verbatim_on_every_engine() {
    let mut engines = vec![Engine::Sqlite, Engine::Postgres, Engine::Mysql];
    if cfg!(feature = "duckdb") {
        engines.push(Engine::Duckdb);
    }
    for engine in engines {
        let Some(target) = Target::remote(engine).await else {
            continue;
        };
        let table = target.table("inject");
        let d = target.dialect();
        let db = &target.db;
        db.execute(
            &format!(
                "CREATE TABLE {table} (id {} PRIMARY KEY, s {}, b {})",
                d.bigint_type(),
                d.text_type(),
                d.bytes_type()
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}: create: {}", engine.name(), e.message()));
        let mut sent: Vec<(String, Vec<u8>)> = PAYLOADS
            .iter()
            .map(|p| ((*p).to_owned(), p.as_bytes().to_vec()))
            .collect();
        let with_nul = "nul\0byte'; DROP TABLE t; --";
        if d.text_allows_nul() {
            sent.push((with_nul.to_owned(), with_nul.as_bytes().to_vec()));
        } else {
            // PostgreSQL text cannot hold NUL; the bytes column can.
            sent.push(("nul".to_owned(), with_nul.as_bytes().to_vec()));
        }
        for (i, (text, bytes)) in sent.iter().enumerate() {
            db.execute(
                &format!("INSERT INTO {table} (id, s, b) VALUES (?, ?, ?)"),
                &[
                    Value::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                    Value::Text(text.clone()),
                    Value::Bytes(bytes.clone()),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: insert {text:?}: {}", engine.name(), e.message()));
        }
        // Each payload as a filter finds exactly its own row.
        for (i, (text, bytes)) in sent.iter().enumerate() {
            let rows = db
                .fetch_all(
                    &format!("SELECT id, s, b FROM {table} WHERE s = ?"),
                    &[Value::Text(text.clone())],
                )
                .await
                .unwrap_or_else(|e| panic!("{}: select {text:?}: {}", engine.name(), e.message()));
            assert_eq!(rows.len(), 1, "{}: {text:?}", engine.name());
            assert_eq!(
                rows[0].values(),
                &[
                    Value::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                    Value::Text(text.clone()),
                    Value::Bytes(bytes.clone()),
                ],
                "{}: {text:?}",
                engine.name()
            );
        }
        let count = db
            .fetch_all(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
            .await
            .expect("count");
        assert_eq!(
            count[0].values(),
            &[Value::Int(i64::try_from(sent.len()).unwrap_or(i64::MAX))],
            "{}: the table lost or gained rows",
            engine.name()
        );
        db.execute(&format!("DROP TABLE {table}"), &[])
            .await
            .expect("drop");
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL and MySQL: a warning for a user with too much power

/// The test engine's URL with another user (no password: the local
/// superusers of the CI machine log in by trust over TCP).
fn as_user(url: &str, user: &str) -> Option<String> {
    let c = iadb::ConnectionConfig::from_url(url).ok()?;
    Some(format!(
        "{}://{user}@{}:{}/{}",
        c.db_type, c.host?, c.port?, c.database?
    ))
}

/// Waits (at most 10 s) for `needle` in the server's log.
fn wait_for_log(server: &TestServer, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if server.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn superusers_are_warned_about_and_least_privilege_users_are_not() {
    for (engine, variable, superuser, privilege) in [
        (
            "postgresql",
            "IADB_TEST_POSTGRES_URL",
            "postgres",
            "superuser (rolsuper)",
        ),
        ("mysql", "IADB_TEST_MYSQL_URL", "root", "SUPER privilege"),
    ] {
        let Ok(url) = std::env::var(variable) else {
            skip(engine, &format!("{variable} is not set"));
            continue;
        };
        // The CI user: no warning once it is connected.
        let server = TestServer::start(&["--database", &format!("app={url}")]);
        let db = RemoteDatabase::connect_to(server.endpoint.clone(), "app")
            .await
            .expect("connect");
        db.fetch_all("SELECT 1", &[]).await.expect("query");
        let log = server.log_text();
        assert!(
            !log.contains("privileges beyond"),
            "{engine}: a least-privilege user was warned about:\n{log}"
        );
        drop(server);

        // The engine's superuser (when this machine lets it in without a
        // password); no migrations, which would create iadb's tables as it.
        let Some(super_url) = as_user(&url, superuser) else {
            continue;
        };
        let server = TestServer::start(&[
            "--migrate=false",
            "--database",
            &format!("powerful={super_url}"),
        ]);
        let health = RemoteDatabase::connect_to(server.endpoint.clone(), "powerful")
            .await
            .expect("connect");
        if health.fetch_all("SELECT 1", &[]).await.is_err() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE {engine}: the superuser {superuser} cannot log in without a password here; \
                 its warning is not checked"
            );
            continue;
        }
        assert!(
            wait_for_log(&server, "privileges beyond"),
            "{engine}: no warning for {superuser}:\n{}",
            server.log_text()
        );
        let log = server.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("privileges beyond"))
            .unwrap_or_default();
        assert!(
            line.contains("powerful") && line.contains(privilege),
            "{engine}: {line}"
        );
        assert!(!line.contains(&super_url), "{engine}: {line}");
        assert_eq!(
            log.matches("privileges beyond").count(),
            1,
            "{engine}: warned more than once:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------
// Secrets from files

/// Runs the server with `args` and `env` until it exits (at most 20 s);
/// its exit code and stderr.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(iadb_tests::harness::server_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run the server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test]
async fn database_urls_and_the_d1_token_come_from_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default_file = dir.path().join("default_url");
    let other_file = dir.path().join("other_url");
    std::fs::write(
        &default_file,
        format!("sqlite:///{}\n", dir.path().join("a.db").display()),
    )
    .expect("write");
    std::fs::write(
        &other_file,
        format!("  sqlite:///{}  \n", dir.path().join("b.db").display()),
    )
    .expect("write");
    let fake = iadb_tests::d1_fake::D1Fake::start();
    let token_file = dir.path().join("d1_token");
    std::fs::write(&token_file, format!("{}\n", fake.token)).expect("write");
    let d1_url = fake.url_without_token();
    let server = TestServer::start_with_env(
        &[
            "--database",
            &format!("other=@{}", other_file.display()),
            "--database",
            &format!("edge={d1_url}"),
        ],
        &[
            ("DATABASE_URL_FILE", &default_file.display().to_string()),
            (
                "CLOUDFLARE_API_TOKEN_FILE",
                &token_file.display().to_string(),
            ),
        ],
    );
    for (name, file) in [("", "a.db"), ("other", "b.db")] {
        let db = RemoteDatabase::connect_to(server.endpoint.clone(), name)
            .await
            .expect("connect");
        db.execute("CREATE TABLE t (a INTEGER)", &[])
            .await
            .expect("create");
        assert!(dir.path().join(file).exists(), "{name}: {file} not created");
    }
    let edge = RemoteDatabase::connect_to(server.endpoint.clone(), "edge")
        .await
        .expect("connect");
    edge.execute("CREATE TABLE t (a INTEGER)", &[])
        .await
        .expect("D1 with the token from a file");
    let bearer = format!("Bearer {}", fake.token);
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str())),
        "the token from the file is sent, trimmed"
    );

    // A file that cannot be read stops the start, named, and its contents
    // never show.
    let missing = dir.path().join("missing_url");
    let (code, stderr) = run_to_exit(&["--database", &format!("x=@{}", missing.display())], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("database `x`"),
        "{stderr}"
    );
    let secret_file = dir.path().join("not_a_url");
    std::fs::write(&secret_file, "Zq1NotAUrl:Secret%20Pw").expect("write");
    let (code, stderr) = run_to_exit(
        &["--database", &format!("y=@{}", secret_file.display())],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("Secret"), "{stderr}");
    let (code, stderr) = run_to_exit(
        &[],
        &[
            ("DATABASE_URL", "sqlite:///:memory:"),
            ("DATABASE_URL_FILE", &default_file.display().to_string()),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL_FILE"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Engines' messages that quote a parameter

#[tokio::test]
async fn engine_messages_never_quote_a_parameter_value() {
    let mut engines = vec![Engine::Mysql];
    if cfg!(feature = "duckdb") {
        engines.push(Engine::Duckdb);
    }
    for engine in engines {
        let Some(target) = Target::remote(engine).await else {
            continue;
        };
        let table = target.table("quoted");
        let db = &target.db;
        db.execute(
            &format!("CREATE TABLE {table} (k VARCHAR(100) PRIMARY KEY, n INTEGER)"),
            &[],
        )
        .await
        .expect("create");
        let insert = format!("INSERT INTO {table} (k, n) VALUES (?, ?)");
        let key = Value::Text("Zq1DuplicateMarker".into());
        db.execute(&insert, &[key.clone(), Value::Int(1)])
            .await
            .expect("insert");
        // A duplicate key: MySQL's message quotes the key ("Duplicate entry
        // '...'"), DuckDB's too ("Duplicate key \"k: ...\"").
        let message = refused(
            &format!("{}: duplicate", engine.name()),
            db.execute(&insert, &[key.clone(), Value::Int(2)]).await,
            ErrorKind::AlreadyExists,
        );
        assert!(
            !message.contains("Zq1DuplicateMarker") && message.contains("<parameter 1 (text)>"),
            "{}: {message}",
            engine.name()
        );
        // The same through a batch and a transaction.
        let error = db_batch_error(&target, &insert, &key).await;
        assert!(
            !error.contains("Zq1DuplicateMarker"),
            "{}: {error}",
            engine.name()
        );
        db.execute(&format!("DROP TABLE {table}"), &[])
            .await
            .expect("drop");
    }
}

/// The message of a duplicate insert inside a Batch, then inside a
/// Transaction stream.
async fn db_batch_error(target: &Target, insert: &str, key: &Value) -> String {
    let server = target.server.as_ref().expect("a remote target");
    let db = server.client("").await;
    let batch = db
        .batch(
            &[Statement::with_params(
                insert,
                vec![key.clone(), Value::Int(3)],
            )],
            false,
        )
        .await;
    let mut messages = refused("batch duplicate", batch, ErrorKind::AlreadyExists);
    let mut tx = db
        .transaction(TransactionOptions::default())
        .await
        .expect("transaction");
    let in_tx = tx.execute(insert, &[key.clone(), Value::Int(4)]).await;
    messages.push('\n');
    messages.push_str(&refused(
        "transaction duplicate",
        in_tx,
        ErrorKind::AlreadyExists,
    ));
    messages
}
