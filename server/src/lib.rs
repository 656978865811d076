//! iadb-server: the gRPC service in front of SQLite, PostgreSQL,
//! MySQL/MariaDB, DuckDB and Cloudflare D1.
//!
//! `config` turns flags, environment and an optional TOML file into
//! [`Settings`]; `registry` holds one adapter per named database;
//! `service` is the gRPC handlers; `server` binds, serves and shuts down;
//! `metrics` is the Prometheus endpoint.
//! Adapters live in `backend`, one module per engine behind its feature.

mod admission;
pub mod backend;
pub mod config;
pub mod metrics;
pub mod migrate;
pub mod placeholders;
mod registry;
mod server;
mod service;

pub use config::{Cli, ConfigError, Settings};
pub use registry::Registry;
pub use server::{BoundServer, OVERALL_HEALTH_SERVICE, shutdown_signal};
pub use service::DatabaseService;

use clap::Parser;
use std::process::ExitCode;

/// The `iadb-server` program: parse flags, bind, print the address, serve
/// until SIGINT/SIGTERM. Exit code 2 for bad configuration, 1 for failures.
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
    runtime.block_on(async {
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
        match server.serve(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("iadb-server: {}", e.message());
                ExitCode::FAILURE
            }
        }
    })
}
