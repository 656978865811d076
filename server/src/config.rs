//! Server configuration: flags, each with an environment variable, over an
//! optional TOML file of environments, over built-in defaults that serve with
//! nothing set.

use crate::backend::PoolSettings;
use clap::Parser;
use iadb::ConnectionConfig;
use serde::Deserialize;
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

/// The database served when nothing is configured.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///./data/iadb.db";
/// The address served when nothing is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The name of the default database.
pub const DEFAULT_DATABASE_NAME: &str = "default";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `--database` value is not `NAME=URL`.
    #[error("--database expects NAME=URL, got `{0}`")]
    DatabaseFlag(String),
    /// A database URL does not parse.
    #[error("database `{name}`: {source}")]
    Url {
        /// The database's name.
        name: String,
        /// What is wrong with its URL.
        #[source]
        source: iadb::UrlError,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The selected environment is not in the config file.
    #[error("environment `{0}` is not defined in the config file")]
    UnknownEnvironment(String),
    /// App migration folders are wrong (bad names, duplicate versions...).
    #[error("app migrations for database `{name}`: {source}")]
    Migrations {
        /// The database.
        name: String,
        /// What is wrong.
        #[source]
        source: crate::migrate::source::SourceError,
    },
    /// `--app-migrations` names a database that is not configured.
    #[error("--app-migrations names database `{0}`, which is not configured")]
    MigrationsDatabase(String),
    /// The listen address does not parse.
    #[error("bad listen address `{0}`")]
    Listen(String),
    /// No tokens, and a listen address that other machines can reach.
    #[error(
        "refusing to listen on {0} without tokens: anyone who can reach it could read, change \
         and migrate every database. Give --tokens-file (IADB_TOKENS_FILE; `iadb token` makes \
         entries), require client certificates (--tls-client-ca), listen on a loopback address such as 127.0.0.1, or pass --insecure-no-auth \
         to serve it open anyway"
    )]
    Exposed(SocketAddr),
    /// The tokens file cannot be read or is not valid.
    #[error("{0}")]
    Tokens(#[from] crate::auth::TokensError),
    /// The TLS settings are incomplete or a file cannot be read.
    #[error("TLS: {0}")]
    Tls(String),
    /// A secret file (`@FILE`, `*_FILE`) cannot be read.
    #[error(transparent)]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    /// A `--replica` value is not `NAME=URL`.
    #[error("--replica expects DATABASE=URL, got `{0}`")]
    ReplicaFlag(String),
    /// A replica names a database that is not configured, or one whose
    /// engine has no replica routing.
    #[error("replica of database `{name}`: {reason}")]
    Replica {
        /// The database it names.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The default database's URL is given twice.
    #[error(
        "--database-url (DATABASE_URL) and --database-url-file (DATABASE_URL_FILE) are both set; set one"
    )]
    DatabaseUrlTwice,
}

/// Command-line flags of `iadb-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "iadb-server",
    version,
    about = "iadb: one gRPC API in front of SQLite, PostgreSQL, MySQL/MariaDB, DuckDB and Cloudflare D1"
)]
pub struct Cli {
    /// Without a subcommand the server serves.
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// Address to listen on.
    #[arg(long, env = "IADB_LISTEN")]
    pub listen: Option<String>,
    /// URL of the default database (`@FILE`: read from FILE).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
    /// A file holding the URL of the default database, so that the URL is
    /// in neither the command line nor the environment.
    #[arg(long = "database-url-file", env = "DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<PathBuf>,
    /// A named database, NAME=URL, or NAME=@FILE to read the URL from FILE;
    /// repeatable.
    #[arg(long = "database", value_name = "NAME=URL", global = true)]
    pub databases: Vec<String>,
    /// A read replica of a database, DATABASE=URL (DATABASE is the name
    /// in requests, `default` for the default database; URL may be @FILE);
    /// repeatable. PostgreSQL hot standbys only.
    #[arg(long = "replica", value_name = "DATABASE=URL", global = true)]
    pub replicas: Vec<String>,
    /// Milliseconds between replay-lag checks of each replica (default 200).
    #[arg(long, env = "IADB_REPLICA_CHECK_INTERVAL_MS")]
    pub replica_check_interval_ms: Option<u64>,
    /// Seconds a replica that failed stays out of rotation before it is
    /// checked again (default 5).
    #[arg(long, env = "IADB_REPLICA_BACKOFF_SECS")]
    pub replica_backoff_secs: Option<u64>,
    /// TOML config file with one table of settings per environment.
    #[arg(long, env = "IADB_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Which environment of the config file to use.
    #[arg(
        long,
        env = "ENVIRONMENT",
        default_value = "development",
        global = true
    )]
    pub environment: String,
    /// Most connections per database pool.
    #[arg(long, env = "IADB_POOL_MAX")]
    pub pool_max: Option<u32>,
    /// Seconds a call waits for a pooled connection before UNAVAILABLE.
    #[arg(long, env = "IADB_POOL_TIMEOUT_SECS", global = true)]
    pub pool_timeout_secs: Option<u64>,
    /// Most rows in one streamed batch.
    #[arg(long, env = "IADB_BATCH_ROWS")]
    pub batch_rows: Option<usize>,
    /// Most bytes (approximate, encoded) in one streamed batch.
    #[arg(long, env = "IADB_BATCH_BYTES")]
    pub batch_bytes: Option<usize>,
    /// Longest SQL text accepted, in bytes; longer is RESOURCE_EXHAUSTED.
    #[arg(long, env = "IADB_MAX_SQL_BYTES")]
    pub max_sql_bytes: Option<usize>,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "IADB_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Seconds a streamed result may wait for its client to read before it
    /// is ended (RESOURCE_EXHAUSTED) and its connection freed.
    #[arg(long, env = "IADB_STREAM_STALL_TIMEOUT_SECS")]
    pub stream_stall_timeout_secs: Option<u64>,
    /// Seconds a transaction may wait for its client's next request before
    /// it is rolled back (default 60).
    #[arg(long, env = "IADB_TRANSACTION_IDLE_TIMEOUT_SECS")]
    pub transaction_idle_timeout_secs: Option<u64>,
    /// Seconds a transaction may last in all before it is rolled back
    /// (default 600).
    #[arg(long, env = "IADB_TRANSACTION_MAX_SECS")]
    pub transaction_max_secs: Option<u64>,
    /// Most bytes the rows of one Batch may take in its response (default
    /// 4 MiB, gRPC's usual receive limit).
    #[arg(long, env = "IADB_MAX_BATCH_RESULT_BYTES")]
    pub max_batch_result_bytes: Option<usize>,
    /// Seconds that SIGTERM or SIGINT waits for in-flight calls and streams
    /// before the server stops them and exits.
    #[arg(long, env = "IADB_SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Most calls running at once per database (default: --pool-max).
    #[arg(long, env = "IADB_MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<usize>,
    /// Most calls waiting for a turn per database; more are
    /// RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "IADB_MAX_QUEUED_CALLS")]
    pub max_queued_calls: Option<usize>,
    /// Apply system and app migrations to every database before serving
    /// (`--migrate=false` to skip).
    #[arg(long, env = "IADB_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
    /// A folder of app migrations, `PATH` (default database) or
    /// `NAME=PATH`; repeatable, also per database.
    #[arg(long = "app-migrations", value_name = "[NAME=]PATH", global = true)]
    pub app_migrations: Vec<String>,
    /// Seconds to wait for another replica's migration lock.
    #[arg(
        long,
        env = "IADB_MIGRATE_LOCK_TIMEOUT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub migrate_lock_timeout_secs: u64,
    /// Refuse to start while any database cannot be reached (by default the
    /// server starts, reports it NOT_SERVING and connects it when it
    /// answers).
    #[arg(long, env = "IADB_REQUIRE_ALL_DATABASES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_all_databases: bool,
    /// Seconds between health checks of every database (standard health
    /// service status); databases that are down are retried as often.
    #[arg(long, env = "IADB_HEALTH_INTERVAL_SECS")]
    pub health_interval_secs: Option<u64>,
    /// Address of the Prometheus endpoint (`GET /metrics`), e.g.
    /// 127.0.0.1:9464; none by default.
    #[arg(long, env = "IADB_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// TOML file of bearer tokens (`[[token]]` entries: name, sha256, scope,
    /// databases); reloaded on SIGHUP. Without it calls need no token, which
    /// is only allowed on a loopback address (or with --insecure-no-auth).
    #[arg(long, env = "IADB_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address: anyone who can reach
    /// the port is then the database's owner.
    #[arg(long, env = "IADB_INSECURE_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,
    /// PEM certificate chain of the server: serve gRPC over TLS (with
    /// --tls-key).
    #[arg(long, env = "IADB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "IADB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate it signed
    /// (mTLS). Needs --tls-cert.
    #[arg(long, env = "IADB_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

/// What `iadb-server` does other than serve.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCommand {
    /// Runs one migration action on one database and exits, without
    /// serving: status, plan, apply, rollback, validate, repair, baseline
    /// (repair works when start-up migrations refuse). App migration folders
    /// come from `--app-migrations`, as for serving.
    Migrate(MigrateCommand),
}

/// `iadb-server migrate ACTION [--db NAME] [--target N] ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateCommand {
    /// The action.
    #[arg(value_enum)]
    pub action: MigrateActionName,
    /// The database to act on.
    #[arg(long = "db", value_name = "NAME", default_value = DEFAULT_DATABASE_NAME)]
    pub db: String,
    /// Target version: apply up to it, roll back to it, baseline at it.
    #[arg(long)]
    pub target: Option<u64>,
    /// Applied migrations without a file are not an error.
    #[arg(long)]
    pub allow_missing: bool,
    /// Pending migrations older than the newest applied one may be applied.
    #[arg(long)]
    pub allow_out_of_order: bool,
}

/// The actions of the Migrate RPC, as command-line words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateActionName {
    /// Every migration with its state.
    Status,
    /// The pending migrations and their SQL.
    Plan,
    /// Applies what is pending (app migrations up to `--target`).
    Apply,
    /// Runs undo files down to `--target`.
    Rollback,
    /// Checks applied migrations against the files.
    Validate,
    /// Deletes failed/pending rows, realigns changed checksums.
    Repair,
    /// Marks app migrations up to `--target` applied without running them.
    Baseline,
}

impl MigrateCommand {
    /// The runner's action; rollback and baseline need `--target`.
    pub fn action(&self) -> Result<crate::migrate::MigrateAction, iadb::Error> {
        use crate::migrate::MigrateAction as A;
        let need = |what: &str| {
            self.target
                .ok_or_else(|| iadb::Error::invalid_argument(format!("{what} needs --target")))
        };
        Ok(match self.action {
            MigrateActionName::Status => A::Status,
            MigrateActionName::Plan => A::Plan,
            MigrateActionName::Apply => A::Apply {
                target: self.target,
            },
            MigrateActionName::Rollback => A::Rollback {
                target: need("rollback")?,
            },
            MigrateActionName::Validate => A::Validate,
            MigrateActionName::Repair => A::Repair,
            MigrateActionName::Baseline => A::Baseline {
                target: need("baseline")?,
            },
        })
    }
}

/// One environment of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Database name -> URL; `default` is the default database.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Database name -> URLs of its read replicas.
    #[serde(default)]
    pub replicas: BTreeMap<String, Vec<String>>,
    /// Milliseconds between replay-lag checks of each replica.
    pub replica_check_interval_ms: Option<u64>,
    /// Seconds a failed replica stays out of rotation.
    pub replica_backoff_secs: Option<u64>,
    /// Most connections per pool.
    pub pool_max: Option<u32>,
    /// Seconds to wait for a pooled connection.
    pub pool_timeout_secs: Option<u64>,
    /// Most rows per streamed batch.
    pub batch_rows: Option<usize>,
    /// Most bytes per streamed batch.
    pub batch_bytes: Option<usize>,
    /// Longest SQL accepted.
    pub max_sql_bytes: Option<usize>,
    /// Largest request accepted.
    pub max_request_bytes: Option<usize>,
    /// Seconds a stream may wait for its client to read.
    pub stream_stall_timeout_secs: Option<u64>,
    /// Seconds a transaction may wait for its client's next request.
    pub transaction_idle_timeout_secs: Option<u64>,
    /// Seconds a transaction may last in all.
    pub transaction_max_secs: Option<u64>,
    /// Most bytes the rows of one Batch may take.
    pub max_batch_result_bytes: Option<usize>,
    /// Most calls running at once per database.
    pub max_concurrent_calls: Option<usize>,
    /// Most calls waiting for a turn per database.
    pub max_queued_calls: Option<usize>,
    /// Seconds between health checks.
    pub health_interval_secs: Option<u64>,
    /// Address of the Prometheus endpoint.
    pub metrics_listen: Option<String>,
    /// Refuse to start while a database cannot be reached.
    pub require_all_databases: Option<bool>,
    /// TOML file of bearer tokens (relative to the working directory).
    pub tokens_file: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address.
    pub insecure_no_auth: Option<bool>,
    /// PEM certificate chain of the server.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the server.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) of the clients (mTLS).
    pub tls_client_ca: Option<PathBuf>,
}

/// The config file: `[environments.NAME]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Settings per environment (development, testing, staging, production).
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentFile>,
}

/// One configured database.
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    /// Its name in requests.
    pub name: String,
    /// Where it is.
    pub config: ConnectionConfig,
    /// Its app migrations (from `--app-migrations`).
    pub app_migrations: Vec<crate::migrate::Migration>,
    /// Its read replicas (from `--replica`).
    pub replicas: Vec<ConnectionConfig>,
}

/// How replicas are watched ([`crate::replicas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Time between replay-lag checks of each replica.
    pub check_interval: Duration,
    /// How long a replica that failed stays out of rotation.
    pub backoff: Duration,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(200),
            backoff: Duration::from_secs(5),
        }
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The databases; the first is named [`DEFAULT_DATABASE_NAME`].
    pub databases: Vec<DatabaseSpec>,
    /// Pool settings for every database.
    pub pool: PoolSettings,
    /// Batching and size limits.
    pub limits: Limits,
    /// Interval of the background health checks.
    pub health_interval: Duration,
    /// How replicas are watched.
    pub replication: ReplicationSettings,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether to apply migrations at start-up.
    pub migrate: bool,
    /// Whether a database that cannot be reached stops the start.
    pub require_all_databases: bool,
    /// How strict start-up and RPC migration runs are.
    pub migrate_options: crate::migrate::MigrateOptions,
    /// The bearer tokens, when a tokens file is configured.
    pub tokens: Option<std::sync::Arc<crate::auth::TokenStore>>,
    /// Whether serving without tokens on a non-loopback address is allowed.
    pub insecure_no_auth: bool,
    /// TLS, when a certificate is configured.
    pub tls: Option<TlsSettings>,
}

/// The server's TLS material, read at start.
#[derive(Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Vec<u8>,
    /// PEM CA certificate(s) that sign the clients' certificates (mTLS).
    pub client_ca_pem: Option<Vec<u8>>,
    /// Where they were read from (read again when they change).
    paths: (PathBuf, PathBuf, Option<PathBuf>),
}

impl std::fmt::Debug for TlsSettings {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mtls", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the same files again.
    pub fn read_again(&self) -> Result<Self, ConfigError> {
        let (cert, key, ca) = self.paths.clone();
        Self::load(Some(cert), Some(key), ca)?
            .ok_or_else(|| ConfigError::Tls("no certificate".into()))
    }

    /// Whether `other` holds the same certificates and key.
    pub fn same_contents(&self, other: &Self) -> bool {
        self.cert_pem == other.cert_pem
            && self.key_pem == other.key_pem
            && self.client_ca_pem == other.client_ca_pem
    }

    /// Reads the files of `--tls-cert`, `--tls-key`, `--tls-client-ca`.
    fn load(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, ConfigError> {
        let read = |flag: &str, path: &PathBuf| {
            let bytes = std::fs::read(path)
                .map_err(|e| ConfigError::Tls(format!("{flag} {}: {e}", path.display())))?;
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
                return Err(ConfigError::Tls(format!(
                    "{flag} {}: not a PEM file",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        match (cert, key) {
            (None, None) if client_ca.is_some() => Err(ConfigError::Tls(
                "--tls-client-ca needs --tls-cert and --tls-key".into(),
            )),
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert_pem: read("--tls-cert", &cert)?,
                key_pem: read("--tls-key", &key)?,
                client_ca_pem: client_ca
                    .as_ref()
                    .map(|ca| read("--tls-client-ca", ca))
                    .transpose()?,
                paths: (cert, key, client_ca),
            })),
            _ => Err(ConfigError::Tls(
                "--tls-cert and --tls-key go together".into(),
            )),
        }
    }
}

/// Streaming and size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rows per batch.
    pub batch_rows: usize,
    /// Most bytes per batch (approximate).
    pub batch_bytes: usize,
    /// Longest SQL accepted.
    pub max_sql_bytes: usize,
    /// Largest request message accepted (and largest response message sent).
    pub max_message_bytes: usize,
    /// How long a stream waits for its client to read before it is ended.
    pub stream_stall_timeout: Duration,
    /// How long a transaction waits for its client's next request.
    pub transaction_idle_timeout: Duration,
    /// How long a transaction may last in all.
    pub transaction_max_life: Duration,
    /// Most bytes the rows of one Batch may take.
    pub batch_result_bytes: usize,
    /// Most calls running at once per database (by default the pool's
    /// size, so calls wait in line here rather than inside the pool).
    pub max_concurrent_calls: usize,
    /// Most calls waiting for a turn per database.
    pub max_queued_calls: usize,
    /// How long a call waits for its turn (the pool's acquire timeout).
    pub queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch_rows: 1024,
            batch_bytes: 1024 * 1024,
            max_sql_bytes: 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
            stream_stall_timeout: Duration::from_secs(30),
            transaction_idle_timeout: Duration::from_secs(60),
            transaction_max_life: Duration::from_secs(600),
            batch_result_bytes: 4 * 1024 * 1024,
            max_concurrent_calls: PoolSettings::default().max_connections as usize,
            max_queued_calls: 512,
            queue_timeout: PoolSettings::default().acquire_timeout,
        }
    }
}

impl Settings {
    /// Resolves flags over the config file over the defaults.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let file_env = match &cli.config {
            Some(path) => load_environment(path, &cli.environment)?,
            None => EnvironmentFile::default(),
        };
        let listen_text = cli
            .listen
            .clone()
            .or(file_env.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let metrics_listen = match cli
            .metrics_listen
            .clone()
            .or(file_env.metrics_listen.clone())
            .filter(|t| !t.trim().is_empty())
        {
            Some(text) => Some(
                text.trim()
                    .parse()
                    .map_err(|_| ConfigError::Listen(text.clone()))?,
            ),
            None => None,
        };

        // Named databases: the file's, then flags (a flag wins on a name).
        let mut named: BTreeMap<String, String> = file_env.databases.clone();
        for flag in &cli.databases {
            let (name, url) = flag
                .split_once('=')
                .filter(|(n, u)| !n.trim().is_empty() && !u.trim().is_empty())
                .ok_or_else(|| ConfigError::DatabaseFlag(redact_flag(flag)))?;
            named.insert(name.trim().to_owned(), url.trim().to_owned());
        }
        let flag_url = match (&cli.database_url, &cli.database_url_file) {
            (Some(_), Some(_)) => return Err(ConfigError::DatabaseUrlTwice),
            (Some(url), None) => Some(url.clone()),
            (None, Some(path)) => Some(format!("@{}", path.display())),
            (None, None) => None,
        };
        let default_url = flag_url
            .or_else(|| named.remove(DEFAULT_DATABASE_NAME))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        named.remove(DEFAULT_DATABASE_NAME);

        let mut databases = Vec::with_capacity(named.len() + 1);
        for (name, url) in
            std::iter::once((DEFAULT_DATABASE_NAME.to_owned(), default_url)).chain(named)
        {
            let url = crate::secret_file::resolve(&url, &format!("database `{name}`"))?;
            let config = ConnectionConfig::from_url(&url).map_err(|source| ConfigError::Url {
                name: name.clone(),
                source,
            })?;
            databases.push(DatabaseSpec {
                name,
                config,
                app_migrations: Vec::new(),
                replicas: Vec::new(),
            });
        }
        add_replicas(&mut databases, &file_env.replicas, &cli.replicas)?;
        let mut folders: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for flag in &cli.app_migrations {
            let (name, path) = match flag.split_once('=') {
                Some((n, p)) if !n.contains(['/', '\\']) => (n.trim().to_owned(), p),
                _ => (DEFAULT_DATABASE_NAME.to_owned(), flag.as_str()),
            };
            folders.entry(name).or_default().push(PathBuf::from(path));
        }
        for (name, paths) in folders {
            let spec = databases
                .iter_mut()
                .find(|d| d.name == name)
                .ok_or_else(|| ConfigError::MigrationsDatabase(name.clone()))?;
            spec.app_migrations = crate::migrate::source::parse_folders(&paths)
                .map_err(|source| ConfigError::Migrations { name, source })?;
        }

        let tokens = match cli.tokens_file.clone().or(file_env.tokens_file.clone()) {
            Some(path) => Some(std::sync::Arc::new(crate::auth::TokenStore::load(&path)?)),
            None => None,
        };
        let tls = TlsSettings::load(
            cli.tls_cert.clone().or(file_env.tls_cert.clone()),
            cli.tls_key.clone().or(file_env.tls_key.clone()),
            cli.tls_client_ca.clone().or(file_env.tls_client_ca.clone()),
        )?;
        let defaults = Limits::default();
        let pool_defaults = PoolSettings::default();
        let pool = PoolSettings {
            max_connections: cli
                .pool_max
                .or(file_env.pool_max)
                .unwrap_or(pool_defaults.max_connections),
            acquire_timeout: cli
                .pool_timeout_secs
                .or(file_env.pool_timeout_secs)
                .map(Duration::from_secs)
                .unwrap_or(pool_defaults.acquire_timeout),
        };
        Ok(Settings {
            listen,
            databases,
            pool,
            limits: Limits {
                batch_rows: cli
                    .batch_rows
                    .or(file_env.batch_rows)
                    .unwrap_or(defaults.batch_rows)
                    .max(1),
                batch_bytes: cli
                    .batch_bytes
                    .or(file_env.batch_bytes)
                    .unwrap_or(defaults.batch_bytes)
                    .max(1),
                max_sql_bytes: cli
                    .max_sql_bytes
                    .or(file_env.max_sql_bytes)
                    .unwrap_or(defaults.max_sql_bytes),
                max_message_bytes: cli
                    .max_request_bytes
                    .or(file_env.max_request_bytes)
                    .unwrap_or(defaults.max_message_bytes),
                stream_stall_timeout: cli
                    .stream_stall_timeout_secs
                    .or(file_env.stream_stall_timeout_secs)
                    .map_or(defaults.stream_stall_timeout, |s| {
                        Duration::from_secs(s.max(1))
                    }),
                transaction_idle_timeout: cli
                    .transaction_idle_timeout_secs
                    .or(file_env.transaction_idle_timeout_secs)
                    .map_or(defaults.transaction_idle_timeout, |s| {
                        Duration::from_secs(s.max(1))
                    }),
                transaction_max_life: cli
                    .transaction_max_secs
                    .or(file_env.transaction_max_secs)
                    .map_or(defaults.transaction_max_life, |s| {
                        Duration::from_secs(s.max(1))
                    }),
                batch_result_bytes: cli
                    .max_batch_result_bytes
                    .or(file_env.max_batch_result_bytes)
                    .unwrap_or(defaults.batch_result_bytes),
                max_concurrent_calls: cli
                    .max_concurrent_calls
                    .or(file_env.max_concurrent_calls)
                    .unwrap_or(pool.max_connections as usize)
                    .max(1),
                max_queued_calls: cli
                    .max_queued_calls
                    .or(file_env.max_queued_calls)
                    .unwrap_or(defaults.max_queued_calls),
                queue_timeout: pool.acquire_timeout,
            },
            migrate: cli.migrate,
            // The flag (or its variable) wins when given; clap cannot say
            // whether `false` was given or defaulted, so `true` from either wins.
            require_all_databases: cli.require_all_databases
                || file_env.require_all_databases.unwrap_or(false),
            migrate_options: crate::migrate::MigrateOptions {
                lock_timeout: Duration::from_secs(cli.migrate_lock_timeout_secs),
                ..Default::default()
            },
            health_interval: Duration::from_secs(
                cli.health_interval_secs
                    .or(file_env.health_interval_secs)
                    .unwrap_or(5)
                    .max(1),
            ),
            replication: {
                let defaults = ReplicationSettings::default();
                ReplicationSettings {
                    check_interval: cli
                        .replica_check_interval_ms
                        .or(file_env.replica_check_interval_ms)
                        .map_or(defaults.check_interval, |ms| {
                            Duration::from_millis(ms.max(10))
                        }),
                    backoff: cli
                        .replica_backoff_secs
                        .or(file_env.replica_backoff_secs)
                        .map_or(defaults.backoff, |s| Duration::from_secs(s.max(1))),
                }
            },
            metrics_listen,
            tokens,
            insecure_no_auth: cli.insecure_no_auth || file_env.insecure_no_auth.unwrap_or(false),
            tls,
        })
    }

    /// Refuses to serve without tokens on an address other than loopback
    /// (unless `--insecure-no-auth`): without tokens, whoever reaches the
    /// port has every right on every database.
    /// Client certificates (mTLS) count as authentication here: only the
    /// holders of a certificate the CA signed can connect.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
        if self.tokens.is_none()
            && !mtls
            && !self.listen.ip().is_loopback()
            && !self.insecure_no_auth
        {
            return Err(ConfigError::Exposed(self.listen));
        }
        Ok(())
    }
}

/// Adds the replicas of the config file's `replicas` table, then those of
/// `--replica DATABASE=URL` flags, to the databases they name. A replica
/// must be PostgreSQL in front of a PostgreSQL database, and name one host.
fn add_replicas(
    databases: &mut [DatabaseSpec],
    file: &BTreeMap<String, Vec<String>>,
    flags: &[String],
) -> Result<(), ConfigError> {
    let mut listed: Vec<(String, String)> = file
        .iter()
        .flat_map(|(name, urls)| urls.iter().map(|u| (name.clone(), u.clone())))
        .collect();
    for flag in flags {
        let (name, url) = flag
            .split_once('=')
            .filter(|(n, u)| !n.trim().is_empty() && !u.trim().is_empty())
            .ok_or_else(|| ConfigError::ReplicaFlag(redact_flag(flag)))?;
        listed.push((name.trim().to_owned(), url.trim().to_owned()));
    }
    for (name, url) in listed {
        let bad = |reason: String| ConfigError::Replica {
            name: name.clone(),
            reason,
        };
        let spec = databases
            .iter_mut()
            .find(|d| d.name == name)
            .ok_or_else(|| bad("no database of that name is configured".to_owned()))?;
        let url = crate::secret_file::resolve(&url, &format!("replica of database `{name}`"))?;
        let config = ConnectionConfig::from_url(&url).map_err(|source| ConfigError::Url {
            name: format!("{name} (replica)"),
            source,
        })?;
        if spec.config.db_type != iadb::DatabaseType::Postgresql
            || config.db_type != iadb::DatabaseType::Postgresql
        {
            return Err(bad(
                "replicas are routed for PostgreSQL only (a postgresql:// database and \
                 postgresql:// replicas); see docs/replicas.md"
                    .to_owned(),
            ));
        }
        if !config.hosts.is_empty() {
            return Err(bad(
                "a replica names one host; give each standby its own --replica".to_owned(),
            ));
        }
        spec.replicas.push(config);
    }
    Ok(())
}

/// Shows a bad `--database` flag without the password its URL may hold.
fn redact_flag(flag: &str) -> String {
    match flag.split_once('=') {
        Some((name, url)) => match ConnectionConfig::from_url(url) {
            Ok(c) => format!("{name}={}", c.redacted_url()),
            Err(_) => format!("{name}=<url>"),
        },
        None if flag.contains("://") => "<url>".to_owned(),
        None => flag.to_owned(),
    }
}

fn load_environment(path: &PathBuf, environment: &str) -> Result<EnvironmentFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    file.environments
        .remove(environment)
        .ok_or_else(|| ConfigError::UnknownEnvironment(environment.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("iadb-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_serve_sqlite_on_loopback() {
        let mut c = cli(&[]);
        c.database_url = None; // the test's environment may set DATABASE_URL
        c.database_url_file = None;
        c.listen = None;
        c.config = None;
        let s = Settings::from_cli(&c).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.databases.len(), 1);
        assert_eq!(s.databases[0].name, "default");
        assert_eq!(
            s.databases[0].config.path.as_deref(),
            Some("./data/iadb.db")
        );
    }

    #[test]
    fn named_databases_and_bad_flags() {
        let mut c = cli(&[
            "--database",
            "a=sqlite:///:memory:",
            "--database-url",
            "sqlite:///x.db",
        ]);
        c.config = None;
        let s = Settings::from_cli(&c).unwrap();
        let names: Vec<_> = s.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["default", "a"]);
        let mut bad = cli(&["--database", "nourl"]);
        bad.config = None;
        assert!(matches!(
            Settings::from_cli(&bad),
            Err(ConfigError::DatabaseFlag(_))
        ));
        let mut secret = cli(&["--database", "b=postgresql://u:hunter2@h:notaport/db"]);
        secret.config = None;
        let err = Settings::from_cli(&secret).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn replicas_from_flags_and_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("iadb.toml");
        std::fs::write(
            &file,
            "[environments.development]\nreplica_backoff_secs = 9\n[environments.development.replicas]\nsales = [\"postgresql://u@standby1/sales\"]\n",
        )
        .unwrap();
        let c = cli(&[
            "--database-url",
            "postgresql://u@h1:5432,h2:5432/app?target_session_attrs=read-write",
            "--database",
            "sales=postgresql://u@primary/sales",
            "--replica",
            "default=postgresql://u:hunter2@standby2:5433/app",
            "--replica",
            "sales=postgresql://u@standby3/sales",
            "--config",
            file.to_str().unwrap(),
        ]);
        let s = Settings::from_cli(&c).unwrap();
        let hosts = |i: usize| -> Vec<String> {
            s.databases[i]
                .replicas
                .iter()
                .map(|r| r.host.clone().unwrap_or_default())
                .collect()
        };
        assert_eq!(s.databases[0].config.hosts.len(), 2);
        assert_eq!(hosts(0), ["standby2"]);
        assert_eq!(hosts(1), ["standby1", "standby3"]);
        assert_eq!(s.replication.backoff, Duration::from_secs(9));
        assert_eq!(s.replication.check_interval, Duration::from_millis(200));
        let refused = |args: &[&str]| {
            let mut c = cli(args);
            c.config = None;
            Settings::from_cli(&c).unwrap_err().to_string()
        };
        let err = refused(&["--replica", "nope=postgresql://u:hunter2@h/db"]);
        assert!(err.contains("no database of that name"), "{err}");
        assert!(refused(&["--replica", "default"]).contains("DATABASE=URL"));
        // SQLite (the default database here) has no replicas.
        let err = refused(&["--replica", "default=postgresql://u:hunter2@h/db"]);
        assert!(err.contains("PostgreSQL only"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn require_all_databases_and_the_migrate_subcommand_parse() {
        assert!(!cli(&[]).require_all_databases);
        assert!(cli(&["--require-all-databases"]).require_all_databases);
        assert!(!cli(&["--require-all-databases=false"]).require_all_databases);
        // A flag before the subcommand does not swallow its name.
        let c = cli(&[
            "--require-all-databases",
            "migrate",
            "repair",
            "--db",
            "pg",
            "--database-url",
            "sqlite:///./a.db",
            "--app-migrations",
            "./m",
        ]);
        let Some(ServerCommand::Migrate(m)) = &c.command else {
            panic!("{c:?}");
        };
        assert_eq!(m.db, "pg");
        assert_eq!(m.action().unwrap(), crate::migrate::MigrateAction::Repair);
        assert_eq!(c.database_url.as_deref(), Some("sqlite:///./a.db"));
        assert_eq!(c.app_migrations, ["./m"]);
        let rollback = cli(&["migrate", "rollback"]);
        let Some(ServerCommand::Migrate(m)) = &rollback.command else {
            panic!("{rollback:?}");
        };
        assert!(m.action().unwrap_err().message().contains("--target"));
    }

    #[test]
    fn tokens_and_insecure_no_auth_from_the_config_file_and_the_exposure_rule() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, "").unwrap();
        let path = dir.path().join("iadb.toml");
        let write = |extra: &str| {
            std::fs::write(
                &path,
                format!("[environments.testing]\nlisten = \"0.0.0.0:6000\"\n{extra}"),
            )
            .unwrap();
            let mut c = cli(&[]);
            c.database_url = Some("sqlite:///:memory:".into());
            c.listen = None;
            c.tokens_file = None;
            c.insecure_no_auth = false;
            (c.tls_cert, c.tls_key, c.tls_client_ca) = (None, None, None);
            c.config = Some(path.clone());
            c.environment = "testing".into();
            Settings::from_cli(&c)
        };
        let open = write("").unwrap();
        assert!(matches!(
            open.check_exposure(),
            Err(ConfigError::Exposed(_))
        ));
        let insecure = write("insecure_no_auth = true\n").unwrap();
        assert!(insecure.check_exposure().is_ok());
        let guarded = write(&format!(
            "tokens_file = {:?}\n",
            tokens.display().to_string()
        ))
        .unwrap();
        assert!(guarded.tokens.is_some() && guarded.check_exposure().is_ok());
        let missing = write("tokens_file = \"/nonexistent/tokens.toml\"\n").unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/tokens.toml"),
            "{missing}"
        );
        let half_tls = write("tls_cert = \"/x.pem\"\n").unwrap_err();
        assert!(half_tls.to_string().contains("--tls-key"), "{half_tls}");
    }

    #[test]
    fn config_file_environments() {
        let dir = std::env::temp_dir().join(format!("iadb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("iadb.toml");
        std::fs::write(
            &path,
            "[environments.testing]\nlisten = \"127.0.0.1:6000\"\npool_max = 3\n[environments.testing.databases]\ndefault = \"sqlite:///:memory:\"\nother = \"sqlite:///./o.db\"\n",
        )
        .unwrap();
        let mut c = cli(&[]);
        c.database_url = None;
        c.database_url_file = None;
        c.listen = None;
        c.config = Some(path.clone());
        c.environment = "testing".into();
        let s = Settings::from_cli(&c).unwrap();
        assert_eq!(s.listen.port(), 6000);
        assert_eq!(s.pool.max_connections, 3);
        assert!(s.databases[0].config.is_memory());
        assert_eq!(s.databases[1].name, "other");
        c.environment = "production".into();
        assert!(matches!(
            Settings::from_cli(&c),
            Err(ConfigError::UnknownEnvironment(_))
        ));
    }
}
