//! The conformance suite on every engine, directly on the adapter and through
//! the gRPC client.

use iadb_tests::{Engine, Target, conformance_suite};

conformance_suite!(sqlite_direct, Target::direct(Engine::Sqlite));
conformance_suite!(sqlite_remote, Target::remote(Engine::Sqlite));
conformance_suite!(postgres_direct, Target::direct(Engine::Postgres));
conformance_suite!(postgres_remote, Target::remote(Engine::Postgres));
conformance_suite!(mysql_direct, Target::direct(Engine::Mysql));
conformance_suite!(mysql_remote, Target::remote(Engine::Mysql));
conformance_suite!(duckdb_direct, Target::direct(Engine::Duckdb));
conformance_suite!(duckdb_remote, Target::remote(Engine::Duckdb));
conformance_suite!(d1_direct, Target::direct(Engine::D1));
conformance_suite!(d1_remote, Target::remote(Engine::D1));
