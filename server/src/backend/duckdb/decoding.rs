//! Result columns: their DuckDB types, and how their values become `Value`s.

use super::{binding::unix_epoch_date, errors::map_duckdb_error};
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use duckdb::{
    Connection, Statement,
    arrow::{
        array::{Array, AsArray, StructArray},
        datatypes::{
            ArrowDictionaryKeyType, ArrowNativeType, DataType, Date32Type, Decimal32Type,
            Decimal64Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type,
            Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
            IntervalYearMonthType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
            TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
            TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
        },
    },
    core::{LogicalTypeHandle, LogicalTypeId},
};
use iadb::{Column, Error, Result, Value};
use std::{fmt::Write as _, sync::Arc};

/// A DuckDB type, as far as decoding needs it.
#[derive(Debug)]
struct TypeDesc {
    id: LogicalTypeId,
    raw_id: u32,
    alias: Option<String>,
    decimal: (u8, u8),
    /// Struct and union members by name; the element of a list or array;
    /// key and value of a map.
    children: Vec<(String, TypeDesc)>,
}

/// DuckDB's C API id of TIMESTAMP_TZ_NS, newer than the crate's enum.
const RAW_TIMESTAMP_TZ_NS: u32 = 42;

/// The deepest a result column's type may nest LIST, ARRAY, STRUCT, MAP and
/// UNION types (`INTEGER[]` is one level, `INTEGER[][]` two). Describing
/// and decoding a type walks it one level per call, so a deeper column is
/// refused with INVALID_ARGUMENT, before the statement runs, rather than
/// let that walk (or the driver's) exhaust the thread's stack.
const MAX_TYPE_DEPTH: usize = 64;

/// How many levels of LIST, ARRAY, STRUCT, MAP and UNION `t` nests (0 for a
/// plain type), walked without recursion; the count stops just past
/// [`MAX_TYPE_DEPTH`].
fn nesting_depth(t: LogicalTypeHandle) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(t, 0usize)];
    while let Some((t, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if deepest > MAX_TYPE_DEPTH {
            break;
        }
        if matches!(
            t.id(),
            LogicalTypeId::List
                | LogicalTypeId::Array
                | LogicalTypeId::Map
                | LogicalTypeId::Struct
                | LogicalTypeId::Union
        ) {
            for i in 0..t.num_children() {
                pending.push((t.child(i), depth + 1));
            }
        }
    }
    deepest
}

fn too_deep(column: &str) -> Error {
    Error::invalid_argument(format!(
        "{column} nests LIST, ARRAY, STRUCT, MAP or UNION types more than {MAX_TYPE_DEPTH} levels deep, which iadb does not return; cast it in the query (e.g. to VARCHAR) or return its parts"
    ))
}

/// Refuses a prepared statement, before it runs, if a column of its result
/// nests deeper than [`MAX_TYPE_DEPTH`] (the name of a column is known only
/// once it ran, so the column is named by position).
fn check_result_depth(stmt: &Statement<'_>) -> Result<()> {
    for i in 0..stmt.column_count() {
        if nesting_depth(stmt.column_logical_type(i)) > MAX_TYPE_DEPTH {
            return Err(too_deep(&format!("result column {}", i + 1)));
        }
    }
    Ok(())
}

/// Prepares `sql` (running every statement of a script but the last) and
/// checks the result's columns before anything else walks their types.
pub(super) fn prepare_checked<'c>(conn: &'c Connection, sql: &str) -> Result<Statement<'c>> {
    let stmt = conn.prepare(sql).map_err(map_duckdb_error)?;
    check_result_depth(&stmt)?;
    Ok(stmt)
}

impl TypeDesc {
    fn of(t: &LogicalTypeHandle) -> Self {
        let id = t.id();
        let children = match id {
            LogicalTypeId::Struct | LogicalTypeId::Union => (0..t.num_children())
                .map(|i| (t.child_name(i), Self::of(&t.child(i))))
                .collect(),
            LogicalTypeId::List | LogicalTypeId::Array | LogicalTypeId::Map => (0..t
                .num_children())
                .map(|i| (String::new(), Self::of(&t.child(i))))
                .collect(),
            _ => Vec::new(),
        };
        let decimal = if id == LogicalTypeId::Decimal {
            (t.decimal_width(), t.decimal_scale())
        } else {
            (0, 0)
        };
        Self {
            id,
            raw_id: t.raw_id(),
            alias: t.get_alias().filter(|a| !a.is_empty()),
            decimal,
            children,
        }
    }

    fn child(&self, index: usize) -> Option<&TypeDesc> {
        self.children.get(index).map(|(_, t)| t)
    }

    fn is_json(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("JSON"))
    }

    /// The type's SQL name, as DuckDB spells it (`DECIMAL(38,9)`,
    /// `INTEGER[]`, `STRUCT(a INTEGER)`); `arrow` supplies an ARRAY's size.
    fn sql_name(&self, arrow: &DataType) -> String {
        if let Some(alias) = &self.alias {
            return alias.clone();
        }
        let child_arrow = |i: usize| arrow_child(arrow, i).unwrap_or(DataType::Null);
        match self.id {
            LogicalTypeId::Boolean => "BOOLEAN".into(),
            LogicalTypeId::Tinyint => "TINYINT".into(),
            LogicalTypeId::Smallint => "SMALLINT".into(),
            LogicalTypeId::Integer | LogicalTypeId::IntegerLiteral => "INTEGER".into(),
            LogicalTypeId::Bigint => "BIGINT".into(),
            LogicalTypeId::Hugeint => "HUGEINT".into(),
            LogicalTypeId::UTinyint => "UTINYINT".into(),
            LogicalTypeId::USmallint => "USMALLINT".into(),
            LogicalTypeId::UInteger => "UINTEGER".into(),
            LogicalTypeId::UBigint => "UBIGINT".into(),
            LogicalTypeId::UHugeint => "UHUGEINT".into(),
            LogicalTypeId::Float => "FLOAT".into(),
            LogicalTypeId::Double => "DOUBLE".into(),
            LogicalTypeId::Decimal => format!("DECIMAL({},{})", self.decimal.0, self.decimal.1),
            LogicalTypeId::Varchar | LogicalTypeId::StringLiteral => "VARCHAR".into(),
            LogicalTypeId::Blob => "BLOB".into(),
            LogicalTypeId::Bit => "BIT".into(),
            LogicalTypeId::Bignum => "BIGNUM".into(),
            LogicalTypeId::Uuid => "UUID".into(),
            LogicalTypeId::Date => "DATE".into(),
            LogicalTypeId::Time => "TIME".into(),
            LogicalTypeId::TimeNs => "TIME_NS".into(),
            LogicalTypeId::TimeTZ => "TIME WITH TIME ZONE".into(),
            LogicalTypeId::Timestamp => "TIMESTAMP".into(),
            LogicalTypeId::TimestampS => "TIMESTAMP_S".into(),
            LogicalTypeId::TimestampMs => "TIMESTAMP_MS".into(),
            LogicalTypeId::TimestampNs => "TIMESTAMP_NS".into(),
            LogicalTypeId::TimestampTZ => "TIMESTAMP WITH TIME ZONE".into(),
            LogicalTypeId::Interval => "INTERVAL".into(),
            LogicalTypeId::Enum => "ENUM".into(),
            LogicalTypeId::Geometry => "GEOMETRY".into(),
            LogicalTypeId::Variant => "VARIANT".into(),
            LogicalTypeId::SqlNull => "NULL".into(),
            LogicalTypeId::List => match self.child(0) {
                Some(c) => format!("{}[]", c.sql_name(&child_arrow(0))),
                None => "LIST".into(),
            },
            LogicalTypeId::Array => {
                let size = match arrow {
                    DataType::FixedSizeList(_, n) => n.to_string(),
                    _ => String::new(),
                };
                match self.child(0) {
                    Some(c) => format!("{}[{size}]", c.sql_name(&child_arrow(0))),
                    None => "ARRAY".into(),
                }
            }
            LogicalTypeId::Map => {
                let entry = child_arrow(0);
                match (self.child(0), self.child(1)) {
                    (Some(k), Some(v)) => format!(
                        "MAP({}, {})",
                        k.sql_name(&arrow_child(&entry, 0).unwrap_or(DataType::Null)),
                        v.sql_name(&arrow_child(&entry, 1).unwrap_or(DataType::Null))
                    ),
                    _ => "MAP".into(),
                }
            }
            LogicalTypeId::Struct | LogicalTypeId::Union => {
                let members = self
                    .children
                    .iter()
                    .enumerate()
                    .map(|(i, (name, t))| {
                        format!("{} {}", sql_member_name(name), t.sql_name(&child_arrow(i)))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let word = if self.id == LogicalTypeId::Struct {
                    "STRUCT"
                } else {
                    "UNION"
                };
                format!("{word}({members})")
            }
            _ if self.raw_id == RAW_TIMESTAMP_TZ_NS => "TIMESTAMP_NS WITH TIME ZONE".into(),
            _ => format!("DuckDB type #{}", self.raw_id),
        }
    }

    /// Why iadb cannot return this type, if it cannot.
    fn unsupported(&self) -> Option<&'static str> {
        match self.id {
            LogicalTypeId::TimeTZ => Some("the DuckDB driver drops its UTC offset"),
            LogicalTypeId::Variant => Some("the DuckDB driver cannot read it"),
            _ => self.children.iter().find_map(|(_, c)| c.unsupported()),
        }
    }
}

fn sql_member_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if plain {
        name.to_owned()
    } else {
        iadb::quote_identifier(name)
    }
}

/// The arrow type of child `index` (list element, struct member, map entry).
fn arrow_child(arrow: &DataType, index: usize) -> Option<DataType> {
    match arrow {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => (index == 0).then(|| f.data_type().clone()),
        DataType::Struct(fields) => fields.get(index).map(|f| f.data_type().clone()),
        DataType::Union(fields, _) => fields.iter().nth(index).map(|(_, f)| f.data_type().clone()),
        _ => None,
    }
}

/// Whether the decoder below can read this arrow layout.
fn arrow_decodable(arrow: &DataType) -> bool {
    use DataType as D;
    match arrow {
        D::Null
        | D::Boolean
        | D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::UInt8
        | D::UInt16
        | D::UInt32
        | D::UInt64
        | D::Float32
        | D::Float64
        | D::Decimal32(..)
        | D::Decimal64(..)
        | D::Decimal128(..)
        | D::Utf8
        | D::LargeUtf8
        | D::Utf8View
        | D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::FixedSizeBinary(_)
        | D::Date32
        | D::Time64(_)
        | D::Timestamp(..)
        | D::Interval(_) => true,
        D::Dictionary(key, value) => {
            matches!(**key, D::UInt8 | D::UInt16 | D::UInt32)
                && matches!(**value, D::Utf8 | D::LargeUtf8)
        }
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::Map(f, _) => {
            arrow_decodable(f.data_type())
        }
        D::Struct(fields) => fields.iter().all(|f| arrow_decodable(f.data_type())),
        D::Union(fields, _) => fields.iter().all(|(_, f)| arrow_decodable(f.data_type())),
        _ => false,
    }
}

/// The columns of an executed statement, and how to decode each.
pub(super) struct ResultLayout {
    pub(super) columns: Arc<[Column]>,
    types: Vec<TypeDesc>,
}

impl ResultLayout {
    pub(super) fn of(stmt: &Statement<'_>) -> Result<Self> {
        let count = stmt.column_count();
        let mut columns = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        for i in 0..count {
            let name = stmt.column_name(i).map_err(map_duckdb_error)?.clone();
            // Checked before the statement ran too; its types may have
            // changed if it was bound again against a changed schema.
            if nesting_depth(stmt.column_logical_type(i)) > MAX_TYPE_DEPTH {
                return Err(too_deep(&format!("column `{name}`")));
            }
            let arrow = stmt.column_type(i);
            let desc = TypeDesc::of(&stmt.column_logical_type(i));
            let sql_type = desc.sql_name(&arrow);
            let why = desc.unsupported().or_else(|| {
                (!arrow_decodable(&arrow)).then_some("the DuckDB driver has no decoder for it")
            });
            if let Some(why) = why {
                return Err(Error::invalid_argument(format!(
                    "column `{name}` has type {sql_type}, which iadb cannot return: {why}; cast it in the query (e.g. CAST({name} AS VARCHAR))"
                )));
            }
            columns.push(Column::new(name, sql_type));
            types.push(desc);
        }
        Ok(Self {
            columns: columns.into(),
            types,
        })
    }

    /// Whether this is the `Count` result DuckDB gives a statement that
    /// returns no rows of its own (INSERT, UPDATE, DELETE without RETURNING
    /// report the rows they changed in it; DDL an empty one): what it
    /// changed, not rows of a query.
    pub(super) fn is_changed_rows(&self, sql: &str) -> bool {
        self.columns.len() == 1
            && self.columns[0].name == "Count"
            && self.types[0].id == LogicalTypeId::Bigint
            && !returns_rows(sql)
    }

    /// Row `row` of `chunk`, the `number`th of the result (from 1, which an
    /// error names, with the column).
    pub(super) fn decode_row(
        &self,
        chunk: &StructArray,
        row: usize,
        number: u64,
    ) -> Result<Vec<Value>> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, desc)| {
                decode_value(chunk.column(i).as_ref(), row, desc).map_err(|why| {
                    let column = &self.columns[i];
                    Error::invalid_argument(format!(
                        "row {number}: column `{}` ({}): {why}; cast it in the query (e.g. CAST({} AS VARCHAR))",
                        column.name, column.declared_type, column.name
                    ))
                })
            })
            .collect()
    }
}

/// Whether `sql` is a statement whose result is rows of its own (a query,
/// or a change with RETURNING).
fn returns_rows(sql: &str) -> bool {
    const QUERY_WORDS: &[&str] = &[
        "SELECT",
        "WITH",
        "VALUES",
        "FROM",
        "TABLE",
        "SHOW",
        "DESCRIBE",
        "DESC",
        "SUMMARIZE",
        "PRAGMA",
        "CALL",
        "EXPLAIN",
        "PIVOT",
        "UNPIVOT",
    ];
    let keyword = leading_keyword(sql);
    keyword.is_empty()
        || QUERY_WORDS.iter().any(|w| w.eq_ignore_ascii_case(keyword))
        || sql.to_ascii_uppercase().contains("RETURNING")
}

/// The first word of `sql`, after whitespace and comments.
fn leading_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Why a value could not be decoded (the caller names the column).
type DecodeResult<T> = std::result::Result<T, String>;

fn layout_error(arrow: &DataType) -> String {
    format!("unexpected arrow layout {arrow}")
}

fn is_null_at(array: &dyn Array, row: usize) -> bool {
    match array.data_type() {
        DataType::Null => true,
        // A union has no validity of its own: it is NULL when its member is.
        DataType::Union(..) => array.as_union_opt().is_some_and(|union| {
            let member = union.child(union.type_id(row));
            is_null_at(member.as_ref(), union.value_offset(row))
        }),
        _ => array.is_null(row),
    }
}

/// One top-level value of a result column.
fn decode_value(array: &dyn Array, row: usize, desc: &TypeDesc) -> DecodeResult<Value> {
    use DataType as D;
    if is_null_at(array, row) {
        return Ok(Value::Null);
    }
    let arrow = array.data_type();
    let wrong = || layout_error(arrow);
    Ok(match arrow {
        D::Boolean => Value::Bool(array.as_boolean_opt().ok_or_else(wrong)?.value(row)),
        D::Int8 => Value::Int(primitive::<Int8Type>(array, row)?.into()),
        D::Int16 => Value::Int(primitive::<Int16Type>(array, row)?.into()),
        D::Int32 => Value::Int(primitive::<Int32Type>(array, row)?.into()),
        D::Int64 => Value::Int(primitive::<Int64Type>(array, row)?),
        D::UInt8 => Value::Int(primitive::<UInt8Type>(array, row)?.into()),
        D::UInt16 => Value::Int(primitive::<UInt16Type>(array, row)?.into()),
        D::UInt32 => Value::Int(primitive::<UInt32Type>(array, row)?.into()),
        // UBIGINT's range goes past int64: exact digits, whatever the value.
        D::UInt64 => Value::Decimal(primitive::<UInt64Type>(array, row)?.to_string()),
        D::Float32 => Value::Float(primitive::<Float32Type>(array, row)?.into()),
        D::Float64 => Value::Float(primitive::<Float64Type>(array, row)?),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) => {
            Value::Decimal(decimal_text(array, row, desc)?)
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => {
            let text = string_at(array, row)?.to_owned();
            if desc.is_json() {
                Value::Json(text)
            } else {
                Value::Text(text)
            }
        }
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            let bytes = bytes_at(array, row)?;
            match desc.id {
                LogicalTypeId::Bit => Value::Text(bit_text(bytes)?),
                LogicalTypeId::Bignum => Value::Decimal(bignum_text(bytes)?),
                LogicalTypeId::Uuid => Value::Text(uuid_text(bytes)?),
                _ => Value::Bytes(bytes.to_vec()),
            }
        }
        D::Date32 => match date_at(primitive::<Date32Type>(array, row)?)? {
            Ok(d) => Value::Date(d),
            Err(special) => Value::Text(special),
        },
        D::Time64(unit) => match time_at(array, row, unit)? {
            Ok(t) => Value::Time(t),
            Err(text) => Value::Text(text),
        },
        D::Timestamp(unit, tz) => match timestamp_at(array, row, unit)? {
            Ok(t) if tz.is_some() => Value::TimestampTz(t),
            Ok(t) => Value::DateTime(t.naive_utc()),
            Err(special) => Value::Text(special),
        },
        D::Interval(unit) => Value::Text(interval_at(array, row, unit)?),
        D::Dictionary(..) => Value::Text(enum_at(array, row)?.to_owned()),
        D::List(_)
        | D::LargeList(_)
        | D::FixedSizeList(..)
        | D::Struct(_)
        | D::Map(..)
        | D::Union(..) => {
            let mut json = String::new();
            write_json(&mut json, array, row, Some(desc))?;
            Value::Json(json)
        }
        _ => return Err(wrong()),
    })
}

fn primitive<T: duckdb::arrow::datatypes::ArrowPrimitiveType>(
    array: &dyn Array,
    row: usize,
) -> DecodeResult<T::Native> {
    array
        .as_primitive_opt::<T>()
        .map(|a| a.value(row))
        .ok_or_else(|| layout_error(array.data_type()))
}

fn string_at(array: &dyn Array, row: usize) -> DecodeResult<&str> {
    let text = match array.data_type() {
        DataType::Utf8 => array.as_string_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeUtf8 => array.as_string_opt::<i64>().map(|a| a.value(row)),
        DataType::Utf8View => array.as_string_view_opt().map(|a| a.value(row)),
        _ => None,
    };
    text.ok_or_else(|| layout_error(array.data_type()))
}

fn bytes_at(array: &dyn Array, row: usize) -> DecodeResult<&[u8]> {
    let bytes = match array.data_type() {
        DataType::Binary => array.as_binary_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeBinary => array.as_binary_opt::<i64>().map(|a| a.value(row)),
        DataType::BinaryView => array.as_binary_view_opt().map(|a| a.value(row)),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary_opt().map(|a| a.value(row)),
        _ => None,
    };
    bytes.ok_or_else(|| layout_error(array.data_type()))
}

/// Exact decimal digits; HUGEINT, UHUGEINT and DECIMAL(38,0) share arrow's
/// Decimal128(38, 0), and the DuckDB type says which is unsigned.
fn decimal_text(array: &dyn Array, row: usize, desc: &TypeDesc) -> DecodeResult<String> {
    let (unscaled, scale) = match array.data_type() {
        DataType::Decimal32(_, s) => (i128::from(primitive::<Decimal32Type>(array, row)?), *s),
        DataType::Decimal64(_, s) => (i128::from(primitive::<Decimal64Type>(array, row)?), *s),
        DataType::Decimal128(_, s) => (primitive::<Decimal128Type>(array, row)?, *s),
        other => return Err(layout_error(other)),
    };
    if desc.id == LogicalTypeId::UHugeint {
        // The bits are an unsigned 128-bit integer.
        return Ok((unscaled as u128).to_string());
    }
    let scale = u32::try_from(scale).map_err(|_| format!("negative decimal scale {scale}"))?;
    Ok(scaled_digits(unscaled, scale))
}

fn scaled_digits(unscaled: i128, scale: u32) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{sign}{int_part}.{frac_part}")
}

/// DuckDB's BIT: a padding count, then the bits, most significant first.
fn bit_text(bytes: &[u8]) -> DecodeResult<String> {
    let (&padding, data) = bytes
        .split_first()
        .ok_or_else(|| "empty BIT value".to_owned())?;
    let mut out = String::with_capacity(data.len() * 8);
    for (i, byte) in data.iter().enumerate() {
        let skip = if i == 0 {
            usize::from(padding.min(8))
        } else {
            0
        };
        for bit in skip..8 {
            out.push(if byte & (0x80 >> bit) != 0 { '1' } else { '0' });
        }
    }
    Ok(out)
}

/// DuckDB's BIGNUM: a 3-byte header (sign in its top bit, then the byte
/// count), then the magnitude big-endian; a negative number has every bit
/// inverted.
fn bignum_text(bytes: &[u8]) -> DecodeResult<String> {
    if bytes.len() < 3 {
        return Err("short BIGNUM value".into());
    }
    let negative = bytes[0] & 0x80 == 0;
    let mut magnitude: Vec<u8> = bytes[3..]
        .iter()
        .map(|b| if negative { !b } else { *b })
        .collect();
    // Repeated division by 10^9 of the big-endian base-256 number.
    let mut groups = Vec::new();
    while magnitude.iter().any(|b| *b != 0) {
        let mut remainder: u64 = 0;
        for byte in magnitude.iter_mut() {
            let current = (remainder << 8) | u64::from(*byte);
            *byte = (current / 1_000_000_000) as u8;
            remainder = current % 1_000_000_000;
        }
        groups.push(remainder);
    }
    let mut out = String::from(if negative && !groups.is_empty() {
        "-"
    } else {
        ""
    });
    match groups.split_last() {
        None => out.push('0'),
        Some((most, rest)) => {
            let _ = write!(out, "{most}");
            for group in rest.iter().rev() {
                let _ = write!(out, "{group:09}");
            }
        }
    }
    Ok(out)
}

fn uuid_text(bytes: &[u8]) -> DecodeResult<String> {
    if bytes.len() != 16 {
        return Err(format!("UUID of {} bytes", bytes.len()));
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A DATE; DuckDB's `infinity` and `-infinity` as their text. A date
/// chrono cannot hold (past the year 262142) is an error.
pub(super) fn date_at(days: i32) -> DecodeResult<std::result::Result<NaiveDate, String>> {
    match days {
        i32::MAX => Ok(Err("infinity".into())),
        d if d == -i32::MAX => Ok(Err("-infinity".into())),
        d => chrono::Duration::try_days(i64::from(d))
            .and_then(|days| unix_epoch_date().checked_add_signed(days))
            .map(Ok)
            .ok_or_else(|| {
                format!("the date {d} days from 1970-01-01 is outside the years iadb carries (-262143 to 262142)")
            }),
    }
}

/// A TIME; `24:00:00`, which DuckDB allows and chrono does not, as text.
fn time_at(
    array: &dyn Array,
    row: usize,
    unit: &TimeUnit,
) -> DecodeResult<std::result::Result<NaiveTime, String>> {
    let nanos: i64 = match unit {
        TimeUnit::Microsecond => primitive::<Time64MicrosecondType>(array, row)?
            .checked_mul(1_000)
            .ok_or_else(|| "TIME out of range".to_owned())?,
        TimeUnit::Nanosecond => primitive::<Time64NanosecondType>(array, row)?,
        _ => return Err(layout_error(array.data_type())),
    };
    let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).map_err(|_| "TIME out of range")?;
    let frac = u32::try_from(nanos.rem_euclid(1_000_000_000)).map_err(|_| "TIME out of range")?;
    Ok(NaiveTime::from_num_seconds_from_midnight_opt(secs, frac)
        .ok_or_else(|| format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)))
}

/// A TIMESTAMP as a UTC instant; `infinity` and `-infinity` as text.
fn timestamp_at(
    array: &dyn Array,
    row: usize,
    unit: &TimeUnit,
) -> DecodeResult<std::result::Result<DateTime<Utc>, String>> {
    let raw = match unit {
        TimeUnit::Second => primitive::<TimestampSecondType>(array, row)?,
        TimeUnit::Millisecond => primitive::<TimestampMillisecondType>(array, row)?,
        TimeUnit::Microsecond => primitive::<TimestampMicrosecondType>(array, row)?,
        TimeUnit::Nanosecond => primitive::<TimestampNanosecondType>(array, row)?,
    };
    if raw == i64::MAX {
        return Ok(Err("infinity".into()));
    }
    if raw == -i64::MAX {
        return Ok(Err("-infinity".into()));
    }
    let instant = match unit {
        TimeUnit::Second => DateTime::from_timestamp(raw, 0),
        TimeUnit::Millisecond => DateTime::from_timestamp_millis(raw),
        TimeUnit::Microsecond => DateTime::from_timestamp_micros(raw),
        TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(raw)),
    };
    instant
        .map(Ok)
        .ok_or_else(|| format!("timestamp {raw} ({unit:?}) is out of range"))
}

/// An INTERVAL in DuckDB's own text form (`1 year 2 months 3 days
/// 04:05:06.5`), which DuckDB reads back.
fn interval_at(array: &dyn Array, row: usize, unit: &IntervalUnit) -> DecodeResult<String> {
    let (months, days, nanos) = match unit {
        IntervalUnit::MonthDayNano => {
            let v = primitive::<IntervalMonthDayNanoType>(array, row)?;
            (v.months, v.days, v.nanoseconds)
        }
        IntervalUnit::DayTime => {
            let v = primitive::<IntervalDayTimeType>(array, row)?;
            (0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        IntervalUnit::YearMonth => (primitive::<IntervalYearMonthType>(array, row)?, 0, 0),
    };
    Ok(format_interval(months, days, nanos / 1_000))
}

fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut unit = |value: i32, name: &str| {
        if value != 0 {
            let plural = if value == 1 || value == -1 { "" } else { "s" };
            parts.push(format!("{value} {name}{plural}"));
        }
    };
    unit(months / 12, "year");
    unit(months % 12, "month");
    unit(days, "day");
    if micros != 0 {
        let sign = if micros < 0 { "-" } else { "" };
        let total = micros.unsigned_abs();
        let (hours, minutes, seconds, fraction) = (
            total / 3_600_000_000,
            total / 60_000_000 % 60,
            total / 1_000_000 % 60,
            total % 1_000_000,
        );
        let mut time = format!("{sign}{hours:02}:{minutes:02}:{seconds:02}");
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            let _ = write!(time, ".{}", digits.trim_end_matches('0'));
        }
        parts.push(time);
    }
    if parts.is_empty() {
        "00:00:00".into()
    } else {
        parts.join(" ")
    }
}

/// An ENUM's label (DuckDB exports an enum as a dictionary).
fn enum_at(array: &dyn Array, row: usize) -> DecodeResult<&str> {
    fn label<K: ArrowDictionaryKeyType>(array: &dyn Array, row: usize) -> Option<&str> {
        let dict = array.as_dictionary_opt::<K>()?;
        let key = dict.keys().value(row).as_usize();
        let values = dict.values();
        match values.data_type() {
            DataType::Utf8 => {
                let labels = values.as_string_opt::<i32>()?;
                (key < labels.len()).then(|| labels.value(key))
            }
            DataType::LargeUtf8 => {
                let labels = values.as_string_opt::<i64>()?;
                (key < labels.len()).then(|| labels.value(key))
            }
            _ => None,
        }
    }
    let found = match array.data_type() {
        DataType::Dictionary(key, _) => match **key {
            DataType::UInt8 => label::<UInt8Type>(array, row),
            DataType::UInt16 => label::<UInt16Type>(array, row),
            DataType::UInt32 => label::<UInt32Type>(array, row),
            _ => None,
        },
        _ => None,
    };
    found.ok_or_else(|| layout_error(array.data_type()))
}

// ---------------------------------------------------------------------------
// LIST, STRUCT, MAP, ARRAY and UNION values as JSON text.

/// Writes one value as JSON. Numbers (decimals and 128-bit integers too)
/// keep their exact digits; NaN and the infinities become strings; dates,
/// times, intervals and UUIDs are strings in DuckDB's text form; bytes are a
/// string with `\xHH` escapes (DuckDB's BLOB text); a JSON member is embedded
/// as a document; a map is an object keyed by its keys' text.
fn write_json(
    out: &mut String,
    array: &dyn Array,
    row: usize,
    desc: Option<&TypeDesc>,
) -> DecodeResult<()> {
    use DataType as D;
    if is_null_at(array, row) {
        out.push_str("null");
        return Ok(());
    }
    let arrow = array.data_type();
    let id = desc.map(|d| d.id);
    let child = |i: usize| desc.and_then(|d| d.child(i));
    match arrow {
        D::Boolean => {
            let b = array
                .as_boolean_opt()
                .ok_or_else(|| layout_error(arrow))?
                .value(row);
            out.push_str(if b { "true" } else { "false" });
        }
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
            let Value::Int(n) = decode_value(array, row, &plain_desc())? else {
                return Err(layout_error(arrow));
            };
            let _ = write!(out, "{n}");
        }
        D::UInt64 => {
            let _ = write!(out, "{}", primitive::<UInt64Type>(array, row)?);
        }
        D::Float32 => write_json_double(out, primitive::<Float32Type>(array, row)?.into()),
        D::Float64 => write_json_double(out, primitive::<Float64Type>(array, row)?),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) => {
            let fallback = plain_desc();
            out.push_str(&decimal_text(array, row, desc.unwrap_or(&fallback))?);
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => {
            let text = string_at(array, row)?;
            if desc.is_some_and(TypeDesc::is_json) {
                out.push_str(text);
            } else {
                write_json_string(out, text);
            }
        }
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            let bytes = bytes_at(array, row)?;
            match id {
                Some(LogicalTypeId::Bit) => write_json_string(out, &bit_text(bytes)?),
                Some(LogicalTypeId::Bignum) => out.push_str(&bignum_text(bytes)?),
                Some(LogicalTypeId::Uuid) => write_json_string(out, &uuid_text(bytes)?),
                _ => write_json_string(out, &blob_text(bytes)),
            }
        }
        D::Date32 => {
            let text = match date_at(primitive::<Date32Type>(array, row)?)? {
                Ok(d) => d.format("%Y-%m-%d").to_string(),
                Err(special) => special,
            };
            write_json_string(out, &text);
        }
        D::Time64(unit) => {
            let text = match time_at(array, row, unit)? {
                Ok(t) => format!("{}{}", t.format("%H:%M:%S"), fraction_text(t.nanosecond())),
                Err(text) => text,
            };
            write_json_string(out, &text);
        }
        D::Timestamp(unit, tz) => {
            let text = match timestamp_at(array, row, unit)? {
                Ok(t) => format!(
                    "{}{}{}",
                    t.format("%Y-%m-%d %H:%M:%S"),
                    fraction_text(t.nanosecond()),
                    if tz.is_some() { "+00" } else { "" }
                ),
                Err(special) => special,
            };
            write_json_string(out, &text);
        }
        D::Interval(unit) => write_json_string(out, &interval_at(array, row, unit)?),
        D::Dictionary(..) => write_json_string(out, enum_at(array, row)?),
        D::List(_) | D::LargeList(_) | D::FixedSizeList(..) => {
            let items = match arrow {
                D::List(_) => array.as_list_opt::<i32>().map(|a| a.value(row)),
                D::LargeList(_) => array.as_list_opt::<i64>().map(|a| a.value(row)),
                _ => array.as_fixed_size_list_opt().map(|a| a.value(row)),
            }
            .ok_or_else(|| layout_error(arrow))?;
            out.push('[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, items.as_ref(), i, child(0))?;
            }
            out.push(']');
        }
        D::Struct(fields) => {
            let members = array.as_struct_opt().ok_or_else(|| layout_error(arrow))?;
            out.push('{');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, field.name());
                out.push(':');
                write_json(out, members.column(i).as_ref(), row, child(i))?;
            }
            out.push('}');
        }
        D::Map(..) => {
            let map = array.as_map_opt().ok_or_else(|| layout_error(arrow))?;
            let entries = map.value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                let key = match keys.data_type() {
                    D::Utf8 | D::LargeUtf8 | D::Utf8View => string_at(keys.as_ref(), i)?.to_owned(),
                    _ => {
                        let mut text = String::new();
                        write_json(&mut text, keys.as_ref(), i, child(0))?;
                        // A key that is itself a JSON string: its content.
                        match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                            Some(inner) => inner.to_owned(),
                            None => text,
                        }
                    }
                };
                write_json_string(out, &key);
                out.push(':');
                write_json(out, values.as_ref(), i, child(1))?;
            }
            out.push('}');
        }
        D::Union(fields, _) => {
            let union = array.as_union_opt().ok_or_else(|| layout_error(arrow))?;
            let type_id = union.type_id(row);
            let member = fields
                .iter()
                .position(|(id, _)| id == type_id)
                .ok_or_else(|| layout_error(arrow))?;
            let value = union.child(type_id);
            write_json(out, value.as_ref(), union.value_offset(row), child(member))?;
        }
        _ => return Err(layout_error(arrow)),
    }
    Ok(())
}

/// Fractional seconds as DuckDB prints them: none for whole seconds, else
/// up to nine digits without trailing zeros (`.5`, `.123456`).
fn fraction_text(nanos: u32) -> String {
    if nanos == 0 {
        return String::new();
    }
    let digits = format!("{:09}", nanos.min(999_999_999));
    format!(".{}", digits.trim_end_matches('0'))
}

/// A type description with no DuckDB refinement (plain arrow decoding).
fn plain_desc() -> TypeDesc {
    TypeDesc {
        id: LogicalTypeId::Invalid,
        raw_id: 0,
        alias: None,
        decimal: (0, 0),
        children: Vec::new(),
    }
}

fn write_json_double(out: &mut String, x: f64) {
    match serde_json::Number::from_f64(x) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None if x.is_nan() => out.push_str("\"NaN\""),
        None if x > 0.0 => out.push_str("\"Infinity\""),
        None => out.push_str("\"-Infinity\""),
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes as DuckDB prints a BLOB: printable ASCII as is, the rest `\xHH`.
fn blob_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_digits_keep_leading_zeros() {
        assert_eq!(scaled_digits(5, 3), "0.005");
        assert_eq!(scaled_digits(-12345, 2), "-123.45");
        assert_eq!(scaled_digits(7, 0), "7");
    }

    #[test]
    fn intervals_print_as_duckdb_does() {
        assert_eq!(
            format_interval(14, 3, 4 * 3_600_000_000 + 500_000),
            "1 year 2 months 3 days 04:00:00.5"
        );
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(
            format_interval(-1, -1, -1_000_000),
            "-1 month -1 day -00:00:01"
        );
    }

    #[test]
    fn bits_and_bignums_decode() {
        // BIT '10110': 3 padding bits, then 111 10110 (padding bits are 1s).
        assert_eq!(bit_text(&[3, 0b1111_0110]).as_deref(), Ok("10110"));
        // BIGNUM 258 = 0x0102, positive: header 0x80 0x00 0x02.
        assert_eq!(
            bignum_text(&[0x80, 0x00, 0x02, 0x01, 0x02]).as_deref(),
            Ok("258")
        );
        // Negative: every bit inverted.
        assert_eq!(
            bignum_text(&[!0x80, !0x00, !0x02, !0x01, !0x02]).as_deref(),
            Ok("-258")
        );
    }

    #[test]
    fn only_queries_and_returning_return_rows() {
        for sql in [
            "SELECT 1",
            " -- c\n with a AS (SELECT 1) SELECT * FROM a",
            "(SELECT 1)",
            "FROM t",
            "DELETE FROM t RETURNING id",
        ] {
            assert!(returns_rows(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "update t set x = 1",
            "CREATE TABLE t (x INTEGER)",
            "DROP TABLE t",
        ] {
            assert!(!returns_rows(sql), "{sql}");
        }
    }

    #[test]
    fn json_alias_decodes_as_json() {
        use duckdb::arrow::array::StringArray;
        let docs = StringArray::from(vec![Some(r#"{"a":1}"#), None]);
        let mut desc = plain_desc();
        desc.id = LogicalTypeId::Varchar;
        desc.alias = Some("JSON".into());
        assert_eq!(
            decode_value(&docs, 0, &desc),
            Ok(Value::Json(r#"{"a":1}"#.into()))
        );
        assert_eq!(decode_value(&docs, 1, &desc), Ok(Value::Null));
        let mut out = String::new();
        write_json(&mut out, &docs, 0, Some(&desc)).expect("json");
        assert_eq!(out, r#"{"a":1}"#);
        desc.alias = None;
        assert_eq!(
            decode_value(&docs, 0, &desc),
            Ok(Value::Text(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn leading_keyword_skips_comments() {
        assert_eq!(leading_keyword("  -- hi\n /* x */ insert into t"), "insert");
        assert_eq!(leading_keyword("SELECT 1"), "SELECT");
    }
}
