"""Python values <-> ``iadb.v1.Value`` (the wire's lossless value oneof).

Parameters are checked here, before any call: a value of a type with no wire
kind raises ``TypeError``, an int outside int64 raises ``OverflowError``.
"""

from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import json as _json
import re as _re
import uuid as _uuid
from typing import Any, List, Optional, Sequence

from ._proto import database_pb2 as pb

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

__all__ = ["Json", "encode_value", "encode_params", "decode_value", "decode_row"]


class Json:
    """A parameter to send as JSON (the wire's ``json`` kind).

    ``Json({"a": 1})`` serialises its object with ``json.dumps`` at once, so
    an object that is not JSON (a set, NaN, ...) fails where it is wrapped.
    A plain ``dict`` or ``list`` parameter is sent as JSON too; ``Json``
    also wraps any other JSON value (a string, a number) to send it as JSON.
    """

    __slots__ = ("obj", "text")

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        try:
            self.text = _json.dumps(obj, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise TypeError("iadb.Json: value is not JSON-serialisable: %s" % e) from None

    def __repr__(self) -> str:
        return "Json(%r)" % (self.obj,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Json) and other.obj == self.obj

    __hash__ = None  # type: ignore[assignment]


def _decimal_text(d: _decimal.Decimal) -> str:
    if not d.is_finite():
        raise ValueError("Decimal %s has no exact decimal form" % d)
    # 'f' never uses an exponent: Decimal("1E+3") -> "1000".
    return format(d, "f")


def _frac(micro: int) -> str:
    return ".%06d" % micro if micro else ""


def encode_value(v: Any, position: Optional[int] = None) -> pb.Value:
    """One Python value as a wire ``Value``."""
    where = "parameter %d: " % position if position is not None else ""
    if v is None:
        return pb.Value(null=pb.NULL_VALUE_UNSPECIFIED)
    if isinstance(v, bool):  # before int: bool is an int subclass
        return pb.Value(bool=v)
    if isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:
            raise OverflowError(
                "%sint %d is outside the int64 range; pass decimal.Decimal for "
                "larger exact numbers" % (where, v)
            )
        return pb.Value(int=int(v))
    if isinstance(v, float):
        return pb.Value(double=v)
    if isinstance(v, str):
        return pb.Value(text=v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return pb.Value(bytes=bytes(v))
    if isinstance(v, _decimal.Decimal):
        try:
            return pb.Value(decimal=_decimal_text(v))
        except ValueError as e:
            raise ValueError(where + str(e)) from None
    if isinstance(v, _dt.datetime):  # before date: datetime is a date subclass
        if v.tzinfo is not None and v.utcoffset() is not None:
            u = v.astimezone(_dt.timezone.utc)
            return pb.Value(timestamp_tz=u.strftime("%Y-%m-%dT%H:%M:%S") + _frac(u.microsecond) + "Z")
        return pb.Value(datetime="%04d-%02d-%02dT%02d:%02d:%02d%s" % (
            v.year, v.month, v.day, v.hour, v.minute, v.second, _frac(v.microsecond)))
    if isinstance(v, _dt.date):
        return pb.Value(date="%04d-%02d-%02d" % (v.year, v.month, v.day))
    if isinstance(v, _dt.time):
        if v.tzinfo is not None:
            raise TypeError(
                "%stime with a time zone has no wire kind; pass a naive time or a "
                "tz-aware datetime" % where
            )
        return pb.Value(time="%02d:%02d:%02d%s" % (v.hour, v.minute, v.second, _frac(v.microsecond)))
    if isinstance(v, Json):
        return pb.Value(json=v.text)
    if isinstance(v, _uuid.UUID):
        # Sent as its canonical text (36 characters, lowercase): PostgreSQL
        # casts it to uuid, the others store text.
        return pb.Value(text=str(v))
    if isinstance(v, (dict, list)):
        # A dict or a list is a JSON document, as the original API bound it.
        try:
            return pb.Value(json=Json(v).text)
        except TypeError as e:
            raise TypeError(where + str(e)) from None
    if isinstance(v, tuple):
        raise TypeError(
            "%stuple is not a SQL value; pass a list (sent as a JSON array) or "
            "iadb.Json(...)" % where
        )
    raise TypeError("%sunsupported parameter type %s" % (where, type(v).__name__))


def encode_params(params: Optional[Sequence[Any]]) -> List[pb.Value]:
    """Positional parameters (for ``?`` placeholders) as wire values."""
    if params is None:
        return []
    if isinstance(params, (str, bytes, bytearray, memoryview)) or isinstance(params, dict):
        raise TypeError(
            "params must be a list or tuple of values for the `?` placeholders, "
            "not %s" % type(params).__name__
        )
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            "params must be a list or tuple of values, not %s" % type(params).__name__
        ) from None
    return [encode_value(v, i + 1) for i, v in enumerate(items)]


# --- results ---------------------------------------------------------------

_TIME = _re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")
_DATETIME = _re.compile(
    r"^(\d{4,})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)


def _micro(frac: Optional[str]) -> int:
    # Python keeps microseconds: a finer fraction (nanoseconds) is truncated.
    return int((frac or "").ljust(6, "0")[:6]) if frac else 0


def _parse_time(s: str) -> _dt.time:
    m = _TIME.match(s)
    if not m:
        raise ValueError("bad time from server: %r" % s)
    h, mi, sec, frac = m.groups()
    return _dt.time(int(h), int(mi), min(int(sec), 59), _micro(frac))


def _parse_datetime(s: str, aware: bool) -> _dt.datetime:
    # The common naive form (`YYYY-MM-DDTHH:MM:SS`, with 6 fraction digits
    # or none) at C speed; anything else (a zone, nanoseconds, a leap
    # second, a year past 9999) through the regular expression below.
    if not aware and (len(s) == 19 or (len(s) == 26 and s[19] == ".")):
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            t = None
        if t is not None and t.tzinfo is None:
            return t
    m = _DATETIME.match(s)
    if not m:
        raise ValueError("bad %s from server: %r" % ("timestamp_tz" if aware else "datetime", s))
    y, mo, d, h, mi, sec, frac, zone = m.groups()
    t = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(sec), 59), _micro(frac))
    if not aware:
        return t
    if zone is None or zone in ("Z", "z"):
        offset = _dt.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return t.replace(tzinfo=_dt.timezone(offset)).astimezone(_dt.timezone.utc)


def decode_value(v: pb.Value) -> Any:
    """One wire ``Value`` as a Python value."""
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    if kind == "int":
        return v.int
    if kind == "text":
        return v.text
    if kind == "double":
        return v.double
    if kind == "bool":
        return v.bool
    if kind == "bytes":
        return v.bytes
    if kind == "decimal":
        return _decimal.Decimal(v.decimal)
    if kind == "date":
        return _dt.date.fromisoformat(v.date)
    if kind == "time":
        return _parse_time(v.time)
    if kind == "datetime":
        return _parse_datetime(v.datetime, aware=False)
    if kind == "timestamp_tz":
        return _parse_datetime(v.timestamp_tz, aware=True)
    if kind == "json":
        return _json.loads(v.json)
    raise ValueError("unknown value kind %r from server" % kind)


def decode_row(names: Sequence[str], row: pb.Row) -> dict:
    """A wire ``Row`` as a dict keyed by column name."""
    return {name: decode_value(value) for name, value in zip(names, row.values)}
