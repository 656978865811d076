//! `iadb-fake-server --listen 127.0.0.1:0`: a fake `iadb.v1.Database` that
//! misbehaves on purpose (see `iadb_tests::fake_server`), for the client
//! suites. Prints `iadb-fake-server listening on ADDR` once it listens.

use iadb_tests::fake_server::{LISTENING, serve};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                eprintln!("usage: iadb-fake-server [--listen 127.0.0.1:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iadb-fake-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("iadb-fake-server: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => println!("{LISTENING}{addr}"),
            Err(e) => {
                eprintln!("iadb-fake-server: {e}");
                return ExitCode::FAILURE;
            }
        }
        match serve(listener).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("iadb-fake-server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
