//! SQLAlchemy's own third-party dialect suite (`sqlalchemy.testing.suite`,
//! set up in `client/python/sqla_suite/`) against the iadb drivers
//! `sqlite+iadb://` and `postgresql+iadb://`, through a live server whose
//! default database is SQLite and whose database `pg` is PostgreSQL
//! (`IADB_TEST_POSTGRES_URL`, in a schema of its own: the suite drops every
//! table of the schema it runs in). What the suite skips is listed, with
//! the reasons, in `client/python/README.md` and `sqla_suite/requirements.py`.
//!
//! Needs `python3` with the package, SQLAlchemy 2 and pytest (`pip install
//! ./client/python sqlalchemy pytest`). Without them the test is skipped
//! with a notice, except in CI (`CI=true`), where it fails.

use iadb_tests::harness::{TestServer, in_ci, repo_root, skip};
use iadb_tests::process::run_bounded;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run of the suite on one backend takes well under this.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The PostgreSQL schema the suite runs in, and the two it reflects
/// (`test_schema`, `test_schema_2` are the suite's names).
const PG_SCHEMA: &str = "iadb_sqla_suite";

/// `$IADB_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("IADB_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Runs `cmd` (killed after `limit`): whether it succeeded, and its stdout
/// and stderr.
fn run(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null());
    let ran = run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{e}"));
    let Some(status) = ran.status else {
        panic!(
            "{} did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
            ran.shown, ran.stdout, ran.stderr
        );
    };
    (status.success(), ran.stdout, ran.stderr)
}

/// The Python that can run the suite, or `None` after a skip notice
/// (which fails in CI).
fn python_with_tools() -> Option<String> {
    let python = python();
    if let Some(why) = tools_missing(&python) {
        skip(
            "SQLAlchemy suite",
            &format!("{why} (pip install ./client/python sqlalchemy pytest)"),
        );
        return None;
    }
    Some(python)
}

/// Whether `python3` can import what the suite needs (or why not).
fn tools_missing(python: &str) -> Option<String> {
    let probe = Command::new(python)
        .args(["-c", "import iadb.sqlalchemy, sqlalchemy.testing, pytest"])
        .current_dir(std::env::temp_dir())
        .output();
    match probe {
        Err(e) => Some(format!("cannot run `{python}`: {e}")),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Some(stderr.trim().lines().last().unwrap_or("").to_owned())
        }
        Ok(_) => None,
    }
}

/// Runs the suite with `--dburi dburi`; panics with its output when it fails.
fn suite(python: &str, dburi: &str) {
    let root = repo_root();
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "--dburi", dburi])
        .current_dir(root.join("client/python/sqla_suite"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let started = Instant::now();
    let (ok, stdout, stderr) = run(cmd, RUN_LIMIT);
    let last = stdout.trim().lines().last().unwrap_or("").to_owned();
    println!(
        "SQLAlchemy suite on {dburi}: {last} ({:.0}s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        ok,
        "SQLAlchemy's suite failed on {dburi}{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        if in_ci() { " in CI" } else { "" }
    );
}

#[test]
fn sqlalchemy_suite_on_sqlite_through_iadb() {
    let Some(python) = python_with_tools() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}/sqla.db", dir.path().display());
    // No system migrations: the suite's reflection tests expect the tables
    // they made and no others.
    let server = TestServer::start(&["--migrate=false", "--database-url", &url]);
    let address = server.endpoint.trim_start_matches("http://");
    suite(&python, &format!("sqlite+iadb://{address}/"));
}

#[test]
fn sqlalchemy_suite_on_postgres_through_iadb() {
    let Some(python) = python_with_tools() else {
        return;
    };
    let Ok(pg) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip(
            "SQLAlchemy suite on PostgreSQL",
            "IADB_TEST_POSTGRES_URL is not set",
        );
        return;
    };
    // The suite's schema is the search path (the server's `search_path`
    // option), so that its tables, and what it drops, stay there;
    // `test_schema` and `test_schema_2` are the schemas it reflects.
    let sep = if pg.contains('?') { '&' } else { '?' };
    let in_schema = format!("{pg}{sep}search_path={PG_SCHEMA}");
    let dir = tempfile::tempdir().expect("temp dir");
    let unused = format!("sqlite:///{}/unused.db", dir.path().display());
    // One pooled connection. The suite drops and creates the same tables
    // with other column types class after class, inside transactions. DDL
    // clears its own connection's statement cache; a statement cached on
    // another pooled connection before it would fail once inside a
    // transaction, as ABORTED (docs/types/postgres.md), which one
    // connection keeps out of the suite's results.
    let server = TestServer::start(&[
        "--migrate=false",
        "--pool-max",
        "1",
        "--database-url",
        &unused,
        "--database",
        &format!("pg={in_schema}"),
    ]);
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let create = format!(
        "import iadb, sys\n\
         with iadb.SyncDatabase(sys.argv[1], database='pg') as db:\n\
         \x20   for s in ('{PG_SCHEMA}', 'test_schema', 'test_schema_2'):\n\
         \x20       db.execute('CREATE SCHEMA IF NOT EXISTS ' + s)\n"
    );
    let mut cmd = Command::new(&python);
    cmd.args(["-c", &create, &address]).current_dir(dir.path());
    let (ok, stdout, stderr) = run(cmd, Duration::from_secs(60));
    assert!(
        ok,
        "creating the suite's schemas failed:\n{stdout}\n{stderr}"
    );
    suite(&python, &format!("postgresql+iadb://{address}/pg"));
}
