//! The `iadb-server` binary.

fn main() -> std::process::ExitCode {
    iadb_server::main_entry()
}
