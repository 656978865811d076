//! The `iadb` command-line client against a real server on a loopback port.

use clap::Parser;
use iadb_server::{BoundServer, Cli, Settings};
use std::process::{Command, Output};

struct Server {
    endpoint: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server() -> Server {
    start_server_with(&[]).await
}

async fn start_server_with(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("cli.db").display());
    let cli = Cli::parse_from(
        [
            "iadb-server",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
        ]
        .iter()
        .chain(extra),
    );
    let server = BoundServer::bind(Settings::from_cli(&cli).unwrap())
        .await
        .unwrap();
    let endpoint = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Server {
        endpoint,
        _dir: dir,
        _stop: stop,
    }
}

async fn iadb(server: &Server, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
    command.arg("--server").arg(&server.endpoint).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_exec_tables_health() {
    let server = start_server().await;
    let created = iadb(
        &server,
        &[
            "exec",
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL)",
        ],
    )
    .await;
    assert_eq!(stdout(&created).trim(), "0 row(s) affected");
    let inserted = iadb(
        &server,
        &[
            "exec",
            "INSERT INTO people (name, score) VALUES (?, ?), (?, ?)",
            "Ada",
            "9.5",
            "Grace",
            "null",
        ],
    )
    .await;
    assert_eq!(
        stdout(&inserted).trim(),
        "2 row(s) affected, last insert id 2"
    );

    let table = stdout(
        &iadb(
            &server,
            &["query", "SELECT id, name, score FROM people ORDER BY id"],
        )
        .await,
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].contains("id") && lines[1].contains("name") && lines[1].contains("score"),
        "{table}"
    );
    assert!(table.contains("│ 1  ┆ Ada   ┆ 9.5   │"), "{table}");
    assert!(table.contains("│ 2  ┆ Grace ┆ NULL  │"), "{table}");
    assert_eq!(lines.last().copied(), Some("(2 rows)"));

    let json = stdout(
        &iadb(
            &server,
            &[
                "query",
                "--json",
                "SELECT name, score FROM people WHERE id = ?",
                "1",
            ],
        )
        .await,
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, serde_json::json!([{"name": "Ada", "score": 9.5}]));

    let csv = stdout(
        &iadb(
            &server,
            &["query", "--csv", "SELECT id, name FROM people ORDER BY id"],
        )
        .await,
    );
    assert_eq!(csv, "id,name\n1,Ada\n2,Grace\n");

    let tables = stdout(&iadb(&server, &["tables"]).await);
    // iadb's own tables (system migrations) are listed too.
    assert_eq!(
        tables,
        "ia_migrations\nia_migrations_lock\nia_settings\npeople\n"
    );

    let health = stdout(&iadb(&server, &["health"]).await);
    assert!(
        health.contains("default") && health.contains("sqlite") && health.contains("true"),
        "{health}"
    );
}

/// `query --max-staleness-ms N` sends a bounded-staleness read; a server
/// without replicas answers it on its primary (routing to a standby is
/// tested on a real cluster in tests/tests/replicas.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_with_a_staleness_bound() {
    let server = start_server().await;
    let read = iadb(
        &server,
        &[
            "query",
            "--max-staleness-ms",
            "500",
            "--json",
            "SELECT 41 + 1 AS n",
        ],
    )
    .await;
    assert_eq!(stdout(&read).trim(), "[\n  {\"n\": 42}\n]");
    let bad = iadb(&server, &["query", "--max-staleness-ms", "-5", "SELECT 1"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("max-staleness-ms"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_the_message_and_exit_non_zero() {
    let server = start_server().await;
    let out = iadb(&server, &["query", "SELECT * FROM missing_table"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such table: missing_table"), "{stderr}");
    assert!(stderr.contains("invalid argument"), "{stderr}");

    let out = iadb(&server, &["query", "SELECT ?", "date:2024-13-45"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad date"));

    let out = Command::new(env!("CARGO_BIN_EXE_iadb"))
        .args(["--server", "http://127.0.0.1:9", "health"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach iadb server"));
}

/// `iadb` with `stdin` as its standard input.
async fn iadb_with_stdin(server: &Server, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
    command
        .arg("--server")
        .arg(&server.endpoint)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn count_notes(server: &Server) -> String {
    let out = iadb(
        server,
        &["query", "--csv", "SELECT COUNT(*) AS n FROM notes"],
    )
    .await;
    stdout(&out).lines().nth(1).unwrap_or_default().to_owned()
}

/// `iadb batch FILE` and `iadb batch -` run a script as one Batch: `;` in
/// literals and comments does not split it, every statement's result is
/// printed, and a failing statement leaves nothing and is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_a_script_all_or_nothing() {
    let server = start_server().await;
    let created = iadb(
        &server,
        &[
            "exec",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        ],
    )
    .await;
    stdout(&created);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("notes.sql");
    std::fs::write(
        &script,
        "-- two notes; one query\n\
         INSERT INTO notes (body) VALUES ('a; b');\n\
         /* ; */ INSERT INTO notes (body) VALUES ('it''s -- not a comment');\n\
         SELECT id, body FROM notes ORDER BY id;\n",
    )
    .unwrap();
    let out = iadb(&server, &["batch", script.to_str().unwrap()]).await;
    let text = stdout(&out);
    assert!(
        text.contains("statement 0: 1 row(s) affected, last insert id 1"),
        "{text}"
    );
    assert!(
        text.contains("statement 1: 1 row(s) affected, last insert id 2"),
        "{text}"
    );
    assert!(text.contains("statement 2:\n"), "{text}");
    assert!(text.contains("a; b"), "{text}");
    assert!(text.contains("it's -- not a comment"), "{text}");
    assert!(text.contains("(2 rows)"), "{text}");
    assert!(
        text.trim_end().ends_with("committed 3 statement(s)"),
        "{text}"
    );

    // From stdin; the 3rd statement fails: nothing of it stays.
    let out = iadb_with_stdin(
        &server,
        &["batch", "-"],
        "INSERT INTO notes (body) VALUES ('c'); INSERT INTO notes (body) VALUES ('d');\n\
         INSERT INTO missing (x) VALUES (1); INSERT INTO notes (body) VALUES ('e')",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("statement 2:"), "{stderr}");
    assert!(stderr.contains("no such table: missing"), "{stderr}");
    assert_eq!(count_notes(&server).await, "2");

    // A script without a statement.
    let out = iadb_with_stdin(&server, &["batch", "-"], " ; -- nothing\n").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin holds no statement"), "{stderr}");
}

/// `iadb tx` runs stdin's statements in one Transaction and commits at the
/// end; an error rolls everything back; `--rollback` is a dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_runs_stdin_in_one_transaction() {
    let server = start_server().await;
    let created = iadb(
        &server,
        &[
            "exec",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        ],
    )
    .await;
    stdout(&created);
    let out = iadb_with_stdin(
        &server,
        &["tx", "--isolation", "serializable"],
        "INSERT INTO notes (body) VALUES ('x;y');\n\
         UPDATE notes SET body = body || '!';\n\
         SELECT body FROM notes;",
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains("statement 0: 1 row(s) affected"), "{text}");
    assert!(text.contains("statement 1: 1 row(s) affected"), "{text}");
    assert!(text.contains("x;y!"), "{text}");
    assert!(
        text.trim_end().ends_with("committed 3 statement(s)"),
        "{text}"
    );
    assert_eq!(count_notes(&server).await, "1");

    // The second statement fails: the first is rolled back too.
    let out = iadb_with_stdin(
        &server,
        &["tx"],
        "INSERT INTO notes (body) VALUES ('z'); SELECT nope FROM notes",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("statement 1:"), "{stderr}");
    assert!(stderr.contains("no such column: nope"), "{stderr}");
    assert_eq!(count_notes(&server).await, "1");

    // A dry run: the statements run, nothing stays.
    let out = iadb_with_stdin(
        &server,
        &["tx", "--rollback"],
        "INSERT INTO notes (body) VALUES ('w'); SELECT COUNT(*) AS n FROM notes",
    )
    .await;
    let text = stdout(&out);
    assert!(text.contains("│ 2 │"), "{text}");
    assert!(
        text.trim_end().ends_with("rolled back 2 statement(s)"),
        "{text}"
    );
    assert_eq!(count_notes(&server).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_apply_status_rollback() {
    let server = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("V1__accounts.sql"),
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("U1__accounts.sql"),
        "DROP TABLE accounts;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("V2__audit.sql"),
        "CREATE TABLE audit (id INTEGER);\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("U2__audit.sql"), "DROP TABLE audit;\n").unwrap();
    let d = dir.path().to_str().unwrap();

    let plan = stdout(&iadb(&server, &["migrate", "plan", "--dir", d]).await);
    assert!(
        plan.contains("-- V1__accounts.sql\nCREATE TABLE accounts"),
        "{plan}"
    );
    let applied = stdout(&iadb(&server, &["migrate", "apply", "--dir", d]).await);
    assert!(
        applied.contains("changed: V1__accounts.sql, V2__audit.sql"),
        "{applied}"
    );
    let status = stdout(&iadb(&server, &["migrate", "status", "--dir", d]).await);
    for file in [
        "V001__iadb_settings.sql",
        "V1__accounts.sql",
        "V2__audit.sql",
    ] {
        assert!(
            status
                .lines()
                .any(|l| l.contains(file) && l.contains("applied") && l.contains("true")),
            "{status}"
        );
    }
    let rolled = stdout(
        &iadb(
            &server,
            &["migrate", "rollback", "--target", "1", "--dir", d],
        )
        .await,
    );
    assert!(rolled.contains("changed: V2__audit.sql"), "{rolled}");
    assert_eq!(
        stdout(&iadb(&server, &["tables"]).await),
        "accounts\nia_migrations\nia_migrations_lock\nia_settings\n"
    );

    // A badly named file is refused by name, and nothing is applied.
    std::fs::write(
        dir.path().join("V3_missing_underscore.sql"),
        "CREATE TABLE nope (id INTEGER);\n",
    )
    .unwrap();
    let out = iadb(&server, &["migrate", "apply", "--dir", d]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("V3_missing_underscore.sql") && stderr.contains("invalid argument"),
        "{stderr}"
    );
    assert!(!stdout(&iadb(&server, &["tables"]).await).contains("nope"));
}

/// `iadb probe` against the standard health service: exit code and output
/// for each service name, as a container health check sees them.
fn probe(endpoint: &str, service: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iadb"))
        .args(["--server", endpoint, "probe", "--service", service])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exit_codes() {
    let server = start_server().await;
    let endpoint = server.endpoint.clone();
    let run = move |service: &'static str| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || probe(&endpoint, service))
    };

    // The whole server and the process: SERVING, exit 0.
    for service in ["", "iadb.v1.Database"] {
        let out = run(service).await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{service:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "status: SERVING\n");
    }

    // A database's status is set by the first background check, which runs
    // as the server starts: wait for it (bounded).
    let mut out = run("default").await.unwrap();
    for _ in 0..50 {
        if out.status.code() == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        out = run("default").await.unwrap();
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "status: SERVING\n");

    // A name the server does not know: SERVICE_UNKNOWN, exit 1.
    let out = run("no-such-database").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "status: SERVICE_UNKNOWN\n"
    );

    // Nothing listening: exit 2, the reason on stderr, nothing on stdout.
    let out = tokio::task::spawn_blocking(|| probe("http://127.0.0.1:9", ""))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to http://127.0.0.1:9"),
        "{stderr}"
    );
}

/// The health check commands of deploy/Dockerfile (`HEALTHCHECK CMD [...]`)
/// and deploy/docker-compose.yml (`test: ["CMD", ...]`), exactly as written,
/// with `iadb` being this build of the CLI and IADB_SERVER the test server
/// (in the container it is the default, 127.0.0.1:50051).
fn deploy_health_checks() -> Vec<(&'static str, Vec<String>)> {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).unwrap();
    let joined = dockerfile.replace("\\\n", " ");
    let healthcheck = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("HEALTHCHECK in deploy/Dockerfile");
    let (_, exec) = healthcheck
        .split_once(" CMD ")
        .expect("HEALTHCHECK ... CMD [...]");
    let docker: Vec<String> = serde_json::from_str(exec.trim()).expect("exec form JSON array");

    let compose = std::fs::read_to_string(deploy.join("docker-compose.yml")).unwrap();
    let test = compose
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("test: "))
        .find(|t| t.contains("\"iadb\""))
        .expect("iadb's healthcheck test in deploy/docker-compose.yml");
    let compose: Vec<String> = serde_json::from_str(test).expect("a JSON-style YAML list");
    assert_eq!(compose.first().map(String::as_str), Some("CMD"));
    vec![
        ("deploy/Dockerfile", docker),
        ("deploy/docker-compose.yml", compose[1..].to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_health_checks_pass_on_a_serving_server() {
    let server = start_server().await;
    for (file, command) in deploy_health_checks() {
        assert_eq!(
            command.get(..2),
            Some(&["iadb".to_owned(), "probe".to_owned()][..]),
            "{file}"
        );
        let mut run = Command::new(env!("CARGO_BIN_EXE_iadb"));
        run.args(&command[1..]).env("IADB_SERVER", &server.endpoint);
        let out = tokio::task::spawn_blocking(move || run.output().unwrap())
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "status: SERVING\n");
    }
}

/// A gRPC server that accepts every call and never answers, so that only the
/// client's own deadline can end a call (no race with a server timer).
#[derive(Clone)]
struct Silent;

impl tonic::server::NamedService for Silent {
    const NAME: &'static str = "iadb.v1.Database";
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Silent {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            Ok(tonic::codegen::http::Response::new(
                tonic::body::Body::empty(),
            ))
        })
    }
}

/// Issue 10, case 7: a passed deadline is DEADLINE_EXCEEDED with a non-zero
/// exit, every time (it was CANCELLED when the client's timer fired first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_deadline_is_deadline_exceeded_and_exits_non_zero() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Silent)
            .serve_with_incoming(incoming),
    );
    for args in [
        ["query", "SELECT 1"],
        ["exec", "INSERT INTO t VALUES (1)"],
        ["query", "SELECT 2"],
    ] {
        let started = std::time::Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
        command
            .args(["--server", endpoint.as_str(), "--timeout-ms", "300"])
            .args(args);
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("(deadline exceeded)"), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    server.abort();
}

/// `iadb token` prints a token and its entry; the server given that entry
/// accepts the token from `--token` and from `IADB_TOKEN`, and refuses a
/// call without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_and_token_flag() {
    let make = |scope: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_iadb"))
            .args(["token", "--name", &format!("cli-{scope}"), "--scope", scope])
            .args(["--databases", "default"])
            .output()
            .unwrap();
        let text = stdout(&out);
        let (token, entry) = text.split_once('\n').unwrap();
        assert!(token.starts_with("iadb_"), "{text}");
        assert!(!entry.contains(token), "{text}");
        (token.to_owned(), entry.to_owned())
    };
    let (writer, writer_entry) = make("write");
    let (reader, reader_entry) = make("read");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("{writer_entry}\n{reader_entry}")).unwrap();
    let server = start_server_with(&["--tokens-file", tokens.to_str().unwrap()]).await;

    let refused = iadb(&server, &["exec", "CREATE TABLE t (id INTEGER)"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs a token"), "{stderr}");

    let created = iadb(
        &server,
        &["--token", &writer, "exec", "CREATE TABLE t (id INTEGER)"],
    )
    .await;
    assert!(stdout(&created).contains("0 row(s) affected") || created.status.success());
    let inserted = iadb(
        &server,
        &[
            "--token",
            &writer,
            "exec",
            "INSERT INTO t (id) VALUES (?)",
            "7",
        ],
    )
    .await;
    assert!(stdout(&inserted).contains('1'));

    let as_reader = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
        command
            .arg("--server")
            .arg(&server.endpoint)
            .args(args)
            .env("IADB_TOKEN", &reader);
        command.output().unwrap()
    };
    let denied = as_reader(&["exec", "DELETE FROM t"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("cli-read") && stderr.contains("write"),
        "{stderr}"
    );
    let rows = as_reader(&["query", "--csv", "SELECT id FROM t"]);
    assert_eq!(stdout(&rows), "id\n7\n");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it
/// signed, as PEM files in `dir`: (ca, server cert, server key, client
/// cert, client key).
fn test_certificates(dir: &std::path::Path) -> [String; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server-key.pem", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client-key.pem", client_key.serialize_pem()),
    ];
    files.map(|(name, text)| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    })
}

/// `--ca-cert`, `--client-cert` and `--client-key` with an https:// server
/// that asks for client certificates: query and probe work with them, and
/// fail without the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_reach_an_mtls_server() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client_cert, client_key] = test_certificates(dir.path());
    let server = start_server_with(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ])
    .await;
    let https = server.endpoint.replacen("http://", "https://", 1);
    let run = |args: Vec<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
        command.arg("--server").arg(&https).args(args);
        command.output().unwrap()
    };
    let tls = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["--ca-cert".into(), ca.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let with_client = |extra: &[&str]| {
        let mut args = tls(&["--client-cert", &client_cert, "--client-key", &client_key]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let rows = run(with_client(&["query", "--csv", "SELECT 1 AS one"]));
    assert_eq!(stdout(&rows), "one\n1\n");
    let probe = run(with_client(&["probe"]));
    assert_eq!(stdout(&probe), "status: SERVING\n");
    let refused = run(tls(&["query", "SELECT 1 AS one"]));
    assert!(
        !refused.status.success(),
        "served without a client certificate"
    );
    let plain = Command::new(env!("CARGO_BIN_EXE_iadb"))
        .args([
            "--server",
            &server.endpoint,
            "--ca-cert",
            &ca,
            "query",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("https://"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

/// SQL of `n` generated rows: `x` (1..=n) and a text `label`.
fn generated_rows(n: u64) -> String {
    format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
         SELECT x, 'row number ' || x AS label FROM c"
    )
}

/// The peak resident memory (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `iadb` with `args`, reading its standard output as it comes:
/// `keep` lines are kept, then the pipe is closed (as `| head` does) unless
/// `keep` is `None`, when everything is read. Returns the lines kept, the
/// bytes read, the exit status, stderr and the largest peak RSS seen (KiB).
async fn iadb_piped(
    server: &Server,
    args: &[&str],
    keep: Option<usize>,
) -> (Vec<String>, u64, std::process::ExitStatus, String, u64) {
    use std::io::{BufRead as _, Read as _};
    let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
    command
        .arg("--server")
        .arg(&server.endpoint)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let pid = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                peak
            })
        };
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let mut bytes = 0u64;
        let mut line = String::new();
        while keep.is_none_or(|k| lines.len() < k) {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            if n == 0 {
                break;
            }
            bytes += n as u64;
            lines.push(line.trim_end_matches('\n').to_owned());
            if keep.is_none() && lines.len() > 3 {
                // Only the first lines and the last are kept.
                lines.remove(1);
            }
        }
        if keep.is_some() {
            drop(stdout);
        } else {
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest).unwrap();
            bytes += rest.len() as u64;
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = watcher.join().unwrap();
        (lines, bytes, status, stderr, peak)
    })
    .await
    .unwrap()
}

/// Issue 13: every format ends quietly with exit 0 when its reader closes
/// the pipe after a few lines (`iadb query ... | head`); it was a panic
/// (exit 101) once the whole result had been read into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_quietly_with_exit_0() {
    let server = start_server().await;
    let sql = generated_rows(200_000);
    for format in [None, Some("--json"), Some("--csv")] {
        let mut args = vec!["query"];
        args.extend(format);
        args.push(&sql);
        let (lines, _, status, stderr, _) = iadb_piped(&server, &args, Some(3)).await;
        assert_eq!(lines.len(), 3, "{format:?}: {lines:?} {stderr}");
        assert_eq!(status.code(), Some(0), "{format:?}: {stderr}");
        assert_eq!(stderr, "", "{format:?}");
    }
}

/// Issue 13: rows are printed as they arrive, so the client's memory stays
/// flat: 1,000,000 rows (about 30 MB of CSV, more as a table or JSON) go
/// through a pipe with a peak RSS far below what holding them would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_for_a_large_result() {
    let server = start_server().await;
    let rows = 1_000_000u64;
    let sql = generated_rows(rows);
    for format in ["--csv", "--json", "--table"] {
        let mut args = vec!["query"];
        if format != "--table" {
            args.push(format);
        }
        args.push(&sql);
        let (lines, bytes, status, stderr, peak_kib) = iadb_piped(&server, &args, None).await;
        assert!(status.success(), "{format}: {stderr}");
        let last = lines.last().cloned().unwrap_or_default();
        match format {
            "--csv" => assert_eq!(last, format!("{rows},row number {rows}")),
            "--json" => assert_eq!(lines.last().map(String::as_str), Some("]")),
            _ => assert_eq!(last, "(1000000 rows)"),
        }
        eprintln!("{format}: {bytes} bytes printed, peak RSS {peak_kib} KiB");
        assert!(
            peak_kib > 0 && peak_kib < 64 * 1024,
            "{format}: peak RSS {peak_kib} KiB for {bytes} bytes of output"
        );
    }
}

/// Issue 13: the table prints in chunks; a chunk's columns are as wide as
/// its values and never narrower than before, and a `├` line marks where a
/// wider value made them wider. One header, every row, the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_prints_in_chunks_with_aligned_widths() {
    let server = start_server().await;
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2500) \
               SELECT x, CASE WHEN x = 2000 THEN 'a much longer label than the others' \
               ELSE 'short' END AS label FROM c";
    let text = stdout(&iadb(&server, &["query", sql]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with('┌'), "{}", lines[0]);
    assert!(lines[1].contains(" x ") && lines[1].contains(" label "));
    assert!(lines[2].starts_with('╞'));
    assert_eq!(lines.iter().filter(|l| l.contains("┆ label")).count(), 1);
    assert_eq!(lines.last().copied(), Some("(2500 rows)"));
    let body = &lines[3..lines.len() - 2];
    assert!(lines[lines.len() - 2].starts_with('└'));
    let rows: Vec<&&str> = body.iter().filter(|l| l.starts_with('│')).collect();
    assert_eq!(rows.len(), 2500);
    assert!(rows[0].contains("│ 1 ") && rows[2499].contains("│ 2500 "));
    // Widths: the same within a chunk, wider after a `├` line, never narrower.
    let separators = body.iter().filter(|l| l.starts_with('├')).count();
    assert!(separators >= 1, "no chunk got wider:\n{text}");
    let mut width = lines[0].chars().count();
    for line in body {
        let w = line.chars().count();
        if line.starts_with('├') {
            assert!(w > width, "{line}");
            width = w;
        } else {
            assert_eq!(w, width, "{line}");
        }
    }
    assert_eq!(lines[lines.len() - 2].chars().count(), width);
    assert!(
        text.contains("│ 2000 ┆ a much longer label than the others │"),
        "{text}"
    );
}

/// Issue 13: `--json` keeps the columns' order, one object per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keeps_column_order() {
    let server = start_server().await;
    let json = stdout(
        &iadb(
            &server,
            &[
                "query",
                "--json",
                "SELECT 1 AS zeta, 'a' AS alpha, NULL AS mid, 2.5 AS beta \
                 UNION ALL SELECT 2, 'b\"', 3, -1.0",
            ],
        )
        .await,
    );
    assert_eq!(
        json,
        "[\n  {\"zeta\": 1, \"alpha\": \"a\", \"mid\": null, \"beta\": 2.5},\n  \
         {\"zeta\": 2, \"alpha\": \"b\\\"\", \"mid\": 3, \"beta\": -1.0}\n]\n"
    );
    let empty = stdout(&iadb(&server, &["query", "--json", "SELECT 1 AS a WHERE 0"]).await);
    assert_eq!(empty, "[]\n");
}

/// Issue 13: a parameter is an integer or a double only when written
/// exactly as one; anything else reaches the engine as the text typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_keep_what_was_typed() {
    let server = start_server().await;
    let cases = [
        ("007", "007", "text"),
        ("+14155551234", "+14155551234", "text"),
        ("1e3", "1e3", "text"),
        ("1.50", "1.50", "text"),
        ("-0", "-0", "text"),
        (".5", ".5", "text"),
        ("12345678901234567890", "12345678901234567890", "text"),
        ("3.14159265358979323846", "3.14159265358979323846", "text"),
        ("42", "42", "integer"),
        ("-7", "-7", "integer"),
        ("9.5", "9.5", "real"),
        ("-0.25", "-0.25", "real"),
        ("1.0", "1", "real"),
        ("int:007", "7", "integer"),
        ("double:1e3", "1000", "real"),
        ("text:42", "42", "text"),
        ("null", "", "null"),
    ];
    for (param, value, kind) in cases {
        let out = iadb(
            &server,
            &[
                "query",
                "--csv",
                "SELECT ? AS v, typeof(?) AS t",
                param,
                param,
            ],
        )
        .await;
        assert_eq!(stdout(&out), format!("v,t\n{value},{kind}\n"), "{param}");
    }
}

/// Issue 13: `--server HOST:PORT` without a scheme is plain gRPC, as in
/// grpcurl and the other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_address_without_a_scheme() {
    let server = start_server().await;
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let run = |args: &'static [&'static str]| {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_iadb"))
                .args(["--server", &address])
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = run(&["query", "--csv", "SELECT 1 AS one"]).await.unwrap();
    assert_eq!(stdout(&out), "one\n1\n");
    let out = run(&["probe"]).await.unwrap();
    assert_eq!(stdout(&out), "status: SERVING\n");
}

/// Issue 13: the SQL of `query` and `exec` from a file (`-f FILE`) or
/// stdin (`-`, `-f -`); `query` on a statement without rows says what it
/// changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_from_a_file_or_stdin_and_rows_changed() {
    let server = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let create = dir.path().join("create.sql");
    std::fs::write(
        &create,
        "-- the table\nCREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n",
    )
    .unwrap();
    let out = iadb(&server, &["exec", "-f", create.to_str().unwrap()]).await;
    assert_eq!(stdout(&out), "0 row(s) affected\n");
    let out = iadb_with_stdin(
        &server,
        &["exec", "-", "a;b", "007"],
        "INSERT INTO notes (body) VALUES (?), (?);",
    )
    .await;
    assert_eq!(stdout(&out), "2 row(s) affected, last insert id 2\n");
    let select = dir.path().join("select.sql");
    std::fs::write(
        &select,
        "SELECT id, body FROM notes WHERE id >= ? ORDER BY id;",
    )
    .unwrap();
    let out = iadb(
        &server,
        &["query", "--csv", "-f", select.to_str().unwrap(), "1"],
    )
    .await;
    assert_eq!(stdout(&out), "id,body\n1,a;b\n2,007\n");
    let out = iadb_with_stdin(
        &server,
        &["query", "--csv", "-f", "-"],
        "SELECT COUNT(*) AS n FROM notes",
    )
    .await;
    assert_eq!(stdout(&out), "n\n2\n");

    // A statement without result columns: the rows it changed.
    let out = iadb(&server, &["query", "UPDATE notes SET body = body || '!'"]).await;
    assert_eq!(stdout(&out), "2 row(s) affected\n");
    let out = iadb(
        &server,
        &["query", "--csv", "DELETE FROM notes WHERE id = ?", "2"],
    )
    .await;
    assert_eq!(stdout(&out), "1 row(s) affected\n");

    // More than one statement is refused, naming the file; nothing runs.
    let two = dir.path().join("two.sql");
    std::fs::write(&two, "DELETE FROM notes; DROP TABLE notes;").unwrap();
    let out = iadb(&server, &["query", "-f", two.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("two.sql holds 2 statements"), "{stderr}");
    assert_eq!(count_notes(&server).await, "1");
}

/// The repository's LICENSE is the MIT licence every manifest declares.
#[test]
fn license_file_matches_the_declared_licence() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    assert_eq!(
        manifest["workspace"]["package"]["license"].as_str(),
        Some("MIT")
    );
    assert_eq!(env!("CARGO_PKG_LICENSE"), "MIT");
    let license = std::fs::read_to_string(root.join("LICENSE")).expect("a LICENSE file");
    assert!(license.starts_with("MIT License\n"), "{license}");
    for text in [
        "Permission is hereby granted, free of charge, to any person obtaining a copy",
        "The above copyright notice and this permission notice shall be included in all",
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND",
    ] {
        assert!(license.contains(text), "{text}");
    }
    let pyproject = std::fs::read_to_string(root.join("client/python/pyproject.toml")).unwrap();
    assert!(
        pyproject
            .lines()
            .any(|l| l.starts_with("license") && l.contains("MIT")),
        "client/python/pyproject.toml declares another licence"
    );
    let package: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("client/node/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(package["license"], "MIT");
}

/// Issue 13: with stderr on a terminal (a pseudo-terminal made by
/// util-linux `script`) and stdout in a file, a long result shows a
/// progress line on stderr (rows so far, rows/s), erased at the end; the
/// file holds the rows only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_line_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "`script` (util-linux) is needed for the pseudo-terminal"
        );
        eprintln!("skipped: no `script` (util-linux) for a pseudo-terminal");
        return;
    }
    let server = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.csv");
    let shell = format!(
        "'{}' --server '{}' query --csv \
         'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
          SELECT x FROM c' > '{}'",
        env!("CARGO_BIN_EXE_iadb"),
        server.endpoint,
        rows.display()
    );
    let mut command = Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    let progress = terminal
        .split('\r')
        .find(|part| part.contains(" rows, "))
        .unwrap_or_else(|| panic!("no progress line on the terminal: {terminal:?}"));
    assert!(progress.trim_end().ends_with("rows/s"), "{progress:?}");
    // Erased at the end: the last thing on the terminal clears the line.
    assert!(terminal.trim_end().ends_with("\r\x1b[K"), "{terminal:?}");
    let csv = std::fs::read_to_string(&rows).unwrap();
    assert!(csv.starts_with("x\n1\n2\n"));
    assert!(csv.ends_with("\n300000\n"));
    assert!(!csv.contains("rows/s"));
}

/// `iadb shell` at a terminal (a pseudo-terminal): statements over several
/// lines run when a line ends them with `;`, `\dt` lists tables, `\format`
/// switches the output, errors are printed and the shell goes on,
/// BEGIN ... COMMIT / ROLLBACK run on one Transaction stream (another
/// client sees the rows only after COMMIT), an error inside a transaction
/// rolls it back, the up arrow recalls the last statement, the history is
/// saved to `IADB_HISTORY`, and end of input (Ctrl-D) rolls back an open
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_at_a_terminal() {
    let server = start_server().await;
    let endpoint = server.endpoint.clone();
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let history_file = history.clone();
    let count = move |endpoint: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_iadb"))
            .args(["--server", endpoint, "query", "--csv"])
            .arg("SELECT COUNT(*) AS n FROM shell_notes")
            .output()
            .unwrap();
        stdout(&out).lines().nth(1).unwrap_or_default().to_owned()
    };
    tokio::task::spawn_blocking(move || {
        let shell = |history: &std::path::Path| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_iadb"));
            command
                .args(["--server", &endpoint, "shell"])
                .env("IADB_HISTORY", history)
                .env("TERM", "xterm");
            rexpect::session::spawn_command(command, Some(30_000)).unwrap()
        };
        let mut p = shell(&history);
        p.exp_string("iadb=> ").unwrap();
        p.send_line("CREATE TABLE shell_notes (id INTEGER, name TEXT);")
            .unwrap();
        p.exp_string("0 row(s) affected").unwrap();
        // One statement over two lines: the `;` inside the literal does
        // not end it.
        p.send_line("INSERT INTO shell_notes VALUES (1, 'a'),")
            .unwrap();
        p.exp_string("iadb-> ").unwrap();
        p.send_line("(2, 'b;c');").unwrap();
        p.exp_string("2 row(s) affected").unwrap();
        p.send_line("\\dt").unwrap();
        p.exp_string("shell_notes\r\n").unwrap();
        p.send_line("\\format csv").unwrap();
        p.exp_string("format: csv").unwrap();
        p.send_line("SELECT id, name FROM shell_notes ORDER BY id;")
            .unwrap();
        p.exp_string("id,name\r\n1,a\r\n2,b;c\r\n").unwrap();
        // An error is printed, and the shell goes on.
        p.send_line("SELEC 1;").unwrap();
        p.exp_string("ERROR: ").unwrap();
        p.exp_string("iadb=> ").unwrap();
        // A transaction: another client sees its row after COMMIT only.
        p.send_line("BEGIN;").unwrap();
        p.exp_string("iadb*> ").unwrap();
        p.send_line("INSERT INTO shell_notes VALUES (3, 'c');")
            .unwrap();
        p.exp_string("1 row(s) affected").unwrap();
        p.exp_string("iadb*> ").unwrap();
        assert_eq!(count(&endpoint), "2", "seen before COMMIT");
        p.send_line("COMMIT;").unwrap();
        p.exp_string("COMMIT\r\n").unwrap();
        p.exp_string("iadb=> ").unwrap();
        assert_eq!(count(&endpoint), "3", "not seen after COMMIT");
        p.send_line("BEGIN;").unwrap();
        p.exp_string("iadb*> ").unwrap();
        p.send_line("DELETE FROM shell_notes;").unwrap();
        p.exp_string("3 row(s) affected").unwrap();
        p.send_line("ROLLBACK;").unwrap();
        p.exp_string("ROLLBACK\r\n").unwrap();
        p.exp_string("iadb=> ").unwrap();
        assert_eq!(count(&endpoint), "3", "a rolled-back DELETE");
        // An error inside a transaction rolls it back.
        p.send_line("BEGIN;").unwrap();
        p.exp_string("iadb*> ").unwrap();
        p.send_line("DELETE FROM shell_notes WHERE id = 1;")
            .unwrap();
        p.exp_string("1 row(s) affected").unwrap();
        p.send_line("INSERT INTO no_such_table VALUES (1);")
            .unwrap();
        p.exp_string("the transaction was rolled back").unwrap();
        p.exp_string("iadb=> ").unwrap();
        assert_eq!(count(&endpoint), "3", "the DELETE before the error");
        // The up arrow recalls the last statement; Enter runs it again.
        p.send_line("SELECT 40 + 2 AS answer;").unwrap();
        p.exp_string("answer\r\n42\r\n").unwrap();
        p.exp_string("iadb=> ").unwrap();
        p.send("\x1b[A").unwrap();
        p.send_line("").unwrap();
        p.exp_string("answer\r\n42\r\n").unwrap();
        p.send_line("\\q").unwrap();
        p.exp_eof().unwrap();
        let saved = std::fs::read_to_string(&history_file).unwrap();
        assert!(saved.contains("SELECT 40 + 2 AS answer;"), "{saved}");
        assert!(saved.contains("(2, 'b;c');"), "{saved}");
        // End of input (Ctrl-D) with a transaction open rolls it back.
        let mut p = shell(&history);
        p.exp_string("iadb=> ").unwrap();
        p.send_line("BEGIN;").unwrap();
        p.exp_string("iadb*> ").unwrap();
        p.send_line("DELETE FROM shell_notes;").unwrap();
        p.exp_string("3 row(s) affected").unwrap();
        p.send_control('d').unwrap();
        p.exp_string("the open transaction was rolled back")
            .unwrap();
        p.exp_eof().unwrap();
        assert_eq!(count(&endpoint), "3", "Ctrl-D committed");
    })
    .await
    .unwrap();
}
