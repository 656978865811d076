//! Every conversion between the generated proto types and the domain types:
//! `From` outward (cannot fail), `TryFrom` inward (bad input is
//! INVALID_ARGUMENT before any engine work).

use crate::{
    Column, Error, Value,
    proto::{self, value::Kind},
    value::{format_date, format_datetime, format_time, format_timestamp_tz, is_decimal_literal},
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

impl From<Value> for proto::Value {
    fn from(v: Value) -> Self {
        let kind = match v {
            Value::Null => Kind::Null(proto::NullValue::Unspecified as i32),
            Value::Bool(b) => Kind::Bool(b),
            Value::Int(i) => Kind::Int(i),
            Value::Float(f) => Kind::Double(f),
            Value::Text(s) => Kind::Text(s),
            Value::Bytes(b) => Kind::Bytes(b),
            Value::Decimal(s) => Kind::Decimal(s),
            Value::Date(d) => Kind::Date(format_date(&d)),
            Value::Time(t) => Kind::Time(format_time(&t)),
            Value::DateTime(t) => Kind::Datetime(format_datetime(&t)),
            Value::TimestampTz(t) => Kind::TimestampTz(format_timestamp_tz(&t)),
            Value::Json(s) => Kind::Json(s),
        };
        proto::Value { kind: Some(kind) }
    }
}

fn bad_value(kind: &str, text: &str, expected: &str) -> Error {
    let shown: String = text.chars().take(64).collect();
    Error::invalid_argument(format!("bad {kind} value `{shown}`: expected {expected}"))
}

impl TryFrom<proto::Value> for Value {
    type Error = Error;
    fn try_from(v: proto::Value) -> Result<Self, Error> {
        let proto::Value { kind } = v;
        Ok(match kind {
            None | Some(Kind::Null(_)) => Value::Null,
            Some(Kind::Bool(b)) => Value::Bool(b),
            Some(Kind::Int(i)) => Value::Int(i),
            Some(Kind::Double(f)) => Value::Float(f),
            Some(Kind::Text(s)) => Value::Text(s),
            Some(Kind::Bytes(b)) => Value::Bytes(b),
            Some(Kind::Decimal(s)) => {
                if !is_decimal_literal(&s) {
                    return Err(bad_value("decimal", &s, "digits like -123.45"));
                }
                Value::Decimal(s)
            }
            Some(Kind::Date(s)) => Value::Date(
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map_err(|_| bad_value("date", &s, "YYYY-MM-DD"))?,
            ),
            Some(Kind::Time(s)) => Value::Time(
                NaiveTime::parse_from_str(&s, "%H:%M:%S%.f")
                    .map_err(|_| bad_value("time", &s, "HH:MM:SS[.fraction]"))?,
            ),
            Some(Kind::Datetime(s)) => Value::DateTime(
                NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map_err(|_| bad_value("datetime", &s, "YYYY-MM-DDTHH:MM:SS[.fraction]"))?,
            ),
            Some(Kind::TimestampTz(s)) => Value::TimestampTz(
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| bad_value("timestamp_tz", &s, "RFC 3339"))?,
            ),
            Some(Kind::Json(s)) => {
                if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_err() {
                    return Err(bad_value("json", &s, "a JSON document"));
                }
                Value::Json(s)
            }
        })
    }
}

/// Converts request parameters, naming the position of a bad one.
pub fn params_from_proto(params: Vec<proto::Value>) -> Result<Vec<Value>, Error> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Value::try_from(p).map_err(|e| {
                Error::invalid_argument(format!("parameter {}: {}", i + 1, e.message()))
            })
        })
        .collect()
}

impl From<Vec<Value>> for proto::Row {
    fn from(values: Vec<Value>) -> Self {
        proto::Row {
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Column> for proto::Column {
    fn from(c: Column) -> Self {
        let Column {
            name,
            declared_type,
        } = c;
        proto::Column {
            name,
            declared_type,
        }
    }
}

impl From<proto::Column> for Column {
    fn from(c: proto::Column) -> Self {
        let proto::Column {
            name,
            declared_type,
        } = c;
        Column {
            name,
            declared_type,
        }
    }
}

impl TryFrom<proto::Row> for Vec<Value> {
    type Error = Error;
    fn try_from(row: proto::Row) -> Result<Self, Error> {
        row.values.into_iter().map(Value::try_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) -> Value {
        Value::try_from(proto::Value::from(v)).unwrap()
    }

    #[test]
    fn every_kind_round_trips() {
        let ts = DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456789+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let cases = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Float(-0.0),
            Value::Float(f64::INFINITY),
            Value::Text(String::new()),
            Value::Text("é✓𝄞".into()),
            Value::Bytes(vec![0, 1, 0]),
            Value::Decimal("12345678901234567890.123456789".into()),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::Time(NaiveTime::from_hms_micro_opt(23, 59, 59, 123456).unwrap()),
            Value::DateTime(ts.naive_utc()),
            Value::TimestampTz(ts),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ];
        for v in cases {
            assert_eq!(round_trip(v.clone()), v);
        }
        let nan = round_trip(Value::Float(f64::NAN));
        assert!(nan.as_f64().unwrap().is_nan());
        assert_eq!(
            round_trip(Value::Float(-0.0)).as_f64().unwrap().to_bits(),
            (-0.0f64).to_bits()
        );
    }

    #[test]
    fn bad_values_are_invalid_argument() {
        for kind in [
            Kind::Decimal("1.2.3".into()),
            Kind::Date("2024-13-01".into()),
            Kind::Time("25:00:00".into()),
            Kind::Datetime("yesterday".into()),
            Kind::TimestampTz("2024-01-01T00:00:00".into()),
            Kind::Json("{".into()),
        ] {
            let err = Value::try_from(proto::Value { kind: Some(kind) }).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            assert!(err.message().starts_with("bad "), "{}", err.message());
        }
        let err = params_from_proto(vec![
            proto::Value::from(Value::Int(1)),
            proto::Value {
                kind: Some(Kind::Date("x".into())),
            },
        ])
        .unwrap_err();
        assert!(
            err.message().starts_with("parameter 2: bad date"),
            "{}",
            err.message()
        );
    }
}
