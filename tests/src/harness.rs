//! Starting servers and engines for tests.

use crate::d1_fake::D1Fake;
use iadb::{ConnectionConfig, DatabaseInterface, DatabaseType, UrlForm};
use iadb_client::RemoteDatabase;
use iadb_server::backend::{PoolSettings, backend_for};
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use tempfile::TempDir;

/// The repository's root folder (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The path of the server binary built with the tests.
pub fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("IADB_TEST_SERVER_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    dir.join(format!("iadb-test-server{}", std::env::consts::EXE_SUFFIX))
}

/// A running `iadb-server` process on 127.0.0.1 with a port of its own.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where the server's stderr goes.
    pub log: PathBuf,
    /// Scratch folder (the server's working directory).
    pub dir: TempDir,
}

impl TestServer {
    /// Starts the server with `args` (after `--listen 127.0.0.1:0`) and waits
    /// for it to print its address.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`TestServer::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(server_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn iadb-test-server (build it with `cargo test`)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server stdout");
        let Some(addr) = line.trim().strip_prefix("iadb-server listening on ") else {
            let _ = child.wait();
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            endpoint: format!("http://{addr}"),
            child,
            log,
            dir,
        }
    }

    /// A raw gRPC channel to the server, for the standard health and
    /// reflection clients.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to test server")
    }

    /// A connected client for `database` (empty: the default).
    pub async fn client(&self, database: &str) -> RemoteDatabase {
        RemoteDatabase::connect_to(self.endpoint.clone(), database)
            .await
            .expect("connect to test server")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A figure from `/proc/PID/status` in KiB (`VmHWM` = peak RSS, `VmRSS`).
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An engine the suite runs on: a [`DatabaseType`], so that every engine
/// the domain knows is one the suite can run on, with no list of its own.
///
/// Where its test database comes from follows from the engine's URL form
/// ([`iadb::UrlForm`]): an embedded engine gets a fresh file (when its
/// adapter is compiled into the server); any other engine reads
/// `IADB_TEST_<SCHEME>_URL` for its schemes in order (PostgreSQL:
/// `IADB_TEST_POSTGRESQL_URL`, then `IADB_TEST_POSTGRES_URL`), or starts
/// the local fake its [`TestDialect::start_fake`](crate::dialect::TestDialect::start_fake)
/// offers (D1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine(pub DatabaseType);

/// The names the tests use for the engines.
#[allow(non_upper_case_globals)]
impl Engine {
    /// SQLite (always available: embedded).
    pub const Sqlite: Engine = Engine(DatabaseType::Sqlite);
    /// PostgreSQL at `IADB_TEST_POSTGRES_URL`.
    pub const Postgres: Engine = Engine(DatabaseType::Postgresql);
    /// MySQL or MariaDB at `IADB_TEST_MYSQL_URL`.
    pub const Mysql: Engine = Engine(DatabaseType::Mysql);
    /// DuckDB (embedded; needs the `duckdb` feature of the tests package).
    pub const Duckdb: Engine = Engine(DatabaseType::Duckdb);
    /// Cloudflare D1, through a local fake of its REST API ([`crate::d1_fake`]).
    pub const D1: Engine = Engine(DatabaseType::CloudflareD1);
}

impl Engine {
    /// The engine's conformance hooks.
    pub fn dialect(self) -> &'static dyn crate::dialect::TestDialect {
        crate::dialect::of(self.0)
    }

    /// The engine's name in notices.
    pub fn name(self) -> &'static str {
        self.0.as_str()
    }

    /// A fresh database URL for this engine, or why it is not available.
    pub fn url(self, dir: &TempDir) -> Result<String, String> {
        let name = self.name();
        match self.0.spec().url {
            UrlForm::File => match iadb_server::backend::compiled_in(self.0) {
                Ok(()) => Ok(format!(
                    "{name}:///{}",
                    dir.path().join(format!("test.{name}")).display()
                )),
                Err(feature) => Err(format!(
                    "the tests were built without the `{feature}` feature"
                )),
            },
            UrlForm::Server { .. } | UrlForm::Api => {
                let vars: Vec<String> = self
                    .0
                    .spec()
                    .schemes
                    .iter()
                    .map(|scheme| format!("IADB_TEST_{}_URL", scheme.to_ascii_uppercase()))
                    .collect();
                vars.iter()
                    .find_map(|var| std::env::var(var).ok())
                    .ok_or_else(|| format!("{} is not set", vars.join(" or ")))
            }
        }
    }

    /// A fresh database URL, with the engine's local fake behind it where
    /// no test database is configured and the engine has one (D1; keep the
    /// fake as long as the URL is used).
    pub fn start(self, dir: &TempDir) -> Result<(String, Option<D1Fake>), String> {
        match self.url(dir) {
            Ok(url) => Ok((url, None)),
            Err(why) => match self.dialect().start_fake() {
                Some(fake) => Ok((fake.url(), Some(fake))),
                None => Err(why),
            },
        }
    }
}

/// Whether this run is CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Prints that a test is skipped, or fails it in CI.
///
/// The notice is written to the process's stderr directly: libtest
/// captures `eprintln!` of a passing test and would swallow it, so a
/// skipped engine would look like a passed one.
pub fn skip(what: &str, why: &str) {
    use std::io::Write as _;
    assert!(!in_ci(), "{what}: {why} (CI=true: nothing may be skipped)");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}: {why}");
}

/// A database under test: an adapter in this process, or the gRPC client of a
/// server process in front of the same kind of engine.
pub struct Target {
    /// The database.
    pub db: Arc<dyn DatabaseInterface>,
    /// Which engine is behind it.
    pub engine: Engine,
    /// Whether calls go through the gRPC server.
    pub remote: bool,
    /// The server, for remote targets.
    pub server: Option<TestServer>,
    /// The fake D1 API behind a D1 target.
    pub d1_fake: Option<D1Fake>,
    _dir: TempDir,
}

impl Target {
    /// The engine's adapter, connected, in this process; `None` (with a
    /// printed notice) when the engine is not available here.
    pub async fn direct(engine: Engine) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, d1_fake) = match engine.start(&dir) {
            Ok(started) => started,
            Err(why) => {
                skip(engine.name(), &why);
                return None;
            }
        };
        let config = ConnectionConfig::from_url(&url).expect("engine URL parses");
        let db = backend_for(&config, PoolSettings::default()).expect("adapter");
        db.connect().await.expect("connect adapter");
        sweep_leftover_tables(db.as_ref(), engine).await;
        Some(Self {
            db,
            engine,
            remote: false,
            server: None,
            d1_fake,
            _dir: dir,
        })
    }

    /// A server process in front of the engine, and a client of it.
    pub async fn remote(engine: Engine) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, d1_fake) = match engine.start(&dir) {
            Ok(started) => started,
            Err(why) => {
                skip(engine.name(), &why);
                return None;
            }
        };
        let server = TestServer::start(&["--database-url", &url]);
        let db: Arc<dyn DatabaseInterface> = Arc::new(server.client("").await);
        sweep_leftover_tables(db.as_ref(), engine).await;
        Some(Self {
            db,
            engine,
            remote: true,
            server: Some(server),
            d1_fake,
            _dir: dir,
        })
    }

    /// The engine's conformance hooks.
    pub fn dialect(&self) -> &'static dyn crate::dialect::TestDialect {
        self.engine.dialect()
    }

    /// A table name unique to this test run: `t_{base}_{pid}_{n}` (the
    /// process id lets a later run drop it: [`sweep_leftover_tables`]).
    pub fn table(&self, base: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "t_{base}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The process that made a table named by [`Target::table`]
/// (`t_{base}_{pid}_{n}`); `None` for any other name.
fn table_maker(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("t_")?;
    let mut parts = rest.rsplitn(3, '_');
    let n = parts.next()?;
    let pid = parts.next()?;
    let base = parts.next()?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(n) && !base.is_empty()).then_some(())?;
    pid.parse().ok().filter(|_| numeric(pid))
}

/// Drops what earlier test runs left in a shared test database
/// (PostgreSQL's and MySQL's `iadb_test`, which every run uses): the
/// tables [`Target::table`] named for a process that has exited. Once per
/// test process, before its first test there; a table of a process that
/// still runs (a concurrent run) is left alone. Best effort: a failure
/// here leaves the tables and fails no test.
async fn sweep_leftover_tables(db: &dyn DatabaseInterface, engine: Engine) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SWEPT_POSTGRES: AtomicBool = AtomicBool::new(false);
    static SWEPT_MYSQL: AtomicBool = AtomicBool::new(false);
    let (swept, list) = match engine {
        Engine::Postgres => (
            &SWEPT_POSTGRES,
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename LIKE 't\\_%'",
        ),
        Engine::Mysql => (
            &SWEPT_MYSQL,
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name LIKE 't\\\\_%'",
        ),
        _ => return,
    };
    if swept.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(rows) = db.fetch_all(list, &[]).await else {
        return;
    };
    for row in rows {
        let Some(iadb::Value::Text(name)) = row.get_index(0) else {
            continue;
        };
        let Some(pid) = table_maker(name) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let drop = format!("DROP TABLE IF EXISTS {}", db.quote_identifier(name));
        let _ = db.execute(&drop, &[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::table_maker;

    #[test]
    fn a_table_names_the_process_that_made_it() {
        assert_eq!(table_maker("t_rt_4242_7"), Some(4242));
        assert_eq!(table_maker("t_pg_types_11_0"), Some(11));
        assert_eq!(table_maker("t_users"), None);
        assert_eq!(table_maker("t_x_12"), None);
        assert_eq!(table_maker("t__12_3"), None);
        assert_eq!(table_maker("users_12_3"), None);
        assert_eq!(table_maker("t_a_1x_3"), None);
    }
}
