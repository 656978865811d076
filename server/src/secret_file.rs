//! Secrets read from files: `--database NAME=@/run/secrets/NAME`,
//! `--database-url @FILE`, `DATABASE_URL_FILE`, and `@FILE` values in the
//! config file. A URL kept in a file is not in the server's command line or
//! environment (`/proc/PID/cmdline`, `/proc/PID/environ`), where anything
//! that can read the process's details would find it.

use std::path::{Path, PathBuf};

/// Why a secret file could not be used. The message names the file and the
/// cause, never a byte of its contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the secret file {path} for {what}: {reason}")]
pub struct SecretFileError {
    /// The file.
    pub path: PathBuf,
    /// What it was to hold (`database `x``).
    pub what: String,
    /// Why it failed (an I/O error kind, or "empty").
    pub reason: String,
}

/// Largest secret file read (a URL is far smaller; a bigger file is a
/// mistake, such as a path to the wrong file).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// `text` itself, or, when it is `@PATH`, the trimmed contents of that file.
pub fn resolve(text: &str, what: &str) -> Result<String, SecretFileError> {
    match text.trim().strip_prefix('@') {
        Some(path) => read(Path::new(path.trim()), what),
        None => Ok(text.trim().to_owned()),
    }
}

/// The trimmed contents of the secret file at `path`.
pub fn read(path: &Path, what: &str) -> Result<String, SecretFileError> {
    let error = |reason: String| SecretFileError {
        path: path.to_owned(),
        what: what.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| error(io_reason(&e)))?;
    if !metadata.is_file() {
        return Err(error("not a regular file".into()));
    }
    if metadata.len() > MAX_SECRET_BYTES {
        return Err(error(format!(
            "{} bytes, larger than a secret file may be ({MAX_SECRET_BYTES})",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| error(io_reason(&e)))?;
    // Not `from_utf8(..)?`: its error would not quote the bytes, but the
    // message says only what is wrong, not where.
    let text = String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(error("the file is empty".into()));
    }
    Ok(text.to_owned())
}

/// An I/O error's cause without the OS's message (which never holds the
/// contents, but keep it to the kind and code).
fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{} (os error {code})", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_trimmed_and_errors_name_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "  postgresql://u:Se%20cret@h/db\n").unwrap();
        let at = format!("@{}", path.display());
        assert_eq!(
            resolve(&at, "database `x`").unwrap(),
            "postgresql://u:Se%20cret@h/db"
        );
        assert_eq!(resolve(" sqlite:///a.db ", "x").unwrap(), "sqlite:///a.db");

        let missing = dir.path().join("missing");
        let err = resolve(&format!("@{}", missing.display()), "database `x`")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("database `x`"), "{err}");

        std::fs::write(&path, "\n \n").unwrap();
        assert!(read(&path, "x").unwrap_err().to_string().contains("empty"));
        std::fs::write(&path, b"Zq7Mark\xffer").unwrap();
        let err = read(&path, "x").unwrap_err().to_string();
        assert!(!err.contains("Zq7Mark"), "{err}");
        assert!(read(dir.path(), "x").is_err());
    }
}
