//! [`MigrationSession`]: one dedicated connection, the only thing the
//! migration runner asks of an engine, so the runner is written once.

use crate::backend::session::{CollectSink, Session};
use async_trait::async_trait;
use iadb::{Result, Value};

pub use iadb::StoreDialect;

/// A connection held for a whole migration run (locks are per session).
/// Statements take `?` placeholders on every engine.
#[async_trait]
pub trait MigrationSession: Send {
    /// The engine's dialect.
    fn dialect(&self) -> StoreDialect;
    /// Runs a script of one or more statements without parameters.
    async fn run_script(&mut self, sql: &str) -> Result<()>;
    /// Runs one statement with parameters; returns rows affected.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; returns its rows.
    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>>;
}

/// A migration run on a [`Session`]: the runner's calls on the same
/// executor that transactions use.
pub struct OnSession(pub Box<dyn Session>);

#[async_trait]
impl MigrationSession for OnSession {
    fn dialect(&self) -> StoreDialect {
        self.0.engine().spec().store
    }

    async fn run_script(&mut self, sql: &str) -> Result<()> {
        self.0.run_script(sql).await
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        Ok(self.0.execute(sql, params).await?.rows_affected)
    }

    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        // The runner's queries read a handful of rows (its tracking table).
        let mut sink = CollectSink::new(usize::MAX);
        self.0.query(sql, params, &mut sink).await?;
        Ok(sink.rows)
    }
}
