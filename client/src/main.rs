//! `iadb`: the command-line client of an iadb server.

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use iadb::{DatabaseInterface, Error, Row, Value};
use iadb_client::{
    Isolation, RemoteDatabase, Statement, StatementResult, TlsOptions, TransactionOptions,
    script::{ScriptDialect, split_statements},
    server_uri,
};
use output::{Failure, Format};
use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};

mod output;
mod shell;

#[derive(Parser)]
#[command(
    name = "iadb",
    version,
    about = "Command-line client of an iadb server"
)]
struct Cli {
    /// Server address: `HOST:PORT` (plain gRPC), `http://HOST:PORT` or
    /// `https://HOST:PORT` (TLS).
    #[arg(
        long,
        env = "IADB_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Database name on the server (empty: its default).
    #[arg(long, env = "IADB_DATABASE", default_value = "", global = true)]
    database: String,
    /// Deadline of the call, in milliseconds.
    #[arg(long, env = "IADB_TIMEOUT_MS", global = true)]
    timeout_ms: Option<u64>,
    /// Read-only: each call (and `batch`, `tx`) runs in a read-only
    /// transaction on the server, enforced by the engine: a write or DDL is
    /// refused and changes nothing.
    #[arg(long, env = "IADB_READ_ONLY", global = true)]
    read_only: bool,
    /// Bearer token for a server with a tokens file (prefer the variable:
    /// a flag shows in the process list).
    #[arg(long, env = "IADB_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate to trust for an https:// server (default: the
    /// public web's roots).
    #[arg(long, env = "IADB_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server that asks for one (mTLS).
    #[arg(long, env = "IADB_CLIENT_CERT", global = true, requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "IADB_CLIENT_KEY", global = true, requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a query and prints its rows as they arrive (a table, or
    /// --json / --csv); a statement without result columns prints the rows
    /// it changed.
    #[command(allow_negative_numbers = true)]
    Query {
        /// The SQL, with `?` placeholders (`-`: read it from stdin).
        #[arg(required_unless_present = "file")]
        sql: Option<String>,
        /// Parameters: an integer or a double when written exactly as one
        /// (42, -7, 9.5, 0.25), null, anything else text (007,
        /// +14155551234, 1e3, 1.50 stay text); or TYPE:VALUE with TYPE one
        /// of int, double, text, bool, null, bytes (hex), decimal, date,
        /// time, datetime, timestamptz, json.
        params: Vec<String>,
        /// Read the SQL from FILE (`-`: stdin); every argument is then a
        /// parameter.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<String>,
        /// Print a JSON array of objects, keys in column order.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV with a header line.
        #[arg(long)]
        csv: bool,
        /// A read of bounded staleness: it may run on a replica of the
        /// database whose replay lag is within N milliseconds (else on the
        /// primary). The statement is sent as a read (retried on
        /// UNAVAILABLE), so give it only statements that read.
        #[arg(long, value_name = "N")]
        max_staleness_ms: Option<u32>,
    },
    /// Runs a statement and prints the rows affected.
    #[command(allow_negative_numbers = true)]
    Exec {
        /// The SQL, with `?` placeholders (`-`: read it from stdin).
        #[arg(required_unless_present = "file")]
        sql: Option<String>,
        /// Parameters, as for `query`.
        params: Vec<String>,
        /// Read the SQL from FILE (`-`: stdin); every argument is then a
        /// parameter.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<String>,
    },
    /// Runs the statements of FILE (`-`: stdin), separated by `;`, as one
    /// Batch: one transaction, one round trip, all or nothing. Prints what
    /// each statement did. On an error nothing is changed, and the message
    /// names the statement (`statement N:`, counted from 0).
    Batch {
        /// The script (`-` reads stdin).
        file: String,
    },
    /// Runs the statements of FILE (`-` or nothing: stdin) one by one in
    /// one interactive transaction (the Transaction RPC) and commits at the
    /// end. Prints what each statement did as it runs. On an error the
    /// transaction is rolled back, nothing is changed, and it exits with
    /// code 1. Unlike `batch` it takes an isolation level, and its results
    /// stream (no batch-result limit).
    Tx {
        /// The script (`-` reads stdin).
        #[arg(default_value = "-")]
        file: String,
        /// Isolation level (the engine's default if not given).
        #[arg(long, value_enum)]
        isolation: Option<IsolationArg>,
        /// SQLite: take the write lock at once (BEGIN IMMEDIATE).
        #[arg(long)]
        immediate: bool,
        /// Roll back at the end instead of committing (a dry run).
        #[arg(long)]
        rollback: bool,
    },
    /// An interactive prompt: statements end with `;` and may span lines,
    /// line editing and a history file (`IADB_HISTORY`, default
    /// `~/.iadb_history`; empty: none), `\dt` lists tables, `\format
    /// table|json|csv` switches the output, and BEGIN ... COMMIT (or
    /// ROLLBACK) runs over one Transaction stream. `\?` lists the commands.
    Shell,
    /// Lists the tables of the database.
    Tables,
    /// Prints the health of every database (exit 1 if one is unhealthy).
    Health,
    /// Asks the standard gRPC health service (grpc.health.v1.Health/Check),
    /// like grpc_health_probe: prints `status: SERVING` and exits 0; exits 1
    /// on NOT_SERVING, SERVICE_UNKNOWN or another answer; exits 2 when the
    /// server cannot be reached in time (--timeout-ms, default 2000, bounds
    /// the connection and the call each). For container health checks.
    Probe {
        /// The health service to ask about: "" (the whole server: every
        /// database reachable), "iadb.v1.Database" (the process serves), or
        /// a database name such as "default".
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Makes a new random token and prints it (first line), then the
    /// `[[token]]` entry for the server's tokens file (which holds the
    /// token's SHA-256, never the token). Talks to no server.
    Token {
        /// The token's name, shown in the server's logs and metrics.
        #[arg(long)]
        name: String,
        /// read (queries), write (also changes), admin (also Migrate).
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        /// The databases it may use, comma-separated (default: all, `*`).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        databases: Vec<String>,
        /// Most calls per second (none by default).
        #[arg(long)]
        requests_per_second: Option<u32>,
        /// Most calls at once (none by default).
        #[arg(long)]
        max_concurrent_calls: Option<u32>,
    },
    /// Migrations: status, plan, apply, rollback, validate, repair, baseline.
    Migrate {
        /// What to do.
        #[arg(value_enum)]
        action: MigrateCommand,
        /// Target version (apply: newest to apply; rollback: version to return
        /// to; baseline: newest to mark applied).
        #[arg(long)]
        target: Option<String>,
        /// A folder of app migrations to send with the request; repeatable.
        #[arg(long = "dir")]
        dirs: Vec<std::path::PathBuf>,
        /// Applied migrations without a file are not an error.
        #[arg(long)]
        allow_missing: bool,
        /// Pending migrations older than the newest applied may be applied.
        #[arg(long)]
        allow_out_of_order: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum IsolationArg {
    ReadCommitted,
    RepeatableRead,
    Serializable,
    Snapshot,
}

impl From<IsolationArg> for Isolation {
    fn from(level: IsolationArg) -> Self {
        match level {
            IsolationArg::ReadCommitted => Isolation::ReadCommitted,
            IsolationArg::RepeatableRead => Isolation::RepeatableRead,
            IsolationArg::Serializable => Isolation::Serializable,
            IsolationArg::Snapshot => Isolation::Snapshot,
        }
    }
}

/// The text of a script file (`-`: stdin).
fn read_script(file: &str) -> Result<String, Error> {
    use std::io::Read as _;
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::invalid_argument(format!("cannot read stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(file)
        .map_err(|e| Error::invalid_argument(format!("cannot read {file}: {e}")))
}

/// The statements of a script, or INVALID_ARGUMENT when it holds none.
fn script_statements(text: &str, file: &str, engine: &str) -> Result<Vec<String>, Error> {
    let statements = split_statements(text, ScriptDialect::for_engine(engine));
    if statements.is_empty() {
        let name = if file == "-" { "stdin" } else { file };
        return Err(Error::invalid_argument(format!(
            "{name} holds no statement (only whitespace, comments or `;`)"
        )));
    }
    Ok(statements)
}

/// Prints what statement `index` of a script did.
fn print_statement_result(
    out: &mut impl Write,
    index: usize,
    result: &StatementResult,
) -> io::Result<()> {
    if result.columns.is_empty() {
        let outcome = iadb::ExecuteOutcome {
            rows_affected: result.rows_affected,
            last_insert_id: result.last_insert_id,
        };
        writeln!(
            out,
            "statement {index}: {}",
            output::affected_line(&outcome)
        )
    } else {
        writeln!(out, "statement {index}:")?;
        let columns: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
        print_table(out, &columns, &result.rows)
    }
}

/// The SQL of `query` or `exec`, and its parameters: the `sql` argument,
/// or (`-`, or `--file`) the one statement of a file or stdin, after which
/// every argument is a parameter.
async fn statement_text(
    db: &RemoteDatabase,
    sql: Option<String>,
    params: Vec<String>,
    file: Option<String>,
) -> Result<(String, Vec<String>), Error> {
    let (file, params) = match (file, sql) {
        (Some(file), sql) => (file, sql.into_iter().chain(params).collect()),
        (None, Some(sql)) if sql == "-" => ("-".to_owned(), params),
        (None, Some(sql)) => return Ok((sql, params)),
        (None, None) => return Err(Error::invalid_argument("no SQL given")),
    };
    let text = read_script(&file)?;
    let mut statements = script_statements(&text, &file, &engine_of(db).await?)?;
    if statements.len() > 1 {
        let name = if file == "-" { "stdin" } else { &file };
        return Err(Error::invalid_argument(format!(
            "{name} holds {} statements; `query` and `exec` run one \
             (`iadb batch` or `iadb tx` run a script)",
            statements.len()
        )));
    }
    Ok((statements.remove(0), params))
}

/// The engine of the client's database, from the server's health report.
async fn engine_of(db: &RemoteDatabase) -> Result<String, Error> {
    Ok(db
        .health(false)
        .await?
        .first()
        .map(|h| h.engine.clone())
        .unwrap_or_default())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MigrateCommand {
    Status,
    Plan,
    Apply,
    Rollback,
    Validate,
    Repair,
    Baseline,
}

impl From<MigrateCommand> for iadb::proto::MigrateAction {
    fn from(c: MigrateCommand) -> Self {
        use iadb::proto::MigrateAction as A;
        match c {
            MigrateCommand::Status => A::Status,
            MigrateCommand::Plan => A::Plan,
            MigrateCommand::Apply => A::Apply,
            MigrateCommand::Rollback => A::Rollback,
            MigrateCommand::Validate => A::Validate,
            MigrateCommand::Repair => A::Repair,
            MigrateCommand::Baseline => A::Baseline,
        }
    }
}

/// The `.sql` files of `dirs`, to send with a migrate request.
fn read_migration_files(
    dirs: &[std::path::PathBuf],
) -> Result<Vec<iadb::proto::MigrationFile>, Error> {
    let mut files = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::invalid_argument(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| {
                    Error::invalid_argument(format!("cannot read {}: {e}", dir.display()))
                })?
                .path();
            if path.extension().is_none_or(|e| e != "sql") {
                continue;
            }
            let filename = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::invalid_argument(format!("cannot read {}: {e}", path.display()))
            })?;
            let content = String::from_utf8(bytes).map_err(|_| {
                Error::invalid_argument(format!("migration file {filename} is not UTF-8"))
            })?;
            files.push(iadb::proto::MigrationFile { filename, content });
        }
    }
    files.sort_by(|a, b| a.filename.cmp(&b.filename));
    Ok(files)
}

/// Parses one command-line parameter. Without a type prefix, a value is an
/// integer or a double only when `text` is exactly how that number is
/// written (no sign `+`, no leading zeros, no exponent, no trailing zeros
/// after the point but one), so nothing the user typed is lost: `007`,
/// `+14155551234`, `1e3` and `1.50` stay text.
fn parse_param(text: &str) -> Result<Value, Error> {
    use iadb::proto::value::Kind;
    if let Some((ty, v)) = text.split_once(':') {
        let kind = match ty {
            "int" => Some(Kind::Int(v.parse().map_err(|_| {
                Error::invalid_argument(format!("`{v}` is not an integer"))
            })?)),
            "double" => Some(Kind::Double(v.parse().map_err(|_| {
                Error::invalid_argument(format!("`{v}` is not a number"))
            })?)),
            "text" => Some(Kind::Text(v.to_owned())),
            "bool" => Some(Kind::Bool(v.parse().map_err(|_| {
                Error::invalid_argument(format!("`{v}` is not true or false"))
            })?)),
            "null" => return Ok(Value::Null),
            "bytes" => Some(Kind::Bytes(decode_hex(v)?)),
            "decimal" => Some(Kind::Decimal(v.to_owned())),
            "date" => Some(Kind::Date(v.to_owned())),
            "time" => Some(Kind::Time(v.to_owned())),
            "datetime" => Some(Kind::Datetime(v.to_owned())),
            "timestamptz" => Some(Kind::TimestampTz(v.to_owned())),
            "json" => Some(Kind::Json(v.to_owned())),
            _ => None,
        };
        if let Some(kind) = kind {
            return Value::try_from(iadb::proto::Value { kind: Some(kind) });
        }
    }
    if text.eq_ignore_ascii_case("null") {
        return Ok(Value::Null);
    }
    if let Ok(i) = text.parse::<i64>()
        && i.to_string() == text
    {
        return Ok(Value::Int(i));
    }
    if let Some(f) = canonical_double(text) {
        return Ok(Value::Float(f));
    }
    Ok(Value::Text(text.to_owned()))
}

/// The double `text` is the canonical form of: digits, a point and digits,
/// exactly as the shortest decimal that reads back as the same double is
/// written (`0.1`, `-2.5`, `1.0`, `0.00001`), never an exponent.
fn canonical_double(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let f: f64 = text.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    // Display never uses an exponent and gives the shortest round trip;
    // it leaves out the point of a whole number (`1`), written `1.0`.
    let mut canonical = f.to_string();
    if !canonical.contains('.') {
        canonical.push_str(".0");
    }
    (canonical == text).then_some(f)
}

fn decode_hex(s: &str) -> Result<Vec<u8>, Error> {
    let s = s.strip_prefix("\\x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return Err(Error::invalid_argument(
            "hex bytes need an even number of digits",
        ));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| Error::invalid_argument(format!("`{s}` is not hex")))
        })
        .collect()
}

/// A table of rows held in memory (a script's statement results).
fn print_table(out: &mut impl Write, columns: &[String], rows: &[Row]) -> io::Result<()> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(columns);
    for row in rows {
        table.add_row(row.values().iter().map(Value::to_string));
    }
    writeln!(out, "{table}")?;
    writeln!(out, "{}", output::rows_line(rows.len() as u64))
}

/// SQL listing the user's tables on each engine (an engine this client does
/// not know is asked as SQLite would be).
fn tables_sql(engine: &str) -> &'static str {
    use iadb::DatabaseType;
    match engine.parse::<DatabaseType>() {
        Ok(DatabaseType::Postgresql) => {
            "SELECT CASE WHEN table_schema = 'public' THEN table_name ELSE table_schema || '.' || table_name END AS table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        }
        Ok(DatabaseType::Mysql) => {
            "SELECT table_name AS table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1"
        }
        Ok(DatabaseType::Duckdb) => {
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
        }
        Ok(DatabaseType::Sqlite | DatabaseType::CloudflareD1) | Err(_) => {
            "SELECT name AS table_name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' ORDER BY 1"
        }
    }
}

/// Default deadline of `iadb probe`, connection and call each.
const PROBE_TIMEOUT_MS: u64 = 2000;

/// Exit code of `iadb probe` when the server cannot be reached.
const PROBE_UNREACHABLE: u8 = 2;

/// The text and exit code of a `grpc.health.v1` answer.
fn probe_outcome(answer: Result<i32, tonic::Status>) -> (String, ExitCode) {
    use tonic_health::pb::health_check_response::ServingStatus;
    match answer {
        Ok(status) => match ServingStatus::try_from(status) {
            Ok(ServingStatus::Serving) => ("status: SERVING".to_owned(), ExitCode::SUCCESS),
            Ok(other) => (
                format!("status: {}", other.as_str_name()),
                ExitCode::FAILURE,
            ),
            Err(_) => (
                format!("status: {status} (not a known status)"),
                ExitCode::FAILURE,
            ),
        },
        // The standard service answers NOT_FOUND for a name it does not know.
        Err(s) if s.code() == tonic::Code::NotFound => {
            ("status: SERVICE_UNKNOWN".to_owned(), ExitCode::FAILURE)
        }
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) =>
        {
            (
                format!(
                    "error: health check failed: {:?}: {}",
                    s.code(),
                    s.message()
                ),
                ExitCode::from(PROBE_UNREACHABLE),
            )
        }
        Err(s) => (
            format!(
                "error: health check failed: {:?}: {}",
                s.code(),
                s.message()
            ),
            ExitCode::FAILURE,
        ),
    }
}

/// `iadb probe`: one `grpc.health.v1.Health/Check` call.
async fn probe(
    out: &mut impl Write,
    server: &str,
    tls: &TlsOptions,
    service: String,
    timeout: Duration,
) -> io::Result<ExitCode> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = match tonic::transport::Endpoint::from_shared(server.to_owned()) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => {
            eprintln!("error: bad server address `{server}`: {e}");
            return Ok(ExitCode::from(PROBE_UNREACHABLE));
        }
    };
    let endpoint = match tls
        .config(server)
        .map(|c| c.map(|c| endpoint.clone().tls_config(c)))
    {
        Ok(None) => endpoint,
        Ok(Some(Ok(endpoint))) => endpoint,
        Ok(Some(Err(e))) => {
            eprintln!("error: TLS: {e}");
            return Ok(ExitCode::from(PROBE_UNREACHABLE));
        }
        Err(e) => {
            eprintln!("error: {}", e.message());
            return Ok(ExitCode::from(PROBE_UNREACHABLE));
        }
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            eprintln!("error: cannot connect to {server}: {e}");
            return Ok(ExitCode::from(PROBE_UNREACHABLE));
        }
        Err(_) => {
            eprintln!(
                "error: cannot connect to {server}: no connection within {} ms",
                timeout.as_millis()
            );
            return Ok(ExitCode::from(PROBE_UNREACHABLE));
        }
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service });
    let answer = match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map(|r| r.into_inner().status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    };
    let (text, code) = probe_outcome(answer);
    if text.starts_with("status:") {
        writeln!(out, "{text}")?;
    } else {
        eprintln!("{text}");
    }
    Ok(code)
}

async fn run(cli: Cli, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let server = server_uri(cli.server.clone());
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::invalid_argument(format!("{flag} {}: {e}", path.display())))
    };
    let tls = TlsOptions {
        ca_pem: cli
            .ca_cert
            .as_deref()
            .map(|p| read("--ca-cert", p))
            .transpose()?,
        client: match (cli.client_cert.as_deref(), cli.client_key.as_deref()) {
            (Some(cert), Some(key)) => {
                Some((read("--client-cert", cert)?, read("--client-key", key)?))
            }
            _ => None,
        },
    };
    // The probe asks the standard health service only: no iadb connection.
    let command = match cli.command {
        Command::Probe { service } => {
            let ms = cli.timeout_ms.unwrap_or(PROBE_TIMEOUT_MS).max(1);
            return Ok(probe(out, &server, &tls, service, Duration::from_millis(ms)).await?);
        }
        Command::Token {
            name,
            scope,
            databases,
            requests_per_second,
            max_concurrent_calls,
        } => {
            let token = new_token()?;
            write!(
                out,
                "{}",
                token_entry(
                    &token,
                    &name,
                    &scope,
                    &databases,
                    requests_per_second,
                    max_concurrent_calls
                )?
            )?;
            eprintln!(
                "# The first line is the token: give it to the client (IADB_TOKEN or --token); \
                 it is not stored anywhere. Append the rest to the server's tokens file and send \
                 the server SIGHUP."
            );
            return Ok(ExitCode::SUCCESS);
        }
        other => other,
    };
    let mut db = RemoteDatabase::new(server.clone())
        .with_database(cli.database.clone())
        .with_read_only(cli.read_only)
        .with_tls(tls);
    if let Some(ms) = cli.timeout_ms {
        db = db.with_timeout(Duration::from_millis(ms));
    }
    if let Some(token) = cli.token.as_deref().filter(|t| !t.trim().is_empty()) {
        db = db.with_token(token);
    }
    db.connect().await?;
    match command {
        Command::Query {
            sql,
            params,
            file,
            json,
            csv,
            max_staleness_ms,
        } => {
            let (sql, params) = statement_text(&db, sql, params, file).await?;
            let params = params
                .iter()
                .map(|p| parse_param(p))
                .collect::<Result<Vec<_>, _>>()?;
            // Whatever the statement is: a write is not sent twice (with
            // --read-only the engine refuses writes, so it is a read).
            let iadb::QueryStream { columns, events } = if let Some(ms) = max_staleness_ms {
                let db = db.with_max_staleness(Some(Duration::from_millis(u64::from(ms))));
                db.query(&sql, &params).await?
            } else if cli.read_only {
                db.query(&sql, &params).await?
            } else {
                db.query_write(&sql, &params).await?
            };
            let format = if json {
                Format::Json
            } else if csv {
                Format::Csv
            } else {
                Format::Table
            };
            let mut progress: Box<dyn output::Progress> = match output::TermProgress::when_useful()
            {
                Some(p) => Box::new(p),
                None => Box::new(output::NoProgress),
            };
            let printed =
                output::print_stream(&mut *out, format, &columns, events, progress.as_mut())
                    .await?;
            if columns.is_empty() {
                let outcome = printed.outcome.unwrap_or_default();
                writeln!(out, "{}", output::affected_line(&outcome))?;
            }
        }
        Command::Exec { sql, params, file } => {
            let (sql, params) = statement_text(&db, sql, params, file).await?;
            let params = params
                .iter()
                .map(|p| parse_param(p))
                .collect::<Result<Vec<_>, _>>()?;
            let outcome = db.execute(&sql, &params).await?;
            writeln!(out, "{}", output::affected_line(&outcome))?;
        }
        Command::Batch { file } => {
            let text = read_script(&file)?;
            let engine = engine_of(&db).await?;
            let statements: Vec<Statement> = script_statements(&text, &file, &engine)?
                .into_iter()
                .map(Statement::new)
                .collect();
            let results = db.batch(&statements, cli.read_only).await?;
            for (index, result) in results.iter().enumerate() {
                print_statement_result(out, index, result)?;
            }
            writeln!(out, "committed {} statement(s)", results.len())?;
        }
        Command::Tx {
            file,
            isolation,
            immediate,
            rollback,
        } => {
            let text = read_script(&file)?;
            let options = TransactionOptions {
                isolation: isolation.map(Isolation::from).unwrap_or_default(),
                read_only: cli.read_only,
                immediate,
            };
            let mut tx = db.transaction(options).await?;
            let statements = match script_statements(&text, &file, tx.engine()) {
                Ok(statements) => statements,
                Err(e) => {
                    tx.rollback().await?;
                    return Err(e.into());
                }
            };
            for (index, sql) in statements.iter().enumerate() {
                let result = tx
                    .execute_query(sql, &[])
                    .await
                    .map_err(|e| e.in_context(format_args!("statement {index}")))?;
                print_statement_result(out, index, &result)?;
                // Each statement's result shows as it completes.
                out.flush()?;
            }
            if rollback {
                tx.rollback().await?;
                writeln!(out, "rolled back {} statement(s)", statements.len())?;
            } else {
                tx.commit().await?;
                writeln!(out, "committed {} statement(s)", statements.len())?;
            }
        }
        Command::Shell => shell::run(&db, &server, out, Format::Table).await?,
        Command::Tables => {
            let health = db.health(false).await?;
            let engine = health
                .first()
                .map(|h| h.engine.as_str())
                .unwrap_or("sqlite");
            for row in db.fetch_all(tables_sql(engine), &[]).await? {
                if let Some(name) = row.get_index(0) {
                    writeln!(out, "{name}")?;
                }
            }
        }
        Command::Migrate {
            action,
            target,
            dirs,
            allow_missing,
            allow_out_of_order,
        } => {
            let response = db
                .migrate(iadb::proto::MigrateRequest {
                    database: String::new(),
                    action: iadb::proto::MigrateAction::from(action) as i32,
                    target_version: target.unwrap_or_default(),
                    files: read_migration_files(&dirs)?,
                    allow_missing,
                    allow_out_of_order,
                })
                .await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "version",
                "type",
                "file",
                "state",
                "applied at",
                "checksum ok",
            ]);
            for m in &response.migrations {
                table.add_row([
                    m.version.clone(),
                    m.migration_type.clone(),
                    m.filename.clone(),
                    m.state.clone(),
                    m.applied_at.clone(),
                    m.checksum_ok.to_string(),
                ]);
            }
            writeln!(out, "{table}")?;
            if matches!(action, MigrateCommand::Plan) {
                for m in &response.migrations {
                    writeln!(out, "-- {}\n{}", m.filename, m.sql.trim_end())?;
                }
            }
            if !response.changed.is_empty() {
                writeln!(out, "changed: {}", response.changed.join(", "))?;
            }
        }
        Command::Health => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "database",
                "engine",
                "healthy",
                "pool size",
                "idle",
                "max",
                "latency ms",
                "message",
            ]);
            let report = db.health(cli.database.is_empty()).await?;
            let all_healthy = report.iter().all(|h| h.healthy);
            for h in report {
                table.add_row([
                    h.name,
                    h.engine,
                    h.healthy.to_string(),
                    h.pool_size.to_string(),
                    h.pool_idle.to_string(),
                    h.pool_max.to_string(),
                    format!("{:.2}", h.latency_ms),
                    h.message,
                ]);
            }
            writeln!(out, "{table}")?;
            if !all_healthy {
                return Ok(ExitCode::FAILURE);
            }
        }
        // Answered above, without connecting.
        Command::Probe { .. } | Command::Token { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Rust ignores SIGPIPE: a closed standard output (`| head`) is a
    // BrokenPipe error on write, which ends the command quietly (exit 0)
    // and drops the call.
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    let outcome = run(cli, &mut out).await;
    // What was printed before an error shows before its message.
    let outcome = match (outcome, out.flush()) {
        (Ok(code), Ok(())) => Ok(code),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(Failure::from(e)),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("iadb: cannot write the output: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Call(e)) => {
            match e.code() {
                Some(code) => eprintln!("iadb: {} ({}, {code})", e.message(), e.kind()),
                None => eprintln!("iadb: {} ({})", e.message(), e.kind()),
            }
            ExitCode::FAILURE
        }
    }
}

/// A new token: `iadb_` and 32 random bytes from the operating system, in hex.
fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::internal(format!("no randomness from the system: {e}")))?;
    Ok(format!("iadb_{}", hex::encode(bytes)))
}

/// The token on its own line, then its `[[token]]` entry (TOML, with the
/// token's SHA-256).
fn token_entry(
    token: &str,
    name: &str,
    scope: &str,
    databases: &[String],
    requests_per_second: Option<u32>,
    max_concurrent_calls: Option<u32>,
) -> Result<String, Error> {
    use sha2::Digest as _;
    if name.trim().is_empty() {
        return Err(Error::invalid_argument("--name is empty"));
    }
    let databases: Vec<&str> = databases
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .collect();
    if databases.is_empty() {
        return Err(Error::invalid_argument(
            "--databases names no database (leave it out for all)",
        ));
    }
    let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let list = databases
        .iter()
        .map(|d| quote(d))
        .collect::<Vec<_>>()
        .join(", ");
    let mut entry = format!(
        "{token}\n\n[[token]]\nname = {}\nsha256 = \"{}\"\nscope = \"{scope}\"\ndatabases = [{list}]\n",
        quote(name),
        hex::encode(sha2::Sha256::digest(token.as_bytes())),
    );
    if let Some(n) = requests_per_second {
        entry.push_str(&format!("requests_per_second = {n}\n"));
    }
    if let Some(n) = max_concurrent_calls {
        entry.push_str(&format!("max_concurrent_calls = {n}\n"));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus;

    #[test]
    fn token_entries_are_toml_with_the_hash() {
        let token = new_token().unwrap();
        assert!(
            token.starts_with("iadb_") && token.len() == 5 + 64,
            "{token}"
        );
        assert_ne!(token, new_token().unwrap());
        let text = token_entry(
            &token,
            "ops \"east\"",
            "admin",
            &["a".into(), "b".into()],
            Some(5),
            None,
        )
        .unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        assert_eq!(first, token);
        let parsed: toml::Value = toml::from_str(rest).unwrap();
        let entry = &parsed["token"][0];
        assert_eq!(entry["name"].as_str(), Some("ops \"east\""));
        assert_eq!(entry["scope"].as_str(), Some("admin"));
        assert_eq!(entry["requests_per_second"].as_integer(), Some(5));
        assert_eq!(entry["databases"][1].as_str(), Some("b"));
        use sha2::Digest as _;
        assert_eq!(
            entry["sha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(token.as_bytes())).as_str())
        );
        assert!(!rest.contains(&token));
    }

    #[test]
    fn parameters_are_numbers_only_in_their_canonical_form() {
        let kind = |text| parse_param(text).unwrap();
        for text in [
            "007",
            "+1",
            "-0",
            "1e3",
            "1E3",
            "1.50",
            ".5",
            "5.",
            "0x10",
            " 1",
            "1 ",
            "-",
            "",
            "9223372036854775808",
            "1.00000000000000000001",
            "inf",
            "NaN",
            "-.5",
        ] {
            assert_eq!(kind(text), Value::Text(text.to_owned()), "{text:?}");
        }
        assert_eq!(kind("0"), Value::Int(0));
        assert_eq!(kind("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(kind("0.1"), Value::Float(0.1));
        assert_eq!(kind("1.0"), Value::Float(1.0));
        assert_eq!(kind("-0.0"), Value::Float(-0.0));
        assert_eq!(kind("0.00001"), Value::Float(0.00001));
        assert_eq!(kind("NULL"), Value::Null);
        assert_eq!(kind("int:007"), Value::Int(7));
        assert_eq!(kind("text:1.0"), Value::Text("1.0".to_owned()));
    }

    #[test]
    fn probe_exit_codes_follow_grpc_health_probe() {
        let code = |answer| probe_outcome(answer).1;
        assert_eq!(code(Ok(ServingStatus::Serving as i32)), ExitCode::SUCCESS);
        assert_eq!(
            probe_outcome(Ok(ServingStatus::NotServing as i32)),
            ("status: NOT_SERVING".to_owned(), ExitCode::FAILURE)
        );
        assert_eq!(code(Ok(ServingStatus::Unknown as i32)), ExitCode::FAILURE);
        assert_eq!(code(Ok(42)), ExitCode::FAILURE);
        assert_eq!(
            probe_outcome(Err(tonic::Status::not_found("service not registered"))),
            ("status: SERVICE_UNKNOWN".to_owned(), ExitCode::FAILURE)
        );
        assert_eq!(
            code(Err(tonic::Status::unimplemented("no health service"))),
            ExitCode::FAILURE
        );
        assert_eq!(
            code(Err(tonic::Status::unavailable("gone"))),
            ExitCode::from(PROBE_UNREACHABLE)
        );
        assert_eq!(
            code(Err(tonic::Status::deadline_exceeded("slow"))),
            ExitCode::from(PROBE_UNREACHABLE)
        );
    }
}
