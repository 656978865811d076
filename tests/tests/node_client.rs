//! Builds the Node client (`client/node`), then runs its streaming example
//! and its `node --test` suite against a test server with a SQLite default
//! database, so that `cargo test --workspace` covers it. The suite includes
//! the package as a user gets it (`package.test.js`: `npm pack`, installed
//! into an empty temporary folder with `npm ci --prefer-offline` from npm's
//! cache, its example compiled there with tsc and run against the server,
//! `require` and `import` both checked), the retry rules (`retry.test.js`,
//! against the fake server and a server it kills and starts again) and
//! `migrate` (`migrate.test.js`, on servers of its own). The suite's
//! PostgreSQL and MySQL/MariaDB transaction tests
//! (`transaction_engines.test.ts`) start servers of their own on
//! `IADB_TEST_POSTGRES_URL` and `IADB_TEST_MYSQL_URL`, which `node` inherits
//! from this process (skipped without them, failed in CI).
//!
//! Needs `node` (20 or newer) and `npm`, with the package's dependencies
//! installed: `npm ci --prefix client/node`. Without them the test is skipped
//! with a notice, except in CI (`CI=true`), where it fails.

use iadb_tests::fake_server::FakeServer;
use iadb_tests::harness::{TestServer, in_ci, repo_root, server_binary, skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL: &str = "install Node.js 20+ and run: npm ci --prefix client/node";

/// Rows the example streams (its default).
const ROWS: u64 = 200_000;

fn client_dir() -> PathBuf {
    repo_root().join("client/node")
}

/// Why the Node client cannot run here, if it cannot.
fn missing(dir: &Path) -> Option<String> {
    for tool in ["node", "npm"] {
        match Command::new(tool).arg("--version").output() {
            Err(e) => return Some(format!("cannot run `{tool}`: {e}")),
            Ok(out) if !out.status.success() => {
                return Some(format!("`{tool} --version` failed ({})", out.status));
            }
            Ok(_) => {}
        }
    }
    let modules = dir.join("node_modules");
    if !modules.join("@grpc/grpc-js").is_dir() || !modules.join("typescript").is_dir() {
        return Some(format!("{} is not installed", modules.display()));
    }
    None
}

/// `program` under coreutils' `timeout`: no child runs longer than 5 min.
fn bounded(program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10s", "300s", program]);
    cmd
}

/// Runs `cmd`, printing its output; fails the test unless it succeeds.
fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("== {what}: {}\n{stdout}", out.status);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({}){}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        if in_ci() { " in CI" } else { "" }
    );
    out
}

#[test]
fn node_client_example_and_suite() {
    let dir = client_dir();
    if let Some(why) = missing(&dir) {
        skip("node client", &format!("{why} ({INSTALL})"));
        return;
    }

    run(
        "npm run build",
        bounded("npm")
            .args(["run", "--silent", "build"])
            .current_dir(&dir),
    );

    let server = TestServer::start(&[]);
    let addr = server
        .endpoint
        .strip_prefix("http://")
        .expect("endpoint is http://HOST:PORT")
        .to_owned();
    let server_log = || server.log_text();

    // The example: streams ROWS rows and prints one line of JSON on stdout.
    let example = bounded("node")
        .arg("dist/examples/stream.js")
        .current_dir(&dir)
        .env("IADB_ADDR", &addr)
        .output()
        .expect("run node dist/examples/stream.js");
    let stdout = String::from_utf8_lossy(&example.stdout);
    let stderr = String::from_utf8_lossy(&example.stderr);
    println!("== example: {}\n{stdout}", example.status);
    eprintln!("{stderr}");
    assert!(
        example.status.success(),
        "the Node example failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        example.status,
        server_log()
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in the example's stdout:\n{stdout}"));
    let summary: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the example's JSON line does not parse ({e}): {line}"));
    assert_eq!(summary["rows"].as_u64(), Some(ROWS), "rows in {line}");
    assert_eq!(
        summary["sum"].as_u64(),
        Some(ROWS * (ROWS + 1) / 2),
        "sum of i in {line}"
    );
    assert_eq!(
        summary["error_code"].as_str(),
        Some("INVALID_ARGUMENT"),
        "bad SQL's code in {line}"
    );
    for figure in ["elapsed_ms", "peak_heap_used_mib", "peak_rss_mib"] {
        let value = summary[figure].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{figure} is a positive number in {line}"
        );
    }

    // The library's suite, its tests against the fake server that
    // misbehaves on purpose (faults.test.js), and its batch and transaction
    // tests, some of which start servers of their own (IADB_SERVER_BIN),
    // on PostgreSQL and MySQL/MariaDB too (the IADB_TEST_*_URL variables
    // are inherited).
    let fake = FakeServer::start();
    // Certificates for auth.test.js's TLS cases: good-ca.pem, ...
    let tls_dir = tempfile::tempdir().expect("temp dir");
    iadb_tests::certs::make(tls_dir.path(), "good");
    let tests = bounded("node")
        .args([
            "--test",
            "dist/test/client.test.js",
            "dist/test/faults.test.js",
            "dist/test/transaction.test.js",
            "dist/test/transaction_engines.test.js",
            "dist/test/auth.test.js",
            "dist/test/retry.test.js",
            "dist/test/migrate.test.js",
            "dist/test/package.test.js",
        ])
        .current_dir(&dir)
        .env("IADB_ADDR", &addr)
        .env("IADB_FAKE_ADDR", fake.addr.to_string())
        .env("IADB_SERVER_BIN", server_binary())
        .env("IADB_TEST_TLS_DIR", tls_dir.path())
        .output()
        .expect("run node --test dist/test/client.test.js");
    let stdout = String::from_utf8_lossy(&tests.stdout);
    let stderr = String::from_utf8_lossy(&tests.stderr);
    println!("== node --test: {}\n{stdout}", tests.status);
    eprintln!("{stderr}");
    assert!(
        tests.status.success(),
        "the Node client suite failed ({}){}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
        tests.status,
        if in_ci() { " in CI" } else { "" },
        server_log()
    );
    assert!(
        stdout.contains("# fail 0"),
        "node --test reports no failure:\n{stdout}"
    );
}
