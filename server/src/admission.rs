//! Admission control: how many calls run at once on one database, and how
//! many may wait for a turn. A call past both limits is refused at once with
//! RESOURCE_EXHAUSTED, so a busy database answers "busy" in microseconds
//! instead of letting every caller wait out the pool's acquire timeout.

use iadb::{Error, ErrorKind};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One database's admission: a semaphore of running calls and a bounded
/// count of waiting ones.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    max_running: usize,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// How long a call waits for its turn before UNAVAILABLE.
    wait_timeout: Duration,
}

/// A call's turn on its database; the turn ends when this is dropped.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

/// Counts a waiting call for as long as it waits (also when the wait is
/// dropped on the caller's deadline).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// `max_running` calls at once (at least one), `max_waiting` more in
    /// line, each waiting at most `wait_timeout`.
    pub fn new(max_running: usize, max_waiting: usize, wait_timeout: Duration) -> Self {
        let max_running = max_running.max(1);
        Self {
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            wait_timeout,
        }
    }

    /// Waits for a turn. RESOURCE_EXHAUSTED at once when the line is full;
    /// UNAVAILABLE when the turn does not come within the wait timeout.
    pub async fn enter(&self, database: &str) -> Result<Turn, Error> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(Turn(permit));
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(self.waiting.clone());
        if ahead >= self.max_waiting {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "database `{}` is busy: {} calls running and {} waiting \
                     (--max-concurrent-calls, --max-queued-calls); try again later",
                    iadb::clip(database),
                    self.max_running,
                    ahead
                ),
            ));
        }
        match tokio::time::timeout(self.wait_timeout, self.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Error::internal("admission closed")),
            Err(_) => Err(Error::unavailable(format!(
                "database `{}` gave no turn within {} s: {} calls running \
                 (--max-concurrent-calls)",
                iadb::clip(database),
                self.wait_timeout.as_secs(),
                self.max_running
            ))),
        }
    }

    /// Calls running now.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.max_running - self.running.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_line_is_refused_at_once_and_a_freed_turn_is_taken() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_secs(30)));
        let first = admission.enter("db").await.expect("first turn");
        assert_eq!(admission.running(), 1);
        // The second call waits in line...
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter("db").await.map(|_| ()) })
        };
        for _ in 0..200 {
            if admission.waiting.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 1);
        // ...so the third finds the line full.
        let refused = admission.enter("db").await.expect_err("line is full");
        assert_eq!(refused.kind(), ErrorKind::ResourceExhausted);
        assert!(refused.message().contains("busy"), "{}", refused.message());
        drop(first);
        waiter
            .await
            .expect("join")
            .expect("the waiter gets the freed turn");
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(admission.running(), 0);
    }

    #[tokio::test]
    async fn a_turn_that_does_not_come_is_unavailable() {
        let admission = Admission::new(1, 4, Duration::from_millis(50));
        let _held = admission.enter("db").await.expect("first turn");
        let late = admission.enter("db").await.expect_err("no turn");
        assert_eq!(late.kind(), ErrorKind::Unavailable);
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 0);
    }
}
