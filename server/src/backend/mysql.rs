//! MySQL and MariaDB through sqlx: a pool whose sessions speak utf8mb4 with
//! `time_zone = '+00:00'` (so TIMESTAMP values are UTC on the wire), and
//! whose rows are read through the binary protocol of prepared statements.
//!
//! Each session adds to the server's `sql_mode`: `PIPES_AS_CONCAT` (`||`
//! concatenates) and `NO_ENGINE_SUBSTITUTION` (sqlx's defaults), and
//! `ANSI_QUOTES` (`"name"` is an identifier; URL option `ansi_quotes=false`
//! turns it off), so that SQL written for the other engines reads the same,
//! then the modes of the URL option `sql_mode` (`?sql_mode=NO_ZERO_DATE`).
//!
//! How each column type becomes a [`Value`], and how each `Value` binds, is
//! `docs/types/mysql.md`; the round trip of every row of it is
//! `tests/tests/mysql_types.rs`.

use super::sqlx_common::{
    Call, PoolSlot, Readied, ping_if_idle, prelude::*, prepared_steps, split_schema,
};
use chrono::{TimeZone, Utc};
use futures::TryFutureExt;
use iadb::{DatabaseInterface, ValueWriter};
use sqlx::{
    Arguments, Connection, MySql,
    encode::IsNull,
    error::BoxDynError,
    mysql::{
        MySqlArguments, MySqlConnectOptions, MySqlDatabaseError, MySqlRow, MySqlSslMode,
        MySqlTypeInfo, types::MySqlTime,
    },
};

/// The MySQL / MariaDB adapter: the generic sqlx adapter on
/// [`MySqlEngine`].
pub type MySqlBackend = SqlxBackend<MySqlEngine>;

/// MySQL and MariaDB, for the generic sqlx adapter and session: the
/// settings from the URL.
pub struct MySqlEngine {
    options: MySqlConnectOptions,
    /// Modes added to `sql_mode` on every new connection (`ANSI_QUOTES`
    /// unless turned off, then the URL's `sql_mode`), comma-separated.
    added_modes: String,
}

/// URL options this adapter reads; any other is refused, so that a typo in
/// `ssl-mode` cannot silently turn TLS off.
const KNOWN_OPTIONS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl_mode",
    "ssl-ca",
    "ssl_ca",
    "sslrootcert",
    "ssl-cert",
    "ssl_cert",
    "sslcert",
    "ssl-key",
    "ssl_key",
    "sslkey",
    "socket",
    "ansi_quotes",
    "sql_mode",
];

/// The settings of a `mysql:` URL.
impl TryFrom<&ConnectionConfig> for MySqlEngine {
    type Error = Error;

    fn try_from(config: &ConnectionConfig) -> Result<Self> {
        if let Some(unknown) = config
            .options
            .keys()
            .find(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
        {
            return Err(Error::invalid_argument(format!(
                "mysql URL option `{unknown}` is not supported (supported: {})",
                KNOWN_OPTIONS.join(", ")
            )));
        }
        let mut options = MySqlConnectOptions::new()
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_owned()))
            .pipes_as_concat(true)
            .no_engine_substitution(true)
            // sqlx would log each statement's text, literals and all; the
            // server logs its fingerprint instead.
            .disable_statement_logging();
        if let Some(host) = config.host.as_deref().filter(|h| !h.is_empty()) {
            options = options.host(host);
        }
        if let Some(port) = config.port {
            options = options.port(port);
        }
        if let Some(user) = config.username.as_deref().filter(|u| !u.is_empty()) {
            options = options.username(user);
        }
        if let Some(password) = config.password() {
            options = options.password(password);
        }
        if let Some(database) = config.database.as_deref().filter(|d| !d.is_empty()) {
            options = options.database(database);
        }
        if let Some(mode) = option(config, &["ssl-mode", "sslmode", "ssl_mode"]) {
            options = options.ssl_mode(ssl_mode(mode)?);
        }
        if let Some(ca) = option(config, &["ssl-ca", "ssl_ca", "sslrootcert"]) {
            options = options.ssl_ca(ca);
        }
        if let Some(cert) = option(config, &["ssl-cert", "ssl_cert", "sslcert"]) {
            options = options.ssl_client_cert(cert);
        }
        if let Some(key) = option(config, &["ssl-key", "ssl_key", "sslkey"]) {
            options = options.ssl_client_key(key);
        }
        if let Some(socket) = config.option("socket") {
            options = options.socket(socket);
        }
        let ansi_quotes = match config.option("ansi_quotes") {
            None | Some("true" | "1" | "on") => true,
            Some("false" | "0" | "off") => false,
            Some(other) => {
                return Err(Error::invalid_argument(format!(
                    "mysql URL option ansi_quotes=`{other}`: expected true or false"
                )));
            }
        };
        // Modes added to the server's `sql_mode` on every connection (the
        // place for session settings: a pooled call may not SET them).
        let extra_sql_mode = super::sql_text_option(
            config,
            "sql_mode",
            |b| b.is_ascii_alphanumeric() || b == b'_' || b == b',',
            "mode names separated by commas (letters, digits and `_`)",
        )?
        .map(str::to_ascii_uppercase);
        let mut added_modes = Vec::new();
        if ansi_quotes {
            added_modes.push("ANSI_QUOTES".to_owned());
        }
        added_modes.extend(extra_sql_mode);
        Ok(MySqlEngine {
            options,
            added_modes: added_modes.join(","),
        })
    }
}

/// The first of `keys` present in the URL's options.
fn option<'a>(config: &'a ConnectionConfig, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| config.option(k))
}

/// MySQL's `ssl-mode` values, and libpq's spellings of the same modes.
fn ssl_mode(mode: &str) -> Result<MySqlSslMode> {
    Ok(match mode.to_ascii_lowercase().replace('-', "_").as_str() {
        "disabled" | "disable" => MySqlSslMode::Disabled,
        "preferred" | "prefer" => MySqlSslMode::Preferred,
        "required" | "require" => MySqlSslMode::Required,
        "verify_ca" => MySqlSslMode::VerifyCa,
        "verify_identity" | "verify_full" => MySqlSslMode::VerifyIdentity,
        _ => {
            return Err(Error::invalid_argument(format!(
                "unknown ssl-mode `{mode}` (disabled, preferred, required, verify_ca, verify_identity)"
            )));
        }
    })
}

/// Refines sqlx's classification by MySQL / MariaDB error number. What is
/// not listed (syntax 1064, unknown table 1146, unknown column 1054, data
/// errors such as 1264 out of range or 1366 bad value) is the caller's SQL:
/// INVALID_ARGUMENT.
fn classify_mysql(e: &dyn DatabaseError) -> Option<ErrorKind> {
    let number = e.try_downcast_ref::<MySqlDatabaseError>()?.number();
    Some(match number {
        // Foreign key (1216, 1217, 1451, 1452), not null (1048, 1364),
        // CHECK (MySQL 3819, MariaDB 4025 ER_CONSTRAINT_FAILED).
        1216 | 1217 | 1451 | 1452 | 1830 | 1834 | 1048 | 1364 | 3819 | 4025 => {
            ErrorKind::FailedPrecondition
        }
        // Deadlock: the engine rolled the whole transaction back.
        1213 => ErrorKind::Aborted,
        // An object that already exists: database (1007), table or view
        // (1050), index (1061), trigger (1359), routine (1304), event
        // (1537), sequence or other object (MariaDB 4089 has none; 1813
        // is a tablespace).
        1007 | 1050 | 1061 | 1304 | 1359 | 1537 | 1813 => ErrorKind::AlreadyExists,
        // Dropping what a foreign key still references (3730).
        3730 => ErrorKind::FailedPrecondition,
        // Lock wait timeout (only the statement is rolled back), too many
        // connections, server shutting down, connection killed, and the
        // client-side connection errors.
        1205 | 1040 | 1203 | 1053 | 1927 | 2002 | 2003 | 2006 | 2013 => ErrorKind::Unavailable,
        1045 => ErrorKind::Unauthenticated,
        // Database, table, column or routine access denied; read-only server
        // or transaction.
        1044 | 1142 | 1143 | 1227 | 1370 | 1290 | 1792 | 1836 => ErrorKind::PermissionDenied,
        // MySQL max_execution_time (3024), MariaDB max_statement_time (1969).
        3024 | 1969 => ErrorKind::DeadlineExceeded,
        1317 => ErrorKind::Cancelled,
        // Out of memory, table full, packet over max_allowed_packet.
        1037 | 1041 | 1114 | 1153 | 1301 => ErrorKind::ResourceExhausted,
        _ => return None,
    })
}

/// Maps a MySQL/MariaDB error; the server's error number travels with the
/// SQLSTATE (many errors share `HY000`).
fn mysql_error(e: sqlx::Error) -> Error {
    let number = match &e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    };
    let error = map_sqlx_error(e, classify_mysql);
    match number {
        Some(n) => error.with_engine_code(n.to_string()),
        None => error,
    }
}

/// An exact decimal bound as its digits with the DECIMAL parameter type, so
/// the engine parses it as a decimal (never through a double) and
/// `SELECT ?` comes back as DECIMAL.
struct DecimalText<'a>(&'a str);

impl sqlx::Type<MySql> for DecimalText<'_> {
    fn type_info() -> MySqlTypeInfo {
        <sqlx::types::BigDecimal as sqlx::Type<MySql>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, MySql> for DecimalText<'_> {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> std::result::Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<'q, MySql>>::encode_by_ref(&self.0, buf)
    }
}

/// `-`/`+`, digits, at most one `.`, optionally an exponent: what MySQL
/// parses as an exact DECIMAL.
fn is_decimal(s: &str) -> bool {
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let digits = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    let mantissa_ok = digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1;
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

fn bind_all(params: &[Value]) -> Result<MySqlArguments> {
    let mut args = MySqlArguments::default();
    for (i, p) in params.iter().enumerate() {
        let n = i + 1;
        if p.is_leap_second() {
            // chrono's leap second: the protocol would carry it as second
            // 59 plus a million microseconds, which the server turns into
            // another time; MySQL stores no leap seconds.
            return Err(Error::invalid_argument(format!(
                "parameter {n}: a leap second (second 60) cannot be stored by MySQL or MariaDB"
            )));
        }
        let added = match p {
            // A NULL typed as a binary string: MariaDB refuses a NULL of
            // a numeric type for a GEOMETRY column, a string fits them all.
            Value::Null => args.add(None::<&[u8]>),
            Value::Bool(b) => args.add(*b),
            Value::Int(v) => args.add(*v),
            Value::Float(f) if f.is_nan() => {
                return Err(Error::invalid_argument(format!(
                    "parameter {n}: MySQL cannot store NaN in a DOUBLE"
                )));
            }
            Value::Float(f) if f.is_infinite() => {
                return Err(Error::invalid_argument(format!(
                    "parameter {n}: MySQL cannot store {} infinity in a DOUBLE",
                    if *f > 0.0 { "positive" } else { "negative" }
                )));
            }
            Value::Float(f) => args.add(*f),
            Value::Text(s) | Value::Json(s) => args.add(s.as_str()),
            Value::Decimal(s) if !is_decimal(s) => {
                return Err(Error::invalid_argument(format!(
                    "parameter {n}: decimal text ({} bytes) is not a decimal number",
                    s.len()
                )));
            }
            Value::Decimal(s) => args.add(DecimalText(s)),
            Value::Bytes(b) => args.add(b.as_slice()),
            Value::Date(d) => args.add(*d),
            Value::Time(t) => args.add(*t),
            Value::DateTime(t) => args.add(*t),
            // The session's time zone is UTC, so a UTC wall-clock time is
            // the instant a TIMESTAMP column stores.
            Value::TimestampTz(t) => args.add(t.naive_utc()),
        };
        added.map_err(|e| Error::invalid_argument(format!("parameter {n}: {e}")))?;
    }
    Ok(args)
}

/// Names the row (the `number`th of the result, from 1) in a decode error.
fn at_row(e: Error, number: u64) -> Error {
    e.in_context(format_args!("row {number}"))
}

/// Reads column `i` of `row` by the type the engine reported for it in this
/// result (not the prepared statement's guess); an error names the column.
fn decode_value(row: &MySqlRow, i: usize) -> Result<Value> {
    decode_column(row, i).map_err(|e| {
        let name = row.columns().get(i).map(|c| c.name()).unwrap_or("?");
        if e.message().contains(&format!("`{name}`")) {
            e
        } else {
            e.in_context(format_args!("column `{name}`"))
        }
    })
}

/// Writes column `i` of `row` into a batch's row as [`decode_value`] reads
/// it; text is copied from the row straight into the batch, without a
/// `String` in between.
fn write_value(row: &MySqlRow, i: usize, out: &mut dyn ValueWriter) -> Result<()> {
    let raw = row.try_get_raw(i).map_err(mysql_error)?;
    // The common types, read as `decode_column` reads them; a NULL (which
    // may be a zero date), anything else, and any error, through
    // `decode_value` itself.
    if !raw.is_null() {
        match raw.type_info().name() {
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => {
                if let Ok(text) = row.try_get_unchecked::<&str, _>(i) {
                    out.text(text);
                    return Ok(());
                }
            }
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                if let Ok(n) = row.try_get_unchecked::<i64, _>(i) {
                    out.int(n);
                    return Ok(());
                }
            }
            "FLOAT" | "DOUBLE" => {
                if let Ok(f) = row.try_get_unchecked::<f64, _>(i) {
                    out.double(f);
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    out.value(&decode_value(row, i)?);
    Ok(())
}

fn decode_column(row: &MySqlRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i).map_err(mysql_error)?;
    let type_info = raw.type_info();
    let type_name = type_info.name();
    if raw.is_null() {
        // sqlx reads a zero date (`0000-00-00`) as NULL; it is a value
        // (`WHERE d = '0000-00-00'` finds it), so it keeps its text.
        let temporal = matches!(type_name, "DATE" | "DATETIME" | "TIMESTAMP");
        if temporal && row.try_get_unchecked::<&[u8], _>(i).is_ok() {
            return Ok(Value::Text(raw_temporal_text(row, i, type_name != "DATE")?));
        }
        return Ok(Value::Null);
    }
    let get_err = |e| mysql_error(e);
    Ok(match type_name {
        // sqlx names TINYINT(1) BOOLEAN: MySQL's BOOLEAN is TINYINT(1).
        "BOOLEAN" => Value::Bool(row.try_get_unchecked::<i64, _>(i).map_err(get_err)? != 0),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Value::Int(row.try_get_unchecked(i).map_err(get_err)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" | "BIT" => {
            let n: u64 = row.try_get_unchecked(i).map_err(get_err)?;
            // Beyond i64::MAX an unsigned BIGINT (or BIT(64)) keeps its
            // exact digits as a decimal.
            i64::try_from(n)
                .map(Value::Int)
                .unwrap_or_else(|_| Value::Decimal(n.to_string()))
        }
        // A FLOAT is widened exactly from its single-precision value.
        "FLOAT" | "DOUBLE" => Value::Float(row.try_get_unchecked(i).map_err(get_err)?),
        // The binary protocol sends DECIMAL as its exact digits, in plain
        // notation with the column's scale: kept as they are.
        "DECIMAL" => Value::Decimal(row.try_get_unchecked(i).map_err(get_err)?),
        "DATE" => match row.try_get_unchecked::<NaiveDate, _>(i) {
            Ok(d) => Value::Date(d),
            Err(_) => Value::Text(raw_temporal_text(row, i, false)?),
        },
        "DATETIME" => match row.try_get_unchecked::<NaiveDateTime, _>(i) {
            Ok(t) => Value::DateTime(t),
            Err(_) => Value::Text(raw_temporal_text(row, i, true)?),
        },
        "TIMESTAMP" => match row.try_get_unchecked::<NaiveDateTime, _>(i) {
            Ok(t) => Value::TimestampTz(Utc.from_utc_datetime(&t)),
            Err(_) => Value::Text(raw_temporal_text(row, i, true)?),
        },
        "TIME" => {
            // TIME is a duration (-838:59:59 to 838:59:59); only a time of
            // day fits `Value::Time`, anything else keeps MySQL's text form.
            let t: MySqlTime = row.try_get_unchecked(i).map_err(get_err)?;
            match NaiveTime::try_from(t) {
                Ok(time) if t.is_valid_time_of_day() => Value::Time(time),
                _ => Value::Text(t.to_string()),
            }
        }
        "JSON" => Value::Json(row.try_get_unchecked(i).map_err(get_err)?),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::Text(row.try_get_unchecked(i).map_err(get_err)?)
        }
        // Binary strings; also text columns with a `_bin` collation, which
        // the protocol flags BINARY exactly like binary ones (see the docs).
        // GEOMETRY is MySQL's internal form: a 4-byte SRID, then WKB.
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => {
            Value::Bytes(row.try_get_unchecked(i).map_err(get_err)?)
        }
        "NULL" => Value::Null,
        other => {
            let name = row.columns().get(i).map(|c| c.name()).unwrap_or("?");
            return Err(Error::invalid_argument(format!(
                "column `{name}` has MySQL type {other}, which iadb cannot map to a value"
            )));
        }
    })
}

/// A DATE, DATETIME or TIMESTAMP that is no calendar value (`0000-00-00`,
/// `2024-00-00`, allowed without NO_ZERO_DATE / NO_ZERO_IN_DATE) as the text
/// MySQL would print for it.
fn raw_temporal_text(row: &MySqlRow, i: usize, with_time: bool) -> Result<String> {
    let bytes: &[u8] = row.try_get_unchecked(i).map_err(mysql_error)?;
    // The text protocol carries the value as its text already; a binary
    // value starts with its length (0, 4, 7 or 11), never an ASCII digit.
    if bytes.first().is_some_and(u8::is_ascii_digit) {
        return String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::invalid_argument(format!("column {i}: {e}")));
    }
    let body = bytes.get(1..).unwrap_or_default();
    let at = |k: usize| u32::from(body.get(k).copied().unwrap_or(0));
    let year = at(0) | (at(1) << 8);
    let mut text = format!("{year:04}-{:02}-{:02}", at(2), at(3));
    if with_time {
        text.push_str(&format!(" {:02}:{:02}:{:02}", at(4), at(5), at(6)));
        let micros = at(7) | (at(8) << 8) | (at(9) << 16) | (at(10) << 24);
        if micros != 0 {
            text.push_str(&format!(".{micros:06}"));
        }
    }
    Ok(text)
}

/// The column type as sqlx reports it; empty when unknown (`NULL`).
fn declared_type(column: &sqlx::mysql::MySqlColumn) -> String {
    super::sqlx_common::declared_type_name(column.type_info())
}

/// How long the connection of a stream dropped before its end may spend
/// reading the rest of the result before it is closed instead.
const DRAIN_BUDGET: Duration = Duration::from_millis(250);

/// Second line of defence, run on every connection going back to the pool:
/// a connection inside a transaction (a stored procedure may `START
/// TRANSACTION` and return without ending it; pooled calls may not) is
/// rolled back, so that its writes are not committed by a later caller nor
/// lost with the connection at random. MariaDB says whether one is open
/// (`@@in_transaction`), and the answer is `true` when one was rolled back;
/// MySQL does not, so there every release rolls back (a no-op outside a
/// transaction) and nothing is counted. MariaDB's `COM_RESET_CONNECTION`
/// would also clear user variables and TEMP tables set by a procedure;
/// sqlx does not send it (docs/transactions.md#session-state).
async fn end_open_transaction(
    conn: &mut sqlx::MySqlConnection,
    mariadb: bool,
) -> std::result::Result<bool, sqlx::Error> {
    let open = if mariadb {
        let open: i64 = sqlx::query_scalar("SELECT CAST(@@in_transaction AS SIGNED)")
            .fetch_one(&mut *conn)
            .await?;
        open != 0
    } else {
        true
    };
    if open {
        conn.execute(sqlx::raw_sql("ROLLBACK")).await?;
    }
    Ok(open && mariadb)
}

fn last_insert_id(id: u64) -> Option<i64> {
    (id != 0).then(|| i64::try_from(id).ok()).flatten()
}

/// Exact comparison of a catalogue name when the server compares names
/// case-sensitively (`lower_case_table_names = 0`); otherwise any case.
fn same_name(found: &Value, wanted: &str, case_sensitive: bool) -> bool {
    match found {
        Value::Text(s) if case_sensitive => s == wanted,
        Value::Text(s) => s.to_lowercase() == wanted.to_lowercase(),
        Value::Bytes(b) if case_sensitive => b == wanted.as_bytes(),
        Value::Bytes(b) => String::from_utf8_lossy(b).to_lowercase() == wanted.to_lowercase(),
        _ => false,
    }
}

/// Runs one statement (without parameters: a script) on `conn`, once
/// `MySqlEngine::check` has passed it (`SqlxEngine::execute_on`).
async fn execute_checked(
    conn: &mut sqlx::MySqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<ExecuteOutcome> {
    let done = if params.is_empty() {
        // No parameters: the text may be a script of several statements
        // (and may hold statements MySQL cannot prepare).
        conn.execute(sqlx::raw_sql(sql)).await
    } else {
        conn.execute(sqlx::query_with(sql, bind_all(params)?)).await
    }
    .map_err(mysql_error)?;
    Ok(ExecuteOutcome {
        rows_affected: done.rows_affected(),
        last_insert_id: last_insert_id(done.last_insert_id()),
    })
}

/// A statement checked and bound for MySQL.
pub struct MySqlStatement {
    sql: String,
    args: MySqlArguments,
    arrow: Option<iadb::arrow::ArrowWanted>,
}

/// Prepares `statement` on `conn` (which gives the columns before the
/// first row, and caches the statement for the execution that follows),
/// then runs it.
fn steps(conn: &mut sqlx::MySqlConnection, statement: MySqlStatement) -> Steps<'_> {
    let MySqlStatement { sql, args, arrow } = statement;
    let steps = async move {
        let columns: Arc<[Column]> = {
            let statement = conn.prepare(&sql).await.map_err(mysql_error)?;
            statement
                .columns()
                .iter()
                .map(|c| Column::new(c.name(), declared_type(c)))
                .collect()
        };
        Ok(prepared_steps::<MySqlEngine, _, _>(
            conn,
            columns,
            sql,
            args,
            |row, number, out| {
                (0..row.len())
                    .try_for_each(|i| write_value(row, i, out).map_err(|e| at_row(e, number)))
            },
            |outcome, done| {
                outcome.rows_affected += done.rows_affected();
                if let Some(id) = last_insert_id(done.last_insert_id()) {
                    outcome.last_insert_id = Some(id);
                }
            },
            arrow,
        ))
    };
    Box::pin(steps.try_flatten_stream())
}

impl SqlxEngine for MySqlEngine {
    type DB = MySql;
    type Guard = ThreadGuard;
    type Statement = MySqlStatement;
    const ENGINE: DatabaseType = DatabaseType::Mysql;

    fn map_error(e: sqlx::Error) -> Error {
        mysql_error(e)
    }

    fn begin_plan(options: &TxOptions) -> Result<BeginPlan> {
        // `SET TRANSACTION` (without GLOBAL or SESSION) applies to the next
        // transaction only, so nothing outlives this one.
        let isolation = match options.isolation {
            Isolation::Default => None,
            level @ (Isolation::ReadCommitted
            | Isolation::RepeatableRead
            | Isolation::Serializable) => {
                Some(format!("SET TRANSACTION ISOLATION LEVEL {}", level.sql()))
            }
            other @ Isolation::Snapshot => {
                return Err(other.refused(
                    DatabaseType::Mysql,
                    "READ COMMITTED, REPEATABLE READ and SERIALIZABLE",
                ));
            }
        };
        if !options.read_only {
            return Ok(BeginPlan {
                before: isolation,
                begin: "START TRANSACTION".to_owned(),
                after: None,
            });
        }
        // DDL commits the transaction it meets and runs outside it, so
        // `START TRANSACTION READ ONLY` alone lets `CREATE`/`DROP TABLE`
        // through (MariaDB 10.11). With the session read-only as well, the
        // transaction that follows the implicit commit is read-only too,
        // and the DDL is refused (1792); the session is set back after.
        let mut before = String::from("SET SESSION TRANSACTION READ ONLY");
        if let Some(isolation) = isolation {
            before.push_str("; ");
            before.push_str(&isolation);
        }
        Ok(BeginPlan {
            before: Some(before),
            begin: "START TRANSACTION READ ONLY".to_owned(),
            after: Some("SET SESSION TRANSACTION READ WRITE"),
        })
    }

    fn statement(sql: &str, params: &[Value]) -> Result<MySqlStatement> {
        Self::check(sql, params)?;
        Ok(MySqlStatement {
            sql: sql.to_owned(),
            args: bind_all(params)?,
            arrow: None,
        })
    }

    fn with_arrow(statement: MySqlStatement, wanted: iadb::arrow::ArrowWanted) -> MySqlStatement {
        MySqlStatement {
            arrow: Some(wanted),
            ..statement
        }
    }

    sqlx_statement_paths!(sqlx::MySqlConnection);

    fn quote_identifier(name: &str) -> String {
        format!("`{}`", name.replace('`', "``"))
    }

    fn table_exists<'a>(
        conn: &'a mut sqlx::MySqlConnection,
        table: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            // `database.table` names another database (MySQL's schemas).
            let (schema, name) = split_schema(table);
            // The catalogue's collation is case-insensitive whatever the server
            // does with names; whether `T` and `t` are the same table is
            // `lower_case_table_names` (0: compared as given).
            let sql = "SELECT table_schema, table_name, @@lower_case_table_names \
                       FROM information_schema.tables \
                       WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?";
            let rows = sqlx::query(sql)
                .bind(schema)
                .bind(name)
                .fetch_all(&mut *conn)
                .await
                .map_err(mysql_error)?;
            for row in &rows {
                let case_sensitive = decode_value(row, 2)? == Value::Int(0);
                let schema_ok = match schema {
                    Some(s) => same_name(&decode_value(row, 0)?, s, case_sensitive),
                    None => true,
                };
                if schema_ok && same_name(&decode_value(row, 1)?, name, case_sensitive) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// `SUPER` (change any session's or the server's settings, kill other
    /// sessions) or `FILE` (`LOAD DATA INFILE`, `SELECT ... INTO OUTFILE`:
    /// the server host's files) granted globally to the connected user.
    fn broad_privileges(db: &dyn DatabaseInterface) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            let rows = db
                .fetch_all(
                    "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES \
                     WHERE PRIVILEGE_TYPE IN ('SUPER', 'FILE') \
                     AND GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \
                     '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
                     ORDER BY PRIVILEGE_TYPE",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|row| match row.get_index(0) {
                    Some(Value::Text(p)) => Some(format!("{p} privilege")),
                    _ => None,
                })
                .collect())
        })
    }

    fn connect_options(&self) -> MySqlConnectOptions {
        self.options.clone()
    }

    /// An idle connection is pinged before it is lent; one that comes back
    /// inside a transaction is rolled back ([`end_open_transaction`]); a
    /// new one learns whether the server is MariaDB and gets the added
    /// `sql_mode`s.
    fn pool_options(
        &self,
        base: PoolOptions<MySql>,
        rolled_back: Arc<AtomicU64>,
    ) -> Result<PoolOptions<MySql>> {
        let added_modes = self.added_modes.clone();
        let mariadb = Arc::new(AtomicBool::new(false));
        let mariadb_seen = mariadb.clone();
        Ok(base
            .before_acquire(ping_if_idle)
            .after_release({
                let mariadb = mariadb.clone();
                move |conn, _| {
                    let mariadb = mariadb.load(Ordering::Relaxed);
                    let dirty = rolled_back.clone();
                    Box::pin(async move {
                        if end_open_transaction(conn, mariadb).await? {
                            dirty.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(true)
                    })
                }
            })
            .after_connect(move |conn, _| {
                let added_modes = added_modes.clone();
                let mariadb = mariadb_seen.clone();
                Box::pin(async move {
                    let version: String = sqlx::query_scalar("SELECT VERSION()")
                        .fetch_one(&mut *conn)
                        .await?;
                    mariadb.store(version.contains("MariaDB"), Ordering::Relaxed);
                    // ANSI_QUOTES (unless turned off): `"name"` is an
                    // identifier, as on every other engine iadb serves (and
                    // in `iadb::quote_identifier`, which the gRPC client
                    // uses); strings are '...'. Then the URL's `sql_mode`.
                    if !added_modes.is_empty() {
                        let set =
                            format!("SET SESSION sql_mode = CONCAT(@@sql_mode, ',{added_modes}')");
                        conn.execute(sqlx::raw_sql(&set)).await?;
                    }
                    Ok(())
                })
            }))
    }

    /// Learns the server's id of the connection (`CONNECTION_ID()`, one
    /// round trip per call), which `KILL QUERY` needs if the call is
    /// dropped while its statement runs ([`Self::abandon`]). sqlx reads the
    /// id in the handshake but keeps it private, so it is asked for here.
    fn ready(
        conn: PoolConnection<MySql>,
        pool: &PoolSlot<MySql>,
    ) -> BoxFuture<'_, Result<Readied<Self>>> {
        Box::pin(async move {
            let mut conn = conn;
            let row = (&mut *conn)
                .fetch_one(sqlx::raw_sql("SELECT CONNECTION_ID()"))
                .await
                .map_err(mysql_error)?;
            let thread: u64 = row.try_get(0).map_err(mysql_error)?;
            let options = pool.get()?.connect_options();
            Ok((
                conn,
                ThreadGuard {
                    thread: Some((thread, options)),
                },
            ))
        })
    }

    /// The statement ended: nothing to kill.
    fn disarm(guard: &mut ThreadGuard) {
        guard.thread = None;
    }

    /// `KILL QUERY` for the connection's thread ([`kill_query`]), unless
    /// the guard was disarmed: a pooled call's statement still running when
    /// the call was dropped, or a session's (a Transaction stream whose
    /// client left mid-statement) before it is rolled back.
    fn stop_statement(guard: ThreadGuard) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some((thread, options)) = guard.thread {
                kill_query(&options, thread).await;
            }
        })
    }

    /// A call dropped before its statement ended (its caller left, its
    /// deadline passed). MySQL's protocol cannot stop a statement on the
    /// same connection: the rest of a result must be read before the next
    /// command, and a statement that sends nothing for long (`SLEEP`, a
    /// big aggregate) runs on even after its connection is closed. So a
    /// second connection sends `KILL QUERY` for the lent connection's
    /// thread ([`kill_query`]); then the connection gets a short budget to
    /// read what is left, and past it is closed (the pool opens a fresh
    /// one).
    fn abandon(mut conn: PoolConnection<MySql>, guard: ThreadGuard, _call: Call) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            Self::stop_statement(guard).await;
            match tokio::time::timeout(DRAIN_BUDGET, conn.ping()).await {
                Ok(Ok(())) => drop(conn),
                _ => drop(conn.detach()),
            }
        });
    }
}

/// The server's id of a lent connection and the options to open a second
/// connection to the same server: what stops the lent connection's
/// statement when its call is dropped.
#[derive(Default)]
pub struct ThreadGuard {
    thread: Option<(u64, Arc<MySqlConnectOptions>)>,
}

/// How long stopping an abandoned statement may take (connecting a second
/// connection and sending `KILL QUERY`).
const KILL_BUDGET: Duration = Duration::from_secs(5);

/// Stops the statement that server thread `thread` is running, from a
/// connection of its own (the pool's may all be taken). A thread whose
/// statement has just ended is left as it is: `KILL QUERY` on an idle
/// connection does not touch its next statement. Failures are logged, not
/// returned: the connection is closed after it anyway.
async fn kill_query(options: &MySqlConnectOptions, thread: u64) {
    let killed = tokio::time::timeout(KILL_BUDGET, async {
        let mut killer = sqlx::MySqlConnection::connect_with(options).await?;
        let sent = killer
            .execute(sqlx::raw_sql(&format!("KILL QUERY {thread}")))
            .await;
        let _ = killer.close().await;
        sent.map(|_| ())
    })
    .await;
    match killed {
        Ok(Ok(())) => tracing::debug!(thread, "an abandoned statement was stopped (KILL QUERY)"),
        // 1094: the thread is gone (its connection closed as it ended).
        Ok(Err(sqlx::Error::Database(e)))
            if e.try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number)
                == Some(1094) =>
        {
            tracing::debug!(thread, "an abandoned statement's thread had already ended");
        }
        Ok(Err(e)) => tracing::warn!(
            thread,
            "could not stop an abandoned statement: {}",
            mysql_error(e).message()
        ),
        Err(_) => tracing::warn!(
            thread,
            "could not stop an abandoned statement within {KILL_BUDGET:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PoolSettings;

    #[test]
    fn decimals_are_recognised() {
        for ok in [
            "0",
            "-1.50",
            "+.5",
            "12345678901234567890.123456789",
            "1e-7",
        ] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "NaN", "1 2"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn ssl_modes_parse_in_both_spellings() {
        assert!(matches!(
            ssl_mode("verify-full"),
            Ok(MySqlSslMode::VerifyIdentity)
        ));
        assert!(matches!(ssl_mode("REQUIRED"), Ok(MySqlSslMode::Required)));
        assert!(ssl_mode("sometimes").is_err());
    }

    #[test]
    fn unknown_url_options_are_refused_without_the_password() {
        let config =
            ConnectionConfig::from_url("mysql://u:secret-pw@localhost:3306/db?sslmdoe=required")
                .expect("url parses");
        let err = MySqlBackend::new(&config, PoolSettings::default())
            .err()
            .expect("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("sslmdoe"), "{}", err.message());
        assert!(!err.message().contains("secret-pw"));
    }

    #[test]
    fn identifiers_quote_with_backticks() {
        let config = ConnectionConfig::from_url("mysql://u@localhost/db").expect("url parses");
        let backend = MySqlBackend::new(&config, PoolSettings::default()).expect("adapter");
        assert_eq!(backend.quote_identifier("a`b"), "`a``b`");
    }
}
