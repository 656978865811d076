//! Interrupting a statement whose caller left.

use super::pool::{PooledConnection, lock};
use duckdb::{Connection, InterruptHandle};
use iadb::{Error, ErrorKind, Result};
use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// Where a call's blocking worker is, shared with the caller's side so that
/// the caller leaving interrupts DuckDB only while it is working for it.
///
/// One interrupt is not always enough: DuckDB clears a pending interrupt
/// when a statement starts its transaction, and notices one only at its
/// checkpoints (between optimizer passes, between data chunks), so a caller
/// that leaves while a statement is being prepared or bound (a statement
/// with 20,000 parameters spends seconds there) would be forgotten. So once
/// the caller has left, the interrupt is sent again every
/// [`REINTERRUPT_EVERY`] until the worker is out of DuckDB, and binding
/// stops between parameters.
pub(super) struct CallState {
    interrupt: Arc<InterruptHandle>,
    phase: Mutex<Phase>,
    /// The caller left (also in `phase`; here for a lock-free check per
    /// parameter).
    abandoned: AtomicBool,
}

/// How often an abandoned call's statement is interrupted again.
const REINTERRUPT_EVERY: Duration = Duration::from_millis(20);
/// For how long at most (a statement DuckDB cannot stop is left to finish).
const REINTERRUPT_FOR: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Phase {
    in_engine: bool,
    abandoned: bool,
    interrupted: bool,
    finished: bool,
}

impl CallState {
    pub(super) fn new(conn: &Connection) -> Arc<Self> {
        Arc::new(Self {
            interrupt: conn.interrupt_handle(),
            phase: Mutex::new(Phase::default()),
            abandoned: AtomicBool::new(false),
        })
    }

    /// Whether the caller has left.
    pub(super) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// The worker is about to call DuckDB; false if the caller already left.
    pub(super) fn enter(&self) -> bool {
        let mut phase = lock(&self.phase);
        phase.in_engine = !phase.abandoned;
        phase.in_engine
    }

    /// The worker is back from DuckDB (to decode or hand over rows).
    pub(super) fn leave(&self) {
        lock(&self.phase).in_engine = false;
    }

    /// The worker is done with the connection; whether it may be reused.
    pub(super) fn finish(&self) -> bool {
        let mut phase = lock(&self.phase);
        phase.finished = true;
        phase.in_engine = false;
        !phase.interrupted
    }

    /// The caller left: interrupt the statement if DuckDB is running it;
    /// whether the worker is still busy with the call.
    fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::Relaxed);
        let mut phase = lock(&self.phase);
        phase.abandoned = true;
        self.interrupt_if_in_engine(&mut phase);
        !phase.finished
    }

    /// Interrupts the statement again if DuckDB is still running it; false
    /// once the worker is done with the call.
    fn reinterrupt(&self) -> bool {
        let mut phase = lock(&self.phase);
        self.interrupt_if_in_engine(&mut phase);
        !phase.finished
    }

    fn interrupt_if_in_engine(&self, phase: &mut Phase) {
        if phase.in_engine && !phase.finished {
            // Under the lock, so the worker cannot finish and lend the
            // connection to another call in between.
            self.interrupt.interrupt();
            phase.interrupted = true;
        }
    }
}

/// Held by the caller's side of a call; dropping it before the call is over
/// abandons it, and keeps interrupting the statement until DuckDB lets go.
pub(super) struct AbandonOnDrop(pub(super) Arc<CallState>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.0.abandon() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let call = self.0.clone();
        runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(REINTERRUPT_EVERY);
            while started.elapsed() < REINTERRUPT_FOR {
                tick.tick().await;
                if !call.reinterrupt() {
                    break;
                }
            }
        });
    }
}

pub(super) fn panic_error(panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::internal(format!("the DuckDB worker panicked: {what}"))
}

/// Runs `work` on a blocking thread with the connection, interrupting it if
/// the returned future is dropped before it finishes.
pub(super) async fn run_call<T, F>(conn: PooledConnection, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &CallState) -> Result<T> + Send + 'static,
{
    let call = CallState::new(conn.get()?);
    let guard = AbandonOnDrop(call.clone());
    let worker = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        if !call.enter() {
            conn.reuse = call.finish();
            return Err(Error::new(ErrorKind::Cancelled, "the call was abandoned"));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| conn.get().and_then(|c| work(c, &call))));
        conn.reuse = call.finish() && outcome.is_ok();
        drop(conn);
        outcome.unwrap_or_else(|panic| Err(panic_error(panic)))
    });
    let result = worker
        .await
        .map_err(|e| Error::internal(format!("the DuckDB worker failed: {e}")))?;
    drop(guard);
    result
}
