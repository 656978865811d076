//! Arrow results of PostgreSQL read through binary `COPY`.
//!
//! A pooled FetchAll that asks for Arrow, has no parameters and is one
//! plain query (`SELECT`, `WITH` or `VALUES`: [`copyable`]) over columns
//! of the common types ([`CopyReader`]) runs as
//! `COPY (query) TO STDOUT (FORMAT binary)` instead of through the
//! extended protocol: PostgreSQL sends each row as one compact message,
//! and the rows are read from it straight into the Arrow builders, without
//! sqlx's row decoding. The values, the schema, the batches and every
//! error (a value its Arrow column cannot hold, a date iadb cannot carry)
//! are those of the usual path ([`super::decode_value`] and
//! [`iadb::arrow::ArrowRows`]); `docs/arrow.md` says so.
//!
//! Binary COPY data does not say its columns' types: they come from a
//! describe of the statement made inside the transaction the COPY runs in
//! ([`begin`]), whose locks keep the tables' columns as they were
//! described until the COPY has ended. A connection whose COPY failed is
//! closed, not reused (the pooled call's connection goes to
//! [`SqlxEngine::abandon`] once its columns were sent).

use super::{
    ColumnReader, PostgresEngine, SqlxEngine, pg_error, temporal_error, temporal_from_binary,
};
use crate::backend::sqlx_common::{Step, Steps, prelude::*};
use futures::{StreamExt as _, TryStreamExt as _};
use iadb::{ValueWriter, arrow::ArrowWanted};
use sqlx::types::{JsonRawValue, Uuid};
use std::sync::atomic::{AtomicU64, Ordering};

/// The words that keep a statement out of `COPY`: a statement that writes
/// (`INSERT` … inside `WITH`), locks rows (`FOR UPDATE`, `FOR SHARE`),
/// makes a table (`SELECT … INTO`) or is not a query. Matched anywhere in
/// the text, names and literals too: a statement they wrongly keep out
/// is read the usual way.
const NOT_IN_COPY: [&str; 8] = [
    "INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "SHARE", "COPY", "CALL",
];

/// The query of `text` (a statement without parameters) to run inside
/// `COPY (…)`, without trailing `;` and whitespace: `None` unless it
/// begins with `SELECT`, `WITH` or `VALUES`, holds no `;` before its end
/// (so that it is one statement, whatever its literals hold) and none of
/// [`NOT_IN_COPY`].
pub(super) fn copyable(text: &str) -> Option<&str> {
    let query = text.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if query.contains(';') {
        return None;
    }
    let mut words = query
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    let begins = ["SELECT", "WITH", "VALUES"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k));
    let starts_there = query
        .trim_start()
        .get(..first.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(first));
    let writes = std::iter::once(first)
        .chain(words)
        .any(|w| NOT_IN_COPY.iter().any(|k| w.eq_ignore_ascii_case(k)));
    (begins && starts_there && !writes).then_some(query)
}

/// How one column's values are read from their binary COPY form, as
/// [`super::decode_value`] reads the same types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CopyReader {
    /// Text, integers, floats and booleans ([`ColumnReader`]).
    Common(ColumnReader),
    Bytes,
    Uuid,
    Json,
    Jsonb,
    /// DATE, TIME, TIMESTAMP or TIMESTAMPTZ (the type's name).
    Temporal(&'static str),
}

impl CopyReader {
    /// The reader of a column of type `type_name` (sqlx's name); `None`
    /// for a type read only the usual way.
    fn of(type_name: &str) -> Option<Self> {
        Some(match type_name {
            "BYTEA" => CopyReader::Bytes,
            "UUID" => CopyReader::Uuid,
            "JSON" => CopyReader::Json,
            "JSONB" => CopyReader::Jsonb,
            "DATE" => CopyReader::Temporal("DATE"),
            "TIME" => CopyReader::Temporal("TIME"),
            "TIMESTAMP" => CopyReader::Temporal("TIMESTAMP"),
            "TIMESTAMPTZ" => CopyReader::Temporal("TIMESTAMPTZ"),
            other => match ColumnReader::of(other) {
                ColumnReader::Other => return None,
                common => CopyReader::Common(common),
            },
        })
    }

    /// Writes one non-NULL value of `column`.
    fn write(self, column: &Column, bytes: &[u8], out: &mut dyn ValueWriter) -> Result<()> {
        let not_its_form = || {
            Error::internal(format!(
                "column `{}`: a {}-byte value is not a binary {}",
                column.name,
                bytes.len(),
                column.declared_type.to_lowercase()
            ))
        };
        let column = column.name.as_str();
        match self {
            CopyReader::Common(reader) => {
                if !reader.write(bytes, out) {
                    return Err(not_its_form());
                }
            }
            CopyReader::Bytes => out.value(&Value::Bytes(bytes.to_vec())),
            CopyReader::Uuid => {
                let uuid = Uuid::from_slice(bytes).map_err(|_| not_its_form())?;
                out.text(uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            }
            CopyReader::Json => out.value(&json(column, bytes)?),
            CopyReader::Jsonb => match bytes.split_first() {
                // The binary form's version, then the text.
                Some((1, text)) => out.value(&json(column, text)?),
                _ => return Err(not_its_form()),
            },
            CopyReader::Temporal(type_name) => {
                let value = temporal_from_binary(bytes, type_name)
                    .map_err(|why| temporal_error(column, type_name, &why))?;
                out.value(&value);
            }
        }
        Ok(())
    }
}

/// A JSON value as the usual path reads it (sqlx's `Json<Box<RawValue>>`:
/// checked, without the whitespace around it).
fn json(column: &str, text: &[u8]) -> Result<Value> {
    let raw: Box<JsonRawValue> = serde_json::from_slice(text).map_err(|e| {
        Error::internal(format!("column `{column}`: JSON that does not parse: {e}"))
    })?;
    Ok(Value::Json(raw.get().to_owned()))
}

/// The readers of `columns`, when there are some and every one has one
/// (their declared types then decide the Arrow types).
pub(super) fn readers(columns: &[Column]) -> Option<Vec<CopyReader>> {
    if columns.is_empty() {
        return None;
    }
    columns
        .iter()
        .map(|c| CopyReader::of(&c.declared_type))
        .collect()
}

/// Tells the describe of one COPY from any other statement text, so that
/// it is never answered from sqlx's cache of prepared statements.
static DESCRIBES: AtomicU64 = AtomicU64::new(0);

/// Opens the transaction the COPY of `query` runs in, and describes
/// `query` inside it (fresh, not from the cache): `Ok(true)` when its
/// columns are `cached` (those the statement cache gave), and the COPY
/// may run; `Ok(false)` when they changed since the statement was cached
/// (the transaction is rolled back and the cache cleared: the caller
/// prepares the statement again and reads it the usual way). The
/// describe's locks on the statement's tables last until the transaction
/// ends, so the columns cannot change again before the COPY has read them.
pub(super) async fn begin(
    conn: &mut sqlx::PgConnection,
    query: &str,
    cached: &[Column],
) -> Result<bool> {
    (&mut *conn)
        .execute(sqlx::raw_sql("BEGIN"))
        .await
        .map_err(pg_error)?;
    let described = async {
        let n = DESCRIBES.fetch_add(1, Ordering::Relaxed);
        let probe = format!("{query}\n-- iadb: the columns of COPY {n}");
        let statement = (&mut *conn).prepare(&probe).await.map_err(pg_error)?;
        Ok::<_, Error>(
            statement
                .columns()
                .iter()
                .map(|c| Column::new(c.name(), c.type_info().name()))
                .collect::<Vec<_>>(),
        )
    }
    .await;
    if let Ok(columns) = &described
        && columns[..] == cached[..]
    {
        return Ok(true);
    }
    // A failed ROLLBACK leaves the connection inside a transaction block,
    // which the pool's reset finds and closes it for.
    let _ = (&mut *conn).execute(sqlx::raw_sql("ROLLBACK")).await;
    described?;
    sqlx::Connection::clear_cached_statements(&mut *conn)
        .await
        .map_err(pg_error)?;
    Ok(false)
}

/// The steps of `query` read through `COPY … (FORMAT binary)` inside the
/// transaction [`begin`] opened: its columns, its rows as Arrow record
/// batches within `wanted`'s bounds, then (the transaction committed) its
/// outcome. The rows read before an error go out before it, as on the
/// usual path; the error leaves the connection to be closed.
pub(super) fn steps<'c>(
    conn: &'c mut sqlx::PgConnection,
    query: &str,
    columns: Arc<[Column]>,
    readers: Vec<CopyReader>,
    wanted: ArrowWanted,
) -> Steps<'c> {
    let copy = format!("COPY (\n{query}\n) TO STDOUT (FORMAT binary)");
    Box::pin(async_stream::try_stream! {
        let mut rows = iadb::arrow::ArrowRows::new(
            PostgresEngine::ENGINE,
            columns.clone(),
            wanted.batch_rows,
        )
        .ok_or_else(|| Error::internal("a COPY result whose columns Arrow cannot take"))?;
        yield Step::Columns(columns.clone());
        let mut tuples = Tuples::new(columns, readers);
        let mut failed = None;
        {
            // Created and started outside the call's span (super::unspanned).
            let mut data = crate::backend::unspanned::Unspanned::new(|| {
                Box::pin(futures::stream::once(conn.copy_out_raw(&copy)).try_flatten())
            });
            'read: while let Some(chunk) = data.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        failed = Some(pg_error(e));
                        break;
                    }
                };
                tuples.feed(&chunk);
                loop {
                    match tuples.next(&mut rows) {
                        Ok(true) => {
                            if rows.len() >= wanted.batch_rows || rows.byte_len() >= wanted.batch_bytes {
                                yield Step::Arrow(rows.take()?);
                            }
                        }
                        Ok(false) => break,
                        Err(e) => {
                            failed = Some(e);
                            break 'read;
                        }
                    }
                }
            }
        }
        if !rows.is_empty() {
            yield Step::Arrow(rows.take()?);
        }
        if let Some(e) = failed {
            Err(e)?;
        }
        // Never a short result: the data ended with its trailer.
        tuples.ended()?;
        (&mut *conn).execute(sqlx::raw_sql("COMMIT")).await.map_err(pg_error)?;
        yield Step::Done(ExecuteOutcome {
            rows_affected: tuples.count,
            last_insert_id: None,
        });
    })
}

/// The signature that begins binary COPY data.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// The flag of a header whose rows carry OIDs (never asked for here).
const WITH_OIDS: u32 = 1 << 16;

/// Where the reading of binary COPY data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header,
    Tuples,
    /// The trailer has come.
    Ended,
}

/// Binary COPY data read into rows: PostgreSQL's messages need not end at
/// a row's end, so the bytes of a row not yet whole wait for the next.
struct Tuples {
    columns: Arc<[Column]>,
    readers: Vec<CopyReader>,
    buf: Vec<u8>,
    /// Where the bytes not read yet begin in `buf`.
    at: usize,
    part: Part,
    /// Rows read.
    count: u64,
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn broken(why: impl std::fmt::Display) -> Error {
    Error::internal(format!("PostgreSQL's binary COPY data {why}"))
}

impl Tuples {
    fn new(columns: Arc<[Column]>, readers: Vec<CopyReader>) -> Self {
        Self {
            columns,
            readers,
            buf: Vec::new(),
            at: 0,
            part: Part::Header,
            count: 0,
        }
    }

    /// Adds the bytes of the next message.
    fn feed(&mut self, bytes: &[u8]) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Reads the next whole row into `rows`: `Ok(true)` when one was read,
    /// `Ok(false)` when its bytes have not all come (or the trailer has).
    fn next(&mut self, rows: &mut iadb::arrow::ArrowRows) -> Result<bool> {
        loop {
            let buf = &self.buf[self.at..];
            match self.part {
                Part::Header => {
                    if buf.len() < SIGNATURE.len() + 8 {
                        return Ok(false);
                    }
                    if &buf[..SIGNATURE.len()] != SIGNATURE {
                        return Err(broken("does not begin with its signature"));
                    }
                    let flags = be_i32(&buf[11..]) as u32;
                    if flags & WITH_OIDS != 0 {
                        return Err(broken("has OIDs, which were not asked for"));
                    }
                    let extension = usize::try_from(be_i32(&buf[15..]))
                        .map_err(|_| broken("has a header extension of negative length"))?;
                    let header = 19 + extension;
                    if buf.len() < header {
                        return Ok(false);
                    }
                    self.at += header;
                    self.part = Part::Tuples;
                }
                Part::Tuples => return self.tuple(rows),
                Part::Ended if buf.is_empty() => return Ok(false),
                Part::Ended => return Err(broken("goes on after its trailer")),
            }
        }
    }

    fn tuple(&mut self, rows: &mut iadb::arrow::ArrowRows) -> Result<bool> {
        let buf = &self.buf[self.at..];
        if buf.len() < 2 {
            return Ok(false);
        }
        let fields = be_i16(buf);
        if fields == -1 {
            self.at += 2;
            self.part = Part::Ended;
            return match self.buf.len() == self.at {
                true => Ok(false),
                false => Err(broken("goes on after its trailer")),
            };
        }
        if usize::try_from(fields).ok() != Some(self.readers.len()) {
            return Err(broken(format_args!(
                "has a row of {fields} values for {} columns",
                self.readers.len()
            )));
        }
        // The row's length, before any of it is written.
        let mut end = 2;
        for _ in 0..self.readers.len() {
            let Some(len) = buf.get(end..end + 4).map(be_i32) else {
                return Ok(false);
            };
            end += 4;
            match len {
                -1 => {}
                len => {
                    let len = usize::try_from(len)
                        .map_err(|_| broken(format_args!("has a value of length {len}")))?;
                    end += len;
                }
            }
        }
        if buf.len() < end {
            return Ok(false);
        }
        self.count += 1;
        let number = self.count;
        let mut out = rows.row();
        let mut at = 2;
        for (reader, column) in self.readers.iter().zip(self.columns.iter()) {
            let len = be_i32(&buf[at..]);
            at += 4;
            let Ok(len) = usize::try_from(len) else {
                out.null();
                continue;
            };
            reader
                .write(column, &buf[at..at + len], &mut out)
                .map_err(|e| e.in_context(format_args!("row {number}")))?;
            at += len;
        }
        out.end()
            .map_err(|e| e.in_context(format_args!("row {number}")))?;
        self.at += end;
        Ok(true)
    }

    /// The data ended: an error unless its trailer came.
    fn ended(&self) -> Result<()> {
        match self.part {
            Part::Ended => Ok(()),
            _ => Err(broken(format_args!(
                "ended after {} rows without its trailer",
                self.count
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_queries_run_inside_copy() {
        assert_eq!(copyable("SELECT 1"), Some("SELECT 1"));
        assert_eq!(
            copyable("  select a from t ;\n; "),
            Some("  select a from t")
        );
        assert_eq!(
            copyable("WITH x AS (SELECT 1) SELECT * FROM x"),
            Some("WITH x AS (SELECT 1) SELECT * FROM x")
        );
        assert_eq!(copyable("VALUES (1), (2)"), Some("VALUES (1), (2)"));
        assert_eq!(copyable("SELECT 1 -- the end"), Some("SELECT 1 -- the end"));
        for no in [
            "",
            ";",
            "SELECT 1; SELECT 2",
            "SELECT ';' AS semi",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR KEY SHARE",
            "SELECT 1 INTO t2",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
            "INSERT INTO t VALUES (1) RETURNING *",
            "TABLE t",
            "SHOW search_path",
            "EXPLAIN SELECT 1",
            "/* a comment */ SELECT 1",
            "(SELECT 1)",
            "SELECT 1) TO STDOUT; DROP TABLE t; COPY (SELECT 1",
        ] {
            assert_eq!(copyable(no), None, "{no}");
        }
    }

    #[test]
    fn columns_of_the_common_types_have_readers() {
        let cols = |types: &[&str]| -> Vec<Column> {
            types.iter().map(|t| Column::new("c", *t)).collect()
        };
        let all = cols(&[
            "INT8",
            "INT4",
            "INT2",
            "FLOAT8",
            "FLOAT4",
            "BOOL",
            "TEXT",
            "VARCHAR",
            "BPCHAR",
            "NAME",
            "BYTEA",
            "UUID",
            "JSON",
            "JSONB",
            "DATE",
            "TIME",
            "TIMESTAMP",
            "TIMESTAMPTZ",
        ]);
        let all_read = readers(&all).expect("every common type");
        assert_eq!(all_read.len(), all.len());
        // Every one of them has its Arrow type from its declared type.
        assert!(iadb::arrow::ArrowRows::new(PostgresEngine::ENGINE, all.into(), 4).is_some());
        for other in [
            "NUMERIC", "INTERVAL", "INT4[]", "TIMETZ", "OID", "mood", "\"CHAR\"",
        ] {
            assert_eq!(readers(&cols(&["INT8", other])), None, "{other}");
        }
    }

    /// Binary COPY data of `rows` (each value: `None` for NULL).
    fn data(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0u32.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        for row in rows {
            out.extend((row.len() as i16).to_be_bytes());
            for value in row {
                match value {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend((v.len() as i32).to_be_bytes());
                        out.extend(v);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn two_columns() -> (Arc<[Column]>, Vec<CopyReader>) {
        let columns: Arc<[Column]> =
            vec![Column::new("n", "INT8"), Column::new("s", "TEXT")].into();
        let readers = readers(&columns).expect("readers");
        (columns, readers)
    }

    /// Feeds `bytes` in pieces of `piece` bytes; the rows read, as values.
    fn read(bytes: &[u8], piece: usize) -> Result<Vec<Vec<Value>>> {
        let (columns, readers) = two_columns();
        let mut rows = iadb::arrow::ArrowRows::new(PostgresEngine::ENGINE, columns.clone(), 1024)
            .expect("arrow");
        let mut tuples = Tuples::new(columns, readers);
        for chunk in bytes.chunks(piece) {
            tuples.feed(chunk);
            while tuples.next(&mut rows)? {}
        }
        tuples.ended()?;
        let batch = rows.take()?;
        let n = batch
            .column(0)
            .as_any()
            .downcast_ref::<iadb::arrow::arrow_array::Int64Array>()
            .expect("int64");
        let s = batch
            .column(1)
            .as_any()
            .downcast_ref::<iadb::arrow::arrow_array::StringArray>()
            .expect("utf8");
        Ok((0..batch.num_rows())
            .map(|i| {
                let cell = |null: bool, v: Value| if null { Value::Null } else { v };
                vec![
                    cell(
                        iadb::arrow::arrow_array::Array::is_null(n, i),
                        Value::Int(n.value(i)),
                    ),
                    cell(
                        iadb::arrow::arrow_array::Array::is_null(s, i),
                        Value::Text(s.value(i).to_owned()),
                    ),
                ]
            })
            .collect())
    }

    #[test]
    fn rows_are_read_whole_however_the_messages_cut_them() {
        let bytes = data(&[
            vec![Some(7i64.to_be_bytes().to_vec()), Some(b"seven".to_vec())],
            vec![None, Some(Vec::new())],
            vec![Some((-1i64).to_be_bytes().to_vec()), None],
        ]);
        let expected = vec![
            vec![Value::Int(7), Value::Text("seven".into())],
            vec![Value::Null, Value::Text(String::new())],
            vec![Value::Int(-1), Value::Null],
        ];
        for piece in [1, 2, 3, 7, 19, 20, bytes.len()] {
            assert_eq!(
                read(&bytes, piece).expect("reads"),
                expected,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn broken_data_is_an_error_never_a_short_result() {
        let whole = data(&[vec![Some(7i64.to_be_bytes().to_vec()), Some(b"x".to_vec())]]);
        let internal = |bytes: &[u8]| {
            let e = read(bytes, 5).expect_err("broken");
            assert_eq!(e.kind(), ErrorKind::Internal, "{}", e.message());
            e.message().to_owned()
        };
        // Cut short: before the trailer, inside a row.
        assert!(internal(&whole[..whole.len() - 2]).contains("without its trailer"));
        assert!(internal(&whole[..whole.len() - 4]).contains("without its trailer"));
        // Data after the trailer.
        let mut after = whole.clone();
        after.extend([0, 2]);
        assert!(internal(&after).contains("after its trailer"));
        // A wrong signature; a row of another width; a value of another size.
        let mut bad = whole.clone();
        bad[0] = b'X';
        assert!(internal(&bad).contains("signature"));
        let three = data(&[vec![None, None, None]]);
        assert!(internal(&three).contains("3 values for 2 columns"));
        let short_int = data(&[vec![Some(vec![0, 7]), None]]);
        let message = internal(&short_int);
        assert!(
            message.contains("column `n`") && message.contains("row 1"),
            "{message}"
        );
        // OIDs were not asked for.
        let mut oids = whole;
        oids[12] = 1;
        assert!(internal(&oids).contains("OIDs"));
    }
}
