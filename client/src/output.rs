//! Printing a result as it arrives, in each of `iadb query`'s formats.
//!
//! Rows are written as the stream yields them and the output is flushed
//! whenever the next row is not there yet, so a slow query shows its first
//! rows at once and memory stays flat for any result size:
//!
//! - CSV: a header line, then one line per row.
//! - JSON: an array of objects, one object per line, whose keys are the
//!   columns in the result's order.
//! - Table: printed in chunks (up to [`CHUNK_ROWS`] rows, or what arrived
//!   before the stream had to wait). The columns of a chunk are as wide as
//!   its widest value and never narrower than in the chunks before, so a
//!   long result reads as one table; where a later value is wider, a
//!   `├──┼──┤` line marks the point from which the columns are wider.

use comfy_table::{ColumnConstraint, Table, Width, presets::UTF8_FULL_CONDENSED};
use iadb::{Column, Error, ExecuteOutcome, QueryEvent, Value};
use std::io::{self, Write};

/// Most rows of one table chunk.
pub const CHUNK_ROWS: usize = 1000;

/// How `query` prints rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Why printing stopped.
#[derive(Debug)]
pub enum Failure {
    /// The call failed (printed on stderr, exit 1).
    Call(Error),
    /// Standard output was closed by its reader (`| head`): stop quietly.
    Closed,
    /// Standard output could not be written.
    Io(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Call(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Io(e)
        }
    }
}

impl From<csv::Error> for Failure {
    fn from(e: csv::Error) -> Self {
        match e.into_kind() {
            csv::ErrorKind::Io(e) => e.into(),
            other => Failure::Io(io::Error::other(format!("{other:?}"))),
        }
    }
}

/// Where rows go, in one format.
trait Sink {
    fn row(&mut self, values: &[Value]) -> Result<(), Failure>;
    /// The stream has to wait: show what has been written.
    fn pause(&mut self) -> Result<(), Failure>;
    /// The stream ended after `rows` rows.
    fn finish(&mut self, rows: u64) -> Result<(), Failure>;
}

/// The text of a row count: `(1 row)`, `(2 rows)`.
pub fn rows_line(n: u64) -> String {
    format!("({n} row{})", if n == 1 { "" } else { "s" })
}

/// What a statement without result columns changed.
pub fn affected_line(outcome: &ExecuteOutcome) -> String {
    match outcome.last_insert_id {
        Some(id) => format!(
            "{} row(s) affected, last insert id {id}",
            outcome.rows_affected
        ),
        None => format!("{} row(s) affected", outcome.rows_affected),
    }
}

struct CsvSink<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> Sink for CsvSink<W> {
    fn row(&mut self, values: &[Value]) -> Result<(), Failure> {
        self.writer.write_record(values.iter().map(|v| match v {
            Value::Null => String::new(),
            other => other.to_string(),
        }))?;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Failure> {
        Ok(self.writer.flush()?)
    }

    fn finish(&mut self, _rows: u64) -> Result<(), Failure> {
        Ok(self.writer.flush()?)
    }
}

struct JsonSink<W: Write> {
    out: W,
    /// Each column's name as a JSON string, with `: ` after it.
    keys: Vec<String>,
    rows: u64,
}

impl<W: Write> JsonSink<W> {
    fn new(out: W, columns: &[Column]) -> Self {
        let keys = columns
            .iter()
            .map(|c| format!("{}: ", serde_json::Value::String(c.name.clone())))
            .collect();
        Self { out, keys, rows: 0 }
    }
}

/// A value as JSON. A JSON value is written as the engine's own text (when
/// it is valid JSON), so its keys keep their order too.
fn write_json_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    if let Value::Json(text) = value
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return out.write_all(text.trim().as_bytes());
    }
    serde_json::to_writer(&mut *out, &value.to_json()).map_err(io::Error::from)
}

impl<W: Write> Sink for JsonSink<W> {
    fn row(&mut self, values: &[Value]) -> Result<(), Failure> {
        let out = &mut self.out;
        out.write_all(if self.rows == 0 { b"[\n  {" } else { b",\n  {" })?;
        for (i, (key, value)) in self.keys.iter().zip(values).enumerate() {
            if i > 0 {
                out.write_all(b", ")?;
            }
            out.write_all(key.as_bytes())?;
            write_json_value(out, value)?;
        }
        out.write_all(b"}")?;
        self.rows += 1;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Failure> {
        Ok(self.out.flush()?)
    }

    fn finish(&mut self, _rows: u64) -> Result<(), Failure> {
        self.out
            .write_all(if self.rows == 0 { b"[]\n" } else { b"\n]\n" })?;
        Ok(self.out.flush()?)
    }
}

struct TableSink<W: Write> {
    out: W,
    header: Vec<String>,
    chunk: Vec<Vec<String>>,
    /// The widths (in characters, padding included) of the columns as
    /// printed so far; empty before the first chunk.
    widths: Vec<usize>,
    /// The table's bottom border in the current widths.
    bottom: String,
}

impl<W: Write> TableSink<W> {
    fn new(out: W, columns: &[Column]) -> Self {
        Self {
            out,
            header: columns.iter().map(|c| c.name.clone()).collect(),
            chunk: Vec::new(),
            widths: Vec::new(),
            bottom: String::new(),
        }
    }

    /// Prints the rows held so far.
    fn print_chunk(&mut self) -> Result<(), Failure> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let first = self.widths.is_empty();
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        if first {
            table.set_header(&self.header);
        }
        for row in self.chunk.drain(..) {
            table.add_row(row);
        }
        // Never narrower than before (the width of a lower boundary counts
        // the padding, as `widths` do).
        for (i, &w) in self.widths.iter().enumerate() {
            if let Some(column) = table.column_mut(i) {
                let width = u16::try_from(w).unwrap_or(u16::MAX);
                column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width)));
            }
        }
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let (Some(top), Some(bottom)) = (lines.first(), lines.last()) else {
            return Ok(());
        };
        let widths: Vec<usize> = top
            .trim_start_matches('┌')
            .trim_end_matches('┐')
            .split('┬')
            .map(|segment| segment.chars().count())
            .collect();
        let body = &lines[1..lines.len().saturating_sub(1)];
        if first {
            writeln!(self.out, "{top}")?;
        } else if widths != self.widths {
            let line: String = top
                .chars()
                .map(|c| match c {
                    '┌' => '├',
                    '┬' => '┼',
                    '┐' => '┤',
                    other => other,
                })
                .collect();
            writeln!(self.out, "{line}")?;
        }
        for line in body {
            writeln!(self.out, "{line}")?;
        }
        self.widths = widths;
        self.bottom = (*bottom).to_owned();
        Ok(())
    }
}

impl<W: Write> Sink for TableSink<W> {
    fn row(&mut self, values: &[Value]) -> Result<(), Failure> {
        self.chunk
            .push(values.iter().map(Value::to_string).collect());
        if self.chunk.len() >= CHUNK_ROWS {
            self.print_chunk()?;
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Failure> {
        self.print_chunk()?;
        Ok(self.out.flush()?)
    }

    fn finish(&mut self, rows: u64) -> Result<(), Failure> {
        if rows == 0 {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_header(&self.header);
            writeln!(self.out, "{table}")?;
        } else {
            self.print_chunk()?;
            writeln!(self.out, "{}", self.bottom)?;
        }
        writeln!(self.out, "{}", rows_line(rows))?;
        Ok(self.out.flush()?)
    }
}

/// What a printed result was.
#[derive(Debug, Default)]
pub struct Printed {
    /// Rows printed.
    pub rows: u64,
    /// What the statement reported at its end.
    pub outcome: Option<ExecuteOutcome>,
}

/// Reports progress while rows arrive (see `progress.rs`).
pub trait Progress {
    fn rows(&mut self, rows: u64);
    fn done(&mut self);
}

/// No progress line.
pub struct NoProgress;

impl Progress for NoProgress {
    fn rows(&mut self, _rows: u64) {}
    fn done(&mut self) {}
}

/// Prints the rows of `events` to `out` as they arrive. A statement that
/// has no result columns prints what it changed instead
/// (`N row(s) affected`), in every format.
pub async fn print_stream<W: Write>(
    out: W,
    format: Format,
    columns: &[Column],
    mut events: futures::stream::BoxStream<'_, iadb::Result<QueryEvent>>,
    progress: &mut dyn Progress,
) -> Result<Printed, Failure> {
    use futures::{FutureExt as _, StreamExt as _};
    let no_columns = columns.is_empty();
    let mut sink: Box<dyn Sink + '_> = match format {
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            if !no_columns {
                writer.write_record(columns.iter().map(|c| c.name.as_str()))?;
            }
            Box::new(CsvSink { writer })
        }
        Format::Json => Box::new(JsonSink::new(out, columns)),
        Format::Table => Box::new(TableSink::new(out, columns)),
    };
    let mut printed = Printed::default();
    loop {
        let event = match events.next().now_or_never() {
            Some(event) => event,
            None => {
                sink.pause()?;
                events.next().await
            }
        };
        match event {
            Some(Ok(QueryEvent::Row(values))) => {
                sink.row(&values)?;
                printed.rows += 1;
                progress.rows(printed.rows);
            }
            Some(Ok(QueryEvent::Rows(batch))) => {
                for values in batch.rows() {
                    let values = match values {
                        Ok(values) => values,
                        Err(e) => {
                            progress.done();
                            sink.pause()?;
                            return Err(e.into());
                        }
                    };
                    sink.row(&values)?;
                    printed.rows += 1;
                    progress.rows(printed.rows);
                }
            }
            Some(Ok(QueryEvent::Done(outcome))) => printed.outcome = Some(outcome),
            Some(Ok(QueryEvent::Arrow(_))) => {
                progress.done();
                sink.pause()?;
                return Err(iadb::arrow_where_rows_were_expected().into());
            }
            Some(Err(e)) => {
                progress.done();
                // What arrived before the error stays printed.
                sink.pause()?;
                return Err(e.into());
            }
            None => break,
        }
    }
    progress.done();
    if no_columns && printed.rows == 0 {
        return Ok(printed);
    }
    sink.finish(printed.rows)?;
    Ok(printed)
}

/// A progress line on stderr (rows so far, rows per second), redrawn at
/// most four times a second once a result has taken a second, and erased
/// at the end. For a terminal on stderr only.
pub struct TermProgress {
    started: std::time::Instant,
    drawn: Option<std::time::Instant>,
}

impl TermProgress {
    /// A progress line when stderr is a terminal and stdout is not (where
    /// rows already show on the terminal, a line between them would garble
    /// them).
    pub fn when_useful() -> Option<Self> {
        use std::io::IsTerminal as _;
        (io::stderr().is_terminal() && !io::stdout().is_terminal()).then(|| Self {
            started: std::time::Instant::now(),
            drawn: None,
        })
    }
}

impl Progress for TermProgress {
    fn rows(&mut self, rows: u64) {
        if !rows.is_multiple_of(256) {
            return;
        }
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.started);
        if elapsed < std::time::Duration::from_secs(1)
            || self
                .drawn
                .is_some_and(|d| now.duration_since(d) < std::time::Duration::from_millis(250))
        {
            return;
        }
        let rate = rows as f64 / elapsed.as_secs_f64();
        let mut err = io::stderr().lock();
        // A failed write to stderr only loses the progress line.
        let _ = write!(err, "\r\x1b[K{rows} rows, {rate:.0} rows/s");
        let _ = err.flush();
        self.drawn = Some(now);
    }

    fn done(&mut self) {
        if self.drawn.take().is_some() {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
