//! Statements and values to and from D1's JSON, and the limits D1 enforces.

use super::client::D1Client;
use crate::{backend::check_param_count, placeholders::Dialect};
use iadb::{Error, ExecuteOutcome, Result, Value};
use serde_json::{Value as Json, json};
use std::fmt;

/// Bound parameters D1 accepts per statement.
pub const MAX_BOUND_PARAMETERS: usize = 100;
/// Bytes D1 accepts per SQL statement.
pub const MAX_STATEMENT_BYTES: usize = 100_000;
/// Bytes D1 accepts per string or BLOB value.
pub const MAX_VALUE_BYTES: usize = 2_000_000;
/// The largest integer a JSON number carries exactly through D1 (2^53 − 1).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Checks D1's limits before anything is sent.
fn check_limits(sql: &str, params: &[Value]) -> Result<()> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::invalid_argument(format!(
            "the statement is {} bytes, over D1's limit of 100,000 bytes per SQL statement",
            sql.len()
        )));
    }
    if params.len() > MAX_BOUND_PARAMETERS {
        return Err(Error::invalid_argument(format!(
            "{} bound parameters, over D1's limit of 100 per statement",
            params.len()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        let len = match p {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        };
        if len > MAX_VALUE_BYTES {
            return Err(Error::invalid_argument(format!(
                "parameter {}: {len} bytes, over D1's limit of 2,000,000 bytes per string or BLOB",
                i + 1
            )));
        }
    }
    Ok(())
}

/// A parameter as D1 reads it from JSON.
fn encode_param(i: usize, value: &Value, lossy_integers: bool) -> Result<Json> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(i64::from(*b)),
        Value::Int(n) if !lossy_integers && n.unsigned_abs() > MAX_SAFE_INTEGER as u64 => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: integer {n} is outside D1's exact range ±(2^53 − 1) (JSON numbers are doubles there); send it as text, or opt in to rounding with lossy_integers=true",
                i + 1
            )));
        }
        Value::Int(n) => json!(n),
        Value::Float(f) if f.is_nan() => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: D1's JSON API cannot carry NaN",
                i + 1
            )));
        }
        Value::Float(f) if f.is_infinite() => {
            return Err(Error::invalid_argument(format!(
                "parameter {}: D1's JSON API cannot carry infinity",
                i + 1
            )));
        }
        Value::Float(f) => json!(f),
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::Array(b.iter().map(|byte| json!(byte)).collect()),
        Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => Json::String(t.format("%H:%M:%S%.f").to_string()),
        Value::DateTime(t) => Json::String(t.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
        Value::TimestampTz(t) => Json::String(t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
    })
}

/// One statement of a request body, checked and encoded.
pub(super) fn statement(sql: &str, params: &[Value], lossy_integers: bool) -> Result<Json> {
    check_param_count(sql, Dialect::Sqlite, params.len())?;
    check_limits(sql, params)?;
    let mut body = serde_json::Map::new();
    body.insert("sql".into(), Json::String(sql.to_owned()));
    if !params.is_empty() {
        let params = params
            .iter()
            .enumerate()
            .map(|(i, p)| encode_param(i, p, lossy_integers))
            .collect::<Result<Vec<_>>>()?;
        body.insert("params".into(), Json::Array(params));
    }
    Ok(Json::Object(body))
}

/// A result value: the kind is inferred from the JSON value (D1 reports no
/// declared types).
pub(super) fn decode_value(v: &Json, lossy_integers: bool) -> Result<Value> {
    let out_of_range = |n: &dyn fmt::Display| {
        Error::invalid_argument(format!(
            "D1 returned integer {n}, outside the exact range ±(2^53 − 1) of its JSON numbers (it may have been rounded); select it as text (CAST(x AS TEXT)), or opt in with lossy_integers=true"
        ))
    };
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                if !lossy_integers && i.unsigned_abs() > MAX_SAFE_INTEGER as u64 {
                    return Err(out_of_range(&i));
                }
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                match i64::try_from(u) {
                    Ok(i) if lossy_integers => Value::Int(i),
                    _ if lossy_integers => Value::Float(u as f64),
                    _ => return Err(out_of_range(&u)),
                }
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            match bytes {
                Some(bytes) => Value::Bytes(bytes),
                None => Value::Json(v.to_string()),
            }
        }
        Json::Object(_) => Value::Json(v.to_string()),
    })
}

/// What a finished statement changed, from its optional `meta`.
pub(super) fn outcome_of(item: &Json) -> ExecuteOutcome {
    let meta = item.get("meta");
    let number = |key: &str| meta.and_then(|m| m.get(key)).and_then(Json::as_i64);
    let changes = number("changes").unwrap_or(0).max(0) as u64;
    ExecuteOutcome {
        rows_affected: changes,
        last_insert_id: if changes > 0 {
            number("last_row_id")
        } else {
            None
        },
    }
}

pub(super) fn add_outcome(total: &mut ExecuteOutcome, next: ExecuteOutcome) {
    total.rows_affected += next.rows_affected;
    if next.last_insert_id.is_some() {
        total.last_insert_id = next.last_insert_id;
    }
}

impl D1Client {
    /// A row of `/raw` as values.
    pub(super) fn decode_row(&self, row: &Json, width: usize) -> Result<Vec<Value>> {
        let cells = row
            .as_array()
            .ok_or_else(|| Error::internal("D1 /raw answered a row that is not a list"))?;
        if cells.len() != width {
            return Err(Error::internal(format!(
                "D1 /raw answered a row of {} values for {width} columns",
                cells.len()
            )));
        }
        cells
            .iter()
            .map(|c| decode_value(c, self.lossy_integers))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iadb::ErrorKind;

    #[test]
    fn integers_outside_the_safe_range_are_refused() {
        assert!(encode_param(0, &Value::Int(MAX_SAFE_INTEGER), false).is_ok());
        let e = encode_param(0, &Value::Int(MAX_SAFE_INTEGER + 1), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(encode_param(0, &Value::Int(i64::MIN), true).is_ok());
        let back = decode_value(&json!(9_223_372_036_854_776_000u64), false).unwrap_err();
        assert_eq!(back.kind(), ErrorKind::InvalidArgument);
    }
}
