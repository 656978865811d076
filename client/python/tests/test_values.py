"""Every value kind: the codec on its own, then round trips through a server."""

from __future__ import annotations

import datetime as dt
import json
import math
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
        ({"a": 1}, TypeError),
        ([1, 2], TypeError),
        ((1,), TypeError),
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
    row = await db.fetch_one("SELECT %s FROM %s" % (column, table))
    got = row[column]
    assert type(got) is expected_type, (got, type(got))
    assert got == value
    # The same through the streaming path.
    rows = await db.fetch_all("SELECT %s FROM %s" % (column, table))
    assert rows == [{column: value}]
    assert type(rows[0][column]) is expected_type


@pytest.mark.parametrize("column", ["i", "f", "s", "b", "flag", "d", "t", "ts", "dec", "j"])
async def test_null_round_trips_in_every_column(db, table, column):
    await db.execute("CREATE TABLE %s (%s)" % (table, COLUMNS))
    await db.execute("INSERT INTO %s (%s) VALUES (?)" % (table, column), [None])
    assert await db.fetch_one("SELECT %s FROM %s" % (column, table)) == {column: None}


async def test_empty_string_is_not_null(db, table):
    await db.execute("CREATE TABLE %s (s TEXT)" % table)
    await db.execute_many("INSERT INTO %s (s) VALUES (?)" % table, [[""], [None]])
    rows = await db.fetch_all("SELECT s, s IS NULL AS is_null FROM %s ORDER BY rowid" % table)
    assert rows == [{"s": "", "is_null": 0}, {"s": None, "is_null": 1}]


async def test_empty_bytes(db, table):
    await db.execute("CREATE TABLE %s (b BLOB)" % table)
    await db.execute("INSERT INTO %s (b) VALUES (?)" % table, [b""])
    row = await db.fetch_one("SELECT b, length(b) AS n, b IS NULL AS is_null FROM %s" % table)
    assert row["n"] == 0 and row["is_null"] == 0


async def test_timezone_aware_datetime_comes_back_in_utc(db, table):
    await db.execute("CREATE TABLE %s (ts DATETIME)" % table)
    sent = dt.datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=IST)
    await db.execute("INSERT INTO %s (ts) VALUES (?)" % table, [sent])
    got = (await db.fetch_one("SELECT ts FROM %s" % table))["ts"]
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
    got = (await db.fetch_one("SELECT dec FROM %s" % table))["dec"]
    assert got == digits
    assert Decimal(got) == Decimal(digits)


async def test_json_parameter(db, table):
    doc = {"name": "Ada", "tags": ["x", "ü"], "n": 1, "nested": {"ok": True, "none": None}}
    await db.execute("CREATE TABLE %s (j TEXT)" % table)
    await db.execute("INSERT INTO %s (j) VALUES (?)" % table, [iadb.Json(doc)])
    # SQLite has no JSON type: the document comes back as text. Engines with
    # one return the json kind, which the client parses (see test_decode).
    got = (await db.fetch_one("SELECT j FROM %s" % table))["j"]
    assert json.loads(got) == doc
    assert (await db.fetch_one("SELECT json_extract(j, '$.tags[1]') AS t FROM %s" % table))["t"] == "ü"


async def test_negative_zero_keeps_its_sign_on_the_wire(db):
    # A REAL column stores -0.0 as 0.0 (SQLite itself), but the wire keeps it.
    got = (await db.fetch_one("SELECT ? AS z", [-0.0]))["z"]
    assert got == 0.0 and math.copysign(1.0, got) == -1.0


async def test_parameters_bind_in_order(db):
    row = await db.fetch_one("SELECT ? AS a, ? AS b, ? AS c, ? AS d", [1, "two", 3.5, None])
    assert row == {"a": 1, "b": "two", "c": 3.5, "d": None}


async def test_nan_is_refused_by_sqlite(db, table):
    # The client sends NaN (see test_encode_float_specials); SQLite would
    # store it as NULL, so the server refuses it.
    await db.execute("CREATE TABLE %s (f REAL)" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        await db.execute("INSERT INTO %s (f) VALUES (?)" % table, [float("nan")])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NaN" in info.value.message
