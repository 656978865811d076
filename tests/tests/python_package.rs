//! The Python package as its users get it: a wheel built from
//! `client/python` (`pip wheel`, in an isolated build with the pinned
//! `grpcio-tools`), installed into clean venvs (`python3 -m venv`):
//!
//! - `clean`: the wheel alone, with whatever pip picks for its dependencies;
//!   `client/python/tests/installed_smoke.py` runs there against a live
//!   server (the original API's `fetch_all` returning a `QueryResult`, a
//!   DB-API cursor);
//! - `oldest` / `newest`: the wheel with the oldest grpcio and protobuf
//!   `pyproject.toml` allows (exactly its `>=` versions) and with the newest
//!   pip finds within the range; a part of the package's pytest suite (values,
//!   DB-API, the original and the typed API, errors) runs in each.
//!
//! Needs `python3` with `venv`, and PyPI (or pip's cache) for the build
//! requirements, grpcio, protobuf, pytest, pytest-asyncio and
//! dbapi-compliance. Without `python3 -m venv` the test is skipped with a
//! notice, except in CI (`CI=true`), where it fails.

use iadb_tests::harness::{TestServer, in_ci, repo_root, server_binary, skip};
use iadb_tests::process::run_bounded;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A pip or pytest step longer than this is stuck (pip's own network
/// timeout is shorter).
const STEP_LIMIT: Duration = Duration::from_secs(300);

/// The suite's modules run in the `oldest` and `newest` venvs.
const SUITE_PART: &[&str] = &[
    "test_values.py",
    "test_dbapi.py",
    "test_original_api.py",
    "test_async_api.py",
    "test_sync_api.py",
    "test_errors.py",
];

/// What the suite needs besides the package (pandas, SQLAlchemy and the
/// fake server are the full suite's, in `python_client.rs`).
const TEST_TOOLS: &[&str] = &["pytest", "pytest-asyncio", "dbapi-compliance"];

/// `$IADB_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("IADB_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Runs `cmd` to its end (killing it after `limit`): its stdout, or an
/// error that shows what it printed.
fn run(mut cmd: Command, what: &str, limit: Duration) -> Result<String, String> {
    cmd.stdin(Stdio::null());
    let ran = run_bounded(cmd, limit).map_err(|e| format!("{what}: {e}"))?;
    let shown = &ran.shown;
    match ran.status {
        Some(s) if s.success() => Ok(ran.stdout),
        Some(s) => Err(format!(
            "{what} failed ({s}): {shown}\n--- stdout\n{}\n--- stderr\n{}",
            ran.stdout, ran.stderr
        )),
        None => Err(format!(
            "{what} did not finish within {limit:?}: {shown}\n--- stdout\n{}\n--- stderr\n{}",
            ran.stdout, ran.stderr
        )),
    }
}

/// The `>=` version and the `<` major (if any) of `name` in the
/// `dependencies` of `pyproject.toml`, e.g. ("6.30.0", Some(8)).
fn declared(pyproject: &str, name: &str) -> (String, Option<u32>) {
    let line = pyproject
        .lines()
        .find(|l| l.trim_start().starts_with("dependencies = ["))
        .expect("pyproject.toml has a static `dependencies = [...]` line");
    let start = line
        .find(&format!("\"{name}>="))
        .unwrap_or_else(|| panic!("{name} has no `>=` in: {line}"));
    let spec = &line[start + 1..];
    let spec = &spec[..spec.find('"').expect("closing quote")];
    let mut parts = spec.trim_start_matches(name).split(',');
    let floor = parts
        .next()
        .and_then(|p| p.strip_prefix(">="))
        .expect("a >= floor")
        .to_owned();
    let ceiling = parts
        .find_map(|p| p.strip_prefix('<'))
        .map(|c| c.parse().expect("a `<MAJOR` ceiling"));
    (floor, ceiling)
}

/// Copies the package's sources (not its tests, nor anything built) to
/// `dest`, so that building never writes into the checkout.
fn copy_package(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read package dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(
            name.as_ref(),
            "tests" | "bench" | "sqla_suite" | "build" | "dist" | "_proto" | "__pycache__"
        ) || name.ends_with(".egg-info")
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_package(&path, &dest.join(name.as_ref()));
        } else {
            std::fs::copy(&path, dest.join(name.as_ref())).expect("copy file");
        }
    }
}

/// A venv at `dir` with `packages` installed: its python.
fn venv(python: &str, dir: &Path, packages: &[String]) -> Result<PathBuf, String> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "venv"]).arg(dir);
    run(cmd, "python3 -m venv", STEP_LIMIT)?;
    let py = dir.join("bin").join("python");
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(packages);
    run(cmd, "pip install into the venv", STEP_LIMIT)?;
    Ok(py)
}

/// `grpcio` and `protobuf` versions importable in the venv of `py`.
fn versions(py: &Path, cwd: &Path) -> Result<(String, String), String> {
    let mut cmd = Command::new(py);
    cmd.args([
        "-c",
        "import grpc; from google import protobuf; print(grpc.__version__, protobuf.__version__)",
    ])
    .current_dir(cwd);
    let out = run(cmd, "reading grpcio and protobuf versions", STEP_LIMIT)?;
    let mut words = out.split_whitespace();
    match (words.next(), words.next()) {
        (Some(g), Some(p)) => Ok((g.to_owned(), p.to_owned())),
        _ => Err(format!("unexpected version output {out:?}")),
    }
}

/// The package's suite part in the venv of `py`.
fn suite_part(py: &Path, root: &Path, cwd: &Path) -> Result<String, String> {
    let tests = root.join("client/python/tests");
    let mut cmd = Command::new(py);
    cmd.args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .args(SUITE_PART.iter().map(|m| tests.join(m)))
        // pandas is not installed here (the full suite tests read_sql).
        .args(["-k", "not pandas_read_sql"])
        .current_dir(cwd)
        .env("IADB_SERVER_BIN", server_binary())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(cmd, "the suite part", STEP_LIMIT)
}

/// The last line of pytest's output: "N passed, ... in Xs".
fn summary(out: &str) -> String {
    out.trim().lines().last().unwrap_or("").to_owned()
}

#[test]
fn python_wheel_in_clean_venvs_on_oldest_and_newest_protobuf() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import venv, ensurepip"])
        .output();
    let why = match probe {
        Err(e) => Some(format!("cannot run `{python}`: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`{python}` has no venv/ensurepip: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    };
    if let Some(why) = why {
        skip(
            "python package",
            &format!("{why} (apt-get install python3-venv)"),
        );
        return;
    }
    let root = repo_root();
    let pyproject = std::fs::read_to_string(root.join("client/python/pyproject.toml"))
        .expect("read client/python/pyproject.toml");
    let (grpc_floor, _) = declared(&pyproject, "grpcio");
    let (pb_floor, pb_ceiling) = declared(&pyproject, "protobuf");
    let pb_ceiling = pb_ceiling.expect("protobuf has a `<MAJOR` ceiling");

    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("src");
    copy_package(&root.join("client/python"), &src);
    let dist = tmp.path().join("dist");
    let started = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--wheel-dir",
    ])
    .arg(&dist)
    .arg(&src)
    .env("IADB_PROTO_DIR", root.join("proto"));
    if let Err(e) = run(cmd, "building the wheel", STEP_LIMIT) {
        panic!("{e}");
    }
    let wheels: Vec<PathBuf> = std::fs::read_dir(&dist)
        .expect("read dist")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel expected in {}", dist.display());
    let wheel = wheels[0].display().to_string();
    println!(
        "built {} in {:.1}s",
        wheels[0].file_name().unwrap_or_default().to_string_lossy(),
        started.elapsed().as_secs_f64()
    );

    // The server the smoke script talks to (SQLite in its own folder).
    let db_dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite:///{}/smoke.db", db_dir.path().display());
    let server = TestServer::start(&["--database-url", &db_url]);
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let smoke = root.join("client/python/tests/installed_smoke.py");

    let tools: Vec<String> = TEST_TOOLS.iter().map(|t| (*t).to_owned()).collect();
    // The venvs are made at once; the two suite runs one after the other
    // (they share the PostgreSQL and MySQL test databases, and the DB-API
    // compliance suite's table names).
    let (clean, oldest, newest) =
        std::thread::scope(|s| {
            let clean = s.spawn(|| -> Result<String, String> {
                let t = Instant::now();
                let py = venv(
                    &python,
                    &tmp.path().join("clean"),
                    std::slice::from_ref(&wheel),
                )?;
                let setup = t.elapsed();
                let mut cmd = Command::new(&py);
                cmd.arg(&smoke).arg(&address).current_dir(tmp.path());
                let out = run(cmd, "installed_smoke.py", STEP_LIMIT)?;
                if !out.lines().any(|l| l.starts_with("ok ")) {
                    return Err(format!("installed_smoke.py printed no `ok` line: {out}"));
                }
                Ok(format!(
                    "clean venv (venv + wheel install {:.1}s): {}",
                    setup.as_secs_f64(),
                    out.trim()
                ))
            });
            let oldest_venv = s.spawn(|| -> Result<PathBuf, String> {
            let mut packages = vec![
                wheel.clone(),
                format!("grpcio=={grpc_floor}"),
                format!("protobuf=={pb_floor}"),
            ];
            packages.extend(tools.iter().cloned());
            let py = venv(&python, &tmp.path().join("oldest"), &packages)?;
            let (g, p) = versions(&py, tmp.path())?;
            if (g.as_str(), p.as_str()) != (grpc_floor.as_str(), pb_floor.as_str()) {
                return Err(format!(
                    "oldest venv has grpcio {g}, protobuf {p}; expected {grpc_floor}, {pb_floor}"
                ));
            }
            Ok(py)
        });
            let newest_venv = s.spawn(|| -> Result<PathBuf, String> {
            let mut packages = vec![wheel.clone()];
            packages.extend(tools.iter().cloned());
            let py = venv(&python, &tmp.path().join("newest"), &packages)?;
            let (_, p) = versions(&py, tmp.path())?;
            // pip picks the newest protobuf below the ceiling: its major is
            // the ceiling's previous one.
            let major: u32 = p.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            if major + 1 != pb_ceiling {
                return Err(format!(
                    "newest venv has protobuf {p}; expected the newest {}.x below <{pb_ceiling}",
                    pb_ceiling - 1
                ));
            }
            Ok(py)
        });
            let joined = |h: std::thread::ScopedJoinHandle<'_, Result<PathBuf, String>>| {
                h.join()
                    .unwrap_or_else(|_| Err("making the venv panicked".to_owned()))
            };
            let in_venv = |made: Result<PathBuf, String>, name: &str| -> Result<String, String> {
                let py = made?;
                let (g, p) = versions(&py, tmp.path())?;
                let out = suite_part(&py, &root, tmp.path())?;
                Ok(format!(
                    "{name} (grpcio {g}, protobuf {p}): {}",
                    summary(&out)
                ))
            };
            let oldest = in_venv(joined(oldest_venv), "oldest allowed");
            let newest = in_venv(joined(newest_venv), "newest allowed");
            let clean = clean
                .join()
                .unwrap_or_else(|_| Err("the clean venv step panicked".to_owned()));
            (clean, oldest, newest)
        });
    drop(server);

    let mut failures = Vec::new();
    for result in [clean, oldest, newest] {
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "the Python package failed{}:\n{}",
        if in_ci() { " in CI" } else { "" },
        failures.join("\n\n")
    );
}

#[test]
fn declared_ranges_are_read_from_pyproject() {
    let text = r#"dependencies = ["grpcio>=1.72.1", "protobuf>=6.30.0,<8"]"#;
    assert_eq!(declared(text, "grpcio"), ("1.72.1".to_owned(), None));
    assert_eq!(declared(text, "protobuf"), ("6.30.0".to_owned(), Some(8)));
}
