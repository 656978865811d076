//! A local stand-in for the Cloudflare D1 REST API (`shared/specs/d1-rest-api.md`),
//! backed by SQLite, for testing the D1 adapter where Cloudflare cannot be
//! reached.
//!
//! It serves `POST .../query`, `POST .../raw`, the list and the get
//! endpoints under `/client/v4`, checks the bearer token and the account,
//! answers with the documented envelopes, and records every request so tests
//! can assert what the adapter sent. Where D1 runs JavaScript, the fake
//! behaves like it: numbers are doubles both ways (integers beyond 2^53 − 1
//! are rounded, an integral double prints as an integer, NaN and infinity as
//! `null`), a `batch` is one transaction, and `BEGIN`/`COMMIT` in SQL are
//! refused. Faults (a status with any body, 429 with `retry-after`, a slow
//! answer, a connection dropped mid-answer) are queued per request.

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use rusqlite::{Connection, types::ValueRef};
use serde_json::{Value as Json, json};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Every header, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or(Json::Null)
    }
}

/// What `result` holds in an error envelope: D1 has been seen sending each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorResult {
    /// `"result": null`.
    Null,
    /// `"result": []`.
    EmptyList,
    /// No `result` key.
    Absent,
}

/// A fault for the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, body and `retry-after` without running anything.
    Respond {
        /// HTTP status.
        status: u16,
        /// Body, sent as is.
        body: String,
        /// `retry-after` header, seconds.
        retry_after: Option<u64>,
    },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Send the status line and headers, then close the connection mid-body.
    DropConnection,
}

impl Fault {
    /// 429 with D1's body and a `retry-after` of `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Fault::Respond {
            status: 429,
            body: json!({"success": false, "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}], "messages": [], "result": null}).to_string(),
            retry_after: Some(secs),
        }
    }

    /// `status` with a JSON body of D1's error shape.
    pub fn error(status: u16, code: i64, message: &str) -> Self {
        Fault::Respond {
            status,
            body: json!({"result": null, "success": false, "errors": [{"code": code, "message": message}], "messages": []}).to_string(),
            retry_after: None,
        }
    }

    /// `status` with `body` as is (HTML, truncated JSON, another shape, ...).
    pub fn body(status: u16, body: &str) -> Self {
        Fault::Respond {
            status,
            body: body.to_owned(),
            retry_after: None,
        }
    }
}

struct FakeState {
    db: Mutex<Connection>,
    token: String,
    account_id: String,
    database_id: String,
    faults: Mutex<VecDeque<Fault>>,
    error_result: Mutex<ErrorResult>,
    sql_error_status: Mutex<u16>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running fake D1 API on 127.0.0.1; stops when dropped.
pub struct D1Fake {
    /// `http://127.0.0.1:PORT/client/v4`, the adapter's `base_url`.
    pub base_url: String,
    /// The account the fake accepts.
    pub account_id: String,
    /// The one database it serves.
    pub database_id: String,
    /// The token it accepts.
    pub token: String,
    state: Arc<FakeState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl D1Fake {
    /// Starts a fake with an empty database, on a thread (and runtime) of
    /// its own, so it outlives any one test's runtime.
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let account_id = format!("acc{:08x}", std::process::id());
        let database_id = format!("db-{}-{n}", std::process::id());
        let token = format!("fake-d1-token-{}-{n}-s3cr3t", std::process::id());
        let conn = Connection::open_in_memory().expect("in-memory SQLite");
        conn.execute_batch("PRAGMA foreign_keys = ON")
            .expect("foreign keys");
        let state = Arc::new(FakeState {
            db: Mutex::new(conn),
            token: token.clone(),
            account_id: account_id.clone(),
            database_id: database_id.clone(),
            faults: Mutex::new(VecDeque::new()),
            error_result: Mutex::new(ErrorResult::Null),
            sql_error_status: Mutex::new(400),
            requests: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake D1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(100 * 1024 * 1024))
            .with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake D1 runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("fake D1 listener");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop => {}
                }
            });
            runtime.shutdown_background();
        });
        Self {
            base_url: format!("http://127.0.0.1:{port}/client/v4"),
            account_id,
            database_id,
            token,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// A `cloudflare_d1://` URL for this fake, the token in the URL.
    pub fn url(&self) -> String {
        format!("{}&api_token={}", self.url_without_token(), self.token)
    }

    /// A `cloudflare_d1://` URL without the token (it comes from the
    /// environment then).
    pub fn url_without_token(&self) -> String {
        format!(
            "cloudflare_d1://{}?account_id={}&base_url={}",
            self.database_id,
            self.account_id,
            url_encode(&self.base_url)
        )
    }

    /// Queues a fault for the next request (faults apply in order, one per request).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// What `result` holds in error envelopes from now on.
    pub fn set_error_result(&self, result: ErrorResult) {
        *lock(&self.state.error_result) = result;
    }

    /// The status of SQL errors (400 today; 500 before April 2024).
    pub fn set_sql_error_status(&self, status: u16) {
        *lock(&self.state.sql_error_status) = status;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

impl Drop for D1Fake {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn envelope(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_envelope(state: &FakeState, status: u16, code: i64, message: &str) -> Response {
    let mut body = json!({
        "success": false,
        "errors": [{"code": code, "message": message}],
        "messages": [],
    });
    match *lock(&state.error_result) {
        ErrorResult::Null => body["result"] = Json::Null,
        ErrorResult::EmptyList => body["result"] = json!([]),
        ErrorResult::Absent => {}
    }
    envelope(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body,
    )
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state.requests).push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let fault = lock(&state.faults).pop_front();
    match fault {
        Some(Fault::Respond {
            status,
            body,
            retry_after,
        }) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
                .into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    secs.to_string().parse().expect("digits"),
                );
            }
            return response;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::DropConnection) => {
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "connection dropped by the fake",
                ))
            });
            return (StatusCode::OK, Body::from_stream(broken)).into_response();
        }
        None => {}
    }

    let expected = format!("Bearer {}", state.token);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return error_envelope(&state, 401, 10000, "Authentication error");
    }
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        [
            "client",
            "v4",
            "accounts",
            account,
            "d1",
            "database",
            rest @ ..,
        ] => {
            if *account != state.account_id {
                return error_envelope(
                    &state,
                    403,
                    7403,
                    "The given account is not valid or is not authorized to access this service",
                );
            }
            rest.to_vec()
        }
        _ => return error_envelope(&state, 404, 7000, "No route for that URI"),
    };
    match (method.as_str(), rest.as_slice()) {
        ("GET", []) => list(&state, uri.query().unwrap_or("")),
        ("GET", [id]) if *id == state.database_id => envelope(
            StatusCode::OK,
            json!({"result": database_info(&state), "success": true, "errors": [], "messages": []}),
        ),
        ("POST", [id, endpoint @ ("query" | "raw")]) if *id == state.database_id => {
            let raw = *endpoint == "raw";
            let Ok(request) = serde_json::from_slice::<Json>(&body) else {
                return error_envelope(&state, 400, 7400, "Malformed JSON in request body");
            };
            let worker = state.clone();
            let ran = tokio::task::spawn_blocking(move || run_request(&worker, &request, raw))
                .await
                .unwrap_or_else(|e| Err((7500, format!("internal error; reference = {e}"))));
            match ran {
                Ok(items) => envelope(
                    StatusCode::OK,
                    json!({"result": items, "success": true, "errors": [], "messages": []}),
                ),
                Err((7400, message)) => error_envelope(&state, 400, 7400, &message),
                Err((code, message)) => {
                    let status = *lock(&state.sql_error_status);
                    error_envelope(&state, status, code, &message)
                }
            }
        }
        (_, [id, ..]) if *id != state.database_id => error_envelope(
            &state,
            404,
            7404,
            &format!("The database {id} could not be found"),
        ),
        _ => error_envelope(&state, 405, 7001, "Method not allowed for this route"),
    }
}

fn database_info(state: &FakeState) -> Json {
    let tables: i64 = lock(&state.db)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    json!({
        "uuid": state.database_id,
        "name": "iadb-fake",
        "created_at": "2024-01-01T00:00:00.000Z",
        "version": "production",
        "num_tables": tables,
        "file_size": 12288,
    })
}

fn list(state: &FakeState, query: &str) -> Response {
    let name = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("name="))
        .unwrap_or("");
    let info = database_info(state);
    let items: Vec<Json> = if name.is_empty() || name == "iadb-fake" {
        vec![info]
    } else {
        vec![]
    };
    let count = items.len();
    envelope(
        StatusCode::OK,
        json!({
            "result": items, "success": true, "errors": [], "messages": [],
            "result_info": {"page": 1, "per_page": 20, "count": count, "total_count": count},
        }),
    )
}

type RunError = (i64, String);

/// Runs a `{sql, params}` or `{batch: [...]}` body; a batch is one transaction.
fn run_request(state: &FakeState, request: &Json, raw: bool) -> Result<Vec<Json>, RunError> {
    let conn = lock(&state.db);
    if let Some(batch) = request.get("batch") {
        let statements = batch
            .as_array()
            .ok_or((7400, "batch must be a list".to_owned()))?;
        conn.execute_batch("BEGIN").map_err(sqlite_error)?;
        let mut items = Vec::new();
        for s in statements {
            match run_statement(&conn, s, raw) {
                Ok(mut more) => items.append(&mut more),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        conn.execute_batch("COMMIT").map_err(sqlite_error)?;
        Ok(items)
    } else {
        run_statement(&conn, request, raw)
    }
}

/// Runs one `{sql, params}`: every statement of `sql` yields one item.
fn run_statement(conn: &Connection, body: &Json, raw: bool) -> Result<Vec<Json>, RunError> {
    let sql = body
        .get("sql")
        .and_then(Json::as_str)
        .ok_or((7400, "sql is required".to_owned()))?;
    let params = match body.get("params") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(p)) => p.iter().map(to_sqlite).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err((7400, "params must be a list".to_owned())),
    };
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut items = Vec::new();
    let mut last_count = 0;
    while let Some(mut stmt) = batch.next().map_err(sqlite_error)? {
        if starts_transaction(&stmt.expanded_sql().unwrap_or_default()) {
            return Err((
                7500,
                "To execute a transaction, please use the batch API instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements: SQLITE_AUTH".to_owned(),
            ));
        }
        let n = stmt.parameter_count();
        last_count = n;
        if params.len() < n {
            return Err((
                7500,
                format!(
                    "Wrong number of parameter bindings for SQL query (expected {n}, got {}): SQLITE_RANGE",
                    params.len()
                ),
            ));
        }
        for (i, p) in params.iter().take(n).enumerate() {
            stmt.raw_bind_parameter(i + 1, p).map_err(sqlite_error)?;
        }
        let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
        let read_only = stmt.readonly();
        let mut rows_out = Vec::new();
        {
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(sqlite_error)? {
                let mut values = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    values.push(to_json(row.get_ref(i).map_err(sqlite_error)?));
                }
                rows_out.push(values);
            }
        }
        let changes = if read_only { 0 } else { conn.changes() };
        let rows_read = rows_out.len();
        let results = if raw {
            json!({"columns": columns, "rows": rows_out})
        } else {
            Json::Array(
                rows_out
                    .into_iter()
                    .map(|values| {
                        // Objects lose order and duplicate names, as D1's do.
                        Json::Object(columns.iter().cloned().zip(values).collect())
                    })
                    .collect(),
            )
        };
        items.push(json!({
            "results": results,
            "success": true,
            "meta": {
                "served_by": "v3-fake", "served_by_region": "LOCAL", "served_by_colo": "LCL",
                "served_by_primary": true, "timings": {"sql_duration_ms": 0.1},
                "duration": 0.1, "changes": changes, "last_row_id": conn.last_insert_rowid(),
                "changed_db": changes > 0, "size_after": 12288, "rows_read": rows_read,
                "rows_written": changes, "total_attempts": 1,
            },
        }));
    }
    if items.len() == 1 && params.len() != last_count {
        return Err((
            7500,
            format!(
                "Wrong number of parameter bindings for SQL query (expected {last_count}, got {}): SQLITE_RANGE",
                params.len()
            ),
        ));
    }
    if items.is_empty() {
        return Err((7500, "No SQL statements detected.: SQLITE_ERROR".to_owned()));
    }
    Ok(items)
}

fn starts_transaction(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE"
    )
}

/// SQLite's error as D1 words it: the message, then the primary code's name.
fn sqlite_error(e: rusqlite::Error) -> RunError {
    let (message, code) = match &e {
        rusqlite::Error::SqliteFailure(err, msg) => (
            msg.clone().unwrap_or_else(|| err.to_string()),
            err.extended_code & 0xff,
        ),
        other => (other.to_string(), 1),
    };
    let name = match code {
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        13 => "SQLITE_FULL",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        23 => "SQLITE_AUTH",
        25 => "SQLITE_RANGE",
        _ => "SQLITE_ERROR",
    };
    (7500, format!("{message}: {name}"))
}

/// A JSON parameter as D1's JavaScript binds it: numbers are doubles (an
/// integral one within 2^53 binds as an integer), arrays of bytes are BLOBs.
fn to_sqlite(v: &Json) -> Result<rusqlite::types::Value, RunError> {
    use rusqlite::types::Value as V;
    Ok(match v {
        Json::Null => V::Null,
        Json::Bool(b) => V::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= MAX_SAFE_INTEGER as u64 => V::Integer(i),
            _ => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 {
                    V::Integer(f as i64)
                } else {
                    V::Real(f)
                }
            }
        },
        Json::String(s) => V::Text(s.clone()),
        Json::Array(items) => V::Blob(
            items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or((7400, "a parameter list must hold byte values".to_owned()))?,
        ),
        Json::Object(_) => return Err((7400, "a parameter may not be an object".to_owned())),
    })
}

/// A result value as D1's JavaScript prints it.
fn to_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) if i.unsigned_abs() <= MAX_SAFE_INTEGER as u64 => json!(i),
        ValueRef::Integer(i) => js_number(i as f64),
        ValueRef::Real(f) => js_number(f),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Json::Array(b.iter().map(|x| json!(x)).collect()),
    }
}

/// `JSON.stringify` of a number: integral values below 1e21 print as
/// integers (-0 as 0), NaN and the infinities as null.
fn js_number(f: f64) -> Json {
    if !f.is_finite() {
        return Json::Null;
    }
    if f == 0.0 {
        return json!(0);
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        // Rust prints the shortest round-trip digits, padded with zeros,
        // as JavaScript does.
        return serde_json::from_str(&format!("{f}")).unwrap_or(Json::Null);
    }
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(js_number(-0.0).to_string(), "0");
        assert_eq!(js_number(3.0).to_string(), "3");
        assert_eq!(
            js_number(i64::MAX as f64).to_string(),
            "9223372036854776000"
        );
        assert_eq!(js_number(0.1).to_string(), "0.1");
        assert_eq!(js_number(f64::INFINITY), Json::Null);
    }
}
