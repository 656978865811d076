//! Prometheus metrics, served as OpenMetrics text at `GET /metrics` on a
//! listener of their own (`--metrics-listen`), apart from the gRPC port.
//!
//! Families (all prefixed `iadb_`):
//! - `requests_total{rpc, database, code}`: finished calls by gRPC code name;
//! - `token_calls_total{token, rpc, code}`: with `--tokens-file`, calls by
//!   token name (the names come from the file; a missing or unknown token
//!   counts as `(unauthenticated)`);
//! - `request_duration_seconds{rpc, database}`: call latency (for FetchAll,
//!   until the last row was sent);
//! - `rows_streamed_total{database}`: rows sent by FetchAll and FetchOne;
//! - `pool_connections{database}`, `pool_idle_connections{database}`,
//!   `pool_max_connections{database}`, `pool_waiting{database}`,
//!   `pool_transactions_rolled_back{database}` (connections found inside a
//!   transaction and rolled back before reuse): read from the pools at
//!   scrape time;
//! - `database_up{database}`: 1 while the background health check passes;
//! - `transactions_open{database}`: Transaction streams open now;
//! - `transaction_duration_seconds{database}`: from begin to the end;
//! - `transactions_ended_total{database, outcome}`: `committed`, or the
//!   cause of a rollback: `client` (asked for), `error` (a statement or the
//!   commit failed), `stream_ended` (the stream ended or broke without a
//!   commit), `deadline`, `idle_timeout`, `max_life`, `protocol` (a request
//!   out of turn).
//!
//! The `database` label is only ever a configured name (unknown names count
//! as `(unknown)`; a Health call about every database as `(all)`), so a
//! caller cannot grow the label sets without bound.

use crate::registry::Registry as Databases;
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use iadb::ErrorKind;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;

/// The label value for a database name that is not configured.
pub const UNKNOWN_DATABASE: &str = "(unknown)";
/// The label value of a Health call about every database.
pub const ALL_DATABASES: &str = "(all)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    database: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenCallLabels {
    token: String,
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    rpc: &'static str,
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    database: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    database: String,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// The server's metrics. Cheap to clone; every clone records into the same
/// families.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<CallLabels, Counter>,
    token_calls: Family<TokenCallLabels, Counter>,
    latency: HistogramFamily,
    rows: Family<DatabaseLabel, Counter>,
    pool_size: Family<DatabaseLabel, Gauge>,
    pool_idle: Family<DatabaseLabel, Gauge>,
    pool_max: Family<DatabaseLabel, Gauge>,
    pool_waiting: Family<DatabaseLabel, Gauge>,
    pool_rolled_back: Family<DatabaseLabel, Gauge>,
    up: Family<DatabaseLabel, Gauge>,
    transactions_open: Family<DatabaseLabel, Gauge>,
    transaction_duration: Family<DatabaseLabel, Histogram, fn() -> Histogram>,
    transactions_ended: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty families, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iadb");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "requests",
            "Finished calls by RPC, database and gRPC status code",
            requests.clone(),
        );
        let token_calls = Family::<TokenCallLabels, Counter>::default();
        registry.register(
            "token_calls",
            "Calls to iadb.v1.Database by token name, RPC and gRPC status code \
             (with --tokens-file; refused tokens count as (unauthenticated))",
            token_calls.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Call latency by RPC and database (FetchAll: until the last row was sent)",
            Unit::Seconds,
            latency.clone(),
        );
        let rows = Family::<DatabaseLabel, Counter>::default();
        registry.register(
            "rows_streamed",
            "Rows sent to callers by FetchAll and FetchOne",
            rows.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<DatabaseLabel, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let pool_size = gauge(&mut registry, "pool_connections", "Connections open");
        let pool_idle = gauge(
            &mut registry,
            "pool_idle_connections",
            "Open connections that are idle",
        );
        let pool_max = gauge(
            &mut registry,
            "pool_max_connections",
            "The most connections the pool opens",
        );
        let pool_waiting = gauge(
            &mut registry,
            "pool_waiting",
            "Calls waiting for a free connection",
        );
        let pool_rolled_back = gauge(
            &mut registry,
            "pool_transactions_rolled_back",
            "Pooled connections found inside a transaction and rolled back since start (a bug to report)",
        );
        let up = gauge(
            &mut registry,
            "database_up",
            "1 while the background health check of the database passes",
        );
        let transactions_open = gauge(
            &mut registry,
            "transactions_open",
            "Transaction streams open now",
        );
        let transaction_duration: Family<DatabaseLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "transaction_duration",
            "Transactions from begin to their end",
            Unit::Seconds,
            transaction_duration.clone(),
        );
        let transactions_ended = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "transactions_ended",
            "Transactions ended, by outcome: committed, or the cause of the rollback",
            transactions_ended.clone(),
        );
        Self {
            registry: Arc::new(registry),
            transactions_open,
            transaction_duration,
            transactions_ended,
            requests,
            token_calls,
            latency,
            rows,
            pool_size,
            pool_idle,
            pool_max,
            pool_waiting,
            pool_rolled_back,
            up,
        }
    }

    /// Records one finished call.
    pub fn record_call(
        &self,
        rpc: &'static str,
        database: &str,
        code: Option<ErrorKind>,
        elapsed: Duration,
    ) {
        let code = code.map_or(tonic::Code::Ok, tonic::Code::from);
        self.record_call_code(rpc, database, code, elapsed);
    }

    /// Records one finished call by its gRPC status code (the call layer
    /// reads it off the response's end).
    pub fn record_call_code(
        &self,
        rpc: &'static str,
        database: &str,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&CallLabels {
                rpc,
                database: database.to_owned(),
                code: grpc_code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                rpc,
                database: database.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one call to `iadb.v1.Database` by a token (by its name;
    /// never the token), as the auth layer saw it end.
    pub fn record_token_call(&self, token: &str, rpc: &'static str, code: tonic::Code) {
        self.token_calls
            .get_or_create(&TokenCallLabels {
                token: token.to_owned(),
                rpc,
                code: grpc_code_name(code),
            })
            .inc();
    }

    /// Counts `n` rows sent from `database`.
    pub fn add_rows(&self, database: &str, n: u64) {
        if n > 0 {
            self.rows
                .get_or_create(&DatabaseLabel {
                    database: database.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Counts a transaction that began on `database`.
    pub fn transaction_opened(&self, database: &str) {
        self.transactions_open
            .get_or_create(&DatabaseLabel {
                database: database.to_owned(),
            })
            .inc();
    }

    /// Records the end of a transaction on `database` that lasted
    /// `elapsed`: `committed` or the cause of its rollback.
    pub fn transaction_ended(&self, database: &str, outcome: &'static str, elapsed: Duration) {
        let label = DatabaseLabel {
            database: database.to_owned(),
        };
        self.transactions_open.get_or_create(&label).dec();
        self.transaction_duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        self.transactions_ended
            .get_or_create(&OutcomeLabels {
                database: database.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Sets whether `database` passed its last health check.
    pub fn set_up(&self, database: &str, up: bool) {
        self.up
            .get_or_create(&DatabaseLabel {
                database: database.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The OpenMetrics text, with the pool gauges read from `databases` now.
    pub fn render(&self, databases: &Databases) -> Result<String, std::fmt::Error> {
        for name in databases.names() {
            let status = databases.pool_status(name).unwrap_or_default();
            let label = DatabaseLabel {
                database: name.to_owned(),
            };
            self.pool_size
                .get_or_create(&label)
                .set(i64::from(status.size));
            self.pool_idle
                .get_or_create(&label)
                .set(i64::from(status.idle));
            self.pool_max
                .get_or_create(&label)
                .set(i64::from(status.max));
            self.pool_waiting
                .get_or_create(&label)
                .set(i64::from(status.waiting));
            self.pool_rolled_back
                .get_or_create(&label)
                .set(i64::try_from(status.rolled_back).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The gRPC status code name of an outcome (`OK` for success), as in the
/// gRPC specification.
pub fn code_name(code: Option<ErrorKind>) -> &'static str {
    match code {
        Some(kind) => grpc_code_name(tonic::Code::from(kind)),
        None => "OK",
    }
}

/// The name of a gRPC status code, as in the gRPC specification.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    databases: Arc<Databases>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state((metrics, databases));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(
    State((metrics, databases)): State<(Metrics, Arc<Databases>)>,
) -> axum::response::Response {
    match metrics.render(&databases) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_with_labels() {
        let m = Metrics::new();
        m.record_call("Execute", "default", None, Duration::from_millis(3));
        m.record_call(
            "Execute",
            "default",
            Some(ErrorKind::InvalidArgument),
            Duration::from_millis(1),
        );
        m.add_rows("default", 42);
        m.set_up("default", true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).expect("encode");
        assert!(
            out.contains(r#"iadb_requests_total{rpc="Execute",database="default",code="OK"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"iadb_requests_total{rpc="Execute",database="default",code="INVALID_ARGUMENT"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"iadb_request_duration_seconds_count{rpc="Execute",database="default"} 2"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"iadb_rows_streamed_total{database="default"} 42"#),
            "{out}"
        );
        assert!(
            out.contains(r#"iadb_database_up{database="default"} 1"#),
            "{out}"
        );
        assert!(out.trim_end().ends_with("# EOF"), "{out}");
    }

    #[test]
    fn code_names_follow_the_grpc_spec() {
        assert_eq!(code_name(None), "OK");
        assert_eq!(code_name(Some(ErrorKind::Unavailable)), "UNAVAILABLE");
        assert_eq!(
            code_name(Some(ErrorKind::DeadlineExceeded)),
            "DEADLINE_EXCEEDED"
        );
    }
}
