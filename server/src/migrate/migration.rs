//! One migration as the runner sees it, and the checksum that pins its text.
//!
//! A [`Migration`] is built by `source::parse` from a `V{version}__{description}.sql`
//! file (and its optional `U{version}__*.sql` undo file); nothing here touches
//! an engine. The checksum is SHA-256 over the file with a leading UTF-8 BOM
//! removed and CRLF turned into LF, so the same migration checked out on
//! Windows and on Linux has the same checksum, while any other edit — even
//! whitespace inside a line — is reported as a changed file.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The first line that makes a migration run outside a transaction (for
/// statements such as `CREATE INDEX CONCURRENTLY` that refuse to run in one).
pub const NO_TRANSACTION_MARKER: &str = "-- iadb:no-transaction";

/// Prefix of stored checksums: the algorithm travels with the digest so a
/// later change of algorithm can tell old rows from edited files.
const CHECKSUM_PREFIX: &str = "sha256:";

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// system (embedded in the server) or app (folders given at start-up, or sent
/// in a request).
///
/// The order (`System < App`) is the order in which they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MigrationType {
    /// The server's own migrations, from `migrations/`, embedded in the binary.
    System,
    /// The application's migrations, from folders or from a `Migrate` request.
    App,
}

impl MigrationType {
    /// The name stored in `ia_migrations.migration_type`: `"system"` or `"app"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::App => "app",
        }
    }
}

impl fmt::Display for MigrationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A migration type name that is neither `system` nor `app`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown migration type `{0}` (expected `system` or `app`)")]
pub struct UnknownMigrationType(pub String);

impl FromStr for MigrationType {
    type Err = UnknownMigrationType;

    /// Exactly the names [`MigrationType::as_str`] writes: the tracking table's
    /// CHECK constraint only admits those, so anything else read back is
    /// corruption, not a spelling to be forgiving about.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(Self::System),
            "app" => Ok(Self::App),
            other => Err(UnknownMigrationType(other.to_owned())),
        }
    }
}

/// One versioned migration: a parsed, validated `V{version}__{description}.sql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The version as a number; `V001` and `V1` are the same version.
    pub version: u64,
    /// The version as written in the file name, e.g. `"001"`.
    pub version_text: String,
    /// From the file name, `_` shown as a space: `create_users` -> `create users`.
    pub description: String,
    /// System or app.
    pub migration_type: MigrationType,
    /// The file name, e.g. `"V001__create_users.sql"` (no folder).
    pub filename: String,
    /// The script, with a leading BOM removed and CRLF turned into LF.
    pub sql: String,
    /// `"sha256:"` and the lowercase hex SHA-256 of [`Migration::sql`]'s bytes.
    pub checksum: String,
    /// The first line is `-- iadb:no-transaction`: run it outside a transaction.
    pub no_transaction: bool,
    /// The `U{version}__*.sql` file of the same version, if there is one.
    pub undo: Option<UndoScript>,
}

/// The undo file of a migration: what rollback runs to revert it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoScript {
    /// The file name, e.g. `"U001__create_users.sql"` (no folder).
    pub filename: String,
    /// The script, normalised as [`Migration::sql`] is.
    pub sql: String,
    /// `"sha256:..."` of [`UndoScript::sql`], as for a migration.
    pub checksum: String,
    /// The first line is `-- iadb:no-transaction` (e.g. `DROP INDEX CONCURRENTLY`).
    pub no_transaction: bool,
}

/// `"sha256:"` and the lowercase hex SHA-256 of `bytes` after removing a
/// leading UTF-8 BOM and turning every CRLF into LF (a lone CR is kept: it
/// is not a line ending any editor writes for SQL, so changing it is an edit).
pub fn checksum(bytes: &[u8]) -> String {
    tagged_sha256(&normalize_bytes(bytes))
}

/// The digest of bytes that are already normalised, in the stored format.
pub(crate) fn tagged_sha256(normalized: &[u8]) -> String {
    // The digest's `LowerHex` writes two lowercase digits per byte.
    format!("{CHECKSUM_PREFIX}{:x}", Sha256::digest(normalized))
}

/// Removes a leading BOM and turns CRLF into LF, on bytes that need not be
/// UTF-8 (the checksum is defined on any file).
fn normalize_bytes(bytes: &[u8]) -> Vec<u8> {
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body.iter().peekable();
    while let Some(&byte) = rest.next() {
        if byte == b'\r' && rest.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(byte);
    }
    out
}

/// The same normalisation as the checksum's, on text already known to be
/// UTF-8, so `tagged_sha256(normalize_text(t).as_bytes()) == checksum(t.as_bytes())`.
pub(crate) fn normalize_text(text: &str) -> String {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n")
}

/// Whether normalised `sql` opens with [`NO_TRANSACTION_MARKER`]; trailing
/// spaces, tabs and a stray CR are tolerated because editors add them unseen.
pub(crate) fn starts_with_no_transaction_marker(sql: &str) -> bool {
    sql.split('\n')
        .next()
        .is_some_and(|first| first.trim_end() == NO_TRANSACTION_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SELECT_ONE_SHA256: &str =
        "sha256:b4e0497804e46e0a0b0b8c31975b062152d551bac49c3c2e80932567b4085dcd";

    #[test]
    fn checksum_of_select_one_is_its_sha256_with_the_algorithm() {
        // Expected value from `printf 'SELECT 1;\n' | sha256sum`.
        assert_eq!(checksum(b"SELECT 1;\n"), SELECT_ONE_SHA256);
    }

    #[test]
    fn checksum_ignores_crlf_and_bom_only() {
        let lf = "CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n";
        let crlf = "CREATE TABLE t (id INT);\r\nINSERT INTO t VALUES (1);\r\n";
        let bom_crlf = "\u{feff}CREATE TABLE t (id INT);\r\nINSERT INTO t VALUES (1);\r\n";
        let bom_lf = "\u{feff}CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n";
        let expected = checksum(lf.as_bytes());
        assert_eq!(checksum(crlf.as_bytes()), expected);
        assert_eq!(checksum(bom_crlf.as_bytes()), expected);
        assert_eq!(checksum(bom_lf.as_bytes()), expected);
        assert_eq!(checksum(b"\xEF\xBB\xBFSELECT 1;\r\n"), SELECT_ONE_SHA256);
    }

    #[test]
    fn checksum_changes_with_any_other_edit() {
        let original = checksum(b"SELECT 1;\n");
        for edited in [
            &b"SELECT 2;\n"[..],
            b"SELECT  1;\n",
            b"SELECT 1;",
            b"SELECT 1;\n\n",
            b"select 1;\n",
            // A lone CR is not a line ending we normalise.
            b"SELECT 1;\r",
            // Only a BOM at the very start is an encoding mark.
            b"SELECT 1;\n\xEF\xBB\xBF",
        ] {
            assert_ne!(
                checksum(edited),
                original,
                "{:?}",
                String::from_utf8_lossy(edited)
            );
        }
    }

    #[test]
    fn checksum_is_defined_on_bytes_that_are_not_utf8() {
        assert_eq!(checksum(b"\xff\r\n"), checksum(b"\xff\n"));
        assert_ne!(checksum(b"\xff\n"), checksum(b"\xfe\n"));
    }

    #[test]
    fn only_the_crlf_pair_loses_its_cr() {
        assert_eq!(normalize_bytes(b"a\r\r\nb\n\rc"), b"a\r\nb\n\rc");
        assert_eq!(normalize_text("a\r\r\nb\n\rc"), "a\r\nb\n\rc");
        assert_eq!(normalize_text("\u{feff}\u{feff}x"), "\u{feff}x");
    }

    #[test]
    fn migration_type_names_round_trip() {
        assert_eq!(MigrationType::System.as_str(), "system");
        assert_eq!(MigrationType::App.as_str(), "app");
        assert_eq!(MigrationType::App.to_string(), "app");
        assert_eq!("system".parse(), Ok(MigrationType::System));
        assert_eq!("app".parse(), Ok(MigrationType::App));
        assert!(MigrationType::System < MigrationType::App);
    }

    #[test]
    fn unknown_migration_type_names_the_text() {
        let err = "System".parse::<MigrationType>().unwrap_err();
        assert_eq!(err, UnknownMigrationType("System".to_owned()));
        assert_eq!(
            err.to_string(),
            "unknown migration type `System` (expected `system` or `app`)"
        );
    }

    #[test]
    fn no_transaction_marker_only_on_the_first_line() {
        assert!(starts_with_no_transaction_marker(
            "-- iadb:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
        ));
        assert!(starts_with_no_transaction_marker(
            "-- iadb:no-transaction  \t\r\nSELECT 1;"
        ));
        assert!(starts_with_no_transaction_marker("-- iadb:no-transaction"));
        assert!(!starts_with_no_transaction_marker(
            "SELECT 1;\n-- iadb:no-transaction\n"
        ));
        assert!(!starts_with_no_transaction_marker(
            " -- iadb:no-transaction\n"
        ));
        assert!(!starts_with_no_transaction_marker(
            "-- iadb:no-transactions\n"
        ));
        assert!(!starts_with_no_transaction_marker(""));
    }

    proptest! {
        #[test]
        fn crlf_checkout_has_the_lf_checksum(lf in "(\n|[^\r]){0,80}") {
            let crlf = lf.replace('\n', "\r\n");
            prop_assert_eq!(checksum(lf.as_bytes()), checksum(crlf.as_bytes()));
            // One BOM is an encoding mark; the text's own leading U+FEFF is content.
            let with_bom = format!("\u{feff}{crlf}");
            prop_assert_eq!(checksum(with_bom.as_bytes()), checksum(format!("\u{feff}{lf}").as_bytes()));
            if !lf.starts_with('\u{feff}') {
                prop_assert_eq!(checksum(lf.as_bytes()), checksum(with_bom.as_bytes()));
            }
        }

        #[test]
        fn text_and_byte_normalisation_agree(text in "(\r|\n|\u{feff}|.){0,80}") {
            prop_assert_eq!(
                tagged_sha256(normalize_text(&text).as_bytes()),
                checksum(text.as_bytes())
            );
        }
    }
}
