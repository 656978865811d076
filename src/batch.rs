//! [`RowBatch`]: rows encoded as the wire carries them. An adapter writes
//! each row of its cursor straight into the bytes of the `iadb.v1.RowBatch`
//! message (no `proto::Row` or `proto::Value` per value, no `String` per
//! date), the server sends those bytes as they are, and the client keeps
//! the bytes of a batch it received and decodes each row as it is read.
//!
//! The generated API uses this type for `iadb.v1.RowBatch` (`extern_path`
//! in `build.rs`): the bytes on the wire are exactly what prost would write
//! for the same rows, so every other client reads them unchanged.

use crate::{Error, Value, proto, value::write_wire_temporal};
use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{DecodeContext, WireType, decode_varint, encode_varint, encoded_len_varint},
};

/// The key of field 1, length-delimited: `RowBatch.rows`, `Row.values`.
const FIELD_1_BYTES: u8 = 0x0a;

/// Rows of a result, each encoded as an `iadb.v1.Row`, one after another
/// as the fields of an `iadb.v1.RowBatch`.
#[derive(Clone, Default)]
pub struct RowBatch {
    /// The encoded message: for each row, its key, its length, its values.
    bytes: Vec<u8>,
    /// Rows in `bytes`.
    rows: usize,
    /// One row's values while it is written (kept for the next row).
    scratch: Vec<u8>,
    /// A date or time while it is formatted (kept for the next one).
    text: String,
}

/// Two batches are equal when they hold the same rows.
impl PartialEq for RowBatch {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.bytes == other.bytes
    }
}

impl std::fmt::Debug for RowBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowBatch")
            .field("rows", &self.rows)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl RowBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` bytes of rows.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The batch's size on the wire, in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one row of `values`.
    pub fn push(&mut self, values: &[Value]) {
        let mut row = self.row();
        for value in values {
            row.value(value);
        }
        row.end();
    }

    /// Starts a row, written value by value ([`RowWriter`]); it is added
    /// by [`RowWriter::end`], and not at all if the writer is dropped.
    pub fn row(&mut self) -> RowWriter<'_> {
        self.scratch.clear();
        RowWriter { batch: self }
    }

    /// Appends the rows of `other`.
    pub fn append(&mut self, other: &RowBatch) {
        self.bytes.extend_from_slice(&other.bytes);
        self.rows += other.rows;
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.rows = 0;
    }

    /// The batch, leaving an empty one with the same capacity in its
    /// place.
    pub fn take(&mut self) -> RowBatch {
        let capacity = self.bytes.capacity();
        let bytes = std::mem::replace(&mut self.bytes, Vec::with_capacity(capacity));
        let rows = std::mem::take(&mut self.rows);
        RowBatch {
            bytes,
            rows,
            ..RowBatch::default()
        }
    }

    /// The encoded rows, one slice (an `iadb.v1.Row` with its key and
    /// length) per row, in order.
    pub fn encoded_rows(&self) -> EncodedRows<'_> {
        EncodedRows {
            rest: &self.bytes,
            left: self.rows,
        }
    }

    /// Appends one encoded row as [`RowBatch::encoded_rows`] gives it.
    pub fn push_encoded(&mut self, row: &[u8]) {
        self.bytes.extend_from_slice(row);
        self.rows += 1;
    }

    /// Each row's values, decoded as they are read.
    pub fn rows(&self) -> impl Iterator<Item = Result<Vec<Value>, Error>> + '_ {
        self.encoded_rows().map(decode_row)
    }

    /// Each row's values, decoded as they are read, the batch's bytes
    /// kept until the last.
    pub fn into_rows(self) -> IntoRows {
        IntoRows {
            bytes: self.bytes,
            at: 0,
            left: self.rows,
        }
    }

    /// Every row's values.
    pub fn to_rows(&self) -> Result<Vec<Vec<Value>>, Error> {
        self.rows().collect()
    }

    /// A batch of `rows`, as prost encodes them.
    pub fn from_proto_rows(rows: &[proto::Row]) -> Self {
        let mut batch = RowBatch::new();
        for row in rows {
            prost::encoding::message::encode(1, row, &mut batch.bytes);
            batch.rows += 1;
        }
        batch
    }
}

impl From<Vec<Vec<Value>>> for RowBatch {
    fn from(rows: Vec<Vec<Value>>) -> Self {
        let mut batch = RowBatch::new();
        for row in &rows {
            batch.push(row);
        }
        batch
    }
}

/// One row of a [`RowBatch`] while its values are written.
pub struct RowWriter<'a> {
    batch: &'a mut RowBatch,
}

/// Where an adapter writes a row's values as it reads them from the
/// engine: a [`RowWriter`] (the wire's row encoding), or an
/// [`ArrowRowWriter`](crate::arrow::ArrowRowWriter) (Arrow arrays).
pub trait ValueWriter {
    /// Appends one value.
    fn value(&mut self, value: &Value);
    /// Appends an integer value.
    fn int(&mut self, i: i64);
    /// Appends a double value.
    fn double(&mut self, f: f64);
    /// Appends a text value.
    fn text(&mut self, s: &str);
    /// Appends a NULL.
    fn null(&mut self);
}

impl ValueWriter for RowWriter<'_> {
    fn value(&mut self, value: &Value) {
        RowWriter::value(self, value);
    }

    fn int(&mut self, i: i64) {
        RowWriter::int(self, i);
    }

    fn double(&mut self, f: f64) {
        RowWriter::double(self, f);
    }

    fn text(&mut self, s: &str) {
        RowWriter::text(self, s);
    }

    fn null(&mut self) {
        RowWriter::null(self);
    }
}

impl RowWriter<'_> {
    /// Appends one value.
    pub fn value(&mut self, value: &Value) {
        let out = &mut self.batch.scratch;
        match value {
            Value::Null => out.extend_from_slice(&[FIELD_1_BYTES, 2, 0x08, 0x00]),
            Value::Bool(b) => out.extend_from_slice(&[FIELD_1_BYTES, 2, 0x10, u8::from(*b)]),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => self.double(*f),
            Value::Text(s) => self.text(s),
            Value::Bytes(b) => put_bytes_value(out, 0x32, b),
            Value::Decimal(s) => put_bytes_value(out, 0x3a, s.as_bytes()),
            Value::Json(s) => put_bytes_value(out, 0x62, s.as_bytes()),
            Value::Date(_) | Value::Time(_) | Value::DateTime(_) | Value::TimestampTz(_) => {
                let key = match value {
                    Value::Date(_) => 0x42,
                    Value::Time(_) => 0x4a,
                    Value::DateTime(_) => 0x52,
                    _ => 0x5a,
                };
                let text = &mut self.batch.text;
                text.clear();
                write_wire_temporal(value, text);
                put_bytes_value(out, key, text.as_bytes());
            }
        }
    }

    /// Appends an integer value.
    pub fn int(&mut self, i: i64) {
        let out = &mut self.batch.scratch;
        // Negative integers take ten bytes, as in prost's `int64`.
        let n = encoded_len_varint(i as u64);
        out.push(FIELD_1_BYTES);
        out.push((1 + n) as u8);
        out.push(0x18);
        encode_varint(i as u64, out);
    }

    /// Appends a double value.
    pub fn double(&mut self, f: f64) {
        let out = &mut self.batch.scratch;
        out.extend_from_slice(&[FIELD_1_BYTES, 9, 0x21]);
        out.extend_from_slice(&f.to_le_bytes());
    }

    /// Appends a text value.
    pub fn text(&mut self, s: &str) {
        put_bytes_value(&mut self.batch.scratch, 0x2a, s.as_bytes());
    }

    /// Appends a NULL.
    pub fn null(&mut self) {
        self.value(&Value::Null);
    }

    /// Adds the row to its batch.
    pub fn end(self) {
        let batch = self.batch;
        batch.bytes.push(FIELD_1_BYTES);
        encode_varint(batch.scratch.len() as u64, &mut batch.bytes);
        batch.bytes.extend_from_slice(&batch.scratch);
        batch.rows += 1;
    }
}

/// Writes one `Value` field of a `Row` whose `kind` is the bytes or text
/// field with key `key`.
fn put_bytes_value(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    let len = bytes.len();
    let inner = 1 + encoded_len_varint(len as u64) + len;
    out.push(FIELD_1_BYTES);
    encode_varint(inner as u64, out);
    out.push(key);
    encode_varint(len as u64, out);
    out.extend_from_slice(bytes);
}

/// The encoded rows of a [`RowBatch`] ([`RowBatch::encoded_rows`]).
pub struct EncodedRows<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for EncodedRows<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Written by this module or checked by `merge_field`: a key, a
        // length, then that many bytes.
        let mut cursor = self.rest.get(1..)?;
        let len = decode_varint(&mut cursor).ok()?;
        let header = self.rest.len() - cursor.len();
        let end = header.checked_add(usize::try_from(len).ok()?)?;
        let (row, rest) = self.rest.split_at_checked(end)?;
        self.rest = rest;
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// The rows of a [`RowBatch`], owned ([`RowBatch::into_rows`]).
pub struct IntoRows {
    bytes: Vec<u8>,
    at: usize,
    left: usize,
}

impl Iterator for IntoRows {
    type Item = Result<Vec<Value>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut rows = EncodedRows {
            rest: self.bytes.get(self.at..)?,
            left: self.left,
        };
        let row = rows.next()?;
        self.at += row.len();
        self.left = rows.left;
        Some(decode_row(row))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Decodes one encoded row ([`RowBatch::encoded_rows`]) into its values:
/// the common kinds straight from the bytes, any other (or anything
/// unusual) through prost and the `TryFrom` of `convert`, whose result the
/// direct reading equals.
fn decode_row(encoded: &[u8]) -> Result<Vec<Value>, Error> {
    let mut cursor = encoded.get(1..).unwrap_or_default();
    let _len = decode_varint(&mut cursor).map_err(bad_batch)?;
    let mut values = Vec::new();
    let mut rest = cursor;
    while let Some((&key, after_key)) = rest.split_first() {
        let mut after_len = after_key;
        let value = match decode_varint(&mut after_len) {
            Ok(len) if key == FIELD_1_BYTES && len as usize <= after_len.len() => {
                let (value, after) = after_len.split_at(len as usize);
                rest = after;
                value
            }
            // Not a row as this module writes it: prost reads it.
            _ => {
                let row = proto::Row::decode(cursor).map_err(bad_batch)?;
                return Vec::<Value>::try_from(row);
            }
        };
        values.push(match read_value(value) {
            Some(value) => value,
            None => Value::try_from(proto::Value::decode(value).map_err(bad_batch)?)?,
        });
    }
    Ok(values)
}

/// An encoded `iadb.v1.Value` of a common kind (integer, double, text,
/// timestamp without zone, null, bool), read from its bytes with its text
/// borrowed; `None` for anything else, which prost reads.
enum Quick<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    /// A timestamp without zone, as its text.
    DateTime(&'a str),
}

fn read_quick(encoded: &[u8]) -> Option<Quick<'_>> {
    let (&key, mut body) = encoded.split_first()?;
    let value = match key {
        0x08 => {
            decode_varint(&mut body).ok()?;
            Quick::Null
        }
        0x10 => Quick::Bool(decode_varint(&mut body).ok()? != 0),
        0x18 => Quick::Int(decode_varint(&mut body).ok()? as i64),
        0x21 => {
            let bits: [u8; 8] = body.try_into().ok()?;
            body = &[];
            Quick::Float(f64::from_le_bytes(bits))
        }
        0x2a | 0x52 => {
            let len = decode_varint(&mut body).ok()?;
            if len != body.len() as u64 {
                return None;
            }
            let text = std::str::from_utf8(body).ok()?;
            body = &[];
            match key {
                0x2a => Quick::Text(text),
                _ => Quick::DateTime(text),
            }
        }
        _ => return None,
    };
    // One field, read to its end; more (a oneof set twice) is prost's.
    body.is_empty().then_some(value)
}

/// [`read_quick`]'s value as a [`Value`]; `None` where prost reads it.
fn read_value(encoded: &[u8]) -> Option<Value> {
    Some(match read_quick(encoded)? {
        Quick::Null => Value::Null,
        Quick::Bool(b) => Value::Bool(b),
        Quick::Int(n) => Value::Int(n),
        Quick::Float(x) => Value::Float(x),
        Quick::Text(text) => Value::Text(text.to_owned()),
        Quick::DateTime(text) => Value::DateTime(crate::value::parse_naive_datetime(text)?),
    })
}

/// One value of an encoded row, borrowed where it can be (text): what
/// [`RowBatch::visit_rows`] gives for each value.
#[derive(Debug)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    /// Any other kind, decoded.
    Value(Value),
}

impl RowBatch {
    /// Calls `cell(row, column, value)` for each value of each row, in
    /// order, without a `Vec<Value>` per row: integers, doubles and text
    /// straight from the bytes, any other kind decoded as
    /// [`RowBatch::rows`] decodes it. Returns the number of values in each
    /// row through `row_end(row, values)`.
    pub fn visit_rows<E: From<Error>>(
        &self,
        mut cell: impl FnMut(usize, Cell<'_>) -> Result<(), E>,
        mut row_end: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        for encoded in self.encoded_rows() {
            let mut cursor = encoded.get(1..).unwrap_or_default();
            decode_varint(&mut cursor).map_err(bad_batch)?;
            let mut rest = cursor;
            let mut column = 0;
            while let Some((&key, after_key)) = rest.split_first() {
                let mut after_len = after_key;
                let value = match decode_varint(&mut after_len) {
                    Ok(len) if key == FIELD_1_BYTES && len as usize <= after_len.len() => {
                        let (value, after) = after_len.split_at(len as usize);
                        rest = after;
                        value
                    }
                    _ => {
                        // Not a row as this module writes it: prost reads it.
                        let values = decode_row(encoded)?;
                        column = values.len();
                        for (i, v) in values.into_iter().enumerate() {
                            cell(i, Cell::Value(v))?;
                        }
                        break;
                    }
                };
                cell(column, read_cell(value)?)?;
                column += 1;
            }
            row_end(column)?;
        }
        Ok(())
    }
}

/// One encoded `iadb.v1.Value` as a [`Cell`].
fn read_cell(encoded: &[u8]) -> Result<Cell<'_>, Error> {
    let quick = read_quick(encoded).and_then(|quick| {
        Some(match quick {
            Quick::Null => Cell::Null,
            Quick::Bool(b) => Cell::Bool(b),
            Quick::Int(n) => Cell::Int(n),
            Quick::Float(x) => Cell::Float(x),
            Quick::Text(text) => Cell::Text(text),
            Quick::DateTime(text) => {
                Cell::Value(Value::DateTime(crate::value::parse_naive_datetime(text)?))
            }
        })
    });
    match quick {
        Some(cell) => Ok(cell),
        None => Ok(Cell::Value(Value::try_from(
            proto::Value::decode(encoded).map_err(bad_batch)?,
        )?)),
    }
}

fn bad_batch(e: DecodeError) -> Error {
    Error::internal(format!("a row batch does not decode: {e}"))
}

impl Message for RowBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = decode_varint(buf)?;
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|len| *len <= buf.remaining())
        else {
            // prost's own message for this case; it has no other public
            // way to make a decode error.
            #[allow(deprecated)]
            return Err(DecodeError::new("buffer underflow"));
        };
        self.bytes.push(FIELD_1_BYTES);
        encode_varint(len as u64, &mut self.bytes);
        let start = self.bytes.len();
        self.bytes.resize(start + len, 0);
        buf.copy_to_slice(&mut self.bytes[start..]);
        self.rows += 1;
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        RowBatch::clear(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};

    fn sample() -> Vec<Vec<Value>> {
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
        let at = date.and_hms_micro_opt(13, 5, 9, 120_000).expect("time");
        vec![
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(0),
                Value::Int(-1),
                Value::Int(i64::MAX),
                Value::Float(-0.5),
                Value::Text(String::new()),
                Value::Text("é".repeat(100)),
            ],
            vec![],
            vec![
                Value::Bytes(vec![0, 1, 255]),
                Value::Decimal("-12.50".into()),
                Value::Json("{\"a\":[1]}".into()),
                Value::Date(date),
                Value::Date(NaiveDate::from_ymd_opt(-5, 1, 1).expect("date")),
                Value::Time(at.time()),
                Value::DateTime(at),
                Value::TimestampTz(Utc.from_utc_datetime(&at)),
            ],
        ]
    }

    /// The batch's bytes are what prost writes for the same rows, so every
    /// client reads them as before.
    #[test]
    fn a_batch_is_encoded_as_prost_encodes_its_rows() {
        let rows = sample();
        let batch = RowBatch::from(rows.clone());
        let proto_rows: Vec<proto::Row> = rows.iter().cloned().map(proto::Row::from).collect();
        let mut expected = Vec::new();
        for row in &proto_rows {
            prost::encoding::message::encode(1, row, &mut expected);
        }
        assert_eq!(batch.encode_to_vec(), expected);
        assert_eq!(batch.byte_len(), expected.len());
        assert_eq!(RowBatch::from_proto_rows(&proto_rows), batch);
    }

    #[test]
    fn a_batch_decodes_back_to_its_rows() {
        let rows = sample();
        let batch = RowBatch::from(rows.clone());
        let decoded = RowBatch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded.to_rows().expect("rows"), rows);
        let owned: Vec<Vec<Value>> = decoded
            .clone()
            .into_rows()
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(owned, rows);
        assert_eq!(decoded.encoded_rows().count(), 3);
        let mut copy = RowBatch::new();
        for row in decoded.encoded_rows() {
            copy.push_encoded(row);
        }
        assert_eq!(copy, batch);
    }

    /// What another encoder may write (a field iadb does not know, a
    /// oneof set twice, a text that is not UTF-8) is read as prost reads it.
    #[test]
    fn unusual_rows_are_read_as_prost_reads_them() {
        let int = |i: i64| proto::Value::from(Value::Int(i)).encode_to_vec();
        let mut twice = int(1);
        twice.extend_from_slice(&int(2));
        let mut unknown_in_row = Vec::new();
        prost::encoding::bytes::encode(1, &int(7), &mut unknown_in_row);
        prost::encoding::uint64::encode(9, &5, &mut unknown_in_row);
        let mut twice_row = Vec::new();
        prost::encoding::bytes::encode(1, &twice, &mut twice_row);
        let mut bad_text = Vec::new();
        prost::encoding::bytes::encode(1, &vec![0x2a, 1, 0xff], &mut bad_text);
        for (row, expected) in [
            (unknown_in_row, Ok(vec![Value::Int(7)])),
            (twice_row, Ok(vec![Value::Int(2)])),
            (bad_text, Err(())),
        ] {
            let mut encoded = Vec::new();
            prost::encoding::bytes::encode(1, &row, &mut encoded);
            let batch = RowBatch::decode(encoded.as_slice()).expect("a batch");
            let read = batch.to_rows().map_err(|_| ());
            assert_eq!(read, expected.map(|row| vec![row]));
        }
    }

    #[test]
    fn a_truncated_batch_is_an_error_not_a_panic() {
        let bytes = RowBatch::from(sample()).encode_to_vec();
        for cut in 0..bytes.len() {
            if let Ok(batch) = RowBatch::decode(&bytes[..cut]) {
                // Whole rows only: a cut inside a row fails to decode.
                assert!(batch.to_rows().is_ok());
            }
        }
    }
}
