//! More parameters than an engine takes in one statement is the caller's
//! mistake: INVALID_ARGUMENT with the engine's reason, directly on the
//! adapter and through the server, and the database keeps serving.
//! PostgreSQL's protocol counts parameters in 16 bits (at most 65535; iadb
//! checks that before sqlx, which would call it a protocol error), MySQL
//! refuses more than 65535 placeholders, and SQLite more than 32766
//! variables.

use iadb::{ErrorKind, Value};
use iadb_tests::{Engine, Target};

async fn too_many_parameters(engine: Engine, n: usize, reason: &str) {
    for target in [Target::direct(engine).await, Target::remote(engine).await] {
        let Some(t) = target else { return };
        let sql = format!("SELECT {}", vec!["?"; n].join(", "));
        let params: Vec<Value> = (0..n as i64).map(Value::Int).collect();
        let error =
            t.db.fetch_all(&sql, &params)
                .await
                .expect_err("too many parameters are refused");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error:?}");
        assert!(error.message().contains(reason), "{}", error.message());
        let error =
            t.db.execute(&sql, &params)
                .await
                .expect_err("too many parameters are refused");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error:?}");
        let row =
            t.db.fetch_one("SELECT ? AS x", &[Value::Int(7)])
                .await
                .expect("still serving")
                .expect("a row");
        assert_eq!(row.get("x"), Some(&Value::Int(7)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_too_many_parameters() {
    too_many_parameters(Engine::Postgres, 70_000, "at most 65535 parameters").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_too_many_parameters() {
    too_many_parameters(Engine::Mysql, 70_000, "too many placeholders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_too_many_parameters() {
    too_many_parameters(Engine::Sqlite, 40_000, "too many SQL variables").await;
}
