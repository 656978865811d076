//! Arrow results from DuckDB's own arrays (docs/arrow.md, "Where the arrays
//! are built").
//!
//! DuckDB hands every data chunk over as Arrow arrays already. Where a
//! column's array is the Arrow type iadb gives that column (or widens to it
//! exactly: a narrower integer to `Int64`, `FLOAT` to `Float64`, `TIME`'s
//! microseconds to nanoseconds) and holds no value the row path would treat
//! otherwise (DuckDB's `infinity` dates and timestamps, `24:00:00`, a date
//! past chrono's years), the chunk goes out as it is, sliced to the batch
//! size asked for. Any other chunk is decoded row by row into an
//! [`ArrowRows`], which gives the same batch the conversion from rows gives,
//! and the same error for a value that does not fit.

use super::decoding::{ResultLayout, date_at};
use chrono::DateTime;
use duckdb::arrow::{
    array::{Array, ArrayRef, AsArray, StructArray},
    datatypes::{
        ArrowPrimitiveType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
        Int64Type, Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
        UInt8Type, UInt16Type, UInt32Type,
    },
};
use iadb::{
    Column, DatabaseType, QueryEvent, Result, ValueWriter,
    arrow::{ArrowRows, ArrowWanted, DataType, RecordBatch, TimeUnit},
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Microseconds in a day: a TIME at or past it (`24:00:00`) is not a
/// time of day the row path carries as a time.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One result's record batches, built as its chunks come.
pub(super) struct ArrowChunks {
    /// The batches of chunks decoded row by row; its schema is every
    /// batch's.
    rows: ArrowRows,
    wanted: ArrowWanted,
    /// Per column: whether DuckDB's `Utf8` array is the column's text
    /// (VARCHAR, JSON), not a type the row path spells otherwise (a UUID).
    plain_text: Vec<bool>,
}

impl ArrowChunks {
    /// `None` when a column's declared type does not decide its Arrow type
    /// (the result then goes as rows and the server converts them).
    pub(super) fn new(columns: &Arc<[Column]>, wanted: ArrowWanted) -> Option<Self> {
        let rows = ArrowRows::new(DatabaseType::Duckdb, columns.clone(), wanted.batch_rows)?;
        let plain_text = columns
            .iter()
            .map(|c| {
                let base = c.declared_type.split('(').next().unwrap_or_default().trim();
                base.eq_ignore_ascii_case("VARCHAR") || base.eq_ignore_ascii_case("JSON")
            })
            .collect();
        Some(Self {
            rows,
            wanted,
            plain_text,
        })
    }

    /// Sends `chunk`'s rows (the first is the result's `number + 1`th) as
    /// record batches; `Ok(false)` when the consumer has gone. On an error
    /// the whole rows before it are sent first.
    pub(super) fn send_chunk(
        &mut self,
        layout: &ResultLayout,
        chunk: &StructArray,
        number: &mut u64,
        out: &mpsc::Sender<Result<QueryEvent>>,
    ) -> Result<bool> {
        if let Some(batch) = self.native(chunk) {
            *number += batch.num_rows() as u64;
            for piece in slices(&batch, self.wanted) {
                if out.blocking_send(Ok(QueryEvent::Arrow(piece))).is_err() {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        for row in 0..chunk.len() {
            *number += 1;
            let at = *number;
            let appended = layout.decode_row(chunk, row, at).and_then(|values| {
                let mut writer = self.rows.row();
                for value in &values {
                    writer.value(value);
                }
                writer
                    .end()
                    .map_err(|e| e.in_context(format_args!("row {at}")))
            });
            if let Err(e) = appended {
                return if self.flush(out)? { Err(e) } else { Ok(false) };
            }
            if (self.rows.len() >= self.wanted.batch_rows
                || self.rows.byte_len() >= self.wanted.batch_bytes)
                && !self.flush(out)?
            {
                return Ok(false);
            }
        }
        self.flush(out)
    }

    /// Sends the rows decoded since the last batch; `Ok(false)` when the
    /// consumer has gone.
    fn flush(&mut self, out: &mpsc::Sender<Result<QueryEvent>>) -> Result<bool> {
        if self.rows.is_empty() {
            return Ok(true);
        }
        let batch = self.rows.take()?;
        Ok(out.blocking_send(Ok(QueryEvent::Arrow(batch))).is_ok())
    }

    /// `chunk` as a record batch of the result's schema made of DuckDB's
    /// own arrays, when every column allows it.
    fn native(&self, chunk: &StructArray) -> Option<RecordBatch> {
        let schema = self.rows.schema();
        if chunk.num_columns() != schema.fields().len() {
            return None;
        }
        let arrays = schema
            .fields()
            .iter()
            .zip(chunk.columns())
            .zip(&self.plain_text)
            .map(|((field, array), plain_text)| {
                native_column(array, field.data_type(), *plain_text)
            })
            .collect::<Option<Vec<ArrayRef>>>()?;
        // The arrays are the schema's types by construction; should one not
        // be, the chunk goes the row way, which is right in any case.
        RecordBatch::try_new(schema, arrays).ok()
    }
}

/// DuckDB's array for a column of Arrow type `target`, as that type, when
/// it holds only values the row path would give as the same type.
fn native_column(array: &ArrayRef, target: &DataType, plain_text: bool) -> Option<ArrayRef> {
    use DataType as D;
    match (array.data_type(), target) {
        (D::Boolean, D::Boolean)
        | (D::Int64, D::Int64)
        | (D::Float64, D::Float64)
        | (D::Binary, D::Binary) => Some(array.clone()),
        (D::Utf8, D::Utf8) if plain_text => Some(array.clone()),
        (D::Int8, D::Int64) => Some(widen::<Int8Type, Int64Type>(array, i64::from)),
        (D::Int16, D::Int64) => Some(widen::<Int16Type, Int64Type>(array, i64::from)),
        (D::Int32, D::Int64) => Some(widen::<Int32Type, Int64Type>(array, i64::from)),
        (D::UInt8, D::Int64) => Some(widen::<UInt8Type, Int64Type>(array, i64::from)),
        (D::UInt16, D::Int64) => Some(widen::<UInt16Type, Int64Type>(array, i64::from)),
        (D::UInt32, D::Int64) => Some(widen::<UInt32Type, Int64Type>(array, i64::from)),
        (D::Float32, D::Float64) => Some(widen::<Float32Type, Float64Type>(array, f64::from)),
        (D::Date32, D::Date32) => array
            .as_primitive::<Date32Type>()
            .iter()
            .flatten()
            .all(|days| matches!(date_at(days), Ok(Ok(_))))
            .then(|| array.clone()),
        (D::Time64(TimeUnit::Microsecond), D::Time64(TimeUnit::Nanosecond)) => {
            let micros = array.as_primitive::<Time64MicrosecondType>();
            // A NULL slot's value is anything: wrapping, never a panic.
            micros
                .iter()
                .flatten()
                .all(|us| (0..MICROS_PER_DAY).contains(&us))
                .then(|| {
                    Arc::new(micros.unary::<_, Time64NanosecondType>(|us| us.wrapping_mul(1_000)))
                        as ArrayRef
                })
        }
        (
            D::Timestamp(TimeUnit::Microsecond, zone),
            D::Timestamp(TimeUnit::Microsecond, target_zone),
        ) if zone.is_some() == target_zone.is_some() => {
            let micros = array.as_primitive::<TimestampMicrosecondType>();
            let in_range = micros.iter().flatten().all(|raw| {
                raw != i64::MAX
                    && raw != -i64::MAX
                    && DateTime::from_timestamp_micros(raw).is_some()
            });
            // An instant is the same in any zone: the column's is UTC.
            in_range.then(|| match target_zone {
                Some(zone) => Arc::new(micros.clone().with_timezone(zone.clone())) as ArrayRef,
                None => array.clone(),
            })
        }
        _ => None,
    }
}

/// A primitive array as a wider one, value by value (NULLs stay).
fn widen<From: ArrowPrimitiveType, To: ArrowPrimitiveType>(
    array: &ArrayRef,
    f: impl Fn(From::Native) -> To::Native,
) -> ArrayRef {
    Arc::new(array.as_primitive::<From>().unary::<_, To>(f))
}

/// `batch` cut as [`ArrowRows`] cuts its batches: one ends at the row that
/// brings it to `batch_rows` rows or `batch_bytes` bytes (text and bytes by
/// length, any other value as 8).
fn slices(batch: &RecordBatch, wanted: ArrowWanted) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let mut sizes = vec![0usize; rows];
    for column in batch.columns() {
        let lengths: Option<Vec<usize>> = match column.data_type() {
            DataType::Utf8 => Some(lengths(column.as_string::<i32>().value_offsets())),
            DataType::Binary => Some(lengths(column.as_binary::<i32>().value_offsets())),
            _ => None,
        };
        match lengths {
            Some(lengths) => sizes.iter_mut().zip(lengths).for_each(|(s, l)| *s += l),
            None => sizes.iter_mut().for_each(|s| *s += 8),
        }
    }
    let mut pieces = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        bytes += size;
        let taken = i + 1 - start;
        if taken >= wanted.batch_rows || bytes >= wanted.batch_bytes {
            pieces.push(batch.slice(start, taken));
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < rows {
        pieces.push(batch.slice(start, rows - start));
    }
    pieces
}

/// Each value's length from an offsets buffer.
fn lengths(offsets: &[i32]) -> Vec<usize> {
    offsets
        .windows(2)
        .map(|w| usize::try_from(w[1].saturating_sub(w[0])).unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::arrow::array::{Int32Array, StringArray, Time64MicrosecondArray};
    use iadb::arrow::{Field, Schema};

    fn wanted(batch_rows: usize, batch_bytes: usize) -> ArrowWanted {
        ArrowWanted {
            batch_rows,
            batch_bytes,
        }
    }

    #[test]
    fn slices_cut_by_rows_and_by_bytes() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "bb", "cccccccccc", "d", "e"]));
        let batch = RecordBatch::try_new(schema, vec![text]).expect("batch");
        let lens =
            |pieces: Vec<RecordBatch>| pieces.iter().map(|b| b.num_rows()).collect::<Vec<_>>();
        assert_eq!(lens(slices(&batch, wanted(2, 1 << 20))), vec![2, 2, 1]);
        // 1 + 2 = 3 bytes reach 3; then 10 alone; then 1 + 1.
        assert_eq!(lens(slices(&batch, wanted(100, 3))), vec![2, 1, 2]);
        assert_eq!(lens(slices(&batch, wanted(100, 1 << 20))), vec![5]);
    }

    #[test]
    fn narrower_integers_and_times_widen_exactly() {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(-7), None, Some(i32::MAX)]));
        let wide = native_column(&ints, &DataType::Int64, false).expect("widened");
        let wide = wide.as_primitive::<Int64Type>();
        assert_eq!(
            wide.iter().collect::<Vec<_>>(),
            vec![Some(-7), None, Some(2_147_483_647)]
        );

        let times: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![Some(1_500_000), None]));
        let nanos =
            native_column(&times, &DataType::Time64(TimeUnit::Nanosecond), false).expect("widened");
        let nanos = nanos.as_primitive::<Time64NanosecondType>();
        assert_eq!(
            nanos.iter().collect::<Vec<_>>(),
            vec![Some(1_500_000_000), None]
        );
    }

    #[test]
    fn values_the_row_path_treats_otherwise_are_not_taken_as_they_are() {
        // 24:00:00, which the row path gives as text.
        let midnight: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![MICROS_PER_DAY]));
        assert!(native_column(&midnight, &DataType::Time64(TimeUnit::Nanosecond), false).is_none());
        // DuckDB's `infinity` date.
        let infinity: ArrayRef = Arc::new(duckdb::arrow::array::Date32Array::from(vec![i32::MAX]));
        assert!(native_column(&infinity, &DataType::Date32, false).is_none());
        // A timestamp chrono cannot hold.
        let far: ArrayRef = Arc::new(duckdb::arrow::array::TimestampMicrosecondArray::from(vec![
            i64::MAX - 1,
        ]));
        assert!(
            native_column(
                &far,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
                false
            )
            .is_none()
        );
        // Text that is not a VARCHAR's (a UUID's, say).
        let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert!(native_column(&text, &DataType::Utf8, false).is_none());
        assert!(native_column(&text, &DataType::Utf8, true).is_some());
    }

    /// The first chunk of `sql`, with the result's layout.
    fn first_chunk(conn: &duckdb::Connection, sql: &str) -> (ResultLayout, StructArray) {
        let mut stmt = super::super::decoding::prepare_checked(conn, sql).expect("prepare");
        drop(
            stmt.stream_arrow([] as [&dyn duckdb::ToSql; 0])
                .expect("runs"),
        );
        let layout = ResultLayout::of(&stmt).expect("layout");
        let chunk = stmt.step().expect("a chunk").expect("a chunk");
        (layout, chunk)
    }

    #[test]
    fn chunks_of_iadb_types_go_as_duckdbs_arrays_and_others_are_decoded() {
        let conn = duckdb::Connection::open_in_memory().expect("DuckDB");
        let wanted = wanted(1_000, 1 << 20);
        let (layout, chunk) = first_chunk(
            &conn,
            "SELECT i AS n, CAST(i AS INTEGER) AS i32, CAST(i % 100 AS TINYINT) AS i8, \
             CAST(i AS UINTEGER) AS u32, 'v' || i AS s, CAST(i AS DOUBLE) AS x, \
             CAST(i AS FLOAT) AS f, i % 2 = 0 AS b, CAST('b' || i AS BLOB) AS blob, \
             TIMESTAMP '2020-01-01' + to_seconds(i) AS t, \
             DATE '2020-01-01' + CAST(i AS INTEGER) AS d, TIME '00:00:00' + to_seconds(i) AS tod, \
             CAST(TIMESTAMP '2020-01-01' + to_seconds(i) AS TIMESTAMPTZ) AS tz, \
             CASE WHEN i % 7 = 0 THEN NULL ELSE CAST(i AS INTEGER) END AS maybe \
             FROM range(1, 3000) r(i)",
        );
        let chunks = ArrowChunks::new(&layout.columns, wanted).expect("declared types decide");
        let batch = chunks.native(&chunk).expect("DuckDB's own arrays");
        assert_eq!(batch.num_rows(), chunk.len());
        assert_eq!(batch.schema(), chunks.rows.schema());
        // A DECIMAL is text in iadb's Arrow: decoded, not taken.
        let (layout, chunk) = first_chunk(&conn, "SELECT CAST(1.5 AS DECIMAL(9, 2)) AS d");
        let chunks = ArrowChunks::new(&layout.columns, wanted).expect("declared types decide");
        assert!(chunks.native(&chunk).is_none());
    }
}
