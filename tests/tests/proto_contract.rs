//! The proto contract stays lint-clean and cannot change incompatibly by
//! accident: `buf lint`, and `buf breaking` against the previous commit.
//!
//! Needs the pinned buf: `npm ci --prefix tools`. Without it the test is
//! skipped with a notice, except in CI (`CI=true`), where it fails.

use iadb_tests::harness::{repo_root, skip};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The pinned buf, or why it is not there.
fn buf(root: &Path) -> Result<PathBuf, String> {
    let path = root.join("tools/node_modules/.bin/buf");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (install with: npm ci --prefix tools)",
            path.display()
        ))
    }
}

fn run(buf: &Path, root: &Path, args: &[&str]) -> Output {
    let out = Command::new(buf)
        .args(args)
        .current_dir(root)
        .output()
        .expect("run buf");
    println!(
        "buf {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn buf_lint_is_clean() {
    let root = repo_root();
    let buf = match buf(&root) {
        Ok(b) => b,
        Err(why) => return skip("buf lint", &why),
    };
    let out = run(&buf, &root, &["lint"]);
    assert!(out.status.success(), "buf lint failed");
    assert!(out.stdout.is_empty(), "buf lint printed findings");
}

#[test]
fn proto_is_compatible_with_the_previous_commit() {
    let root = repo_root();
    let buf = match buf(&root) {
        Ok(b) => b,
        Err(why) => return skip("buf breaking", &why),
    };
    let has_parent = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD~1"])
        .current_dir(&root)
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_parent {
        return skip(
            "buf breaking",
            "no previous commit (a shallow clone or a first commit)",
        );
    }
    let out = run(
        &buf,
        &root,
        &["breaking", "--against", ".git#ref=HEAD~1,subdir=proto"],
    );
    assert!(
        out.status.success(),
        "the proto changed incompatibly since the previous commit"
    );
}

#[test]
fn buf_breaking_catches_a_retyped_field() {
    let root = repo_root();
    let buf = match buf(&root) {
        Ok(b) => b,
        Err(why) => return skip("buf breaking (negative case)", &why),
    };
    let changed = tempfile::tempdir().expect("temp dir");
    let dir = changed.path().join("iadb/v1");
    std::fs::create_dir_all(&dir).expect("proto folder");
    let original =
        std::fs::read_to_string(root.join("proto/iadb/v1/database.proto")).expect("read proto");
    assert!(original.contains("uint32 pool_max = 7;"));
    std::fs::write(
        dir.join("database.proto"),
        original.replace("uint32 pool_max = 7;", "string pool_max = 7;"),
    )
    .expect("write changed proto");
    let changed_dir = changed.path().to_str().expect("utf-8 temp path");
    let out = run(
        &buf,
        &root,
        &["breaking", changed_dir, "--against", "proto"],
    );
    assert!(
        !out.status.success(),
        "buf breaking accepted a retyped field"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pool_max") && text.contains("changed type"),
        "{text}"
    );
}
