"""Every method of iadb.Database against a real server."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

import iadb


async def test_connect_and_disconnect(server):
    db = iadb.Database(server.address)
    assert not db.is_connected
    await db.connect()
    assert db.is_connected
    await db.connect()  # idempotent
    assert (await db.fetch_row("SELECT 1 AS one")) == {"one": 1}
    await db.disconnect()
    assert not db.is_connected
    await db.disconnect()  # idempotent
    with pytest.raises(RuntimeError, match="not connected"):
        await db.fetch_rows("SELECT 1")


async def test_http_target_form_is_accepted(server):
    async with iadb.Database("http://" + server.address) as db:
        assert (await db.fetch_row("SELECT 2 AS two")) == {"two": 2}


async def test_connect_to_nothing_is_unavailable():
    db = iadb.Database("127.0.0.1:1", connect_timeout=0.5)
    with pytest.raises(iadb.DatabaseError) as info:
        await db.connect()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert not db.is_connected


async def test_async_with(server):
    async with iadb.Database(server.address) as db:
        assert db.is_connected
        assert (await db.health()).healthy
    assert not db.is_connected


async def test_execute_query_select(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT, score REAL)" % table)
    for name, score in [("Ada", 9.5), ("Grace", 8.0), ("Linus", 4.0)]:
        await db.execute("INSERT INTO %s (name, score) VALUES (?, ?)" % table, [name, score])
    r = await db.execute_query("SELECT name, score FROM %s WHERE score > ? ORDER BY id" % table, [5])
    assert isinstance(r, iadb.QueryResult)
    assert r.success and r.error_message is None and r.error_code is None
    assert r.data == [{"name": "Ada", "score": 9.5}, {"name": "Grace", "score": 8.0}]
    assert r.row_count == 2
    assert r.columns == ["name", "score"]
    assert r.execution_time_ms > 0
    assert r.get_first_row() == {"name": "Ada", "score": 9.5}
    assert r.get_column_values("name") == ["Ada", "Grace"]
    assert r.get_column_values("missing") == []


async def test_execute_query_empty_result_and_statements(db, table):
    r = await db.execute_query("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    # (row_count of DDL is not asserted: the SQLite server reports the
    # connection's previous change count for it.)
    assert r.success and r.data == [] and r.columns == []
    r = await db.execute_query("INSERT INTO %s (v) VALUES (?), (?), (?)" % table, ["a", "b", "c"])
    assert r.success and r.data == [] and r.row_count == 3 and r.rows_affected == 3
    r = await db.execute_query("SELECT * FROM %s WHERE v = ?" % table, ["zzz"])
    assert r.success and r.data == [] and r.row_count == 0 and r.columns == ["id", "v"]
    assert r.get_first_row() is None
    r = await db.execute_query("UPDATE %s SET v = 'x'" % table)
    assert r.success and r.row_count == 3


async def test_query_result_is_a_dataclass():
    fields = {f.name for f in dataclasses.fields(iadb.QueryResult)}
    assert {"success", "data", "row_count", "error_message", "execution_time_ms"} <= fields
    r = iadb.QueryResult(success=True, data=[{"a": 1}, {"b": 2}, {"a": 3}], row_count=3)
    assert r.get_column_values("a") == [1, 3]


async def test_execute_returns_rows_affected_and_last_insert_id(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    first = await db.execute("INSERT INTO %s (v) VALUES (?)" % table, ["a"])
    second = await db.execute("INSERT INTO %s (v) VALUES (?)" % table, ["b"])
    assert isinstance(first, iadb.ExecuteResult)
    assert first.rows_affected == 1 and second.last_insert_id == first.last_insert_id + 1
    upd = await db.execute("UPDATE %s SET v = ?" % table, ["z"])
    assert upd.rows_affected == 2


async def test_execute_many_is_one_transaction(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT UNIQUE)" % table)
    r = await db.execute_many(
        "INSERT INTO %s (v) VALUES (?)" % table, [["a"], ["b"], ["c"]]
    )
    assert r.success and r.row_count == 3 and r.rows_affected == 3
    # The third set violates UNIQUE: nothing of this call is applied.
    r = await db.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [["d"], ["e"], ["a"]])
    assert not r.success
    assert r.error_code == grpc.StatusCode.ALREADY_EXISTS
    assert "parameter set 2" in r.error_message
    assert await db.fetch_rows("SELECT v FROM %s ORDER BY v" % table) == [
        {"v": "a"}, {"v": "b"}, {"v": "c"}
    ]


async def test_execute_many_with_tuples_and_generators(db, table):
    await db.execute("CREATE TABLE %s (a INTEGER, b TEXT)" % table)
    r = await db.execute_many(
        "INSERT INTO %s (a, b) VALUES (?, ?)" % table, ((i, str(i)) for i in range(100))
    )
    assert r.success and r.row_count == 100
    assert (await db.fetch_row("SELECT COUNT(*) AS n, SUM(a) AS s FROM %s" % table)) == {
        "n": 100, "s": 4950
    }


async def test_fetch_all_and_fetch_one(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    await db.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [[c] for c in "abcde"])
    rows = await db.fetch_rows("SELECT id, v FROM %s ORDER BY id" % table)
    assert rows == [{"id": i + 1, "v": c} for i, c in enumerate("abcde")]
    assert await db.fetch_rows("SELECT id FROM %s WHERE id > ?" % table, [99]) == []
    assert await db.fetch_row("SELECT v FROM %s WHERE id = ?" % table, [3]) == {"v": "c"}
    assert await db.fetch_row("SELECT v FROM %s WHERE id = ?" % table, [99]) is None


async def test_table_exists(db, table):
    assert await db.table_exists(table) is False
    await db.execute("CREATE TABLE %s (id INTEGER)" % table)
    assert await db.table_exists(table) is True
    assert await db.table_exists("main." + table) is True
    assert await db.table_exists(table.upper()) is True  # SQLite: case-insensitive


async def test_health_check(db):
    h = await db.health()
    assert isinstance(h, iadb.HealthStatus)
    assert h.healthy and bool(h)
    names = {d.name for d in h.databases}
    assert {"default", "other"} <= names
    default = next(d for d in h.databases if d.name == "default")
    assert default.engine == "sqlite" and default.healthy and default.pool_max >= 1


async def test_named_database(server, table):
    async with iadb.Database(server.address, database="other") as other, \
            iadb.Database(server.address) as default:
        await other.execute("CREATE TABLE %s (id INTEGER)" % table)
        assert await other.table_exists(table)
        assert not await default.table_exists(table)
        h = await other.health()
        assert [d.name for d in h.databases] == ["other"]


async def test_iterate(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    await db.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [[str(i)] for i in range(5000)])
    seen = []
    async with db.iterate("SELECT id, v FROM %s WHERE id > ? ORDER BY id" % table, [10]) as rows:
        async for row in rows:
            seen.append(row["id"])
        assert rows.columns == ["id", "v"]
        assert rows.row_count == 4990
    assert seen == list(range(11, 5001))
    # Without `async with`, and an empty result.
    assert [r async for r in db.iterate("SELECT id FROM %s WHERE id < 0" % table)] == []


async def test_iterate_start_gives_columns_of_empty_result(db):
    rows = db.iterate("SELECT 1 AS a, 2 AS b WHERE 1 = 0")
    assert await rows.start() == ["a", "b"]
    assert [r async for r in rows] == []


async def test_leaving_iterate_early_cancels_and_frees_the_connection(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000000) SELECT x FROM c"
    for _ in range(15):  # more than the pool's 10 connections
        async with db.iterate(sql) as rows:
            async for row in rows:
                if row["x"] == 10:
                    break
    assert (await db.fetch_row("SELECT 42 AS x")) == {"x": 42}
    assert (await db.health()).healthy


async def test_error_after_some_rows_ends_the_stream(db, table):
    await db.execute("CREATE TABLE %s (x INTEGER)" % table)
    await db.execute_many("INSERT INTO %s (x) VALUES (?)" % table, [[i] for i in range(1, 3001)])
    sql = ("SELECT CASE WHEN x = 2500 THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM %s"
           % table)
    got = []
    with pytest.raises(iadb.DatabaseError) as info:
        async for row in db.iterate(sql):
            got.append(row["v"])
    assert got == list(range(1, len(got) + 1)) and len(got) < 2500
    assert "overflow" in info.value.message.lower()
    r = await db.execute_query(sql)
    assert not r.success and "overflow" in r.error_message.lower()


async def test_timeout_is_a_deadline(server):
    async with iadb.Database(server.address, timeout=0.2) as db:
        sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
        with pytest.raises(iadb.DatabaseError) as info:
            await db.fetch_row(sql)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_bad_parameters_raise_type_error_before_any_call():
    # Never connected: a TypeError (not RuntimeError) shows that the check
    # comes before anything is sent.
    db = iadb.Database("127.0.0.1:1")
    bad = [object()]  # (a dict is a JSON document now)
    with pytest.raises(TypeError):
        await db.execute_query("SELECT ?", bad)
    with pytest.raises(TypeError):
        await db.execute("SELECT ?", bad)
    with pytest.raises(TypeError):
        await db.execute_many("SELECT ?", [[1], bad])
    with pytest.raises(TypeError):
        await db.fetch_rows("SELECT ?", bad)
    with pytest.raises(TypeError):
        await db.fetch_row("SELECT ?", bad)
    with pytest.raises(TypeError):
        await db.execute_with_retry("SELECT ?", bad)
    with pytest.raises(TypeError):
        await db.table_exists(42)
    with pytest.raises(TypeError):
        await db.execute_query(b"SELECT 1")
    with pytest.raises(OverflowError):
        await db.execute("SELECT ?", [2**64])
    with pytest.raises(RuntimeError):
        await db.execute_query("SELECT 1")
