//! Dialect-aware lexing of `?` placeholders and `;` statement separators.
//!
//! Every engine behind iadb receives SQL with `?` positional placeholders, but
//! a `?` inside a string literal, a quoted identifier, a comment or a
//! dollar-quoted body is just text. This module finds the placeholders that
//! are real for a given dialect so the server can reject a wrong parameter
//! count before touching an engine, rewrite `?` to PostgreSQL's `$1..$n`, and
//! split migration scripts on top-level `;`. It is deliberately only a lexer:
//! malformed SQL (for example an unterminated literal, which here simply runs
//! to the end of the input) is left for the engine to report.

use std::borrow::Cow;
use std::fmt::Write as _;

pub use iadb::Dialect;

/// Number of real `?` placeholders in `sql`. For Postgres a `??` is an escaped literal `?` operator and counts 0.
pub fn count_placeholders(sql: &str, dialect: Dialect) -> usize {
    // Most statements carry no placeholder at all; skip lexing them.
    if !sql.contains('?') {
        return 0;
    }
    Lexer::new(sql, dialect)
        .filter(|token| token.kind == Kind::Placeholder)
        .count()
}

/// PostgreSQL: rewrites each real `?` to `$1..$n` in order and each `??` to a single `?`.
/// Returns the new text and n. Text with no `?` at all is returned borrowed and unchanged (so SQL already written with `$1` passes through untouched).
///
/// More generally the text is returned borrowed whenever nothing needs
/// rewriting, e.g. when every `?` sits inside a literal or comment.
pub fn rewrite_numbered(sql: &str) -> (Cow<'_, str>, usize) {
    if !sql.contains('?') {
        return (Cow::Borrowed(sql), 0);
    }
    let mut out = String::new();
    let mut copied = 0;
    let mut changed = false;
    let mut n = 0;
    for token in Lexer::new(sql, Dialect::Postgres) {
        match token.kind {
            Kind::Placeholder => {
                if !changed {
                    // Each `$k` is at most a few bytes longer than its `?`.
                    out.reserve(sql.len() + 16);
                    changed = true;
                }
                out.push_str(&sql[copied..token.start]);
                n += 1;
                // Writing into a String cannot fail.
                let _ = write!(out, "${n}");
                copied = token.end;
            }
            Kind::EscapedQuestion => {
                if !changed {
                    out.reserve(sql.len());
                    changed = true;
                }
                out.push_str(&sql[copied..token.start]);
                out.push('?');
                copied = token.end;
            }
            _ => {}
        }
    }
    if !changed {
        return (Cow::Borrowed(sql), 0);
    }
    out.push_str(&sql[copied..]);
    (Cow::Owned(out), n)
}

/// Splits a script into statements on `;` outside literals/identifiers/comments/dollar bodies; each returned statement is trimmed, and empty ones (only whitespace and/or comments) are dropped.
///
/// Trimming removes SQL whitespace (ASCII space, tab, newline, carriage
/// return, vertical tab, form feed). Comments inside or around a statement
/// that also holds code are kept with it.
///
/// Compound bodies whose inner `;` is not hidden in a literal, such as SQLite
/// `CREATE TRIGGER ... BEGIN ...; END`, PostgreSQL `BEGIN ATOMIC ... END` or
/// MySQL stored programs, are split at those inner `;` too; write PostgreSQL
/// function bodies with dollar quotes instead.
pub fn split_statements(sql: &str, dialect: Dialect) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut has_code = false;
    for token in Lexer::new(sql, dialect) {
        match token.kind {
            Kind::Semicolon => {
                if has_code {
                    statements.push(trim_sql(&sql[start..token.start]));
                }
                start = token.end;
                has_code = false;
            }
            Kind::Whitespace | Kind::Comment => {}
            Kind::Placeholder | Kind::EscapedQuestion | Kind::Quoted | Kind::Code => {
                has_code = true;
            }
        }
    }
    if has_code {
        statements.push(trim_sql(&sql[start..]));
    }
    statements
}

/// What a call's SQL holds, as far as the checks made before it runs need
/// to know: how many top-level statements, and the first statement that
/// controls a transaction, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatementShape {
    /// Top-level statements (the `;`-separated pieces of a compound body,
    /// such as a trigger's `BEGIN ... END`, count as one with it).
    pub statements: usize,
    /// The leading words (upper-cased, e.g. `BEGIN`, `START TRANSACTION`,
    /// `SET autocommit`) of the first statement that begins, ends or
    /// marks a transaction.
    pub transaction_control: Option<String>,
    /// How to name the first statement that changes its connection's
    /// session state (`CREATE TEMP`, `SET`, `PREPARE`, `LISTEN`, `USE`,
    /// `ATTACH`, a session advisory lock, a SQLite `PRAGMA` that sets a
    /// connection's behaviour): state that stays with the connection after
    /// the call, for whoever gets it next.
    pub session_state: Option<String>,
}

/// Reads the top-level statements of `sql` and finds the ones that control a
/// transaction (`BEGIN`, `START TRANSACTION`, `COMMIT`, `END`, `ROLLBACK`,
/// `ABORT`, `SAVEPOINT`, `RELEASE`, MySQL `XA` and `SET autocommit`).
///
/// A statement that opens a compound body (`CREATE TRIGGER ... BEGIN`,
/// `BEGIN ATOMIC`, a MySQL stored program) runs until the `END` that closes
/// it, so the `;` inside the body do not start new statements and its
/// `COMMIT`s (inside a procedure) are not the caller's. MySQL's executable
/// comments (`/*! ... */`, MariaDB's `/*M! ... */`) are read as code.
pub fn statement_shape(sql: &str, dialect: Dialect) -> StatementShape {
    let mut reader = ShapeReader {
        dialect,
        shape: StatementShape::default(),
        depth: 0,
        piece: Piece::default(),
    };
    for token in Lexer::new(sql, dialect) {
        let text = &sql[token.start..token.end];
        match token.kind {
            Kind::Semicolon => reader.end_piece(),
            Kind::Whitespace => {}
            Kind::Comment => {
                if let Some(inner) = executable_comment(text, dialect) {
                    inner
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty())
                        .for_each(|word| reader.piece.word(word));
                }
            }
            Kind::Code => reader.piece.word(text),
            Kind::Placeholder | Kind::EscapedQuestion | Kind::Quoted => {
                reader.piece.has_code = true
            }
        }
    }
    reader.end_piece();
    reader.shape
}

/// The state of [`statement_shape`]'s walk.
struct ShapeReader {
    dialect: Dialect,
    shape: StatementShape,
    /// How many compound bodies (`BEGIN ... END`) the current piece is in.
    depth: usize,
    piece: Piece,
}

/// One `;`-separated piece of SQL, as far as it has been read.
#[derive(Default)]
struct Piece {
    has_code: bool,
    /// The first few words, upper-cased.
    words: Vec<String>,
    /// `BEGIN` words in it (each may open a compound body).
    begins: usize,
    mentions_autocommit: bool,
    /// A `=` or `(` (a SQLite `PRAGMA` that sets rather than reads).
    assigns: bool,
    /// A session-level lock function it calls (`pg_advisory_lock`,
    /// `GET_LOCK`).
    session_lock: Option<&'static str>,
}

impl Piece {
    fn word(&mut self, word: &str) {
        self.has_code = true;
        if word == "=" || word == "(" {
            self.assigns = true;
        }
        if !word.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
            return;
        }
        if self.session_lock.is_none() {
            self.session_lock = SESSION_LOCKS
                .iter()
                .copied()
                .find(|f| word.eq_ignore_ascii_case(f));
        }
        if word.eq_ignore_ascii_case("BEGIN") {
            self.begins += 1;
        }
        if word.eq_ignore_ascii_case("autocommit") {
            self.mentions_autocommit = true;
        }
        if self.words.len() < 4 {
            self.words.push(word.to_ascii_uppercase());
        }
    }

    fn first(&self) -> Option<&str> {
        self.words.first().map(String::as_str)
    }

    fn second(&self) -> Option<&str> {
        self.words.get(1).map(String::as_str)
    }
}

impl ShapeReader {
    fn end_piece(&mut self) {
        let piece = std::mem::take(&mut self.piece);
        if !piece.has_code {
            return;
        }
        if self.depth == 0 {
            self.shape.statements += 1;
            if self.shape.transaction_control.is_none() {
                self.shape.transaction_control = transaction_control(&piece, self.dialect);
            }
            if self.shape.session_state.is_none() && self.shape.transaction_control.is_none() {
                self.shape.session_state = session_state(&piece, self.dialect);
            }
            // Only a definition opens a body; a leading `BEGIN` here is a
            // transaction.
            if piece.first() == Some("CREATE") {
                self.depth += piece.begins;
            }
        } else {
            self.depth += piece.begins;
            let closes = piece.first() == Some("END")
                && !matches!(
                    piece.second(),
                    Some("IF" | "LOOP" | "WHILE" | "CASE" | "REPEAT" | "FOR")
                );
            if closes {
                self.depth -= 1;
            }
        }
    }
}

/// The text inside a MySQL executable comment (`/*!50001 ... */`,
/// `/*M!100100 ... */`), without its version number; `None` for any other
/// comment or dialect.
fn executable_comment(text: &str, dialect: Dialect) -> Option<&str> {
    if dialect != Dialect::MySql {
        return None;
    }
    let body = text
        .strip_prefix("/*!")
        .or_else(|| text.strip_prefix("/*M!"))?;
    let body = body.strip_suffix("*/").unwrap_or(body);
    Some(body.trim_start_matches(|c: char| c.is_ascii_digit()))
}

/// Whether a statement whose leading words are `words` controls a
/// transaction, and if so how to name it in an error.
fn transaction_control(piece: &Piece, dialect: Dialect) -> Option<String> {
    let first = piece.first()?;
    let second = piece.second();
    let named = match first {
        "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => first.to_owned(),
        "START" if second == Some("TRANSACTION") => "START TRANSACTION".to_owned(),
        // `END` and `ABORT` end a transaction in SQLite and PostgreSQL.
        "END" if dialect != Dialect::MySql => first.to_owned(),
        "ABORT" if matches!(dialect, Dialect::Postgres | Dialect::DuckDb) => first.to_owned(),
        "PREPARE" if second == Some("TRANSACTION") => "PREPARE TRANSACTION".to_owned(),
        "XA" if dialect == Dialect::MySql => first.to_owned(),
        // `SET autocommit = 0` leaves the connection inside a transaction.
        "SET" if dialect == Dialect::MySql && piece.mentions_autocommit => {
            "SET autocommit".to_owned()
        }
        _ => return None,
    };
    Some(named)
}

/// Functions that take a lock held by the session (not the transaction).
const SESSION_LOCKS: [&str; 5] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "GET_LOCK",
];

/// SQLite pragmas that set how one connection behaves (rather than the
/// database file, like `user_version` or `journal_mode`, or reading).
const SQLITE_CONNECTION_PRAGMAS: [&str; 20] = [
    "AUTOMATIC_INDEX",
    "BUSY_TIMEOUT",
    "CACHE_SIZE",
    "CACHE_SPILL",
    "CASE_SENSITIVE_LIKE",
    "CELL_SIZE_CHECK",
    "DEFER_FOREIGN_KEYS",
    "FOREIGN_KEYS",
    "IGNORE_CHECK_CONSTRAINTS",
    "LEGACY_ALTER_TABLE",
    "LOCKING_MODE",
    "MMAP_SIZE",
    "QUERY_ONLY",
    "READ_UNCOMMITTED",
    "RECURSIVE_TRIGGERS",
    "REVERSE_UNORDERED_SELECTS",
    "SECURE_DELETE",
    "SYNCHRONOUS",
    "TEMP_STORE",
    "TRUSTED_SCHEMA",
];

/// Whether a statement changes its connection's session state, and if so
/// how to name it in an error.
fn session_state(piece: &Piece, dialect: Dialect) -> Option<String> {
    let first = piece.first()?;
    let second = piece.second();
    let temp = |w: Option<&str>| matches!(w, Some("TEMP" | "TEMPORARY"));
    let named = match first {
        // CREATE TEMP ..., CREATE GLOBAL/LOCAL TEMP ..., CREATE OR REPLACE
        // TEMP ...
        "CREATE"
            if temp(second)
                || (matches!(second, Some("GLOBAL" | "LOCAL"))
                    && temp(piece.words.get(2).map(String::as_str)))
                || (second == Some("OR") && temp(piece.words.get(3).map(String::as_str))) =>
        {
            "CREATE TEMP".to_owned()
        }
        "SET" | "RESET" if dialect != Dialect::Sqlite => first.to_owned(),
        "PREPARE" | "EXECUTE" | "DEALLOCATE"
            if matches!(
                dialect,
                Dialect::Postgres | Dialect::MySql | Dialect::DuckDb
            ) =>
        {
            first.to_owned()
        }
        "LISTEN" | "UNLISTEN" if dialect == Dialect::Postgres => first.to_owned(),
        "USE" if matches!(dialect, Dialect::MySql | Dialect::DuckDb) => first.to_owned(),
        "ATTACH" | "DETACH" if matches!(dialect, Dialect::Sqlite | Dialect::DuckDb) => {
            first.to_owned()
        }
        "PRAGMA" if dialect == Dialect::Sqlite && piece.assigns => {
            // `PRAGMA name = value`, `PRAGMA schema.name = value`.
            let name = piece.words[1..]
                .iter()
                .find(|w| SQLITE_CONNECTION_PRAGMAS.contains(&w.as_str()))?;
            format!("PRAGMA {}", name.to_ascii_lowercase())
        }
        _ => return piece.session_lock.map(str::to_owned),
    };
    Some(named)
}

/// Longest statement fingerprint kept, in bytes; longer ones are cut at a
/// character boundary and end in `...`.
pub const FINGERPRINT_MAX_BYTES: usize = 240;

/// The shape of a statement, for logs, traces and metrics: string and number
/// literals and dollar-quoted bodies become `?`, comments go, runs of
/// whitespace become one space; keywords, identifiers (quoted ones too),
/// operators and placeholders stay. No value written into the SQL survives,
/// so two calls that differ only in their literals share one fingerprint.
pub fn fingerprint(sql: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(sql.len().min(FINGERPRINT_MAX_BYTES + 3));
    let mut space = false;
    // The last token written was a number (`?`), or a number then `.`: a
    // decimal `1.5` lexes as `1`, `.`, `5` and becomes one `?`.
    let mut after_number = false;
    let mut after_number_dot = false;
    let mut after_dollar = false;
    for token in Lexer::new(sql, dialect) {
        let text = &sql[token.start..token.end];
        let first = text.as_bytes().first().copied().unwrap_or(b' ');
        let is_number = token.kind == Kind::Code && first.is_ascii_digit();
        let piece = match token.kind {
            Kind::Whitespace | Kind::Comment => {
                space = !out.is_empty();
                after_number = false;
                after_number_dot = false;
                after_dollar = false;
                continue;
            }
            Kind::Code if text == "." && after_number && !space => {
                after_number = false;
                after_number_dot = true;
                continue;
            }
            Kind::Code if is_number && after_number_dot && !space => {
                after_number_dot = false;
                after_number = true;
                continue;
            }
            // `$1`: a numbered placeholder, not a literal.
            Kind::Code if is_number && after_dollar => text,
            Kind::Code if is_number => "?",
            Kind::Quoted if is_quoted_identifier(first, dialect) => text,
            Kind::Quoted => "?",
            _ => text,
        };
        after_number = is_number;
        after_number_dot = false;
        after_dollar = text == "$";
        if space {
            out.push(' ');
            space = false;
        }
        out.push_str(piece);
        if out.len() > FINGERPRINT_MAX_BYTES {
            let mut cut = FINGERPRINT_MAX_BYTES;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    out
}

/// Whether a quoted token starting with `first` is an identifier (kept in a
/// fingerprint) rather than a literal.
fn is_quoted_identifier(first: u8, dialect: Dialect) -> bool {
    match first {
        b'"' => dialect != Dialect::MySql,
        b'`' | b'[' => true,
        _ => false,
    }
}

/// Whitespace as the engines see it; all of them stop at ASCII, so a
/// non-ASCII space is part of an identifier rather than a separator.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim_sql(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

/// Bytes that continue an identifier or keyword. Every byte of a multi-byte
/// UTF-8 character is included, which both matches the engines (they accept
/// non-ASCII identifier characters) and guarantees that a word never ends in
/// the middle of a character.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_dollar_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_dollar_tag_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A real `?`.
    Placeholder,
    /// PostgreSQL `??`, which stands for a literal `?` operator.
    EscapedQuestion,
    Semicolon,
    Comment,
    Whitespace,
    /// String literal, quoted identifier or dollar-quoted body.
    Quoted,
    /// Keywords, identifiers, numbers and operators: anything else that the
    /// engine will parse.
    Code,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Splits SQL into tokens that cover the input without gaps. Only ASCII bytes
/// are ever delimiters and runs of non-ASCII bytes are never cut, so every
/// token boundary is a `char` boundary and slicing `sql` with it is safe.
struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
    dialect: Dialect,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str, dialect: Dialect) -> Self {
        Self {
            sql,
            pos: 0,
            dialect,
        }
    }

    fn pg_like(&self) -> bool {
        matches!(self.dialect, Dialect::Postgres | Dialect::DuckDb)
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.sql.as_bytes().get(i).copied()
    }

    /// Lexes the token starting at `i` (whose first byte is `b`) and returns
    /// its kind and end.
    fn lex_at(&self, i: usize, b: u8) -> (Kind, usize) {
        let d = self.dialect;
        match b {
            b'?' if d == Dialect::Postgres && self.byte(i + 1) == Some(b'?') => {
                (Kind::EscapedQuestion, i + 2)
            }
            b'?' => (Kind::Placeholder, i + 1),
            b';' => (Kind::Semicolon, i + 1),
            _ if is_space(b) => (Kind::Whitespace, self.skip_while(i + 1, is_space)),
            b'\'' => {
                let backslash = d == Dialect::MySql;
                (Kind::Quoted, self.quoted(i + 1, b'\'', backslash, true))
            }
            b'"' => {
                // In MySQL `"` delimits a string, elsewhere an identifier.
                let backslash = d == Dialect::MySql;
                (Kind::Quoted, self.quoted(i + 1, b'"', backslash, true))
            }
            b'`' if matches!(d, Dialect::MySql | Dialect::Sqlite) => {
                (Kind::Quoted, self.quoted(i + 1, b'`', false, true))
            }
            b'[' if d == Dialect::Sqlite => (Kind::Quoted, self.quoted(i + 1, b']', false, false)),
            b'-' if self.byte(i + 1) == Some(b'-') && self.opens_dash_comment(i) => {
                (Kind::Comment, self.line_end(i + 2))
            }
            b'#' if d == Dialect::MySql => (Kind::Comment, self.line_end(i + 1)),
            b'/' if self.byte(i + 1) == Some(b'*') => {
                (Kind::Comment, self.block_comment_end(i + 2))
            }
            b'$' if self.pg_like() => match self.dollar_delimiter_end(i) {
                Some(body_start) => (Kind::Quoted, self.dollar_body_end(i, body_start)),
                // `$1` parameters and stray `$` are ordinary code.
                None => (Kind::Code, i + 1),
            },
            // Words absorb `$` as PostgreSQL identifiers do, so a `$` right
            // after a word character never reaches the dollar-quote arm.
            _ if is_word(b) => {
                let end = self.skip_while(i + 1, is_word);
                // Only a lone `E` is an escape-string prefix; `type'x'` is the
                // word `type` followed by an ordinary string.
                if self.pg_like()
                    && end == i + 1
                    && matches!(b, b'E' | b'e')
                    && self.byte(end) == Some(b'\'')
                {
                    (Kind::Quoted, self.quoted(end + 1, b'\'', true, true))
                } else {
                    (Kind::Code, end)
                }
            }
            _ => (Kind::Code, i + 1),
        }
    }

    fn skip_while(&self, mut i: usize, pred: fn(u8) -> bool) -> usize {
        while self.byte(i).is_some_and(pred) {
            i += 1;
        }
        i
    }

    /// MySQL only treats `--` as a comment when a space or control character
    /// (or the end of input) follows, so that `a--b` still means `a - -b`.
    fn opens_dash_comment(&self, i: usize) -> bool {
        if self.dialect != Dialect::MySql {
            return true;
        }
        self.byte(i + 2).is_none_or(|b| b <= b' ' || b == 0x7f)
    }

    /// End of a literal whose body starts at `i`. `backslash` makes `\` escape
    /// the following byte; `doubled` makes a doubled `close` stand for itself.
    /// Unterminated literals run to the end of the input.
    fn quoted(&self, mut i: usize, close: u8, backslash: bool, doubled: bool) -> usize {
        let len = self.sql.len();
        while let Some(b) = self.byte(i) {
            if backslash && b == b'\\' {
                // Skipping one byte is enough even before a multi-byte
                // character: its continuation bytes are never delimiters.
                i += 2;
            } else if b == close {
                if doubled && self.byte(i + 1) == Some(close) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        len
    }

    /// End of a line comment whose text starts at `i`; the newline itself is
    /// left as whitespace. PostgreSQL's lexer also stops at a bare `\r`.
    fn line_end(&self, i: usize) -> usize {
        let stops_at_cr = self.pg_like();
        let rest = &self.sql.as_bytes()[i..];
        rest.iter()
            .position(|&b| b == b'\n' || (stops_at_cr && b == b'\r'))
            .map_or(self.sql.len(), |p| i + p)
    }

    /// End of a block comment whose text starts at `i`. PostgreSQL and DuckDB
    /// nest block comments, so `/* /* */ ? */` hides the `?`; SQLite and MySQL
    /// end at the first `*/`.
    fn block_comment_end(&self, mut i: usize) -> usize {
        let nests = self.pg_like();
        let mut depth = 1usize;
        while let Some(b) = self.byte(i) {
            let next = self.byte(i + 1);
            if b == b'*' && next == Some(b'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else if nests && b == b'/' && next == Some(b'*') {
                depth += 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        self.sql.len()
    }

    /// If a dollar-quote delimiter `$tag$` (or `$$`) starts at `i`, returns
    /// the index just past it. The tag cannot start with a digit, which is
    /// what keeps `$1` a parameter.
    fn dollar_delimiter_end(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        if self.byte(j).is_some_and(is_dollar_tag_start) {
            j = self.skip_while(j + 1, is_dollar_tag_continue);
        }
        (self.byte(j) == Some(b'$')).then_some(j + 1)
    }

    fn dollar_body_end(&self, start: usize, body_start: usize) -> usize {
        let delimiter = &self.sql[start..body_start];
        self.sql[body_start..]
            .find(delimiter)
            .map_or(self.sql.len(), |p| body_start + p + delimiter.len())
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let start = self.pos;
        let b = self.byte(start)?;
        let (kind, end) = self.lex_at(start, b);
        // Every branch consumes at least one byte, so lexing always advances.
        debug_assert!(end > start);
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Dialect; 4] = [
        Dialect::Sqlite,
        Dialect::Postgres,
        Dialect::MySql,
        Dialect::DuckDb,
    ];

    fn pg(sql: &str) -> String {
        rewrite_numbered(sql).0.into_owned()
    }

    // ---- statement shapes -----------------------------------------------

    fn shape(sql: &str, dialect: Dialect) -> (usize, Option<String>) {
        let StatementShape {
            statements,
            transaction_control,
            ..
        } = statement_shape(sql, dialect);
        (statements, transaction_control)
    }

    fn session(sql: &str, dialect: Dialect) -> Option<String> {
        statement_shape(sql, dialect).session_state
    }

    #[test]
    fn shape_finds_statements_that_change_session_state() {
        use Dialect::*;
        let found: &[(&str, &[Dialect], &str)] = &[
            ("CREATE TEMP TABLE t (x INT)", &ALL, "CREATE TEMP"),
            ("create temporary table t (x int)", &ALL, "CREATE TEMP"),
            (
                "CREATE GLOBAL TEMPORARY TABLE t (x INT)",
                &[Postgres],
                "CREATE TEMP",
            ),
            (
                "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
                &[Postgres, DuckDb],
                "CREATE TEMP",
            ),
            (
                "SELECT 1; CREATE TEMP VIEW v AS SELECT 1",
                &ALL,
                "CREATE TEMP",
            ),
            ("SET TIME ZONE 'UTC'", &[Postgres, MySql, DuckDb], "SET"),
            ("SET search_path TO other", &[Postgres], "SET"),
            ("SET @x = 1", &[MySql], "SET"),
            ("/*!40101 SET NAMES utf8 */", &[MySql], "SET"),
            ("RESET ALL", &[Postgres, DuckDb], "RESET"),
            ("PREPARE p AS SELECT 1", &[Postgres], "PREPARE"),
            ("DEALLOCATE p", &[Postgres, MySql], "DEALLOCATE"),
            ("LISTEN chan", &[Postgres], "LISTEN"),
            ("USE other", &[MySql, DuckDb], "USE"),
            ("ATTACH 'x.db' AS x", &[Sqlite, DuckDb], "ATTACH"),
            (
                "PRAGMA foreign_keys = OFF",
                &[Sqlite],
                "PRAGMA foreign_keys",
            ),
            (
                "PRAGMA main.cache_size = 10",
                &[Sqlite],
                "PRAGMA cache_size",
            ),
            (
                "PRAGMA recursive_triggers(1)",
                &[Sqlite],
                "PRAGMA recursive_triggers",
            ),
            (
                "SELECT pg_advisory_lock(1)",
                &[Postgres],
                "pg_advisory_lock",
            ),
            ("SELECT GET_LOCK('x', 1)", &[MySql], "GET_LOCK"),
        ];
        for (sql, dialects, named) in found {
            for dialect in *dialects {
                assert_eq!(
                    session(sql, *dialect).as_deref(),
                    Some(*named),
                    "{sql} ({dialect:?})"
                );
            }
        }
        let clean: &[&str] = &[
            "SELECT 1",
            "CREATE TABLE temp (x INT)",
            "CREATE TABLE t (temp INT)",
            "INSERT INTO t VALUES ('SET x = 1')",
            "UPDATE t SET x = 1",
            "PRAGMA foreign_keys",
            "PRAGMA table_info(t)",
            "PRAGMA user_version = 3",
            "SELECT pg_advisory_xact_lock(1)",
            "-- SET x = 1\nSELECT 1",
        ];
        for sql in clean {
            for dialect in ALL {
                assert_eq!(session(sql, dialect), None, "{sql} ({dialect:?})");
            }
        }
        // Transaction control is named as such, not as session state.
        assert_eq!(session("SET autocommit = 0", MySql), None);
    }

    #[test]
    fn shape_counts_top_level_statements() {
        for dialect in ALL {
            assert_eq!(shape("SELECT ?", dialect), (1, None));
            assert_eq!(shape("SELECT ?;", dialect), (1, None));
            assert_eq!(shape("SELECT ?; -- done\n", dialect), (1, None));
            assert_eq!(shape("SELECT ?; DROP TABLE t", dialect), (2, None));
            assert_eq!(shape("SELECT ';'; SELECT 2", dialect), (2, None));
            assert_eq!(shape("", dialect), (0, None));
            assert_eq!(shape(" ;; ; ", dialect), (0, None));
            assert_eq!(shape("-- only a comment", dialect), (0, None));
            assert_eq!(shape("/* a */ ; /* b */", dialect), (0, None));
        }
    }

    #[test]
    fn shape_finds_transaction_control_anywhere() {
        let cases: &[(&str, &str)] = &[
            ("BEGIN", "BEGIN"),
            ("begin immediate", "BEGIN"),
            ("  /* c */ BEGIN TRANSACTION", "BEGIN"),
            ("COMMIT", "COMMIT"),
            ("rollback to savepoint a", "ROLLBACK"),
            ("SAVEPOINT a", "SAVEPOINT"),
            ("RELEASE SAVEPOINT a", "RELEASE"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("SELECT 1; BEGIN", "BEGIN"),
            ("INSERT INTO t VALUES (1); COMMIT;", "COMMIT"),
        ];
        for dialect in ALL {
            for (sql, named) in cases {
                assert_eq!(
                    shape(sql, dialect).1.as_deref(),
                    Some(*named),
                    "{sql} ({dialect:?})"
                );
            }
            // Words in literals, identifiers and comments are not statements.
            assert_eq!(shape("SELECT 'BEGIN'", dialect).1, None);
            assert_eq!(shape("-- BEGIN\nSELECT 1", dialect).1, None);
            assert_eq!(shape("SELECT begin_at FROM t", dialect).1, None);
            assert_eq!(shape("UPDATE t SET committed = 1", dialect).1, None);
            assert_eq!(shape("START REPLICA", dialect).1, None);
        }
        assert_eq!(shape("END", Dialect::Sqlite).1.as_deref(), Some("END"));
        assert_eq!(
            shape("ABORT", Dialect::Postgres).1.as_deref(),
            Some("ABORT")
        );
        assert_eq!(
            shape("PREPARE TRANSACTION 'x'", Dialect::Postgres)
                .1
                .as_deref(),
            Some("PREPARE TRANSACTION")
        );
        assert_eq!(
            shape("XA START 'x'", Dialect::MySql).1.as_deref(),
            Some("XA")
        );
        assert_eq!(
            shape("SET autocommit = 0", Dialect::MySql).1.as_deref(),
            Some("SET autocommit")
        );
        assert_eq!(
            shape("SET @@session.autocommit = 0", Dialect::MySql)
                .1
                .as_deref(),
            Some("SET autocommit")
        );
        // MySQL runs the text of an executable comment.
        assert_eq!(
            shape("/*!40101 START TRANSACTION */", Dialect::MySql)
                .1
                .as_deref(),
            Some("START TRANSACTION")
        );
        assert_eq!(
            shape("/*M!100100 BEGIN */", Dialect::MySql).1.as_deref(),
            Some("BEGIN")
        );
        assert_eq!(
            shape("/*!40101 SET NAMES utf8 */", Dialect::MySql),
            (1, None)
        );
        // ... and only MySQL does.
        assert_eq!(shape("/*! BEGIN */ SELECT 1", Dialect::Sqlite).1, None);
    }

    #[test]
    fn shape_keeps_a_compound_body_in_its_statement() {
        let trigger = "CREATE TRIGGER tr AFTER INSERT ON a BEGIN \
                       INSERT INTO b VALUES (1); UPDATE c SET n = CASE WHEN n > 0 THEN 1 ELSE 2 END; \
                       END";
        assert_eq!(shape(trigger, Dialect::Sqlite), (1, None));
        assert_eq!(
            shape(&format!("{trigger}; SELECT 1; COMMIT"), Dialect::Sqlite),
            (3, Some("COMMIT".to_owned()))
        );
        let atomic =
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END";
        assert_eq!(shape(atomic, Dialect::Postgres), (1, None));
        let procedure = "CREATE PROCEDURE p() BEGIN DECLARE x INT; \
                         IF x THEN BEGIN SELECT 1; END; END IF; START TRANSACTION; COMMIT; END";
        assert_eq!(shape(procedure, Dialect::MySql), (1, None));
        assert_eq!(
            shape(&format!("{procedure}; BEGIN"), Dialect::MySql),
            (2, Some("BEGIN".to_owned()))
        );
    }

    proptest! {
        #[test]
        fn shape_never_panics_and_counts_at_most_the_semicolons(sql in "\\PC{0,200}") {
            for dialect in ALL {
                let found = statement_shape(&sql, dialect);
                prop_assert!(found.statements <= sql.matches(';').count() + 1);
            }
        }
    }

    // ---- fingerprints ---------------------------------------------------

    #[test]
    fn fingerprint_hides_literals_and_keeps_shape() {
        assert_eq!(
            fingerprint(
                "SELECT  a, \"b c\" FROM t -- who\nWHERE name = 'hunter2' AND n > 42.5 AND x = ?",
                Dialect::Postgres
            ),
            "SELECT a, \"b c\" FROM t WHERE name = ? AND n > ? AND x = ?"
        );
        assert_eq!(
            fingerprint(
                "INSERT INTO t1 VALUES (1, 'x''y', $$body$$, E'\\n')",
                Dialect::Postgres
            ),
            "INSERT INTO t1 VALUES (?, ?, ?, ?)"
        );
        assert_eq!(
            fingerprint("SELECT $1, $2 FROM t", Dialect::Postgres),
            "SELECT $1, $2 FROM t"
        );
        // MySQL: "..." is a string, `...` an identifier.
        assert_eq!(
            fingerprint(
                "SELECT `k` FROM t WHERE v = \"secret\" # note",
                Dialect::MySql
            ),
            "SELECT `k` FROM t WHERE v = ?"
        );
        assert_eq!(
            fingerprint("SELECT x'00ff', [col] FROM t", Dialect::Sqlite),
            "SELECT x?, [col] FROM t"
        );
        // Two calls that differ only in literals share a fingerprint.
        assert_eq!(
            fingerprint("SELECT * FROM t WHERE id = 1", Dialect::Sqlite),
            fingerprint("SELECT * FROM t WHERE id = 99", Dialect::Sqlite)
        );
    }

    #[test]
    fn fingerprint_is_bounded_and_cut_on_a_character() {
        let long = format!("SELECT {} FROM t", "é, ".repeat(500));
        let fp = fingerprint(&long, Dialect::Sqlite);
        assert!(fp.len() <= FINGERPRINT_MAX_BYTES + 3, "{}", fp.len());
        assert!(fp.ends_with("..."));
    }

    proptest! {
        #[test]
        fn fingerprint_never_shows_a_string_literal(secret in "[a-z]{12}") {
            for dialect in ALL {
                let sql = format!("SELECT * FROM t WHERE v = '{secret}'");
                let fp = fingerprint(&sql, dialect);
                prop_assert!(!fp.contains(&secret), "{fp}");
            }
        }
    }

    // ---- PostgreSQL rewriting -------------------------------------------

    #[test]
    fn pg_question_mark_in_string_with_doubled_quote_is_text() {
        assert_eq!(pg("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
    }

    #[test]
    fn pg_question_mark_in_quoted_identifier_is_text() {
        assert_eq!(
            pg(r#"SELECT "col?" FROM t WHERE a = ?"#),
            r#"SELECT "col?" FROM t WHERE a = $1"#
        );
        assert_eq!(pg(r#"SELECT "a""?" , ?"#), r#"SELECT "a""?" , $1"#);
    }

    #[test]
    fn pg_question_mark_in_line_comment_is_text() {
        assert_eq!(pg("SELECT 1 -- ?\n, ?"), "SELECT 1 -- ?\n, $1");
        assert_eq!(pg("SELECT ? -- ?\r?"), "SELECT $1 -- ?\r$2");
    }

    #[test]
    fn pg_question_mark_in_block_comment_is_text() {
        assert_eq!(pg("SELECT /* ? */ ?"), "SELECT /* ? */ $1");
    }

    #[test]
    fn pg_block_comments_nest() {
        assert_eq!(pg("SELECT /* /* ? */ ? */ ?"), "SELECT /* /* ? */ ? */ $1");
        assert_eq!(count_placeholders("/* /* ? */ ? */ ?", Dialect::DuckDb), 1);
    }

    #[test]
    fn pg_question_mark_in_dollar_quotes_is_text() {
        assert_eq!(pg("SELECT $$ ? $$, ?"), "SELECT $$ ? $$, $1");
        assert_eq!(
            pg("SELECT $tag$ ? $$ ? $tag$, ?"),
            "SELECT $tag$ ? $$ ? $tag$, $1"
        );
    }

    #[test]
    fn pg_dollar_after_identifier_or_digit_does_not_open_quote() {
        // `a$b$` is one identifier, so the `?` after it is real.
        assert_eq!(pg("SELECT a$b$ ?"), "SELECT a$b$ $1");
        assert_eq!(pg("SELECT $1, ? $2"), "SELECT $1, $1 $2");
    }

    #[test]
    fn pg_escape_string_backslash_escapes_quote() {
        assert_eq!(pg(r"SELECT E'\'?', ?"), r"SELECT E'\'?', $1");
        assert_eq!(pg(r"SELECT e'\\', ?"), r"SELECT e'\\', $1");
        // `type` is a longer identifier, so its string is a standard one in
        // which the backslash is plain text and the literal ends after it.
        assert_eq!(pg(r"SELECT type'\', ?"), r"SELECT type'\', $1");
    }

    #[test]
    fn pg_double_question_mark_becomes_single() {
        assert_eq!(
            rewrite_numbered("SELECT j ?? 'k'"),
            (Cow::Owned("SELECT j ? 'k'".to_owned()), 0)
        );
        assert_eq!(count_placeholders("SELECT j ?? 'k'", Dialect::Postgres), 0);
        assert_eq!(pg("a ??? b"), "a ?$1 b");
    }

    #[test]
    fn pg_numbered_sql_passes_through_borrowed() {
        let sql = "SELECT $1, $2";
        let (out, n) = rewrite_numbered(sql);
        assert!(matches!(out, Cow::Borrowed(s) if std::ptr::eq(s, sql)));
        assert_eq!(n, 0);
    }

    #[test]
    fn pg_only_hidden_question_marks_stay_borrowed() {
        let (out, n) = rewrite_numbered("SELECT '?' /* ? */");
        assert!(matches!(out, Cow::Borrowed("SELECT '?' /* ? */")));
        assert_eq!(n, 0);
    }

    #[test]
    fn pg_placeholders_numbered_in_order() {
        assert_eq!(
            rewrite_numbered("SELECT ?, ?"),
            (Cow::Owned("SELECT $1, $2".to_owned()), 2)
        );
    }

    #[test]
    fn pg_mixed_placeholder_and_escaped_operator() {
        assert_eq!(
            rewrite_numbered("WHERE a = ? AND b ?? 'k'"),
            (Cow::Owned("WHERE a = $1 AND b ? 'k'".to_owned()), 1),
        );
    }

    #[test]
    fn pg_twelve_placeholders() {
        let sql = format!("VALUES ({})", ["?"; 12].join(","));
        let expected = format!(
            "VALUES ({})",
            (1..=12)
                .map(|k| format!("${k}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(rewrite_numbered(&sql), (Cow::Owned(expected), 12));
    }

    #[test]
    fn pg_unicode_around_placeholders() {
        assert_eq!(
            rewrite_numbered("SELECT 'é?' AS ✓, ?𝄞? FROM \"𝄞?\" -- ✓?\n"),
            (
                Cow::Owned("SELECT 'é?' AS ✓, $1𝄞$2 FROM \"𝄞?\" -- ✓?\n".to_owned()),
                2
            ),
        );
        // Non-ASCII characters are identifier characters, so a `$` after one
        // does not open a dollar quote.
        assert_eq!(pg("é$$ ?"), "é$$ $1");
        // Non-ASCII dollar tags are accepted, as PostgreSQL does.
        assert_eq!(pg("$é$ ? $é$ ?"), "$é$ ? $é$ $1");
    }

    #[test]
    fn pg_unterminated_constructs_run_to_end() {
        assert_eq!(rewrite_numbered("SELECT ?, 'abc ?").1, 1);
        assert_eq!(rewrite_numbered("SELECT ?, $$ ?").1, 1);
        assert_eq!(rewrite_numbered("SELECT ? /* /* */ ?").1, 1);
        assert_eq!(rewrite_numbered(r"SELECT ?, E'\").1, 1);
        assert_eq!(rewrite_numbered("SELECT ?, \"é").1, 1);
    }

    // ---- Counting per dialect -------------------------------------------

    #[test]
    fn count_postgres_and_duckdb() {
        let sql = r#"SELECT ?, '?', "?", $$?$$, $t$?$t$, E'\'?', /* /* ? */ ? */ -- ?
            ?"#;
        assert_eq!(count_placeholders(sql, Dialect::Postgres), 2);
        assert_eq!(count_placeholders(sql, Dialect::DuckDb), 2);
        // Only PostgreSQL has the `??` escape.
        assert_eq!(count_placeholders("a ?? b", Dialect::Postgres), 0);
        assert_eq!(count_placeholders("a ?? b", Dialect::DuckDb), 2);
        assert_eq!(count_placeholders("a ?? b", Dialect::Sqlite), 2);
        assert_eq!(count_placeholders("a ?? b", Dialect::MySql), 2);
    }

    #[test]
    fn count_mysql() {
        assert_eq!(count_placeholders(r"SELECT '\'?'", Dialect::MySql), 0);
        assert_eq!(count_placeholders(r#"SELECT "\"?", ?"#, Dialect::MySql), 1);
        assert_eq!(count_placeholders("SELECT 'it''s ?', ?", Dialect::MySql), 1);
        assert_eq!(count_placeholders(r"SELECT '\\', ?", Dialect::MySql), 1);
        assert_eq!(count_placeholders("SELECT ? # ?\n, ?", Dialect::MySql), 2);
        assert_eq!(count_placeholders("SELECT `a?``?`, ?", Dialect::MySql), 1);
        assert_eq!(count_placeholders("SELECT ? -- ?\n", Dialect::MySql), 1);
        assert_eq!(count_placeholders("SELECT ? --\t?", Dialect::MySql), 1);
        assert_eq!(count_placeholders("SELECT ? --", Dialect::MySql), 1);
        // Without whitespace after it, `--` is two minus signs.
        assert_eq!(count_placeholders("SELECT 1--?", Dialect::MySql), 1);
        // MySQL block comments do not nest.
        assert_eq!(count_placeholders("/* /* ? */ ? */", Dialect::MySql), 1);
        // No dollar quotes in MySQL.
        assert_eq!(count_placeholders("SELECT $$ ? $$", Dialect::MySql), 1);
    }

    #[test]
    fn count_sqlite() {
        assert_eq!(count_placeholders("SELECT [a?], ?", Dialect::Sqlite), 1);
        assert_eq!(
            count_placeholders("SELECT `a?`, \"b?\", 'c?', ?", Dialect::Sqlite),
            1
        );
        assert_eq!(
            count_placeholders("SELECT 'it''s ?', ?", Dialect::Sqlite),
            1
        );
        // Backslash is plain text in SQLite strings.
        assert_eq!(count_placeholders(r"SELECT '\', ?", Dialect::Sqlite), 1);
        assert_eq!(count_placeholders("SELECT ? -- ?\n, ?", Dialect::Sqlite), 2);
        // Only PostgreSQL ends a line comment at a bare carriage return.
        assert_eq!(count_placeholders("SELECT 1 -- \r?", Dialect::Sqlite), 0);
        assert_eq!(count_placeholders("SELECT 1 # \r?", Dialect::MySql), 0);
        assert_eq!(count_placeholders("/* /* ? */ ? */", Dialect::Sqlite), 1);
        assert_eq!(count_placeholders("SELECT $$ ? $$", Dialect::Sqlite), 1);
    }

    #[test]
    fn brackets_and_backticks_are_code_in_postgres() {
        assert_eq!(count_placeholders("SELECT [?], `?`", Dialect::Postgres), 2);
        assert_eq!(count_placeholders("SELECT [?], `?`", Dialect::DuckDb), 2);
        assert_eq!(count_placeholders("SELECT [?]", Dialect::MySql), 1);
    }

    #[test]
    fn hash_is_not_a_comment_outside_mysql() {
        assert_eq!(count_placeholders("SELECT # ?", Dialect::Postgres), 1);
        assert_eq!(count_placeholders("SELECT # ?", Dialect::Sqlite), 1);
        assert_eq!(count_placeholders("SELECT # ?", Dialect::MySql), 0);
    }

    #[test]
    fn empty_input() {
        for d in ALL {
            assert_eq!(count_placeholders("", d), 0);
            assert!(split_statements("", d).is_empty());
        }
        assert_eq!(rewrite_numbered(""), (Cow::Borrowed(""), 0));
    }

    // ---- Splitting ------------------------------------------------------

    #[test]
    fn split_ignores_semicolons_in_literals_and_comments() {
        let sql = "CREATE TABLE t(a TEXT DEFAULT ';'); INSERT INTO t VALUES ('a;b'); -- c;\n";
        let expected = [
            "CREATE TABLE t(a TEXT DEFAULT ';')",
            "INSERT INTO t VALUES ('a;b')",
        ];
        for d in ALL {
            assert_eq!(split_statements(sql, d), expected, "{d:?}");
        }
    }

    #[test]
    fn split_keeps_postgres_function_body_whole() {
        let sql = "CREATE FUNCTION f() RETURNS int AS $$\n  SELECT 1;\n  SELECT 2;\n$$ LANGUAGE sql;\n\
                   CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;";
        assert_eq!(
            split_statements(sql, Dialect::Postgres),
            [
                "CREATE FUNCTION f() RETURNS int AS $$\n  SELECT 1;\n  SELECT 2;\n$$ LANGUAGE sql",
                "CREATE FUNCTION g() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql",
            ],
        );
    }

    #[test]
    fn split_drops_comment_only_pieces() {
        let sql = "-- header\n;\nSELECT 1; /* a; */ ;; \n -- trailer ; \n /* x */";
        for d in ALL {
            assert_eq!(split_statements(sql, d), ["SELECT 1"], "{d:?}");
        }
    }

    #[test]
    fn split_keeps_comments_attached_to_code() {
        assert_eq!(
            split_statements(
                "-- make t\nCREATE TABLE t(a); SELECT 1 -- done",
                Dialect::Sqlite
            ),
            ["-- make t\nCREATE TABLE t(a)", "SELECT 1 -- done"],
        );
    }

    #[test]
    fn split_dialect_specific_quoting() {
        assert_eq!(
            split_statements(r"SELECT 'a\';b'; SELECT `c;d`; # e;f", Dialect::MySql),
            [r"SELECT 'a\';b'", "SELECT `c;d`"],
        );
        assert_eq!(
            split_statements("SELECT [a;b]; SELECT 2", Dialect::Sqlite),
            ["SELECT [a;b]", "SELECT 2"],
        );
        assert_eq!(
            split_statements("SELECT /* /* ; */ ; */ 1; SELECT 2", Dialect::Postgres),
            ["SELECT /* /* ; */ ; */ 1", "SELECT 2"],
        );
    }

    #[test]
    fn split_without_trailing_semicolon() {
        assert_eq!(
            split_statements("  SELECT 1 ;\n\tSELECT 'é'  ", Dialect::DuckDb),
            ["SELECT 1", "SELECT 'é'"],
        );
    }

    // ---- Property tests -------------------------------------------------

    /// What a generated fragment is, so the expected results can be computed
    /// independently of the lexer under test.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum FragKind {
        Inert,
        Comment,
        Placeholder,
        DoubleQuestion,
        Semicolon,
    }

    #[derive(Clone, Debug)]
    struct Frag {
        text: String,
        kind: FragKind,
    }

    fn frag(kind: FragKind) -> impl Fn(String) -> Frag + Clone {
        move |text| Frag {
            text,
            kind: kind.clone(),
        }
    }

    /// Text that might confuse a lexer: every delimiter of every dialect,
    /// multi-byte characters, `?` and `;`.
    const NASTY: &str = "[a-z ?;'\"`\\[\\]$#*/\\\\-é✓𝄞\r\n]{0,12}";

    fn nasty_without(excluded: &'static [char]) -> impl Strategy<Value = String> {
        NASTY.prop_map(move |s| s.chars().filter(|c| !excluded.contains(c)).collect())
    }

    fn double(s: &str, quote: char) -> String {
        s.replace(quote, &format!("{quote}{quote}"))
    }

    fn backslash_escape(s: &str, quote: char) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if c == '\\' || c == quote {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    fn fragment(d: Dialect) -> BoxedStrategy<Frag> {
        let mut options: Vec<BoxedStrategy<Frag>> = vec![
            prop::sample::select(vec![
                "SELECT", "a", "t1", "E", "e", "x_y", "é", "✓", "𝄞", "=", ",", "(", ")", "1", "$1",
                "+", "-", "*", "/",
            ])
            .prop_map(|w| Frag {
                text: w.to_owned(),
                kind: FragKind::Inert,
            })
            .boxed(),
            Just(Frag {
                text: "?".to_owned(),
                kind: FragKind::Placeholder,
            })
            .boxed(),
            Just(Frag {
                text: "??".to_owned(),
                kind: FragKind::DoubleQuestion,
            })
            .boxed(),
            Just(Frag {
                text: ";".to_owned(),
                kind: FragKind::Semicolon,
            })
            .boxed(),
            // Block comments, with `*` and `/` removed from the body so it
            // cannot close or (in PostgreSQL) reopen early.
            nasty_without(&['*', '/'])
                .prop_map(|s| format!("/*{s}*/"))
                .prop_map(frag(FragKind::Comment))
                .boxed(),
        ];
        match d {
            Dialect::MySql => {
                options.push(
                    nasty_without(&['\n'])
                        .prop_map(|s| format!("-- {s}\n"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
                options.push(
                    nasty_without(&['\n'])
                        .prop_map(|s| format!("#{s}\n"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
                // Without whitespace after it, `--` is two minus signs.
                options.push(
                    Just(Frag {
                        text: "1--1".to_owned(),
                        kind: FragKind::Inert,
                    })
                    .boxed(),
                );
                // Strings escape their quote either way MySQL allows.
                options.push(
                    (NASTY, prop::sample::select(vec!['\'', '"']), any::<bool>())
                        .prop_map(|(s, q, by_backslash)| {
                            let body = if by_backslash {
                                backslash_escape(&s, q)
                            } else {
                                double(&s.replace('\\', "\\\\"), q)
                            };
                            format!("{q}{body}{q}")
                        })
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    NASTY
                        .prop_map(|s| format!("`{}`", double(&s, '`')))
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                // Unnested block comment: an inner `/*` is plain text.
                options.push(
                    nasty_without(&['*', '/'])
                        .prop_map(|s| format!("/* /* {s} */"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
            }
            Dialect::Sqlite => {
                options.push(
                    nasty_without(&['\n'])
                        .prop_map(|s| format!("--{s}\n"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
                options.push(
                    (NASTY, prop::sample::select(vec!['\'', '"', '`']))
                        .prop_map(|(s, q)| format!("{q}{}{q}", double(&s, q)))
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    nasty_without(&[']'])
                        .prop_map(|s| format!("[{s}]"))
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    nasty_without(&['*', '/'])
                        .prop_map(|s| format!("/* /* {s} */"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
            }
            Dialect::Postgres | Dialect::DuckDb => {
                options.push(
                    nasty_without(&['\n', '\r'])
                        .prop_map(|s| format!("--{s}\n"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
                options.push(
                    (NASTY, prop::sample::select(vec!['\'', '"']))
                        .prop_map(|(s, q)| format!("{q}{}{q}", double(&s, q)))
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    (NASTY, prop::sample::select(vec!["E", "e"]), any::<bool>())
                        .prop_map(|(s, prefix, by_backslash)| {
                            let body = if by_backslash {
                                backslash_escape(&s, '\'')
                            } else {
                                double(&s.replace('\\', "\\\\"), '\'')
                            };
                            format!("{prefix}'{body}'")
                        })
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    (nasty_without(&['$']), "([A-Za-z_][A-Za-z0-9_]{0,4})?")
                        .prop_map(|(s, tag)| format!("${tag}${s}${tag}$"))
                        .prop_map(frag(FragKind::Inert))
                        .boxed(),
                );
                options.push(
                    (nasty_without(&['*', '/']), nasty_without(&['*', '/']))
                        .prop_map(|(a, b)| format!("/*{a}/*{b}*/{a}*/"))
                        .prop_map(frag(FragKind::Comment))
                        .boxed(),
                );
            }
        }
        prop::strategy::Union::new(options).boxed()
    }

    fn script(d: Dialect) -> impl Strategy<Value = Vec<(Frag, &'static str)>> {
        prop::collection::vec(
            (
                fragment(d),
                prop::sample::select(vec![" ", "\n", "\t", " \n\t"]),
            ),
            0..24,
        )
    }

    fn dialect() -> impl Strategy<Value = Dialect> {
        prop::sample::select(ALL.to_vec())
    }

    fn join(frags: &[(Frag, &str)]) -> String {
        frags
            .iter()
            .map(|(f, sep)| format!("{}{sep}", f.text))
            .collect()
    }

    fn all_functions(sql: &str, d: Dialect) {
        let n = count_placeholders(sql, d);
        let pieces = split_statements(sql, d);
        let per_piece: usize = pieces.iter().map(|p| count_placeholders(p, d)).sum();
        assert_eq!(per_piece, n, "placeholders lost by splitting {sql:?}");
        for piece in &pieces {
            assert!(!piece.is_empty());
            assert_eq!(*piece, trim_sql(piece));
        }
        let mut end = 0;
        for token in Lexer::new(sql, d) {
            assert_eq!(token.start, end);
            assert!(sql.is_char_boundary(token.end));
            end = token.end;
        }
        assert_eq!(end, sql.len());
        if d == Dialect::Postgres {
            let (out, numbered) = rewrite_numbered(sql);
            assert_eq!(numbered, n);
            if numbered == 0 && !sql.contains("??") {
                assert_eq!(out, sql);
            }
        }
    }

    proptest! {
        #[test]
        fn prop_count_matches_generated_placeholders(
            (d, frags) in dialect().prop_flat_map(|d| (Just(d), script(d)))
        ) {
            let sql = join(&frags);
            let expected: usize = frags
                .iter()
                .map(|(f, _)| match f.kind {
                    FragKind::Placeholder => 1,
                    FragKind::DoubleQuestion if d == Dialect::Postgres => 0,
                    FragKind::DoubleQuestion => 2,
                    _ => 0,
                })
                .sum();
            prop_assert_eq!(count_placeholders(&sql, d), expected, "{:?}", sql);
        }

        #[test]
        fn prop_rewrite_only_touches_placeholders(frags in script(Dialect::Postgres)) {
            let sql = join(&frags);
            let mut expected = String::new();
            let mut k = 0;
            for (f, sep) in &frags {
                match f.kind {
                    FragKind::Placeholder => {
                        k += 1;
                        expected.push_str(&format!("${k}"));
                    }
                    FragKind::DoubleQuestion => expected.push('?'),
                    _ => expected.push_str(&f.text),
                }
                expected.push_str(sep);
            }
            let (out, n) = rewrite_numbered(&sql);
            prop_assert_eq!(n, k);
            prop_assert_eq!(&*out, expected.as_str());
            if expected == sql {
                prop_assert!(matches!(out, Cow::Borrowed(_)));
            }
        }

        #[test]
        fn prop_split_on_generated_semicolons(
            (d, frags) in dialect().prop_flat_map(|d| (Just(d), script(d)))
        ) {
            let mut expected = Vec::new();
            let mut current = String::new();
            let mut has_code = false;
            for (f, sep) in &frags {
                if f.kind == FragKind::Semicolon {
                    if has_code {
                        expected.push(trim_sql(&current).to_owned());
                    }
                    current.clear();
                    has_code = false;
                    current.push_str(sep);
                } else {
                    has_code |= f.kind != FragKind::Comment;
                    current.push_str(&f.text);
                    current.push_str(sep);
                }
            }
            if has_code {
                expected.push(trim_sql(&current).to_owned());
            }
            let sql = join(&frags);
            prop_assert_eq!(split_statements(&sql, d), expected);
        }

        #[test]
        fn prop_never_panics_on_arbitrary_text(sql in any::<String>(), d in dialect()) {
            all_functions(&sql, d);
        }

        #[test]
        fn prop_never_panics_on_sql_like_text(
            sql in "([a-zE ?;'\"`\\[\\]$#*/\\\\\r\n-]|é|✓|𝄞){0,64}",
            d in dialect(),
        ) {
            all_functions(&sql, d);
        }
    }
}
