//! `iadb shell`: an interactive prompt on one database.
//!
//! Lines are read with line editing and a history file (rustyline). A
//! statement may span lines and runs when a line ends it with `;` (outside
//! literals and comments, by the engine's lexical rules). Lines starting
//! with `\` are the shell's own commands (`\dt`, `\format`, `\q`, `\?`).
//! `BEGIN` (or `START TRANSACTION`) opens a Transaction stream on the
//! server: the statements after it run in that one transaction until
//! `COMMIT` or `ROLLBACK`; an error inside it rolls it back, as the server
//! does. Outside a transaction each statement is its own call, and its rows
//! print as they arrive; inside one, a statement's result is read whole,
//! then printed.

use super::{engine_of, output, tables_sql};
use crate::output::{Failure, Format};
use futures::StreamExt as _;
use iadb::{DatabaseInterface, Error, ExecuteOutcome, QueryEvent, QueryStream};
use iadb_client::{
    Isolation, RemoteDatabase, Transaction, TransactionOptions,
    script::{ScriptDialect, ends_statement, split_statements},
};
use rustyline::{DefaultEditor, error::ReadlineError};
use std::io::Write;

const HELP: &str = "\
Statements end with `;` and may span lines. BEGIN ... COMMIT (or ROLLBACK)
runs the statements between them in one transaction.
  \\dt                      list tables
  \\format [table|json|csv] show or set the output format
  \\q                       quit (an open transaction is rolled back)
  \\?                       this help";

/// The history file: `$IADB_HISTORY` (empty: none), else
/// `~/.iadb_history`.
fn history_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("IADB_HISTORY") {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(path.into()),
        None => {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".iadb_history"))
        }
    }
}

/// What a statement of the shell is: transaction control it handles
/// itself, or SQL for the server.
#[derive(Debug, PartialEq)]
enum Control {
    Begin(TransactionOptions),
    Commit,
    Rollback,
    Sql,
}

/// Reads `BEGIN`/`START TRANSACTION` (with `READ ONLY`, `READ WRITE`,
/// `ISOLATION LEVEL ...`, SQLite's `DEFERRED`/`IMMEDIATE`/`EXCLUSIVE`),
/// `COMMIT`/`END` and `ROLLBACK`/`ABORT` (not `ROLLBACK TO`, which is SQL).
fn control(sql: &str) -> Result<Control, Error> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let modes = match words.as_slice() {
        ["BEGIN", "TRANSACTION" | "WORK", rest @ ..] | ["START", "TRANSACTION", rest @ ..] => rest,
        ["BEGIN", rest @ ..] => rest,
        ["COMMIT" | "END"] | ["COMMIT" | "END", "TRANSACTION" | "WORK"] => {
            return Ok(Control::Commit);
        }
        ["ROLLBACK" | "ABORT"] | ["ROLLBACK" | "ABORT", "TRANSACTION" | "WORK"] => {
            return Ok(Control::Rollback);
        }
        _ => return Ok(Control::Sql),
    };
    let mut options = TransactionOptions::default();
    let mut i = 0;
    while i < modes.len() {
        match &modes[i..] {
            ["DEFERRED", ..] => i += 1,
            ["IMMEDIATE" | "EXCLUSIVE", ..] => {
                options.immediate = true;
                i += 1;
            }
            ["TRANSACTION", ..] if i == 1 => i += 1,
            ["READ", "ONLY", ..] => {
                options.read_only = true;
                i += 2;
            }
            ["READ", "WRITE", ..] => i += 2,
            ["ISOLATION", "LEVEL", "READ", "COMMITTED", ..] => {
                options.isolation = Isolation::ReadCommitted;
                i += 4;
            }
            ["ISOLATION", "LEVEL", "REPEATABLE", "READ", ..] => {
                options.isolation = Isolation::RepeatableRead;
                i += 4;
            }
            ["ISOLATION", "LEVEL", "SERIALIZABLE", ..] => {
                options.isolation = Isolation::Serializable;
                i += 3;
            }
            ["ISOLATION", "LEVEL", "SNAPSHOT", ..] => {
                options.isolation = Isolation::Snapshot;
                i += 3;
            }
            _ => {
                return Err(Error::invalid_argument(format!(
                    "the shell cannot open a transaction with `{}`: use READ ONLY, READ WRITE, \
                     ISOLATION LEVEL ..., DEFERRED or IMMEDIATE",
                    modes[i..].join(" ")
                )));
            }
        }
    }
    Ok(Control::Begin(options))
}

/// The shell's state between lines.
struct Shell<'a, W: Write> {
    db: &'a RemoteDatabase,
    out: &'a mut W,
    engine: String,
    dialect: ScriptDialect,
    format: Format,
    tx: Option<Transaction>,
}

impl<W: Write> Shell<'_, W> {
    fn prompt(&self, continued: bool) -> &'static str {
        match (self.tx.is_some(), continued) {
            (false, false) => "iadb=> ",
            (false, true) => "iadb-> ",
            (true, false) => "iadb*> ",
            (true, true) => "iadb*-> ",
        }
    }

    /// A `\` command; `false` to quit.
    async fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("\\q" | "\\quit"), _) => return Ok(false),
            (Some("\\?" | "\\help"), _) => writeln!(self.out, "{HELP}")?,
            (Some("\\dt"), _) => {
                let rows = match self.tx.as_mut() {
                    Some(tx) => tx.fetch_all(tables_sql(&self.engine), &[]).await,
                    None => self.db.fetch_all(tables_sql(&self.engine), &[]).await,
                };
                for row in rows? {
                    if let Some(name) = row.get_index(0) {
                        writeln!(self.out, "{name}")?;
                    }
                }
            }
            (Some("\\format"), None) => writeln!(self.out, "format: {}", format_name(self.format))?,
            (Some("\\format"), Some(name)) => {
                self.format = match name {
                    "table" => Format::Table,
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    other => {
                        return Err(Error::invalid_argument(format!(
                            "unknown format `{other}` (table, json or csv)"
                        ))
                        .into());
                    }
                };
                writeln!(self.out, "format: {name}")?;
            }
            (Some(other), _) => {
                return Err(Error::invalid_argument(format!(
                    "unknown command `{other}` (\\? lists them)"
                ))
                .into());
            }
            (None, _) => {}
        }
        Ok(true)
    }

    /// Runs one statement: transaction control here, SQL on the server.
    async fn statement(&mut self, sql: &str) -> Result<(), Failure> {
        match (control(sql)?, self.tx.take()) {
            (Control::Begin(_), Some(tx)) => {
                self.tx = Some(tx);
                writeln!(
                    self.out,
                    "a transaction is already open (COMMIT or ROLLBACK it)"
                )?;
            }
            (Control::Begin(options), None) => {
                self.tx = Some(self.db.transaction(options).await?);
                writeln!(self.out, "BEGIN")?;
            }
            (Control::Commit, Some(tx)) => {
                tx.commit().await?;
                writeln!(self.out, "COMMIT")?;
            }
            (Control::Rollback, Some(tx)) => {
                tx.rollback().await?;
                writeln!(self.out, "ROLLBACK")?;
            }
            (Control::Commit | Control::Rollback, None) => {
                writeln!(self.out, "no transaction is open")?;
            }
            (Control::Sql, Some(mut tx)) => {
                let result = tx.execute_query(sql, &[]).await;
                match result {
                    Ok(result) => {
                        self.tx = Some(tx);
                        let outcome = ExecuteOutcome {
                            rows_affected: result.rows_affected,
                            last_insert_id: result.last_insert_id,
                        };
                        let events = futures::stream::iter(
                            result
                                .rows
                                .into_iter()
                                .map(|row| Ok(QueryEvent::Row(row.values().to_vec())))
                                .chain(std::iter::once(Ok(QueryEvent::Done(outcome)))),
                        )
                        .boxed();
                        self.print(&result.columns, events).await?;
                    }
                    Err(e) => {
                        // The server rolled the transaction back and ended
                        // its stream.
                        writeln!(self.out, "ROLLBACK (the transaction was rolled back)")?;
                        return Err(e.into());
                    }
                }
            }
            (Control::Sql, None) => {
                let QueryStream { columns, events } = self.db.query_write(sql, &[]).await?;
                self.print(&columns, events).await?;
            }
        }
        Ok(())
    }

    async fn print(
        &mut self,
        columns: &[iadb::Column],
        events: futures::stream::BoxStream<'_, iadb::Result<QueryEvent>>,
    ) -> Result<(), Failure> {
        let printed = output::print_stream(
            &mut *self.out,
            self.format,
            columns,
            events,
            &mut output::NoProgress,
        )
        .await?;
        if columns.is_empty() {
            let outcome = printed.outcome.unwrap_or_default();
            writeln!(self.out, "{}", output::affected_line(&outcome))?;
        }
        Ok(())
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Table => "table",
        Format::Json => "json",
        Format::Csv => "csv",
    }
}

/// Prints a failed statement's error on stderr; the shell goes on.
fn report(failure: Failure) -> Result<(), Failure> {
    match failure {
        Failure::Call(e) => {
            match e.code() {
                Some(code) => eprintln!("ERROR: {} ({}, {code})", e.message(), e.kind()),
                None => eprintln!("ERROR: {} ({})", e.message(), e.kind()),
            }
            Ok(())
        }
        other => Err(other),
    }
}

/// Runs the shell until `\q` or end of input (Ctrl-D). Ctrl-C clears the
/// statement being typed; while a statement runs it stops that statement.
pub async fn run(
    db: &RemoteDatabase,
    server: &str,
    out: &mut impl Write,
    format: Format,
) -> Result<(), Failure> {
    let engine = engine_of(db).await?;
    let mut shell = Shell {
        db,
        out,
        dialect: ScriptDialect::for_engine(&engine),
        engine,
        format,
        tx: None,
    };
    let mut editor = DefaultEditor::new()
        .map_err(|e| Error::internal(format!("cannot start the line editor: {e}")))?;
    let history = history_path();
    if let Some(path) = &history {
        // A history file that does not exist yet is not an error.
        let _ = editor.load_history(path);
    }
    writeln!(
        shell.out,
        "iadb shell: {} at {} (\\? for help, \\q to quit)",
        shell.engine, server
    )?;
    let mut buffer = String::new();
    loop {
        shell.out.flush()?;
        let prompt = shell.prompt(!buffer.is_empty());
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await
        .map_err(|e| Error::internal(format!("the line editor stopped: {e}")))?;
        editor = returned;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::internal(format!("cannot read a line: {e}")).into()),
        };
        if buffer.is_empty() && line.trim_start().starts_with('\\') {
            let _ = editor.add_history_entry(line.trim());
            match shell.command(line.trim()).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(failure) => {
                    report(failure)?;
                    continue;
                }
            }
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if !ends_statement(&buffer, shell.dialect) {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(text.trim());
        for sql in split_statements(&text, shell.dialect) {
            let in_transaction = shell.tx.is_some();
            let ran = tokio::select! {
                ran = shell.statement(&sql) => ran,
                _ = tokio::signal::ctrl_c() => {
                    // The call is dropped, which stops it on the server; a
                    // Transaction dropped with it is rolled back.
                    let why = if in_transaction {
                        "cancelled (Ctrl-C); the transaction was rolled back"
                    } else {
                        "cancelled (Ctrl-C)"
                    };
                    Err(Error::new(iadb::ErrorKind::Cancelled, why).into())
                }
            };
            if let Err(failure) = ran {
                report(failure)?;
                // The rest of the line is not run after an error.
                break;
            }
        }
    }
    if let Some(tx) = shell.tx.take() {
        tx.rollback().await?;
        writeln!(shell.out, "ROLLBACK (the open transaction was rolled back)")?;
    }
    shell.out.flush()?;
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised() {
        assert_eq!(
            control("BEGIN").unwrap(),
            Control::Begin(Default::default())
        );
        assert_eq!(
            control("begin transaction;").unwrap(),
            Control::Begin(Default::default())
        );
        let Control::Begin(o) = control("START TRANSACTION READ ONLY").unwrap() else {
            panic!("not a begin")
        };
        assert!(o.read_only);
        let Control::Begin(o) = control("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY").unwrap()
        else {
            panic!("not a begin")
        };
        assert_eq!(o.isolation, Isolation::Serializable);
        assert!(o.read_only);
        let Control::Begin(o) = control("BEGIN IMMEDIATE").unwrap() else {
            panic!("not a begin")
        };
        assert!(o.immediate);
        assert_eq!(control("COMMIT").unwrap(), Control::Commit);
        assert_eq!(control("end;").unwrap(), Control::Commit);
        assert_eq!(control("ROLLBACK WORK").unwrap(), Control::Rollback);
        assert_eq!(control("ROLLBACK TO SAVEPOINT a").unwrap(), Control::Sql);
        assert_eq!(control("SELECT 1").unwrap(), Control::Sql);
        assert!(control("BEGIN DISTRIBUTED").is_err());
    }
}
