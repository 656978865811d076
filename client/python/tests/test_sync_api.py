"""iadb.SyncDatabase: the same API without await."""

from __future__ import annotations

import grpc
import pytest

import iadb


def test_with_block(server):
    with iadb.SyncDatabase(server.address) as db:
        assert db.is_connected
        assert db.health().healthy
    assert not db.is_connected
    with pytest.raises(RuntimeError):
        db.fetch_rows("SELECT 1")


def test_connect_to_nothing_is_unavailable():
    db = iadb.SyncDatabase("127.0.0.1:1", connect_timeout=0.5)
    with pytest.raises(iadb.DatabaseError) as info:
        db.connect()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_every_method(sdb, table):
    assert sdb.table_exists(table) is False
    r = sdb.execute_query("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT, score REAL)" % table)
    assert r.success
    assert sdb.table_exists(table) is True
    e = sdb.execute("INSERT INTO %s (name, score) VALUES (?, ?)" % table, ["Ada", 9.5])
    assert e.rows_affected == 1 and e.last_insert_id == 1
    m = sdb.execute_many(
        "INSERT INTO %s (name, score) VALUES (?, ?)" % table, [["Grace", 8.0], ["Linus", 4.0]]
    )
    assert m.success and m.row_count == 2
    r = sdb.execute_query("SELECT name, score FROM %s WHERE score > ? ORDER BY id" % table, [5])
    assert r.success and r.row_count == 2
    assert r.get_first_row() == {"name": "Ada", "score": 9.5}
    assert r.get_column_values("name") == ["Ada", "Grace"]
    assert sdb.fetch_rows("SELECT name FROM %s ORDER BY id" % table) == [
        {"name": "Ada"}, {"name": "Grace"}, {"name": "Linus"}
    ]
    assert sdb.fetch_row("SELECT name FROM %s WHERE id = ?" % table, [3]) == {"name": "Linus"}
    assert sdb.fetch_row("SELECT name FROM %s WHERE id = ?" % table, [99]) is None
    with sdb.iterate("SELECT id FROM %s ORDER BY id" % table) as rows:
        assert [row["id"] for row in rows] == [1, 2, 3]
        assert rows.columns == ["id"] and rows.row_count == 3
    r = sdb.execute_with_retry("SELECT COUNT(*) AS n FROM %s" % table)
    assert r.success and r.data == [{"n": 3}]


def test_errors(sdb, table):
    r = sdb.execute_query("SELECT * FROM missing_sync_table")
    assert not r.success and r.error_message == "no such table: missing_sync_table"
    assert r.error_code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(iadb.DatabaseError) as info:
        sdb.fetch_rows("SELEC 1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.sqlstate == "1"
    sdb.execute("CREATE TABLE %s (v TEXT PRIMARY KEY)" % table)
    sdb.execute("INSERT INTO %s VALUES ('a')" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        sdb.execute("INSERT INTO %s VALUES ('a')" % table)
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    r = sdb.execute_many("INSERT INTO %s VALUES (?)" % table, [["b"], ["a"]])
    assert not r.success and r.error_code == grpc.StatusCode.ALREADY_EXISTS
    assert sdb.fetch_rows("SELECT v FROM %s" % table) == [{"v": "a"}]


def test_early_close_cancels(sdb):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000000) SELECT x FROM c"
    for _ in range(15):
        with sdb.iterate(sql) as rows:
            for row in rows:
                if row["x"] == 5:
                    break
    assert sdb.fetch_row("SELECT 7 AS x") == {"x": 7}


def test_bad_parameters_raise_before_any_call():
    db = iadb.SyncDatabase("127.0.0.1:1")
    for call in (db.execute_query, db.execute, db.fetch_all, db.fetch_one, db.iterate,
                 db.execute_with_retry):
        with pytest.raises(TypeError):
            call("SELECT ?", [object()])
    with pytest.raises(TypeError):
        db.execute_many("SELECT ?", [[set()]])
