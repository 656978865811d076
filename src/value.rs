//! [`Value`]: one SQL value, of any kind an engine returns or takes.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use std::fmt;

/// One SQL value. Nothing is lost on the way: an integer stays an `i64`, a
/// decimal stays its exact digits, a double keeps its bit pattern (NaN and the
/// infinities included).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean (engines without one store 1/0).
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// An IEEE 754 double.
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// Binary data.
    Bytes(Vec<u8>),
    /// An exact decimal number as its digits, e.g. `"-12.50"`.
    Decimal(String),
    /// A calendar date.
    Date(NaiveDate),
    /// A time of day, without zone.
    Time(NaiveTime),
    /// A timestamp without time zone.
    DateTime(NaiveDateTime),
    /// A timestamp with time zone, normalised to UTC.
    TimestampTz(DateTime<Utc>),
    /// A JSON document as text.
    Json(String),
}

impl Value {
    /// Whether this is a time with a leap second (second 60: chrono's
    /// nanoseconds past one billion), which no engine iadb serves stores
    /// (each would turn it into another time), so adapters refuse it.
    pub fn is_leap_second(&self) -> bool {
        use chrono::Timelike;
        let nanos = match self {
            Value::Time(t) => t.nanosecond(),
            Value::DateTime(t) => t.nanosecond(),
            Value::TimestampTz(t) => t.nanosecond(),
            _ => 0,
        };
        nanos >= 1_000_000_000
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The double, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The text of a text, decimal or JSON value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a bytes value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The name of the kind, as the docs and error messages use it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "double",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Decimal(_) => "decimal",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::DateTime(_) => "datetime",
            Value::TimestampTz(_) => "timestamp_tz",
            Value::Json(_) => "json",
        }
    }

    /// Approximate encoded size in bytes, used to bound row batches.
    pub fn encoded_len_hint(&self) -> usize {
        match self {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.len() + 4,
            Value::Bytes(b) => b.len() + 4,
            Value::Date(_) => 12,
            Value::Time(_) | Value::DateTime(_) | Value::TimestampTz(_) => 32,
            _ => 11,
        }
    }

    /// The value as a JSON value (bytes as lowercase hex, non-finite doubles
    /// as strings), for command-line output.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
            other => J::String(other.to_string()),
        }
    }
}

/// Formats a date the way the wire carries it: `YYYY-MM-DD`.
pub(crate) fn format_date(d: &NaiveDate) -> String {
    let mut out = String::with_capacity(10);
    if !push_date(&mut out, d) {
        return d.format("%Y-%m-%d").to_string();
    }
    out
}

/// Formats a time the way the wire carries it: `HH:MM:SS[.fraction]`.
pub(crate) fn format_time(t: &NaiveTime) -> String {
    let mut out = String::with_capacity(18);
    push_time(&mut out, t);
    out
}

/// Formats a naive timestamp the way the wire carries it.
pub(crate) fn format_datetime(t: &NaiveDateTime) -> String {
    let mut out = String::with_capacity(29);
    if !push_date(&mut out, &t.date()) {
        return t.format("%Y-%m-%dT%H:%M:%S%.f").to_string();
    }
    out.push('T');
    push_time(&mut out, &t.time());
    out
}

// What chrono's `format("%Y-%m-%d")` and `format("%H:%M:%S%.f")` print,
// written digit by digit: a streamed result formats one per value, and
// parsing the format string every time was a sixth of the server's CPU on a
// timestamp column.

fn push_digits(out: &mut String, value: u32, width: u32) {
    // Right to left, dividing by the constant 10 (a multiplication), not by
    // a power of ten computed per digit (a division each).
    let mut digits = [b'0'; 10];
    let width = (width as usize).min(digits.len());
    let mut rest = value;
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    for digit in &digits[..width] {
        out.push(char::from(*digit));
    }
}

/// Years 0 to 9999 only (chrono adds a sign outside them); false otherwise.
fn push_date(out: &mut String, d: &NaiveDate) -> bool {
    use chrono::Datelike;
    let Ok(year) = u32::try_from(d.year()) else {
        return false;
    };
    if year > 9999 {
        return false;
    }
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, d.month(), 2);
    out.push('-');
    push_digits(out, d.day(), 2);
    true
}

/// `HH:MM:SS`, then `.` and 3, 6 or 9 digits when there is a fraction; a
/// leap second (nanoseconds past one billion) is second 60, as in chrono.
fn push_time(out: &mut String, t: &NaiveTime) {
    use chrono::Timelike;
    let mut nanos = t.nanosecond();
    let mut second = t.second();
    if nanos >= 1_000_000_000 {
        nanos -= 1_000_000_000;
        second += 1;
    }
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    push_digits(out, second, 2);
    let (fraction, width) = match nanos {
        0 => return,
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    out.push('.');
    push_digits(out, fraction, width);
}

/// Writes a date, time or timestamp as the wire carries it (what
/// [`format_date`] and its siblings return) at the end of `out`, which is
/// kept from one value to the next: a streamed result writes one per value.
/// Other kinds write nothing.
pub(crate) fn write_wire_temporal(v: &Value, out: &mut String) {
    use chrono::Timelike;
    match v {
        // The guard writes the date when it can; chrono writes the others.
        Value::Date(d) if !push_date(out, d) => out.push_str(&format_date(d)),
        Value::Date(_) => {}
        Value::Time(t) => push_time(out, t),
        Value::DateTime(t) => {
            if push_date(out, &t.date()) {
                out.push('T');
                push_time(out, &t.time());
            } else {
                out.push_str(&format_datetime(t));
            }
        }
        Value::TimestampTz(t) => {
            let naive = t.naive_utc();
            // What `to_rfc3339_opts(AutoSi, true)` prints, for years 0 to
            // 9999 and no leap second; chrono itself writes the others.
            if naive.nanosecond() < 1_000_000_000 && push_date(out, &naive.date()) {
                out.push('T');
                push_time(out, &naive.time());
                out.push('Z');
            } else {
                out.push_str(&format_timestamp_tz(t));
            }
        }
        _ => {}
    }
}

/// Reads `YYYY-MM-DD HH:MM:SS` (or with `T` between date and time) with an
/// optional fraction of 1 to 9 digits: the form the wire, SQLite and most
/// engines' text use for a timestamp without zone. `None` for anything
/// else, a leap second included: a caller that gets `None` parses with
/// chrono's formats as before, whose result this one equals where it
/// answers. A streamed result reads one per value, and chrono's
/// `parse_from_str` reads its format string every time.
pub fn parse_naive_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |at: usize, width: usize| -> Option<u32> {
        b.get(at..at + width)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5, 2)?, number(8, 2)?)?;
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let n = number(20, digits.len())?;
            n * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time))
}

/// Formats a UTC timestamp as RFC 3339 with `Z`.
pub(crate) fn format_timestamp_tz(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl fmt::Display for Value {
    /// The text a person reads in a table: NULL as `NULL`, bytes as `\x` hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::Date(d) => f.write_str(&format_date(d)),
            Value::Time(t) => f.write_str(&format_time(t)),
            Value::DateTime(t) => f.write_str(&format_datetime(t)),
            Value::TimestampTz(t) => f.write_str(&format_timestamp_tz(t)),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v $(as $cast)?)
            }
        })*
    };
}

value_from! {
    bool => Bool,
    i64 => Int,
    i32 => Int as i64,
    i16 => Int as i64,
    u32 => Int as i64,
    f64 => Float,
    f32 => Float as f64,
    String => Text,
    Vec<u8> => Bytes,
    NaiveDate => Date,
    NaiveTime => Time,
    NaiveDateTime => DateTime,
    DateTime<Utc> => TimestampTz,
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Checks that `s` is an exact decimal number: optional sign, digits with an
/// optional fraction, optional exponent.
pub(crate) fn is_decimal_literal(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast reader answers as chrono's formats do, or not at all.
    #[test]
    fn naive_datetimes_read_as_chrono_reads_them() {
        let chrono_reads = |s: &str| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        };
        let mut answered = 0;
        for s in [
            "2024-01-01 00:00:01",
            "2024-02-29T23:59:59.5",
            "2024-02-29 23:59:59.123456789",
            "0000-01-01 00:00:00.000001",
            "9999-12-31T23:59:59.999",
            "2023-02-29 00:00:00",
            "2024-13-01 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 23:60:00",
            "2024-01-01 23:59:60",
            "2024-01-01 23:59:59.",
            "2024-01-01 23:59:59.1234567891",
            "2024-01-01 23:59:59Z",
            "2024-01-01 23:59:59+01:00",
            "2024-1-01 23:59:59",
            "+2024-01-01 23:59:59",
            "2024-01-01",
            "",
            "2024-01-01 23:59:5é",
        ] {
            let fast = parse_naive_datetime(s);
            if fast.is_some() {
                answered += 1;
                assert_eq!(fast, chrono_reads(s), "{s}");
            }
        }
        assert_eq!(answered, 5);
    }

    #[test]
    fn wire_formats_match_chrono() {
        let nanos = [
            0,
            1,
            7_000,
            120_000,
            5_000_000,
            999_999_999,
            123_456_789,
            1_000_000_000,
            1_500_000_000,
        ];
        let mut checked = 0;
        for year in (-50..=10_050).step_by(7) {
            for (month, day) in [(1, 1), (2, 28), (6, 15), (12, 31)] {
                let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                    continue;
                };
                assert_eq!(format_date(&date), date.format("%Y-%m-%d").to_string());
                for (i, n) in nanos.iter().enumerate() {
                    let second = if *n >= 1_000_000_000 {
                        59
                    } else {
                        (i * 7) as u32 % 60
                    };
                    let time = NaiveTime::from_hms_nano_opt((i * 5) as u32 % 24, 59, second, *n)
                        .expect("valid time");
                    assert_eq!(format_time(&time), time.format("%H:%M:%S%.f").to_string());
                    let at = date.and_time(time);
                    assert_eq!(
                        format_datetime(&at),
                        at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                    );
                    let zoned = chrono::TimeZone::from_utc_datetime(&Utc, &at);
                    for (value, expected) in [
                        (Value::Date(date), format_date(&date)),
                        (Value::Time(time), format_time(&time)),
                        (Value::DateTime(at), format_datetime(&at)),
                        (Value::TimestampTz(zoned), format_timestamp_tz(&zoned)),
                    ] {
                        let mut written = String::from("kept");
                        write_wire_temporal(&value, &mut written);
                        assert_eq!(written, format!("kept{expected}"), "{value:?}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn leap_seconds_are_recognised_in_every_time_kind() {
        let leap = NaiveTime::from_hms_nano_opt(23, 59, 59, 1_500_000_000).expect("leap time");
        let day = NaiveDate::from_ymd_opt(2016, 12, 31).expect("date");
        assert!(Value::Time(leap).is_leap_second());
        assert!(Value::DateTime(day.and_time(leap)).is_leap_second());
        assert!(Value::TimestampTz(day.and_time(leap).and_utc()).is_leap_second());
        let plain = NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).expect("time");
        assert!(!Value::Time(plain).is_leap_second());
        assert!(!Value::Int(1_500_000_000).is_leap_second());
    }

    #[test]
    fn decimal_literals() {
        for ok in [
            "0",
            "-1",
            "12345678901234567890.123456789",
            ".5",
            "5.",
            "1e10",
            "-2.5E-3",
        ] {
            assert!(is_decimal_literal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "1e+", "NaN", " 1"] {
            assert!(!is_decimal_literal(bad), "{bad}");
        }
    }

    #[test]
    fn display_is_what_a_table_shows() {
        assert_eq!(Value::Null.to_string(), "NULL");
        assert_eq!(Value::Bytes(vec![0, 255]).to_string(), "\\x00ff");
        assert_eq!(Value::from(Some(5i64)).to_string(), "5");
        assert_eq!(Value::from(None::<i64>), Value::Null);
    }
}
