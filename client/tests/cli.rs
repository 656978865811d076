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
