"""iadb.dbapi: DB-API 2.0 (PEP 249) against real servers, plus the standard
compliance suite (`dbapi20.py` from the PyPI package `dbapi-compliance`)."""

from __future__ import annotations

import datetime as dt
import os
import time
import tracemalloc
import uuid
import warnings
from decimal import Decimal

import pytest

import iadb
import iadb.dbapi as dbapi

from conftest import Server, in_ci, skip_or_fail

try:
    import dbapi20  # the PyPI package `dbapi-compliance`
except ImportError:  # pragma: no cover - the suite is a test dependency
    if in_ci():
        raise  # CI=true: nothing may be skipped
    pytest.skip("the DB-API compliance suite: dbapi20 is not installed (pip install dbapi-compliance)",
                allow_module_level=True)


@pytest.fixture
def conn(server):
    c = dbapi.connect(server.address)
    yield c
    if not c.closed:
        c.close()


def test_module_globals():
    assert dbapi.apilevel == "2.0" and dbapi.paramstyle == "qmark" and dbapi.threadsafety == 1
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert issubclass(getattr(dbapi, name), Exception)
    assert issubclass(dbapi.IntegrityError, dbapi.DatabaseError) and issubclass(dbapi.DatabaseError, dbapi.Error)
    assert dbapi.Binary(b"x") == b"x" and dbapi.Date(2024, 1, 2) == dt.date(2024, 1, 2)
    assert dbapi.TimestampFromTicks(0).year in (1969, 1970)


def test_execute_fetch_description_rowcount_lastrowid(conn, table):
    cur = conn.cursor()
    cur.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name VARCHAR(20), score REAL, data BLOB, "
                "born DATE)" % table)
    assert cur.description is None
    cur.execute("INSERT INTO %s (name, score, data, born) VALUES (?, ?, ?, ?)" % table,
                ("Ada", 9.5, b"\x00\x01", dt.date(1815, 12, 10)))
    assert cur.rowcount == 1 and cur.lastrowid == 1 and cur.description is None
    cur.executemany("INSERT INTO %s (name, score) VALUES (?, ?)" % table, [("Grace", 8.0), ("Linus", 4.0)])
    assert cur.rowcount == 2
    cur.execute("SELECT id, name, score, data, born FROM %s ORDER BY id" % table)
    assert [d[0] for d in cur.description] == ["id", "name", "score", "data", "born"]
    assert all(len(d) == 7 for d in cur.description)
    types = [d[1] for d in cur.description]
    assert types[0] == dbapi.NUMBER and types[1] == dbapi.STRING and types[2] == dbapi.NUMBER
    assert types[3] == dbapi.BINARY and types[4] == dbapi.DATETIME and types[1] != dbapi.NUMBER
    assert cur.fetchone() == (1, "Ada", 9.5, b"\x00\x01", dt.date(1815, 12, 10))
    cur.arraysize = 1
    assert cur.fetchmany() == [(2, "Grace", 8.0, None, None)]
    assert cur.fetchall() == [(3, "Linus", 4.0, None, None)]
    assert cur.rowcount == 3 and cur.fetchone() is None
    cur.execute("SELECT name FROM %s WHERE score > ? ORDER BY id" % table, [5])
    assert [row for row in cur] == [("Ada",), ("Grace",)]
    # Duplicate column names keep both values (rows are tuples).
    cur.execute("SELECT 1 AS x, 2 AS x")
    assert cur.fetchall() == [(1, 2)]
    conn.commit()


def test_transactions_commit_and_rollback(server, table):
    a = dbapi.connect(server.address)
    b = dbapi.connect(server.address, autocommit=True)
    try:
        ca, cb = a.cursor(), b.cursor()
        cb.execute("CREATE TABLE %s (v TEXT)" % table)
        ca.execute("INSERT INTO %s VALUES (?)" % table, ("kept",))
        assert a.in_transaction
        cb.execute("SELECT count(*) FROM %s" % table)
        assert cb.fetchone() == (0,)  # not committed yet: not visible elsewhere
        a.commit()
        assert not a.in_transaction
        cb.execute("SELECT count(*) FROM %s" % table)
        assert cb.fetchone() == (1,)
        ca.execute("INSERT INTO %s VALUES (?)" % table, ("dropped",))
        ca.execute("SELECT count(*) FROM %s" % table)
        assert ca.fetchone() == (2,)  # its own write is visible inside
        a.rollback()
        cb.execute("SELECT v FROM %s" % table)
        assert cb.fetchall() == [("kept",)]
        with a:  # commits at the end of the block
            a.cursor().execute("INSERT INTO %s VALUES ('block')" % table)
        cb.execute("SELECT count(*) FROM %s" % table)
        assert cb.fetchone() == (2,)
        with pytest.raises(ZeroDivisionError):
            with a:
                a.cursor().execute("INSERT INTO %s VALUES ('undone')" % table)
                1 / 0
        cb.execute("SELECT count(*) FROM %s" % table)
        assert cb.fetchone() == (2,)
    finally:
        a.close()
        b.close()


def test_error_classes_from_grpc_codes(conn, table):
    cur = conn.cursor()
    with pytest.raises(dbapi.ProgrammingError) as info:
        cur.execute("SELEC 1")
    assert info.value.code.name == "INVALID_ARGUMENT" and info.value.sqlstate == "1"
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("SELECT * FROM no_such_table_dbapi")
    cur.execute("CREATE TABLE %s (v TEXT PRIMARY KEY, n INTEGER NOT NULL)" % table)
    cur.execute("INSERT INTO %s VALUES ('a', 1)" % table)
    conn.commit()
    with pytest.raises(dbapi.IntegrityError):
        cur.execute("INSERT INTO %s VALUES ('a', 2)" % table)
    # The error ended the transaction; the next statement begins another.
    assert not conn.in_transaction
    with pytest.raises(dbapi.IntegrityError):
        cur.execute("INSERT INTO %s VALUES ('b', NULL)" % table)
    with pytest.raises(dbapi.DataError):
        cur.execute("SELECT ?", (2**70,))
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("SELECT ?", (object(),))
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("SELECT :a", {"a": 1})
    with pytest.raises(dbapi.ProgrammingError):
        conn.cursor().fetchone()  # nothing executed
    cur.execute("SELECT v FROM %s" % table)
    assert cur.fetchall() == [("a",)]
    cur.close()
    with pytest.raises(dbapi.InterfaceError):
        cur.execute("SELECT 1")
    conn.close()
    with pytest.raises(dbapi.InterfaceError):
        conn.cursor()
    with pytest.raises(dbapi.InterfaceError):
        conn.close()


def test_connection_refused_is_operational_error_at_once():
    start = time.monotonic()
    with pytest.raises(dbapi.OperationalError) as info:
        dbapi.connect("127.0.0.1:1", connect_timeout=10)
    assert time.monotonic() - start < 3
    assert "cannot reach iadb server at 127.0.0.1:1" in str(info.value)


def test_values_bind(conn, table):
    cur = conn.cursor()
    cur.execute("CREATE TABLE %s (u TEXT, ts DATETIME, amount TEXT, raw BLOB, doc TEXT)" % table)
    u = uuid.uuid4()
    when = dt.datetime(2024, 2, 29, 13, 14, 15, 123456)
    cur.execute("INSERT INTO %s VALUES (?, ?, ?, ?, ?)" % table,
                (u, when, Decimal("1.10"), b"\xff", {"a": [1, 2]}))
    cur.execute("SELECT u, ts, amount, raw, doc FROM %s" % table)
    assert cur.fetchone() == (str(u), when, "1.10", b"\xff", '{"a": [1, 2]}')


def test_two_cursors_interleave_in_one_transaction(conn, table):
    cur = conn.cursor()
    cur.execute("CREATE TABLE %s (n INTEGER)" % table)
    cur.executemany("INSERT INTO %s VALUES (?)" % table, [(i,) for i in range(3000)])
    first = conn.cursor()
    first.execute("SELECT n FROM %s ORDER BY n" % table)
    assert first.fetchone() == (0,)
    second = conn.cursor()
    second.execute("SELECT count(*) FROM %s" % table)  # first's rows are kept, not lost
    assert second.fetchone() == (3000,)
    assert len(first.fetchall()) == 2999 and first.rowcount == 3000
    conn.rollback()


def test_rows_stream_and_early_close_in_autocommit(server):
    conn = dbapi.connect(server.address, autocommit=True)
    try:
        cur = conn.cursor()
        sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 300000) "
               "SELECT x, 'some text to make the row wider' FROM c")
        tracemalloc.start()
        cur.execute(sql)
        n = 0
        for row in cur:
            n += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert n == 300000 and cur.rowcount == 300000
        assert peak < 16 * 1024 * 1024, peak  # streamed, not held whole
        # Stopping early cancels the query; the connection goes on.
        for _ in range(5):
            cur.execute(sql.replace("300000", "100000000"))
            assert cur.fetchmany(3) == [(1, "some text to make the row wider"), (2, "some text to make the row wider"),
                                        (3, "some text to make the row wider")]
            cur.close()
            cur = conn.cursor()
        cur.execute("SELECT 7")
        assert cur.fetchone() == (7,)
    finally:
        conn.close()


def test_pandas_read_sql(conn, table):
    try:
        import pandas as pd
    except ImportError:
        skip_or_fail("pandas.read_sql", "pandas is not installed (pip install pandas)")
    cur = conn.cursor()
    cur.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name TEXT, score REAL)" % table)
    cur.executemany("INSERT INTO %s (name, score) VALUES (?, ?)" % table,
                    [("n%d" % i, i / 2) for i in range(1000)])
    conn.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "pandas only supports SQLAlchemy connectable ..."
        df = pd.read_sql("SELECT id, name, score FROM %s WHERE id > ? ORDER BY id" % table, conn, params=(10,))
        chunks = list(pd.read_sql("SELECT id FROM %s" % table, conn, chunksize=300))
    assert list(df.columns) == ["id", "name", "score"]
    assert len(df) == 990 and df["id"].iloc[0] == 11 and df["name"].iloc[-1] == "n999"
    assert df["score"].sum() == sum(i / 2 for i in range(10, 1000))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]


def test_postgres_and_mysql(engine_server, table):
    conn = dbapi.connect(engine_server.address)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, name VARCHAR(20), amount NUMERIC(10,2))" % table)
        conn.commit()
        cur.executemany("INSERT INTO %s VALUES (?, ?, ?)" % table, [(1, "a", Decimal("1.50")), (2, "b", None)])
        conn.commit()
        cur.execute("SELECT id, name, amount FROM %s ORDER BY id" % table)
        assert cur.description[1][1] == dbapi.STRING and cur.description[2][1] == dbapi.NUMBER
        assert cur.fetchall() == [(1, "a", Decimal("1.50")), (2, "b", None)]
        cur.execute("UPDATE %s SET name = ? WHERE id = ?" % table, ("z", 1))
        assert cur.rowcount == 1
        conn.rollback()
        cur.execute("SELECT name FROM %s WHERE id = 1" % table)
        assert cur.fetchone() == ("a",)
        with pytest.raises(dbapi.IntegrityError):
            cur.execute("INSERT INTO %s VALUES (1, 'dup', NULL)" % table)
        conn.rollback()
    finally:
        try:
            c2 = dbapi.connect(engine_server.address, autocommit=True)
            c2.cursor().execute("DROP TABLE IF EXISTS %s" % table)
            c2.close()
        finally:
            conn.close()


def test_isolation_is_set_on_the_connection(engine_server):
    """`Connection.isolation` is the level of the transactions it begins
    (what SQLAlchemy's `isolation_level` sets); it cannot change inside one."""
    conn = dbapi.connect(engine_server.address, isolation="read committed")
    try:
        cur = conn.cursor()
        conn.isolation = "REPEATABLE READ"
        assert conn.isolation == "REPEATABLE READ"
        if engine_server.engine == "postgresql":
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == ("repeatable read",)
        else:
            cur.execute("SELECT 1")
            cur.fetchall()
        assert conn.in_transaction
        with pytest.raises(dbapi.ProgrammingError, match="inside a transaction"):
            conn.isolation = "serializable"
        conn.rollback()
        conn.isolation = "serializable"
        if engine_server.engine == "postgresql":
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == ("serializable",)
        conn.rollback()
        with pytest.raises(ValueError):
            conn.isolation = "no such level"
        assert conn.isolation == "serializable"
    finally:
        conn.close()


# --- the compliance suite ------------------------------------------------------


class _Compliance(dbapi20.DatabaseAPI20Test):
    __test__ = False  # the engine classes below run it
    driver = dbapi
    connect_args = ()
    connect_kw_args = {}
    # Tables of a prefix of their own (the shared servers' databases).
    table_prefix = "dbapi20test_"

    def test_nextset(self):
        pytest.skip("excluded: no multiple result sets (nextset is optional in PEP 249)")

    def test_setoutputsize(self):
        pytest.skip("excluded: setoutputsize is a no-op, which the suite leaves to the driver to test")


class TestComplianceSQLite(_Compliance):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _server(self, server):
        self.connect_kw_args = {"server": server.address}


_ENGINE_SERVERS = {}


class TestCompliancePostgres(_Compliance):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _server(self):
        url = os.environ.get("IADB_TEST_POSTGRES_URL")
        if not url:
            skip_or_fail("postgresql server", "IADB_TEST_POSTGRES_URL is not set")
        if "postgresql" not in _ENGINE_SERVERS:
            _ENGINE_SERVERS["postgresql"] = Server(database_url=url)
        self.connect_kw_args = {"server": _ENGINE_SERVERS["postgresql"].address}


class TestComplianceMySQL(_Compliance):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _server(self):
        url = os.environ.get("IADB_TEST_MYSQL_URL")
        if not url:
            skip_or_fail("mysql server", "IADB_TEST_MYSQL_URL is not set")
        if "mysql" not in _ENGINE_SERVERS:
            _ENGINE_SERVERS["mysql"] = Server(database_url=url)
        self.connect_kw_args = {"server": _ENGINE_SERVERS["mysql"].address}


@pytest.fixture(scope="module", autouse=True)
def _close_engine_servers():
    yield
    for s in _ENGINE_SERVERS.values():
        s.close()
    _ENGINE_SERVERS.clear()
