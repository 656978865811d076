//! Bearer tokens: the tokens file, who a token stands for, and what it may
//! do.
//!
//! The file (`--tokens-file`) is TOML, one `[[token]]` entry per token:
//! its `name` (shown in logs, metrics and spans), the hex SHA-256 of the
//! token (the token itself is never stored), its `scope` (`read` < `write`
//! < `admin`), the `databases` it may use (`["*"]` for all) and optional
//! per-token limits. The server keeps the parsed file in a [`TokenStore`],
//! which SIGHUP reloads: a file that does not parse then keeps the tokens
//! in force, and the error is logged.
//!
//! A presented token is hashed and compared with every entry's hash in
//! constant time ([`subtle`]), without stopping at a match, so the time an
//! answer takes says nothing about which hash, or how much of one, matched.
//!
//! The authenticated [`Identity`] travels with the request (an extension
//! set by [`crate::layer`]); the handlers check the database grant and the
//! scopes that depend on the request's body (a Batch or a Transaction that
//! is not read-only needs `write`).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Queries: FetchAll, FetchOne, TableExists, Health, read-only Batch
    /// and Transaction.
    Read,
    /// Also Execute, ExecuteMany, Batch and Transaction.
    Write,
    /// Also Migrate (every action).
    Admin,
}

impl Scope {
    /// The scope's name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The databases a token may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    /// `["*"]`.
    All,
    /// These configured names.
    Only(Vec<String>),
}

impl Databases {
    /// Whether `name` (a configured database name) is granted.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Databases::All => true,
            Databases::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Who a call's token stands for: what the handlers see.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's name (never the token).
    pub name: Arc<str>,
    /// Its scope.
    pub scope: Scope,
    /// The databases it may use.
    pub databases: Arc<Databases>,
    /// For a read-scoped token set to prefer replicas
    /// (`max_staleness_ms`): the staleness its reads accept when the
    /// request does not choose a consistency itself.
    pub max_staleness: Option<std::time::Duration>,
}

impl Identity {
    /// The identity a request carries (set by the auth layer), if any. A
    /// server without a tokens file sets none, and calls are unrestricted.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Identity> {
        request.extensions().get::<Identity>().cloned()
    }
}

/// One `[[token]]` entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: toml::Spanned<String>,
    /// The SHA-256 of a bearer token...
    #[serde(default)]
    sha256: Option<toml::Spanned<String>>,
    /// ...or of a client certificate (DER), for mTLS clients that send no
    /// token.
    #[serde(default)]
    client_cert_sha256: Option<toml::Spanned<String>>,
    scope: Scope,
    databases: toml::Spanned<Vec<String>>,
    /// Most calls per second (a burst of as many is allowed).
    #[serde(default)]
    requests_per_second: Option<u32>,
    /// Most calls running at once (streams count until they end).
    #[serde(default)]
    max_concurrent_calls: Option<u32>,
    /// A read-scoped token's preference for replicas: its reads that do
    /// not choose a consistency are BOUNDED_STALENESS with this bound.
    #[serde(default)]
    max_staleness_ms: Option<toml::Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The file cannot be read.
    #[error("tokens file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid (the message names the line).
    #[error("tokens file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        reason: String,
    },
}

/// Per-token limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenLimits {
    requests_per_second: Option<u32>,
    max_concurrent_calls: Option<u32>,
}

/// The limits of one token while the server runs.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: TokenLimits,
    bucket: Option<Mutex<Bucket>>,
    concurrent: Option<Arc<Semaphore>>,
}

/// A token bucket: `rate` tokens a second, holding at most `rate`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a call was refused by its token's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitExceeded {
    Rate(u32),
    Concurrency(u32),
}

impl LimitExceeded {
    pub(crate) fn message(self, token: &str) -> String {
        match self {
            LimitExceeded::Rate(n) => format!(
                "token `{token}` is limited to {n} calls per second (requests_per_second in the \
                 tokens file); slow down and retry"
            ),
            LimitExceeded::Concurrency(n) => format!(
                "token `{token}` is limited to {n} calls at once (max_concurrent_calls in the \
                 tokens file), streams and transactions included until they end"
            ),
        }
    }
}

impl Limiter {
    fn new(limits: TokenLimits) -> Self {
        Self {
            limits,
            bucket: limits.requests_per_second.map(|rate| {
                Mutex::new(Bucket {
                    rate: f64::from(rate),
                    tokens: f64::from(rate),
                    refilled: Instant::now(),
                })
            }),
            concurrent: limits
                .max_concurrent_calls
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    /// Admits one call: a rate token, then a concurrency permit held until
    /// the call's response ends.
    pub(crate) fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, LimitExceeded> {
        if let (Some(bucket), Some(rate)) = (&self.bucket, self.limits.requests_per_second) {
            // A poisoned lock only means another call panicked mid-update;
            // the bucket's numbers are still numbers.
            let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
            if !bucket.take(Instant::now()) {
                return Err(LimitExceeded::Rate(rate));
            }
        }
        match (&self.concurrent, self.limits.max_concurrent_calls) {
            (Some(semaphore), Some(n)) => semaphore
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| LimitExceeded::Concurrency(n)),
            _ => Ok(None),
        }
    }
}

/// One token of the file, ready to check.
#[derive(Debug)]
pub(crate) struct Token {
    hash: Credential,
    pub(crate) identity: Identity,
    pub(crate) limiter: Arc<Limiter>,
}

/// What an entry is matched by: the SHA-256 of a bearer token, or of a
/// client certificate's DER.
#[derive(Debug, Clone, Copy)]
enum Credential {
    Token([u8; 32]),
    Certificate([u8; 32]),
}

/// The tokens of one version of the file.
#[derive(Debug, Default)]
pub struct TokenSet {
    tokens: Vec<Token>,
}

impl TokenSet {
    /// Parses a tokens file's text; `path` is for messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        Self::parse_keeping(text, path, None)
    }

    /// Parses, keeping the limiters (their counts) of `previous` for the
    /// tokens whose name and limits are unchanged, so that a reload does not
    /// hand every token a fresh burst.
    fn parse_keeping(
        text: &str,
        path: &Path,
        previous: Option<&TokenSet>,
    ) -> Result<Self, TokensError> {
        let invalid = |reason: String| TokensError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: TokensFile = toml::from_str(text).map_err(|e| {
            // toml's message names the line and column; it quotes the
            // line, which may hold a hash but never a token.
            invalid(e.to_string().trim_end().to_owned())
        })?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.token.len());
        for entry in file.token {
            let TokenEntry {
                name,
                sha256,
                client_cert_sha256,
                scope,
                databases,
                requests_per_second,
                max_concurrent_calls,
                max_staleness_ms,
            } = entry;
            let name_line = line_of(name.span().start);
            let name = name.into_inner();
            if name.trim().is_empty() {
                return Err(invalid(format!(
                    "line {name_line}: a token's name is empty"
                )));
            }
            if tokens.iter().any(|t| *t.identity.name == *name) {
                return Err(invalid(format!(
                    "line {name_line}: the name `{name}` is used by another token"
                )));
            }
            let hash = match (sha256, client_cert_sha256) {
                (Some(sha256), None) => {
                    let hash_line = line_of(sha256.span().start);
                    Credential::Token(parse_hash(sha256.get_ref()).ok_or_else(|| {
                        invalid(format!(
                            "line {hash_line}: token `{name}`: sha256 must be 64 hex digits (the \
                             SHA-256 of the token; `iadb token` prints it)"
                        ))
                    })?)
                }
                (None, Some(sha256)) => {
                    let hash_line = line_of(sha256.span().start);
                    Credential::Certificate(parse_hash(sha256.get_ref()).ok_or_else(|| {
                        invalid(format!(
                            "line {hash_line}: token `{name}`: client_cert_sha256 must be 64 hex \
                             digits (the SHA-256 of the certificate's DER, as `openssl x509 \
                             -in c.pem -outform der | sha256sum` prints it)"
                        ))
                    })?)
                }
                _ => {
                    return Err(invalid(format!(
                        "line {name_line}: token `{name}` needs one of sha256 (a bearer token) \
                         and client_cert_sha256 (a client certificate)"
                    )));
                }
            };
            let databases_line = line_of(databases.span().start);
            let databases = databases.into_inner();
            let databases = if databases.iter().any(|d| d == "*") {
                Databases::All
            } else if databases.is_empty() {
                return Err(invalid(format!(
                    "line {databases_line}: token `{name}`: databases is empty (name them, or \
                     [\"*\"] for all)"
                )));
            } else {
                Databases::Only(databases)
            };
            if requests_per_second == Some(0) || max_concurrent_calls == Some(0) {
                return Err(invalid(format!(
                    "line {name_line}: token `{name}`: a limit of 0 would refuse every call \
                     (leave it out for no limit)"
                )));
            }
            let max_staleness = match max_staleness_ms {
                Some(ms) if scope != Scope::Read => {
                    return Err(invalid(format!(
                        "line {}: token `{name}`: max_staleness_ms is for read-scoped tokens \
                         (a token that writes would read its own writes late)",
                        line_of(ms.span().start)
                    )));
                }
                Some(ms) => Some(std::time::Duration::from_millis(u64::from(ms.into_inner()))),
                None => None,
            };
            let limits = TokenLimits {
                requests_per_second,
                max_concurrent_calls,
            };
            let limiter = previous
                .and_then(|p| p.tokens.iter().find(|t| *t.identity.name == *name))
                .filter(|t| t.limiter.limits == limits)
                .map(|t| t.limiter.clone())
                .unwrap_or_else(|| Arc::new(Limiter::new(limits)));
            tokens.push(Token {
                hash,
                identity: Identity {
                    name: Arc::from(name),
                    scope,
                    databases: Arc::new(databases),
                    max_staleness,
                },
                limiter,
            });
        }
        Ok(Self { tokens })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is none (every call is then refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The (token name, database name) pairs whose database is not among
    /// `configured`: a typo there grants nothing, so it is worth a warning.
    pub fn unknown_databases<'a>(
        &'a self,
        configured: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.tokens.iter().flat_map(move |t| {
            let names: &[String] = match &*t.identity.databases {
                Databases::All => &[],
                Databases::Only(names) => names,
            };
            names
                .iter()
                .filter(move |n| !configured.contains(&n.as_str()))
                .map(move |n| (&*t.identity.name, n.as_str()))
        })
    }

    /// The token whose hash is the SHA-256 of `presented`. Every entry is
    /// compared, in constant time, whatever matched.
    pub(crate) fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if let Credential::Token(hash) = &token.hash
                && bool::from(hash.ct_eq(&digest))
            {
                found = Some(token);
            }
        }
        found
    }

    /// The entry whose `client_cert_sha256` is the SHA-256 of `der` (a
    /// client certificate the TLS handshake verified), compared as
    /// [`TokenSet::find`] does.
    pub(crate) fn find_certificate(&self, der: &[u8]) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        let mut found = None;
        for token in &self.tokens {
            if let Credential::Certificate(hash) = &token.hash
                && bool::from(hash.ct_eq(&digest))
            {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// The tokens in force, and the file they come from.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Arc<TokenSet>>,
}

impl TokenStore {
    /// Reads and parses the file; an error names the line.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let set = read(path, None)?;
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens in force now.
    pub fn current(&self) -> Arc<TokenSet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the file again. On an error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let previous = self.current();
        let set = read(&self.path, Some(&previous))?;
        let count = set.len();
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut current) => *current = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(count)
    }
}

fn read(path: &Path, previous: Option<&TokenSet>) -> Result<TokenSet, TokensError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokensError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    TokenSet::parse_keeping(&text, path, previous)
}

/// Reloads `store` on every SIGHUP, for the life of the server.
pub(crate) async fn reload_on_sighup(store: Arc<TokenStore>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGHUP, tokens will not be reloaded: {e}");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match store.reload() {
                Ok(count) => tracing::info!(
                    file = %store.path().display(),
                    tokens = count,
                    "SIGHUP: tokens reloaded"
                ),
                Err(e) => tracing::error!("SIGHUP: {e}; the tokens in force are kept"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = store;
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sha(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn parses_entries_and_finds_tokens_by_hash() {
        let text = format!(
            "[[token]]\nname = \"reporting\"\nsha256 = \"{}\"\nscope = \"read\"\ndatabases = [\"default\"]\n\n[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\ndatabases = [\"*\"]\nrequests_per_second = 5\n",
            sha("t-read"),
            sha("t-admin")
        );
        let set = TokenSet::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(set.len(), 2);
        let read = set.find("t-read").unwrap();
        assert_eq!(&*read.identity.name, "reporting");
        assert_eq!(read.identity.scope, Scope::Read);
        assert!(read.identity.databases.allows("default"));
        assert!(!read.identity.databases.allows("other"));
        let admin = set.find("t-admin").unwrap();
        assert!(admin.identity.databases.allows("anything"));
        assert!(set.find("t-nope").is_none());
        let unknown: Vec<_> = set.unknown_databases(&["other"]).collect();
        assert_eq!(unknown, [("reporting", "default")]);
        assert!(Scope::Read < Scope::Write && Scope::Write < Scope::Admin);
    }

    #[test]
    fn a_read_token_may_prefer_replicas_and_a_writing_one_may_not() {
        let entry = |scope: &str| {
            format!(
                "[[token]]\nname = \"r\"\nsha256 = \"{}\"\nscope = \"{scope}\"\ndatabases = [\"*\"]\nmax_staleness_ms = 750\n",
                sha("t")
            )
        };
        let set = TokenSet::parse(&entry("read"), Path::new("t.toml")).unwrap();
        assert_eq!(
            set.find("t").unwrap().identity.max_staleness,
            Some(Duration::from_millis(750))
        );
        for scope in ["write", "admin"] {
            let e = TokenSet::parse(&entry(scope), Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 6") && e.contains("read-scoped"),
                "{scope}: {e}"
            );
        }
        let plain = "[[token]]\nname = \"p\"\nsha256 = \"".to_owned()
            + &sha("p")
            + "\"\nscope = \"read\"\ndatabases = [\"*\"]\n";
        let set = TokenSet::parse(&plain, Path::new("t.toml")).unwrap();
        assert_eq!(set.find("p").unwrap().identity.max_staleness, None);
    }

    #[test]
    fn errors_name_the_line() {
        let bad_scope =
            "[[token]]\nname = \"a\"\nsha256 = \"00\"\nscope = \"root\"\ndatabases = [\"*\"]\n";
        let e = TokenSet::parse(bad_scope, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4"), "{e}");
        let bad_hash =
            "[[token]]\nname = \"a\"\nsha256 = \"xyz\"\nscope = \"read\"\ndatabases = [\"*\"]\n";
        let e = TokenSet::parse(bad_hash, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("64 hex"), "{e}");
        let neither = "[[token]]\nname = \"a\"\nscope = \"read\"\ndatabases = [\"*\"]\n";
        let e = TokenSet::parse(neither, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("client_cert_sha256"),
            "{e}"
        );
        let dup = format!(
            "[[token]]\nname = \"a\"\nsha256 = \"{0}\"\nscope = \"read\"\ndatabases = [\"*\"]\n[[token]]\nname = \"a\"\nsha256 = \"{0}\"\nscope = \"read\"\ndatabases = [\"*\"]\n",
            sha("x")
        );
        let e = TokenSet::parse(&dup, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn a_bucket_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket {
            rate: 2.0,
            tokens: 2.0,
            refilled: start,
        };
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(500)));
        assert!(!bucket.take(start + Duration::from_millis(500)));
    }
}
