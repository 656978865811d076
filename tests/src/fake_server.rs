//! A fake `iadb.v1.Database` server that misbehaves on purpose, so that every
//! client can be tested against what a real server does only when it fails:
//! a result stream cut short, a call that never answers, an UNAVAILABLE
//! after the request arrived.
//!
//! It runs in-process ([`FakeServer::spawn`], for Rust tests) or as the
//! `iadb-fake-server` binary ([`FakeServer::start`], for the Python, Node
//! and C++ suites, which get its address in `IADB_FAKE_ADDR`).
//!
//! What it does is chosen by the request's text: `sql` (Execute,
//! ExecuteMany, FetchAll, FetchOne), `table` (TableExists), `database`
//! (Health) or `target_version` (Migrate). Commands are words separated by
//! spaces:
//!
//! | command             | answer                                                        |
//! |---------------------|---------------------------------------------------------------|
//! | `rows N`            | FetchAll: header (column `i`), rows 1..=N, summary; others: OK |
//! | `truncate N`        | FetchAll: header, rows 1..=N, then the end (status OK) without a summary |
//! | `miscount N`        | FetchAll: header, N rows, a summary that counts N + 1          |
//! | `batch-first`       | FetchAll: a row batch before the header                        |
//! | `hang`              | never answers (the client's deadline must end the call)        |
//! | `header-then-hang`  | FetchAll: the header, then nothing                             |
//! | `unavailable TAG`   | counts the call under `METHOD TAG`, answers UNAVAILABLE         |
//! | `record TAG`        | counts the call under `METHOD TAG`, answers OK (FetchAll: `rows 1`) |
//! | `count METHOD TAG`  | FetchOne: one row, column `n`, the count of `METHOD TAG`        |
//!
//! A FetchAll asking for `RESULT_FORMAT_ARROW` gets the same frames with
//! its rows as Arrow IPC (`ArrowData`): the schema before the first record
//! batch, one record batch per row batch, and the end-of-stream marker
//! before a summary (`truncate N` sends neither).
//!
//! METHOD is the RPC's name: Execute, ExecuteMany, FetchAll, FetchOne,
//! TableExists, Migrate, Health. A call that never answers waits at most
//! [`HANG`], then ends with ABORTED.
//!
//! A Transaction stream reads its command from its begin's `database`:
//! `unavailable TAG` counts the stream under `Transaction TAG` and answers
//! its commit (counted under `Commit TAG`) UNAVAILABLE; `record TAG` counts
//! both and commits. Execute is answered with one row affected; a fetch
//! with `rows N`, `miscount N` or `batch-first` as FetchAll answers them
//! (rows or Arrow); any other fetch is UNIMPLEMENTED.

use futures::{Stream, StreamExt, stream};
use iadb::arrow::{ArrowEncoder, IpcPiece};
use iadb::proto::{
    self, Column, FetchAllResponse, ResultHeader, ResultSummary, Row, RowBatch,
    database_server::{Database, DatabaseServer},
    fetch_all_response::Frame,
    value::Kind,
};
use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};
use tonic::{Request, Response, Status};

/// The longest a "never answering" call waits before giving up.
pub const HANG: Duration = Duration::from_secs(120);

/// The line the binary prints on stdout once it listens.
pub const LISTENING: &str = "iadb-fake-server listening on ";

/// Calls counted per `METHOD TAG`.
type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// The service.
#[derive(Default, Clone)]
pub struct Fake {
    counts: Counts,
}

/// What a request's text asks for.
enum Act {
    Rows(u64),
    Truncate(u64),
    Miscount(u64),
    BatchFirst,
    Hang,
    HeaderThenHang,
    Unavailable(String),
    Record(String),
    Count(String),
    Other,
}

fn parse(text: &str) -> Act {
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0);
    match words.first().copied() {
        Some("rows") => Act::Rows(n(1)),
        Some("truncate") => Act::Truncate(n(1)),
        Some("miscount") => Act::Miscount(n(1)),
        Some("batch-first") => Act::BatchFirst,
        Some("hang") => Act::Hang,
        Some("header-then-hang") => Act::HeaderThenHang,
        Some("unavailable") => Act::Unavailable(words[1..].join(" ")),
        Some("record") => Act::Record(words[1..].join(" ")),
        Some("count") => Act::Count(words[1..].join(" ")),
        _ => Act::Other,
    }
}

fn int(i: i64) -> proto::Value {
    proto::Value {
        kind: Some(Kind::Int(i)),
    }
}

fn header(name: &str) -> FetchAllResponse {
    FetchAllResponse {
        frame: Some(Frame::Header(ResultHeader {
            columns: vec![Column {
                name: name.to_owned(),
                declared_type: "INTEGER".to_owned(),
            }],
        })),
    }
}

/// Rows 1..=n in batches of 100.
fn batches(n: u64) -> Vec<FetchAllResponse> {
    let rows: Vec<Row> = (1..=n)
        .map(|i| Row {
            values: vec![int(i64::try_from(i).unwrap_or(i64::MAX))],
        })
        .collect();
    rows.chunks(100)
        .map(|chunk| FetchAllResponse {
            frame: Some(Frame::Batch(RowBatch::from_proto_rows(chunk))),
        })
        .collect()
}

fn summary(row_count: u64) -> FetchAllResponse {
    FetchAllResponse {
        frame: Some(Frame::Summary(ResultSummary {
            row_count,
            rows_affected: 0,
            execution_time_ms: 0.1,
        })),
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<FetchAllResponse, Status>> + Send>>;

fn frames(list: Vec<FetchAllResponse>) -> FrameStream {
    stream::iter(list.into_iter().map(Ok)).boxed()
}

/// `list` with its rows as Arrow IPC, as a server sends them for
/// `RESULT_FORMAT_ARROW`: each row batch becomes the record batch of its
/// rows (the schema before the first), and the end-of-stream marker comes
/// before a summary. A stream without a summary gets no end marker.
fn as_arrow(list: Vec<FetchAllResponse>) -> Vec<FetchAllResponse> {
    let columns: Arc<[iadb::Column]> = Arc::from(vec![iadb::Column::new("i", "INTEGER")]);
    let mut encoder = ArrowEncoder::new(iadb::DatabaseType::Sqlite, columns);
    let piece = |p: IpcPiece| FetchAllResponse {
        frame: Some(Frame::Arrow(proto::ArrowData {
            ipc: p.ipc,
            rows: p.rows,
        })),
    };
    let mut out = Vec::with_capacity(list.len() + 2);
    for frame in list {
        match frame.frame {
            Some(Frame::Batch(batch)) => match encoder.batch(&batch) {
                Ok(pieces) => out.extend(pieces.into_iter().map(piece)),
                Err(e) => panic!("fake server: encoding its own rows as Arrow failed: {e}"),
            },
            Some(Frame::Summary(_)) => {
                match encoder.finish() {
                    Ok(pieces) => out.extend(pieces.into_iter().map(piece)),
                    Err(e) => panic!("fake server: ending its Arrow stream failed: {e}"),
                }
                out.push(frame);
            }
            _ => out.push(frame),
        }
    }
    out
}

/// The frames of a result that `act` describes in full (`rows`,
/// `truncate`, `miscount`, `batch-first`).
fn listed(act: &Act) -> Option<Vec<FetchAllResponse>> {
    let mut list = vec![header("i")];
    match *act {
        Act::Rows(n) => {
            list.extend(batches(n));
            list.push(summary(n));
        }
        Act::Truncate(n) => list.extend(batches(n)),
        Act::Miscount(n) => {
            list.extend(batches(n));
            list.push(summary(n.saturating_add(1)));
        }
        Act::BatchFirst => {
            list = batches(1);
            list.push(header("i"));
            list.push(summary(1));
        }
        _ => return None,
    }
    Some(list)
}

impl Fake {
    /// Counts one call of `method` tagged `tag`.
    fn count(&self, method: &str, tag: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(format!("{method} {tag}")).or_default() += 1;
        }
    }

    fn counted(&self, key: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The answer of a unary call, `ok` when the command is not a failure.
    async fn unary<T>(&self, method: &str, text: &str, ok: T) -> Result<Response<T>, Status> {
        match parse(text) {
            Act::Hang | Act::HeaderThenHang => {
                tokio::time::sleep(HANG).await;
                Err(Status::aborted("fake server: gave up waiting"))
            }
            Act::Unavailable(tag) => {
                self.count(method, &tag);
                Err(Status::unavailable(
                    "fake server: the engine went away after the request arrived",
                ))
            }
            Act::Record(tag) => {
                self.count(method, &tag);
                Ok(Response::new(ok))
            }
            _ => Ok(Response::new(ok)),
        }
    }
}

#[tonic::async_trait]
impl Database for Fake {
    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let ok = proto::ExecuteResponse {
            rows_affected: 1,
            last_insert_id: None,
            execution_time_ms: 0.1,
        };
        self.unary("Execute", &request.get_ref().sql, ok).await
    }

    async fn execute_many(
        &self,
        request: Request<proto::ExecuteManyRequest>,
    ) -> Result<Response<proto::ExecuteManyResponse>, Status> {
        let ok = proto::ExecuteManyResponse {
            rows_affected: u64::try_from(request.get_ref().param_sets.len()).unwrap_or(u64::MAX),
            execution_time_ms: 0.1,
        };
        self.unary("ExecuteMany", &request.get_ref().sql, ok).await
    }

    type FetchAllStream = FrameStream;

    async fn fetch_all(
        &self,
        request: Request<proto::FetchAllRequest>,
    ) -> Result<Response<Self::FetchAllStream>, Status> {
        let arrow = request
            .get_ref()
            .options
            .as_ref()
            .is_some_and(|o| o.result_format == proto::ResultFormat::Arrow as i32);
        let frames =
            move |list: Vec<FetchAllResponse>| frames(if arrow { as_arrow(list) } else { list });
        let act = parse(&request.get_ref().sql);
        if let Some(list) = listed(&act) {
            return Ok(Response::new(frames(list)));
        }
        let frames = match act {
            Act::Hang => {
                tokio::time::sleep(HANG).await;
                return Err(Status::aborted("fake server: gave up waiting"));
            }
            Act::HeaderThenHang => frames(vec![header("i")])
                .chain(stream::once(async {
                    tokio::time::sleep(HANG).await;
                    Err(Status::aborted("fake server: gave up waiting"))
                }))
                .boxed(),
            Act::Unavailable(tag) => {
                self.count("FetchAll", &tag);
                return Err(Status::unavailable(
                    "fake server: the engine went away after the request arrived",
                ));
            }
            Act::Record(tag) => {
                self.count("FetchAll", &tag);
                let mut list = vec![header("i")];
                list.extend(batches(1));
                list.push(summary(1));
                frames(list)
            }
            // Count and Other (the listed ones were answered above).
            _ => frames(vec![header("i"), summary(0)]),
        };
        Ok(Response::new(frames))
    }

    async fn fetch_one(
        &self,
        request: Request<proto::FetchOneRequest>,
    ) -> Result<Response<proto::FetchOneResponse>, Status> {
        let text = request.get_ref().sql.clone();
        let row = match parse(&text) {
            Act::Count(key) => Some(Row {
                values: vec![int(i64::try_from(self.counted(&key)).unwrap_or(i64::MAX))],
            }),
            _ => Some(Row {
                values: vec![int(1)],
            }),
        };
        let ok = proto::FetchOneResponse {
            columns: vec![Column {
                name: "n".to_owned(),
                declared_type: "INTEGER".to_owned(),
            }],
            row,
            execution_time_ms: 0.1,
        };
        self.unary("FetchOne", &text, ok).await
    }

    async fn table_exists(
        &self,
        request: Request<proto::TableExistsRequest>,
    ) -> Result<Response<proto::TableExistsResponse>, Status> {
        let ok = proto::TableExistsResponse { exists: true };
        self.unary("TableExists", &request.get_ref().table, ok)
            .await
    }

    async fn migrate(
        &self,
        request: Request<proto::MigrateRequest>,
    ) -> Result<Response<proto::MigrateResponse>, Status> {
        let ok = proto::MigrateResponse::default();
        self.unary("Migrate", &request.get_ref().target_version, ok)
            .await
    }

    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        let ok = proto::HealthResponse {
            databases: vec![proto::DatabaseHealth {
                name: "default".to_owned(),
                engine: "fake".to_owned(),
                healthy: true,
                ..Default::default()
            }],
        };
        self.unary("Health", &request.get_ref().database, ok).await
    }

    async fn batch(
        &self,
        _request: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        Err(Status::unimplemented("the fake server has no Batch"))
    }

    type TransactionStream =
        Pin<Box<dyn Stream<Item = Result<proto::TransactionResponse, Status>> + Send>>;

    async fn transaction(
        &self,
        request: Request<tonic::Streaming<proto::TransactionRequest>>,
    ) -> Result<Response<Self::TransactionStream>, Status> {
        use proto::{transaction_request::Request as Req, transaction_response::Response as Resp};
        let mut inbound = request.into_inner();
        let (out, answers) = futures::channel::mpsc::unbounded();
        let fake = self.clone();
        tokio::spawn(async move {
            let answer = |r: Resp| {
                let _ = out.unbounded_send(Ok(proto::TransactionResponse { response: Some(r) }));
            };
            let fail = |s: Status| {
                let _ = out.unbounded_send(Err(s));
            };
            let tag = match inbound.message().await {
                Ok(Some(proto::TransactionRequest {
                    request: Some(Req::Begin(begin)),
                })) => begin.database,
                _ => return fail(Status::invalid_argument("fake server: begin first")),
            };
            let act = parse(&tag);
            if let Act::Unavailable(tag) | Act::Record(tag) = &act {
                fake.count("Transaction", tag);
            }
            answer(Resp::Begun(proto::TransactionBegun {
                database: "default".to_owned(),
                engine: "fake".to_owned(),
            }));
            while let Ok(Some(request)) = inbound.message().await {
                match request.request {
                    Some(Req::Execute(_)) => answer(Resp::Executed(proto::ExecuteResponse {
                        rows_affected: 1,
                        last_insert_id: None,
                        execution_time_ms: 0.1,
                    })),
                    Some(Req::Commit(_)) => {
                        match &act {
                            Act::Unavailable(tag) => {
                                fake.count("Commit", tag);
                                fail(Status::unavailable(
                                    "fake server: the engine went away after the commit arrived",
                                ));
                            }
                            Act::Record(tag) => {
                                fake.count("Commit", tag);
                                answer(Resp::Ended(proto::TransactionEnded {
                                    committed: true,
                                    execution_time_ms: 0.1,
                                }));
                            }
                            _ => answer(Resp::Ended(proto::TransactionEnded {
                                committed: true,
                                execution_time_ms: 0.1,
                            })),
                        }
                        return;
                    }
                    // A fetch answers as FetchAll does for `rows`,
                    // `miscount` and `batch-first` (`truncate` would leave
                    // the client waiting: the stream goes on).
                    Some(Req::Fetch(statement)) => {
                        let arrow = statement.result_format == proto::ResultFormat::Arrow as i32;
                        let act = match parse(&statement.sql) {
                            Act::Truncate(_) => Act::Other,
                            act => act,
                        };
                        let Some(list) = listed(&act) else {
                            return fail(Status::unimplemented(
                                "fake server: a transaction's fetch takes rows, miscount or \
                                 batch-first",
                            ));
                        };
                        for frame in if arrow { as_arrow(list) } else { list } {
                            answer(Resp::Fetched(frame));
                        }
                    }
                    Some(Req::Rollback(_)) => {
                        return answer(Resp::Ended(proto::TransactionEnded {
                            committed: false,
                            execution_time_ms: 0.1,
                        }));
                    }
                    _ => {
                        return fail(Status::unimplemented(
                            "fake server: a transaction only executes, commits and rolls back",
                        ));
                    }
                }
            }
        });
        Ok(Response::new(answers.boxed()))
    }
}

/// Serves the fake on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(DatabaseServer::new(Fake::default()))
        .serve_with_incoming(incoming)
        .await
}

/// A fake server: in this process, or an `iadb-fake-server` child process.
pub struct FakeServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    child: Option<Child>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeServer {
    /// Serves the fake on a port of its own in this process (inside a tokio
    /// runtime); it stops accepting when dropped (to stop a server and its
    /// connections, use the process: [`FakeServer::start`]).
    pub async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake server");
        let addr = listener.local_addr().expect("fake server address");
        let task = tokio::spawn(async move {
            let _ = serve(listener).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            addr,
            child: None,
            task: Some(task),
        }
    }

    /// Starts the `iadb-fake-server` binary (built with the tests) and waits
    /// for its address.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Like [`FakeServer::start`], listening on `addr` (to bring a server
    /// back on the port of one that was stopped).
    pub fn start_on(addr: &str) -> Self {
        let mut child = Command::new(binary())
            .args(["--listen", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iadb-fake-server (it is built with the tests)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the fake server's stdout");
        let Some(addr) = line.trim().strip_prefix(LISTENING) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the fake server did not start: {line:?}");
        };
        let addr: SocketAddr = addr.parse().expect("fake server address");
        Self {
            endpoint: format!("http://{addr}"),
            addr,
            child: Some(child),
            task: None,
        }
    }

    /// Stops the server (a process: killed, its connections closed).
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of the `iadb-fake-server` binary built with the tests.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    dir.join(format!("iadb-fake-server{}", std::env::consts::EXE_SUFFIX))
}
