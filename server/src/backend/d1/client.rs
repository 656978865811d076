//! The HTTP client: requests to D1's endpoints, and their retries.

use super::{
    codec::{add_outcome, outcome_of, statement},
    errors::{classify_sqlite_text, is_statement_error, is_transient_text},
};
use iadb::{Error, ErrorKind, ExecuteOutcome, Result, Value};
use serde_json::{Value as Json, json};
use std::{fmt, time::Duration};

/// A `retry-after` longer than this is not waited for: D1 blocks an
/// over-limit token for minutes, so the caller hears RESOURCE_EXHAUSTED now.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Attempts per request (the first one included).
const MAX_ATTEMPTS: u32 = 3;

/// What every request needs: the HTTP client and the database's endpoint.
pub(super) struct D1Client {
    pub(super) http: reqwest::Client,
    /// `{base}/accounts/{account}/d1/database/{id}`.
    pub(super) endpoint: url::Url,
    /// Kept only to scrub it from any text that leaves the adapter.
    pub(super) token: String,
    pub(super) lossy_integers: bool,
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

/// Which endpoint a request goes to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint {
    /// Rows as objects, plus `meta`.
    Query,
    /// Rows as arrays with a `columns` list, plus `meta`.
    Raw,
}

/// Whether re-sending a statement cannot change data: only these are
/// retried after a timeout, a lost connection or a 5xx.
pub(super) fn is_read(sql: &str) -> bool {
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
    pub(super) fn scrub(&self, text: &str) -> String {
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
    pub(super) async fn send(
        &self,
        endpoint: Endpoint,
        body: &Json,
        repeatable: bool,
    ) -> Result<Vec<Json>> {
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

    /// Runs one statement on `/raw`: its columns and rows, and what it changed.
    pub(super) async fn raw(
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
    pub(super) async fn query_endpoint(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecuteOutcome> {
        let body = statement(sql, params, self.lossy_integers)?;
        let items = self.send(Endpoint::Query, &body, is_read(sql)).await?;
        let mut outcome = ExecuteOutcome::default();
        for item in &items {
            add_outcome(&mut outcome, outcome_of(item));
        }
        Ok(outcome)
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

impl D1Client {
    /// Finds which statement of a failed (and rolled back) batch fails, by
    /// sending prefixes that end in a statement that always fails: each probe
    /// rolls back, and its error says whether the prefix itself failed.
    pub(super) async fn failing_statement(&self, batch: &[Json]) -> Result<Option<usize>> {
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
}
