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
//!   `retry-after` up to [`MAX_RETRY_AFTER`]; timeouts, lost connections and
//!   5xx are retried for reads only. 401/403 and code 7403 are never retried.
//! - The API token is sent only in the `Authorization` header (marked
//!   sensitive), and never written to a log, error message or `Debug`.

use super::{Backend, PoolSettings, StatementResult, check_param_count, check_sql};
use crate::{
    migrate::{MigrationSession, StoreDialect},
    placeholders::Dialect,
};
use async_trait::async_trait;
use futures::StreamExt;
use iadb::{
    Column, ConnectionConfig, DatabaseInterface, Error, ErrorKind, ExecuteOutcome, QueryEvent,
    QueryStream, Result, Value,
};
use serde_json::{Value as Json, json};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The public D1 API; `base_url` (URL option) or `IADB_D1_BASE_URL` replace it.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
/// Bound parameters D1 accepts per statement.
pub const MAX_BOUND_PARAMETERS: usize = 100;
/// Bytes D1 accepts per SQL statement.
pub const MAX_STATEMENT_BYTES: usize = 100_000;
/// Bytes D1 accepts per string or BLOB value.
pub const MAX_VALUE_BYTES: usize = 2_000_000;
/// The largest integer a JSON number carries exactly through D1 (2^53 − 1).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// A `retry-after` longer than this is not waited for: D1 blocks an
/// over-limit token for minutes, so the caller hears RESOURCE_EXHAUSTED now.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Attempts per request (the first one included).
const MAX_ATTEMPTS: u32 = 3;
/// D1 stops a query after 30 s; the request gets a little more.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(35);

/// The D1 adapter.
pub struct D1Backend {
    client: Arc<D1Client>,
    connected: AtomicBool,
}

/// What every request needs: the HTTP client and the database's endpoint.
struct D1Client {
    http: reqwest::Client,
    /// `{base}/accounts/{account}/d1/database/{id}`.
    endpoint: url::Url,
    /// Kept only to scrub it from any text that leaves the adapter.
    token: String,
    lossy_integers: bool,
}

impl fmt::Debug for D1Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("D1Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_token", &"***")
            .field("lossy_integers", &self.lossy_integers)
            .finish()
    }
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
        let token = config
            .option("api_token")
            .map(str::to_owned)
            .or_else(|| std::env::var("CLOUDFLARE_API_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_argument(
                    "cloudflare_d1 needs an API token: the api_token URL option or CLOUDFLARE_API_TOKEN",
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

/// Which endpoint a request goes to.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    /// Rows as objects, plus `meta`.
    Query,
    /// Rows as arrays with a `columns` list, plus `meta`.
    Raw,
}

/// Whether re-sending a statement cannot change data: only these are
/// retried after a timeout, a lost connection or a 5xx.
fn is_read(sql: &str) -> bool {
    let upper = sql.trim_start().to_ascii_uppercase();
    let first = upper
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    match first {
        "SELECT" | "VALUES" | "EXPLAIN" => true,
        // A CTE may end in a write; only a plain one counts as a read.
        "WITH" => !upper
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| matches!(w, "INSERT" | "UPDATE" | "DELETE" | "REPLACE")),
        _ => false,
    }
}

/// Checks D1's limits before anything is sent.
fn check_limits(sql: &str, params: &[Value]) -> Result<()> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::invalid_argument(format!(
            "the statement is {} bytes, over D1's limit of 100,000 bytes per SQL statement",
            sql.len()
        )));
    }
    if params.len() > MAX_BOUND_PARAMETERS {
        return Err(Error::invalid_argument(format!(
            "{} bound parameters, over D1's limit of 100 per statement",
            params.len()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        let len = match p {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        if len > MAX_VALUE_BYTES {
            return Err(Error::invalid_argument(format!(
                "parameter {}: {len} bytes, over D1's limit of 2,000,000 bytes per string or BLOB",
                i + 1
            )));
        }
    }
    Ok(())
}

/// A parameter as D1 reads it from JSON.
fn encode_param(i: usize, value: &Value, lossy_integers: bool) -> Result<Json> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(i64::from(*b)),
        Value::Int(n) if !lossy_integers && n.unsigned_abs() > MAX_SAFE_INTEGER as u64 => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: integer {n} is outside D1's exact range ±(2^53 − 1) (JSON numbers are doubles there); send it as text, or opt in to rounding with lossy_integers=true",
                i + 1
            )));
        }
        Value::Int(n) => json!(n),
        Value::Float(f) if f.is_nan() => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: D1's JSON API cannot carry NaN",
                i + 1
            )));
        }
        Value::Float(f) if f.is_infinite() => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: D1's JSON API cannot carry infinity",
                i + 1
            )));
        }
        Value::Float(f) => json!(f),
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::Array(b.iter().map(|byte| json!(byte)).collect()),
        Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => Json::String(t.format("%H:%M:%S%.f").to_string()),
        Value::DateTime(t) => Json::String(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        Value::TimestampTz(t) => Json::String(t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
    })
}

/// One statement of a request body, checked and encoded.
fn statement(sql: &str, params: &[Value], lossy_integers: bool) -> Result<Json> {
    check_param_count(sql, Dialect::Sqlite, params.len())?;
    check_limits(sql, params)?;
    let mut body = serde_json::Map::new();
    body.insert("sql".into(), Json::String(sql.to_owned()));
    if !params.is_empty() {
        let params = params
            .iter()
            .enumerate()
            .map(|(i, p)| encode_param(i, p, lossy_integers))
            .collect::<Result<Vec<_>>>()?;
        body.insert("params".into(), Json::Array(params));
    }
    Ok(Json::Object(body))
}

/// A result value: the kind is inferred from the JSON value (D1 reports no
/// declared types).
fn decode_value(v: &Json, lossy_integers: bool) -> Result<Value> {
    let out_of_range = |n: &dyn fmt::Display| {
        Error::invalid_argument(format!(
            "D1 returned integer {n}, outside the exact range ±(2^53 − 1) of its JSON numbers (it may have been rounded); select it as text (CAST(x AS TEXT)), or opt in with lossy_integers=true"
        ))
    };
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                if !lossy_integers && i.unsigned_abs() > MAX_SAFE_INTEGER as u64 {
                    return Err(out_of_range(&i));
                }
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                match i64::try_from(u) {
                    Ok(i) if lossy_integers => Value::Int(i),
                    _ if lossy_integers => Value::Float(u as f64),
                    _ => return Err(out_of_range(&u)),
                }
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            match bytes {
                Some(bytes) => Value::Bytes(bytes),
                None => Value::Json(v.to_string()),
            }
        }
        Json::Object(_) => Value::Json(v.to_string()),
    })
}

/// What a finished statement changed, from its optional `meta`.
fn outcome_of(item: &Json) -> ExecuteOutcome {
    let meta = item.get("meta");
    let number = |key: &str| meta.and_then(|m| m.get(key)).and_then(Json::as_i64);
    let changes = number("changes").unwrap_or(0).max(0) as u64;
    ExecuteOutcome {
        rows_affected: changes,
        last_insert_id: if changes > 0 {
            number("last_row_id")
        } else {
            None
        },
    }
}

fn add_outcome(total: &mut ExecuteOutcome, next: ExecuteOutcome) {
    total.rows_affected += next.rows_affected;
    if next.last_insert_id.is_some() {
        total.last_insert_id = next.last_insert_id;
    }
}

/// How an SQLite message (as D1 passes it on, `...: SQLITE_CONSTRAINT`)
/// maps to a kind, as the SQLite adapter maps the same errors.
fn classify_sqlite_text(message: &str) -> Option<(ErrorKind, Option<&'static str>)> {
    const CODES: &[(&str, ErrorKind)] = &[
        ("SQLITE_CONSTRAINT", ErrorKind::FailedPrecondition),
        ("SQLITE_BUSY", ErrorKind::Unavailable),
        ("SQLITE_LOCKED", ErrorKind::Unavailable),
        ("SQLITE_IOERR", ErrorKind::Unavailable),
        ("SQLITE_FULL", ErrorKind::ResourceExhausted),
        ("SQLITE_TOOBIG", ErrorKind::ResourceExhausted),
        ("SQLITE_AUTH", ErrorKind::PermissionDenied),
        ("SQLITE_READONLY", ErrorKind::PermissionDenied),
        ("SQLITE_MISMATCH", ErrorKind::InvalidArgument),
        ("SQLITE_RANGE", ErrorKind::InvalidArgument),
        ("SQLITE_ERROR", ErrorKind::InvalidArgument),
    ];
    let code = CODES.iter().find(|(name, _)| message.contains(name));
    let kind = if message.contains("UNIQUE constraint failed") {
        Some(ErrorKind::AlreadyExists)
    } else if ["NOT NULL", "CHECK", "FOREIGN KEY"]
        .iter()
        .any(|c| message.contains(&format!("{c} constraint failed")))
    {
        Some(ErrorKind::FailedPrecondition)
    } else if let Some((_, kind)) = code {
        Some(*kind)
    } else if [
        "no such table",
        "no such column",
        "syntax error",
        "incomplete input",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        Some(ErrorKind::InvalidArgument)
    } else {
        None
    };
    kind.map(|k| (k, code.map(|(name, _)| *name)))
}

/// Transient D1 messages: the statement did not run, or may not have.
fn is_transient_text(message: &str) -> bool {
    [
        "overloaded",
        "Network connection lost",
        "internal error",
        "try again",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Why a request failed, before it becomes an [`Error`].
enum Failure {
    /// Worth sending again (if the statement is safe to repeat).
    Transient(Error),
    /// Rate limited; the wait D1 asked for.
    RateLimited(Error, Option<Duration>),
    /// Final.
    Final(Error),
}

impl D1Client {
    /// Replaces the token wherever it appears (belt and braces: no message
    /// is built from it, but a proxy could echo a header back).
    fn scrub(&self, text: &str) -> String {
        if self.token.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.token, "***")
        }
    }

    fn url(&self, endpoint: Endpoint) -> url::Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(match endpoint {
                Endpoint::Query => "query",
                Endpoint::Raw => "raw",
            });
        }
        url
    }

    /// Sends `body` and returns the `result` items, retrying what may be
    /// retried. `repeatable`: the statements only read.
    async fn send(&self, endpoint: Endpoint, body: &Json, repeatable: bool) -> Result<Vec<Json>> {
        let mut attempt = 1;
        loop {
            let failure = match self.send_once(endpoint, body).await {
                Ok(items) => return Ok(items),
                Err(f) => f,
            };
            let (error, wait) = match failure {
                Failure::Final(e) => return Err(e),
                Failure::Transient(e) if !repeatable => {
                    return Err(Error::unavailable(format!(
                        "{} (not retried: the statement may change data, and may or may not have run)",
                        e.message()
                    )));
                }
                Failure::Transient(e) => {
                    let wait = Duration::from_millis(100 * 2u64.pow(attempt - 1));
                    (e, Some(wait))
                }
                Failure::RateLimited(e, wait) => match wait {
                    Some(w) if w > MAX_RETRY_AFTER => return Err(e),
                    Some(w) => (e, Some(w)),
                    None => (e, Some(Duration::from_millis(500 * u64::from(attempt)))),
                },
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(error);
            }
            let wait = wait.unwrap_or_default();
            tracing::warn!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error.message(),
                "D1 request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, endpoint: Endpoint, body: &Json) -> Result<Vec<Json>, Failure> {
        let transport = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "D1 did not answer in time"
            } else {
                "cannot reach D1"
            };
            let e = e.without_url();
            Failure::Transient(Error::unavailable(
                self.scrub(&format!("{what}: {}", error_chain(&e))),
            ))
        };
        let response = self
            .http
            .post(self.url(endpoint))
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(transport)?;
        let parsed: Option<Json> = serde_json::from_slice(&bytes).ok();

        if status.as_u16() == 429 {
            let detail = parsed
                .as_ref()
                .and_then(first_error)
                .map(|(_, m)| m)
                .unwrap_or_default();
            let wait = retry_after.map_or(String::new(), |w| {
                format!(" (retry-after {} s)", w.as_secs())
            });
            return Err(Failure::RateLimited(
                Error::new(
                    ErrorKind::ResourceExhausted,
                    self.scrub(&format!("D1 rate limit reached (HTTP 429){wait}: {detail}")),
                )
                .with_code("429"),
                retry_after,
            ));
        }
        let Some(mut envelope) = parsed else {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            let error = |kind| {
                Error::new(
                    kind,
                    self.scrub(&format!(
                        "D1 answered HTTP {status} with a body that is not JSON: {snippet:?}"
                    )),
                )
            };
            return Err(if status.is_server_error() {
                Failure::Transient(error(ErrorKind::Unavailable))
            } else if matches!(status.as_u16(), 401 | 403) {
                Failure::Final(error(ErrorKind::PermissionDenied))
            } else {
                Failure::Final(error(ErrorKind::Internal))
            });
        };
        let success = envelope.get("success").and_then(Json::as_bool);
        if status.is_success() && success != Some(false) {
            // Moved out, not copied: it holds the whole result.
            let result = envelope.get_mut("result").map(Json::take);
            return match result {
                Some(Json::Array(items)) => {
                    if let Some(failed) = items
                        .iter()
                        .find(|i| i.get("success").and_then(Json::as_bool) == Some(false))
                    {
                        let message = failed
                            .get("error")
                            .and_then(Json::as_str)
                            .unwrap_or("a statement of the batch failed")
                            .to_owned();
                        return Err(Failure::Final(self.statement_error(None, &message)));
                    }
                    Ok(items)
                }
                _ => Err(Failure::Final(Error::internal(self.scrub(&format!(
                    "D1 answered HTTP {status} without a `result` list: {}",
                    truncate(&envelope.to_string(), 200)
                ))))),
            };
        }
        let (code, message) = first_error(&envelope).unwrap_or_else(|| {
            (
                None,
                format!(
                    "D1 answered HTTP {status}: {}",
                    truncate(&envelope.to_string(), 200)
                ),
            )
        });
        let message = self.scrub(&message);
        let with_code = |e: Error| match code {
            Some(c) => e.with_code(c.to_string()),
            None => e.with_code(status.as_str().to_owned()),
        };
        if matches!(status.as_u16(), 401 | 403) || code == Some(7403) || code == Some(10000) {
            return Err(Failure::Final(with_code(Error::new(
                ErrorKind::PermissionDenied,
                format!("D1 refused the API token (HTTP {status}): {message}"),
            ))));
        }
        if matches!(status.as_u16(), 400 | 500) || code == Some(7500) {
            match classify_sqlite_text(&message) {
                Some((ErrorKind::Unavailable, _)) => {
                    return Err(Failure::Transient(self.statement_error(code, &message)));
                }
                Some(_) => return Err(Failure::Final(self.statement_error(code, &message))),
                None => {}
            }
        }
        if status.is_server_error() || is_transient_text(&message) {
            return Err(Failure::Transient(with_code(Error::unavailable(format!(
                "D1 is unavailable (HTTP {status}): {message}"
            )))));
        }
        let kind = match (status.as_u16(), code) {
            (404, _) | (_, Some(7404)) => ErrorKind::NotFound,
            _ => ErrorKind::InvalidArgument,
        };
        Err(Failure::Final(with_code(Error::new(kind, message))))
    }

    /// The error of a statement D1 ran and refused.
    fn statement_error(&self, code: Option<i64>, message: &str) -> Error {
        let (kind, sqlite_code) =
            classify_sqlite_text(message).unwrap_or((ErrorKind::InvalidArgument, None));
        let e = Error::new(kind, self.scrub(message));
        match (sqlite_code, code) {
            (Some(name), _) => e.with_code(name),
            (None, Some(c)) => e.with_code(c.to_string()),
            (None, None) => e,
        }
    }

    /// Runs one statement on `/raw`: its columns and rows, and what it changed.
    async fn raw(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<(Vec<String>, Vec<Json>, ExecuteOutcome)> {
        let body = statement(sql, params, self.lossy_integers)?;
        let items = self.send(Endpoint::Raw, &body, is_read(sql)).await?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut outcome = ExecuteOutcome::default();
        for mut item in items {
            add_outcome(&mut outcome, outcome_of(&item));
            let results = item.get_mut("results");
            let names = results
                .as_deref()
                .and_then(|r| r.get("columns"))
                .and_then(Json::as_array);
            if columns.is_none()
                && let Some(names) = names
            {
                columns = Some(
                    names
                        .iter()
                        .map(|n| n.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            Error::internal("D1 /raw answered with a column name that is not text")
                        })?,
                );
            }
            match results.and_then(|r| r.get_mut("rows")).map(Json::take) {
                Some(Json::Array(r)) => rows.extend(r),
                None | Some(Json::Null) => {}
                Some(_) => {
                    return Err(Error::internal("D1 /raw answered rows that are not a list"));
                }
            }
        }
        Ok((columns.unwrap_or_default(), rows, outcome))
    }

    /// Runs one statement (or, without parameters, a script) on `/query`.
    async fn query_endpoint(&self, sql: &str, params: &[Value]) -> Result<ExecuteOutcome> {
        let body = statement(sql, params, self.lossy_integers)?;
        let items = self.send(Endpoint::Query, &body, is_read(sql)).await?;
        let mut outcome = ExecuteOutcome::default();
        for item in &items {
            add_outcome(&mut outcome, outcome_of(item));
        }
        Ok(outcome)
    }

    /// A row of `/raw` as values.
    fn decode_row(&self, row: &Json, width: usize) -> Result<Vec<Value>> {
        let cells = row
            .as_array()
            .ok_or_else(|| Error::internal("D1 /raw answered a row that is not a list"))?;
        if cells.len() != width {
            return Err(Error::internal(format!(
                "D1 /raw answered a row of {} values for {width} columns",
                cells.len()
            )));
        }
        cells
            .iter()
            .map(|c| decode_value(c, self.lossy_integers))
            .collect()
    }
}

/// The first `errors` entry of an envelope: code and message.
fn first_error(envelope: &Json) -> Option<(Option<i64>, String)> {
    let first = envelope.get("errors")?.as_array()?.first()?;
    let code = first.get("code").and_then(Json::as_i64);
    let message = first
        .get("message")
        .and_then(Json::as_str)
        .map_or_else(|| first.to_string(), str::to_owned);
    Some((code, message))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// An error with its causes, `a: b: c` (reqwest's own text stops at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
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

/// Whether D1 ran the statements and refused one (as opposed to not
/// reaching D1, or refusing the request as a whole).
fn is_statement_error(e: &Error) -> bool {
    e.code().is_some_and(|c| c.starts_with("SQLITE_"))
        || matches!(
            e.kind(),
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition
        )
}

fn at_set(index: usize, e: Error) -> Error {
    e.in_context(format_args!("parameter set {index}"))
}

impl D1Client {
    /// Finds which statement of a failed (and rolled back) batch fails, by
    /// sending prefixes that end in a statement that always fails: each probe
    /// rolls back, and its error says whether the prefix itself failed.
    async fn failing_statement(&self, batch: &[Json]) -> Result<Option<usize>> {
        let sentinel = format!("iadb_probe_{}", std::process::id());
        let probe = json!({ "sql": format!("SELECT * FROM \"{sentinel}\"") });
        // Invariant: the first `ok` statements succeed, the first `bad` fail.
        let (mut ok, mut bad) = (0usize, batch.len());
        while bad - ok > 1 {
            let mid = ok + (bad - ok) / 2;
            let mut prefix = batch[..mid].to_vec();
            prefix.push(probe.clone());
            match self
                .send(Endpoint::Query, &json!({ "batch": prefix }), false)
                .await
            {
                Err(e) if e.message().contains(&sentinel) => ok = mid,
                Err(e) if is_statement_error(&e) => bad = mid,
                // The probe should never succeed; stop guessing if it does.
                Ok(_) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(bad - 1))
    }
}

/// A migration run on D1: every call is one HTTP request (D1 has no
/// sessions over REST), so the lease-row lock is what serialises runners.
pub struct D1Session(Arc<D1Client>);

#[async_trait]
impl MigrationSession for D1Session {
    fn dialect(&self) -> StoreDialect {
        StoreDialect::D1
    }

    async fn run_script(&mut self, sql: &str) -> Result<()> {
        check_sql(sql)?;
        self.0.query_endpoint(sql, &[]).await.map(|_| ())
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        Ok(self.0.query_endpoint(sql, params).await?.rows_affected)
    }

    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let (columns, rows, _) = self.0.raw(sql, params).await?;
        rows.iter()
            .map(|r| self.0.decode_row(r, columns.len()))
            .collect()
    }
}

#[async_trait]
impl Backend for D1Backend {
    async fn migration_session(&self) -> Result<Box<dyn MigrationSession>> {
        Ok(Box::new(D1Session(self.client()?)))
    }

    /// One `/raw` request with a `batch` of statements, which D1 runs as
    /// one transaction (its Worker `batch()` is documented to; the REST
    /// endpoint runs the same code). Each statement must be exactly one
    /// statement, so that D1's answers (one per statement) line up with
    /// the request's. D1 has no read-only transactions: a read-only batch
    /// is refused unless every statement is a read.
    async fn batch(
        &self,
        statements: &[(String, Vec<Value>)],
        read_only: bool,
        result_limit: usize,
    ) -> Result<Vec<StatementResult>> {
        let client = self.client()?;
        let at = |index: usize, e: Error| e.in_context(format_args!("statement {index}"));
        let mut batch = Vec::with_capacity(statements.len());
        for (index, (sql, params)) in statements.iter().enumerate() {
            check_sql(sql).map_err(|e| at(index, e))?;
            let count = crate::placeholders::statement_shape(sql, Dialect::Sqlite).statements;
            if count != 1 {
                return Err(at(
                    index,
                    Error::invalid_argument(format!(
                        "a D1 batch takes one statement per entry (D1 answers per statement), \
                         and this SQL holds {count}"
                    )),
                ));
            }
            if read_only && !is_read(sql) {
                return Err(at(
                    index,
                    Error::new(
                        ErrorKind::FailedPrecondition,
                        "D1 has no read-only transactions, and this statement is not a read \
                         (SELECT, WITH ... SELECT, EXPLAIN, or a PRAGMA that only reads)",
                    ),
                ));
            }
            batch.push(statement(sql, params, client.lossy_integers).map_err(|e| at(index, e))?);
        }
        let reads_only = statements.iter().all(|(sql, _)| is_read(sql));
        let items = match client
            .send(Endpoint::Raw, &json!({ "batch": batch }), reads_only)
            .await
        {
            Ok(items) => items,
            Err(e) if is_statement_error(&e) && batch.len() > 1 => {
                let index = client.failing_statement(&batch).await.unwrap_or(None);
                return Err(match index {
                    Some(i) => at(i, e),
                    None => e.in_context("a statement of the batch (index unknown)"),
                });
            }
            Err(e) if is_statement_error(&e) => return Err(at(0, e)),
            Err(e) => return Err(e),
        };
        if items.len() != statements.len() {
            return Err(Error::internal(format!(
                "D1 answered {} results for a batch of {} statements",
                items.len(),
                statements.len()
            )));
        }
        let mut budget = result_limit;
        let mut results = Vec::with_capacity(items.len());
        for (index, mut item) in items.into_iter().enumerate() {
            let outcome = outcome_of(&item);
            let results_of = item.get_mut("results");
            let names: Vec<String> = results_of
                .as_deref()
                .and_then(|r| r.get("columns"))
                .and_then(Json::as_array)
                .map(|names| {
                    names
                        .iter()
                        .map(|n| n.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .unwrap_or(Some(Vec::new()))
                .ok_or_else(|| {
                    Error::internal("D1 /raw answered with a column name that is not text")
                })?;
            let raw_rows = match results_of.and_then(|r| r.get_mut("rows")).map(Json::take) {
                Some(Json::Array(r)) => r,
                None | Some(Json::Null) => Vec::new(),
                Some(_) => {
                    return Err(Error::internal("D1 /raw answered rows that are not a list"));
                }
            };
            let mut rows = Vec::with_capacity(raw_rows.len());
            for row in &raw_rows {
                let values = client
                    .decode_row(row, names.len())
                    .map_err(|e| at(index, e))?;
                let bytes = values.iter().map(Value::encoded_len_hint).sum::<usize>() + 2;
                budget = budget.checked_sub(bytes).ok_or_else(|| {
                    Error::new(
                        ErrorKind::ResourceExhausted,
                        format!(
                            "the rows of the batch exceed the result limit of {result_limit} \
                             bytes (--max-batch-result-bytes); the batch was committed"
                        ),
                    )
                })?;
                rows.push(values);
            }
            results.push(StatementResult {
                outcome,
                columns: names.into_iter().map(|n| Column::new(n, "")).collect(),
                rows,
            });
        }
        Ok(results)
    }

    async fn session(&self) -> Result<Box<dyn super::session::Session>> {
        Err(super::session::no_sessions(
            iadb::DatabaseType::CloudflareD1,
            "D1's REST API has no sessions (each request stands alone); use Batch, which \
             D1 runs as one transaction",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_recognised() {
        assert!(is_read("  select 1"));
        assert!(is_read("WITH c AS (SELECT 1) SELECT * FROM c"));
        assert!(!is_read(
            "WITH c AS (SELECT 1) INSERT INTO t SELECT * FROM c"
        ));
        assert!(!is_read("INSERT INTO t VALUES (1)"));
    }

    #[test]
    fn sqlite_texts_map_like_the_sqlite_adapter() {
        let kind = |m| classify_sqlite_text(m).map(|(k, _)| k);
        assert_eq!(
            kind("UNIQUE constraint failed: t.id: SQLITE_CONSTRAINT"),
            Some(ErrorKind::AlreadyExists)
        );
        assert_eq!(
            kind("NOT NULL constraint failed: t.name: SQLITE_CONSTRAINT"),
            Some(ErrorKind::FailedPrecondition)
        );
        assert_eq!(
            kind("no such table: foo: SQLITE_ERROR"),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(
            kind("incomplete input: SQLITE_ERROR"),
            Some(ErrorKind::InvalidArgument)
        );
        assert_eq!(kind("internal error; reference = abc"), None);
    }

    #[test]
    fn integers_outside_the_safe_range_are_refused() {
        assert!(encode_param(0, &Value::Int(MAX_SAFE_INTEGER), false).is_ok());
        let e = encode_param(0, &Value::Int(MAX_SAFE_INTEGER + 1), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(encode_param(0, &Value::Int(i64::MIN), true).is_ok());
        let back = decode_value(&json!(9_223_372_036_854_776_000u64), false).unwrap_err();
        assert_eq!(back.kind(), ErrorKind::InvalidArgument);
    }

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
