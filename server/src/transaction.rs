//! The Transaction RPC: a bidirectional stream that is one transaction on
//! one pooled connection.
//!
//! The first request begins it; every later request is answered in order
//! before the next one is read (a request that arrives while the previous
//! one runs is out of turn: FAILED_PRECONDITION, and the transaction is
//! rolled back). Commit and rollback end it. Every other end rolls it back
//! and says why in the final status: a statement that failed (its own
//! status), the request stream that ended or broke (CANCELLED), the call's
//! deadline (DEADLINE_EXCEEDED), the idle timeout or the maximum life
//! (ABORTED: the whole transaction may be retried).

use crate::{
    auth::{Identity, Scope},
    backend::session::{Isolation, Session, TxOptions},
    layer::CallLabel,
    service::{DatabaseService, FrameSink, Place, audit, check_statement, wants_arrow},
};
use futures::StreamExt;
use iadb::{
    DatabaseType, Error, ErrorKind, ExecuteOutcome, ValueScrubber,
    convert::params_from_proto,
    proto::{
        self, fetch_all_response::Frame, transaction_request::Request as Req,
        transaction_response::Response as Resp,
    },
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Status;

/// The requests of one Transaction stream.
pub(crate) type Inbound =
    futures::stream::BoxStream<'static, Result<proto::TransactionRequest, Status>>;
/// Where its answers go.
pub(crate) type Outbound = mpsc::Sender<Result<proto::TransactionResponse, Status>>;

/// How long the rollback of an ended transaction may take before its
/// session is dropped instead (which closes the connection).
const ROLLBACK_BUDGET: Duration = Duration::from_secs(5);

/// How a transaction ended: `committed`, or the cause of its rollback (the
/// `outcome` label of `iadb_transactions_ended_total`).
pub(crate) type Outcome = &'static str;

/// Why a wait for the client (or for a statement) ended early.
enum Interrupted {
    /// The request stream ended or broke.
    StreamEnded,
    /// A request arrived while the previous one was running.
    OutOfTurn,
    Deadline,
    Idle,
    MaxLife,
}

impl Interrupted {
    fn outcome(&self) -> Outcome {
        match self {
            Interrupted::StreamEnded => "stream_ended",
            Interrupted::OutOfTurn => "protocol",
            Interrupted::Deadline => "deadline",
            Interrupted::Idle => "idle_timeout",
            Interrupted::MaxLife => "max_life",
        }
    }

    fn error(&self, limits: &Clocks) -> Error {
        let rolled_back = "the transaction was rolled back";
        match self {
            Interrupted::StreamEnded => Error::new(
                ErrorKind::Cancelled,
                format!("the request stream ended without commit or rollback; {rolled_back}"),
            ),
            Interrupted::OutOfTurn => Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "a request arrived while the previous one was still running; a transaction \
                     answers one request at a time, in order; {rolled_back}"
                ),
            ),
            Interrupted::Deadline => Error::new(
                ErrorKind::DeadlineExceeded,
                format!("the call's deadline passed; {rolled_back}"),
            ),
            Interrupted::Idle => Error::new(
                ErrorKind::Aborted,
                format!(
                    "no request for {} s (--transaction-idle-timeout-secs); {rolled_back}",
                    limits.idle.as_secs()
                ),
            ),
            Interrupted::MaxLife => Error::new(
                ErrorKind::Aborted,
                format!(
                    "the transaction lasted longer than {} s (--transaction-max-secs); \
                     {rolled_back}",
                    limits.max_life.as_secs()
                ),
            ),
        }
    }
}

/// The time limits of one transaction.
struct Clocks {
    idle: Duration,
    max_life: Duration,
    /// The end of its life: the maximum life or the call's deadline,
    /// whichever comes first, and which of the two it is.
    end: tokio::time::Instant,
    end_is_deadline: bool,
}

impl Clocks {
    fn ended(&self) -> Interrupted {
        if self.end_is_deadline {
            Interrupted::Deadline
        } else {
            Interrupted::MaxLife
        }
    }
}

/// The isolation level a request asks for.
fn isolation(level: i32) -> Result<Isolation, Error> {
    match proto::IsolationLevel::try_from(level) {
        Ok(proto::IsolationLevel::Unspecified) => Ok(Isolation::Default),
        Ok(proto::IsolationLevel::ReadCommitted) => Ok(Isolation::ReadCommitted),
        Ok(proto::IsolationLevel::RepeatableRead) => Ok(Isolation::RepeatableRead),
        Ok(proto::IsolationLevel::Serializable) => Ok(Isolation::Serializable),
        Ok(proto::IsolationLevel::Snapshot) => Ok(Isolation::Snapshot),
        Err(_) => Err(Error::invalid_argument(format!(
            "unknown isolation level {level}"
        ))),
    }
}

/// The requests of one stream, and whether the client may still send more
/// (a client may half-close its side right after its last request — a
/// commit, typically — and then only reads).
pub(crate) struct Requests {
    inbound: Inbound,
    open: bool,
}

impl Requests {
    pub(crate) fn new(inbound: Inbound) -> Self {
        Self {
            inbound,
            open: true,
        }
    }
}

/// Waits for the next request, at most until the idle timeout or the end
/// of the transaction's life.
async fn next_request(
    requests: &mut Requests,
    clocks: &Clocks,
) -> Result<proto::TransactionRequest, Interrupted> {
    if !requests.open {
        return Err(Interrupted::StreamEnded);
    }
    let idle = tokio::time::sleep(clocks.idle);
    tokio::select! {
        next = requests.inbound.next() => match next {
            Some(Ok(request)) => Ok(request),
            Some(Err(_)) | None => {
                requests.open = false;
                Err(Interrupted::StreamEnded)
            }
        },
        _ = idle => Err(Interrupted::Idle),
        _ = tokio::time::sleep_until(clocks.end) => Err(clocks.ended()),
    }
}

/// Runs `work` (one statement) while watching the request stream: a
/// request out of turn, a stream that breaks, or the end of the
/// transaction's life stops it. A stream the client closed cleanly lets it
/// finish: the client has sent its last request and waits for the answers.
async fn guarded<T>(
    work: impl Future<Output = Result<T, Error>>,
    requests: &mut Requests,
    clocks: &Clocks,
) -> Result<Result<T, Error>, Interrupted> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return Ok(result),
            next = requests.inbound.next(), if requests.open => match next {
                Some(Ok(_)) => return Err(Interrupted::OutOfTurn),
                Some(Err(_)) => {
                    requests.open = false;
                    return Err(Interrupted::StreamEnded);
                }
                None => requests.open = false,
            },
            _ = tokio::time::sleep_until(clocks.end) => return Err(clocks.ended()),
        }
    }
}

async fn send(out: &Outbound, response: Resp) -> Result<(), Error> {
    out.send(Ok(proto::TransactionResponse {
        response: Some(response),
    }))
    .await
    .map_err(|_| Error::new(ErrorKind::Cancelled, "client left the stream"))
}

/// Tells the call layer that the transaction on `database` ended as its
/// client asked (committed, or rolled back by request): the call's status
/// is OK even when the client drops the stream after the last answer and
/// before the trailers.
fn ended_well(label: &CallLabel, database: &str) {
    label.set(database);
    label.ended(&Ok(()));
}

fn fetched(frame: Frame) -> proto::TransactionResponse {
    proto::TransactionResponse {
        response: Some(Resp::Fetched(proto::FetchAllResponse {
            frame: Some(frame),
        })),
    }
}

/// What the service records about a transaction once it ended.
pub(crate) struct Ended {
    /// The configured name of its database (None before its begin was read).
    pub database: Option<String>,
    pub outcome: Outcome,
    pub result: Result<(), Error>,
    /// From begin (None when it never began).
    pub lasted: Option<Duration>,
}

/// Runs one Transaction stream to its end.
pub(crate) async fn drive(
    service: &DatabaseService,
    identity: Option<&Identity>,
    label: &CallLabel,
    inbound: Inbound,
    out: &Outbound,
    deadline: Option<Duration>,
) -> Ended {
    let limits = service.limits();
    let started = tokio::time::Instant::now();
    let (end, end_is_deadline) = match deadline {
        Some(d) if d < limits.transaction_max_life => (started + d, true),
        _ => (started + limits.transaction_max_life, false),
    };
    let clocks = Clocks {
        idle: limits.transaction_idle_timeout,
        max_life: limits.transaction_max_life,
        end,
        end_is_deadline,
    };
    let mut ended = Ended {
        database: None,
        outcome: "error",
        result: Ok(()),
        lasted: None,
    };
    // The first request: begin.
    let mut requests = Requests::new(inbound);
    let begin = match next_request(&mut requests, &clocks).await {
        Ok(proto::TransactionRequest {
            request: Some(Req::Begin(begin)),
        }) => begin,
        Ok(_) => {
            ended.result = Err(Error::invalid_argument(
                "the first request of a Transaction stream must be `begin`",
            ));
            return ended;
        }
        Err(why) => {
            ended.outcome = why.outcome();
            ended.result = Err(why.error(&clocks));
            return ended;
        }
    };
    // A read token may open a read-only transaction only.
    let needs = if begin.read_only {
        Scope::Read
    } else {
        Scope::Write
    };
    if let Err(e) = service.authorize(identity, &begin.database, needs) {
        ended.result = Err(e);
        return ended;
    }
    let (name, engine) = match service.registry().describe(&begin.database) {
        Some((name, engine)) => (name.to_owned(), engine),
        None => {
            ended.result = service
                .registry()
                .ready_backend(&begin.database)
                .map(|_| ());
            return ended;
        }
    };
    ended.database = Some(name.clone());
    let options = match isolation(begin.isolation) {
        Ok(isolation) => TxOptions {
            isolation,
            read_only: begin.read_only,
            immediate: begin.immediate,
        },
        Err(e) => {
            ended.result = Err(e);
            return ended;
        }
    };
    // A read-only transaction of bounded staleness may run on a replica.
    let bound = if begin.read_only {
        match crate::service::staleness_bound(begin.consistency, begin.max_staleness_ms, identity) {
            Ok(bound) => bound,
            Err(e) => {
                ended.result = Err(e);
                return ended;
            }
        }
    } else {
        None
    };
    // The transaction holds a turn and a connection for its whole life.
    let opened = guarded(
        async {
            let backend = service.registry().ready_backend(&name)?;
            let turn = service.turn(&name).await?;
            let replica = match bound {
                Some(bound) => service.replica_for(&name, bound)?,
                None => None,
            };
            if let Some(member) = replica {
                // A replica that fails here is taken out; the transaction
                // begins on the primary instead.
                let on_replica = async {
                    let mut session = member.backend.session().await?;
                    session.begin(options).await?;
                    Ok::<_, Error>(session)
                };
                match on_replica.await {
                    Ok(session) => return Ok((turn, session)),
                    Err(e) if member.failed(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            let mut session = backend.session().await?;
            session.begin(options).await?;
            Ok((turn, session))
        },
        &mut requests,
        &clocks,
    )
    .await;
    let (_turn, mut session) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            ended.result = Err(e);
            return ended;
        }
        Err(why) => {
            ended.outcome = why.outcome();
            ended.result = Err(why.error(&clocks));
            return ended;
        }
    };
    let began = Instant::now();
    service.metrics().transaction_opened(&name);
    let run = run(
        service,
        identity,
        label,
        session.as_mut(),
        engine,
        &name,
        &mut requests,
        out,
        &clocks,
        began,
    )
    .await;
    let (outcome, result) = match run {
        Ok(outcome) => (outcome, Ok(())),
        Err((outcome, e)) => {
            // Rolled back here when the session is idle and answers in
            // time; otherwise dropping it rolls back (or closes the
            // connection).
            if tokio::time::timeout(ROLLBACK_BUDGET, session.rollback())
                .await
                .is_err()
            {
                tracing::warn!("a transaction's rollback took too long; its connection is closed");
            }
            (outcome, Err(e))
        }
    };
    drop(session);
    let lasted = began.elapsed();
    service.metrics().transaction_ended(&name, outcome, lasted);
    Ended {
        database: Some(name),
        outcome,
        result,
        lasted: Some(lasted),
    }
}

/// Answers requests until the transaction ends; returns its outcome, or the
/// cause of its rollback and the error to end the stream with (the caller
/// rolls back).
#[allow(clippy::too_many_arguments)]
async fn run(
    service: &DatabaseService,
    identity: Option<&Identity>,
    label: &CallLabel,
    session: &mut dyn Session,
    engine: DatabaseType,
    database: &str,
    requests: &mut Requests,
    out: &Outbound,
    clocks: &Clocks,
    began: Instant,
) -> Result<Outcome, (Outcome, Error)> {
    let limits = service.limits();
    let failed = |e: Error| ("error", e.in_context("the transaction was rolled back"));
    let gone = |e: Error| ("stream_ended", e);
    send(
        out,
        Resp::Begun(proto::TransactionBegun {
            database: database.to_owned(),
            engine: engine.to_string(),
        }),
    )
    .await
    .map_err(gone)?;
    loop {
        let request = next_request(requests, clocks)
            .await
            .map_err(|why| (why.outcome(), why.error(clocks)))?;
        let started = Instant::now();
        let Some(request) = request.request else {
            return Err(failed(Error::invalid_argument("an empty request")));
        };
        match request {
            Req::Begin(_) => {
                return Err((
                    "protocol",
                    Error::new(
                        ErrorKind::FailedPrecondition,
                        "`begin` inside a transaction: this stream's transaction is open \
                         already; the transaction was rolled back",
                    ),
                ));
            }
            Req::Execute(proto::Statement { sql, params, .. }) => {
                admit(service, session, engine, &sql, params.len()).map_err(failed)?;
                let params = params_from_proto(params).map_err(failed)?;
                let executed = guarded(session.execute(&sql, &params), requests, clocks)
                    .await
                    .map_err(|why| (why.outcome(), why.error(clocks)))?
                    .map_err(|e| ValueScrubber::new(&params).scrub(e));
                audit_statement(identity, service, database, &sql, &executed);
                let ExecuteOutcome {
                    rows_affected,
                    last_insert_id,
                } = executed.map_err(failed)?;
                send(
                    out,
                    Resp::Executed(proto::ExecuteResponse {
                        rows_affected,
                        last_insert_id,
                        execution_time_ms: ms(started),
                    }),
                )
                .await
                .map_err(gone)?;
            }
            Req::Fetch(proto::Statement {
                sql,
                params,
                result_format,
            }) => {
                let arrow = wants_arrow(result_format).map_err(failed)?;
                admit(service, session, engine, &sql, params.len()).map_err(failed)?;
                let params = params_from_proto(params).map_err(failed)?;
                let metrics = service.metrics();
                let mut sink = FrameSink::new(out, fetched, limits, &metrics, database)
                    .with_arrow(arrow.then_some(engine));
                let fetch = async {
                    let outcome = session.query(&sql, &params, &mut sink).await;
                    match outcome {
                        Ok(outcome) => {
                            sink.finish(outcome.rows_affected, started).await?;
                            Ok(())
                        }
                        Err(e) => {
                            // Rows already read go out before the error.
                            let _ = sink.flush().await;
                            Err(e)
                        }
                    }
                };
                guarded(fetch, requests, clocks)
                    .await
                    .map_err(|why| (why.outcome(), why.error(clocks)))?
                    .map_err(|e| match e.kind() {
                        ErrorKind::Cancelled => gone(e),
                        _ => failed(ValueScrubber::new(&params).scrub(e)),
                    })?;
            }
            Req::ExecuteMany(proto::ExecuteManyStatement { sql, param_sets }) => {
                let widest = param_sets.iter().map(|s| s.values.len()).max().unwrap_or(0);
                let checked = admit(service, session, engine, &sql, widest).and_then(|()| {
                    param_sets
                        .into_iter()
                        .enumerate()
                        .map(|(i, row)| {
                            params_from_proto(row.values).map_err(|e| {
                                Error::invalid_argument(format!(
                                    "parameter set {i}: {}",
                                    e.message()
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, Error>>()
                });
                let sets = checked.map_err(failed)?;
                let executed = guarded(session.execute_many(&sql, &sets), requests, clocks)
                    .await
                    .map_err(|why| (why.outcome(), why.error(clocks)))?
                    .map_err(|e| ValueScrubber::for_sets(sets.iter().map(Vec::as_slice)).scrub(e));
                audit_statement(identity, service, database, &sql, &executed);
                let outcome = executed.map_err(failed)?;
                send(
                    out,
                    Resp::ExecutedMany(proto::ExecuteManyResponse {
                        rows_affected: outcome.rows_affected,
                        execution_time_ms: ms(started),
                    }),
                )
                .await
                .map_err(gone)?;
            }
            Req::Commit(proto::CommitTransaction {}) => {
                // Never stopped half-way (not by a request out of turn, a
                // broken stream or the deadline): a commit cut off would
                // leave its outcome unknown to the server too, and the
                // driver's state out of step with the connection's.
                session
                    .commit()
                    .await
                    .map_err(|e| ("error", e.in_context("the commit failed")))?;
                // Committed: a client that left before reading this still
                // has its transaction. The call is counted as ended well
                // before the answer goes: a client may drop the stream as
                // soon as it reads it, before this task returns.
                ended_well(label, database);
                let _ = send(
                    out,
                    Resp::Ended(proto::TransactionEnded {
                        committed: true,
                        execution_time_ms: ms(began),
                    }),
                )
                .await;
                return Ok("committed");
            }
            Req::Rollback(proto::RollbackTransaction {}) => {
                session.rollback().await.map_err(|e| ("error", e))?;
                ended_well(label, database);
                let _ = send(
                    out,
                    Resp::Ended(proto::TransactionEnded {
                        committed: false,
                        execution_time_ms: ms(began),
                    }),
                )
                .await;
                return Ok("client");
            }
        }
    }
}

/// The checks of a statement sent inside the stream (size, shape; see
/// [`check_statement`]); one that changes the session's state is noted on
/// the session, whose connection then does not go back to the pool as it
/// is.
fn admit(
    service: &DatabaseService,
    session: &mut dyn Session,
    engine: DatabaseType,
    sql: &str,
    params: usize,
) -> Result<(), Error> {
    service.check_sql_size(sql)?;
    if check_statement(sql, engine, params, Place::Transaction)? {
        session.changes_session_state();
    }
    Ok(())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The audit line of a write run inside the stream.
fn audit_statement(
    identity: Option<&Identity>,
    service: &DatabaseService,
    database: &str,
    sql: &str,
    executed: &Result<ExecuteOutcome, Error>,
) {
    audit(
        identity,
        "Transaction",
        database,
        &service.fingerprint(database, sql),
        executed.as_ref().ok().map(|o| o.rows_affected),
        executed,
    );
}
