//! Cloudflare D1 over its REST API (`shared/specs/d1-rest-api.md`).
//!
//! D1 is SQLite underneath, reached over HTTPS: fetches go to `/raw` (rows
//! as arrays, so column order and duplicate names survive), statements that
//! change rows go to `/query`, and `execute_many` is one `batch` request.
//! Results arrive whole; they are handed to the caller row by row.
//!
//! What this adapter promises, and why:
//!
//! - **Integers** travel as JSON numbers, which D1 reads and writes as
//!   JavaScript doubles: only ±(2^53 − 1) is exact. A parameter or result
//!   outside that range is refused with INVALID_ARGUMENT instead of being
//!   rounded, unless the URL opts in with `lossy_integers=true`.
//! - **Doubles**: JSON has no NaN or infinity, so those are refused. D1 prints
//!   an integral double (`3.0`, `-0.0`) as an integer, so it comes back as
//!   an integer: result types are inferred per value, D1 reports no declared
//!   column types.
//! - **Blobs** are arrays of byte values both ways; **booleans** are 0/1.
//! - **Limits** D1 enforces are checked before sending (100 bound
//!   parameters, 100,000-byte statements, 2,000,000-byte strings and blobs).
//! - **`execute_many`** is one `batch` request, never chunked: D1 runs a
//!   batch as one transaction (as its Worker `batch()` is documented to do),
//!   so the batch is all or nothing; chunking would break that, and D1's
//!   per-statement limits do not depend on the batch size. When a batch
//!   fails, the failing set is found by re-sending prefixes of the batch that
//!   end in a statement that always fails, so each probe rolls back.
//! - **Retries**: 429 is retried (the request was not run) honouring
//!   `retry-after` up to [`client::MAX_RETRY_AFTER`]; timeouts, lost connections and
//!   5xx are retried for reads only. 401/403 and code 7403 are never retried.
//! - The API token is sent only in the `Authorization` header (marked
//!   sensitive), and never written to a log, error message or `Debug`.

use super::{PoolSettings, check_sql};
use async_trait::async_trait;
use futures::StreamExt;
use iadb::{
    Column, ConnectionConfig, DatabaseInterface, Error, ExecuteOutcome, QueryEvent, QueryStream,
    Result, Value,
};
use serde_json::json;
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

mod client;
mod codec;
mod errors;
mod session;

use client::{D1Client, Endpoint};
use codec::{add_outcome, outcome_of, statement};
use errors::{at_set, is_statement_error};

/// The public D1 API; `base_url` (URL option) or `IADB_D1_BASE_URL` replace it.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
/// D1 stops a query after 30 s; the request gets a little more.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(35);

/// The D1 adapter.
pub struct D1Backend {
    client: Arc<D1Client>,
    connected: AtomicBool,
}

impl fmt::Debug for D1Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("D1Backend")
            .field("client", &self.client)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish()
    }
}

impl D1Backend {
    /// An adapter for `config` (a `cloudflare_d1:` URL); `connect` checks it.
    pub fn new(config: &ConnectionConfig, _settings: PoolSettings) -> Result<Self> {
        let database = config
            .host
            .as_deref()
            .ok_or_else(|| Error::invalid_argument("cloudflare_d1 URL has no database id"))?;
        let account = config
            .option("account_id")
            .ok_or_else(|| Error::invalid_argument("cloudflare_d1 URL has no account_id option"))?;
        // From the URL, or from a file named by CLOUDFLARE_API_TOKEN_FILE
        // (kept out of the environment), or from CLOUDFLARE_API_TOKEN.
        let token_file = match std::env::var_os("CLOUDFLARE_API_TOKEN_FILE") {
            Some(path) if config.option("api_token").is_none() && !path.is_empty() => Some(
                crate::secret_file::read(std::path::Path::new(&path), "the D1 API token")
                    .map_err(|e| Error::invalid_argument(e.to_string()))?,
            ),
            _ => None,
        };
        let token = config
            .option("api_token")
            .map(str::to_owned)
            .or(token_file)
            .or_else(|| std::env::var("CLOUDFLARE_API_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_argument(
                    "cloudflare_d1 needs an API token: the api_token URL option, \
                     CLOUDFLARE_API_TOKEN_FILE or CLOUDFLARE_API_TOKEN",
                )
            })?;
        let base = config
            .option("base_url")
            .map(str::to_owned)
            .or_else(|| std::env::var("IADB_D1_BASE_URL").ok())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let mut endpoint = url::Url::parse(base.trim_end_matches('/'))
            .map_err(|e| Error::invalid_argument(format!("bad D1 base_url `{base}`: {e}")))?;
        endpoint
            .path_segments_mut()
            .map_err(|()| Error::invalid_argument(format!("bad D1 base_url `{base}`")))?
            .pop_if_empty()
            .extend(["accounts", account, "d1", "database", database]);
        let timeout = match config.option("timeout_ms") {
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
                Error::invalid_argument(format!("timeout_ms must be a number, not `{ms}`"))
            })?),
            None => DEFAULT_TIMEOUT,
        };
        let lossy_integers = match config.option("lossy_integers") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::invalid_argument(format!(
                    "lossy_integers must be true or false, not `{other}`"
                )));
            }
        };
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::invalid_argument("the D1 API token has characters not allowed in a header")
            })?;
        auth.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client: Arc::new(D1Client {
                http,
                endpoint,
                token,
                lossy_integers,
            }),
            connected: AtomicBool::new(false),
        })
    }

    fn client(&self) -> Result<Arc<D1Client>> {
        if self.connected.load(Ordering::Acquire) {
            Ok(self.client.clone())
        } else {
            Err(Error::unavailable("database is not connected"))
        }
    }
}

#[async_trait]
impl DatabaseInterface for D1Backend {
    async fn connect(&self) -> Result<()> {
        self.connected.store(true, Ordering::Release);
        // A cheap query proves the token and the database id now, rather
        // than at the first caller's statement.
        if let Err(e) = self.client.raw("SELECT 1", &[]).await {
            self.connected.store(false, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    async fn disconnect(&self) -> Result<()> {
        self.connected.store(false, Ordering::Release);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<QueryStream> {
        check_sql(sql)?;
        let client = self.client()?;
        let (names, rows, outcome) = client.raw(sql, params).await?;
        let width = names.len();
        let columns: Arc<[Column]> = names.into_iter().map(|n| Column::new(n, "")).collect();
        // The rows are already here (D1 answers whole); each is decoded only
        // when the consumer pulls it.
        let events = futures::stream::iter(rows)
            .map(move |row| client.decode_row(&row, width).map(QueryEvent::Row))
            .chain(futures::stream::once(async move {
                Ok(QueryEvent::Done(outcome))
            }))
            .scan(false, |failed, event| {
                // Nothing follows an error.
                let out = if *failed { None } else { Some(event) };
                if matches!(out, Some(Err(_))) {
                    *failed = true;
                }
                futures::future::ready(out)
            });
        Ok(QueryStream {
            columns,
            events: events.boxed(),
        })
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        self.client()?.query_endpoint(sql, params).await
    }

    async fn execute_many(&self, sql: &str, param_sets: &[Vec<Value>]) -> Result<ExecuteOutcome> {
        check_sql(sql)?;
        let client = self.client()?;
        if param_sets.is_empty() {
            return Ok(ExecuteOutcome::default());
        }
        let batch = param_sets
            .iter()
            .enumerate()
            .map(|(index, params)| {
                statement(sql, params, client.lossy_integers).map_err(|e| at_set(index, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let body = json!({ "batch": batch });
        match client.send(Endpoint::Query, &body, false).await {
            Ok(items) => {
                let mut outcome = ExecuteOutcome::default();
                for item in &items {
                    add_outcome(&mut outcome, outcome_of(item));
                }
                Ok(outcome)
            }
            Err(e) if is_statement_error(&e) && batch.len() > 1 => {
                let index = client.failing_statement(&batch).await.unwrap_or(None);
                Err(match index {
                    Some(i) => at_set(i, e),
                    None => Error::new(
                        e.kind(),
                        format!("a parameter set (index unknown): {}", e.message()),
                    ),
                })
            }
            Err(e) if is_statement_error(&e) => Err(at_set(0, e)),
            Err(e) => Err(e),
        }
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        let (sql, name) = super::sqlite_table_lookup(table);
        let (_, rows, _) = self
            .client()?
            .raw(&sql, &[Value::Text(name.to_owned())])
            .await?;
        Ok(!rows.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::codec::{MAX_SAFE_INTEGER, decode_value};
    use super::*;
    use iadb::ErrorKind;
    use serde_json::Value as Json;

    // ---- property tests: whatever D1 (or something in its place) answers,
    // decoding it never panics. Fixed seed; the count of inputs is printed.

    use proptest::{
        prelude::*,
        test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
    };
    use std::{
        io::{Read, Write},
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering as AtomicOrdering},
        },
    };

    fn check<S: Strategy>(
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
    ) where
        S::Value: fmt::Debug,
    {
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let tried = AtomicU64::new(0);
        let result = runner.run(&strategy, |value| {
            tried.fetch_add(1, AtomicOrdering::Relaxed);
            test(value)
        });
        let _ = writeln!(
            std::io::stderr(),
            "property {name}: {} inputs tried",
            tried.load(AtomicOrdering::Relaxed)
        );
        if let Err(e) = result {
            panic!("property {name} failed: {e}");
        }
    }

    /// Any JSON document, nested a few levels, with byte-like arrays and
    /// numbers at the edges of the exact range.
    fn any_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-2i64..=2).prop_map(|d| json!(MAX_SAFE_INTEGER + d)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
            "\\PC{0,16}".prop_map(Json::String),
            proptest::collection::vec(0u64..300, 0..12).prop_map(|b| json!(b)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..6)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn decoding_any_json_value_never_panics() {
        check(
            "D1 value decoding",
            4096,
            (any_json(), any::<bool>()),
            |(v, lossy)| {
                match (decode_value(&v, lossy), &v) {
                    (Ok(Value::Null), Json::Null) => {}
                    (Ok(Value::Bool(b)), Json::Bool(j)) => prop_assert_eq!(b, *j),
                    (Ok(Value::Text(s)), Json::String(j)) => prop_assert_eq!(&s, j),
                    (Ok(Value::Int(i)), Json::Number(n)) => {
                        prop_assert!(n.as_i64() == Some(i) || n.as_u64() == u64::try_from(i).ok());
                    }
                    (Ok(Value::Float(_)), Json::Number(n)) => {
                        prop_assert!(n.is_f64() || (lossy && n.as_u64().is_some()));
                    }
                    (Ok(Value::Bytes(b)), Json::Array(items)) => {
                        prop_assert_eq!(b.len(), items.len());
                    }
                    (Ok(Value::Json(text)), Json::Array(_) | Json::Object(_)) => {
                        let back: Json = serde_json::from_str(&text)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(&back, &v);
                    }
                    (Err(e), Json::Number(_)) => {
                        prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument);
                        prop_assert!(!lossy, "lossy decoding refused {}", v);
                    }
                    (other, _) => {
                        return Err(TestCaseError::fail(format!("{v} decoded as {other:?}")));
                    }
                }
                // A row of it, of a right or wrong width.
                let client = D1Client {
                    http: reqwest::Client::new(),
                    endpoint: url::Url::parse("http://127.0.0.1:9/").expect("url"),
                    token: "t0k3n".into(),
                    lossy_integers: lossy,
                };
                for width in 0..3 {
                    let _ = client.decode_row(&v, width);
                    let _ = client.decode_row(&json!([v.clone(), v.clone()]), width);
                }
                Ok(())
            },
        );
    }

    /// A stand-in for D1's HTTP API on a loopback port: every request gets
    /// the answer set last (status and body), on a connection of its own.
    struct FakeD1 {
        port: u16,
        answer: std::sync::Arc<Mutex<(u16, Vec<u8>)>>,
    }

    impl FakeD1 {
        fn start() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let answer = std::sync::Arc::new(Mutex::new((200u16, b"{}".to_vec())));
            let shared = answer.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    // The request: headers, then Content-Length bytes.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let body_len = loop {
                        let Ok(n) = stream.read(&mut buf) else {
                            break None;
                        };
                        if n == 0 {
                            break None;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head =
                                String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            break Some((end + 4, len));
                        }
                    };
                    let Some((start, len)) = body_len else {
                        continue;
                    };
                    while request.len() < start + len {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = shared.lock().map(|a| a.clone()).unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
            });
            Self { port, answer }
        }

        fn answer(&self, status: u16, body: Vec<u8>) {
            if let Ok(mut a) = self.answer.lock() {
                *a = (status, body);
            }
        }
    }

    /// Bodies shaped like D1's envelope, with anything in every place, as
    /// well as any JSON and any bytes.
    fn any_body() -> impl Strategy<Value = Vec<u8>> {
        let columns = prop_oneof![
            proptest::collection::vec("[a-z]{1,4}".prop_map(Json::String), 0..4)
                .prop_map(Json::Array),
            any_json(),
        ];
        let rows = prop_oneof![
            proptest::collection::vec(
                proptest::collection::vec(any_json(), 0..4).prop_map(Json::Array),
                0..4
            )
            .prop_map(Json::Array),
            any_json(),
        ];
        let item = (
            columns,
            rows,
            any_json(),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(columns, rows, meta, success)| {
                let mut item = json!({
                    "results": { "columns": columns, "rows": rows },
                    "meta": meta,
                });
                if let Some(s) = success {
                    item["success"] = json!(s);
                    item["error"] = json!("no such table: t: SQLITE_ERROR");
                }
                item
            });
        let envelope = (
            proptest::collection::vec(item, 0..3),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any_json()),
        )
            .prop_map(|(items, success, errors)| {
                let mut e = json!({ "result": items });
                if let Some(s) = success {
                    e["success"] = json!(s);
                }
                if let Some(errors) = errors {
                    e["errors"] = errors;
                }
                e.to_string().into_bytes()
            });
        prop_oneof![
            4 => envelope,
            1 => any_json().prop_map(|j| j.to_string().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    #[test]
    fn any_d1_answer_is_a_result_or_an_error_never_a_panic() {
        let fake = FakeD1::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!(
            "cloudflare_d1://db?account_id=acc&api_token=t0k3n&timeout_ms=5000&base_url=http%3A%2F%2F127.0.0.1%3A{}",
            fake.port
        );
        let config = ConnectionConfig::from_url(&url).expect("url");
        let backend = D1Backend::new(&config, PoolSettings::default()).expect("backend");
        backend.connected.store(true, Ordering::Release);
        // Statements that write: a transient failure is not retried (no
        // sleeping between attempts).
        let sql = "INSERT INTO t (a) VALUES (?) RETURNING *";
        let status = prop_oneof![
            6 => Just(200u16),
            1 => Just(400u16),
            1 => Just(403u16),
            1 => Just(404u16),
            1 => Just(500u16),
        ];
        check(
            "D1 answer decoding",
            512,
            (status, any_body()),
            |(status, body)| {
                fake.answer(status, body);
                rt.block_on(async {
                    match backend.query(sql, &[Value::Int(1)]).await {
                        Ok(stream) => {
                            let events: Vec<_> = stream.events.collect().await;
                            prop_assert!(events.len() < 64);
                        }
                        Err(e) => prop_assert!(!e.message().contains("t0k3n")),
                    }
                    if let Err(e) = backend.execute(sql, &[Value::Int(1)]).await {
                        prop_assert!(!e.message().contains("t0k3n"));
                    }
                    let sets = vec![
                        vec![Value::Int(1)],
                        vec![Value::Int(2)],
                        vec![Value::Int(3)],
                    ];
                    if let Err(e) = backend.execute_many(sql, &sets).await {
                        prop_assert!(!e.message().contains("t0k3n"));
                    }
                    Ok(())
                })
            },
        );
    }
}
