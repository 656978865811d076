//! Read replicas of a PostgreSQL database: which members may serve a read
//! of bounded staleness, and how far behind each one is.
//!
//! Each database with `--replica` members (or a multi-host primary URL) has
//! a [`Replication`]: the replicas' own pools, and a checker task
//! ([`Replication::run_checks`]) that every `--replica-check-interval-ms`
//! samples the primary's WAL position (`pg_current_wal_lsn()`, on a
//! one-connection pool of its own, so that a saturated primary pool does
//! not delay the checks) and each replica's replay position and last
//! replayed commit.
//!
//! A replica's lag is an upper bound on how old its view of the data is:
//! - 0 when it has replayed everything the primary had written at the
//!   newest sample (a caught-up standby of an idle primary is not behind,
//!   although `now() - pg_last_xact_replay_timestamp()` grows);
//! - otherwise the smaller of `now - at` for the newest primary sample
//!   `(lsn, at)` it has replayed past (it has every commit made before `at`)
//!   and `now() - pg_last_xact_replay_timestamp()` (the first commit it
//!   misses came after the last one it replayed).
//!
//! A read with a bound goes to a replica whose lag, plus the age of the
//! check that measured it, is within the bound, round-robin; none within it
//! means the primary. A replica that fails (a check or a read) is out of
//! rotation for `--replica-backoff-secs`, then checked again.

use crate::backend::Backend;
use iadb::{DatabaseInterface, Error, Value};
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tracing::{info, warn};

/// How long one check query (or a replica's connect) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long primary WAL positions are kept to measure lag against.
const SAMPLE_WINDOW: Duration = Duration::from_secs(120);

/// At most this many primary samples are kept.
const MAX_SAMPLES: usize = 2048;

/// A check older than this many intervals (plus [`CHECK_TIMEOUT`]) takes
/// its replica out of rotation: its lag is not known any more.
const STALE_CHECKS: u32 = 10;

/// The primary's role, its address, and its WAL position as text-free
/// numbers (`pg_lsn - '0/0'` is the byte position).
const PRIMARY_SQL: &str = "SELECT host(inet_server_addr()), inet_server_port(), \
     pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL \
     ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 END";

/// A replica's role, replay position, and seconds since its last replayed
/// commit.
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), \
     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, \
     extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8";

/// A replica as [`Replication::new`] takes it: its `host:port`, its
/// adapter, the adapter behind the wrapper that scrubs values from errors,
/// and a one-connection pool of its own for the lag checks (so that reads
/// filling the replica's pool do not delay them and take it out).
pub type ReplicaParts = (
    String,
    Arc<dyn Backend>,
    Arc<dyn DatabaseInterface>,
    Arc<dyn Backend>,
);

/// One replica: its pool, and what its last check found.
struct Replica {
    /// `host:port`, never credentials.
    address: String,
    backend: Arc<dyn Backend>,
    /// `backend` behind a wrapper that keeps parameter values out of errors.
    gate: Arc<dyn DatabaseInterface>,
    /// The lag checks' own one-connection pool.
    monitor: Arc<dyn Backend>,
    state: Mutex<ReplicaState>,
}

#[derive(Debug, Default, Clone)]
struct ReplicaState {
    connected: bool,
    reachable: bool,
    /// Lag found by the last check that reached it.
    lag: Option<Duration>,
    /// When that check ran.
    checked: Option<Instant>,
    /// Out of rotation until then (after a failure).
    out_until: Option<Instant>,
    /// Why it is out of rotation or unreachable.
    message: String,
}

/// What the last check of the primary found.
#[derive(Debug, Default)]
struct PrimaryState {
    address: Option<String>,
    reachable: bool,
    message: String,
    /// `(wal byte position, when it was asked for)`, oldest first.
    samples: VecDeque<(i64, Instant)>,
}

/// The members of one replicated database.
pub struct Replication {
    database: String,
    /// The primary's one-connection monitoring pool.
    monitor: Arc<dyn Backend>,
    replicas: Vec<Replica>,
    primary: Mutex<PrimaryState>,
    next: AtomicUsize,
    interval: Duration,
    backoff: Duration,
}

/// One member a read may run on ([`Replication::read_members`]).
pub struct ReadMember {
    /// What callers use (values scrubbed from errors).
    pub db: Arc<dyn DatabaseInterface>,
    /// The adapter, for read-only transactions.
    pub backend: Arc<dyn Backend>,
    /// The replica's set and index; `None` for the primary.
    replica: Option<(Arc<Replication>, usize)>,
}

impl ReadMember {
    /// The primary, as given.
    pub fn primary(db: Arc<dyn DatabaseInterface>, backend: Arc<dyn Backend>) -> Self {
        Self {
            db,
            backend,
            replica: None,
        }
    }

    /// Whether this member is a replica.
    pub fn is_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether a read that failed with `e` on this member, before any row
    /// was sent, may run again on another member: the member could not be
    /// reached or lost its connection (UNAVAILABLE; INTERNAL, such as a
    /// connection cut in the middle of a message), and the replica is then
    /// taken out of rotation; or, on a replica, the query was cancelled by
    /// a recovery conflict (ABORTED). An error of the statement itself
    /// (bad SQL, a write refused on a standby) is the caller's.
    pub fn failed(&self, e: &Error) -> bool {
        use iadb::ErrorKind::{Aborted, Internal, Unavailable};
        match (&self.replica, e.kind()) {
            (Some((set, index)), Unavailable | Internal) => {
                set.mark_failed(*index, e.message());
                true
            }
            (Some(_), Aborted) => true,
            (None, kind) => kind == Unavailable,
            (Some(_), _) => false,
        }
    }
}

impl Replication {
    /// The replicated database `database`: `monitor` is a one-connection
    /// pool on its primary, `replicas` each replica's address, adapter and
    /// scrubbing wrapper.
    pub fn new(
        database: &str,
        monitor: Arc<dyn Backend>,
        replicas: Vec<ReplicaParts>,
        settings: crate::config::ReplicationSettings,
    ) -> Self {
        Self {
            database: database.to_owned(),
            monitor,
            replicas: replicas
                .into_iter()
                .map(|(address, backend, gate, monitor)| Replica {
                    address,
                    backend,
                    gate,
                    monitor,
                    state: Mutex::new(ReplicaState {
                        message: "not checked yet".to_owned(),
                        ..Default::default()
                    }),
                })
                .collect(),
            primary: Mutex::new(PrimaryState::default()),
            next: AtomicUsize::new(0),
            interval: settings.check_interval,
            backoff: settings.backoff,
        }
    }

    /// The members a read with `bound` tries, in order: a replica within
    /// the bound (round-robin), then one more member — another replica
    /// within it, else the primary — for the one retry of a read that
    /// failed before any row was sent. Without a replica within the bound:
    /// the primary alone.
    pub fn read_members(self: &Arc<Self>, bound: Duration, primary: ReadMember) -> Vec<ReadMember> {
        let now = Instant::now();
        let stale = self.interval * STALE_CHECKS + CHECK_TIMEOUT;
        let within: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| {
                let state = lock(&self.replicas[i].state);
                in_rotation(&state, now, stale)
                    && state
                        .lag
                        .zip(state.checked)
                        .is_some_and(|(lag, at)| lag + now.duration_since(at) <= bound)
            })
            .collect();
        if within.is_empty() {
            return vec![primary];
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let member = |k: usize| {
            let index = within[(start + k) % within.len()];
            let replica = &self.replicas[index];
            ReadMember {
                db: replica.gate.clone(),
                backend: replica.backend.clone(),
                replica: Some((self.clone(), index)),
            }
        };
        if within.len() > 1 {
            vec![member(0), member(1)]
        } else {
            vec![member(0), primary]
        }
    }

    /// Takes replica `index` out of rotation for the back-off.
    fn mark_failed(&self, index: usize, cause: &str) {
        let Some(replica) = self.replicas.get(index) else {
            return;
        };
        let mut state = lock(&replica.state);
        let was_in = state.out_until.is_none() && state.reachable;
        state.reachable = false;
        state.out_until = Some(Instant::now() + self.backoff);
        state.message = format!("failed: {cause}");
        if was_in {
            warn!(
                database = %self.database,
                replica = %replica.address,
                cause = %cause,
                backoff_secs = self.backoff.as_secs(),
                "replica out of rotation"
            );
        }
    }

    /// Checks the primary and every replica every interval, for as long
    /// as the task runs.
    pub async fn run_checks(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check_once().await;
        }
    }

    /// One round: the primary's position, then each replica at once.
    pub async fn check_once(&self) {
        let asked = Instant::now();
        let primary = tokio::time::timeout(CHECK_TIMEOUT, self.primary_position()).await;
        {
            let mut state = lock(&self.primary);
            match primary {
                Ok(Ok((address, lsn))) => {
                    state.reachable = true;
                    state.message.clear();
                    state.address = address;
                    if let Some(lsn) = lsn {
                        state.samples.push_back((lsn, asked));
                    } else {
                        state.message = "in recovery: not a primary".to_owned();
                    }
                }
                Ok(Err(e)) => {
                    state.reachable = false;
                    state.message = e.message().to_owned();
                }
                Err(_) => {
                    state.reachable = false;
                    state.message = format!("no answer within {} ms", CHECK_TIMEOUT.as_millis());
                }
            }
            while state.samples.len() > MAX_SAMPLES
                || state
                    .samples
                    .front()
                    .is_some_and(|(_, at)| asked.duration_since(*at) > SAMPLE_WINDOW)
            {
                state.samples.pop_front();
            }
        }
        futures::future::join_all((0..self.replicas.len()).map(|i| self.check_replica(i))).await;
    }

    /// The primary's address and WAL position (`None` when it is in
    /// recovery).
    async fn primary_position(&self) -> Result<(Option<String>, Option<i64>), Error> {
        if !self.monitor.is_connected() {
            self.monitor.connect().await?;
        }
        let row = self
            .monitor
            .fetch_one(PRIMARY_SQL, &[])
            .await?
            .ok_or_else(|| Error::internal("the primary check returned no row"))?;
        let values = row.values();
        let address = match (values.first(), values.get(1)) {
            (Some(Value::Text(host)), Some(Value::Int(port))) => Some(format!("{host}:{port}")),
            _ => None,
        };
        let lsn = match values.get(3) {
            Some(Value::Int(lsn)) => Some(*lsn),
            _ => None,
        };
        Ok((address, lsn))
    }

    async fn check_replica(&self, index: usize) {
        let Some(replica) = self.replicas.get(index) else {
            return;
        };
        let now = Instant::now();
        if lock(&replica.state)
            .out_until
            .is_some_and(|until| now < until)
        {
            return;
        }
        let measured = tokio::time::timeout(CHECK_TIMEOUT, async {
            if !replica.monitor.is_connected() {
                replica.monitor.connect().await?;
            }
            // The replica's own pool opens with the first check that
            // reaches it.
            if !replica.backend.is_connected() {
                replica.backend.connect().await?;
            }
            replica.monitor.fetch_one(REPLICA_SQL, &[]).await
        })
        .await;
        let row = match measured {
            Ok(Ok(Some(row))) => row,
            Ok(Ok(None)) => return self.mark_failed(index, "the lag check returned no row"),
            Ok(Err(e)) => return self.mark_failed(index, e.message()),
            Err(_) => {
                return self.mark_failed(
                    index,
                    &format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()),
                );
            }
        };
        let values = row.values();
        let in_recovery = matches!(values.first(), Some(Value::Bool(true)));
        let replay = match values.get(1) {
            Some(Value::Int(lsn)) => Some(*lsn),
            _ => None,
        };
        let since_commit = match values.get(2) {
            Some(Value::Float(secs)) if secs.is_finite() => {
                Some(Duration::from_secs_f64(secs.max(0.0)))
            }
            _ => None,
        };
        let checked = Instant::now();
        let lag = {
            let primary = lock(&self.primary);
            // The newest sample counts as the primary's current position
            // while it is this recent (not after the primary stopped
            // answering: it may still be writing).
            let fresh = self.interval * 2 + CHECK_TIMEOUT;
            replay_lag(
                in_recovery,
                replay,
                since_commit,
                &primary.samples,
                checked,
                fresh,
            )
        };
        let mut state = lock(&replica.state);
        let was_out = !state.reachable;
        *state = ReplicaState {
            connected: true,
            reachable: true,
            lag,
            checked: Some(checked),
            out_until: None,
            message: if lag.is_none() {
                "replay lag not known yet".to_owned()
            } else {
                String::new()
            },
        };
        if was_out {
            info!(
                database = %self.database,
                replica = %replica.address,
                lag_ms = ?lag.map(|l| l.as_millis()),
                "replica in rotation"
            );
        }
    }

    /// Health of the primary and each replica, for `Health`.
    pub fn members(&self) -> Vec<iadb::proto::MemberHealth> {
        let now = Instant::now();
        let stale = self.interval * STALE_CHECKS + CHECK_TIMEOUT;
        let mut members = Vec::with_capacity(self.replicas.len() + 1);
        {
            let primary = lock(&self.primary);
            members.push(iadb::proto::MemberHealth {
                role: "primary".to_owned(),
                address: primary.address.clone().unwrap_or_default(),
                reachable: primary.reachable,
                in_rotation: primary.reachable,
                replay_lag_ms: None,
                message: primary.message.clone(),
            });
        }
        for replica in &self.replicas {
            let state = lock(&replica.state).clone();
            let in_rotation = in_rotation(&state, now, stale);
            members.push(iadb::proto::MemberHealth {
                role: "replica".to_owned(),
                address: replica.address.clone(),
                reachable: state.reachable,
                in_rotation,
                replay_lag_ms: state.lag.map(|l| l.as_secs_f64() * 1000.0),
                message: if in_rotation || !state.message.is_empty() {
                    state.message
                } else {
                    "its last check is too old".to_owned()
                },
            });
        }
        members
    }

    /// Closes the replicas' pools and the monitoring pool.
    pub async fn close(&self) {
        for replica in &self.replicas {
            let _ = replica.backend.disconnect().await;
            let _ = replica.monitor.disconnect().await;
        }
        let _ = self.monitor.disconnect().await;
    }
}

/// Whether a replica in `state` may serve reads at `now`.
fn in_rotation(state: &ReplicaState, now: Instant, stale: Duration) -> bool {
    state.connected
        && state.reachable
        && state.out_until.is_none_or(|until| now >= until)
        && state
            .checked
            .is_some_and(|at| now.duration_since(at) <= stale)
        && state.lag.is_some()
}

/// A replica's lag (see the module's comment): `None` while not known.
/// The newest sample stands for the primary's position now only if it is
/// at most `fresh` old.
fn replay_lag(
    in_recovery: bool,
    replay: Option<i64>,
    since_commit: Option<Duration>,
    samples: &VecDeque<(i64, Instant)>,
    now: Instant,
    fresh: Duration,
) -> Option<Duration> {
    if !in_recovery {
        // Promoted: it is a primary now, as fresh as any.
        return Some(Duration::ZERO);
    }
    let replay = replay?;
    if samples
        .back()
        .is_some_and(|(lsn, at)| replay >= *lsn && now.saturating_duration_since(*at) <= fresh)
    {
        return Some(Duration::ZERO);
    }
    let by_position = samples
        .iter()
        .rev()
        .find(|(lsn, _)| replay >= *lsn)
        .map(|(_, at)| now.saturating_duration_since(*at));
    match (by_position, since_commit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_bounded_by_samples_and_commits() {
        let now = Instant::now();
        let at = |ms: u64| now - Duration::from_millis(ms);
        let samples: VecDeque<_> = [(100, at(900)), (200, at(600)), (300, at(300))].into();
        let secs = |s: u64| Some(Duration::from_secs(s));
        let fresh = Duration::from_secs(1);
        // Caught up with the newest sample: 0, however old its last commit.
        assert_eq!(
            replay_lag(true, Some(300), secs(3600), &samples, now, fresh),
            Some(Duration::ZERO)
        );
        // Past the sample of 600 ms ago, not the newest: 600 ms.
        assert_eq!(
            replay_lag(true, Some(250), secs(3600), &samples, now, fresh),
            Some(Duration::from_millis(600))
        );
        // A recent commit replayed bounds it lower.
        assert_eq!(
            replay_lag(
                true,
                Some(250),
                Some(Duration::from_millis(50)),
                &samples,
                now,
                fresh
            ),
            Some(Duration::from_millis(50))
        );
        // Behind every sample: the last commit's age alone.
        assert_eq!(
            replay_lag(true, Some(50), secs(7), &samples, now, fresh),
            secs(7)
        );
        assert_eq!(replay_lag(true, Some(50), None, &samples, now, fresh), None);
        // Caught up with a sample too old to stand for the primary now (it
        // stopped answering): the sample's age.
        assert_eq!(
            replay_lag(
                true,
                Some(300),
                secs(3600),
                &samples,
                now,
                Duration::from_millis(100)
            ),
            Some(Duration::from_millis(300))
        );
        // Promoted: a primary.
        assert_eq!(
            replay_lag(false, None, None, &samples, now, fresh),
            Some(Duration::ZERO)
        );
        assert_eq!(replay_lag(true, None, secs(1), &samples, now, fresh), None);
    }
}
