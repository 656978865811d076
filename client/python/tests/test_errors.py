"""Server errors: QueryResult(success=False) for the seed-style methods,
DatabaseError with a status code and SQLSTATE for the others."""

from __future__ import annotations

import grpc
import pytest

import iadb


async def test_execute_query_reports_the_servers_message(db):
    r = await db.execute_query("SELECT * FROM no_such_table_here")
    assert isinstance(r, iadb.QueryResult)
    assert r.success is False
    assert r.data == [] and r.row_count == 0
    assert r.error_message == "no such table: no_such_table_here"
    assert r.error_code == grpc.StatusCode.INVALID_ARGUMENT
    assert r.execution_time_ms > 0
    # The same message as the typed API's.
    with pytest.raises(iadb.DatabaseError) as info:
        await db.fetch_rows("SELECT * FROM no_such_table_here")
    assert info.value.message == r.error_message


async def test_syntax_error_is_invalid_argument(db):
    r = await db.execute_query("SELEC 1")
    assert not r.success and "syntax error" in r.error_message
    for call in (db.fetch_rows, db.fetch_row, db.execute):
        with pytest.raises(iadb.DatabaseError) as info:
            await call("SELEC 1")
        e = info.value
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert 'near "SELEC": syntax error' in e.message
        assert e.sqlstate == "1"  # SQLITE_ERROR
        assert "INVALID_ARGUMENT" in str(e) and not e.retryable


async def test_unique_violation_is_already_exists(db, table):
    await db.execute("CREATE TABLE %s (v TEXT UNIQUE)" % table)
    await db.execute("INSERT INTO %s (v) VALUES (?)" % table, ["x"])
    with pytest.raises(iadb.DatabaseError) as info:
        await db.execute("INSERT INTO %s (v) VALUES (?)" % table, ["x"])
    e = info.value
    assert e.code == grpc.StatusCode.ALREADY_EXISTS
    assert e.message == "UNIQUE constraint failed: %s.v" % table
    assert e.sqlstate == "2067"  # SQLITE_CONSTRAINT_UNIQUE
    r = await db.execute_query("INSERT INTO %s (v) VALUES (?)" % table, ["x"])
    assert not r.success and r.error_code == grpc.StatusCode.ALREADY_EXISTS
    assert r.sqlstate == "2067" and r.error_message == e.message


async def test_not_null_violation_is_failed_precondition(db, table):
    await db.execute("CREATE TABLE %s (v TEXT NOT NULL)" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        await db.execute("INSERT INTO %s (v) VALUES (?)" % table, [None])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "NOT NULL" in info.value.message


async def test_wrong_parameter_count(db):
    r = await db.execute_query("SELECT ?, ?", [1])
    assert not r.success and r.error_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "2" in r.error_message and "1" in r.error_message


async def test_empty_sql(db):
    with pytest.raises(iadb.DatabaseError) as info:
        await db.fetch_rows("")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_database_is_invalid_argument(server):
    async with iadb.Database(server.address, database="nope") as db:
        r = await db.execute_query("SELECT 1")
        assert not r.success and r.error_code == grpc.StatusCode.INVALID_ARGUMENT
        assert "nope" in r.error_message
        with pytest.raises(iadb.DatabaseError) as info:
            await db.table_exists("x")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_execute_many_error_names_the_set(db, table):
    await db.execute("CREATE TABLE %s (v INTEGER NOT NULL)" % table)
    r = await db.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [[1], [2], [None], [4]])
    assert not r.success
    assert r.error_code == grpc.StatusCode.FAILED_PRECONDITION
    assert r.error_message.startswith("parameter set 2")
    assert (await db.fetch_row("SELECT COUNT(*) AS n FROM %s" % table)) == {"n": 0}
