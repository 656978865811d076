//! The migration runner's scenarios, written once and run on every engine:
//! fresh apply, failure half-way, checksums, out-of-order and missing files,
//! rollback, concurrent runners, repair and baseline; then over the wire.

use iadb::{ErrorKind, Value};
use iadb_server::{
    backend::{Backend, PoolSettings, backend_for},
    migrate::{
        MigrateAction, MigrateOptions, MigrateReport, MigrationType, Migrator, source,
        store::MigrationStore, system_migrations,
    },
};
use iadb_tests::{Engine, harness::skip};
use std::{path::Path, sync::Arc, time::Instant};
use tempfile::TempDir;

/// A fresh, empty database of one engine, and a folder for app migrations.
struct Fixture {
    backend: Arc<dyn Backend>,
    url: String,
    dir: TempDir,
    engine: Engine,
    /// The fake D1 API behind a D1 fixture.
    _d1_fake: Option<iadb_tests::d1_fake::D1Fake>,
}

fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn fixture(engine: Engine) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let mut d1_fake = None;
    let url = match engine {
        Engine::D1 => {
            let fake = iadb_tests::d1_fake::D1Fake::start();
            let url = fake.url();
            d1_fake = Some(fake);
            url
        }
        Engine::Sqlite => format!("sqlite:///{}", dir.path().join("mig.db").display()),
        Engine::Postgres => {
            let Ok(base) = std::env::var("IADB_TEST_POSTGRES_URL") else {
                skip("postgresql", "IADB_TEST_POSTGRES_URL is not set");
                return None;
            };
            // A schema of its own, so runs do not share a tracking table.
            let schema = format!("mig_{}_{}", std::process::id(), next_id());
            let admin = sqlx::PgPool::connect(&base).await.unwrap();
            sqlx::raw_sql(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .execute(&admin)
            .await
            .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}search_path={schema}")
        }
        Engine::Mysql => {
            let Ok(base) = std::env::var("IADB_TEST_MYSQL_URL") else {
                skip("mysql", "IADB_TEST_MYSQL_URL is not set");
                return None;
            };
            // A database of its own (the test user may create `iadb_test%`).
            let name = format!("iadb_test_mig_{}_{}", std::process::id(), next_id());
            let admin = sqlx::MySqlPool::connect(&base).await.unwrap();
            sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
            ))
            .execute(&admin)
            .await
            .unwrap();
            let (prefix, query) = base.split_once('?').unwrap_or((base.as_str(), ""));
            let server = prefix.rsplit_once('/').map_or(prefix, |(s, _)| s);
            if query.is_empty() {
                format!("{server}/{name}")
            } else {
                format!("{server}/{name}?{query}")
            }
        }
        other => {
            skip(
                other.name(),
                "migration sessions for this engine are not written yet",
            );
            return None;
        }
    };
    let config = iadb::ConnectionConfig::from_url(&url).unwrap();
    let backend = backend_for(&config, PoolSettings::default()).unwrap();
    backend.connect().await.unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    Some(Fixture {
        backend,
        url,
        dir,
        engine,
        _d1_fake: d1_fake,
    })
}

impl Fixture {
    fn app(&self) -> std::path::PathBuf {
        self.dir.path().join("app")
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.app().join(name), sql).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.app().join(name)).unwrap();
    }

    async fn run(
        &self,
        action: MigrateAction,
        options: MigrateOptions,
    ) -> Result<MigrateReport, iadb::Error> {
        let app = source::parse_folders(&[self.app()])
            .map_err(|e| iadb::Error::invalid_argument(e.to_string()))?;
        let migrator = Migrator::new(system_migrations()?, app);
        let mut store = MigrationStore::new(self.backend.migration_session().await?);
        Ok(migrator.run(&mut store, action, options).await?)
    }

    async fn apply(&self) -> Result<MigrateReport, iadb::Error> {
        self.run(
            MigrateAction::Apply { target: None },
            MigrateOptions::default(),
        )
        .await
    }

    async fn exists(&self, table: &str) -> bool {
        self.backend.table_exists(table).await.unwrap()
    }

    async fn rows(&self) -> Vec<(String, String, String, String)> {
        self.backend
            .fetch_all(
                "SELECT version, migration_type, state, checksum FROM ia_migrations ORDER BY migration_type DESC, version",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let t = |i: usize| r.get_index(i).map(Value::to_string).unwrap_or_default();
                (t(0), t(1), t(2), t(3))
            })
            .collect()
    }
}

fn changed(report: &MigrateReport) -> Vec<&str> {
    report
        .changed
        .iter()
        .map(|s| {
            Path::new(s)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(s)
        })
        .collect()
}

async fn fresh_apply_then_nothing(f: Fixture) {
    f.write(
        "V1__users.sql",
        "CREATE TABLE mig_users (id INTEGER PRIMARY KEY, name TEXT);\n",
    );
    f.write("V2__posts.sql", "CREATE TABLE mig_posts (id INTEGER PRIMARY KEY, body TEXT);\nINSERT INTO mig_posts (id, body) VALUES (1, 'hello; world');\n");
    let report = f.apply().await.unwrap();
    assert_eq!(
        changed(&report),
        ["V001__iadb_settings.sql", "V1__users.sql", "V2__posts.sql"]
    );
    assert!(
        f.exists("mig_users").await && f.exists("mig_posts").await && f.exists("ia_settings").await
    );
    let rows = f.rows().await;
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(v, t, s, _)| (v.as_str(), t.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("1", "system", "applied"),
            ("1", "app", "applied"),
            ("2", "app", "applied")
        ]
    );
    assert_eq!(
        rows[1].3,
        source::parse_folders(&[f.app()]).unwrap()[0].checksum
    );
    assert!(rows[1].3.starts_with("sha256:") && rows[1].3.len() == 7 + 64);
    let again = f.apply().await.unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    let status = f
        .run(MigrateAction::Status, MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(status.migrations.len(), 3);
    assert!(
        status
            .migrations
            .iter()
            .all(|m| m.state == "applied" && m.checksum_ok && !m.applied_at.is_empty())
    );
}

async fn failure_half_way_is_recorded_and_blocks(f: Fixture) {
    f.write("V1__ok.sql", "CREATE TABLE mig_ok (id INTEGER);\n");
    f.write(
        "V2__broken.sql",
        "CREATE TABLE mig_half (id INTEGER);\nCREATE TABL oops (x INTEGER);\n",
    );
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("V2__broken.sql") && err.message().contains("V1__ok.sql"),
        "{}",
        err.message()
    );
    assert!(f.exists("mig_ok").await);
    // Where DDL is transactional nothing of the failed migration remains;
    // MySQL commits each DDL statement, so its first table stays and the
    // failed row below is what tells the operator.
    // D1 has no BEGIN/COMMIT over its REST API: like MySQL.
    let transactional_ddl = !matches!(f.engine, Engine::Mysql | Engine::D1);
    assert_eq!(f.exists("mig_half").await, !transactional_ddl);
    let rows = f.rows().await;
    assert_eq!(
        rows.last().map(|r| (r.0.as_str(), r.2.as_str())),
        Some(("2", "failed"))
    );
    // The next run refuses until repaired.
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("V2__broken.sql") && err.message().contains("repair"),
        "{}",
        err.message()
    );
    f.write("V2__broken.sql", "CREATE TABLE mig_half (id INTEGER);\n");
    if !transactional_ddl {
        // The operator removes what the half-applied migration left.
        f.backend.execute("DROP TABLE mig_half", &[]).await.unwrap();
    }
    let repaired = f
        .run(MigrateAction::Repair, MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(repaired.changed, ["V2__broken.sql"]);
    assert_eq!(changed(&f.apply().await.unwrap()), ["V2__broken.sql"]);
    assert!(f.exists("mig_half").await);
}

async fn checksums_refuse_edits_but_not_crlf(f: Fixture) {
    let sql = "CREATE TABLE mig_sum (id INTEGER);\nINSERT INTO mig_sum (id) VALUES (1);\n";
    f.write("V1__sum.sql", sql);
    f.apply().await.unwrap();
    f.write(
        "V1__sum.sql",
        &format!("\u{feff}{}", sql.replace('\n', "\r\n")),
    );
    assert!(
        f.apply().await.unwrap().changed.is_empty(),
        "CRLF and a BOM are not a change"
    );
    f.write("V1__sum.sql", &sql.replace("(1)", "(2)"));
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("checksum mismatch") && err.message().contains("V1__sum.sql"),
        "{}",
        err.message()
    );
    let err = f
        .run(MigrateAction::Validate, MigrateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

async fn out_of_order_and_missing(f: Fixture) {
    f.write("V1__a.sql", "CREATE TABLE mig_a (id INTEGER);\n");
    f.write("V3__c.sql", "CREATE TABLE mig_c (id INTEGER);\n");
    f.apply().await.unwrap();
    f.write("V2__b.sql", "CREATE TABLE mig_b (id INTEGER);\n");
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("V2__b.sql") && err.message().contains("older"),
        "{}",
        err.message()
    );
    assert!(!f.exists("mig_b").await);
    let allowed = MigrateOptions {
        allow_out_of_order: true,
        ..Default::default()
    };
    assert_eq!(
        changed(
            &f.run(MigrateAction::Apply { target: None }, allowed)
                .await
                .unwrap()
        ),
        ["V2__b.sql"]
    );
    f.remove("V1__a.sql");
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("V1__a.sql") && err.message().contains("no file"),
        "{}",
        err.message()
    );
    let allowed = MigrateOptions {
        allow_missing: true,
        ..Default::default()
    };
    let status = f
        .run(MigrateAction::Apply { target: None }, allowed)
        .await
        .unwrap();
    assert!(
        status
            .migrations
            .iter()
            .any(|m| m.filename == "V1__a.sql" && m.state == "missing")
    );
}

async fn rollback_runs_undo_files_in_reverse(f: Fixture) {
    for (v, t) in [(1, "mig_r1"), (2, "mig_r2"), (3, "mig_r3")] {
        f.write(
            &format!("V{v}__{t}.sql"),
            &format!("CREATE TABLE {t} (id INTEGER);\n"),
        );
        f.write(&format!("U{v}__{t}.sql"), &format!("DROP TABLE {t};\n"));
    }
    f.apply().await.unwrap();
    // Refused, with nothing changed, while an undo file is missing.
    f.remove("U2__mig_r2.sql");
    let err = f
        .run(
            MigrateAction::Rollback { target: 1 },
            MigrateOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("V2__mig_r2.sql"),
        "{}",
        err.message()
    );
    assert!(f.exists("mig_r3").await && f.exists("mig_r2").await);
    f.write("U2__mig_r2.sql", "DROP TABLE mig_r2;\n");
    let report = f
        .run(
            MigrateAction::Rollback { target: 1 },
            MigrateOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(changed(&report), ["V3__mig_r3.sql", "V2__mig_r2.sql"]);
    assert!(f.exists("mig_r1").await && !f.exists("mig_r2").await && !f.exists("mig_r3").await);
    let app: Vec<String> = f
        .rows()
        .await
        .into_iter()
        .filter(|r| r.1 == "app")
        .map(|r| r.0)
        .collect();
    assert_eq!(app, ["1"]);
    // And forward again.
    assert_eq!(
        changed(&f.apply().await.unwrap()),
        ["V2__mig_r2.sql", "V3__mig_r3.sql"]
    );
}

async fn baseline_marks_without_running(f: Fixture) {
    f.write(
        "V1__existing.sql",
        "CREATE TABLE mig_existing (id INTEGER);\n",
    );
    f.write("V2__next.sql", "CREATE TABLE mig_next (id INTEGER);\n");
    let report = f
        .run(
            MigrateAction::Baseline { target: 1 },
            MigrateOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.changed, ["V1__existing.sql"]);
    assert!(!f.exists("mig_existing").await, "baseline runs nothing");
    assert_eq!(
        changed(&f.apply().await.unwrap()),
        ["V001__iadb_settings.sql", "V2__next.sql"]
    );
    let plan = f
        .run(MigrateAction::Plan, MigrateOptions::default())
        .await
        .unwrap();
    assert!(plan.migrations.is_empty());
}

/// 8 runners at once, each on its own connection as replicas would be:
/// every migration applied exactly once, none fails.
async fn concurrent_runners_apply_once(f: Fixture) {
    for v in 1..=20 {
        f.write(
            &format!("V{v}__t{v}.sql"),
            &format!("CREATE TABLE mig_cc{v} (id INTEGER);\n"),
        );
    }
    let f = Arc::new(f);
    let runs = (0..8).map(|_| {
        let f = f.clone();
        tokio::spawn(async move {
            let config = iadb::ConnectionConfig::from_url(&f.url).unwrap();
            let backend = backend_for(&config, PoolSettings::default()).unwrap();
            backend.connect().await.unwrap();
            let app = source::parse_folders(&[f.app()]).unwrap();
            let migrator = Migrator::new(system_migrations().unwrap(), app);
            let mut store = MigrationStore::new(backend.migration_session().await.unwrap());
            migrator
                .run(
                    &mut store,
                    MigrateAction::Apply { target: None },
                    MigrateOptions::default(),
                )
                .await
        })
    });
    let reports: Vec<MigrateReport> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap()
                .unwrap_or_else(|e| panic!("a runner failed: {e}"))
        })
        .collect();
    let applied: usize = reports.iter().map(|r| r.changed.len()).sum();
    assert_eq!(
        applied, 21,
        "each of the 21 migrations applied exactly once"
    );
    let waits: Vec<u128> = reports.iter().map(|r| r.lock_wait.as_millis()).collect();
    println!(
        "{:?}: lock waits of 8 concurrent runners (ms): {waits:?}",
        f.engine
    );
    assert_eq!(f.rows().await.len(), 21);
}

/// 200 small migrations; prints the time.
async fn two_hundred_migrations(f: Fixture) {
    for v in 1..=200 {
        f.write(&format!("V{v}__m{v}.sql"), &format!("CREATE TABLE mig_m{v} (id INTEGER, note TEXT);\nINSERT INTO mig_m{v} (id, note) VALUES ({v}, 'n');\n"));
    }
    let started = Instant::now();
    let report = f.apply().await.unwrap();
    let took = started.elapsed();
    assert_eq!(report.changed.len(), 201);
    println!(
        "{:?}: applied 200 migrations (+1 system) in {:.2}s",
        f.engine,
        took.as_secs_f64()
    );
}

/// App migrations sent in a request (not in any folder of the server) are
/// recorded with that origin: a later run without them neither refuses nor
/// calls them missing. A server file that went away still is missing.
async fn sent_migrations_are_not_missing_later(f: Fixture) {
    let sent = source::parse(
        vec![source::MigrationFile {
            filename: "V1__sent.sql".into(),
            content: b"CREATE TABLE mig_sent (id INTEGER);\n".to_vec(),
        }],
        MigrationType::App,
    )
    .unwrap();
    let migrator = Migrator::new(system_migrations().unwrap(), Vec::new()).with_sent(sent);
    let mut store = MigrationStore::new(f.backend.migration_session().await.unwrap());
    let report = migrator
        .run(
            &mut store,
            MigrateAction::Apply { target: None },
            MigrateOptions::default(),
        )
        .await
        .unwrap();
    drop(store);
    assert_eq!(
        changed(&report),
        ["V001__iadb_settings.sql", "V1__sent.sql"]
    );
    // A run of the server's own (empty) folder: nothing refused.
    let again = f.apply().await.unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    let status = f
        .run(MigrateAction::Status, MigrateOptions::default())
        .await
        .unwrap();
    let sent_state: Vec<(&str, &str)> = status
        .migrations
        .iter()
        .filter(|m| m.migration_type == MigrationType::App)
        .map(|m| (m.filename.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(sent_state, [("V1__sent.sql", "applied")]);
    // A file of the server that went away is still missing.
    f.write("V2__file.sql", "CREATE TABLE mig_file (id INTEGER);\n");
    assert_eq!(changed(&f.apply().await.unwrap()), ["V2__file.sql"]);
    f.remove("V2__file.sql");
    let err = f.apply().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.message().contains("V2__file.sql") && err.message().contains("no file"),
        "{}",
        err.message()
    );
}

/// A tracking table created before the `origin` column: read-only runs read
/// it as it is, the next changing run adds the column, and rows written
/// after say where they came from.
async fn tracking_table_from_before_origin_gains_it(f: Fixture) {
    let (key, kind, name) = if f.engine == Engine::Mysql {
        ("VARCHAR(32)", "VARCHAR(16)", "VARCHAR(255)")
    } else {
        ("TEXT", "TEXT", "TEXT")
    };
    let old = format!(
        "CREATE TABLE ia_migrations (version {key} NOT NULL, filename {name} NOT NULL, \
         migration_type {kind} NOT NULL CHECK (migration_type IN ('system', 'app')), \
         description TEXT NOT NULL, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
         checksum {name} NOT NULL, \
         state {kind} NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'pending', 'failed')), \
         execution_ms BIGINT NOT NULL DEFAULT 0, error_message TEXT, \
         PRIMARY KEY (version, migration_type))"
    );
    f.backend.execute(&old, &[]).await.unwrap();
    f.write("V1__a.sql", "CREATE TABLE mig_a (id INTEGER);\n");
    let status = f
        .run(MigrateAction::Status, MigrateOptions::default())
        .await
        .unwrap();
    assert!(status.migrations.iter().all(|m| m.state == "pending"));
    assert_eq!(
        changed(&f.apply().await.unwrap()),
        ["V001__iadb_settings.sql", "V1__a.sql"]
    );
    let origins: Vec<String> = f
        .backend
        .fetch_all(
            "SELECT origin FROM ia_migrations ORDER BY migration_type DESC, version",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get_index(0).map(Value::to_string).unwrap_or_default())
        .collect();
    assert_eq!(origins, ["server", "server"]);
}

macro_rules! scenarios {
    ($module:ident, $engine:expr) => {
        mod $module {
            use super::*;
            scenarios!(@each $engine; fresh_apply_then_nothing, failure_half_way_is_recorded_and_blocks,
                checksums_refuse_edits_but_not_crlf, out_of_order_and_missing,
                rollback_runs_undo_files_in_reverse, baseline_marks_without_running,
                concurrent_runners_apply_once, two_hundred_migrations,
                sent_migrations_are_not_missing_later, tracking_table_from_before_origin_gains_it);
        }
    };
    (@each $engine:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(f) = fixture($engine).await {
                    super::$case(f).await;
                }
            }
        )*
    };
}

scenarios!(sqlite, Engine::Sqlite);
scenarios!(postgres, Engine::Postgres);
scenarios!(mysql, Engine::Mysql);
scenarios!(d1, Engine::D1);
