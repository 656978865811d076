//! iadb-server: the gRPC service in front of SQLite, PostgreSQL,
//! MySQL/MariaDB, DuckDB and Cloudflare D1.
//!
//! `config` turns flags, environment and an optional TOML file into
//! [`Settings`]; `registry` holds one adapter per named database;
//! `service` is the gRPC handlers; `server` binds, serves and shuts down;
//! `metrics` is the Prometheus endpoint.
//! Adapters live in `backend`, one module per engine behind its feature.

mod admission;
pub mod auth;
pub mod backend;
pub mod config;
pub mod layer;
mod linger;
pub mod metrics;
pub mod migrate;
pub mod placeholders;
mod registry;
mod replicas;
pub mod secret_file;
mod server;
mod service;
pub mod tls;
mod transaction;

pub use config::{Cli, ConfigError, MigrateCommand, ServerCommand, Settings};
pub use registry::{Registry, StartupPolicy};
pub use server::{BoundServer, OVERALL_HEALTH_SERVICE, migrate_once, shutdown_signal};
pub use service::DatabaseService;

use clap::Parser;
use std::process::ExitCode;

/// The `iadb-server` program: parse flags, bind, print the address, serve
/// until SIGINT/SIGTERM; or, with `migrate ACTION`, run that migration
/// action and exit. Exit code 2 for bad configuration, 1 for failures.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: log files and collectors get text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = match Settings::from_cli(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iadb-server: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iadb-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(ServerCommand::Migrate(command)) = &cli.command {
        return runtime.block_on(run_migrate_command(&settings, command));
    }
    let grace = std::time::Duration::from_secs(cli.shutdown_grace_secs);
    let code = runtime.block_on(async {
        // Installed before the listener exists (see `shutdown_signal`).
        let signal = shutdown_signal();
        let server = match BoundServer::bind(settings).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("iadb-server: {}", e.message());
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            // Printed on stdout so scripts and tests can find the port.
            Ok(addr) => println!("iadb-server listening on {addr}"),
            Err(e) => {
                eprintln!("iadb-server: {}", e.message());
                return ExitCode::FAILURE;
            }
        }
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            signal.await;
            let _ = signalled.send(());
        };
        // In-flight work gets `grace` after the signal; past it the server
        // stops waiting (a statement that ignores interrupts, a stream
        // nobody reads) rather than outlive its orchestrator's patience.
        let grace_over = async move {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = server.serve(shutdown) => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("iadb-server: {}", e.message());
                    ExitCode::FAILURE
                }
            },
            () = grace_over => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "in-flight calls did not finish within the grace period \
                     (--shutdown-grace-secs); stopping them"
                );
                ExitCode::SUCCESS
            }
        }
    });
    // Blocking engine work (a DuckDB statement) is not waited for without
    // end: dropping the runtime would.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// `iadb-server migrate ACTION`: the report on stdout, one migration a line
/// (`version type state applied_at checksum_ok filename`), then what changed.
async fn run_migrate_command(settings: &Settings, command: &MigrateCommand) -> ExitCode {
    let report = match server::migrate_once(settings, command).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iadb-server migrate: {}", e.message());
            return if e.kind() == iadb::ErrorKind::InvalidArgument {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let plan = command.action == config::MigrateActionName::Plan;
    for m in &report.migrations {
        let applied_at = if m.applied_at.is_empty() {
            "-"
        } else {
            m.applied_at.as_str()
        };
        println!(
            "{}\t{}\t{}\t{}\tchecksum_ok={}\t{}",
            m.version, m.migration_type, m.state, applied_at, m.checksum_ok, m.filename
        );
        if plan {
            println!("-- {}\n{}", m.filename, m.sql.trim_end());
        }
    }
    if report.changed.is_empty() {
        println!("changed: nothing");
    } else {
        println!("changed: {}", report.changed.join(", "));
    }
    ExitCode::SUCCESS
}
