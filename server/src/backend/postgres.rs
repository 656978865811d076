//! PostgreSQL through sqlx.
//!
//! `?` placeholders are rewritten to `$1..$n` (see `placeholders`). Parameter
//! types: typed values (int, double, bool, bytes, decimal, dates, times) are
//! declared with their PostgreSQL type; text, JSON and NULL are left for
//! PostgreSQL to infer from the statement, and are then converted to what it
//! inferred, so `?` works for uuid, enum, date or jsonb columns given as text.
//! A prepared statement is cached per connection for each SQL text and type
//! signature. A stream dropped before its end closes its connection, which
//! ends the query on the server instead of draining it.

use super::{
    check_param_count, check_sql,
    sqlx_common::{
        Call, Step, finds_a_row, ping_if_idle, prelude::*, prepared_steps, split_schema,
    },
};
use crate::placeholders::rewrite_numbered;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use iadb::{DatabaseInterface, ValueWriter};
use sqlx::{
    Arguments, Either,
    postgres::{
        PgArguments, PgConnectOptions, PgRow, PgSslMode, PgTypeInfo, PgTypeKind, Postgres,
        types::Oid,
    },
    types::{BigDecimal, Json, JsonRawValue, Uuid},
};
use std::{borrow::Cow, str::FromStr};

mod copy;

/// The PostgreSQL adapter: the generic sqlx adapter on [`PostgresEngine`].
pub type PostgresBackend = SqlxBackend<PostgresEngine>;

/// PostgreSQL, for the generic sqlx adapter and session: the settings
/// from its URL.
pub struct PostgresEngine {
    options: PgConnectOptions,
    /// `SET TIME ZONE` for every new connection (the URL's `timezone`;
    /// sqlx's startup message sets UTC, which a startup option cannot
    /// override).
    time_zone: Option<String>,
    /// What every connection runs when it goes back to the pool
    /// ([`reset_sql`]).
    reset: Arc<str>,
    /// The hosts of a multi-host URL, in order; empty for one host. The
    /// pool then connects to the one that is not in recovery, and follows
    /// the primary when it moves ([`watch_primary`]).
    hosts: Arc<[(String, u16)]>,
}

/// The settings of a `postgresql:` URL.
impl TryFrom<&ConnectionConfig> for PostgresEngine {
    type Error = Error;

    fn try_from(config: &ConnectionConfig) -> Result<Self> {
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(config.host.as_deref().unwrap_or("localhost"))
            .port(config.port.unwrap_or(5432))
            .application_name("iadb")
            // sqlx would log each statement's text, literals and all; the
            // server logs its fingerprint instead.
            .disable_statement_logging();
        if let Some(user) = &config.username {
            options = options.username(user);
        }
        if let Some(password) = config.password() {
            options = options.password(password);
        }
        if let Some(db) = &config.database {
            options = options.database(db);
        }
        if let Some(mode) = config.option("sslmode") {
            let mode = PgSslMode::from_str(mode).map_err(|_| {
                Error::invalid_argument(format!(
                    "unknown sslmode `{mode}` (disable, allow, prefer, require, verify-ca, verify-full)"
                ))
            })?;
            options = options.ssl_mode(mode);
        }
        if let Some(root) = config.option("sslrootcert") {
            options = options.ssl_root_cert(root);
        }
        if let Some(name) = config.option("application_name") {
            options = options.application_name(name);
        }
        // Session settings for every connection (a pooled call may not SET
        // them).
        if let Some(schema) = config.option("search_path") {
            options = options.options([("search_path", schema)]);
        }
        let time_zone = super::sql_text_option(
            config,
            "timezone",
            |b| b.is_ascii_alphanumeric() || b"_/+-:".contains(&b),
            "a time zone name such as Europe/Paris or an offset such as +02:00",
        )?
        .map(|zone| format!("SET TIME ZONE '{zone}'"));
        if !config.hosts.is_empty()
            && let Some(attrs) = config
                .option("target_session_attrs")
                .filter(|a| !matches!(*a, "read-write" | "primary"))
        {
            return Err(Error::invalid_argument(format!(
                "target_session_attrs `{attrs}`: a database's URL names its primary, so with \
                 several hosts iadb connects to the one that is read-write (`read-write` or \
                 `primary`); give standbys as --replica for reads"
            )));
        }
        Ok(PostgresEngine {
            options,
            reset: reset_sql(time_zone.as_deref()).into(),
            time_zone,
            hosts: config.hosts.clone().into(),
        })
    }
}

/// How long finding the primary waits for each host of a multi-host URL.
const HOST_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a multi-host pool checks that its host is still the primary.
const PRIMARY_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether `conn`'s server is out of recovery (a primary).
async fn is_primary_conn(conn: &mut sqlx::PgConnection) -> std::result::Result<bool, String> {
    let query = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(conn);
    match tokio::time::timeout(HOST_CHECK_TIMEOUT, query).await {
        Ok(Ok(in_recovery)) => Ok(!in_recovery),
        Ok(Err(e)) => Err(pg_error(e).message().to_owned()),
        Err(_) => Err(format!(
            "no answer within {} s",
            HOST_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// A connection to `options`'s host, and whether it is a primary.
async fn connect_and_ask(
    options: &PgConnectOptions,
) -> std::result::Result<(sqlx::PgConnection, bool), String> {
    let mut conn = match tokio::time::timeout(HOST_CHECK_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(pg_error(e).message().to_owned()),
        Err(_) => {
            return Err(format!(
                "no answer within {} s",
                HOST_CHECK_TIMEOUT.as_secs()
            ));
        }
    };
    let primary = is_primary_conn(&mut conn).await?;
    Ok((conn, primary))
}

/// The first of `hosts` (asked all at once) that is a primary, with a
/// connection to it; otherwise UNAVAILABLE saying what each host is.
async fn find_primary(
    base: &PgConnectOptions,
    hosts: &[(String, u16)],
) -> Result<(PgConnectOptions, sqlx::PgConnection)> {
    let asked = futures::future::join_all(hosts.iter().map(|(host, port)| async move {
        let options = base.clone().host(host).port(*port);
        let answer = connect_and_ask(&options).await;
        (options, answer)
    }))
    .await;
    let mut causes = Vec::new();
    let mut found = None;
    for ((host, port), (options, answer)) in hosts.iter().zip(asked) {
        match answer {
            Ok((conn, true)) if found.is_none() => found = Some((options, conn)),
            Ok((conn, true)) => {
                // Two primaries: the first listed wins, as with libpq.
                close_quietly(conn);
                causes.push(format!("{host}:{port}: also a primary"));
            }
            Ok((conn, false)) => {
                close_quietly(conn);
                causes.push(format!("{host}:{port}: in recovery (a standby)"));
            }
            Err(cause) => causes.push(format!("{host}:{port}: {cause}")),
        }
    }
    found.ok_or_else(|| {
        Error::unavailable(format!(
            "no host of the database's URL is a primary (read-write): {}",
            causes.join("; ")
        ))
    })
}

/// Closes `conn` politely (the server logs no lost client), in a task of
/// its own.
fn close_quietly(conn: sqlx::PgConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(HOST_CHECK_TIMEOUT, sqlx::Connection::close(conn)).await;
    });
}

/// Follows the primary of a multi-host pool: every
/// [`PRIMARY_WATCH_INTERVAL`] asks the current host, on a connection of
/// its own, whether it is still out of recovery; when it is gone or in
/// recovery, finds the host that is the primary now, points the pool's new
/// connections at it, and closes the idle ones to the old host. Ends when
/// the pool is closed.
async fn watch_primary(
    pool: sqlx::Pool<Postgres>,
    base: PgConnectOptions,
    hosts: Arc<[(String, u16)]>,
) {
    let mut ticker = tokio::time::interval(PRIMARY_WATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching: Option<sqlx::PgConnection> = None;
    let mut reported = String::new();
    loop {
        ticker.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Some(conn) = watching.as_mut()
            && is_primary_conn(conn).await == Ok(true)
        {
            continue;
        }
        watching = None;
        let current = pool.connect_options();
        match find_primary(&base, &hosts).await {
            Ok((found, conn)) => {
                watching = Some(conn);
                reported.clear();
                let moved = (found.get_host(), found.get_port())
                    != (current.get_host(), current.get_port());
                if moved {
                    tracing::warn!(
                        from = %format!("{}:{}", current.get_host(), current.get_port()),
                        to = %format!("{}:{}", found.get_host(), found.get_port()),
                        "the primary moved: new connections go to the new one"
                    );
                    pool.set_connect_options(found);
                    // Idle connections to the old host are dead or
                    // read-only now.
                    for _ in 0..pool.size() {
                        match pool.try_acquire() {
                            Some(conn) => drop(conn.detach()),
                            None => break,
                        }
                    }
                }
            }
            Err(e) => {
                if e.message() != reported {
                    tracing::warn!(cause = %e.message(), "no primary found; looking again");
                    reported = e.message().to_owned();
                }
            }
        }
    }
}

impl PostgresBackend {
    /// What each connection runs when it goes back to the pool (for the
    /// reset benchmark, `cargo bench --bench reset`).
    pub fn reset_statement(&self) -> &str {
        &self.engine().reset
    }
}

/// SQLSTATE classes that sqlx's own classification does not settle.
fn classify_postgres(e: &dyn DatabaseError) -> Option<ErrorKind> {
    let code = e.code()?;
    Some(match (&code[..2.min(code.len())], code.as_ref()) {
        // Insufficient privilege, and a write in a read-only transaction
        // (as on every other engine).
        (_, "42501" | "25006") => ErrorKind::PermissionDenied,
        // "bind message supplies 2 parameters, but prepared statement
        // requires 1": a wrong count for SQL written with `$n`.
        (_, "08P01") => ErrorKind::InvalidArgument,
        (_, "57014") => ErrorKind::DeadlineExceeded,
        (_, "40001") | (_, "40P01") => ErrorKind::Aborted,
        // A cached statement whose table changed shape (`is_stale_plan`),
        // met inside a transaction: the transaction is aborted, and running
        // it again succeeds (the cache is cleared).
        (_, "0A000")
            if e.message()
                .contains("cached plan must not change result type") =>
        {
            ErrorKind::Aborted
        }
        // An object that already exists: database (42P04), schema (42P06),
        // table, view or sequence (42P07), function (42723), other objects
        // such as a trigger, type or index (42710).
        (_, "42P04" | "42P06" | "42P07" | "42723" | "42710") => ErrorKind::AlreadyExists,
        // Other objects depend on it (DROP without CASCADE).
        (_, "2BP01") => ErrorKind::FailedPrecondition,
        ("23", _) => ErrorKind::FailedPrecondition,
        ("08", _) | ("57", _) | ("58", _) => ErrorKind::Unavailable,
        ("53", _) => ErrorKind::ResourceExhausted,
        ("28", _) => ErrorKind::Unauthenticated,
        ("25", _) => ErrorKind::FailedPrecondition,
        _ => return None,
    })
}

fn pg_error(e: sqlx::Error) -> Error {
    map_sqlx_error(e, classify_postgres)
}

/// The type a value is declared with; `None` leaves it to PostgreSQL.
fn declared_type(value: &Value) -> Option<PgTypeInfo> {
    Some(match value {
        Value::Null | Value::Text(_) | Value::Json(_) => return None,
        Value::Bool(_) => PgTypeInfo::with_name("bool"),
        Value::Int(_) => PgTypeInfo::with_name("int8"),
        Value::Float(_) => PgTypeInfo::with_name("float8"),
        Value::Bytes(_) => PgTypeInfo::with_name("bytea"),
        Value::Decimal(_) => PgTypeInfo::with_name("numeric"),
        Value::Date(_) => PgTypeInfo::with_name("date"),
        Value::Time(_) => PgTypeInfo::with_name("time"),
        Value::DateTime(_) => PgTypeInfo::with_name("timestamp"),
        Value::TimestampTz(_) => PgTypeInfo::with_name("timestamptz"),
    })
}

/// Rewrites placeholders, checks the count, and prefixes the SQL with its
/// parameter type signature so each signature gets its own cached statement.
/// The most parameters one PostgreSQL statement takes: the wire protocol
/// counts them in 16 bits.
const MAX_PARAMS: usize = u16::MAX as usize;

fn prepare_text<'a>(sql: &'a str, params: &[Value]) -> Result<(Cow<'a, str>, Vec<PgTypeInfo>)> {
    check_sql(sql)?;
    if params.len() > MAX_PARAMS {
        // Caught here: sqlx would refuse it as a protocol error (INTERNAL).
        return Err(Error::invalid_argument(format!(
            "PostgreSQL takes at most {MAX_PARAMS} parameters in one statement; {} given",
            params.len()
        )));
    }
    let (rewritten, count) = rewrite_numbered(sql);
    // SQL written with `$n` has no `?`: PostgreSQL itself checks its count.
    if count > 0 || params.is_empty() || !sql.contains('$') {
        check_param_count(sql, crate::placeholders::Dialect::Postgres, params.len())?;
    }
    if params.is_empty() {
        return Ok((rewritten, Vec::new()));
    }
    let types: Vec<PgTypeInfo> = params
        .iter()
        .map(|p| declared_type(p).unwrap_or(PgTypeInfo::with_oid(Oid(0))))
        .collect();
    let signature: Vec<&str> = params.iter().map(Value::kind_name).collect();
    Ok((
        Cow::Owned(format!("/* iadb:{} */ {rewritten}", signature.join(","))),
        types,
    ))
}

/// Binds `params` as the types of the prepared statement.
fn bind_all(params: &[Value], types: &[PgTypeInfo]) -> Result<PgArguments> {
    let mut args = PgArguments::default();
    for (i, (value, ty)) in params.iter().zip(types).enumerate() {
        refuse_leap_second(value)
            .and_then(|()| bind_one(&mut args, value, ty))
            .map_err(|e| Error::invalid_argument(format!("parameter {}: {e}", i + 1)))?;
    }
    Ok(args)
}

/// A time with a leap second (second 60, chrono's nanoseconds past one
/// billion): PostgreSQL has none and would store the next second (for a
/// time, `24:00:00`), so it is refused rather than changed.
fn refuse_leap_second(value: &Value) -> std::result::Result<(), String> {
    if value.is_leap_second() {
        return Err(
            "a leap second (second 60) cannot be stored by PostgreSQL, which would turn it into the next second"
                .into(),
        );
    }
    Ok(())
}

/// Text parsed as the parameter's type; the error names the type, never
/// the text (values stay out of errors and logs).
fn parse_text<T: FromStr>(s: &str, ty: &str) -> std::result::Result<T, String> {
    s.trim().parse().map_err(|_| not_a(ty, s))
}

/// "text is not a valid TYPE" with the text's size in place of the text.
fn not_a(ty: &str, text: &str) -> String {
    format!("text ({} bytes) is not a valid {ty}", text.len())
}

/// The largest decimal exponent (`1e1000000`) a decimal parameter may have:
/// NUMERIC holds at most 131072 digits before the point and 16383 after,
/// and sqlx's encoding overflows (a panic) on exponents near 2^63.
const MAX_DECIMAL_EXPONENT: u64 = 1_000_000;

fn parse_numeric(s: &str, ty: &str) -> std::result::Result<BigDecimal, String> {
    if let Some((_, exponent)) = s.trim().split_once(['e', 'E']) {
        let magnitude = exponent
            .trim_start_matches(['+', '-'])
            .trim_start_matches('0');
        let small =
            magnitude.len() <= 7 && magnitude.parse::<u64>().unwrap_or(0) <= MAX_DECIMAL_EXPONENT;
        if !small {
            return Err(format!(
                "the exponent of this {ty} is outside PostgreSQL's NUMERIC range"
            ));
        }
    }
    parse_text(s, ty)
}

fn bind_one(
    args: &mut PgArguments,
    value: &Value,
    ty: &PgTypeInfo,
) -> std::result::Result<(), String> {
    let added = match (value, ty.name()) {
        (Value::Null, _) => args.add(None::<String>),
        (Value::Text(s) | Value::Json(s), name @ ("JSON" | "JSONB")) => {
            let raw = JsonRawValue::from_string(s.clone())
                .map_err(|e| format!("not a JSON document: {e}"))?;
            if name == "JSON" {
                // `json`'s binary form is its text. sqlx's `Json` writes
                // jsonb's version byte and turns it into a space for
                // `json`, which a `json` column keeps (`' null'`).
                args.add(TextAs(raw.get().to_owned(), ty.clone()))
            } else {
                args.add(Json(raw))
            }
        }
        (Value::Text(s), "UUID") => args.add(parse_text::<Uuid>(s, "uuid")?),
        (Value::Text(s), "INT2") => args.add(parse_text::<i16>(s, "smallint")?),
        (Value::Text(s), "INT4") => args.add(parse_text::<i32>(s, "integer")?),
        (Value::Text(s), "INT8") => args.add(parse_text::<i64>(s, "bigint")?),
        (Value::Text(s), "FLOAT4") => args.add(parse_text::<f32>(s, "real")?),
        (Value::Text(s), "FLOAT8") => args.add(parse_text::<f64>(s, "double precision")?),
        (Value::Text(s), "NUMERIC") => args.add(parse_numeric(s, "numeric")?),
        (Value::Text(s), "BOOL") => args.add(parse_text::<bool>(s, "boolean")?),
        (Value::Text(s), "DATE") => args.add(parse_text::<NaiveDate>(s, "date")?),
        (Value::Text(s), "TIME") => args.add(parse_text::<NaiveTime>(s, "time")?),
        (Value::Text(s), "TIMESTAMP") => args.add(
            NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f"))
                .map_err(|_| not_a("timestamp", s))?,
        ),
        (Value::Text(s), "TIMESTAMPTZ") => args.add(
            DateTime::parse_from_rfc3339(s.trim())
                .map_err(|_| not_a("RFC 3339 timestamp", s))?
                .with_timezone(&Utc),
        ),
        (Value::Text(s), "BYTEA") => args.add(s.as_bytes().to_vec()),
        // Text-like types (text, varchar, enum, citext): the text's bytes
        // are their binary form.
        (Value::Text(s) | Value::Json(s), _) if is_text_like(ty) => {
            args.add(TextAs(s.clone(), ty.clone()))
        }
        (Value::Text(_) | Value::Json(_), name) => {
            return Err(format!(
                "text cannot be bound to a parameter of type {name}; write the parameter as CAST(? AS TEXT)::{} so PostgreSQL parses it",
                name.to_lowercase()
            ));
        }
        (Value::Bool(b), _) => args.add(*b),
        (Value::Int(n), _) => args.add(*n),
        (Value::Float(f), _) => args.add(*f),
        (Value::Bytes(b), _) => args.add(b.clone()),
        (Value::Decimal(d), _) => args.add(parse_numeric(d, "decimal")?),
        (Value::Date(d), _) => args.add(*d),
        (Value::Time(t), _) => args.add(*t),
        (Value::DateTime(t), _) => args.add(*t),
        (Value::TimestampTz(t), _) => args.add(*t),
    };
    added.map_err(|e| e.to_string())
}

/// Whether a type's binary form is its UTF-8 text.
fn is_text_like(ty: &PgTypeInfo) -> bool {
    matches!(
        ty.name(),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN" | "XML" | "CHAR"
    ) || matches!(ty.kind(), PgTypeKind::Enum(_))
}

/// Text bound as whatever text-like type PostgreSQL inferred (enum, varchar,
/// citext, ...): their binary form is the UTF-8 text.
struct TextAs(String, PgTypeInfo);

impl sqlx::Type<Postgres> for TextAs {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("text")
    }
}

impl sqlx::Encode<'_, Postgres> for TextAs {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode(self.0.as_str(), buf)
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.1.clone())
    }
}

/// How a result column's values are read, decided once per result from
/// the column's type ([`ColumnReader::of`]) rather than for every value:
/// the common types straight from their binary form, as [`decode_value`]
/// reads them; any other type, and any value that is not the expected
/// binary form, through [`write_value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnReader {
    Text,
    Int8,
    Int4,
    Int2,
    Float8,
    Float4,
    Bool,
    Other,
}

impl ColumnReader {
    /// The reader of a column whose type is named `type_name` (sqlx's
    /// name, as the prepare gives it).
    fn of(type_name: &str) -> Self {
        match type_name {
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "XML" | "UNKNOWN" => {
                ColumnReader::Text
            }
            "INT8" => ColumnReader::Int8,
            "INT4" => ColumnReader::Int4,
            "INT2" => ColumnReader::Int2,
            "FLOAT8" => ColumnReader::Float8,
            "FLOAT4" => ColumnReader::Float4,
            "BOOL" => ColumnReader::Bool,
            _ => ColumnReader::Other,
        }
    }

    /// The readers of a result's columns.
    fn of_columns(columns: &[Column]) -> Arc<[ColumnReader]> {
        columns
            .iter()
            .map(|c| ColumnReader::of(&c.declared_type))
            .collect()
    }

    /// Writes a non-NULL binary value of this reader's type; `false` when
    /// it is not one (the caller reads it through [`write_value`]).
    fn write(self, bytes: &[u8], out: &mut dyn ValueWriter) -> bool {
        match (self, bytes) {
            (ColumnReader::Text, _) => match std::str::from_utf8(bytes) {
                Ok(text) => out.text(text),
                Err(_) => return false,
            },
            (ColumnReader::Int8, &[a, b, c, d, e, f, g, h]) => {
                out.int(i64::from_be_bytes([a, b, c, d, e, f, g, h]));
            }
            (ColumnReader::Int4, &[a, b, c, d]) => {
                out.int(i64::from(i32::from_be_bytes([a, b, c, d])));
            }
            (ColumnReader::Int2, &[a, b]) => out.int(i64::from(i16::from_be_bytes([a, b]))),
            (ColumnReader::Float8, &[a, b, c, d, e, f, g, h]) => {
                out.double(f64::from_be_bytes([a, b, c, d, e, f, g, h]));
            }
            (ColumnReader::Float4, &[a, b, c, d]) => {
                out.value(&Value::Float(f64::from(f32::from_be_bytes([a, b, c, d]))));
            }
            (ColumnReader::Bool, &[b]) => out.value(&Value::Bool(b != 0)),
            _ => return false,
        }
        true
    }
}

/// Every value of `row`, the `number`th of its result (from 1), written
/// into a batch's row, each column by its reader (`readers`, one per
/// column); an error names the row and the column.
fn decode_row(
    row: &PgRow,
    number: u64,
    readers: &[ColumnReader],
    out: &mut dyn ValueWriter,
) -> Result<()> {
    use sqlx::postgres::PgValueFormat;
    for i in 0..row.len() {
        let reader = readers.get(i).copied().unwrap_or(ColumnReader::Other);
        if reader != ColumnReader::Other {
            let raw = row.try_get_raw(i).map_err(pg_error)?;
            if raw.is_null() {
                out.null();
                continue;
            }
            if raw.format() == PgValueFormat::Binary
                && let Ok(bytes) = raw.as_bytes()
                && reader.write(bytes, out)
            {
                continue;
            }
        }
        write_value(row, i, out).map_err(|e| e.in_context(format_args!("row {number}")))?;
    }
    Ok(())
}

/// Writes column `i` of `row` into a batch's row as [`decode_value`] reads
/// it: the values [`ColumnReader`] does not read (or could not, and
/// `decode_value` then reports why).
fn write_value(row: &PgRow, i: usize, out: &mut dyn ValueWriter) -> Result<()> {
    let raw = row.try_get_raw(i).map_err(pg_error)?;
    if raw.is_null() {
        out.null();
        return Ok(());
    }
    // Dates and timestamps read from their binary form here; anything
    // else, and any error, through `decode_value` itself.
    let type_info = raw.type_info();
    let name = type_info.name();
    match name {
        "DATE" | "TIMESTAMP" | "TIMESTAMPTZ" => match decode_temporal(&raw, name) {
            Ok(value) => out.value(&value),
            Err(_) => out.value(&decode_value(row, i)?),
        },
        _ => out.value(&decode_value(row, i)?),
    }
    Ok(())
}

/// Reads column `i` of `row` by its PostgreSQL type.
fn decode_value(row: &PgRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i).map_err(pg_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // Borrowed, not copied: this runs for every value of every row. The
    // arms below decode unchecked: the type name they match on is the check
    // (try_get would look the value up and compare its type once more).
    let type_info = raw.type_info();
    let name = type_info.name();
    let column = || row.columns().get(i).map(|c| c.name()).unwrap_or_default();
    let get = |e: sqlx::Error| pg_error(e);
    Ok(match name {
        "BOOL" => Value::Bool(row.try_get_unchecked(i).map_err(get)?),
        "INT2" => Value::Int(i64::from(row.try_get_unchecked::<i16, _>(i).map_err(get)?)),
        "INT4" => Value::Int(i64::from(row.try_get_unchecked::<i32, _>(i).map_err(get)?)),
        "INT8" => Value::Int(row.try_get_unchecked(i).map_err(get)?),
        "OID" => Value::Int(i64::from(
            row.try_get_unchecked::<Oid, _>(i).map_err(get)?.0,
        )),
        "FLOAT4" => Value::Float(f64::from(row.try_get_unchecked::<f32, _>(i).map_err(get)?)),
        "FLOAT8" => Value::Float(row.try_get_unchecked(i).map_err(get)?),
        "NUMERIC" => {
            // NUMERIC 'NaN' and ±'Infinity' (PostgreSQL 14+) have no exact
            // decimal form; the sign word of the binary form tells them.
            let bytes = raw.as_bytes().ok();
            let word = |at: usize| {
                bytes
                    .and_then(|b| b.get(at..at + 2))
                    .map(|s| u16::from_be_bytes([s[0], s[1]]))
            };
            match word(4) {
                Some(0xC000) => Value::Float(f64::NAN),
                Some(0xD000) => Value::Float(f64::INFINITY),
                Some(0xF000) => Value::Float(f64::NEG_INFINITY),
                _ => {
                    let d: BigDecimal = row.try_get_unchecked(i).map_err(get)?;
                    // The display scale PostgreSQL keeps (NUMERIC(38, 9) has 9
                    // fraction digits); the base-10000 digits may carry more zeros.
                    let d = match word(6) {
                        Some(scale) => d.with_scale(i64::from(scale)),
                        None => d,
                    };
                    Value::Decimal(d.to_plain_string())
                }
            }
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "XML" | "UNKNOWN" => {
            Value::Text(row.try_get_unchecked(i).map_err(get)?)
        }
        "BYTEA" => Value::Bytes(row.try_get_unchecked(i).map_err(get)?),
        // The internal one-byte `"char"` (catalogue columns such as
        // `pg_constraint.contype`): as PostgreSQL prints it, the byte as a
        // character, an empty text for 0, `\ooo` for a byte past ASCII.
        "int2vector" | "INT2VECTOR" | "oidvector" | "OIDVECTOR" => {
            let bytes = raw.as_bytes().map_err(|e| Error::internal(e.to_string()))?;
            let numbers = vector_elements(bytes).ok_or_else(|| unmappable(column(), name))?;
            Value::Json(format!(
                "[{}]",
                numbers
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        }
        "\"CHAR\"" => {
            Value::Text(internal_char(raw.as_bytes().map_err(|e| {
                Error::internal(format!("column `{}`: {e}", column()))
            })?))
        }
        // Read from their binary form here: sqlx's chrono decoding panics
        // on `infinity` and turns `24:00:00` into midnight.
        "DATE" | "TIME" | "TIMESTAMP" | "TIMESTAMPTZ" | "TIMETZ" => {
            decode_temporal(&raw, name).map_err(|why| temporal_error(column(), name, &why))?
        }
        "UUID" => Value::Text(
            row.try_get_unchecked::<Uuid, _>(i)
                .map_err(get)?
                .hyphenated()
                .to_string(),
        ),
        "JSON" | "JSONB" => {
            let Json(raw): Json<Box<JsonRawValue>> = row.try_get_unchecked(i).map_err(get)?;
            Value::Json(raw.get().to_owned())
        }
        "INTERVAL" => {
            let v: sqlx::postgres::types::PgInterval = row.try_get_unchecked(i).map_err(get)?;
            Value::Text(format_interval(v.months, v.days, v.microseconds))
        }
        _ => match type_info.kind() {
            // An enum's binary form is its label.
            PgTypeKind::Enum(_) => Value::Text(row.try_get_unchecked(i).map_err(get)?),
            PgTypeKind::Array(element) => {
                decode_array(row, i, element.name()).ok_or_else(|| unmappable(column(), name))??
            }
            _ => return Err(unmappable(column(), name)),
        },
    })
}

/// Days from 0001-01-01 (day 1) to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;
/// Seconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A DATE, TIME, TIMETZ, TIMESTAMP or TIMESTAMPTZ from its binary form.
/// `infinity` and `-infinity` (dates and timestamps) and `24:00:00` (times)
/// come back as that text, as DuckDB's do; a value chrono cannot hold (a year
/// past 262142) is an error, for the caller to name the column.
fn decode_temporal(
    raw: &sqlx::postgres::PgValueRef<'_>,
    name: &str,
) -> std::result::Result<Value, String> {
    use sqlx::postgres::PgValueFormat;
    let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
    if raw.format() == PgValueFormat::Text {
        // Results are read in binary; text would only come from a simple
        // query. PostgreSQL's own text, whatever the value.
        return std::str::from_utf8(bytes)
            .map(|t| Value::Text(t.to_owned()))
            .map_err(|e| e.to_string());
    }
    temporal_from_binary(bytes, name)
}

/// The error of a DATE, TIME or TIMESTAMP value iadb cannot carry
/// ([`decode_temporal`]'s `why`), naming its column and type.
fn temporal_error(column: &str, type_name: &str, why: &str) -> Error {
    Error::invalid_argument(format!(
        "column `{column}` ({}): {why}; cast it in the query (e.g. `{column}::text`)",
        type_name.to_lowercase(),
    ))
}

/// [`decode_temporal`] of a value's binary form (`name` is its type).
fn temporal_from_binary(bytes: &[u8], name: &str) -> std::result::Result<Value, String> {
    let wrong_size = || format!("unexpected {}-byte binary {name} value", bytes.len());
    let int64 = |at: usize| -> std::result::Result<i64, String> {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or_else(wrong_size)
    };
    match name {
        "DATE" => {
            let days = bytes
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(i32::from_be_bytes)
                .ok_or_else(wrong_size)?;
            Ok(match days {
                i32::MAX => Value::Text("infinity".into()),
                i32::MIN => Value::Text("-infinity".into()),
                days => Value::Date(
                    days.checked_add(PG_EPOCH_DAYS_FROM_CE)
                        .and_then(NaiveDate::from_num_days_from_ce_opt)
                        .ok_or_else(|| {
                            format!("the date {days} days from 2000-01-01 is outside the years iadb carries (-262143 to 262142)")
                        })?,
                ),
            })
        }
        "TIMESTAMP" | "TIMESTAMPTZ" => {
            let micros = int64(0)?;
            let instant = match micros {
                i64::MAX => return Ok(Value::Text("infinity".into())),
                i64::MIN => return Ok(Value::Text("-infinity".into())),
                us => PG_EPOCH_UNIX_SECONDS
                    .checked_mul(1_000_000)
                    .and_then(|epoch| us.checked_add(epoch))
                    .and_then(DateTime::from_timestamp_micros)
                    .ok_or_else(|| {
                        format!("the timestamp {us} µs from 2000-01-01 is outside the years iadb carries (-262143 to 262142)")
                    })?,
            };
            Ok(if name == "TIMESTAMP" {
                Value::DateTime(instant.naive_utc())
            } else {
                Value::TimestampTz(instant)
            })
        }
        "TIME" => Ok(match time_of_day(int64(0)?)? {
            Ok(t) => Value::Time(t),
            Err(text) => Value::Text(text),
        }),
        "TIMETZ" => {
            let time = match time_of_day(int64(0)?)? {
                Ok(t) => t.format("%H:%M:%S%.f").to_string(),
                Err(text) => text,
            };
            let west = bytes
                .get(8..12)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(i32::from_be_bytes)
                .ok_or_else(wrong_size)?;
            // PostgreSQL counts the offset west of UTC; it is printed east.
            let east = -i64::from(west);
            let sign = if east < 0 { '-' } else { '+' };
            let east = east.unsigned_abs();
            let mut text = format!("{time}{sign}{:02}:{:02}", east / 3600, east % 3600 / 60);
            if east % 60 != 0 {
                text.push_str(&format!(":{:02}", east % 60));
            }
            Ok(Value::Text(text))
        }
        other => Err(format!("{other} is not a date or time type")),
    }
}

/// A TIME's microseconds since midnight as a time of day; `24:00:00`, which
/// PostgreSQL allows (and makes of `23:59:60`) and a time of day cannot be,
/// as that text.
fn time_of_day(micros: i64) -> std::result::Result<std::result::Result<NaiveTime, String>, String> {
    if micros == MICROS_PER_DAY {
        return Ok(Err("24:00:00".into()));
    }
    let out_of_range = || format!("the time {micros} µs after midnight is out of range");
    if !(0..MICROS_PER_DAY).contains(&micros) {
        return Err(out_of_range());
    }
    let secs = u32::try_from(micros / 1_000_000).map_err(|_| out_of_range())?;
    let nanos = u32::try_from(micros % 1_000_000 * 1_000).map_err(|_| out_of_range())?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
        .map(Ok)
        .ok_or_else(out_of_range)
}

fn unmappable(column: &str, type_name: &str) -> Error {
    Error::invalid_argument(format!(
        "column `{column}` has type {type_name}, which iadb cannot map to a value (cast it in the query, e.g. `{column}::text`)"
    ))
}

/// The elements of an `int2vector` or `oidvector` from its binary form (an
/// array's, one dimension counted from 0, which sqlx's array decoding
/// refuses): `None` when the bytes are not that.
fn vector_elements(bytes: &[u8]) -> Option<Vec<i64>> {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let dimensions = word(0)?;
    if dimensions == 0 {
        return Some(Vec::new());
    }
    if dimensions != 1 {
        return None;
    }
    let count = usize::try_from(word(12)?).ok()?;
    let mut at = 20;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = usize::try_from(word(at)?).ok()?;
        let value = bytes.get(at + 4..at + 4 + len)?;
        out.push(match *value {
            [a, b] => i64::from(i16::from_be_bytes([a, b])),
            [a, b, c, d] => i64::from(u32::from_be_bytes([a, b, c, d])),
            _ => return None,
        });
        at += 4 + len;
    }
    Some(out)
}

/// PostgreSQL's text of a `"char"` byte (its `charout`).
fn internal_char(bytes: &[u8]) -> String {
    match bytes.first() {
        None | Some(0) => String::new(),
        Some(&b) if b.is_ascii() => char::from(b).to_string(),
        Some(&b) => format!("\\{b:03o}"),
    }
}

/// Arrays of common element types come back as a JSON array (the
/// catalogue's `int2vector` and `oidvector` too: [`vector_elements`]).
fn decode_array(row: &PgRow, i: usize, element: &str) -> Option<Result<Value>> {
    fn json<T: serde::Serialize>(v: std::result::Result<T, sqlx::Error>) -> Result<Value> {
        let v = v.map_err(pg_error)?;
        serde_json::to_string(&v)
            .map(Value::Json)
            .map_err(|e| Error::internal(format!("cannot write array as JSON: {e}")))
    }
    Some(match element {
        "INT2" => json(row.try_get::<Vec<Option<i16>>, _>(i)),
        "INT4" => json(row.try_get::<Vec<Option<i32>>, _>(i)),
        "INT8" => json(row.try_get::<Vec<Option<i64>>, _>(i)),
        "FLOAT4" => json(row.try_get::<Vec<Option<f32>>, _>(i)),
        "FLOAT8" => json(row.try_get::<Vec<Option<f64>>, _>(i)),
        "BOOL" => json(row.try_get::<Vec<Option<bool>>, _>(i)),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => json(row.try_get::<Vec<Option<String>>, _>(i)),
        "UUID" => json(row.try_get::<Vec<Option<Uuid>>, _>(i).map(|v| {
            v.into_iter()
                .map(|u| u.map(|u| u.hyphenated().to_string()))
                .collect::<Vec<_>>()
        })),
        "NUMERIC" => json(row.try_get::<Vec<Option<BigDecimal>>, _>(i).map(|v| {
            v.into_iter()
                .map(|d| d.map(|d| d.to_plain_string()))
                .collect::<Vec<_>>()
        })),
        _ => return None,
    })
}

/// ISO 8601 duration, e.g. `P1Y2M3DT4H5M6.5S`.
fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        out.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        out.push_str(&format!("{months}M"));
    }
    if days != 0 {
        out.push_str(&format!("{days}D"));
    }
    if micros != 0 {
        out.push('T');
        let (hours, rest) = (micros / 3_600_000_000, micros % 3_600_000_000);
        let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
        if hours != 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if rest != 0 {
            let seconds = rest as f64 / 1_000_000.0;
            out.push_str(&format!("{seconds}S"));
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// How often (ms) PostgreSQL 14+ checks, while a statement runs, that its
/// client is still connected.
const CONNECTION_CHECK_INTERVAL_MS: u32 = 500;

/// Run on every new connection: `client_connection_check_interval`, so that
/// a statement whose caller is gone stops. Older servers do not know the
/// setting (42704); they keep the old behaviour.
async fn on_connect(conn: &mut sqlx::PgConnection) -> std::result::Result<(), sqlx::Error> {
    let set = format!("SET client_connection_check_interval = {CONNECTION_CHECK_INTERVAL_MS}");
    match conn.execute(sqlx::raw_sql(&set)).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The reset a connection runs when it goes back to the pool: what
/// `DISCARD ALL` does except `DEALLOCATE ALL` and `DISCARD PLANS` (sqlx
/// keeps its prepared statements across calls, and iadb's pooled calls may
/// not `PREPARE`), then iadb's own settings again (`RESET ALL` undoes them),
/// then whether the connection is inside a transaction block begun by an
/// earlier message: there `now()` (the block's start) differs from
/// `statement_timestamp()` (this message's arrival), while in the implicit
/// block of this message they are equal. Session state that slipped past
/// the checks of pooled calls (`set_config(..., false)`, a TEMP table or an
/// advisory lock taken inside a function) does not reach the next caller.
fn reset_sql(time_zone: Option<&str>) -> String {
    let mut sql = String::from(
        "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; \
         DISCARD SEQUENCES; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; ",
    );
    sql.push_str(&format!(
        "SELECT set_config('client_connection_check_interval', '{CONNECTION_CHECK_INTERVAL_MS}', false) \
         WHERE current_setting('client_connection_check_interval', true) IS NOT NULL; "
    ));
    if let Some(set) = time_zone {
        sql.push_str(set);
        sql.push_str("; ");
    }
    sql.push_str("SELECT now() <> statement_timestamp()");
    sql
}

/// Runs `reset` ([`reset_sql`]) on a connection going back to the pool:
/// `Ok(true)` keeps it; `Ok(false)` (it was inside a transaction, open or
/// failed) has sqlx close it; an error closes it too.
async fn reset_connection(
    conn: &mut sqlx::PgConnection,
    reset: &str,
) -> std::result::Result<bool, sqlx::Error> {
    match conn.fetch_all(sqlx::raw_sql(reset)).await {
        Ok(rows) => {
            let in_block = rows
                .last()
                .map(|row| row.try_get::<bool, _>(0))
                .transpose()?
                .unwrap_or(true);
            Ok(!in_block)
        }
        // In a failed transaction block every statement is refused.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prepares `sql` on `conn` with the declared types and returns the
/// statement's columns and the arguments bound as the resolved types.
async fn prepare(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    types: &[PgTypeInfo],
    params: &[Value],
) -> Result<(Arc<[Column]>, PgArguments)> {
    let statement = conn.prepare_with(sql, types).await.map_err(pg_error)?;
    let columns = statement
        .columns()
        .iter()
        .map(|c| Column::new(c.name(), c.type_info().name()))
        .collect();
    let resolved: Vec<PgTypeInfo> = match statement.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => types.to_vec(),
    };
    Ok((columns, bind_all(params, &resolved)?))
}

/// Runs one statement (without parameters: a script) on `conn`.
async fn execute_checked(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<ExecuteOutcome> {
    let (text, types) = prepare_text(sql, params)?;
    let done = if params.is_empty() {
        // No parameters: the text may be a script of several statements.
        conn.execute(sqlx::raw_sql(&text)).await.map_err(pg_error)?
    } else {
        let (_, args) = prepare(conn, &text, &types, params).await?;
        match conn
            .execute(sqlx::query_with(&text, args))
            .await
            .map_err(pg_error)
        {
            Err(e) if is_stale_plan(&e) => {
                // The cache goes either way (see `steps`); inside a
                // transaction the error has aborted it.
                let cleared = sqlx::Connection::clear_cached_statements(&mut *conn).await;
                if sqlx::Connection::is_in_transaction(&*conn) {
                    return Err(e);
                }
                cleared.map_err(pg_error)?;
                let (_, args) = prepare(conn, &text, &types, params).await?;
                conn.execute(sqlx::query_with(&text, args))
                    .await
                    .map_err(pg_error)?
            }
            done => done?,
        }
    };
    if may_change_tables(sql) {
        // Statements cached on this connection for a table just dropped,
        // made again or altered would fail (`is_stale_plan`); other
        // connections meet that on their next use and retry.
        sqlx::Connection::clear_cached_statements(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    Ok(ExecuteOutcome {
        rows_affected: done.rows_affected(),
        last_insert_id: None,
    })
}

/// ExecuteMany's statement for one signature (the kinds of its
/// parameters): its text and the parameter types its prepare resolved.
struct ManyStatement {
    kinds: Vec<&'static str>,
    text: String,
    resolved: Vec<PgTypeInfo>,
}

impl ManyStatement {
    /// Rewrites and prepares `sql` for parameters of the kinds of `params`
    /// (the prepare is cached on the connection, as `execute_checked`'s is).
    async fn make(conn: &mut sqlx::PgConnection, sql: &str, params: &[Value]) -> Result<Self> {
        let (text, types) = prepare_text(sql, params)?;
        let statement = conn.prepare_with(&text, &types).await.map_err(pg_error)?;
        let resolved = match statement.parameters() {
            Some(Either::Left(resolved)) => resolved.to_vec(),
            _ => types,
        };
        Ok(Self {
            kinds: params.iter().map(Value::kind_name).collect(),
            text: text.into_owned(),
            resolved,
        })
    }

    /// Whether `params` have the kinds this statement was made for.
    fn fits(&self, params: &[Value]) -> bool {
        self.kinds.len() == params.len()
            && self
                .kinds
                .iter()
                .zip(params)
                .all(|(k, p)| *k == p.kind_name())
    }
}

/// Whether `sql` may change a table's columns: it holds the word `CREATE`,
/// `DROP` or `ALTER` (a literal or a name that holds one only costs a
/// cache clear).
fn may_change_tables(sql: &str) -> bool {
    sql.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| {
            ["CREATE", "DROP", "ALTER"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        })
}

/// A statement checked for PostgreSQL: its text (placeholders rewritten,
/// prefixed with its type signature), the types it declares, and the
/// parameters, bound once the prepare has resolved their types.
pub struct PgStatement {
    text: String,
    types: Vec<PgTypeInfo>,
    params: Vec<Value>,
    arrow: Option<iadb::arrow::ArrowWanted>,
    /// Run alone on a lent connection ([`SqlxEngine::alone`]): its Arrow
    /// result may be read through COPY ([`copy`]).
    alone: bool,
}

/// Prepares `statement` on `conn` (its columns come from the prepare,
/// before the first row), then runs it. A cached statement whose result
/// columns changed since it was prepared ([`is_stale_plan`]) is dropped
/// from the cache and, outside a transaction, prepared again and run once
/// more: nothing is sent before the first row or the outcome is known.
fn steps(conn: &mut sqlx::PgConnection, statement: PgStatement) -> Steps<'_> {
    let PgStatement {
        text,
        types,
        params,
        arrow,
        alone,
    } = statement;
    Box::pin(async_stream::try_stream! {
        let mut retried = false;
        loop {
            let in_transaction = sqlx::Connection::is_in_transaction(&*conn);
            let (columns, args) = prepare(conn, &text, &types, &params).await?;
            // Arrow through COPY: a query alone on its connection, without
            // parameters, over columns of the common types.
            if let Some(wanted) = arrow
                && alone
                && !in_transaction
                && !retried
                && params.is_empty()
                && let Some(query) = copy::copyable(&text)
                && let Some(readers) = copy::readers(&columns)
            {
                if !copy::begin(conn, query, &columns).await? {
                    // The columns changed since the statement was cached:
                    // prepared again, and read the usual way.
                    retried = true;
                    continue;
                }
                let mut steps = copy::steps(&mut *conn, query, columns, readers, wanted);
                while let Some(step) = steps.next().await {
                    yield step?;
                }
                break;
            }
            let readers = ColumnReader::of_columns(&columns);
            let mut steps = prepared_steps::<PostgresEngine, _, _>(
                &mut *conn,
                columns,
                text.clone(),
                args,
                move |row: &PgRow, number, out: &mut dyn ValueWriter| {
                    decode_row(row, number, &readers, out)
                },
                |outcome, done| outcome.rows_affected += done.rows_affected(),
                arrow,
            );
            let columns = steps.next().await;
            let first = steps.next().await;
            if !retried && matches!(&first, Some(Err(e)) if is_stale_plan(e)) {
                drop(steps);
                // The cache goes either way, so that the next statement on
                // this connection is prepared afresh.
                let cleared = sqlx::Connection::clear_cached_statements(&mut *conn).await;
                if !in_transaction {
                    cleared.map_err(pg_error)?;
                    retried = true;
                    continue;
                }
                if let Some(Err(e)) = first {
                    Err(e)?;
                }
                break;
            }
            let mut rest = futures::stream::iter([columns, first].into_iter().flatten()).chain(steps);
            while let Some(step) = rest.next().await {
                let step = step?;
                if matches!(step, Step::Done(_)) && may_change_tables(&text) {
                    // As in `execute_checked`: DDL sent as a query.
                    drop(rest);
                    sqlx::Connection::clear_cached_statements(&mut *conn)
                        .await
                        .map_err(pg_error)?;
                    yield step;
                    break;
                }
                yield step;
            }
            break;
        }
    })
}

/// PostgreSQL refuses to run a cached prepared statement whose result
/// columns changed since it was prepared (its table was dropped and made
/// again, or altered): 0A000 "cached plan must not change result type". The
/// statement has not run. The connection's cache is cleared; outside a
/// transaction the statement is prepared again ([`steps`], [`execute_checked`]),
/// inside one the error has aborted the transaction and is returned.
fn is_stale_plan(e: &Error) -> bool {
    e.code() == Some("0A000")
        && e.message()
            .contains("cached plan must not change result type")
}

impl SqlxEngine for PostgresEngine {
    type DB = Postgres;
    type Guard = ();
    type Statement = PgStatement;
    const ENGINE: DatabaseType = DatabaseType::Postgresql;

    fn map_error(e: sqlx::Error) -> Error {
        pg_error(e)
    }

    fn begin_plan(options: &TxOptions) -> Result<BeginPlan> {
        let mut begin = String::from("BEGIN");
        match options.isolation {
            Isolation::Default => {}
            level @ (Isolation::ReadCommitted
            | Isolation::RepeatableRead
            | Isolation::Serializable) => {
                begin.push_str(" ISOLATION LEVEL ");
                begin.push_str(level.sql());
            }
            other @ Isolation::Snapshot => {
                return Err(other.refused(
                    DatabaseType::Postgresql,
                    "READ COMMITTED, REPEATABLE READ (its snapshot isolation) and SERIALIZABLE",
                ));
            }
        }
        if options.read_only {
            begin.push_str(" READ ONLY");
        }
        Ok(BeginPlan {
            before: None,
            begin,
            after: None,
        })
    }

    /// Checked by `execute_checked` (on the connection, as before the generic
    /// adapter): nothing here.
    fn check(_sql: &str, _params: &[Value]) -> Result<()> {
        Ok(())
    }

    fn statement(sql: &str, params: &[Value]) -> Result<PgStatement> {
        let (text, types) = prepare_text(sql, params)?;
        Ok(PgStatement {
            text: text.into_owned(),
            types,
            params: params.to_vec(),
            arrow: None,
            alone: false,
        })
    }

    fn with_arrow(statement: PgStatement, wanted: iadb::arrow::ArrowWanted) -> PgStatement {
        PgStatement {
            arrow: Some(wanted),
            ..statement
        }
    }

    fn alone(statement: PgStatement) -> PgStatement {
        PgStatement {
            alone: true,
            ..statement
        }
    }

    sqlx_statement_paths!(sqlx::PgConnection);

    /// The generic loop ([`SqlxEngine::execute_many_on`]) with the
    /// statement's text, its prepare and its parameter types made once per
    /// signature (the parameters' kinds) rather than once per set: each
    /// set is then only bound and run, as a direct driver's loop does.
    fn execute_many_on<'a>(
        conn: &'a mut sqlx::PgConnection,
        sql: &'a str,
        param_sets: &'a [Vec<Value>],
    ) -> BoxFuture<'a, Result<ExecuteOutcome>> {
        Box::pin(async move {
            check_sql(sql)?;
            let mut tx = sqlx::Connection::begin(conn).await.map_err(pg_error)?;
            let mut outcome = ExecuteOutcome::default();
            let mut made: Option<ManyStatement> = None;
            for (index, params) in param_sets.iter().enumerate() {
                let done = async {
                    if params.is_empty() {
                        return execute_checked(&mut tx, sql, params).await;
                    }
                    let fresh = match made.take() {
                        Some(m) if m.fits(params) => m,
                        _ => ManyStatement::make(&mut tx, sql, params).await?,
                    };
                    let statement = made.insert(fresh);
                    let args = bind_all(params, &statement.resolved)?;
                    let done = (&mut *tx)
                        .execute(sqlx::query_with(&statement.text, args))
                        .await
                        .map_err(pg_error)?;
                    Ok(ExecuteOutcome {
                        rows_affected: done.rows_affected(),
                        last_insert_id: None,
                    })
                }
                .await
                .map_err(|e| e.in_context(format_args!("parameter set {index}")))?;
                outcome.rows_affected += done.rows_affected;
            }
            if made.is_some() && may_change_tables(sql) {
                sqlx::Connection::clear_cached_statements(&mut *tx)
                    .await
                    .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(outcome)
        })
    }

    fn table_exists<'a>(
        conn: &'a mut sqlx::PgConnection,
        table: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        let (schema, name) = split_schema(table);
        let sql = "SELECT 1 FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relname = ? AND n.nspname = COALESCE(?, current_schema()) \
                   AND c.relkind IN ('r', 'v', 'm', 'p', 'f')";
        let params = vec![
            Value::Text(name.to_owned()),
            schema.map_or(Value::Null, |s| Value::Text(s.to_owned())),
        ];
        finds_a_row::<Self>(conn, sql.to_owned(), params)
    }

    /// A superuser (`rolsuper`), or a member of the roles that read and
    /// write the server's files or run programs on it (`COPY ... FROM
    /// PROGRAM`, `pg_read_file`).
    fn broad_privileges(db: &dyn DatabaseInterface) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            const CHECKS: &[&str] = &[
                "pg_read_server_files",
                "pg_write_server_files",
                "pg_execute_server_program",
            ];
            let sql = format!(
                "SELECT r.rolsuper{} FROM pg_roles r WHERE r.rolname = current_user",
                CHECKS
                    .iter()
                    .map(|role| format!(", pg_has_role(current_user, '{role}', 'MEMBER')"))
                    .collect::<String>()
            );
            let Some(row) = db.fetch_one(&sql, &[]).await? else {
                return Ok(Vec::new());
            };
            let granted = |i: usize| matches!(row.get_index(i), Some(Value::Bool(true)));
            if granted(0) {
                return Ok(vec!["superuser (rolsuper)".to_owned()]);
            }
            Ok(CHECKS
                .iter()
                .enumerate()
                .filter(|(i, _)| granted(i + 1))
                .map(|(_, role)| format!("member of {role}"))
                .collect())
        })
    }

    fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// With several hosts: the one that is the primary now.
    fn first_connect_options(&self) -> BoxFuture<'_, Result<PgConnectOptions>> {
        Box::pin(async move {
            if self.hosts.is_empty() {
                return Ok(self.options.clone());
            }
            let (options, conn) = find_primary(&self.options, &self.hosts).await?;
            close_quietly(conn);
            Ok(options)
        })
    }

    fn watch_pool(&self, pool: &sqlx::Pool<Postgres>) {
        if !self.hosts.is_empty() {
            tokio::spawn(watch_primary(
                pool.clone(),
                self.options.clone(),
                self.hosts.clone(),
            ));
        }
    }

    /// Each new connection gets iadb's settings ([`on_connect`], the
    /// URL's time zone); an idle one is pinged before it is lent; each
    /// runs [`reset_sql`] when it comes back.
    fn pool_options(
        &self,
        base: PoolOptions<Postgres>,
        rolled_back: Arc<AtomicU64>,
    ) -> Result<PoolOptions<Postgres>> {
        let multi_host = !self.hosts.is_empty();
        Ok(base
            .after_connect({
                let time_zone = self.time_zone.clone();
                move |conn, _| {
                    let time_zone = time_zone.clone();
                    Box::pin(async move {
                        // A host that is in recovery now (the old primary,
                        // demoted) is refused; the pool tries again, and
                        // [`watch_primary`] points it at the new primary.
                        if multi_host && is_primary_conn(conn).await != Ok(true) {
                            return Err(sqlx::Error::Configuration(
                                "this host is not the primary (it is in recovery)".into(),
                            ));
                        }
                        on_connect(conn).await?;
                        if let Some(set) = time_zone {
                            conn.execute(sqlx::raw_sql(&set)).await?;
                        }
                        Ok(())
                    })
                }
            })
            .before_acquire(ping_if_idle)
            .after_release({
                let reset = self.reset.clone();
                move |conn, _| {
                    let reset = reset.clone();
                    let dirty = rolled_back.clone();
                    Box::pin(async move {
                        let clean = reset_connection(conn, &reset).await?;
                        if !clean {
                            dirty.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(clean)
                    })
                }
            }))
    }

    /// A connection whose call was dropped before its statement finished
    /// is closed rather than returned: returning it would first wait for
    /// the statement or drain its result. PostgreSQL notices the closed
    /// connection within `client_connection_check_interval` (set on every
    /// connection, see [`CONNECTION_CHECK_INTERVAL_MS`]) and ends the
    /// statement, even one that sends nothing, such as `pg_sleep`.
    fn abandon(conn: PoolConnection<Postgres>, _guard: (), _call: Call) {
        drop(conn.detach());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_chars_print_as_postgresql_prints_them() {
        assert_eq!(internal_char(b"p"), "p");
        assert_eq!(internal_char(&[0]), "");
        assert_eq!(internal_char(&[]), "");
        assert_eq!(internal_char(&[0xe9]), "\\351");
    }

    #[test]
    fn vectors_decode_from_their_binary_form() {
        // int2vector '1 3': one dimension of 2 from 0, elements int2.
        let mut bytes = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 21, 0, 0, 0, 2, 0, 0, 0, 0];
        bytes.extend([0, 0, 0, 2, 0, 1, 0, 0, 0, 2, 0, 3]);
        assert_eq!(vector_elements(&bytes), Some(vec![1, 3]));
        assert_eq!(
            vector_elements(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 21]),
            Some(vec![])
        );
        // Cut short, or a count past the bytes: not a vector, never a panic.
        assert_eq!(vector_elements(&bytes[..bytes.len() - 1]), None);
        assert_eq!(vector_elements(&[0, 0, 0, 1]), None);
    }

    /// The readers of the common types give the values `decode_value`
    /// gives; a value not in its type's binary form (a wrong length,
    /// text that is not UTF-8) is left to `write_value`, never guessed.
    #[test]
    fn column_readers_read_binary_values_and_leave_the_rest() {
        fn read(reader: ColumnReader, bytes: &[u8]) -> Option<Vec<Value>> {
            let mut batch = iadb::RowBatch::new();
            let mut row = batch.row();
            let written = reader.write(bytes, &mut row);
            row.end();
            written.then(|| batch.into_rows().next().expect("a row").expect("decodes"))
        }
        use ColumnReader::*;
        assert_eq!(ColumnReader::of("VARCHAR"), Text);
        assert_eq!(ColumnReader::of("INT8"), Int8);
        assert_eq!(ColumnReader::of("NUMERIC"), Other);
        assert_eq!(ColumnReader::of("\"CHAR\""), Other);
        assert_eq!(
            read(Text, "é".as_bytes()),
            Some(vec![Value::Text("é".into())])
        );
        assert_eq!(read(Text, &[0xff]), None);
        assert_eq!(
            read(Int8, &(-5i64).to_be_bytes()),
            Some(vec![Value::Int(-5)])
        );
        assert_eq!(
            read(Int4, &i32::MIN.to_be_bytes()),
            Some(vec![Value::Int(i64::from(i32::MIN))])
        );
        assert_eq!(
            read(Int2, &(-2i16).to_be_bytes()),
            Some(vec![Value::Int(-2)])
        );
        assert_eq!(
            read(Float8, &1.5f64.to_be_bytes()),
            Some(vec![Value::Float(1.5)])
        );
        assert_eq!(
            read(Float4, &0.25f32.to_be_bytes()),
            Some(vec![Value::Float(0.25)])
        );
        assert_eq!(read(Bool, &[1]), Some(vec![Value::Bool(true)]));
        assert_eq!(read(Bool, &[0]), Some(vec![Value::Bool(false)]));
        for (reader, bytes) in [
            (Int8, &[0u8; 4][..]),
            (Int4, &[0; 8][..]),
            (Int2, &[0; 1][..]),
            (Float8, &[0; 4][..]),
            (Float4, &[][..]),
            (Bool, &[0, 1][..]),
            (Other, &[0; 8][..]),
        ] {
            assert_eq!(
                read(reader, bytes),
                None,
                "{reader:?} of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn intervals_format_as_iso_8601() {
        assert_eq!(format_interval(14, 3, 3_723_500_000), "P1Y2M3DT1H2M3.5S");
        assert_eq!(format_interval(0, 0, 0), "PT0S");
        assert_eq!(format_interval(0, -1, 0), "P-1D");
    }

    #[test]
    fn each_type_signature_gets_its_own_statement_text() {
        let (a, _) = prepare_text("SELECT ?", &[Value::Int(1)]).unwrap();
        let (b, _) = prepare_text("SELECT ?", &[Value::Text("x".into())]).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("SELECT $1"), "{a}");
        let (c, _) = prepare_text("SELECT $1", &[Value::Int(1)]).unwrap();
        assert!(c.ends_with("SELECT $1"));
        let err = prepare_text("SELECT ?, ?", &[Value::Int(1)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
