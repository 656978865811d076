//! Splitting a script into statements (`iadb batch`, `iadb tx`): on `;`
//! outside string literals, quoted identifiers, comments and dollar-quoted
//! bodies, following the lexical rules of the engine that will run it.
//!
//! Like the server's migration splitter, a compound body whose inner `;` is
//! not hidden in a literal (SQLite `CREATE TRIGGER ... BEGIN ...; END`,
//! MySQL stored programs) is split at that `;` too; write PostgreSQL
//! function bodies with dollar quotes.

/// Lexical rules of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptDialect {
    /// SQLite and D1: `'...'` strings; `"..."`, `` `...` `` and `[...]`
    /// identifiers; `--` and `/* */` comments.
    Sqlite,
    /// PostgreSQL and DuckDB: `'...'` and `E'...'` strings, `"..."`
    /// identifiers, `--` and nesting `/* */` comments, `$tag$` quotes.
    Postgres,
    /// MySQL/MariaDB: `'...'` and `"..."` strings with backslash escapes,
    /// `` `...` `` identifiers, `#`, `-- ` and `/* */` comments.
    MySql,
}

impl ScriptDialect {
    /// The dialect of an engine as the server names it (`Health`'s
    /// `engine`); an engine this client does not know reads as SQLite.
    pub fn for_engine(engine: &str) -> Self {
        match engine.parse::<iadb::DatabaseType>() {
            Ok(kind) => match kind.spec().dialect {
                iadb::Dialect::Postgres | iadb::Dialect::DuckDb => ScriptDialect::Postgres,
                iadb::Dialect::MySql => ScriptDialect::MySql,
                iadb::Dialect::Sqlite => ScriptDialect::Sqlite,
            },
            Err(_) => ScriptDialect::Sqlite,
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The statements of `script`, trimmed, in order; pieces that hold only
/// whitespace and comments are left out. An unterminated literal or
/// comment runs to the end (the engine reports it).
pub fn split_statements(script: &str, dialect: ScriptDialect) -> Vec<String> {
    let (mut statements, rest) = split(script, dialect);
    statements.extend(rest);
    statements
}

/// Whether `script` ends its last statement: it holds code, and after its
/// last `;` (outside literals, quoted names and comments) only whitespace
/// and comments follow. An open literal or comment is not an end: the
/// shell reads more lines.
pub fn ends_statement(script: &str, dialect: ScriptDialect) -> bool {
    let (statements, rest) = split(script, dialect);
    !statements.is_empty() && rest.is_none()
}

/// The statements of `script` ended by `;`, and the code after the last
/// one, if any (not ended).
fn split(script: &str, dialect: ScriptDialect) -> (Vec<String>, Option<String>) {
    let bytes = script.as_bytes();
    let at = |i: usize| bytes.get(i).copied();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut has_code = false;
    let mut i = 0;
    // Every branch below moves `i` past at least one byte, and only ever
    // stops on an ASCII byte or the end, so slices are on char boundaries.
    while let Some(b) = at(i) {
        let pg = dialect == ScriptDialect::Postgres;
        let my = dialect == ScriptDialect::MySql;
        match b {
            b';' => {
                if has_code {
                    statements.push(script[start..i].trim().to_owned());
                }
                has_code = false;
                i += 1;
                start = i;
            }
            _ if is_space(b) => i += 1,
            b'-' if at(i + 1) == Some(b'-')
                && (!my || at(i + 2).is_none_or(|c| c <= b' ' || c == 0x7f)) =>
            {
                i = line_end(bytes, i + 2);
            }
            b'#' if my => i = line_end(bytes, i + 1),
            b'/' if at(i + 1) == Some(b'*') => {
                i = block_comment_end(bytes, i + 2, pg);
            }
            b'\'' => {
                has_code = true;
                i = quoted(bytes, i + 1, b'\'', my);
            }
            b'"' => {
                has_code = true;
                i = quoted(bytes, i + 1, b'"', my);
            }
            b'`' if !pg => {
                has_code = true;
                i = quoted(bytes, i + 1, b'`', false);
            }
            b'[' if dialect == ScriptDialect::Sqlite => {
                has_code = true;
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(bytes.len(), |p| i + p + 1);
            }
            b'$' if pg => {
                has_code = true;
                i = match dollar_tag_end(bytes, i) {
                    Some(body) => {
                        let tag = &bytes[i..body];
                        bytes[body..]
                            .windows(tag.len())
                            .position(|w| w == tag)
                            .map_or(bytes.len(), |p| body + p + tag.len())
                    }
                    None => i + 1,
                };
            }
            _ if is_word(b) => {
                has_code = true;
                let mut end = i + 1;
                while at(end).is_some_and(is_word) {
                    end += 1;
                }
                // PostgreSQL's escape string: a lone `E` before a quote.
                if pg && end == i + 1 && matches!(b, b'E' | b'e') && at(end) == Some(b'\'') {
                    end = quoted(bytes, end + 1, b'\'', true);
                }
                i = end;
            }
            _ => {
                has_code = true;
                i += 1;
            }
        }
    }
    let rest = has_code.then(|| script[start..].trim().to_owned());
    (statements, rest)
}

/// The end of a line comment whose text starts at `i` (at its newline).
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i.min(bytes.len())..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| i + p)
}

/// The end of a block comment whose text starts at `i`.
fn block_comment_end(bytes: &[u8], mut i: usize, nests: bool) -> usize {
    let mut depth = 1usize;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        if bytes[i] == b'*' && next == Some(b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else if nests && bytes[i] == b'/' && next == Some(b'*') {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The end of a literal whose body starts at `i`: a doubled `close` stands
/// for itself, and with `backslash` a `\` escapes the next byte.
fn quoted(bytes: &[u8], mut i: usize, close: u8, backslash: bool) -> usize {
    while let Some(&b) = bytes.get(i) {
        if backslash && b == b'\\' {
            i += 2;
        } else if b == close {
            if bytes.get(i + 1) == Some(&close) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// If `$tag$` (or `$$`) starts at `i`, the index just past it. A tag never
/// starts with a digit, so `$1` is a parameter.
fn dollar_tag_end(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if bytes
        .get(j)
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b >= 0x80)
    {
        j += 1;
        while bytes
            .get(j)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        {
            j += 1;
        }
    }
    (bytes.get(j) == Some(&b'$')).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::{ScriptDialect::*, *};

    fn split(script: &str, dialect: ScriptDialect) -> Vec<String> {
        split_statements(script, dialect)
    }

    #[test]
    fn splits_on_top_level_semicolons_and_drops_empty_pieces() {
        for d in [Sqlite, Postgres, MySql] {
            assert_eq!(
                split(" SELECT 1 ;;\n INSERT INTO t VALUES (2);  ", d),
                ["SELECT 1", "INSERT INTO t VALUES (2)"],
                "{d:?}"
            );
            assert!(
                split(" ; -- nothing\n ; /* at all */ ", d).is_empty(),
                "{d:?}"
            );
            assert_eq!(split("SELECT 1", d), ["SELECT 1"], "{d:?}");
        }
    }

    #[test]
    fn semicolons_in_literals_identifiers_and_comments_do_not_split() {
        for d in [Sqlite, Postgres, MySql] {
            assert_eq!(
                split("INSERT INTO t VALUES ('a;b', 'it''s;'); SELECT 2", d),
                ["INSERT INTO t VALUES ('a;b', 'it''s;')", "SELECT 2"],
                "{d:?}"
            );
            assert_eq!(
                split("SELECT 1 -- a; comment\n; SELECT /* x; y */ 2", d),
                ["SELECT 1 -- a; comment", "SELECT /* x; y */ 2"],
                "{d:?}"
            );
            assert_eq!(
                split("SELECT \"a;b\" FROM t; SELECT 3", d),
                ["SELECT \"a;b\" FROM t", "SELECT 3"],
                "{d:?}"
            );
        }
        assert_eq!(
            split("SELECT `a;b`, [c;d] FROM t; SELECT 1", Sqlite),
            ["SELECT `a;b`, [c;d] FROM t", "SELECT 1"]
        );
        assert_eq!(
            split("SELECT `a;b` FROM t # x; y\n; SELECT 1", MySql),
            ["SELECT `a;b` FROM t # x; y", "SELECT 1"]
        );
    }

    #[test]
    fn backslashes_follow_the_dialect() {
        // MySQL: `\'` escapes the quote, so the string runs on past `;`.
        assert_eq!(
            split(r"SELECT 'a\';b'; SELECT 2", MySql),
            [r"SELECT 'a\';b'", "SELECT 2"]
        );
        // SQLite and PostgreSQL: a backslash is an ordinary character.
        for d in [Sqlite, Postgres] {
            assert_eq!(
                split(r"SELECT 'C:\'; SELECT 2", d),
                [r"SELECT 'C:\'", "SELECT 2"],
                "{d:?}"
            );
        }
        // PostgreSQL's E'' strings escape with backslashes.
        assert_eq!(
            split(r"SELECT E'a\';b'; SELECT 2", Postgres),
            [r"SELECT E'a\';b'", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quotes_and_nested_comments_on_postgres() {
        let function = "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ \
                        LANGUAGE plpgsql";
        assert_eq!(
            split(&format!("{function}; SELECT f()"), Postgres),
            [function, "SELECT f()"]
        );
        assert_eq!(
            split("SELECT $$a;b$$; SELECT $1", Postgres),
            ["SELECT $$a;b$$", "SELECT $1"]
        );
        assert_eq!(
            split("SELECT /* a /* b; */ c; */ 1; SELECT 2", Postgres),
            ["SELECT /* a /* b; */ c; */ 1", "SELECT 2"]
        );
        // SQLite's comments do not nest: the first `*/` ends it.
        assert_eq!(
            split("SELECT /* a /* b */ 1; SELECT 2", Sqlite),
            ["SELECT /* a /* b */ 1", "SELECT 2"]
        );
    }

    #[test]
    fn mysql_dash_comments_need_a_space() {
        // `1--1` is `1 - -1` on MySQL, not a comment.
        assert_eq!(
            split("SELECT 1--1; SELECT 2", MySql),
            ["SELECT 1--1", "SELECT 2"]
        );
        assert_eq!(split("SELECT 1 -- x; y", MySql), ["SELECT 1 -- x; y"]);
    }

    #[test]
    fn unterminated_literals_run_to_the_end() {
        assert_eq!(
            split("SELECT 'a; SELECT 2", Sqlite),
            ["SELECT 'a; SELECT 2"]
        );
        assert_eq!(split("SELECT 1; /* a; b", Sqlite), ["SELECT 1"]);
    }

    #[test]
    fn non_ascii_text_is_kept_whole() {
        assert_eq!(
            split("INSERT INTO t VALUES ('é;ü'); SELECT 'ß'", Postgres),
            ["INSERT INTO t VALUES ('é;ü')", "SELECT 'ß'"]
        );
    }

    #[test]
    fn a_statement_ends_at_a_semicolon_outside_literals_and_comments() {
        for d in [Sqlite, Postgres, MySql] {
            assert!(ends_statement("SELECT 1;", d), "{d:?}");
            assert!(ends_statement("SELECT 1;  -- done\n", d), "{d:?}");
            assert!(ends_statement("SELECT 1; SELECT 2;", d), "{d:?}");
            assert!(!ends_statement("SELECT 1", d), "{d:?}");
            assert!(!ends_statement("SELECT 1; SELECT", d), "{d:?}");
            assert!(!ends_statement("SELECT 'a;", d), "{d:?}: open literal");
            assert!(!ends_statement("SELECT 1 /* ; */", d), "{d:?}");
            assert!(!ends_statement("", d), "{d:?}");
            assert!(!ends_statement(" ; ", d), "{d:?}: no code");
        }
        assert!(!ends_statement("SELECT $$ a; $$", Postgres));
        assert!(ends_statement("SELECT $$ a; $$;", Postgres));
    }
}
