//! A deadline reaches the engine: a statement that sends nothing for long,
//! cut off by its call's deadline, is stopped on the engine's side too.

use iadb::{DatabaseInterface, ErrorKind};
use iadb_client::RemoteDatabase;
use std::future::Future;
use std::time::{Duration, Instant};

/// For each of `rpcs` (`Execute`, `FetchAll`, `ExecuteMany`,
/// `Transaction`: a fetch inside one), sends `sleep(tag)`, a statement that
/// sends nothing for far longer than `db`'s deadline, marked with a tag
/// made from `marker`, and expects DEADLINE_EXCEEDED; then waits until
/// `running(tag)` (the engine's own count of such statements still
/// running) is 0, failing after 5 s. Prints how long that took.
pub async fn deadline_stops_silent_statements<Fut>(
    db: &RemoteDatabase,
    marker: &str,
    rpcs: &[&str],
    sleep: impl Fn(&str) -> String,
    running: impl Fn(String) -> Fut,
) where
    Fut: Future<Output = i64>,
{
    for &rpc in rpcs {
        let tag = format!("{marker}_{rpc}");
        let sql = sleep(&tag);
        let err = match rpc {
            "Execute" => db.execute(&sql, &[]).await.map(|_| ()),
            "FetchAll" => db.fetch_all(&sql, &[]).await.map(|_| ()),
            "ExecuteMany" => db.execute_many(&sql, &[vec![]]).await.map(|_| ()),
            "Transaction" => match db.transaction(Default::default()).await {
                Ok(mut tx) => tx.fetch_all(&sql, &[]).await.map(|_| ()),
                Err(e) => panic!("begin: {e}"),
            },
            other => panic!("no such RPC here: {other}"),
        }
        .expect_err("a long silent statement under a short deadline");
        assert_eq!(
            err.kind(),
            ErrorKind::DeadlineExceeded,
            "{rpc}: {}",
            err.message()
        );
        let ended = Instant::now();
        while running(tag.clone()).await > 0 {
            assert!(
                ended.elapsed() < Duration::from_secs(5),
                "{rpc}: the statement still runs 5 s after DEADLINE_EXCEEDED"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{rpc}: statement gone {} ms after DEADLINE_EXCEEDED",
            ended.elapsed().as_millis()
        );
    }
}
