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

/// A value that does not parse as its kind. The message gives the kind and
/// the size, never the value: values stay out of errors and logs.
fn bad_value(kind: &str, text: &str, expected: &str) -> Error {
    Error::invalid_argument(format!(
        "bad {kind} value ({} bytes of text): expected {expected}",
        text.len()
    ))
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
                crate::value::parse_naive_datetime(&s)
                    .map(Ok)
                    .unwrap_or_else(|| NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f"))
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

/// Property tests: no proto value makes the inward conversion panic, what
/// it accepts converts out and back in unchanged, and every domain value
/// travels out and back in unchanged. Fixed seed; the count of inputs tried
/// is printed.
#[cfg(test)]
mod properties {
    use super::*;
    use chrono::{Datelike, Duration as ChronoDuration, TimeZone};
    use proptest::{
        prelude::*,
        test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
    };
    use std::{
        fmt,
        io::Write,
        sync::atomic::{AtomicU64, Ordering},
    };

    fn check<S: Strategy>(
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
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
            tried.fetch_add(1, Ordering::Relaxed);
            test(value)
        });
        let _ = writeln!(
            std::io::stderr(),
            "property {name}: {} inputs tried",
            tried.load(Ordering::Relaxed)
        );
        if let Err(e) = result {
            panic!("property {name} failed: {e}");
        }
    }

    /// Text that is anything at all, or close to what `pattern` describes.
    fn near(pattern: &'static str) -> BoxedStrategy<String> {
        prop_oneof![any::<String>(), "\\PC{0,40}", pattern].boxed()
    }

    fn any_kind() -> impl Strategy<Value = Option<Kind>> {
        proptest::option::of(prop_oneof![
            any::<i32>().prop_map(Kind::Null),
            any::<bool>().prop_map(Kind::Bool),
            any::<i64>().prop_map(Kind::Int),
            any::<f64>().prop_map(Kind::Double),
            any::<String>().prop_map(Kind::Text),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(Kind::Bytes),
            near("[+-]?[0-9]{0,30}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{0,4})?").prop_map(Kind::Decimal),
            near("[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2}").prop_map(Kind::Date),
            near("[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{0,12})?").prop_map(Kind::Time),
            near("[+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?")
                .prop_map(Kind::Datetime),
            near("[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})")
                .prop_map(Kind::TimestampTz),
            near("[\\[\\]{}\":,0-9a-z .eE+-]{0,30}").prop_map(Kind::Json),
        ])
    }

    /// Floats compare by bits (NaN equals itself), everything else by value.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    #[test]
    fn any_proto_value_converts_or_is_refused_without_panic() {
        check(
            "proto value -> domain never panics",
            4096,
            proptest::collection::vec(any_kind(), 0..4),
            |kinds| {
                let params: Vec<proto::Value> = kinds
                    .into_iter()
                    .map(|kind| proto::Value { kind })
                    .collect();
                match params_from_proto(params) {
                    Ok(values) => {
                        for v in values {
                            // What the server accepted, it can send back,
                            // and the client reads it as it was.
                            let back = Value::try_from(proto::Value::from(v.clone()))
                                .map_err(|e| TestCaseError::fail(format!("{v:?}: {e}")))?;
                            prop_assert!(same(&back, &v), "{:?} came back as {:?}", v, back);
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
                        // Echoed input is cut short.
                        prop_assert!(e.message().len() < 400, "{}", e.message().len());
                    }
                }
                Ok(())
            },
        );
    }

    /// Dates of years 1 to 9999, the range SQL's DATE type has everywhere.
    fn date() -> impl Strategy<Value = NaiveDate> {
        let first = NaiveDate::from_ymd_opt(1, 1, 1).expect("valid");
        (0i64..3_652_059).prop_map(move |d| first + ChronoDuration::days(d))
    }

    /// Any date chrono holds (years -262143 to 262142): dates and naive
    /// timestamps travel as `+10000-01-01` or `-0001-01-01` outside 0–9999.
    /// (Timestamps with a zone do not: RFC 3339 has four-digit years, and
    /// one outside them is sent but refused on the way back in.)
    fn wide_date() -> impl Strategy<Value = NaiveDate> {
        (NaiveDate::MIN.num_days_from_ce()..=NaiveDate::MAX.num_days_from_ce())
            .prop_map(|d| NaiveDate::from_num_days_from_ce_opt(d).expect("in chrono's range"))
    }

    /// Times of day with nanoseconds, leap second (23:59:60.x) included.
    fn time() -> impl Strategy<Value = NaiveTime> {
        prop_oneof![
            (0u32..86_400, 0u32..1_000_000_000).prop_map(|(s, n)| {
                NaiveTime::from_num_seconds_from_midnight_opt(s, n).expect("valid")
            }),
            (0u32..24, 0u32..60, 1_000_000_000u32..2_000_000_000).prop_map(|(h, m, n)| {
                NaiveTime::from_hms_nano_opt(h, m, 59, n).expect("valid leap second")
            }),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            any::<String>().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            "[+-]?[0-9]{1,38}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?".prop_map(Value::Decimal),
            wide_date().prop_map(Value::Date),
            time().prop_map(Value::Time),
            (wide_date(), time()).prop_map(|(d, t)| Value::DateTime(d.and_time(t))),
            (date(), time())
                .prop_map(|(d, t)| Value::TimestampTz(Utc.from_utc_datetime(&d.and_time(t)))),
            prop_oneof![
                Just("null".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
                proptest::collection::btree_map("\\PC{0,8}", any::<i32>(), 0..4)
                    .prop_map(|m| serde_json::to_string(&m).unwrap_or_default()),
            ]
            .prop_map(Value::Json),
        ]
    }

    #[test]
    fn every_domain_value_travels_out_and_back_unchanged() {
        check(
            "domain -> proto -> domain is identity",
            4096,
            value(),
            |v| {
                let back = Value::try_from(proto::Value::from(v.clone()))
                    .map_err(|e| TestCaseError::fail(format!("{v:?}: {e}")))?;
                prop_assert!(same(&back, &v), "{:?} came back as {:?}", v, back);
                Ok(())
            },
        );
    }
}
