"""Arrow results (issue 14 Part 3): ``fetch_arrow`` (a ``pyarrow.Table``),
``fetch_df`` (pandas through Arrow) and ``fetch_polars``, on the async and
the sync client and in transactions, against live servers on SQLite and
PostgreSQL (``$IADB_TEST_POSTGRES_URL``; skipped without it, failed in CI).

What a caller sees: each engine's column types (docs/arrow.md), values
equal to the row path's, results of many record batches, an empty result
that keeps its columns, an error after some rows that raises (never a
short table), and a missing optional package named in the ImportError.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sys
import uuid

import grpc
import pytest

import iadb

from conftest import in_ci, skip_or_fail

try:
    import pandas as pd
    import pyarrow as pa
except ImportError as e:  # pragma: no cover - CI installs both
    if in_ci():
        raise
    pytest.skip("Arrow tests need pyarrow and pandas (pip install \"iadb[pandas]\"): %s" % e,
                allow_module_level=True)

UTC = dt.timezone.utc

#: 50,000 rows of several kinds: the server sends them in many record
#: batches (at most 1024 rows or 1 MiB each).
MANY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 50000) "
    "SELECT x, 'row ' || x AS label, x * 0.5 AS half, "
    "CASE WHEN x % 7 = 0 THEN NULL ELSE x % 3 END AS maybe FROM c"
)


def _polars():
    try:
        import polars
    except ImportError:
        skip_or_fail("polars", "polars is not installed (pip install polars)")
    return polars


# --- SQLite -----------------------------------------------------------------


SQLITE_ROWS = [
    (1, 1.5, "Ada", True, b"\x00\x01\xff", dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 678901)),
    (-(2**63), -0.25, "", False, b"", dt.date(1970, 1, 1), dt.datetime(1999, 12, 31, 23, 59, 59)),
    (None, None, None, None, None, None, None),
]


async def _sqlite_typed_table(db, table):
    await db.execute("CREATE TABLE %s (i INTEGER, f REAL, t TEXT, b BOOLEAN, y BLOB, d DATE, ts DATETIME)"
                     % table)
    await db.execute_many("INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?, ?)" % table, SQLITE_ROWS)


async def test_sqlite_types_and_values(db, table):
    await _sqlite_typed_table(db, table)
    sql = "SELECT i, f, t, b, y, d, ts FROM %s ORDER BY rowid" % table
    t = await db.fetch_arrow(sql)
    assert isinstance(t, pa.Table)
    assert t.column_names == ["i", "f", "t", "b", "y", "d", "ts"]
    assert [str(f.type) for f in t.schema] == [
        "int64", "double", "string", "bool", "binary", "date32[day]", "timestamp[us]"]
    assert t.num_rows == 3
    assert [tuple(r.values()) for r in t.to_pylist()] == SQLITE_ROWS
    # The same values as the row path.
    assert t.to_pylist() == await db.fetch_rows(sql)


def test_sqlite_sync_client(sdb, table):
    sdb.execute("CREATE TABLE %s (i INTEGER, t TEXT)" % table)
    sdb.execute_many("INSERT INTO %s VALUES (?, ?)" % table, [[1, "a"], [2, None]])
    t = sdb.fetch_arrow("SELECT i, t FROM %s WHERE i >= ? ORDER BY i" % table, [1])
    assert t.to_pylist() == [{"i": 1, "t": "a"}, {"i": 2, "t": None}]
    df = sdb.fetch_df("SELECT i, t FROM %s ORDER BY i" % table)
    assert list(df["i"]) == [1, 2] and df["i"].dtype == "int64"


async def test_many_record_batches_equal_the_row_path(db, sdb):
    t = await db.fetch_arrow(MANY)
    assert t.num_rows == 50_000
    assert t.column("x").num_chunks > 1, "expected several record batches"
    rows = await db.fetch_rows(MANY)
    assert t.to_pylist() == rows
    assert sdb.fetch_arrow(MANY).equals(t)
    assert t.column("x").to_pylist() == list(range(1, 50_001))


async def test_empty_result_keeps_its_columns(db, table):
    await db.execute("CREATE TABLE %s (i INTEGER, t TEXT, f REAL)" % table)
    t = await db.fetch_arrow("SELECT i, t, f FROM %s" % table)
    assert t.num_rows == 0
    assert t.column_names == ["i", "t", "f"]
    assert [str(f.type) for f in t.schema] == ["int64", "string", "double"]
    df = await db.fetch_df("SELECT i, t, f FROM %s" % table)
    assert list(df.columns) == ["i", "t", "f"] and len(df) == 0


async def test_error_after_some_rows_raises_not_a_short_table(db, sdb, table):
    await db.execute("CREATE TABLE %s (x INTEGER)" % table)
    await db.execute_many("INSERT INTO %s (x) VALUES (?)" % table, [[i] for i in range(1, 5001)])
    sql = "SELECT CASE WHEN x = 4000 THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM %s" % table
    for call in (db.fetch_arrow, db.fetch_df):
        with pytest.raises(iadb.DatabaseError) as info:
            await call(sql)
        assert "overflow" in info.value.message.lower()
    with pytest.raises(iadb.DatabaseError) as info:
        sdb.fetch_arrow(sql)
    assert "overflow" in info.value.message.lower()
    # The client goes on.
    assert (await db.fetch_arrow("SELECT 1 AS one")).to_pylist() == [{"one": 1}]


async def test_a_server_error_raises(db):
    with pytest.raises(iadb.DatabaseError) as info:
        await db.fetch_arrow("SELEC 1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(iadb.DatabaseError) as info:
        await db.fetch_arrow("SELECT * FROM no_such_table_arrow")
    assert info.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_parameters_and_bad_parameters(db):
    t = await db.fetch_arrow("SELECT ? AS a, ? AS b, ? AS c", [7, "x", 2.5])
    assert t.to_pylist() == [{"a": 7, "b": "x", "c": 2.5}]
    # A statement without a result: a table without columns.
    t = await db.fetch_arrow("CREATE TABLE IF NOT EXISTS t_arrow_ddl_%s (x INTEGER)" % uuid.uuid4().hex[:8])
    assert t.num_rows == 0 and t.num_columns == 0
    unconnected = iadb.Database("127.0.0.1:1")
    with pytest.raises(TypeError):
        await db.fetch_arrow("SELECT ?", [object()])
    with pytest.raises(RuntimeError):
        await unconnected.fetch_arrow("SELECT 1")


async def test_fetch_df_dtypes(db, table):
    await _sqlite_typed_table(db, table)
    df = await db.fetch_df("SELECT i, f, t, b, y, d, ts FROM %s WHERE i IS NOT NULL ORDER BY rowid" % table)
    assert isinstance(df, pd.DataFrame)
    assert df["i"].dtype == "int64"
    assert df["f"].dtype == "float64"
    assert pd.api.types.is_string_dtype(df["t"]) or df["t"].dtype == object
    assert df["b"].dtype == bool
    assert df["ts"].dtype == "datetime64[us]"
    assert df["i"].tolist() == [1, -(2**63)]
    assert df["t"].tolist() == ["Ada", ""]
    assert df["y"].tolist() == [b"\x00\x01\xff", b""]
    assert df["ts"].tolist() == [pd.Timestamp("2024-01-02 03:04:05.678901"), pd.Timestamp("1999-12-31 23:59:59")]
    # NULLs: pandas' own conversion (an int column with a NULL is float64).
    df = await db.fetch_df("SELECT i FROM %s ORDER BY rowid" % table)
    assert df["i"].dtype == "float64" and df["i"].isna().tolist() == [False, False, True]
    # Keyword arguments go to Table.to_pandas.
    df = await db.fetch_df("SELECT i FROM %s ORDER BY rowid" % table, types_mapper=pd.ArrowDtype)
    assert df["i"].tolist()[:2] == [1, -(2**63)] and df["i"].isna().tolist() == [False, False, True]


async def test_fetch_polars(db, sdb, table):
    pl = _polars()
    await _sqlite_typed_table(db, table)
    sql = "SELECT i, f, t, b, y, d, ts FROM %s ORDER BY rowid" % table
    df = await db.fetch_polars(sql)
    assert isinstance(df, pl.DataFrame)
    assert df.schema == pl.Schema({"i": pl.Int64, "f": pl.Float64, "t": pl.String, "b": pl.Boolean,
                                   "y": pl.Binary, "d": pl.Date, "ts": pl.Datetime("us")})
    assert df.rows() == SQLITE_ROWS
    assert sdb.fetch_polars(MANY).height == 50_000
    empty = await db.fetch_polars(sql + " LIMIT 0")
    assert empty.height == 0 and empty.columns == ["i", "f", "t", "b", "y", "d", "ts"]


async def test_transaction_fetch_arrow(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO %s (id, v) VALUES (1, 'one'), (2, 'two')" % table)
        t = await tx.fetch_arrow("SELECT id, v FROM %s ORDER BY id" % table)
        assert t.to_pylist() == [{"id": 1, "v": "one"}, {"id": 2, "v": "two"}]
        # Rows and Arrow fetches interleave on one transaction.
        assert await tx.fetch_all("SELECT count(*) AS n FROM %s" % table) == [{"n": 2}]
        big = await tx.fetch_arrow(MANY)
        assert big.num_rows == 50_000 and big.column("x").num_chunks > 1
        df = await tx.fetch_df("SELECT id FROM %s ORDER BY id" % table)
        assert df["id"].tolist() == [1, 2]
        # Not visible outside the transaction yet.
        assert (await db.fetch_arrow("SELECT id FROM %s" % table)).num_rows == 0
    assert (await db.fetch_arrow("SELECT id FROM %s" % table)).num_rows == 2


async def test_transaction_error_mid_fetch_ends_it(db, table):
    await db.execute("CREATE TABLE %s (x INTEGER)" % table)
    await db.execute_many("INSERT INTO %s (x) VALUES (?)" % table, [[i] for i in range(1, 5001)])
    sql = "SELECT CASE WHEN x = 4000 THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM %s" % table
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (x) VALUES (0)" % table)
            await tx.fetch_arrow(sql)
    assert "overflow" in info.value.message.lower()
    assert tx.committed is False
    assert (await db.fetch_row("SELECT count(*) AS n FROM %s" % table)) == {"n": 5000}


def test_sync_transaction_fetch_arrow(sdb, table):
    sdb.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v REAL)" % table)
    with sdb.transaction() as tx:
        tx.execute("INSERT INTO %s (id, v) VALUES (1, 0.5)" % table)
        assert tx.fetch_arrow("SELECT id, v FROM %s" % table).to_pylist() == [{"id": 1, "v": 0.5}]
        assert tx.fetch_df("SELECT v FROM %s" % table)["v"].tolist() == [0.5]
        try:
            import polars  # noqa: F401
        except ImportError:
            pass
        else:
            assert tx.fetch_polars("SELECT id FROM %s" % table)["id"].to_list() == [1]
        tx.execute("INSERT INTO %s (id, v) VALUES (2, 1.5)" % table)
    assert sdb.fetch_arrow("SELECT count(*) AS n FROM %s" % table).to_pylist() == [{"n": 2}]


# --- the optional packages ----------------------------------------------------


async def test_missing_pyarrow_names_the_extra(monkeypatch, db):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    # Unconnected: the ImportError comes before anything else.
    for client in (iadb.Database("127.0.0.1:1"), db):
        with pytest.raises(ImportError, match=r'iadb\[arrow\]'):
            await client.fetch_arrow("SELECT 1")
        with pytest.raises(ImportError, match=r'iadb\[arrow\]'):
            await client.fetch_df("SELECT 1")
    with pytest.raises(ImportError, match=r'iadb\[arrow\]'):
        iadb.SyncDatabase("127.0.0.1:1").fetch_arrow("SELECT 1")


async def test_missing_pandas_or_polars_names_them(monkeypatch):
    client = iadb.Database("127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ImportError, match=r'iadb\[polars\]'):
        await client.fetch_polars("SELECT 1")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'iadb\[pandas\]'):
        await client.fetch_df("SELECT 1")


# --- PostgreSQL ---------------------------------------------------------------


@pytest.fixture
async def pg(pg_server):
    async with iadb.Database(pg_server.address) as d:
        yield d


@pytest.fixture
async def pg_table(pg_server):
    name = "t_pyarrow_" + uuid.uuid4().hex[:12]
    yield name
    with iadb.SyncDatabase(pg_server.address) as d:
        d.execute("DROP TABLE IF EXISTS %s" % name)


PG_ROWS = [
    (1, 1.5, "Ada", True, b"\x00\xff", dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
     dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), decimal.Decimal("12345678901234567890.123"), 7),
    (-(2**63), float("-inf"), "", False, b"", dt.date(1, 1, 1), dt.datetime(1970, 1, 1),
     dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC), decimal.Decimal("-0.5"), -32768),
    (None,) * 10,
]


async def test_postgres_types_and_values(pg, pg_table):
    await pg.execute(
        "CREATE TABLE %s (i BIGINT, f DOUBLE PRECISION, t TEXT, b BOOLEAN, y BYTEA, d DATE, "
        "ts TIMESTAMP, tz TIMESTAMPTZ, n NUMERIC, s SMALLINT, k SERIAL)" % pg_table)
    await pg.execute_many("INSERT INTO %s (i, f, t, b, y, d, ts, tz, n, s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                          % pg_table, PG_ROWS)
    sql = "SELECT i, f, t, b, y, d, ts, tz, n, s FROM %s ORDER BY k" % pg_table
    t = await pg.fetch_arrow(sql)
    assert [str(f.type) for f in t.schema] == [
        "int64", "double", "string", "bool", "binary", "date32[day]", "timestamp[us]",
        "timestamp[us, tz=UTC]", "string", "int64"]
    got = [tuple(r.values()) for r in t.to_pylist()]
    # NUMERIC travels as its exact digits (Utf8).
    want = [row[:8] + ((str(row[8]) if row[8] is not None else None),) + row[9:] for row in PG_ROWS]
    assert got == want
    rows = await pg.fetch_rows(sql)
    assert [{**r, "n": None if r["n"] is None else str(r["n"])} for r in rows] == t.to_pylist()
    df = await pg.fetch_df(sql + " LIMIT 2")
    assert str(df["tz"].dtype) == "datetime64[us, UTC]" and df["i"].dtype == "int64"


async def test_postgres_many_batches_and_errors(pg, pg_server):
    sql = ("SELECT x, md5(x::text) AS h, x::float8 / 3 AS third, "
           "timestamp '2020-01-01' + x * interval '1 second' AS at FROM generate_series(1, 30000) AS x")
    t = await pg.fetch_arrow(sql)
    assert t.num_rows == 30000 and t.column("x").num_chunks > 1
    assert t.to_pylist() == await pg.fetch_rows(sql)
    with pytest.raises(iadb.DatabaseError) as info:
        await pg.fetch_arrow("SELECT CASE WHEN x = 20000 THEN 1 / (x - x) ELSE x END AS v "
                             "FROM generate_series(1, 30000) AS x")
    assert info.value.sqlstate == "22012"  # division_by_zero
    with iadb.SyncDatabase(pg_server.address) as s:
        assert s.fetch_arrow(sql).equals(t)
        with s.transaction() as tx:
            assert tx.fetch_arrow(sql).equals(t)
            assert tx.fetch_arrow("SELECT 1::int8 AS one WHERE false").column_names == ["one"]
