"""Every value kind: the codec on its own, then round trips through a server."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal

import grpc
import pytest

import iadb
from iadb._proto import database_pb2 as pb
from iadb._values import decode_value, encode_params, encode_value

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


# --- the codec, without a server ---------------------------------------------

@pytest.mark.parametrize(
    "value, kind, wire",
    [
        (None, "null", pb.NULL_VALUE_UNSPECIFIED),
        (True, "bool", True),
        (False, "bool", False),
        (0, "int", 0),
        (INT64_MIN, "int", INT64_MIN),
        (INT64_MAX, "int", INT64_MAX),
        (1.5, "double", 1.5),
        ("", "text", ""),
        ("héllo 🌍", "text", "héllo 🌍"),
        (b"\x00a\x00", "bytes", b"\x00a\x00"),
        (bytearray(b"\x01"), "bytes", b"\x01"),
        (Decimal("12345678901234567890.123456789"), "decimal", "12345678901234567890.123456789"),
        (Decimal("1E+3"), "decimal", "1000"),
        (Decimal("-0.000000001"), "decimal", "-0.000000001"),
        (dt.date(2024, 2, 29), "date", "2024-02-29"),
        (dt.date(1, 1, 1), "date", "0001-01-01"),
        (dt.time(23, 59, 59, 999999), "time", "23:59:59.999999"),
        (dt.time(7, 0), "time", "07:00:00"),
        (dt.datetime(2024, 2, 29, 12, 30, 1, 5), "datetime", "2024-02-29T12:30:01.000005"),
        (dt.datetime(2024, 1, 1, 5, 30, tzinfo=IST), "timestamp_tz", "2024-01-01T00:00:00Z"),
        (iadb.Json({"a": [1, None]}), "json", '{"a": [1, null]}'),
        # Plain dicts and lists are JSON documents, as the original API bound them.
        ({"a": [1, None]}, "json", '{"a": [1, null]}'),
        ([1, "x"], "json", '[1, "x"]'),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "text", "12345678-1234-5678-1234-567812345678"),
    ],
)
def test_encode(value, kind, wire):
    v = encode_value(value)
    assert v.WhichOneof("kind") == kind
    assert getattr(v, kind) == wire


def test_encode_float_specials():
    assert math.isnan(encode_value(float("nan")).double)
    assert encode_value(float("inf")).double == math.inf
    assert encode_value(float("-inf")).double == -math.inf


@pytest.mark.parametrize(
    "wire, expected",
    [
        (pb.Value(), None),
        (pb.Value(null=pb.NULL_VALUE_UNSPECIFIED), None),
        (pb.Value(int=INT64_MIN), INT64_MIN),
        (pb.Value(decimal="12345678901234567890.123456789"), Decimal("12345678901234567890.123456789")),
        (pb.Value(date="2024-02-29"), dt.date(2024, 2, 29)),
        (pb.Value(time="12:00:00.123456789"), dt.time(12, 0, 0, 123456)),
        (pb.Value(time="12:00:00"), dt.time(12, 0, 0)),
        (pb.Value(datetime="2024-02-29T23:59:59.5"), dt.datetime(2024, 2, 29, 23, 59, 59, 500000)),
        (pb.Value(datetime="2024-02-29 23:59:59"), dt.datetime(2024, 2, 29, 23, 59, 59)),
        (pb.Value(timestamp_tz="2024-02-29T23:59:59.123456789+02:00"),
         dt.datetime(2024, 2, 29, 21, 59, 59, 123456, tzinfo=UTC)),
        (pb.Value(timestamp_tz="2024-01-01T00:00:00Z"), dt.datetime(2024, 1, 1, tzinfo=UTC)),
        (pb.Value(json='{"a": [1, 2, {"b": null}]}'), {"a": [1, 2, {"b": None}]}),
        (pb.Value(json="[1, \"x\"]"), [1, "x"]),
        (pb.Value(bytes=b""), b""),
    ],
)
def test_decode(wire, expected):
    got = decode_value(wire)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, dt.datetime) and expected.tzinfo is not None:
        assert got.utcoffset() == dt.timedelta(0)


def test_decode_nan_and_decimal_exactness():
    assert math.isnan(decode_value(pb.Value(double=float("nan"))))
    d = decode_value(pb.Value(decimal="0.1"))
    assert d + d + d == Decimal("0.3")


@pytest.mark.parametrize(
    "bad, error",
    [
        ((1,), TypeError),
        ({"a": {1, 2}}, TypeError),
        ([float("nan")], TypeError),
        ({1, 2}, TypeError),
        (object(), TypeError),
        (1 + 2j, TypeError),
        (dt.time(1, 2, tzinfo=UTC), TypeError),
        (2**63, OverflowError),
        (INT64_MIN - 1, OverflowError),
        (Decimal("NaN"), ValueError),
        (Decimal("Infinity"), ValueError),
    ],
)
def test_bad_parameters(bad, error):
    with pytest.raises(error) as info:
        encode_params([1, bad])
    assert "parameter 2" in str(info.value)


@pytest.mark.parametrize("params", ["abc", b"abc", {"a": 1}, 42])
def test_params_must_be_a_sequence(params):
    with pytest.raises(TypeError):
        encode_params(params)


def test_json_wrapper_refuses_non_json():
    with pytest.raises(TypeError):
        iadb.Json({1, 2})
    with pytest.raises(TypeError):
        iadb.Json(float("nan"))


# --- round trips through a real server ----------------------------------------

COLUMNS = (
    "i INTEGER, f REAL, s TEXT, b BLOB, flag BOOLEAN, d DATE, t TIME, "
    "ts DATETIME, dec TEXT, j TEXT"
)


@pytest.mark.parametrize(
    "column, value, expected_type",
    [
        ("i", 0, int),
        ("i", -1, int),
        ("i", INT64_MIN, int),
        ("i", INT64_MAX, int),
        ("f", 1.5, float),
        ("f", -0.0, float),
        ("f", 5e-324, float),
        ("f", 1.7976931348623157e308, float),
        ("f", float("inf"), float),
        ("f", float("-inf"), float),
        ("s", "", str),
        ("s", "héllo wörld 🌍 日本語", str),
        ("s", "line\nbreak\ttab 'quote' \"dq\"", str),
        ("b", b"\x00\x01\x00\xff\x00", bytes),
        ("b", bytes(range(256)) * 4, bytes),
        ("flag", True, bool),
        ("flag", False, bool),
        ("d", dt.date(2024, 2, 29), dt.date),
        ("d", dt.date(1, 1, 1), dt.date),
        ("d", dt.date(9999, 12, 31), dt.date),
        ("t", dt.time(23, 59, 59, 999999), dt.time),
        ("t", dt.time(0, 0), dt.time),
        ("ts", dt.datetime(2024, 2, 29, 12, 30, 1, 123456), dt.datetime),
        ("ts", dt.datetime(1970, 1, 1), dt.datetime),
    ],
)
async def test_round_trip(db, table, column, value, expected_type):
    await db.execute("CREATE TABLE %s (%s)" % (table, COLUMNS))
    await db.execute("INSERT INTO %s (%s) VALUES (?)" % (table, column), [value])
    row = await db.fetch_row("SELECT %s FROM %s" % (column, table))
    got = row[column]
    assert type(got) is expected_type, (got, type(got))
    assert got == value
    # The same through the streaming path.
    rows = await db.fetch_rows("SELECT %s FROM %s" % (column, table))
    assert rows == [{column: value}]
    assert type(rows[0][column]) is expected_type


@pytest.mark.parametrize("column", ["i", "f", "s", "b", "flag", "d", "t", "ts", "dec", "j"])
async def test_null_round_trips_in_every_column(db, table, column):
    await db.execute("CREATE TABLE %s (%s)" % (table, COLUMNS))
    await db.execute("INSERT INTO %s (%s) VALUES (?)" % (table, column), [None])
    assert await db.fetch_row("SELECT %s FROM %s" % (column, table)) == {column: None}


async def test_empty_string_is_not_null(db, table):
    await db.execute("CREATE TABLE %s (s TEXT)" % table)
    await db.execute_many("INSERT INTO %s (s) VALUES (?)" % table, [[""], [None]])
    rows = await db.fetch_rows("SELECT s, s IS NULL AS is_null FROM %s ORDER BY rowid" % table)
    assert rows == [{"s": "", "is_null": 0}, {"s": None, "is_null": 1}]


async def test_empty_bytes(db, table):
    await db.execute("CREATE TABLE %s (b BLOB)" % table)
    await db.execute("INSERT INTO %s (b) VALUES (?)" % table, [b""])
    row = await db.fetch_row("SELECT b, length(b) AS n, b IS NULL AS is_null FROM %s" % table)
    assert row["n"] == 0 and row["is_null"] == 0


async def test_timezone_aware_datetime_comes_back_in_utc(db, table):
    await db.execute("CREATE TABLE %s (ts DATETIME)" % table)
    sent = dt.datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=IST)
    await db.execute("INSERT INTO %s (ts) VALUES (?)" % table, [sent])
    got = (await db.fetch_row("SELECT ts FROM %s" % table))["ts"]
    assert type(got) is dt.datetime
    assert got.tzinfo is not None and got.utcoffset() == dt.timedelta(0)
    assert got == sent  # the same instant
    assert got == dt.datetime(2024, 6, 1, 6, 30, 0, 250000, tzinfo=UTC)


async def test_decimal_is_exact(db, table):
    # SQLite keeps exact decimals only in TEXT columns, and returns them as
    # text (the server's documented SQLite mapping); every digit survives.
    digits = "12345678901234567890.123456789"
    await db.execute("CREATE TABLE %s (dec TEXT)" % table)
    await db.execute("INSERT INTO %s (dec) VALUES (?)" % table, [Decimal(digits)])
    got = (await db.fetch_row("SELECT dec FROM %s" % table))["dec"]
    assert got == digits
    assert Decimal(got) == Decimal(digits)


async def test_json_parameter(db, table):
    doc = {"name": "Ada", "tags": ["x", "ü"], "n": 1, "nested": {"ok": True, "none": None}}
    await db.execute("CREATE TABLE %s (j TEXT)" % table)
    await db.execute("INSERT INTO %s (j) VALUES (?)" % table, [iadb.Json(doc)])
    # SQLite has no JSON type: the document comes back as text. Engines with
    # one return the json kind, which the client parses (see test_decode).
    got = (await db.fetch_row("SELECT j FROM %s" % table))["j"]
    assert json.loads(got) == doc
    assert (await db.fetch_row("SELECT json_extract(j, '$.tags[1]') AS t FROM %s" % table))["t"] == "ü"


async def test_negative_zero_keeps_its_sign_on_the_wire(db):
    # A REAL column stores -0.0 as 0.0 (SQLite itself), but the wire keeps it.
    got = (await db.fetch_row("SELECT ? AS z", [-0.0]))["z"]
    assert got == 0.0 and math.copysign(1.0, got) == -1.0


async def test_parameters_bind_in_order(db):
    row = await db.fetch_row("SELECT ? AS a, ? AS b, ? AS c, ? AS d", [1, "two", 3.5, None])
    assert row == {"a": 1, "b": "two", "c": 3.5, "d": None}


async def test_nan_is_refused_by_sqlite(db, table):
    # The client sends NaN (see test_encode_float_specials); SQLite would
    # store it as NULL, so the server refuses it.
    await db.execute("CREATE TABLE %s (f REAL)" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        await db.execute("INSERT INTO %s (f) VALUES (?)" % table, [float("nan")])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NaN" in info.value.message


# --- the original API's values (issue 13): UUID, dict/list as JSON, lastrowid

async def test_uuid_dict_and_list_bind_on_sqlite(db, table):
    u = uuid.UUID("0b7e9f0e-3f54-4c1a-9d55-0d3c5a0f6b11")
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, u TEXT, doc TEXT, arr TEXT)" % table)
    r = await db.execute_query("INSERT INTO %s (u, doc, arr) VALUES (?, ?, ?)" % table,
                               [u, {"a": 1, "b": [True, None]}, [1, "two"]])
    assert r.success and r.row_count == 1 and r.last_insert_id == 1
    row = (await db.fetch_one("SELECT u, doc, arr FROM %s WHERE u = ?" % table, [u])).get_first_row()
    assert row["u"] == str(u)
    assert json.loads(row["doc"]) == {"a": 1, "b": [True, None]}
    assert json.loads(row["arr"]) == [1, "two"]


async def test_execute_query_insert_reports_lastrowid(db, table):
    await db.execute_query("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    first = await db.execute_query("INSERT INTO %s (v) VALUES (?)" % table, ["a"])
    second = await db.execute_query("  -- a comment\n insert into %s (v) values (?)" % table, ["b"])
    assert first.success and first.last_insert_id == 1 and first.row_count == 1 and first.data == []
    assert second.last_insert_id == 2
    # With RETURNING the rows come back (and no last insert id).
    third = await db.execute_query("INSERT INTO %s (v) VALUES (?) RETURNING id, v" % table, ["c"])
    assert third.data == [{"id": 3, "v": "c"}] and third.last_insert_id is None
    upd = await db.execute_query("UPDATE %s SET v = ? WHERE id < ?" % table, ["z", 3])
    assert upd.row_count == 2 and upd.rows_affected == 2


def test_sync_execute_query_insert_reports_lastrowid(sdb, table):
    sdb.execute_query("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    assert sdb.execute_query("INSERT INTO %s (v) VALUES (?)" % table, ["a"]).last_insert_id == 1
    assert sdb.execute_with_retry("INSERT INTO %s (v) VALUES (?)" % table, ["b"]).last_insert_id == 2


async def test_values_bind_on_postgres_and_mysql(engine_server, table):
    u = uuid.UUID("0b7e9f0e-3f54-4c1a-9d55-0d3c5a0f6b11")
    when = dt.datetime(2024, 2, 29, 13, 14, 15, 123456)
    pg = engine_server.engine == "postgresql"
    ddl = ("CREATE TABLE %s (id SERIAL PRIMARY KEY, u UUID, ts TIMESTAMP, amount NUMERIC(20,6), "
           "raw BYTEA, doc JSONB)" if pg else
           "CREATE TABLE %s (id INTEGER AUTO_INCREMENT PRIMARY KEY, u CHAR(36), ts DATETIME(6), "
           "amount DECIMAL(20,6), raw BLOB, doc JSON)") % table
    async with iadb.Database(engine_server.address) as db:
        try:
            assert (await db.execute_query(ddl)).success
            r = await db.execute_query(
                "INSERT INTO %s (u, ts, amount, raw, doc) VALUES (?, ?, ?, ?, ?)" % table,
                [u, when, Decimal("12345.678901"), b"\x00\xffab", {"k": [1, 2], "s": "é"}])
            assert r.success, r.error_message
            assert r.row_count == 1
            if not pg:
                assert r.last_insert_id == 1
            row = (await db.fetch_one("SELECT u, ts, amount, raw, doc FROM %s WHERE u = ?" % table,
                                      [u])).get_first_row()
            assert row is not None
            assert str(row["u"]) == str(u)
            assert row["ts"] == when
            assert row["amount"] == Decimal("12345.678901")
            assert row["raw"] == b"\x00\xffab"
            doc = row["doc"] if isinstance(row["doc"], dict) else json.loads(row["doc"])
            assert doc == {"k": [1, 2], "s": "é"}
        finally:
            await db.execute_query("DROP TABLE IF EXISTS %s" % table)
