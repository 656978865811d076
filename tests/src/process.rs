//! A child process run to its end with a time bound, for the tests that
//! drive other toolchains (make, pip, pytest): its output read as it comes
//! (so a chatty child never blocks on a full pipe), and the child killed
//! when it outlives its bound.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a bounded child ended.
pub struct Ran {
    /// Its exit status; `None` when it was killed at the bound.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// The command, as it is shown in messages.
    pub shown: String,
}

/// Runs `cmd` with stdout and stderr piped (stdin as the caller set it),
/// killing it after `limit`. `Err` when it cannot be started or waited for.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Ran, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    Ok(Ran {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        shown,
    })
}
