//! One description per engine: what the server's engine-independent code
//! (request checks, tracing, the migration runner) needs to know about an
//! engine, reached from its [`DatabaseType`] through one exhaustive match,
//! so that a new engine is a compile error everywhere it must be described.
//!
//! What only an adapter needs (binding, decoding, error mapping, how a
//! transaction begins, which isolation levels it has) stays in its module
//! under `backend/`; what only the migration runner needs (column types of
//! the tracking table, the lock, whether DDL commits implicitly) is keyed on
//! [`StoreDialect`], chosen here.

use crate::{migrate::StoreDialect, placeholders::Dialect};
use iadb::DatabaseType;

/// What the server knows about one engine.
#[derive(Debug)]
pub struct Engine {
    /// Which engine.
    pub kind: DatabaseType,
    /// The lexical rules of its SQL: placeholders, statement boundaries,
    /// transaction control, fingerprints.
    pub dialect: Dialect,
    /// Its migration tracking table and lock strategy.
    pub store: StoreDialect,
}

const SQLITE: Engine = Engine {
    kind: DatabaseType::Sqlite,
    dialect: Dialect::Sqlite,
    store: StoreDialect::Sqlite,
};

const POSTGRES: Engine = Engine {
    kind: DatabaseType::Postgresql,
    dialect: Dialect::Postgres,
    store: StoreDialect::Postgres,
};

const MYSQL: Engine = Engine {
    kind: DatabaseType::Mysql,
    dialect: Dialect::MySql,
    store: StoreDialect::MySql,
};

const DUCKDB: Engine = Engine {
    kind: DatabaseType::Duckdb,
    dialect: Dialect::DuckDb,
    store: StoreDialect::DuckDb,
};

const D1: Engine = Engine {
    kind: DatabaseType::CloudflareD1,
    dialect: Dialect::Sqlite,
    store: StoreDialect::D1,
};

/// The description of `kind`.
pub fn engine(kind: DatabaseType) -> &'static Engine {
    match kind {
        DatabaseType::Sqlite => &SQLITE,
        DatabaseType::Postgresql => &POSTGRES,
        DatabaseType::Mysql => &MYSQL,
        DatabaseType::Duckdb => &DUCKDB,
        DatabaseType::CloudflareD1 => &D1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_describes_itself() {
        for kind in [
            DatabaseType::Sqlite,
            DatabaseType::Postgresql,
            DatabaseType::Mysql,
            DatabaseType::Duckdb,
            DatabaseType::CloudflareD1,
        ] {
            assert_eq!(engine(kind).kind, kind);
        }
        assert_eq!(engine(DatabaseType::CloudflareD1).dialect, Dialect::Sqlite);
    }
}
