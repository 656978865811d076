//! [`DatabaseType`] and [`ConnectionConfig`]: which engine, and how to reach it.

use std::{collections::BTreeMap, fmt, str::FromStr};

/// The engines iadb serves.
///
/// What an engine is (its names, how its URL reads, the lexical rules of its
/// SQL, its migration store) is its [`EngineSpec`] ([`DatabaseType::spec`]),
/// the one description of each engine; the server adds only how its adapter
/// is built (`server/src/backend/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray)]
pub enum DatabaseType {
    /// SQLite, embedded.
    Sqlite,
    /// PostgreSQL.
    Postgresql,
    /// MySQL or MariaDB.
    Mysql,
    /// DuckDB, embedded.
    Duckdb,
    /// Cloudflare D1, over its REST API.
    CloudflareD1,
}

/// What one engine is: its names, the form of its URL, the lexical rules of
/// its SQL and its migration store. Everything engine-independent code (the
/// URL parser, the server's request checks and migration runner, the
/// clients' script splitting, the tests' harness) asks of an engine is
/// here, reached through one exhaustive match ([`DatabaseType::spec`]).
#[derive(Debug)]
pub struct EngineSpec {
    /// Which engine.
    pub kind: DatabaseType,
    /// The URL schemes that name it, its name first (the name used on the
    /// wire and in configuration); matched case-insensitively.
    pub schemes: &'static [&'static str],
    /// How its URL reads.
    pub url: UrlForm,
    /// The lexical rules of its SQL: placeholders, statement boundaries,
    /// transaction control, fingerprints.
    pub dialect: Dialect,
    /// Its migration tracking table and lock strategy.
    pub store: StoreDialect,
}

/// The lexical rules of an engine's SQL: where literals, identifiers and
/// comments begin and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `'...'` strings, `"..."`, `` `...` `` and `[...]` identifiers,
    /// `--` and non-nesting `/* */` comments.
    Sqlite,
    /// PostgreSQL: standard and `E'...'` strings, `"..."` identifiers, `--`
    /// and nesting `/* */` comments, dollar quotes; `??` is a literal `?`.
    Postgres,
    /// MySQL: backslash-escaping `'...'` and `"..."` strings, `` `...` ``
    /// identifiers, `#`, `-- ` and non-nesting `/* */` comments.
    MySql,
    /// DuckDB: PostgreSQL's lexical rules, except that `??` is two
    /// placeholders.
    DuckDb,
}

/// How an engine keeps migrations: the types of its tracking table, its
/// lock, and whether its DDL is transactional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDialect {
    /// SQLite: lease-row lock, transactional DDL.
    Sqlite,
    /// PostgreSQL: session advisory lock, transactional DDL.
    Postgres,
    /// MySQL/MariaDB: `GET_LOCK`, DDL commits implicitly.
    MySql,
    /// DuckDB: lease-row lock, transactional DDL.
    DuckDb,
    /// Cloudflare D1: SQLite's SQL and lease-row lock, but no BEGIN/COMMIT
    /// over the REST API (each request stands alone).
    D1,
}

/// The form of an engine's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlForm {
    /// An embedded engine on a local file: `scheme:///./app.db`,
    /// `scheme:////abs.db`, `scheme:///:memory:`.
    File,
    /// A server: `scheme://user:pass@host:port/database?options`.
    Server {
        /// The port when the URL names none.
        default_port: u16,
    },
    /// A hosted API: `scheme://DATABASE_ID?options` (no port, no database
    /// name).
    Api,
}

const SQLITE: EngineSpec = EngineSpec {
    kind: DatabaseType::Sqlite,
    schemes: &["sqlite"],
    url: UrlForm::File,
    dialect: Dialect::Sqlite,
    store: StoreDialect::Sqlite,
};

const POSTGRESQL: EngineSpec = EngineSpec {
    kind: DatabaseType::Postgresql,
    schemes: &["postgresql", "postgres"],
    url: UrlForm::Server { default_port: 5432 },
    dialect: Dialect::Postgres,
    store: StoreDialect::Postgres,
};

const MYSQL: EngineSpec = EngineSpec {
    kind: DatabaseType::Mysql,
    schemes: &["mysql", "mariadb"],
    url: UrlForm::Server { default_port: 3306 },
    dialect: Dialect::MySql,
    store: StoreDialect::MySql,
};

const DUCKDB: EngineSpec = EngineSpec {
    kind: DatabaseType::Duckdb,
    schemes: &["duckdb"],
    url: UrlForm::File,
    dialect: Dialect::DuckDb,
    store: StoreDialect::DuckDb,
};

const CLOUDFLARE_D1: EngineSpec = EngineSpec {
    kind: DatabaseType::CloudflareD1,
    schemes: &["cloudflare_d1", "d1"],
    url: UrlForm::Api,
    dialect: Dialect::Sqlite,
    store: StoreDialect::D1,
};

impl DatabaseType {
    /// Every engine.
    pub const ALL: &'static [DatabaseType] = <Self as strum::VariantArray>::VARIANTS;

    /// What the domain knows about the engine (one exhaustive match: a new
    /// engine is a compile error here until it is described).
    pub fn spec(self) -> &'static EngineSpec {
        match self {
            DatabaseType::Sqlite => &SQLITE,
            DatabaseType::Postgresql => &POSTGRESQL,
            DatabaseType::Mysql => &MYSQL,
            DatabaseType::Duckdb => &DUCKDB,
            DatabaseType::CloudflareD1 => &CLOUDFLARE_D1,
        }
    }

    /// The name used on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        self.spec().schemes[0]
    }

    /// The type a URL scheme names, if any.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|kind| {
            kind.spec()
                .schemes
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme))
        })
    }

    /// Whether the engine runs inside the server process on a local file.
    pub fn is_embedded(self) -> bool {
        self.spec().url == UrlForm::File
    }
}

impl fmt::Display for DatabaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatabaseType {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_scheme(s).ok_or_else(|| UrlError::UnknownScheme(s.to_owned()))
    }
}

/// Why a database URL was refused. Messages never repeat the URL, which may
/// hold a password or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL has no `scheme:` part.
    #[error(
        "database URL has no scheme (expected e.g. sqlite:///./app.db or postgresql://host/db)"
    )]
    MissingScheme,
    /// The scheme names no engine iadb serves.
    #[error(
        "unknown database URL scheme `{0}` (expected {known})",
        known = known_schemes()
    )]
    UnknownScheme(String),
    /// The URL does not parse.
    #[error("malformed {engine} URL: {reason}")]
    Malformed {
        /// The engine the scheme named.
        engine: DatabaseType,
        /// What is wrong.
        reason: String,
    },
}

/// Every engine's schemes, for [`UrlError::UnknownScheme`]: `a, b or c`.
fn known_schemes() -> String {
    let schemes: Vec<&str> = DatabaseType::ALL
        .iter()
        .flat_map(|kind| kind.spec().schemes.iter().copied())
        .collect();
    match schemes.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => schemes.join(""),
    }
}

impl From<UrlError> for crate::Error {
    fn from(e: UrlError) -> Self {
        crate::Error::invalid_argument(e.to_string())
    }
}

/// Where a database is and how to log in, parsed from a URL.
///
/// `Debug` and [`ConnectionConfig::redacted_url`] hide the password and any
/// `api_token`/`password` option.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The engine.
    pub db_type: DatabaseType,
    /// Host name (server engines); the database id for Cloudflare D1.
    pub host: Option<String>,
    /// TCP port, with the engine's default filled in.
    pub port: Option<u16>,
    /// Every host of a multi-host URL (`postgresql://h1:5432,h2:5432/db`,
    /// the libpq form), in order, each with its port (the engine's default
    /// filled in); empty when the URL names one host. `host` and `port`
    /// are then the first of them.
    pub hosts: Vec<(String, u16)>,
    /// User name, percent-decoded.
    pub username: Option<String>,
    password: Option<String>,
    /// Database name (server engines).
    pub database: Option<String>,
    /// File path or `:memory:` (embedded engines).
    pub path: Option<String>,
    /// Query-string options (`sslmode`, `account_id`, ...), percent-decoded.
    pub options: BTreeMap<String, String>,
    url: String,
}

/// Whether a query option's value is a secret: `password`, `token`,
/// `api_token`, `sslpassword`, `secret`, anything named like them.
pub fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "pwd", "token", "secret", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

/// The ways `secret` can be written in a URL: as it is, percent-encoded
/// (every byte but letters and digits, or only what a URL must encode) and
/// form-encoded (space as `+`), in upper- and lower-case hex.
fn spellings(secret: &str) -> Vec<String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'/')
        .add(b':')
        .add(b';')
        .add(b'=')
        .add(b'@')
        .add(b'[')
        .add(b'\\')
        .add(b']')
        .add(b'^')
        .add(b'|')
        .add(b'%');
    let mut forms = vec![
        secret.to_owned(),
        utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
        utf8_percent_encode(secret, USERINFO).to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
    ];
    let lower: Vec<String> = forms.iter().map(|f| lowercase_escapes(f)).collect();
    forms.extend(lower);
    forms.sort();
    forms.dedup();
    // Longest first, so that a shorter form inside a longer one does not
    // leave the rest of the longer one behind.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

/// `%2F` as `%2f`: percent escapes in lower-case hex.
fn lowercase_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).filter(|e| e.is_ascii()).unwrap_or("%");
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// Redacts a URL's text by position: the password of its userinfo
/// (`scheme://user:PASSWORD@host`) and the value of every secret query
/// option (`?api_token=VALUE`), however each is spelled.
pub fn redact_url_text(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find(['/', '#', '\\']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rfind('@') {
                Some(at) => {
                    let (userinfo, host) = authority.split_at(at);
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (pair, None),
            };
            let decoded_key: String = url::form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            out.push_str(key);
            if let Some(value) = value {
                out.push('=');
                if is_secret_option(&decoded_key) && !value.is_empty() {
                    out.push_str("***");
                } else {
                    out.push_str(value);
                }
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
}

impl ConnectionConfig {
    /// Parses a database URL:
    /// `sqlite:///./app.db`, `sqlite:///:memory:`, `sqlite:////abs/path.db`,
    /// `postgresql://user:pass@host:5432/db?sslmode=require` (`postgres://`),
    /// `mysql://user:pass@host:3306/db`, `duckdb:///./a.duckdb`,
    /// `duckdb:///:memory:`, `cloudflare_d1://DATABASE_ID?account_id=..&api_token=..`.
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once(':').ok_or(UrlError::MissingScheme)?;
        if scheme.is_empty() {
            return Err(UrlError::MissingScheme);
        }
        let db_type = DatabaseType::from_scheme(scheme)
            .ok_or_else(|| UrlError::UnknownScheme(scheme.to_owned()))?;
        let mut config = match db_type.spec().url {
            UrlForm::File => parse_file_url(db_type, rest)?,
            // `_` is not allowed in a URL scheme (`cloudflare_d1`): parse
            // under one the URL grammar accepts. Every engine's scheme is
            // a non-special one, which the grammar parses alike (the host
            // keeps its case).
            UrlForm::Server { default_port } => {
                parse_network_url(db_type, Some(default_port), &format!("iadb:{rest}"))?
            }
            UrlForm::Api => parse_network_url(db_type, None, &format!("iadb:{rest}"))?,
        };
        config.url = url.to_owned();
        Ok(config)
    }

    /// The password, if the URL had one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URL as given, credentials included: for the adapter only, never
    /// for logs or errors.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with the password and secret options replaced by `***`.
    ///
    /// The URL's own text is redacted by position (whatever sits between
    /// the user name's `:` and the `@`, and the value of every secret query
    /// option), so a secret is hidden however it was written: plain,
    /// percent-encoded (`Leak%20Me`), form-encoded (`Leak+Me`). Then any
    /// other occurrence of the password, in any of those spellings, is
    /// hidden as well.
    pub fn redacted_url(&self) -> String {
        let mut out = redact_url_text(&self.url);
        if let Some(p) = self.password.as_deref().filter(|p| p.len() >= 4) {
            for form in spellings(p) {
                out = out.replace(&form, "***");
            }
        }
        out
    }

    /// Whether this is an in-memory embedded database.
    pub fn is_memory(&self) -> bool {
        self.path.as_deref() == Some(":memory:")
    }

    /// An option from the query string.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_option(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("ConnectionConfig")
            .field("db_type", &self.db_type)
            .field("host", &self.host)
            .field("hosts", &self.hosts)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("path", &self.path)
            .field("options", &options)
            .finish()
    }
}

fn malformed(engine: DatabaseType, reason: impl Into<String>) -> UrlError {
    UrlError::Malformed {
        engine,
        reason: reason.into(),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `sqlite:///./rel.db`, `sqlite:////abs.db`, `sqlite:///:memory:`, and the
/// sqlx forms `sqlite://rel.db`, `sqlite::memory:`.
fn parse_file_url(db_type: DatabaseType, rest: &str) -> Result<ConnectionConfig, UrlError> {
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, q),
        None => (rest, ""),
    };
    let path = if let Some(p) = location.strip_prefix("///") {
        p
    } else if let Some(p) = location.strip_prefix("//") {
        p
    } else {
        location
    };
    let path = percent_decode(path);
    if path.is_empty() {
        return Err(malformed(
            db_type,
            "no file path (use e.g. :///./app.db, :////abs/app.db or :///:memory:)",
        ));
    }
    Ok(ConnectionConfig {
        db_type,
        host: None,
        port: None,
        hosts: Vec::new(),
        username: None,
        password: None,
        database: None,
        path: Some(path),
        options: parse_query(query),
        url: String::new(),
    })
}

/// Hosts with their ports, in the order a URL lists them.
type HostList = Vec<(String, u16)>;

/// A server URL whose authority lists several hosts (`h1:5432,h2,h3:5433`,
/// the libpq form): the URL with the first host only, for the URL parser,
/// and every host with its port. A URL with one host comes back as it is,
/// with no hosts.
fn split_hosts(
    db_type: DatabaseType,
    raw: &str,
    default_port: u16,
) -> Result<(std::borrow::Cow<'_, str>, HostList), UrlError> {
    let Some(at) = raw.find("//").map(|i| i + 2) else {
        return Ok((raw.into(), Vec::new()));
    };
    let end = raw[at..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| at + i);
    let authority = &raw[at..end];
    let hosts_at = authority.rfind('@').map_or(0, |i| i + 1);
    let list = &authority[hosts_at..];
    if !list.contains(',') {
        return Ok((raw.into(), Vec::new()));
    }
    let mut hosts = Vec::new();
    for item in list.split(',') {
        let (host, port) = match item.rsplit_once(':').filter(|(h, _)| !h.ends_with(':')) {
            // `[::1]:5432`, `h:5432`; a bare `[::1]` has no port after its `]`.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| malformed(db_type, format!("bad port `{p}` in the host list")))?;
                (h, port)
            }
            _ => (item, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(malformed(db_type, "an empty host in the host list"));
        }
        hosts.push((percent_decode(host), port));
    }
    let first = list.split(',').next().unwrap_or_default();
    let single = format!("{}{first}{}", &raw[..at + hosts_at], &raw[end..]);
    Ok((single.into(), hosts))
}

fn parse_network_url(
    db_type: DatabaseType,
    default_port: Option<u16>,
    raw: &str,
) -> Result<ConnectionConfig, UrlError> {
    let (single, hosts) = match default_port {
        Some(default_port) => split_hosts(db_type, raw, default_port)?,
        None => (raw.into(), Vec::new()),
    };
    let parsed = url::Url::parse(&single).map_err(|e| malformed(db_type, e.to_string()))?;
    let decode = percent_decode;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
    let options = parse_query(parsed.query().unwrap_or(""));
    let (port, database) = match default_port {
        // A hosted API: the host is the database id.
        None => {
            if host.is_none() {
                return Err(malformed(
                    db_type,
                    format!(
                        "no database id ({}://DATABASE_ID?account_id=...)",
                        db_type.as_str()
                    ),
                ));
            }
            (None, None)
        }
        Some(default_port) => {
            if host.is_none() {
                return Err(malformed(db_type, "no host"));
            }
            let db = decode(parsed.path().trim_start_matches('/'));
            if db.contains('/') {
                return Err(malformed(db_type, "database name may not contain '/'"));
            }
            (
                Some(parsed.port().unwrap_or(default_port)),
                Some(db).filter(|d| !d.is_empty()),
            )
        }
    };
    Ok(ConnectionConfig {
        db_type,
        host,
        port,
        hosts,
        username: Some(decode(parsed.username())).filter(|u| !u.is_empty()),
        password: parsed.password().map(decode),
        database,
        path: None,
        options,
        url: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_describes_itself() {
        for &kind in DatabaseType::ALL {
            let spec = kind.spec();
            assert_eq!(spec.kind, kind);
            assert_eq!(DatabaseType::from_scheme(spec.schemes[0]), Some(kind));
        }
        // D1 speaks SQLite's SQL but keeps migrations without transactions.
        let d1 = DatabaseType::CloudflareD1.spec();
        assert_eq!((d1.dialect, d1.store), (Dialect::Sqlite, StoreDialect::D1));
    }

    #[test]
    fn multi_host_urls_list_every_host() {
        let c = ConnectionConfig::from_url(
            "postgresql://u:pw@h1:5433,h2,[::1]:5434/db?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            c.hosts,
            [
                ("h1".to_owned(), 5433),
                ("h2".to_owned(), 5432),
                ("::1".to_owned(), 5434)
            ]
        );
        assert_eq!((c.host.as_deref(), c.port), (Some("h1"), Some(5433)));
        assert_eq!(c.database.as_deref(), Some("db"));
        assert_eq!(c.password(), Some("pw"));
        assert!(c.redacted_url().contains("h1:5433,h2,[::1]:5434"));
        let one = ConnectionConfig::from_url("postgresql://u@h1:5433/db").unwrap();
        assert!(one.hosts.is_empty());
        assert!(ConnectionConfig::from_url("postgresql://u@h1:x,h2/db").is_err());
        assert!(ConnectionConfig::from_url("postgresql://u@h1,,h2/db").is_err());
    }

    #[test]
    fn every_url_form_in_the_design_parses() {
        let c = ConnectionConfig::from_url("sqlite:///./app.db").unwrap();
        assert_eq!(
            (c.db_type, c.path.as_deref()),
            (DatabaseType::Sqlite, Some("./app.db"))
        );
        let c = ConnectionConfig::from_url("sqlite:///:memory:").unwrap();
        assert!(c.is_memory());
        let c = ConnectionConfig::from_url("sqlite:////abs/path.db").unwrap();
        assert_eq!(c.path.as_deref(), Some("/abs/path.db"));
        let c = ConnectionConfig::from_url("sqlite:///./my%20app.db?mode=ro").unwrap();
        assert_eq!(c.path.as_deref(), Some("./my app.db"));
        assert_eq!(c.option("mode"), Some("ro"));

        let c = ConnectionConfig::from_url("postgresql://user:pass@host:5432/db?sslmode=require")
            .unwrap();
        assert_eq!(c.db_type, DatabaseType::Postgresql);
        assert_eq!(c.host.as_deref(), Some("host"));
        assert_eq!(c.port, Some(5432));
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password(), Some("pass"));
        assert_eq!(c.database.as_deref(), Some("db"));
        assert_eq!(c.option("sslmode"), Some("require"));
        let c = ConnectionConfig::from_url("postgres://h/db").unwrap();
        assert_eq!(
            (c.db_type, c.port, c.username.as_deref()),
            (DatabaseType::Postgresql, Some(5432), None)
        );

        let c = ConnectionConfig::from_url("mysql://user:pass@host:3306/db").unwrap();
        assert_eq!((c.db_type, c.port), (DatabaseType::Mysql, Some(3306)));
        assert_eq!(c.database.as_deref(), Some("db"));
        let c = ConnectionConfig::from_url("mysql://root@127.0.0.1/test").unwrap();
        assert_eq!((c.port, c.password()), (Some(3306), None));

        let c = ConnectionConfig::from_url("duckdb:///./analytics.duckdb").unwrap();
        assert_eq!(
            (c.db_type, c.path.as_deref()),
            (DatabaseType::Duckdb, Some("./analytics.duckdb"))
        );
        assert!(
            ConnectionConfig::from_url("duckdb:///:memory:")
                .unwrap()
                .is_memory()
        );

        let c = ConnectionConfig::from_url(
            "cloudflare_d1://DATABASE_ID?account_id=ACCOUNT&api_token=TOKEN",
        )
        .unwrap();
        assert_eq!(c.db_type, DatabaseType::CloudflareD1);
        assert_eq!(c.host.as_deref(), Some("DATABASE_ID"));
        assert_eq!(c.option("account_id"), Some("ACCOUNT"));
        assert_eq!(c.option("api_token"), Some("TOKEN"));
    }

    #[test]
    fn every_engine_is_named_by_each_of_its_schemes() {
        assert_eq!(DatabaseType::ALL.len(), 5);
        for &kind in DatabaseType::ALL {
            assert_eq!(kind.spec().kind, kind);
            for scheme in kind.spec().schemes {
                assert_eq!(DatabaseType::from_scheme(scheme), Some(kind));
                assert_eq!(
                    DatabaseType::from_scheme(&scheme.to_ascii_uppercase()),
                    Some(kind)
                );
            }
            assert_eq!(kind.as_str().parse::<DatabaseType>(), Ok(kind));
        }
        assert_eq!(
            UrlError::UnknownScheme("oracle".into()).to_string(),
            "unknown database URL scheme `oracle` (expected sqlite, postgresql, postgres, \
             mysql, mariadb, duckdb, cloudflare_d1 or d1)"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let err = |u: &str| ConnectionConfig::from_url(u).unwrap_err();
        assert_eq!(err("no-scheme"), UrlError::MissingScheme);
        assert_eq!(err(""), UrlError::MissingScheme);
        assert_eq!(
            err("oracle://h/db"),
            UrlError::UnknownScheme("oracle".into())
        );
        assert!(matches!(err("sqlite://"), UrlError::Malformed { .. }));
        assert!(matches!(err("duckdb:///"), UrlError::Malformed { .. }));
        assert!(matches!(
            err("postgresql://u:p@h:99999/db"),
            UrlError::Malformed { .. }
        ));
        assert!(matches!(
            err("postgresql:///db"),
            UrlError::Malformed { .. }
        ));
        assert!(matches!(err("mysql://h/a/b"), UrlError::Malformed { .. }));
        assert!(matches!(
            err("cloudflare_d1://?account_id=a"),
            UrlError::Malformed { .. }
        ));
        let message = err("postgresql://u:secret@h:bad/db").to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn redaction_works_on_the_literal_text_in_every_spelling() {
        let c =
            ConnectionConfig::from_url("postgresql://iadb:Leak%20Me@127.0.0.1:5432/db").unwrap();
        assert_eq!(c.password(), Some("Leak Me"));
        assert_eq!(c.redacted_url(), "postgresql://iadb:***@127.0.0.1:5432/db");
        for (url, secrets) in [
            (
                "mysql://u:p%40ss%3Aw0rd@h/db?password=Other%20Secret",
                &["p@ss:w0rd", "Other Secret"][..],
            ),
            (
                "cloudflare_d1://id?account_id=a&api_token=Tok%2BLeak%2fx",
                &["Tok+Leak/x"],
            ),
            (
                "postgresql://h/db?sslpassword=Leak+Me&application_name=x",
                &["Leak Me"],
            ),
            ("postgresql://u:Leak+Me@h/db", &["Leak+Me"]),
            (
                "duckdb:///./a.duckdb?s3_secret_access_key=Zq1Key%2F",
                &["Zq1Key/"],
            ),
            ("postgresql://u:%C3%A9t%C3%A9Pw@h/db", &["\u{e9}t\u{e9}Pw"]),
        ] {
            let c = ConnectionConfig::from_url(url).unwrap();
            let shown = [c.redacted_url(), format!("{c:?}")];
            for secret in secrets {
                for form in spellings(secret) {
                    for text in &shown {
                        assert!(!text.contains(&form), "{url}: `{form}` in {text}");
                    }
                }
            }
            assert!(c.redacted_url().contains("***"), "{url}");
        }
        // The password anywhere else in the URL is hidden too.
        let c = ConnectionConfig::from_url("postgresql://u:Leak%20Me@h/Leak%20Me").unwrap();
        assert_eq!(c.redacted_url(), "postgresql://u:***@h/***");
        // Nothing else changes.
        let plain = "postgresql://u@h:5432/db?sslmode=require&application_name=app";
        assert_eq!(
            ConnectionConfig::from_url(plain).unwrap().redacted_url(),
            plain
        );
    }

    #[test]
    fn redaction_hides_password_and_token() {
        let c = ConnectionConfig::from_url("postgresql://u:s%40cret@h/db").unwrap();
        assert_eq!(c.password(), Some("s@cret"));
        assert!(!c.redacted_url().contains("cret"), "{}", c.redacted_url());
        assert!(!format!("{c:?}").contains("cret"));
        let d = ConnectionConfig::from_url("cloudflare_d1://abc?account_id=a&api_token=tok123")
            .unwrap();
        assert!(!d.redacted_url().contains("tok123"));
        assert!(!format!("{d:?}").contains("tok123"));
    }
}

/// Property tests: no string makes `from_url` panic, and the parts of a
/// generated valid URL come back as they were put in. The runs use a fixed
/// seed (the same inputs each time) and print how many inputs were tried.
#[cfg(test)]
mod properties {
    use super::*;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::{
        prelude::*,
        test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
    };
    use std::{
        io::Write,
        sync::atomic::{AtomicU64, Ordering},
    };

    /// Runs `test` on `cases` inputs of `strategy` with a fixed seed, fails
    /// with the smallest failing input, and reports the count on stderr.
    fn check<S: Strategy>(
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: fmt::Debug,
    {
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let tried = AtomicU64::new(0);
        let result = runner.run(&strategy, |value| {
            tried.fetch_add(1, Ordering::Relaxed);
            test(value)
        });
        let _ = writeln!(
            std::io::stderr(),
            "property {name}: {} inputs tried",
            tried.load(Ordering::Relaxed)
        );
        if let Err(e) = result {
            panic!("property {name} failed: {e}");
        }
    }

    /// Everything but letters and digits, percent-encoded: decoding gives
    /// the text back exactly.
    fn encode(s: &str) -> String {
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }

    /// File paths keep `/`, `.`, `-` and `_` as they are.
    const PATH_SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_');

    fn query_of(options: &BTreeMap<String, String>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in options {
            q.append_pair(k, v);
        }
        q.finish()
    }

    fn options() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-z_]{1,10}", "\\PC{0,16}", 0..4)
    }

    /// Strings near the URL grammar as well as anything at all.
    fn any_url_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,60}",
            "(sqlite|postgresql|postgres|mysql|mariadb|duckdb|cloudflare_d1|d1|x|)(:|://|:///|:////)[a-zA-Z0-9:/@?=&%#\\[\\]. _+-]{0,50}",
            "(postgresql|mysql|cloudflare_d1)://[a-z@:%0-9\\[\\]]{0,12}(:[0-9]{0,7})?(/[^/?#]{0,10}){0,3}(\\?[a-z=&%]{0,20})?",
        ]
    }

    #[test]
    fn from_url_never_panics() {
        check("from_url never panics", 4096, any_url_text(), |text| {
            if let Ok(c) = ConnectionConfig::from_url(&text) {
                // Everything a caller may do with a parsed config.
                let _ = (c.redacted_url(), format!("{c:?}"), c.is_memory());
            }
            Ok(())
        });
    }

    #[derive(Debug, Clone)]
    struct NetworkUrl {
        scheme: &'static str,
        user: String,
        password: Option<String>,
        host: String,
        port: Option<u16>,
        database: String,
        options: BTreeMap<String, String>,
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,3}",
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            Just("::1".to_owned()),
            Just("2001:db8::8a2e:370:7334".to_owned()),
        ]
    }

    fn network_url() -> impl Strategy<Value = NetworkUrl> {
        (
            prop_oneof![
                Just("postgresql"),
                Just("postgres"),
                Just("mysql"),
                Just("mariadb")
            ],
            "\\PC{0,12}",
            proptest::option::of("\\PC{1,16}"),
            host(),
            proptest::option::of(any::<u16>()),
            "[^/]{0,16}".prop_filter("not a dot segment", |d| d != "." && d != ".."),
            options(),
        )
            .prop_map(|(scheme, user, password, host, port, database, options)| {
                NetworkUrl {
                    scheme,
                    user,
                    password,
                    host,
                    port,
                    database,
                    options,
                }
            })
    }

    impl NetworkUrl {
        fn text(&self) -> String {
            let mut out = format!("{}://", self.scheme);
            if !self.user.is_empty() || self.password.is_some() {
                out.push_str(&encode(&self.user));
                if let Some(p) = &self.password {
                    out.push(':');
                    out.push_str(&encode(p));
                }
                out.push('@');
            }
            if self.host.contains(':') {
                out.push_str(&format!("[{}]", self.host));
            } else {
                out.push_str(&self.host);
            }
            if let Some(port) = self.port {
                out.push_str(&format!(":{port}"));
            }
            out.push('/');
            out.push_str(&encode(&self.database));
            if !self.options.is_empty() {
                out.push('?');
                out.push_str(&query_of(&self.options));
            }
            out
        }
    }

    #[test]
    fn network_urls_give_back_their_parts() {
        check("network URL round trip", 2048, network_url(), |u| {
            let text = u.text();
            let c = ConnectionConfig::from_url(&text)
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let expected_type = DatabaseType::from_scheme(u.scheme).expect("known scheme");
            let default_port = if expected_type == DatabaseType::Postgresql {
                5432
            } else {
                3306
            };
            prop_assert_eq!(c.db_type, expected_type, "{}", text);
            prop_assert_eq!(c.host.as_deref(), Some(u.host.as_str()), "{}", text);
            prop_assert_eq!(c.port, Some(u.port.unwrap_or(default_port)), "{}", text);
            prop_assert_eq!(
                c.username.as_deref(),
                Some(u.user.as_str()).filter(|s| !s.is_empty()),
                "{}",
                text
            );
            prop_assert_eq!(c.password(), u.password.as_deref(), "{}", text);
            prop_assert_eq!(
                c.database.as_deref(),
                Some(u.database.as_str()).filter(|s| !s.is_empty()),
                "{}",
                text
            );
            prop_assert_eq!(&c.options, &u.options, "{}", text);
            prop_assert_eq!(c.path.as_deref(), None);
            prop_assert_eq!(c.url(), text.as_str());
            Ok(())
        });
    }

    #[test]
    fn passwords_and_tokens_never_show() {
        let strategy = (
            network_url(),
            "[A-Za-z0-9]{8,20}",
            "[A-Za-z0-9]{1,20}",
            "[A-Za-z0-9]{8,20}",
        );
        check(
            "password and token redaction",
            1024,
            strategy,
            |(mut u, password, d1_id, token)| {
                // A password no other part of the URL can contain by chance.
                let password = format!("SeCrEt{password}");
                u.password = Some(password.clone());
                let c = ConnectionConfig::from_url(&u.text())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let shown = format!("{c:?}");
                prop_assert!(!c.redacted_url().contains(&password));
                prop_assert!(!shown.contains(&password));
                let token = format!("ToKeN{token}");
                let d1 = format!("cloudflare_d1://{d1_id}?account_id=acc&api_token={token}");
                let c = ConnectionConfig::from_url(&d1)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(c.host.as_deref(), Some(d1_id.as_str()));
                prop_assert_eq!(c.option("api_token"), Some(token.as_str()));
                let shown = format!("{c:?}");
                prop_assert!(!c.redacted_url().contains(&token));
                prop_assert!(!shown.contains(&token));
                Ok(())
            },
        );
    }

    #[test]
    fn file_urls_give_back_their_parts() {
        let strategy = (
            prop_oneof![Just("sqlite"), Just("duckdb")],
            "\\PC{1,40}",
            options(),
        );
        check(
            "file URL round trip",
            2048,
            strategy,
            |(scheme, path, options)| {
                let mut text = format!("{scheme}:///{}", utf8_percent_encode(&path, PATH_SET));
                if !options.is_empty() {
                    text.push('?');
                    text.push_str(&query_of(&options));
                }
                let c = ConnectionConfig::from_url(&text)
                    .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                prop_assert_eq!(c.path.as_deref(), Some(path.as_str()), "{}", text);
                prop_assert_eq!(&c.options, &options, "{}", text);
                prop_assert_eq!(c.is_memory(), path == ":memory:");
                prop_assert_eq!(c.host.as_deref(), None);
                Ok(())
            },
        );
    }
}
