//! Finding migration files and turning them into validated [`Migration`]s.
//!
//! Files come from a folder ([`read_folder`], [`parse_folders`]), from the
//! binary (system migrations) or from a `Migrate` request; all of them go
//! through [`parse`], so every source gets the same rules: the
//! `V{version}__{description}.sql` / `U{version}__{description}.sql` names,
//! numeric versions without duplicates, UTF-8 text, no empty scripts, undo
//! files matched to their migration. A `.sql` file that breaks a rule is an
//! error naming it, never skipped: a migration that silently does not run is
//! worse than a deploy that stops. Nothing here touches an engine.

use super::migration::{
    Migration, MigrationType, NO_TRANSACTION_MARKER, UndoScript, normalize_text,
    starts_with_no_transaction_marker, tagged_sha256,
};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One migration file as found: its name and raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    /// The file name without any folder, e.g. `"V001__create_users.sql"`.
    pub filename: String,
    /// The file's bytes, unchanged (BOM and CRLF are dealt with by [`parse`]).
    pub content: Vec<u8>,
}

/// Why discovery refused the files; every variant names the file(s).
///
/// Files read from a folder are named by their path, files handed to
/// [`parse`] directly by their file name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A `.sql` file whose name is not a migration or undo file name.
    #[error(
        "migration file `{file}` is not named V{{version}}__{{description}}.sql \
         or U{{version}}__{{description}}.sql ({reason})"
    )]
    BadName {
        /// The file.
        file: String,
        /// Which part of the name is wrong.
        reason: &'static str,
    },
    /// Two migration files (or two undo files) with the same version number.
    #[error("migration files `{first}` and `{second}` both have version {version}")]
    DuplicateVersion {
        /// The version both files have.
        version: u64,
        /// The file met first (in name order, or the earlier folder).
        first: String,
        /// The other file.
        second: String,
    },
    /// The file's bytes are not UTF-8.
    #[error("migration file `{file}` is not valid UTF-8 (line {line}): {source}")]
    NotUtf8 {
        /// The file.
        file: String,
        /// The line of the first invalid byte, from 1.
        line: usize,
        /// Where the bytes stop being UTF-8.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The file has no statement: only whitespace, comments or `;`.
    #[error(
        "migration file `{file}` is empty: it has no SQL statement, only whitespace or comments"
    )]
    Empty {
        /// The file.
        file: String,
    },
    /// An undo file with no migration file of its version beside it.
    #[error("undo file `{file}` has no migration file V{version}__*.sql beside it")]
    UndoWithoutMigration {
        /// The undo file.
        file: String,
        /// Its version.
        version: u64,
    },
    /// A `-- iadb:` comment that is not `-- iadb:no-transaction` on line 1.
    #[error(
        "migration file `{file}` line {line}: `{text}` is not an iadb directive here \
         (the only one is `{NO_TRANSACTION_MARKER}`, alone on the first line)"
    )]
    BadDirective {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// The line as written, trimmed.
        text: String,
    },
    /// A folder or file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// Reads every `.sql` file in a folder (not recursive; other extensions
/// ignored, `.sql` that does not match the pattern is an error, never silently
/// skipped). Returned in file name order.
///
/// The extension is matched case-insensitively so that `V1__x.SQL` is
/// reported as a bad name instead of being ignored; sub-folders are ignored,
/// symbolic links to files are followed. Errors name the file by its path.
pub fn read_folder(path: &Path) -> Result<Vec<MigrationFile>, SourceError> {
    let io_error = |at: &Path| {
        let at = at.to_path_buf();
        move |source| SourceError::Io { path: at, source }
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(io_error(path))? {
        let entry_path = entry.map_err(io_error(path))?.path();
        if entry_path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("sql"))
        {
            entries.push(entry_path);
        }
    }
    // Directory order differs between file systems; sorting makes "the first
    // bad file" the same one on every machine.
    entries.sort();

    let mut files = Vec::with_capacity(entries.len());
    for entry_path in entries {
        if !fs::metadata(&entry_path)
            .map_err(io_error(&entry_path))?
            .is_file()
        {
            continue;
        }
        let label = entry_path.display().to_string();
        let Some(filename) = entry_path
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
        else {
            return Err(SourceError::BadName {
                file: label,
                reason: "the name is not UTF-8",
            });
        };
        parse_name(&filename).map_err(|reason| SourceError::BadName {
            file: label,
            reason,
        })?;
        let content = fs::read(&entry_path).map_err(io_error(&entry_path))?;
        files.push(MigrationFile { filename, content });
    }
    Ok(files)
}

/// Parses and validates a set of files of one type: names, versions (digits,
/// compared as numbers; `V001` and `V1` both present is
/// [`SourceError::DuplicateVersion`] naming both files), UTF-8, not empty
/// (only whitespace/comments counts as empty), undo files matched to their V
/// file by version. Sorted by version.
///
/// Undo files follow the same rules as migrations (an empty undo file is an
/// error too: a rollback that deletes the tracking row without changing the
/// schema would leave the two out of step).
pub fn parse(
    files: Vec<MigrationFile>,
    migration_type: MigrationType,
) -> Result<Vec<Migration>, SourceError> {
    let labelled = files
        .into_iter()
        .map(|file| (file.filename.clone(), file))
        .collect();
    parse_labelled(labelled, migration_type)
}

/// App migrations from several folders: a version present in two folders is
/// [`SourceError::DuplicateVersion`] naming both paths. Sorted by version.
///
/// An undo file must sit in the same folder as its migration. Errors name
/// files by their path.
pub fn parse_folders(paths: &[PathBuf]) -> Result<Vec<Migration>, SourceError> {
    let mut by_version: BTreeMap<u64, (String, Migration)> = BTreeMap::new();
    for folder in paths {
        let labelled = read_folder(folder)?
            .into_iter()
            .map(|file| (folder.join(&file.filename).display().to_string(), file))
            .collect();
        for migration in parse_labelled(labelled, MigrationType::App)? {
            let label = folder.join(&migration.filename).display().to_string();
            match by_version.entry(migration.version) {
                Entry::Vacant(slot) => {
                    slot.insert((label, migration));
                }
                Entry::Occupied(slot) => {
                    return Err(SourceError::DuplicateVersion {
                        version: migration.version,
                        first: slot.get().0.clone(),
                        second: label,
                    });
                }
            }
        }
    }
    Ok(by_version
        .into_values()
        .map(|(_, migration)| migration)
        .collect())
}

/// Whether a file name is a migration (`V`) or an undo script (`U`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Migration,
    Undo,
}

/// The parts of a valid file name.
#[derive(Debug, PartialEq, Eq)]
struct ParsedName<'a> {
    kind: FileKind,
    version: u64,
    version_text: &'a str,
    description: &'a str,
}

/// Splits `name` as `^([VU])(\d+)__(.+)\.sql$` would (ASCII digits only, the
/// version fitting a `u64`), or says which part is wrong.
fn parse_name(name: &str) -> Result<ParsedName<'_>, &'static str> {
    // A name sent in a request could try to point elsewhere, and control
    // characters would corrupt logs and the tracking table.
    if name.contains(['/', '\\']) {
        return Err("the name contains a path separator");
    }
    if name.contains(char::is_control) {
        return Err("the name contains a control character");
    }
    let stem = name
        .strip_suffix(".sql")
        .ok_or("the name does not end in lower-case `.sql`")?;
    let (kind, rest) = if let Some(rest) = stem.strip_prefix('V') {
        (FileKind::Migration, rest)
    } else if let Some(rest) = stem.strip_prefix('U') {
        (FileKind::Undo, rest)
    } else {
        return Err("the name does not start with an upper-case `V` or `U`");
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (version_text, after_version) = rest.split_at(digits);
    if version_text.is_empty() {
        return Err("no version digits after the `V` or `U`");
    }
    let description = after_version
        .strip_prefix("__")
        .ok_or("expected `__` after the version")?;
    if description.is_empty() {
        return Err("the description is empty");
    }
    let version = version_text
        .parse()
        .map_err(|_| "the version does not fit in 64 bits")?;
    Ok(ParsedName {
        kind,
        version,
        version_text,
        description,
    })
}

/// A validated script: its normalised text and what its first line says.
struct Script {
    sql: String,
    checksum: String,
    no_transaction: bool,
}

/// Checks one file's content, naming it `label` in errors.
fn parse_script(label: &str, content: &[u8]) -> Result<Script, SourceError> {
    let text = std::str::from_utf8(content).map_err(|source| {
        let valid = content.get(..source.valid_up_to()).unwrap_or_default();
        SourceError::NotUtf8 {
            file: label.to_owned(),
            line: 1 + valid.iter().filter(|&&byte| byte == b'\n').count(),
            source,
        }
    })?;
    let sql = normalize_text(text);
    if !has_statement(&sql) {
        return Err(SourceError::Empty {
            file: label.to_owned(),
        });
    }
    check_directives(label, &sql)?;
    Ok(Script {
        checksum: tagged_sha256(sql.as_bytes()),
        no_transaction: starts_with_no_transaction_marker(&sql),
        sql,
    })
}

/// Whether `sql` holds anything besides whitespace, `;`, `-- ...` line
/// comments and `/* ... */` block comments.
///
/// Block comments are read as not nested (SQLite, MySQL) and MySQL's
/// executable comments `/*! ... */` and MariaDB's `/*M! ... */` count as
/// statements, so a file is only called empty when it is empty on every
/// engine; anything doubtful goes to the engine, which reports it.
fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if rest.is_empty() {
            return false;
        }
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest
            .strip_prefix("/*")
            .filter(|body| !body.starts_with('!') && !body.starts_with("M!"))
        {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return true;
        }
    }
}

/// Refuses `-- iadb:...` comments other than the no-transaction marker on the
/// first line: a misspelt or misplaced marker would otherwise be ignored and
/// the file run inside a transaction it was written to avoid.
fn check_directives(label: &str, sql: &str) -> Result<(), SourceError> {
    for (index, line) in sql.split('\n').enumerate() {
        let trimmed = line.trim();
        let Some(comment) = trimmed.strip_prefix("--") else {
            continue;
        };
        let looks_like_directive = comment
            .trim_start()
            .get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("iadb:"));
        if !looks_like_directive {
            continue;
        }
        if index == 0 && line.trim_end() == NO_TRANSACTION_MARKER {
            continue;
        }
        return Err(SourceError::BadDirective {
            file: label.to_owned(),
            line: index + 1,
            text: trimmed.to_owned(),
        });
    }
    Ok(())
}

/// [`parse`] with each file named in errors by `label` (its path when it came
/// from a folder).
fn parse_labelled(
    mut files: Vec<(String, MigrationFile)>,
    migration_type: MigrationType,
) -> Result<Vec<Migration>, SourceError> {
    // Request order is arbitrary; name order makes errors reproducible.
    files.sort_by(|(a, _), (b, _)| a.cmp(b));

    let mut migrations: BTreeMap<u64, (String, Migration)> = BTreeMap::new();
    let mut undos: BTreeMap<u64, (String, UndoScript)> = BTreeMap::new();
    for (label, file) in files {
        let name = parse_name(&file.filename).map_err(|reason| SourceError::BadName {
            file: label.clone(),
            reason,
        })?;
        let script = parse_script(&label, &file.content)?;
        match name.kind {
            FileKind::Migration => {
                let migration = Migration {
                    version: name.version,
                    version_text: name.version_text.to_owned(),
                    description: name.description.replace('_', " "),
                    migration_type,
                    filename: file.filename.clone(),
                    sql: script.sql,
                    checksum: script.checksum,
                    no_transaction: script.no_transaction,
                    undo: None,
                };
                insert_once(&mut migrations, name.version, label, migration)?;
            }
            FileKind::Undo => {
                let undo = UndoScript {
                    filename: file.filename.clone(),
                    sql: script.sql,
                    checksum: script.checksum,
                    no_transaction: script.no_transaction,
                };
                insert_once(&mut undos, name.version, label, undo)?;
            }
        }
    }

    for (version, (label, undo)) in undos {
        match migrations.get_mut(&version) {
            Some((_, migration)) => migration.undo = Some(undo),
            None => {
                return Err(SourceError::UndoWithoutMigration {
                    file: label,
                    version,
                });
            }
        }
    }
    Ok(migrations
        .into_values()
        .map(|(_, migration)| migration)
        .collect())
}

/// Inserts `value` under `version`, or reports the file already there.
fn insert_once<T>(
    map: &mut BTreeMap<u64, (String, T)>,
    version: u64,
    label: String,
    value: T,
) -> Result<(), SourceError> {
    match map.entry(version) {
        Entry::Vacant(slot) => {
            slot.insert((label, value));
            Ok(())
        }
        Entry::Occupied(slot) => Err(SourceError::DuplicateVersion {
            version,
            first: slot.get().0.clone(),
            second: label,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(filename: &str, content: &str) -> MigrationFile {
        MigrationFile {
            filename: filename.to_owned(),
            content: content.as_bytes().to_vec(),
        }
    }

    fn parse_app(files: Vec<MigrationFile>) -> Result<Vec<Migration>, SourceError> {
        parse(files, MigrationType::App)
    }

    fn write(dir: &Path, name: &str, content: &[u8]) {
        fs::write(dir.join(name), content).expect("write test file");
    }

    #[test]
    fn parses_versions_descriptions_and_sorts_by_number() {
        let migrations = parse(
            vec![
                file("V10__add_index.sql", "CREATE INDEX i ON users (name);\n"),
                file("V002__add_email.sql", "ALTER TABLE users ADD email TEXT;\n"),
                file("V1__create_users.sql", "CREATE TABLE users (id INT);\n"),
                file("V9__a__b.sql", "SELECT 9;\n"),
            ],
            MigrationType::System,
        )
        .expect("valid files");
        let summary: Vec<_> = migrations
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.version_text.as_str(),
                    m.description.as_str(),
                    m.filename.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "1", "create users", "V1__create_users.sql"),
                (2, "002", "add email", "V002__add_email.sql"),
                (9, "9", "a  b", "V9__a__b.sql"),
                (10, "10", "add index", "V10__add_index.sql"),
            ]
        );
        assert!(
            migrations
                .iter()
                .all(|m| m.migration_type == MigrationType::System)
        );
    }

    #[test]
    fn a_parsed_migration_has_every_field() {
        let migrations = parse_app(vec![
            file("V001__create_users.sql", "\u{feff}SELECT 1;\r\n"),
            file("U1__drop_users.sql", "SELECT 2;\n"),
        ])
        .expect("valid files");
        assert_eq!(
            migrations,
            [Migration {
                version: 1,
                version_text: "001".to_owned(),
                description: "create users".to_owned(),
                migration_type: MigrationType::App,
                filename: "V001__create_users.sql".to_owned(),
                sql: "SELECT 1;\n".to_owned(),
                checksum: "sha256:b4e0497804e46e0a0b0b8c31975b062152d551bac49c3c2e80932567b4085dcd"
                    .to_owned(),
                no_transaction: false,
                undo: Some(UndoScript {
                    filename: "U1__drop_users.sql".to_owned(),
                    sql: "SELECT 2;\n".to_owned(),
                    checksum: tagged_sha256(b"SELECT 2;\n"),
                    no_transaction: false,
                }),
            }]
        );
    }

    #[test]
    fn crlf_and_bom_files_have_the_lf_checksum_and_text() {
        let lf = "CREATE TABLE t (a INT);\nINSERT INTO t VALUES (1);\n";
        let parse_one = |content: &[u8]| {
            let mut parsed = parse_app(vec![MigrationFile {
                filename: "V1__t.sql".to_owned(),
                content: content.to_vec(),
            }])
            .expect("valid file");
            parsed.remove(0)
        };
        let from_lf = parse_one(lf.as_bytes());
        let from_crlf = parse_one(lf.replace('\n', "\r\n").as_bytes());
        let from_bom_crlf = parse_one(format!("\u{feff}{}", lf.replace('\n', "\r\n")).as_bytes());
        assert_eq!(from_crlf, from_lf);
        assert_eq!(from_bom_crlf, from_lf);
        assert_eq!(from_lf.sql, lf);
        let edited = parse_one(b"CREATE TABLE t (a INT);\nINSERT INTO t VALUES (2);\n");
        assert_ne!(edited.checksum, from_lf.checksum);
    }

    #[test]
    fn every_bad_name_is_an_error_naming_the_file() {
        let cases = [
            ("README.sql", "does not start with an upper-case"),
            ("V1_x.sql", "expected `__` after the version"),
            ("v1__x.sql", "does not start with an upper-case"),
            ("V__x.sql", "no version digits"),
            ("Vx__y.sql", "no version digits"),
            ("V1__.sql", "the description is empty"),
            ("u1__x.sql", "does not start with an upper-case"),
            ("V1__x.SQL", "does not end in lower-case `.sql`"),
            ("V-1__x.sql", "no version digits"),
            (
                "V18446744073709551616__too_big.sql",
                "does not fit in 64 bits",
            ),
            ("V1__../x.sql", "path separator"),
            ("V1__a\\b.sql", "path separator"),
            ("V1__a\nb.sql", "control character"),
        ];
        for (name, reason) in cases {
            let err = parse_app(vec![file(name, "SELECT 1;")]).expect_err(name);
            assert!(
                matches!(&err, SourceError::BadName { file, .. } if file == name),
                "{name}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "migration file `{name}` is not named V{{version}}__{{description}}.sql \
                     or U{{version}}__{{description}}.sql ("
                )),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
    }

    #[test]
    fn bad_name_message_is_exact() {
        let err = parse_app(vec![file("V1_x.sql", "SELECT 1;")]).expect_err("bad name");
        assert_eq!(
            err.to_string(),
            "migration file `V1_x.sql` is not named V{version}__{description}.sql or \
             U{version}__{description}.sql (expected `__` after the version)"
        );
    }

    #[test]
    fn largest_version_is_accepted() {
        let parsed = parse_app(vec![file("V18446744073709551615__max.sql", "SELECT 1;")])
            .expect("u64::MAX fits");
        assert_eq!(parsed[0].version, u64::MAX);
        let parsed = parse_app(vec![file(
            "V0000000000000000000000042__zeros.sql",
            "SELECT 1;",
        )])
        .expect("leading zeros do not count");
        assert_eq!(parsed[0].version, 42);
    }

    #[test]
    fn v001_and_v1_are_a_duplicate_naming_both() {
        let err = parse_app(vec![
            file("V1__b.sql", "SELECT 1;"),
            file("V001__a.sql", "SELECT 1;"),
        ])
        .expect_err("duplicate");
        assert!(
            matches!(&err, SourceError::DuplicateVersion { version: 1, first, second }
                if first == "V001__a.sql" && second == "V1__b.sql"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "migration files `V001__a.sql` and `V1__b.sql` both have version 1"
        );
    }

    #[test]
    fn two_undo_files_of_one_version_are_a_duplicate() {
        let err = parse_app(vec![
            file("V1__a.sql", "SELECT 1;"),
            file("U1__a.sql", "SELECT 1;"),
            file("U01__a.sql", "SELECT 1;"),
        ])
        .expect_err("duplicate undo");
        assert!(
            matches!(&err, SourceError::DuplicateVersion { version: 1, first, second }
                if first == "U01__a.sql" && second == "U1__a.sql"),
            "{err:?}"
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_errors_naming_the_file() {
        for (name, content) in [
            ("V1__zero_bytes.sql", ""),
            ("V1__blank.sql", " \n\t\r\n  \n"),
            ("V1__bom_only.sql", "\u{feff}"),
            (
                "V1__comments.sql",
                "-- nothing yet\n/* still\n nothing */\n  -- todo",
            ),
            ("V1__semicolons.sql", ";\n ; -- nothing\n"),
            ("V1__unclosed_comment.sql", "/* never closed\nSELECT 1;"),
        ] {
            let err = parse_app(vec![file(name, content)]).expect_err(name);
            assert!(
                matches!(&err, SourceError::Empty { file } if file == name),
                "{name}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "migration file `{name}` is empty: it has no SQL statement, \
                     only whitespace or comments"
                )
            );
        }
    }

    #[test]
    fn an_empty_undo_file_is_an_error_naming_it() {
        let err = parse_app(vec![
            file("V1__a.sql", "SELECT 1;"),
            file("U1__a.sql", "-- nothing to undo\n"),
        ])
        .expect_err("empty undo");
        assert!(
            matches!(&err, SourceError::Empty { file } if file == "U1__a.sql"),
            "{err:?}"
        );
    }

    #[test]
    fn a_statement_after_comments_is_not_empty() {
        for content in [
            "-- header\nSELECT 1;",
            "/* header */ SELECT 1;",
            "/* a /* b */ SELECT 1;",
            "/*!40101 SET NAMES utf8 */;",
            "/*M!100100 SET NAMES utf8 */;",
            "SELECT 1 -- no semicolon",
        ] {
            let parsed = parse_app(vec![file("V1__a.sql", content)]).expect(content);
            assert_eq!(parsed[0].sql, content);
        }
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_file_and_line() {
        let files = vec![MigrationFile {
            filename: "V1__latin1.sql".to_owned(),
            content: b"SELECT 1;\nSELECT 'caf\xe9';\n".to_vec(),
        }];
        let err = parse_app(files).expect_err("not utf-8");
        assert!(
            matches!(&err, SourceError::NotUtf8 { file, line: 2, .. } if file == "V1__latin1.sql"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "migration file `V1__latin1.sql` is not valid UTF-8 (line 2): \
             invalid utf-8 sequence of 1 bytes from index 21"
        );
    }

    #[test]
    fn undo_without_its_migration_is_an_error() {
        let err = parse_app(vec![
            file("V1__a.sql", "SELECT 1;"),
            file("U2__b.sql", "SELECT 2;"),
        ])
        .expect_err("orphan undo");
        assert!(
            matches!(&err, SourceError::UndoWithoutMigration { file, version: 2 } if file == "U2__b.sql"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "undo file `U2__b.sql` has no migration file V2__*.sql beside it"
        );
    }

    #[test]
    fn undo_files_match_their_migration_by_number() {
        let migrations = parse_app(vec![
            file("V001__a.sql", "SELECT 1;"),
            file("U1__undo_a.sql", "SELECT -1;"),
            file("V2__b.sql", "SELECT 2;"),
        ])
        .expect("valid");
        let undo_names: Vec<_> = migrations
            .iter()
            .map(|m| m.undo.as_ref().map(|u| u.filename.as_str()))
            .collect();
        assert_eq!(undo_names, [Some("U1__undo_a.sql"), None]);
    }

    #[test]
    fn no_transaction_marker_is_read_after_the_bom_and_on_undo_files() {
        let migrations = parse_app(vec![
            file(
                "V1__index.sql",
                "\u{feff}-- iadb:no-transaction  \r\nCREATE INDEX CONCURRENTLY i ON t (a);\r\n",
            ),
            file(
                "U1__index.sql",
                "-- iadb:no-transaction\nDROP INDEX CONCURRENTLY i;\n",
            ),
            file("V2__plain.sql", "-- just a comment\nSELECT 1;\n"),
        ])
        .expect("valid");
        assert!(migrations[0].no_transaction);
        assert_eq!(
            migrations[0].sql,
            "-- iadb:no-transaction  \nCREATE INDEX CONCURRENTLY i ON t (a);\n"
        );
        assert_eq!(
            migrations[0].undo.as_ref().map(|u| u.no_transaction),
            Some(true)
        );
        assert!(!migrations[1].no_transaction);
    }

    #[test]
    fn a_misplaced_or_misspelt_directive_is_an_error() {
        for (content, line, text) in [
            (
                "SELECT 1;\n-- iadb:no-transaction\n",
                2,
                "-- iadb:no-transaction",
            ),
            (
                "-- iadb:no-transactions\nSELECT 1;",
                1,
                "-- iadb:no-transactions",
            ),
            (
                "--iadb:no-transaction\nSELECT 1;",
                1,
                "--iadb:no-transaction",
            ),
            (
                "-- IADB:no-transaction\nSELECT 1;",
                1,
                "-- IADB:no-transaction",
            ),
            (
                "  -- iadb:no-transaction\nSELECT 1;",
                1,
                "-- iadb:no-transaction",
            ),
        ] {
            let err = parse_app(vec![file("V1__a.sql", content)]).expect_err(content);
            assert!(
                matches!(&err, SourceError::BadDirective { file, line: l, text: t }
                    if file == "V1__a.sql" && *l == line && t == text),
                "{content:?}: {err:?}"
            );
        }
        let err = parse_app(vec![file("V1__a.sql", "SELECT 1;\n-- iadb:no-transaction")])
            .expect_err("misplaced");
        assert_eq!(
            err.to_string(),
            "migration file `V1__a.sql` line 2: `-- iadb:no-transaction` is not an iadb \
             directive here (the only one is `-- iadb:no-transaction`, alone on the first line)"
        );
    }

    #[test]
    fn read_folder_ignores_other_extensions_and_refuses_bad_sql_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "README.md", b"# not a migration");
        write(dir.path(), "V2__b.sql", b"SELECT 2;");
        write(dir.path(), "V1__a.sql", b"SELECT 1;");
        fs::create_dir(dir.path().join("V3__folder.sql")).expect("sub-folder");
        fs::create_dir(dir.path().join("nested")).expect("sub-folder");
        write(&dir.path().join("nested"), "V4__nested.sql", b"SELECT 4;");

        let files = read_folder(dir.path()).expect("valid folder");
        assert_eq!(
            files,
            [
                MigrationFile {
                    filename: "V1__a.sql".to_owned(),
                    content: b"SELECT 1;".to_vec()
                },
                MigrationFile {
                    filename: "V2__b.sql".to_owned(),
                    content: b"SELECT 2;".to_vec()
                },
            ]
        );

        write(dir.path(), "V3_c.sql", b"SELECT 3;");
        let err = read_folder(dir.path()).expect_err("bad name");
        let bad_path = dir.path().join("V3_c.sql").display().to_string();
        assert!(
            matches!(&err, SourceError::BadName { file, .. } if *file == bad_path),
            "{err:?}"
        );
        assert!(err.to_string().contains(&format!("`{bad_path}`")), "{err}");
    }

    #[test]
    fn read_folder_reports_upper_case_extension() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "V1__a.SQL", b"SELECT 1;");
        let err = read_folder(dir.path()).expect_err("bad extension");
        let bad_path = dir.path().join("V1__a.SQL").display().to_string();
        assert!(
            matches!(&err, SourceError::BadName { file, .. } if *file == bad_path),
            "{err:?}"
        );
    }

    #[test]
    fn read_folder_of_a_missing_folder_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope");
        let err = read_folder(&missing).expect_err("missing");
        assert!(
            matches!(&err, SourceError::Io { path, source } if *path == missing
                && source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read `{}`: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn parse_folders_merges_folders_in_version_order() {
        let core = tempfile::tempdir().expect("temp dir");
        let billing = tempfile::tempdir().expect("temp dir");
        write(
            core.path(),
            "V1__users.sql",
            b"CREATE TABLE users (id INT);",
        );
        write(core.path(), "U1__users.sql", b"DROP TABLE users;");
        write(
            core.path(),
            "V3__roles.sql",
            b"CREATE TABLE roles (id INT);",
        );
        write(
            billing.path(),
            "V2__invoices.sql",
            b"CREATE TABLE invoices (id INT);",
        );
        let migrations = parse_folders(&[core.path().to_path_buf(), billing.path().to_path_buf()])
            .expect("valid folders");
        let summary: Vec<_> = migrations
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.filename.as_str(),
                    m.migration_type,
                    m.undo.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "V1__users.sql", MigrationType::App, true),
                (2, "V2__invoices.sql", MigrationType::App, false),
                (3, "V3__roles.sql", MigrationType::App, false),
            ]
        );
        assert_eq!(parse_folders(&[]).expect("no folders").len(), 0);
    }

    #[test]
    fn parse_folders_same_version_in_two_folders_names_both_paths() {
        let first = tempfile::tempdir().expect("temp dir");
        let second = tempfile::tempdir().expect("temp dir");
        write(first.path(), "V1__a.sql", b"SELECT 1;");
        write(second.path(), "V001__b.sql", b"SELECT 1;");
        let err = parse_folders(&[first.path().to_path_buf(), second.path().to_path_buf()])
            .expect_err("duplicate across folders");
        let first_path = first.path().join("V1__a.sql").display().to_string();
        let second_path = second.path().join("V001__b.sql").display().to_string();
        assert!(
            matches!(&err, SourceError::DuplicateVersion { version: 1, first, second }
                if *first == first_path && *second == second_path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("migration files `{first_path}` and `{second_path}` both have version 1")
        );
    }

    #[test]
    fn parse_folders_names_content_errors_by_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "V1__empty.sql", b"");
        let err = parse_folders(&[dir.path().to_path_buf()]).expect_err("empty");
        let path = dir.path().join("V1__empty.sql").display().to_string();
        assert!(
            matches!(&err, SourceError::Empty { file } if *file == path),
            "{err:?}"
        );
    }

    #[test]
    fn parse_folders_wants_the_undo_file_beside_its_migration() {
        let first = tempfile::tempdir().expect("temp dir");
        let second = tempfile::tempdir().expect("temp dir");
        write(first.path(), "V1__a.sql", b"SELECT 1;");
        write(second.path(), "U1__a.sql", b"SELECT 1;");
        let err = parse_folders(&[first.path().to_path_buf(), second.path().to_path_buf()])
            .expect_err("undo elsewhere");
        let path = second.path().join("U1__a.sql").display().to_string();
        assert!(
            matches!(&err, SourceError::UndoWithoutMigration { file, version: 1 } if *file == path),
            "{err:?}"
        );
    }
}
