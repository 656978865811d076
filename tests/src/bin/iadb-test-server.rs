//! The server binary, built inside the tests package so that tests can
//! spawn it (`CARGO_BIN_EXE_iadb-test-server`) as a real process.

fn main() -> std::process::ExitCode {
    iadb_server::main_entry()
}
