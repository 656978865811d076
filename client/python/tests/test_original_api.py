"""The original Python layer's API (../shared/specs/ia-modules-database.md),
exactly as its document shows it, over a real iadb server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import iadb
from iadb import (AsyncDatabaseManager, ConnectionConfig, DatabaseInterface, DatabaseManager, DatabaseType,
                  MigrationRunner, QueryResult, create_error_result, create_query_result)


def write_migrations(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql, encoding="utf-8")
    return folder


# --- QueryResult and its helpers ---------------------------------------------


def test_query_result_helpers_as_documented():
    ok = create_query_result(success=True, data=[{"id": 1, "name": "John"}], execution_time_ms=15.5)
    assert isinstance(ok, QueryResult)
    assert ok.success and ok.row_count == 1 and ok.execution_time_ms == 15.5 and ok.error_message is None
    assert ok.get_first_row() == {"id": 1, "name": "John"}
    assert ok.get_column_values("name") == ["John"]
    assert len(ok) == 1 and list(ok) == [{"id": 1, "name": "John"}] and ok[0]["id"] == 1
    err = create_error_result("Table 'users' does not exist")
    assert not err.success and err.error_message == "Table 'users' does not exist"
    assert err.data == [] and err.row_count == 0 and len(err) == 0 and err.get_first_row() is None
    with pytest.raises(iadb.DatabaseError):
        err.raise_for_error()


def test_database_type_and_connection_config_from_url():
    assert [t.value for t in DatabaseType] == ["sqlite", "postgresql", "mysql", "duckdb", "cloudflare_d1"]
    cases = {
        "sqlite:///./app_data.db": (DatabaseType.SQLITE, None, None, "./app_data.db"),
        "sqlite:///:memory:": (DatabaseType.SQLITE, None, None, ":memory:"),
        "postgresql://user:password@localhost:5432/database": (DatabaseType.POSTGRESQL, "localhost", 5432, "database"),
        "postgresql://user:pass@host:5432/db?sslmode=require": (DatabaseType.POSTGRESQL, "host", 5432, "db"),
        "mysql://root:secret@db.example:3306/shop": (DatabaseType.MYSQL, "db.example", 3306, "shop"),
        "duckdb:///./analytics.duckdb": (DatabaseType.DUCKDB, None, None, "./analytics.duckdb"),
        "duckdb:///:memory:": (DatabaseType.DUCKDB, None, None, ":memory:"),
        "cloudflare_d1://database_id?account_id=account&api_token=token": (
            DatabaseType.CLOUDFLARE_D1, None, None, "database_id"),
    }
    for url, (kind, host, port, name) in cases.items():
        config = ConnectionConfig.from_url(url)
        assert isinstance(config, ConnectionConfig)
        assert (config.database_type, config.host, config.port, config.database_name) == (kind, host, port, name), url
        assert config.database_url == url
    pg = ConnectionConfig.from_url("postgresql://user:p%40ss@localhost:5432/database")
    assert (pg.username, pg.password) == ("user", "p@ss")
    d1 = ConnectionConfig.from_url("cloudflare_d1://database_id?account_id=account&api_token=token")
    assert (d1.username, d1.password) == ("account", "token")
    with pytest.raises(ValueError, match="unknown database URL scheme"):
        ConnectionConfig.from_url("oracle://x/y")


# --- DatabaseInterface methods on iadb.Database --------------------------------


async def test_database_is_a_database_interface(db):
    assert isinstance(db, DatabaseInterface)


async def test_interface_methods_return_the_original_shapes(db, table):
    assert await db.connect() is True and db.is_connected
    assert await db.table_exists(table) is False
    assert await db.create_table(table, "id INTEGER PRIMARY KEY, name TEXT, email TEXT, status TEXT") is True
    assert await db.table_exists(table) is True
    many = await db.execute_many("INSERT INTO %s (name, email, status) VALUES (?, ?, ?)" % table, [
        ("Ada", "ada@example.org", "active"), ("Grace", "grace@example.org", "active"),
        ("Linus", "linus@example.org", "away")])
    assert isinstance(many, QueryResult) and many.success and many.row_count == 3

    # The document's "Query Result Usage".
    result = await db.fetch_all("SELECT id, name, email FROM %s WHERE status = ? ORDER BY id" % table, ("active",))
    assert isinstance(result, QueryResult)
    assert result.success and result.row_count == 2 and len(result) == 2
    assert ["User: %s <%s>" % (u["name"], u["email"]) for u in result.data] == [
        "User: Ada <ada@example.org>", "User: Grace <grace@example.org>"]
    assert [u["name"] for u in result] == ["Ada", "Grace"]
    assert result.get_first_row() == {"id": 1, "name": "Ada", "email": "ada@example.org"}
    assert result.get_column_values("email") == ["ada@example.org", "grace@example.org"]

    one = await db.fetch_one("SELECT name FROM %s WHERE id = ?" % table, (3,))
    assert isinstance(one, QueryResult) and one.success
    assert one.data == [{"name": "Linus"}] and one.row_count == 1 and one.get_first_row() == {"name": "Linus"}
    none = await db.fetch_one("SELECT name FROM %s WHERE id = ?" % table, (99,))
    assert none.success and none.data == [] and none.row_count == 0 and none.get_first_row() is None

    count = await db.execute_query("SELECT COUNT(*) as count FROM %s" % table)
    assert count.data[0]["count"] == 3
    assert await db.health_check() is True


async def test_errors_are_results_not_exceptions(db):
    for call in (db.fetch_all, db.fetch_one, db.execute_query):
        r = await call("SELECT * FROM critical_table_missing")
        assert isinstance(r, QueryResult) and not r.success
        assert r.error_message == "no such table: critical_table_missing"
        assert r.data == [] and len(r) == 0
    assert await db.create_table("bad name here", "x") is False
    # The typed, raising calls are alongside.
    with pytest.raises(iadb.DatabaseError) as info:
        await db.fetch_rows("SELECT * FROM critical_table_missing")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(iadb.DatabaseError):
        await db.fetch_row("SELEC 1")


async def test_health_check_is_false_when_the_server_is_gone(fresh_server):
    db = iadb.Database(fresh_server.address)
    assert await db.health_check() is False  # not connected
    await db.connect()
    assert await db.health_check() is True
    fresh_server.stop()
    assert await db.health_check() is False
    await db.disconnect()


def test_sync_database_has_the_same_shapes(sdb, table):
    assert sdb.create_table(table, {"id": "INTEGER PRIMARY KEY", "v": "TEXT"}) is True
    assert sdb.execute_query("INSERT INTO %s (v) VALUES (?)" % table, ["a"]).last_insert_id == 1
    r = sdb.fetch_all("SELECT v FROM %s" % table)
    assert isinstance(r, QueryResult) and r.success and r.data == [{"v": "a"}] and len(r) == 1
    assert sdb.fetch_one("SELECT v FROM %s" % table).get_first_row() == {"v": "a"}
    assert not sdb.fetch_all("SELECT * FROM nowhere_table").success
    assert sdb.health_check() is True and sdb.table_exists(table) is True


# --- a refused connection fails at once, clearly ---------------------------------


async def test_connection_refused_fails_fast_with_a_clear_message():
    db = iadb.Database("127.0.0.1:1", connect_timeout=10)
    start = time.monotonic()
    with pytest.raises(iadb.DatabaseError) as info:
        await db.connect()
    assert time.monotonic() - start < 3
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach iadb server at 127.0.0.1:1" in info.value.message
    assert "is iadb-server running" in info.value.message
    assert info.value.never_sent


def test_sync_connection_refused_fails_fast():
    start = time.monotonic()
    with pytest.raises(iadb.DatabaseError) as info:
        iadb.SyncDatabase("127.0.0.1:1", connect_timeout=10).connect()
    assert time.monotonic() - start < 3
    assert "cannot reach iadb server at 127.0.0.1:1" in info.value.message
    manager = DatabaseManager("sqlite:///./app.db", server="127.0.0.1:1", connect_timeout=10)
    start = time.monotonic()
    assert manager.connect() is False
    assert time.monotonic() - start < 3
    assert "cannot reach iadb server" in str(manager.last_error)
    with pytest.raises(iadb.DatabaseError, match="cannot reach iadb server"):
        with DatabaseManager("sqlite:///./app.db", server="127.0.0.1:1"):
            pass


# --- DatabaseManager / AsyncDatabaseManager ------------------------------------


def test_database_manager_context_manager_as_documented(server, table):
    with DatabaseManager("sqlite:///./app.db", server=server.address) as db:
        assert db.is_connected
        assert db.config.database_type == DatabaseType.SQLITE
        db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT, active BOOLEAN)" % table)
        db.execute_many("INSERT INTO %s (name, active) VALUES (?, ?)" % table,
                        [("Ada", True), ("Grace", True), ("Linus", False)])
        result = db.fetch_all("SELECT * FROM %s WHERE active = ?" % table, (True,))
        assert "Found %d active users" % len(result) == "Found 2 active users"
        assert db.fetch_one("SELECT name FROM %s WHERE id = ?" % table, (3,)).get_first_row() == {"name": "Linus"}
        assert db.table_exists(table) is True and db.health_check() is True
        assert db.execute_with_retry("SELECT COUNT(*) AS n FROM %s" % table).data == [{"n": 3}]
    assert not db.is_connected
    with pytest.raises(RuntimeError, match="Database not connected"):
        db.execute("SELECT 1")


def test_server_from_environment(server, monkeypatch):
    monkeypatch.setenv("IADB_SERVER", server.address)
    with DatabaseManager("sqlite:///./app.db") as db:
        assert db.server == server.address
        assert db.fetch_one("SELECT 1 AS one").data == [{"one": 1}]


async def test_async_database_manager_as_documented(server, table):
    async with AsyncDatabaseManager("sqlite:///./app.db", server=server.address) as db:
        assert isinstance(db, DatabaseInterface)
        await db.execute_query("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT)" % table)
        await db.execute_many("INSERT INTO %s (name) VALUES (?)" % table, [("a",), ("b",)])

    async def get_user_count():
        async with AsyncDatabaseManager("sqlite:///./app.db", server=server.address) as db:
            result = await db.execute_query("SELECT COUNT(*) as count FROM %s" % table)
            return result.data[0]['count'] if result.success else 0

    assert await get_user_count() == 2


async def test_initialize_sends_app_migration_folders(fresh_server, tmp_path, table):
    first = write_migrations(tmp_path / "migrations", {
        "V001__create_base_schema.sql": "CREATE TABLE IF NOT EXISTS %s_users (id INTEGER PRIMARY KEY, email TEXT);" % table,
    })
    second = write_migrations(tmp_path / "custom_migrations", {
        "V002__pipelines.sql": "CREATE TABLE IF NOT EXISTS %s_pipelines (id INTEGER PRIMARY KEY, slug TEXT);" % table,
    })
    db_manager = DatabaseManager("sqlite:///./dev_data.db", server=fresh_server.address)
    # The document awaits it; the blocking manager's result may also be used as is.
    assert await db_manager.initialize(apply_schema=True, app_migration_paths=[str(first), str(second)]) is not False
    assert db_manager.table_exists(table + "_users") and db_manager.table_exists(table + "_pipelines")
    status = db_manager.migrate("status")
    assert {(m.filename, m.state) for m in status.migrations if m.migration_type == "app"} == {
        ("V001__create_base_schema.sql", "applied"), ("V002__pipelines.sql", "applied")}
    db_manager.disconnect()

    adb = AsyncDatabaseManager("postgresql://user:pass@prod-db:5432/app_db", server=fresh_server.address)
    assert await adb.initialize(apply_schema=True, app_migration_paths=[str(first), str(second)]) is True
    await adb.disconnect()

    broken = write_migrations(tmp_path / "broken", {"V003__bad.sql": "CREATE TABLE oops ("})
    again = DatabaseManager("sqlite:///./dev_data.db", server=fresh_server.address)
    assert again.initialize(app_migration_paths=[str(first), str(second), str(broken)]) == False  # noqa: E712
    assert again.last_error is not None
    again.disconnect()


async def test_migration_runner_app_and_system(fresh_server, tmp_path, table):
    path = write_migrations(tmp_path / "app", {
        "V001__create.sql": "CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT);" % table,
        "V002__add_column.sql": "ALTER TABLE %s ADD COLUMN preferences TEXT DEFAULT '{}';" % table,
    })
    async with iadb.Database(fresh_server.address) as db_interface:
        system_runner = MigrationRunner(db_interface, None, "system")
        assert await system_runner.run_pending_migrations() is True
        app_runner = MigrationRunner(db_interface, path, "app")
        assert await app_runner.get_pending_migrations() == ["V001__create.sql", "V002__add_column.sql"]
        assert await app_runner.run_pending_migrations() is True
        assert await app_runner.get_pending_migrations() == []
        assert await app_runner.run_pending_migrations() is True  # nothing left: still True
        await db_interface.execute("INSERT INTO %s (name) VALUES ('x')" % table)
        assert (await db_interface.fetch_one("SELECT preferences FROM %s" % table)).data == [{"preferences": "{}"}]

    # The blocking manager works too, awaited or not.
    with DatabaseManager("sqlite:///./app.db", server=fresh_server.address) as db:
        assert MigrationRunner(db, path, "app").run_pending_migrations() == True  # noqa: E712
        write_migrations(path, {"V003__bad.sql": "SELECT * FROM no_such_table_anywhere;"})
        runner = MigrationRunner(db, path, "app")
        assert await runner.run_pending_migrations() == False  # noqa: E712
        assert "no_such_table_anywhere" in runner.last_error.message
    with pytest.raises(ValueError):
        MigrationRunner(db, path, "other")


async def test_execute_with_retry_retries_while_unreachable(fresh_server, table):
    async with AsyncDatabaseManager("sqlite:///./app.db", server=fresh_server.address) as db:
        r = await db.execute_with_retry("SELECT 1 AS one")
        assert r.success and r.data == [{"one": 1}]
        fresh_server.stop()
        start = time.monotonic()
        r = await db.execute_with_retry("SELECT 1 AS one", retries=3, base_delay=0.05)
        assert not r.success and r.error_code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - start >= 0.05 + 0.1


def test_a_subclass_of_database_interface_works_as_before():
    class Memory(DatabaseInterface):
        async def connect(self):
            self.is_connected = True
            return True

        async def execute_query(self, query, parameters=None):
            return create_query_result(data=[{"health_check": 1}])

        async def fetch_all(self, query, parameters=None):
            return await self.execute_query(query, parameters)

        async def table_exists(self, table_name):
            return False

    m = Memory("memory://", DatabaseType.SQLITE)
    assert asyncio.run(m.health_check()) is True and m.is_connected is False
