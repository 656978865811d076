//! The conformance suite on every engine, directly on the adapter and through
//! the gRPC client.

use iadb_tests::{Engine, conformance_suite};

conformance_suite!(sqlite_direct, sqlite_remote: Engine::Sqlite);
conformance_suite!(postgres_direct, postgres_remote: Engine::Postgres);
conformance_suite!(mysql_direct, mysql_remote: Engine::Mysql);
conformance_suite!(duckdb_direct, duckdb_remote: Engine::Duckdb);
conformance_suite!(d1_direct, d1_remote: Engine::D1);
