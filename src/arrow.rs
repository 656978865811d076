//! Arrow results (`RESULT_FORMAT_ARROW`, docs/arrow.md): the Arrow type of
//! each result column, record batches built from the server's row batches
//! ([`ArrowEncoder`]), and the IPC stream read back ([`ArrowDecoder`]).
//!
//! A column's Arrow type comes from its engine and declared type
//! ([`declared_arrow_type`]); where that says nothing (an SQLite
//! expression, D1, a type not in the table) from the first non-NULL value
//! of the first batch ([`value_arrow_type`]); where that is NULL too,
//! `Utf8`. The schema is fixed then: a later value that does not fit its
//! column's type is an error naming the column and both types (no value),
//! never a silent conversion.

use std::sync::Arc;

pub use arrow_array::{self, RecordBatch};
pub use arrow_schema::{self, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Column, DatabaseType, Error, ErrorKind, RowBatch, Value, batch::Cell};
use arrow_array::{
    ArrayRef,
    builder::{
        BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
        Time64NanosecondBuilder, TimestampMicrosecondBuilder, UInt64Builder,
    },
};
use arrow_ipc::writer::StreamWriter;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Field metadata: the column's declared type, as the header has it.
pub const DECLARED_TYPE_KEY: &str = "iadb.declared_type";
/// Field metadata of a JSON column: Arrow's canonical JSON extension.
const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";
/// Field metadata of a `Utf8` column whose values are exact decimals (their
/// digits): the key, and its value. A client that wants the decimals back
/// as numbers (Python's `Decimal`) reads it; a plain `Utf8` column is text.
pub const VALUE_KIND_KEY: &str = "iadb.value_kind";
const DECIMAL_KIND: &str = "decimal";

/// The time zone of `TIMESTAMPTZ`-like columns: instants in UTC.
pub const UTC: &str = "UTC";

/// Where an Arrow type came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Declared,
    Value,
    Default,
}

/// The kind of value a column holds, with its Arrow type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Boolean`.
    Bool,
    /// `Int64` (every integer type: iadb carries integers as 64 bits).
    Int,
    /// `UInt64` (MySQL BIGINT UNSIGNED, BIT).
    UInt,
    /// `Float64`.
    Float,
    /// `Utf8`: text.
    Text,
    /// `Utf8`: exact decimals as their digits, marked in the field's
    /// metadata ([`VALUE_KIND_KEY`]).
    Decimal,
    /// `Utf8` with the `arrow.json` extension.
    Json,
    /// `Binary`.
    Bytes,
    /// `Date32`.
    Date,
    /// `Time64(Nanosecond)`.
    Time,
    /// `Timestamp(Microsecond, None)`.
    DateTime,
    /// `Timestamp(Microsecond, "UTC")`.
    TimestampTz,
}

impl Kind {
    /// Its Arrow type.
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::UInt => DataType::UInt64,
            Kind::Float => DataType::Float64,
            Kind::Text | Kind::Decimal | Kind::Json => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Nanosecond),
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }
}

/// The Arrow kind a column of `engine` declared as `declared` gets, when
/// the declared type decides it; `None` when the values must (an SQLite
/// expression or NUMERIC column, D1, a type not listed in docs/arrow.md).
pub fn declared_arrow_type(engine: DatabaseType, declared: &str) -> Option<Kind> {
    let upper = declared.trim().to_ascii_uppercase();
    let name = upper.as_str();
    // DuckDB's parameterised types (`DECIMAL(18,3)`, `VARCHAR(10)`).
    let base = name.split('(').next().unwrap_or(name).trim();
    match engine {
        DatabaseType::Sqlite => match name {
            "INTEGER" => Some(Kind::Int),
            "REAL" => Some(Kind::Float),
            "TEXT" => Some(Kind::Text),
            "BLOB" => Some(Kind::Bytes),
            "BOOLEAN" => Some(Kind::Bool),
            "DATE" => Some(Kind::Date),
            "TIME" => Some(Kind::Time),
            // A DATETIME column holds timestamps with and without a zone
            // (as its text says): its values decide.
            _ => None,
        },
        DatabaseType::Postgresql => match name {
            "BOOL" => Some(Kind::Bool),
            "INT2" | "INT4" | "INT8" | "OID" => Some(Kind::Int),
            "FLOAT4" | "FLOAT8" => Some(Kind::Float),
            "NUMERIC" => Some(Kind::Decimal),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "XML" | "UNKNOWN"
            | "UUID" | "INTERVAL" | "\"CHAR\"" => Some(Kind::Text),
            "JSON" | "JSONB" => Some(Kind::Json),
            "BYTEA" => Some(Kind::Bytes),
            "DATE" => Some(Kind::Date),
            "TIME" => Some(Kind::Time),
            "TIMESTAMP" => Some(Kind::DateTime),
            "TIMESTAMPTZ" => Some(Kind::TimestampTz),
            _ => None,
        },
        DatabaseType::Mysql => match name {
            "BOOLEAN" => Some(Kind::Bool),
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR"
            | "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => {
                Some(Kind::Int)
            }
            "BIGINT UNSIGNED" | "BIT" => Some(Kind::UInt),
            "FLOAT" | "DOUBLE" => Some(Kind::Float),
            "DECIMAL" => Some(Kind::Decimal),
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => Some(Kind::Text),
            "JSON" => Some(Kind::Json),
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            | "GEOMETRY" => Some(Kind::Bytes),
            "DATE" => Some(Kind::Date),
            "TIME" => Some(Kind::Time),
            "DATETIME" => Some(Kind::DateTime),
            "TIMESTAMP" => Some(Kind::TimestampTz),
            _ => None,
        },
        DatabaseType::Duckdb => match base {
            "BOOLEAN" => Some(Kind::Bool),
            "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "UTINYINT" | "USMALLINT"
            | "UINTEGER" => Some(Kind::Int),
            "FLOAT" | "DOUBLE" => Some(Kind::Float),
            "DECIMAL" | "UBIGINT" | "HUGEINT" | "UHUGEINT" => Some(Kind::Decimal),
            "VARCHAR" | "UUID" | "INTERVAL" => Some(Kind::Text),
            "JSON" => Some(Kind::Json),
            "BLOB" => Some(Kind::Bytes),
            "DATE" => Some(Kind::Date),
            "TIME" => Some(Kind::Time),
            "TIMESTAMP" => Some(Kind::DateTime),
            "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => Some(Kind::TimestampTz),
            _ => None,
        },
        // D1 declares nothing: every column's kind comes from its values.
        DatabaseType::CloudflareD1 => None,
    }
}

/// The Arrow kind of a value; `None` for NULL.
pub fn value_arrow_type(value: &Value) -> Option<Kind> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Text(_) => Kind::Text,
        Value::Decimal(_) => Kind::Decimal,
        Value::Json(_) => Kind::Json,
        Value::Bytes(_) => Kind::Bytes,
        Value::Date(_) => Kind::Date,
        Value::Time(_) => Kind::Time,
        Value::DateTime(_) => Kind::DateTime,
        Value::TimestampTz(_) => Kind::TimestampTz,
    })
}

fn cell_kind(cell: &Cell<'_>) -> Option<Kind> {
    match cell {
        Cell::Null => None,
        Cell::Bool(_) => Some(Kind::Bool),
        Cell::Int(_) => Some(Kind::Int),
        Cell::Float(_) => Some(Kind::Float),
        Cell::Text(_) => Some(Kind::Text),
        Cell::Value(v) => value_arrow_type(v),
    }
}

/// The name of a value's kind in an error (never the value).
fn cell_kind_name(cell: &Cell<'_>) -> &'static str {
    match cell {
        Cell::Null => "NULL",
        Cell::Bool(_) => "boolean",
        Cell::Int(_) => "integer",
        Cell::Float(_) => "double",
        Cell::Text(_) => "text",
        Cell::Value(v) => value_kind_name(v),
    }
}

/// The name of a value's kind in an error (never the value).
fn value_kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "double",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Decimal(_) => "decimal",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::DateTime(_) => "timestamp",
        Value::TimestampTz(_) => "timestamp with time zone",
        Value::Json(_) => "JSON",
    }
}

/// The schema of a result whose first batch is `first` (`None`: no row).
pub fn schema_for(engine: DatabaseType, columns: &[Column], first: Option<&RowBatch>) -> Schema {
    let (kinds, _) = kinds_for(engine, columns, first);
    schema_of(columns, &kinds)
}

fn kinds_for(
    engine: DatabaseType,
    columns: &[Column],
    first: Option<&RowBatch>,
) -> (Vec<Kind>, Vec<Source>) {
    let mut kinds: Vec<Option<(Kind, Source)>> = columns
        .iter()
        .map(|c| declared_arrow_type(engine, &c.declared_type).map(|k| (k, Source::Declared)))
        .collect();
    if let Some(first) = first
        && kinds.iter().any(Option::is_none)
    {
        // A batch that does not decode fails later, when it is converted.
        let _ = first.visit_rows::<Error>(
            |i, cell| {
                if let Some(slot @ None) = kinds.get_mut(i) {
                    *slot = cell_kind(&cell).map(|k| (k, Source::Value));
                }
                Ok(())
            },
            |_| Ok(()),
        );
    }
    kinds
        .into_iter()
        .map(|k| k.unwrap_or((Kind::Text, Source::Default)))
        .unzip()
}

fn schema_of(columns: &[Column], kinds: &[Kind]) -> Schema {
    let fields: Vec<Field> = columns
        .iter()
        .zip(kinds)
        .map(|(c, kind)| {
            let mut metadata = std::collections::HashMap::new();
            if !c.declared_type.is_empty() {
                metadata.insert(DECLARED_TYPE_KEY.to_owned(), c.declared_type.clone());
            }
            match kind {
                Kind::Json => {
                    metadata.insert(EXTENSION_NAME_KEY.to_owned(), JSON_EXTENSION.to_owned());
                }
                Kind::Decimal => {
                    metadata.insert(VALUE_KIND_KEY.to_owned(), DECIMAL_KIND.to_owned());
                }
                _ => {}
            }
            Field::new(c.name.clone(), kind.data_type(), true).with_metadata(metadata)
        })
        .collect();
    Schema::new(fields)
}

/// One column's values while a record batch is built.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float(Float64Builder),
    /// `Utf8` of one kind of value: text, decimal digits or JSON (the
    /// field's metadata says which, so a kind never goes into another's).
    Text(StringBuilder, TextKind),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64NanosecondBuilder),
    DateTime(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
}

/// The kind of value a `Utf8` builder takes.
#[derive(Clone, Copy)]
enum TextKind {
    Text,
    Decimal,
    Json,
}

/// Why a value does not go into its column.
enum Misfit {
    /// Another kind than the column's.
    Kind,
    /// The right kind, but the Arrow type cannot hold it exactly.
    Range(&'static str),
}

impl Builder {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Int => Builder::Int(Int64Builder::with_capacity(rows)),
            Kind::UInt => Builder::UInt(UInt64Builder::with_capacity(rows)),
            Kind::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            Kind::Text => Builder::text(rows, TextKind::Text),
            Kind::Decimal => Builder::text(rows, TextKind::Decimal),
            Kind::Json => Builder::text(rows, TextKind::Json),
            Kind::Bytes => Builder::Bytes(BinaryBuilder::with_capacity(rows, rows * 8)),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(rows)),
            Kind::Time => Builder::Time(Time64NanosecondBuilder::with_capacity(rows)),
            Kind::DateTime => Builder::DateTime(TimestampMicrosecondBuilder::with_capacity(rows)),
            Kind::TimestampTz => Builder::TimestampTz(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC),
            ),
        }
    }

    fn text(rows: usize, kind: TextKind) -> Self {
        Builder::Text(StringBuilder::with_capacity(rows, rows * 8), kind)
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::UInt(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Text(b, _) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::DateTime(b) | Builder::TimestampTz(b) => b.append_null(),
        }
    }

    fn append(&mut self, cell: Cell<'_>) -> Result<(), Misfit> {
        match (self, cell) {
            (b, Cell::Null) => b.append_null(),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
            (b @ Builder::UInt(_), Cell::Int(v)) => return b.append_ref(&Value::Int(v)),
            (Builder::Float(b), Cell::Float(v)) => b.append_value(v),
            (Builder::Text(b, TextKind::Text), Cell::Text(v)) => b.append_value(v),
            (b, Cell::Value(v)) => return b.append_ref(&v),
            _ => return Err(Misfit::Kind),
        }
        Ok(())
    }

    /// Appends a decoded value.
    fn append_ref(&mut self, value: &Value) -> Result<(), Misfit> {
        match (self, value) {
            (b, Value::Null) => b.append_null(),
            (Builder::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (Builder::Int(b), Value::Int(v)) => b.append_value(*v),
            (Builder::UInt(b), Value::Int(v)) => {
                b.append_value(u64::try_from(*v).map_err(|_| Misfit::Range("a negative integer"))?)
            }
            // MySQL's BIGINT UNSIGNED past i64::MAX comes as its digits.
            (Builder::UInt(b), Value::Decimal(d)) => b.append_value(
                d.parse::<u64>()
                    .map_err(|_| Misfit::Range("a decimal that is no 64-bit unsigned integer"))?,
            ),
            (Builder::Float(b), Value::Float(v)) => b.append_value(*v),
            (Builder::Text(b, TextKind::Text), Value::Text(v))
            | (Builder::Text(b, TextKind::Decimal), Value::Decimal(v))
            | (Builder::Text(b, TextKind::Json), Value::Json(v)) => b.append_value(v),
            (Builder::Bytes(b), Value::Bytes(v)) => b.append_value(v),
            (Builder::Date(b), Value::Date(d)) => b.append_value(date32(*d)),
            (Builder::Time(b), Value::Time(t)) => b.append_value(time64(*t)),
            (Builder::DateTime(b), Value::DateTime(t)) => b.append_value(micros(t)?),
            (Builder::TimestampTz(b), Value::TimestampTz(t)) => {
                b.append_value(micros(&t.naive_utc())?)
            }
            _ => return Err(Misfit::Kind),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::UInt(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Text(b, _) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::DateTime(b) | Builder::TimestampTz(b) => Arc::new(b.finish()),
        }
    }
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn date32(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

fn time64(t: NaiveTime) -> i64 {
    // A leap second (nanosecond past 1e9) keeps its extra nanoseconds.
    i64::from(t.num_seconds_from_midnight()) * 1_000_000_000 + i64::from(t.nanosecond())
}

fn micros(t: &NaiveDateTime) -> Result<i64, Misfit> {
    if !t.nanosecond().is_multiple_of(1_000) {
        return Err(Misfit::Range("a timestamp finer than a microsecond"));
    }
    Ok(t.and_utc().timestamp_micros())
}

/// Builds the record batches of one result and writes them as one Arrow
/// IPC stream, one piece per call: the schema (with the first batch, or
/// at the end of an empty result), each record batch, the end marker.
pub struct ArrowEncoder {
    engine: DatabaseType,
    columns: Arc<[Column]>,
    /// Set once the schema is fixed.
    state: Option<Fixed>,
}

/// What an [`ArrowEncoder`] keeps once its schema is fixed.
struct Fixed {
    kinds: Vec<Kind>,
    /// Where each kind came from (for errors).
    sources: Vec<Source>,
    schema: SchemaRef,
    writer: StreamWriter<Vec<u8>>,
}

/// One piece of the IPC stream, with the rows its record batch holds.
pub struct IpcPiece {
    pub ipc: Vec<u8>,
    pub rows: u64,
}

impl ArrowEncoder {
    /// An encoder for a result of `engine` with `columns`.
    pub fn new(engine: DatabaseType, columns: Arc<[Column]>) -> Self {
        Self {
            engine,
            columns,
            state: None,
        }
    }

    /// Fixes the schema (from `first`, when there is a batch) and returns
    /// its piece; nothing once fixed.
    fn start(&mut self, first: Option<&RowBatch>) -> Result<Option<IpcPiece>, Error> {
        if self.state.is_some() {
            return Ok(None);
        }
        let (kinds, sources) = kinds_for(self.engine, &self.columns, first);
        let schema = Arc::new(schema_of(&self.columns, &kinds));
        let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(arrow_error)?;
        let ipc = std::mem::take(writer.get_mut());
        self.state = Some(Fixed {
            kinds,
            sources,
            schema,
            writer,
        });
        Ok(Some(IpcPiece { ipc, rows: 0 }))
    }

    /// The schema, once fixed.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.state.as_ref().map(|s| s.schema.clone())
    }

    /// The pieces for `batch`: the schema first when this is the first
    /// batch, then its record batch. A value that does not fit its
    /// column's type is FAILED_PRECONDITION.
    pub fn batch(&mut self, batch: &RowBatch) -> Result<Vec<IpcPiece>, Error> {
        let mut pieces = Vec::with_capacity(2);
        if let Some(schema) = self.start(Some(batch))? {
            pieces.push(schema);
        }
        let Some(Fixed {
            kinds,
            sources,
            schema,
            writer,
        }) = self.state.as_mut()
        else {
            return Err(Error::internal("the Arrow schema is not fixed"));
        };
        let rows = batch.len();
        let record = build_batch(&self.columns, kinds, sources, schema, batch)?;
        writer.write(&record).map_err(arrow_error)?;
        pieces.push(IpcPiece {
            ipc: std::mem::take(writer.get_mut()),
            rows: rows as u64,
        });
        Ok(pieces)
    }

    /// The pieces for a record batch built elsewhere ([`ArrowRows`], from
    /// the engine's cursor): the schema first when this is the first
    /// batch, then the batch. Its schema must be the result's.
    pub fn record(&mut self, batch: &RecordBatch) -> Result<Vec<IpcPiece>, Error> {
        let mut pieces = Vec::with_capacity(2);
        if self.state.is_none() {
            let (kinds, sources) = kinds_for(self.engine, &self.columns, None);
            let schema = batch.schema();
            let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(arrow_error)?;
            pieces.push(IpcPiece {
                ipc: std::mem::take(writer.get_mut()),
                rows: 0,
            });
            self.state = Some(Fixed {
                kinds,
                sources,
                schema,
                writer,
            });
        }
        let Some(Fixed { schema, writer, .. }) = self.state.as_mut() else {
            return Err(Error::internal("the Arrow schema is not fixed"));
        };
        if batch.schema() != *schema {
            return Err(Error::internal(
                "an Arrow batch whose schema is not the result's",
            ));
        }
        writer.write(batch).map_err(arrow_error)?;
        pieces.push(IpcPiece {
            ipc: std::mem::take(writer.get_mut()),
            rows: batch.num_rows() as u64,
        });
        Ok(pieces)
    }

    /// The last pieces: the schema if no batch came, then the end marker.
    pub fn finish(&mut self) -> Result<Vec<IpcPiece>, Error> {
        let mut pieces = Vec::with_capacity(2);
        if let Some(schema) = self.start(None)? {
            pieces.push(schema);
        }
        let Some(Fixed { writer, .. }) = self.state.as_mut() else {
            return Err(Error::internal("the Arrow schema is not fixed"));
        };
        writer.finish().map_err(arrow_error)?;
        pieces.push(IpcPiece {
            ipc: std::mem::take(writer.get_mut()),
            rows: 0,
        });
        Ok(pieces)
    }
}

/// What a consumer that wants Arrow asks of an adapter
/// ([`DatabaseInterface::query_arrow`](crate::DatabaseInterface::query_arrow)):
/// record batches of at most `batch_rows` rows and about `batch_bytes`
/// bytes (the server's `--batch-rows` and `--batch-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrowWanted {
    pub batch_rows: usize,
    pub batch_bytes: usize,
}

/// Record batches built straight from an engine's values, as an adapter
/// reads its cursor: no row encoding in between. Only for a result whose
/// every column's Arrow type its declared type decides ([`ArrowRows::new`]
/// is `None` otherwise; such a result is converted from rows). The types
/// are those [`ArrowEncoder`] gives the same columns.
pub struct ArrowRows {
    columns: Arc<[Column]>,
    kinds: Vec<Kind>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    /// Whole rows appended since the last batch.
    rows: usize,
    /// Bytes of the values appended since the last batch (text and bytes
    /// by length, any other value as 8).
    bytes: usize,
    /// Rows a batch is expected to hold (the builders' first capacity).
    capacity: usize,
}

impl ArrowRows {
    /// A builder for a result of `engine` with `columns`, whose batches
    /// are expected to hold about `capacity` rows; `None` when a column's
    /// declared type does not decide its Arrow type.
    pub fn new(engine: DatabaseType, columns: Arc<[Column]>, capacity: usize) -> Option<Self> {
        let kinds = columns
            .iter()
            .map(|c| declared_arrow_type(engine, &c.declared_type))
            .collect::<Option<Vec<Kind>>>()?;
        let schema = Arc::new(schema_of(&columns, &kinds));
        let builders = kinds.iter().map(|k| Builder::new(*k, capacity)).collect();
        Some(Self {
            columns,
            kinds,
            schema,
            builders,
            rows: 0,
            bytes: 0,
            capacity,
        })
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whole rows appended since the last batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// About how many bytes the rows since the last batch hold.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// A writer for the next row: its values in column order, then
    /// [`ArrowRowWriter::end`].
    pub fn row(&mut self) -> ArrowRowWriter<'_> {
        ArrowRowWriter {
            rows: self,
            column: 0,
            misfit: None,
        }
    }

    /// The whole rows appended since the last batch, as a record batch.
    /// A row left unfinished (an error while it was read) is not in it.
    pub fn take(&mut self) -> Result<RecordBatch, Error> {
        let rows = self.rows;
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| {
                let array = b.finish();
                if array.len() > rows {
                    array.slice(0, rows)
                } else {
                    array
                }
            })
            .collect();
        let capacity = self.capacity;
        for (builder, kind) in self.builders.iter_mut().zip(&self.kinds) {
            *builder = Builder::new(*kind, capacity);
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(arrow_error)
    }
}

/// Appends one row's values to an [`ArrowRows`]; the row counts once
/// [`ArrowRowWriter::end`] accepts it.
pub struct ArrowRowWriter<'a> {
    rows: &'a mut ArrowRows,
    column: usize,
    /// The first value that did not fit: its column and kind's name.
    misfit: Option<(usize, &'static str, Misfit)>,
}

impl ArrowRowWriter<'_> {
    fn put(
        &mut self,
        bytes: usize,
        kind_name: impl FnOnce() -> &'static str,
        append: impl FnOnce(&mut Builder) -> Result<(), Misfit>,
    ) {
        let column = self.column;
        self.column += 1;
        if self.misfit.is_some() {
            return;
        }
        let result = match self.rows.builders.get_mut(column) {
            Some(builder) => append(builder),
            None => Err(Misfit::Range("a value past the result's columns")),
        };
        match result {
            Ok(()) => self.rows.bytes += bytes,
            Err(misfit) => self.misfit = Some((column, kind_name(), misfit)),
        }
    }

    /// Ends the row: an error when a value did not fit its column (as
    /// [`ArrowEncoder::batch`] says it) or the row's width is not the
    /// result's.
    pub fn end(self) -> Result<(), Error> {
        let rows = self.rows;
        if let Some((i, kind_name, misfit)) = self.misfit {
            return Err(match (rows.columns.get(i), rows.kinds.get(i)) {
                (Some(column), Some(kind)) => {
                    misfit_error(column, i, *kind, Source::Declared, kind_name, misfit)
                }
                _ => Error::internal(format!(
                    "a row has more than the result's {} values",
                    rows.builders.len()
                )),
            });
        }
        if self.column != rows.builders.len() {
            return Err(Error::internal(format!(
                "a row has {} values, the result {} columns",
                self.column,
                rows.builders.len()
            )));
        }
        rows.rows += 1;
        Ok(())
    }
}

impl crate::batch::ValueWriter for ArrowRowWriter<'_> {
    fn value(&mut self, value: &Value) {
        let bytes = match value {
            Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        };
        self.put(bytes, || value_kind_name(value), |b| b.append_ref(value));
    }

    fn int(&mut self, i: i64) {
        self.put(8, || "integer", |b| b.append(Cell::Int(i)));
    }

    fn double(&mut self, f: f64) {
        self.put(8, || "double", |b| b.append(Cell::Float(f)));
    }

    fn text(&mut self, s: &str) {
        self.put(s.len(), || "text", |b| b.append(Cell::Text(s)));
    }

    fn null(&mut self) {
        self.put(
            0,
            || "NULL",
            |b| {
                b.append_null();
                Ok(())
            },
        );
    }
}

/// The record batch of `batch`'s rows.
fn build_batch(
    columns: &[Column],
    kinds: &[Kind],
    sources: &[Source],
    schema: &SchemaRef,
    batch: &RowBatch,
) -> Result<RecordBatch, Error> {
    let rows = batch.len();
    let mut builders: Vec<Builder> = kinds.iter().map(|k| Builder::new(*k, rows)).collect();
    let width = builders.len();
    batch.visit_rows(
        |i, cell| {
            let Some(builder) = builders.get_mut(i) else {
                return Err(Error::internal(format!(
                    "a row has more than the result's {width} values"
                )));
            };
            let kind_name = cell_kind_name(&cell);
            builder.append(cell).map_err(|misfit| {
                misfit_error(&columns[i], i, kinds[i], sources[i], kind_name, misfit)
            })
        },
        |values| {
            if values == width {
                Ok(())
            } else {
                Err(Error::internal(format!(
                    "a row has {values} values, the result {width} columns"
                )))
            }
        },
    )?;
    let arrays = builders.iter_mut().map(Builder::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays).map_err(arrow_error)
}

fn misfit_error(
    column: &Column,
    index: usize,
    kind: Kind,
    source: Source,
    value_kind: &str,
    misfit: Misfit,
) -> Error {
    let from = match source {
        Source::Declared => format!("from its declared type {}", column.declared_type),
        Source::Value => "from the first batch's values".to_owned(),
        Source::Default => "no declared type and no value in the first batch".to_owned(),
    };
    let why = match misfit {
        Misfit::Kind => format!("cannot hold a {value_kind} value"),
        Misfit::Range(what) => format!("cannot hold {what} exactly"),
    };
    Error::new(
        ErrorKind::FailedPrecondition,
        format!(
            "Arrow result: column `{}` (#{}) has Arrow type {} ({from}) and {why}; \
             cast the column in the query so that every value has one type, or \
             fetch it as rows",
            column.name,
            index + 1,
            kind.data_type(),
        ),
    )
}

fn arrow_error(e: arrow_schema::ArrowError) -> Error {
    Error::internal(format!("Arrow: {e}"))
}

/// Reads the IPC stream of an Arrow result piece by piece (the `ipc` bytes
/// of each `ArrowData` frame, in order).
pub struct ArrowDecoder {
    decoder: arrow_ipc::reader::StreamDecoder,
}

impl Default for ArrowDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ArrowDecoder {
    pub fn new() -> Self {
        Self {
            decoder: arrow_ipc::reader::StreamDecoder::new(),
        }
    }

    /// The record batches `ipc` completes (usually none or one).
    pub fn push(&mut self, ipc: Vec<u8>) -> Result<Vec<RecordBatch>, Error> {
        let mut buffer = arrow_buffer::Buffer::from_vec(ipc);
        let mut batches = Vec::new();
        // `decode` returns at each record batch, and `None` once it has
        // read all of `buffer`.
        while let Some(batch) = self
            .decoder
            .decode(&mut buffer)
            .map_err(|e| bad_stream(&e.to_string()))?
        {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// The schema, once its piece came.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.decoder.schema()
    }

    /// Checks that the stream ended whole: its end marker read, nothing
    /// after it. Consumes what the decoder can still read.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.decoder
            .finish()
            .map_err(|e| bad_stream(&e.to_string()))?;
        // `finish` also accepts a stream that stops between two messages;
        // only a decoder past the end marker refuses more bytes.
        let mut probe = arrow_buffer::Buffer::from_vec(vec![0xffu8; 4]);
        match self.decoder.decode(&mut probe) {
            Err(_) => Ok(()),
            Ok(_) => Err(bad_stream("it has no end marker")),
        }
    }
}

fn bad_stream(why: &str) -> Error {
    Error::internal(format!("the server's Arrow stream does not read: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Array, BinaryArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
        Time64NanosecondArray, TimestampMicrosecondArray, UInt64Array,
    };
    use chrono::{TimeZone, Utc};

    fn columns(specs: &[(&str, &str)]) -> Arc<[Column]> {
        specs.iter().map(|(n, t)| Column::new(*n, *t)).collect()
    }

    /// Encodes `rows` (in batches of `per_batch`) and reads them back.
    fn round_trip(
        engine: DatabaseType,
        columns: Arc<[Column]>,
        rows: Vec<Vec<Value>>,
        per_batch: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Error> {
        let mut encoder = ArrowEncoder::new(engine, columns);
        let mut decoder = ArrowDecoder::new();
        let mut batches = Vec::new();
        for chunk in rows.chunks(per_batch.max(1)) {
            for piece in encoder.batch(&RowBatch::from(chunk.to_vec()))? {
                let got = decoder.push(piece.ipc)?;
                assert_eq!(
                    got.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
                    piece.rows
                );
                batches.extend(got);
            }
        }
        for piece in encoder.finish()? {
            assert!(decoder.push(piece.ipc)?.is_empty());
        }
        decoder.finish()?;
        Ok((decoder.schema().expect("a schema"), batches))
    }

    /// A row of values written the way an adapter writes them.
    fn write_row(rows: &mut ArrowRows, values: &[Value]) -> Result<(), Error> {
        use crate::batch::ValueWriter;
        let mut writer = rows.row();
        for value in values {
            match value {
                Value::Null => writer.null(),
                Value::Int(i) => writer.int(*i),
                Value::Float(f) => writer.double(*f),
                Value::Text(s) => writer.text(s),
                other => writer.value(other),
            }
        }
        writer.end()
    }

    #[test]
    fn rows_built_from_a_cursor_equal_the_converted_rows() {
        let cols = columns(&[
            ("n", "INT8"),
            ("s", "TEXT"),
            ("x", "FLOAT8"),
            ("t", "TIMESTAMP"),
            ("d", "NUMERIC"),
        ]);
        let t = NaiveDate::from_ymd_opt(2024, 2, 29)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 123_456))
            .expect("a timestamp");
        let rows = vec![
            vec![
                Value::Int(-7),
                Value::Text("é".into()),
                Value::Float(0.5),
                Value::DateTime(t),
                Value::Decimal("1.10".into()),
            ],
            vec![Value::Null; 5],
        ];
        let mut direct =
            ArrowRows::new(DatabaseType::Postgresql, cols.clone(), 2).expect("declared");
        for row in &rows {
            write_row(&mut direct, row).expect("a row that fits");
        }
        assert_eq!(direct.len(), 2);
        let built = direct.take().expect("a batch");
        assert!(direct.is_empty());
        let (schema, converted) =
            round_trip(DatabaseType::Postgresql, cols, rows, 2).expect("converted");
        assert_eq!(built.schema(), schema);
        assert_eq!(built, converted[0]);
    }

    #[test]
    fn text_decimal_and_json_columns_are_marked_and_keep_to_their_kind() {
        let cols = columns(&[("s", "TEXT"), ("d", "NUMERIC"), ("j", "JSONB")]);
        let mut rows = ArrowRows::new(DatabaseType::Postgresql, cols.clone(), 4).expect("declared");
        let schema = rows.schema();
        let kind = |i: usize| {
            let f = schema.field(i);
            (
                f.data_type().clone(),
                f.metadata().get(VALUE_KIND_KEY).cloned(),
                f.metadata().get(EXTENSION_NAME_KEY).cloned(),
            )
        };
        assert_eq!(kind(0), (DataType::Utf8, None, None));
        assert_eq!(kind(1), (DataType::Utf8, Some("decimal".into()), None));
        assert_eq!(kind(2), (DataType::Utf8, None, Some("arrow.json".into())));
        write_row(
            &mut rows,
            &[
                Value::Text("a".into()),
                Value::Decimal("1.50".into()),
                Value::Json("[1]".into()),
            ],
        )
        .expect("each kind in its column");
        // Each kind in another's column is refused, naming that column.
        for (row, column) in [
            (
                [Value::Decimal("2".into()), Value::Null, Value::Null],
                "`s` (#1)",
            ),
            (
                [Value::Null, Value::Text("2".into()), Value::Null],
                "`d` (#2)",
            ),
            (
                [Value::Null, Value::Null, Value::Text("[]".into())],
                "`j` (#3)",
            ),
            (
                [Value::Json("{}".into()), Value::Null, Value::Null],
                "`s` (#1)",
            ),
        ] {
            let err = write_row(&mut rows, &row).expect_err("another kind");
            assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
            assert!(err.message().contains(column), "{err}");
        }
        assert_eq!(rows.take().expect("a batch").num_rows(), 1);
        // From the values: a decimal first makes a decimal column.
        let expr = columns(&[("e", "")]);
        let (schema, _) = round_trip(
            DatabaseType::Sqlite,
            expr,
            vec![vec![Value::Decimal("0.1".into())]],
            2,
        )
        .expect("converted");
        assert_eq!(
            schema
                .field(0)
                .metadata()
                .get(VALUE_KIND_KEY)
                .map(String::as_str),
            Some("decimal")
        );
    }

    #[test]
    fn an_unfinished_row_is_left_out_and_a_misfit_names_the_column_not_the_value() {
        let cols = columns(&[("n", "INT8"), ("s", "TEXT")]);
        let mut rows = ArrowRows::new(DatabaseType::Postgresql, cols, 4).expect("declared");
        write_row(&mut rows, &[Value::Int(1), Value::Text("a".into())]).expect("fits");
        // A text value in the integer column: the row is refused...
        let err = write_row(&mut rows, &[Value::Text("secret-7".into()), Value::Null])
            .expect_err("text into INT8");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.message().contains("`n` (#1)"), "{err}");
        assert!(!err.message().contains("secret-7"), "{err}");
        // ...as is a row cut short (an error while it was read), and one
        // too wide.
        crate::batch::ValueWriter::int(&mut rows.row(), 2);
        let err = write_row(
            &mut rows,
            &[Value::Int(3), Value::Text("c".into()), Value::Int(4)],
        )
        .expect_err("three values, two columns");
        assert_eq!(err.kind(), ErrorKind::Internal);
        // The batch holds the one whole row.
        let first_column = |rows: &mut ArrowRows| {
            let batch = rows.take().expect("a batch");
            let n = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64")
                .values()
                .to_vec();
            (batch.num_rows(), n)
        };
        assert_eq!(first_column(&mut rows), (1, vec![1]));
        // And the next batch starts clean.
        write_row(&mut rows, &[Value::Int(5), Value::Null]).expect("fits");
        assert_eq!(first_column(&mut rows), (1, vec![5]));
    }

    #[test]
    fn a_column_whose_declared_type_does_not_decide_is_left_to_conversion() {
        let cols = columns(&[("n", "INTEGER"), ("e", "")]);
        assert!(ArrowRows::new(DatabaseType::Sqlite, cols, 4).is_none());
    }

    #[test]
    fn declared_types_map_per_engine() {
        use DatabaseType::*;
        let cases = [
            (Postgresql, "INT2", Some(DataType::Int64)),
            (Postgresql, "INT8", Some(DataType::Int64)),
            (Postgresql, "FLOAT4", Some(DataType::Float64)),
            (Postgresql, "NUMERIC", Some(DataType::Utf8)),
            (Postgresql, "BYTEA", Some(DataType::Binary)),
            (Postgresql, "DATE", Some(DataType::Date32)),
            (
                Postgresql,
                "TIME",
                Some(DataType::Time64(TimeUnit::Nanosecond)),
            ),
            (
                Postgresql,
                "TIMESTAMP",
                Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
            ),
            (
                Postgresql,
                "TIMESTAMPTZ",
                Some(DataType::Timestamp(
                    TimeUnit::Microsecond,
                    Some("UTC".into()),
                )),
            ),
            (Postgresql, "JSONB", Some(DataType::Utf8)),
            (Postgresql, "INT4[]", None),
            (Mysql, "BIGINT UNSIGNED", Some(DataType::UInt64)),
            (Mysql, "INT UNSIGNED", Some(DataType::Int64)),
            (Mysql, "DECIMAL", Some(DataType::Utf8)),
            (
                Mysql,
                "TIMESTAMP",
                Some(DataType::Timestamp(
                    TimeUnit::Microsecond,
                    Some("UTC".into()),
                )),
            ),
            (Sqlite, "INTEGER", Some(DataType::Int64)),
            (Sqlite, "NUMERIC", None),
            (Sqlite, "", None),
            (Duckdb, "DECIMAL(18,3)", Some(DataType::Utf8)),
            (Duckdb, "HUGEINT", Some(DataType::Utf8)),
            (CloudflareD1, "INTEGER", None),
        ];
        for (engine, declared, want) in cases {
            assert_eq!(
                declared_arrow_type(engine, declared).map(Kind::data_type),
                want,
                "{engine:?} {declared}"
            );
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let time = NaiveTime::from_hms_nano_opt(23, 59, 58, 123_456_789).unwrap();
        let datetime = date.and_hms_micro_opt(1, 2, 3, 456_789).unwrap();
        let instant = Utc.from_utc_datetime(&datetime);
        let before_1970 = NaiveDate::from_ymd_opt(1969, 12, 31).unwrap();
        let cols = columns(&[
            ("b", ""),
            ("i", ""),
            ("f", ""),
            ("t", ""),
            ("by", ""),
            ("d", ""),
            ("tm", ""),
            ("dt", ""),
            ("tz", ""),
            ("j", ""),
            ("dec", ""),
        ]);
        let row = vec![
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(-0.5),
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255]),
            Value::Date(date),
            Value::Time(time),
            Value::DateTime(datetime),
            Value::TimestampTz(instant),
            Value::Json(r#"{"a":1}"#.into()),
            Value::Decimal("12345678901234567890.123".into()),
        ];
        let nulls = vec![Value::Null; row.len()];
        let second = vec![
            Value::Bool(false),
            Value::Int(i64::MAX),
            Value::Float(f64::INFINITY),
            Value::Text(String::new()),
            Value::Bytes(vec![]),
            Value::Date(before_1970),
            Value::Time(NaiveTime::MIN),
            Value::DateTime(before_1970.and_hms_opt(0, 0, 0).unwrap()),
            Value::TimestampTz(instant),
            Value::Json("[]".into()),
            Value::Decimal("-1".into()),
        ];
        let (schema, batches) =
            round_trip(DatabaseType::Sqlite, cols, vec![row, nulls, second], 2).expect("encodes");
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            vec![
                DataType::Boolean,
                DataType::Int64,
                DataType::Float64,
                DataType::Utf8,
                DataType::Binary,
                DataType::Date32,
                DataType::Time64(TimeUnit::Nanosecond),
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Utf8,
                DataType::Utf8,
            ]
        );
        assert_eq!(
            schema
                .field(9)
                .metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.json")
        );
        assert_eq!(batches.len(), 2);
        let b = &batches[0];
        let col = |i: usize| b.column(i).clone();
        assert!(
            col(0)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(0)
        );
        assert_eq!(
            col(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            i64::MIN
        );
        assert_eq!(
            col(2)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(0),
            -0.5
        );
        assert_eq!(
            col(3)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "héllo"
        );
        assert_eq!(
            col(4)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap()
                .value(0),
            &[0, 255]
        );
        let d = col(5)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap()
            .value_as_date(0);
        assert_eq!(d, Some(date));
        let t = col(6)
            .as_any()
            .downcast_ref::<Time64NanosecondArray>()
            .unwrap()
            .value_as_time(0);
        assert_eq!(t, Some(time));
        let dt = col(7);
        let dt = dt
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(dt.value_as_datetime(0), Some(datetime));
        let tz = col(8);
        let tz = tz
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(tz.value(0), instant.timestamp_micros());
        assert_eq!(
            col(10)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "12345678901234567890.123"
        );
        for i in 0..11 {
            assert!(b.column(i).is_null(1), "column {i} row 2 is NULL");
        }
        let d = batches[1]
            .column(5)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert_eq!(d.value(0), -1);
    }

    #[test]
    fn an_empty_result_has_its_schema() {
        let cols = columns(&[("n", "INT8"), ("e", "")]);
        let (schema, batches) =
            round_trip(DatabaseType::Postgresql, cols, vec![], 10).expect("encodes");
        assert!(batches.is_empty());
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(0).name(), "n");
        // Nothing says what `e` is: text.
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    }

    #[test]
    fn the_first_non_null_value_of_the_first_batch_types_an_undeclared_column() {
        let cols = columns(&[("x", "")]);
        let rows = vec![vec![Value::Null], vec![Value::Float(1.5)]];
        let (schema, _) = round_trip(DatabaseType::Sqlite, cols, rows, 10).expect("encodes");
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
    }

    #[test]
    fn a_value_of_another_kind_is_failed_precondition_naming_the_column_not_the_value() {
        let cols = columns(&[("id", "INTEGER"), ("n", "INTEGER")]);
        let rows = vec![
            vec![Value::Int(1), Value::Int(1)],
            vec![Value::Int(2), Value::Text("secret-value".into())],
        ];
        let Err(e) = round_trip(DatabaseType::Sqlite, cols, rows, 10) else {
            panic!("text in an INTEGER column encodes");
        };
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert!(e.message().contains("`n`"), "{}", e.message());
        assert!(e.message().contains("Int64"), "{}", e.message());
        assert!(e.message().contains("text"), "{}", e.message());
        assert!(!e.message().contains("secret"), "{}", e.message());
    }

    #[test]
    fn integers_never_widen_to_doubles() {
        let cols = columns(&[("x", "")]);
        let rows = vec![vec![Value::Float(0.5)], vec![Value::Int(1 << 60)]];
        let Err(e) = round_trip(DatabaseType::Sqlite, cols, rows, 1) else {
            panic!("an integer went into a Float64 column");
        };
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn mysql_unsigned_bigint_keeps_every_value() {
        let cols = columns(&[("u", "BIGINT UNSIGNED")]);
        let rows = vec![
            vec![Value::Int(7)],
            vec![Value::Decimal(u64::MAX.to_string())],
        ];
        let (_, batches) = round_trip(DatabaseType::Mysql, cols, rows, 10).expect("encodes");
        let u = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!((u.value(0), u.value(1)), (7, u64::MAX));
    }

    #[test]
    fn a_stream_without_its_end_marker_is_an_error() {
        let mut encoder = ArrowEncoder::new(DatabaseType::Sqlite, columns(&[("n", "INTEGER")]));
        let mut decoder = ArrowDecoder::new();
        for piece in encoder
            .batch(&RowBatch::from(vec![vec![Value::Int(1)]]))
            .expect("encodes")
        {
            decoder.push(piece.ipc).expect("decodes");
        }
        assert!(decoder.finish().is_err());
    }
}
