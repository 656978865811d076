//! Parameters.

use super::call::CallState;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use duckdb::{
    params_from_iter,
    types::{
        Decimal as DuckDecimal, TimeUnit as DuckTimeUnit, ToSql, ToSqlOutput, Value as DuckValue,
        ValueRef,
    },
};
use iadb::Value;

/// A parameter as DuckDB binds it (see the table in docs/types/duckdb.md),
/// with the call it is bound for: binding stops between parameters once
/// that call's caller has left.
struct Param<'a> {
    value: &'a Value,
    call: Option<&'a CallState>,
}

/// `params` for DuckDB to bind, for `call` (if any).
pub(super) fn bind_params<'a>(
    params: &'a [Value],
    call: Option<&'a CallState>,
) -> impl duckdb::Params + 'a {
    params_from_iter(params.iter().map(move |value| Param { value, call }))
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        let bad = |what: String| duckdb::Error::ToSqlConversionFailure(what.into());
        if self.call.is_some_and(CallState::is_abandoned) {
            return Err(bad("the call was abandoned".into()));
        }
        if self.value.is_leap_second() {
            // chrono's leap second: DuckDB has none and would store the
            // next second (`24:00:00` for a time) instead.
            return Err(bad(
                "a leap second (second 60) cannot be stored by DuckDB, which would turn it into the next second"
                    .into(),
            ));
        }
        Ok(match self.value {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Boolean(*b)),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::BigInt(*n)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Double(*f)),
            // JSON binds as text: DuckDB casts it where a JSON column or
            // parameter is expected.
            Value::Text(s) | Value::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            // Exact DECIMAL(38, scale); digits DuckDB's DECIMAL cannot hold
            // (or an exponent) go as text, for DuckDB to cast where needed.
            Value::Decimal(s) => match parse_decimal(s) {
                Some(d) => ToSqlOutput::Borrowed(ValueRef::Decimal(d)),
                None => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            },
            Value::Date(d) => {
                let days = d.signed_duration_since(unix_epoch_date()).num_days();
                let days =
                    i32::try_from(days).map_err(|_| bad("a date out of DuckDB's range".into()))?;
                ToSqlOutput::Borrowed(ValueRef::Date32(days))
            }
            Value::Time(t) => {
                let micros = i64::from(t.num_seconds_from_midnight()) * 1_000_000
                    + i64::from(t.nanosecond() / 1_000);
                ToSqlOutput::Borrowed(ValueRef::Time64(DuckTimeUnit::Microsecond, micros))
            }
            Value::DateTime(t) => ToSqlOutput::Borrowed(ValueRef::Timestamp(
                DuckTimeUnit::Microsecond,
                t.and_utc().timestamp_micros(),
            )),
            // The driver binds timestamps without a zone only; as text with
            // an explicit UTC offset the instant survives whatever TimeZone
            // setting the session has.
            Value::TimestampTz(t) => ToSqlOutput::Owned(DuckValue::Text(
                t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            )),
        })
    }
}

/// Plain decimal digits (`-123.4500`) as a DuckDB DECIMAL(38, scale), if they fit.
fn parse_decimal(s: &str) -> Option<DuckDecimal> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !all_digits(frac_part) || int_part.len() + frac_part.len() == 0 {
        return None;
    }
    let int_part = int_part.trim_start_matches('0');
    let width = int_part.len() + frac_part.len();
    if width > usize::from(DuckDecimal::MAX_WIDTH) {
        return None;
    }
    let unscaled: i128 = if width == 0 {
        0
    } else {
        format!("{int_part}{frac_part}").parse().ok()?
    };
    let scale = u8::try_from(frac_part.len()).ok()?;
    DuckDecimal::new(
        DuckDecimal::MAX_WIDTH,
        scale,
        if negative { -unscaled } else { unscaled },
    )
    .ok()
}

pub(super) fn unix_epoch_date() -> NaiveDate {
    DateTime::<Utc>::UNIX_EPOCH.date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        let d = parse_decimal("12345678901234567890.123456789").map(|d| d.to_string());
        assert_eq!(d.as_deref(), Some("12345678901234567890.123456789"));
        assert_eq!(
            parse_decimal("-0.50").map(|d| d.to_string()).as_deref(),
            Some("-0.50")
        );
        assert!(parse_decimal("1e5").is_none());
        assert!(parse_decimal("").is_none());
        assert!(parse_decimal(&"9".repeat(39)).is_none());
    }
}
