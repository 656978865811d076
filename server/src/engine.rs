//! One description per engine: what the server's engine-independent code
//! (request checks, tracing, the migration runner) needs to know about an
//! engine, reached from its [`DatabaseType`] through one exhaustive match,
//! so that a new engine is a compile error everywhere it must be described.
//!
//! Everything the server's engine-independent code asks of an engine is
//! here or in the domain's [`iadb::EngineSpec`] (its names and URL form):
//! its lexical dialect, its migration store, its cargo feature and how its
//! adapter is built ([`backend_for`](crate::backend::backend_for) reads
//! it), so neither `backend_for` nor the URL parser grows an arm per
//! engine.
//!
//! What only an adapter needs (binding, decoding, error mapping, how a
//! transaction begins, which isolation levels it has) stays in its module
//! under `backend/`; what only the migration runner needs (column types of
//! the tracking table, the lock, whether DDL commits implicitly) is keyed on
//! [`StoreDialect`], chosen here.

use crate::{
    backend::{Backend, PoolSettings},
    migrate::StoreDialect,
    placeholders::Dialect,
};
use iadb::{ConnectionConfig, DatabaseType, Result};
use std::sync::Arc;

/// Builds an engine's adapter for a URL (not yet connected).
pub type Open = fn(&ConnectionConfig, PoolSettings) -> Result<Arc<dyn Backend>>;

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
    /// The cargo feature that compiles its adapter in.
    pub feature: &'static str,
    /// Builds its adapter; `None` when its feature is off in this build.
    pub open: Option<Open>,
}

/// The [`Engine::open`] of an adapter type with a `new(config, pool)`,
/// compiled in with `feature` (`None` without it).
macro_rules! adapter {
    ($feature:literal, $backend:ty) => {{
        #[cfg(feature = $feature)]
        const OPEN: Option<Open> =
            Some(|config, pool| Ok(Arc::new(<$backend>::new(config, pool)?)));
        #[cfg(not(feature = $feature))]
        const OPEN: Option<Open> = None;
        OPEN
    }};
}

const SQLITE: Engine = Engine {
    kind: DatabaseType::Sqlite,
    dialect: Dialect::Sqlite,
    store: StoreDialect::Sqlite,
    feature: "sqlite",
    open: adapter!("sqlite", crate::backend::sqlite::SqliteBackend),
};

const POSTGRES: Engine = Engine {
    kind: DatabaseType::Postgresql,
    dialect: Dialect::Postgres,
    store: StoreDialect::Postgres,
    feature: "postgres",
    open: adapter!("postgres", crate::backend::postgres::PostgresBackend),
};

const MYSQL: Engine = Engine {
    kind: DatabaseType::Mysql,
    dialect: Dialect::MySql,
    store: StoreDialect::MySql,
    feature: "mysql",
    open: adapter!("mysql", crate::backend::mysql::MySqlBackend),
};

const DUCKDB: Engine = Engine {
    kind: DatabaseType::Duckdb,
    dialect: Dialect::DuckDb,
    store: StoreDialect::DuckDb,
    feature: "duckdb",
    open: adapter!("duckdb", crate::backend::duckdb::DuckDbBackend),
};

const D1: Engine = Engine {
    kind: DatabaseType::CloudflareD1,
    dialect: Dialect::Sqlite,
    store: StoreDialect::D1,
    feature: "d1",
    open: adapter!("d1", crate::backend::d1::D1Backend),
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
        for &kind in DatabaseType::ALL {
            assert_eq!(engine(kind).kind, kind);
            assert_eq!(kind.spec().kind, kind);
        }
        assert_eq!(engine(DatabaseType::CloudflareD1).dialect, Dialect::Sqlite);
    }
}
