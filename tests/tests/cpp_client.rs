//! Builds the C++ client (`client/cpp`) with make, then runs its streaming
//! example and its tests against the test-server binary, so that
//! `cargo test --workspace` covers it.
//!
//! Needs make, g++, pkg-config, gRPC C++, protoc, grpc_cpp_plugin and the
//! standard health proto: `apt-get install -y make g++ pkg-config
//! libgrpc++-dev protobuf-compiler protobuf-compiler-grpc grpc-proto`.
//! Without them the test is skipped with a notice, except in CI (`CI=true`),
//! where it fails. The build goes to the cargo target directory
//! (`CARGO_TARGET_TMPDIR/cpp-client-<checkout>`), so the source tree stays
//! clean. The directory is named after the checkout because make's dependency
//! files record absolute source paths: two clones sharing one target
//! directory (CI does that) must not read each other's.

use iadb_tests::fake_server::FakeServer;
use iadb_tests::harness::{TestServer, in_ci, repo_root, skip};
use iadb_tests::process::run_bounded;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const INSTALL: &str = "install with: apt-get install -y make g++ pkg-config libgrpc++-dev \
                       protobuf-compiler protobuf-compiler-grpc grpc-proto";
const HEALTH_PROTO: &str = "/usr/share/grpc-proto/grpc/health/v1/health.proto";
const ROWS: i64 = 200_000;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// What is missing to build the C++ client, if anything.
fn missing_tools() -> Option<String> {
    for tool in ["make", "g++", "pkg-config", "protoc", "grpc_cpp_plugin"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` is not on PATH"));
        }
    }
    let pkg = Command::new("pkg-config")
        .args(["--exists", "grpc++", "protobuf"])
        .status();
    if !pkg.is_ok_and(|s| s.success()) {
        return Some("`pkg-config --exists grpc++ protobuf` failed".to_owned());
    }
    if !Path::new(HEALTH_PROTO).is_file() {
        return Some(format!("{HEALTH_PROTO} is missing"));
    }
    None
}

/// A finished child process.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn show(&self, what: &str) -> String {
        format!(
            "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to its end, killing it after `limit`.
fn run(cmd: Command, limit: Duration) -> Output {
    let ran = run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{e}"));
    let Some(status) = ran.status else {
        panic!(
            "{} did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
            ran.shown, ran.stdout, ran.stderr
        );
    };
    Output {
        status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    }
}

/// `cpp-client-` and the checkout's path with every character that is not
/// a letter or a digit replaced by `-`: one build directory per checkout.
fn build_dir_name(root: &Path) -> String {
    let key: String = root
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("cpp-client{key}")
}

#[test]
fn build_dirs_of_two_checkouts_differ() {
    let a = build_dir_name(Path::new("/tmp/ci-rehearsal"));
    let b = build_dir_name(Path::new("/check/work/main"));
    assert_eq!(a, "cpp-client-tmp-ci-rehearsal");
    assert_eq!(b, "cpp-client-check-work-main");
}

#[test]
fn cpp_client_example_and_tests() {
    if let Some(why) = missing_tools() {
        skip("C++ client", &format!("{why} ({INSTALL})"));
        return;
    }
    let root = repo_root();
    let build = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(build_dir_name(&root));

    let mut make = Command::new("make");
    make.arg("-C")
        .arg(root.join("client/cpp"))
        .arg("-j2")
        .arg(format!("BUILD={}", build.display()))
        .arg("all");
    println!("building the C++ client into {}", build.display());
    let started = Instant::now();
    let built = run(make, Duration::from_secs(900));
    assert!(
        built.status.success(),
        "{}{}",
        built.show("make -C client/cpp failed"),
        if in_ci() { " (in CI)" } else { "" }
    );
    println!("built in {:.1} s", started.elapsed().as_secs_f64());

    let server = TestServer::start(&[]);
    let addr = server
        .endpoint
        .strip_prefix("http://")
        .expect("endpoint is http://ADDR")
        .to_owned();

    // The example: health, a streamed 200000-row result, one error.
    let mut example = Command::new(build.join("bin/stream"));
    example.env("IADB_ADDR", &addr);
    let out = run(example, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}\n--- server log\n{}",
        out.show("the C++ example failed"),
        server.log_text()
    );
    println!("example: {}", out.stdout.trim());
    let line = out.stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}\nlast line is not JSON: {e}", out.show("example")));
    assert_eq!(summary["rows"], ROWS, "{line}");
    assert_eq!(summary["sum"], ROWS * (ROWS + 1) / 2, "{line}");
    assert_eq!(summary["sum"], 20_000_100_000_i64, "{line}");
    assert_eq!(summary["health"][""], "SERVING", "{line}");
    assert_eq!(summary["health"]["default"], "SERVING", "{line}");
    assert_eq!(summary["bad_sql"], "INVALID_ARGUMENT", "{line}");
    let elapsed = summary["elapsed_ms"].as_f64().expect("elapsed_ms");
    assert!(elapsed > 0.0, "{line}");
    let rss = summary["max_rss_kib"].as_u64().expect("max_rss_kib");
    assert!(rss > 0, "{line}");

    // The client's tests.
    // With the fake server that misbehaves on purpose for the fault tests.
    let fake = FakeServer::start();
    let mut tests = Command::new(build.join("bin/client_test"));
    tests.env("IADB_ADDR", &addr);
    tests.env("IADB_FAKE_ADDR", fake.addr.to_string());
    let out = run(tests, Duration::from_secs(300));
    println!("{}", out.stdout);
    assert!(
        out.status.success(),
        "{}\n--- server log\n{}",
        out.show("the C++ client tests failed"),
        server.log_text()
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    let counts = last
        .strip_prefix("client_test: ")
        .and_then(|rest| rest.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        counts.is_some_and(|n| n >= 12),
        "unexpected closing line {last:?}\n{}",
        out.show("client_test")
    );
}
