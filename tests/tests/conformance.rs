//! The conformance suite on every engine, directly on the adapter and through
//! the gRPC client.

use iadb_tests::{Engine, Target, conformance_suite};

conformance_suite!(sqlite_direct, Target::direct(Engine::Sqlite));
conformance_suite!(sqlite_remote, Target::remote(Engine::Sqlite));
