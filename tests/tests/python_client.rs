//! Runs the Python client's pytest suite (`client/python/tests`) against the
//! test-server binary, so that `cargo test --workspace` covers it. Its
//! PostgreSQL and MySQL/MariaDB tests (`test_transactions_engines.py`) start
//! servers on `IADB_TEST_POSTGRES_URL` and `IADB_TEST_MYSQL_URL`, which
//! pytest inherits from this process (skipped without them, failed in CI).
//!
//! Needs `python3` with the package and its test tools installed: `pip
//! install ./client/python pytest pytest-asyncio dbapi-compliance pandas
//! sqlalchemy pyarrow polars`. Without them the test is skipped with a notice, except in CI
//! (`CI=true`), where it fails.

use iadb_tests::fake_server::FakeServer;
use iadb_tests::harness::{in_ci, repo_root, server_binary, skip};
use std::process::Command;

const INSTALL: &str = "install with: pip install ./client/python pytest pytest-asyncio dbapi-compliance pandas sqlalchemy pyarrow polars";

/// `$IADB_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("IADB_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

#[test]
fn python_client_suite() {
    let python = python();
    let root = repo_root();
    // Run from /tmp so that `import iadb` finds the installed package, not
    // the source folder (which has no generated stubs).
    let probe = Command::new(&python)
        .args(["-c", "import iadb, pytest, pytest_asyncio"])
        .current_dir(std::env::temp_dir())
        .output();
    let why = match probe {
        Err(e) => Some(format!("cannot run `{python}`: {e}")),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.trim().lines().last().unwrap_or("").to_owned();
            Some(format!(
                "`{python} -c \"import iadb, pytest, pytest_asyncio\"` failed: {last}"
            ))
        }
        Ok(_) => None,
    };
    if let Some(why) = why {
        skip("python client", &format!("{why} ({INSTALL})"));
        return;
    }

    let server = server_binary();
    assert!(
        server.is_file(),
        "test server binary {} is missing (it is built with the tests)",
        server.display()
    );
    // The fake server that misbehaves on purpose (test_faults.py).
    let fake = FakeServer::start();
    // Certificates for test_tls.py: good-ca.pem, good-server.pem, ...
    let tls_dir = tempfile::tempdir().expect("temp dir");
    iadb_tests::certs::make(tls_dir.path(), "good");
    println!(
        "running {python} -m pytest client/python/tests -q (IADB_SERVER_BIN={}, IADB_FAKE_ADDR={})",
        server.display(),
        fake.addr
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "client/python/tests",
            "-q",
            "-rs",
            "-s",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(&root)
        .env("IADB_SERVER_BIN", &server)
        .env("IADB_FAKE_ADDR", fake.addr.to_string())
        .env("IADB_TEST_TLS_DIR", tls_dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the Python client suite failed ({}){}",
        out.status,
        if in_ci() { " in CI" } else { "" }
    );
}
