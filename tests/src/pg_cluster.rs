//! A throwaway PostgreSQL cluster of a test's own: `initdb` into a temporary
//! folder, a free loopback port, trust authentication, its socket in that
//! folder. A test may stop, restart or kill it without touching the shared
//! server on 5432. Dropping it stops the cluster (immediate mode) and
//! removes its files.
//!
//! [`PgCluster::standby_of`] makes a streaming hot standby of a running
//! cluster (`pg_basebackup -R`), on a port of its own;
//! [`PgCluster::promote`] makes it a primary.
//!
//! The programs come from `pg_config --bindir`. PostgreSQL refuses to run as
//! root, so when the tests run as root (CI does) every program runs as the
//! `postgres` OS user through `runuser`, and the folder belongs to that user.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};
use tempfile::TempDir;

/// A running cluster; stopped and removed on drop.
pub struct PgCluster {
    bindir: PathBuf,
    /// Holds `data/`, `sock/` and `server.log`.
    dir: TempDir,
    /// The loopback port it listens on.
    pub port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a cluster, or says why it cannot be done here
    /// (no PostgreSQL programs, no `postgres` user when running as root).
    pub fn start() -> Result<Self, String> {
        let cluster = Self::empty()?;
        let data = cluster.data_dir();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.pg_ctl(&["start"])?;
        Ok(cluster)
    }

    /// A cluster folder and a free port, nothing in it yet.
    fn empty() -> Result<Self, String> {
        let bindir = pg_bindir()?;
        if !bindir.join("initdb").is_file() || !bindir.join("pg_ctl").is_file() {
            return Err(format!("no initdb/pg_ctl in {}", bindir.display()));
        }
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("iadb-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        std::fs::create_dir(dir.path().join("sock")).map_err(|e| format!("socket dir: {e}"))?;
        if as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !owned.success() {
                return Err("cannot give the cluster folder to the postgres user \
                            (is there a `postgres` OS user?)"
                    .to_owned());
            }
        }
        Ok(Self {
            bindir,
            dir,
            port: free_port()?,
            as_postgres,
        })
    }

    /// A hot standby of `primary` (which must be running), streaming from
    /// it: `pg_basebackup -R` (the standby's own replication slot-less
    /// connection, `application_name` = the standby's port), started on a
    /// port of its own. Returns once it accepts connections.
    pub fn standby_of(primary: &PgCluster) -> Result<Self, String> {
        let standby = Self::empty()?;
        let data = standby.data_dir();
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name=standby{}",
            primary.port, standby.port
        );
        let out = standby.run(
            "pg_basebackup",
            &[
                "-D",
                path_str(&data)?,
                "-d",
                &conninfo,
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-c",
                "fast",
            ],
        )?;
        if !out.status.success() {
            return Err(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        standby.pg_ctl(&["start"])?;
        Ok(standby)
    }

    /// `pg_ctl promote -w`: returns once the standby is a primary.
    pub fn promote(&self) -> Result<(), String> {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", path_str(&data)?],
        )?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl promote failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `pg_ctl stop -m immediate`: as if the machine went away.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "immediate"])
    }

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: returns once the cluster accepts
    /// connections again (pg_ctl waits, at most 60 s).
    pub fn restart_fast(&self) -> Result<(), String> {
        self.pg_ctl(&["restart", "-m", "fast"])
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop_fast(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "fast"])
    }

    /// `pg_ctl start`: returns once it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl(&["start"])
    }

    /// The cluster's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `pg_ctl ACTION -w -t 60` with the cluster's port, socket folder and
    /// log; an error carries pg_ctl's output and the log's tail.
    fn pg_ctl(&self, action: &[&str]) -> Result<(), String> {
        let data = self.data_dir();
        let sock = self.dir.path().join("sock");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=120",
            self.port,
            path_str(&sock)?
        );
        let mut args: Vec<&str> = action.to_vec();
        args.extend([
            "-w",
            "-t",
            "60",
            "-D",
            path_str(&data)?,
            "-l",
            path_str(&log)?,
            "-o",
            &options,
        ]);
        let out = self.run("pg_ctl", &args)?;
        if out.status.success() {
            Ok(())
        } else {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            Err(format!(
                "pg_ctl {action:?} failed: {}{}\nlog tail:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }

    /// Runs one of the cluster's programs (as `postgres` when root).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let exe = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Best effort: immediate mode, so a test that failed mid-load does
        // not wait for a checkpoint. The folder goes with the TempDir.
        let data = self.data_dir();
        if let Some(data) = data.to_str() {
            let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", data]);
        }
    }
}

fn pg_bindir() -> Result<PathBuf, String> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|e| format!("pg_config not found ({e}); install PostgreSQL's server package"))?;
    if !out.status.success() {
        return Err("pg_config --bindir failed".to_owned());
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    ))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("not UTF-8: {}", path.display()))
}
