"""Rows through Arrow (issue 14's Python rows target): ``iadb.dbapi.connect(...,
arrow=True)`` and ``iterate(..., arrow=True)`` ask for the result as Arrow
record batches and turn each batch into rows with pyarrow and numpy.

What a caller sees: exactly the rows the row format gives (the same values
of the same Python types: Decimal for a decimal column, parsed JSON,
datetimes in ``timezone.utc``, NULLs) on SQLite, PostgreSQL and
MySQL/MariaDB, inside a transaction and outside it, over many record
batches; a value that Arrow cannot carry in its column raises instead of
being changed; a broken Arrow stream is an error, never short rows; and a
missing pyarrow is named before anything is sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import sys
import uuid

import grpc
import pytest

import iadb
import iadb.dbapi as dbapi
from iadb import _common as c
from iadb._proto import database_pb2 as pb

from conftest import in_ci

try:
    import pyarrow as pa
except ImportError as e:  # pragma: no cover - CI installs it
    if in_ci():
        raise
    pytest.skip("these tests need pyarrow (pip install \"iadb[arrow]\"): %s" % e, allow_module_level=True)

UTC = dt.timezone.utc
D = decimal.Decimal


def typed(rows):
    """Each value with its type: equal rows of other types (1 and 1.0,
    Decimal and int, two tzinfo objects) must not pass."""
    return [tuple((type(v).__name__, v, getattr(v, "tzinfo", None)) for v in row) for row in rows]


def rows_of(address, sql, arrow, **kw):
    """`fetchall()`, `rowcount` and `description` of `sql` on a connection
    of its own."""
    conn = dbapi.connect(address, arrow=arrow, **kw)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        out = (cur.fetchall(), cur.rowcount, cur.description)
        conn.commit()
        return out
    finally:
        conn.close()


def both_ways(address, sql, **kw):
    """The rows of `sql` through the row format and through Arrow."""
    return [rows_of(address, sql, arrow, **kw) for arrow in (False, True)]


# --- SQLite -----------------------------------------------------------------


#: More rows than one record batch holds (1024): the rows come in many.
MANY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000) "
    "SELECT x, 'row ' || x AS label, x * 0.5 AS half, "
    "CASE WHEN x % 7 = 0 THEN NULL ELSE x % 3 END AS maybe FROM c"
)


@pytest.mark.parametrize("numpy", [True, False], ids=["numpy", "no-numpy"])
def test_sqlite_rows_through_arrow_equal_the_row_format(server, table, numpy, monkeypatch):
    # Without numpy (pyarrow no longer needs it) every column goes through
    # pyarrow's to_pylist: the same rows.
    iadb._arrow.ArrowRows()  # finds out whether numpy imports
    if not numpy:
        monkeypatch.setattr(iadb._arrow, "_NUMPY", False)
    conn = dbapi.connect(server.address, autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE %s (i INTEGER, f REAL, t TEXT, b BOOLEAN, y BLOB, d DATE, ts DATETIME)" % table)
    cur.executemany("INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?, ?)" % table, [
        (1, 1.5, "Ada", True, b"\x00\x01\xff", dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 678901)),
        (-(2**63), float("-inf"), "", False, b"", dt.date(1, 1, 1), dt.datetime(1999, 12, 31, 23, 59, 59)),
        (None, None, None, None, None, None, None),
    ])
    conn.close()
    (rows, n, desc), (arrow_rows, arrow_n, arrow_desc) = both_ways(
        server.address, "SELECT i, f, t, b, y, d, ts FROM %s ORDER BY rowid" % table)
    assert rows[0] == (1, 1.5, "Ada", True, b"\x00\x01\xff", dt.date(2024, 2, 29),
                       dt.datetime(2024, 1, 2, 3, 4, 5, 678901))
    assert typed(arrow_rows) == typed(rows)
    assert (arrow_n, arrow_desc) == (n, desc) == (3, desc)

    (rows, n, _), (arrow_rows, arrow_n, _) = both_ways(server.address, MANY)
    assert len(rows) == 5000 and n == 5000 == arrow_n
    assert typed(arrow_rows) == typed(rows)


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "rows"])
def test_the_cursor_streams_a_batch_at_a_time(server, arrow):
    want = [(x, "row %d" % x, x * 0.5, None if x % 7 == 0 else x % 3) for x in range(1, 5001)]
    conn = dbapi.connect(server.address, autocommit=True, arrow=arrow)
    cur = conn.cursor()
    cur.execute(MANY)
    reader = cur._stream._reader
    assert (reader.arrow is not None) == arrow
    assert cur.fetchmany(10) == want[:10]
    # One batch is in memory, not the result.
    assert reader._received <= 1024
    assert cur.fetchone() == want[10]
    # fetchall takes the rest of the batch, then whole batches.
    assert cur.fetchall() == want[11:]
    assert cur.rowcount == 5000 and cur.fetchall() == [] and cur.fetchone() is None
    cur.execute(MANY)
    assert [next(cur) for _ in range(3)] == want[:3] and list(cur) == want[3:]
    # An empty result keeps its columns.
    cur.execute("SELECT 1 AS one WHERE 0")
    assert [d[0] for d in cur.description] == ["one"] and cur.fetchall() == []
    conn.close()


def test_async_and_sync_iterate_take_arrow(server, sdb):
    want = sdb.fetch_all(MANY)
    with sdb.iterate(MANY, arrow=True) as stream:
        assert list(stream) == want
    with sdb.transaction() as tx:
        assert list(tx.iterate(MANY, arrow=True)) == want

    async def run():
        async with iadb.Database(server.address) as db:
            got = [row async for row in db.iterate(MANY, arrow=True)]
            async with db.transaction() as tx:
                in_tx = [row async for row in tx.iterate(MANY, arrow=True)]
            return got, in_tx

    got, in_tx = asyncio.run(run())
    assert got == want and in_tx == want


def test_a_value_arrow_cannot_carry_raises(server):
    # An SQLite expression whose first batch is integers and a later row
    # text: the rows carry it, Arrow refuses it (FAILED_PRECONDITION),
    # after the whole batches before it, never a short result.
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 3000) "
           "SELECT CASE WHEN x = 2500 THEN 'text' ELSE x END AS v FROM c")
    rows, n, _ = rows_of(server.address, sql, arrow=False)
    assert n == 3000 and rows[2499] == ("text",)
    conn = dbapi.connect(server.address, autocommit=True, arrow=True)
    cur = conn.cursor()
    cur.execute(sql)
    got = []
    with pytest.raises(dbapi.Error) as info:
        for row in cur:
            got.append(row)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "column `v`" in str(info.value) and "'text'" not in str(info.value)
    assert got == [(x,) for x in range(1, len(got) + 1)] and len(got) % 1024 == 0
    # The connection goes on.
    cur.execute("SELECT 2 AS two")
    assert cur.fetchall() == [(2,)]
    conn.close()


# --- the stream's checks, without a server ------------------------------------


def _ipc_frames(table, rows=None):
    """`table` as the server sends it: the schema, one frame per record
    batch, the end marker."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    frames = []
    for message in reader:
        frames.append(message.serialize().to_pybytes())
    frames.append(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    counts = [0] + [b.num_rows for b in table.to_batches(max_chunksize=2)] + [0]
    return [pb.FetchAllResponse(arrow=pb.ArrowData(ipc=f, rows=r)) for f, r in zip(frames, counts)]


def _reader_over(frames, summary_rows):
    reader = c.FrameReader()
    reader.as_tuples = True
    reader.arrow = iadb._arrow.ArrowRows()
    reader.feed(pb.FetchAllResponse(header=pb.ResultHeader(columns=[pb.Column(name="n")])))
    rows = []
    for frame in frames:
        reader.feed(frame)
        while True:
            row = reader.next_row()
            if row is None:
                break
            rows.append(row)
    reader.feed(pb.FetchAllResponse(summary=pb.ResultSummary(row_count=summary_rows)))
    return rows


def test_a_broken_arrow_stream_is_an_error_not_short_rows():
    table = pa.table({"n": pa.array([1, 2, 3, 4, 5], pa.int64())})
    frames = _ipc_frames(table)
    assert _reader_over(frames, 5) == [(1,), (2,), (3,), (4,), (5,)]

    def broken(frames, rows, what):
        with pytest.raises(iadb.DatabaseError) as info:
            _reader_over(frames, rows)
        assert info.value.code == grpc.StatusCode.INTERNAL, info.value
        assert what in str(info.value)

    broken(frames[:-1], 5, "without the end marker")
    broken(frames[:2] + frames[3:], 5, "counts 5 rows but 3 arrived")
    miscounted = list(frames)
    miscounted[1] = pb.FetchAllResponse(arrow=pb.ArrowData(ipc=frames[1].arrow.ipc, rows=3))
    broken(miscounted, 5, "announces 3 rows but holds 2")
    broken(frames + [frames[1]], 5, "after its end marker")
    garbage = list(frames)
    garbage[2] = pb.FetchAllResponse(arrow=pb.ArrowData(ipc=b"\xff\xff\xff\xff\x10\x00\x00\x00junk", rows=2))
    broken(garbage, 5, "does not decode")
    rows_frame = pb.FetchAllResponse(batch=pb.RowBatch(rows=[pb.Row(values=[pb.Value(int=1)])]))
    broken([frames[0], rows_frame], 1, "sent rows (RowBatch) for an Arrow result")


def test_a_missing_pyarrow_is_named_before_anything_is_sent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    # No server listens on port 1: the ImportError comes first.
    with pytest.raises(ImportError) as info:
        dbapi.connect("127.0.0.1:1", arrow=True)
    assert "iadb[arrow]" in str(info.value)
    with pytest.raises(ImportError):
        iadb.SyncDatabase("127.0.0.1:1").iterate("SELECT 1", arrow=True)


# --- PostgreSQL and MySQL/MariaDB -------------------------------------------


@pytest.fixture
def engine_table(engine_server):
    name = "t_arrow_rows_" + uuid.uuid4().hex[:12]
    yield name
    with iadb.SyncDatabase(engine_server.address) as d:
        d.execute("DROP TABLE IF EXISTS %s" % name)


PG_TABLE = ("CREATE TABLE %s (k SERIAL, i BIGINT, s SMALLINT, f DOUBLE PRECISION, r REAL, t TEXT, b BOOLEAN,"
            " y BYTEA, d DATE, tm TIME, ts TIMESTAMP, tz TIMESTAMPTZ, n NUMERIC(30, 4), j JSONB, u UUID)")
PG_ROWS = [
    (1, 7, 1.5, 0.25, "Ada", True, b"\x00\xff", dt.date(2024, 2, 29), dt.time(12, 34, 56, 789012),
     dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
     D("12345678901234567890.1234"), iadb.Json({"a": [1, 2.5, None]}),
     uuid.UUID("12345678-1234-5678-1234-567812345678")),
    (-(2**63), -32768, float("-inf"), float("nan"), "", False, b"", dt.date(1, 1, 1), dt.time(0, 0),
     dt.datetime(1970, 1, 1), dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC), D("-0.5000"), iadb.Json("x"),
     None),
    (None,) * 14,
]

MYSQL_TABLE = ("CREATE TABLE %s (k INT AUTO_INCREMENT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED, f DOUBLE,"
               " t VARCHAR(20), b BOOLEAN, y VARBINARY(8), d DATE, tm TIME(6), ts DATETIME(6),"
               " tz TIMESTAMP(6) NULL, n DECIMAL(30, 4), j JSON, e ENUM('a', 'b'))")
MYSQL_ROWS = [
    (7, D(2**64 - 1), 1.5, "Ada", True, b"\x00\xff", dt.date(2024, 2, 29), dt.time(12, 34, 56, 789012),
     dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
     D("12345678901234567890.1234"), iadb.Json({"a": [1, 2.5, None]}), "a"),
    (-(2**63), D(2**63), -0.25, "", False, b"", dt.date(1000, 1, 1), dt.time(0, 0),
     dt.datetime(1970, 1, 1), dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC), D("-0.5000"), iadb.Json("x"), "b"),
    (None,) * 13,
]


def test_engines_rows_through_arrow_equal_the_row_format(engine_server, engine_table):
    pg = engine_server.engine == "postgresql"
    create, rows = (PG_TABLE, PG_ROWS) if pg else (MYSQL_TABLE, MYSQL_ROWS)
    columns = "i, s, f, r, t, b, y, d, tm, ts, tz, n, j, u" if pg else "i, u, f, t, b, y, d, tm, ts, tz, n, j, e"
    conn = dbapi.connect(engine_server.address, autocommit=True)
    cur = conn.cursor()
    cur.execute(create % engine_table)
    cur.executemany("INSERT INTO %s (%s) VALUES (%s)" % (engine_table, columns, ", ".join("?" * len(rows[0]))),
                    rows)
    conn.close()
    # An interval (PostgreSQL) is text in both.
    extra = ", k * interval '1 second' AS iv" if pg else ""
    sql = "SELECT %s%s FROM %s ORDER BY k" % (columns, extra, engine_table)
    for autocommit in (True, False):  # outside a transaction and inside one
        (want, n, desc), (got, arrow_n, arrow_desc) = both_ways(engine_server.address, sql,
                                                                autocommit=autocommit)
        assert n == 3 == arrow_n and arrow_desc == desc
        # NaN is not equal to itself: compare its text.
        mismatches = [(desc[i][0], repr(w), repr(g)) for got_row, want_row in zip(typed(got), typed(want))
                      for i, (g, w) in enumerate(zip(got_row, want_row)) if repr(g) != repr(w)]
        assert mismatches == [] and len(got) == len(want)
    # The values are the ones written, of the row format's types.
    assert want[0][:2] == ((7, D(2**64 - 1)) if not pg else (1, 7))
    assert want[0][rows[0].index(D("12345678901234567890.1234"))] == D("12345678901234567890.1234")
    if pg:  # MariaDB's JSON is a LONGTEXT: text in both
        assert {"a": [1, 2.5, None]} in want[0] and "PT1S" in want[0]


def test_a_special_value_through_arrow_raises_and_the_connection_goes_on(pg_server):
    # PostgreSQL's 'infinity' date: text in a date column, which the row
    # format carries and a Date32 column cannot.
    engine_server = pg_server
    sql = "SELECT d FROM (VALUES (date '2024-01-01'), (date 'infinity')) AS v(d)"
    rows, _, _ = rows_of(engine_server.address, sql, arrow=False)
    assert rows[0] == (dt.date(2024, 1, 1),) and rows[1] == ("infinity",)
    conn = dbapi.connect(engine_server.address, arrow=True)
    cur = conn.cursor()
    with pytest.raises(dbapi.Error) as info:
        cur.execute(sql)
        cur.fetchall()
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "column `d`" in str(info.value)
    conn.rollback()
    cur.execute("SELECT 1::int8 AS one")
    assert cur.fetchall() == [(1,)]
    conn.close()


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "rows"])
def test_rows_read_into_memory_for_another_cursor_come_in_order(server, arrow):
    # In a transaction, a second cursor's statement makes the first's
    # unread rows be read into memory first; they then come from there.
    want = [(x, "row %d" % x, x * 0.5, None if x % 7 == 0 else x % 3) for x in range(1, 5001)]
    conn = dbapi.connect(server.address, arrow=arrow)
    first, second = conn.cursor(), conn.cursor()
    first.execute(MANY)
    assert first.fetchmany(5) == want[:5]
    second.execute("SELECT 7 AS seven")
    assert second.fetchall() == [(7,)]
    assert first.fetchone() == want[5]
    assert first.fetchmany(3) == want[6:9]
    assert first.fetchall() == want[9:] and first.fetchone() is None and first.rowcount == 5000
    conn.rollback()
    conn.close()
