"""Arrow results: a FetchAll stream (or a fetch in a transaction) asked for
with ``result_format = ARROW`` carries its rows as an Apache Arrow IPC
stream, which becomes a ``pyarrow.Table``, a pandas or a polars DataFrame
without a Python object per value.

pyarrow, pandas and polars are optional: ``pip install "iadb[arrow]"``
(pyarrow), ``"iadb[pandas]"`` (pyarrow and pandas) or ``"iadb[polars]"``
(polars, which reads the IPC stream itself and needs no pyarrow). Each is
imported when first used; a missing one raises ``ImportError`` naming the
extra to install.
"""

from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import io
import json as _json
from typing import Any, List, Optional

from . import _common as c
from ._proto import database_pb2 as pb

ARROW = pb.RESULT_FORMAT_ARROW


def _missing(package: str, extra: str, what: str) -> ImportError:
    return ImportError(
        "iadb: %s needs the `%s` package, which is not installed: "
        "pip install \"iadb[%s]\" (or pip install %s)" % (what, package, extra, package)
    )


def pyarrow(what: str = "fetch_arrow"):
    """The pyarrow module, or ImportError naming the `arrow` extra."""
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401
    except ImportError:
        raise _missing("pyarrow", "arrow", what) from None
    return pa


def require_pandas() -> None:
    """Checks, before anything is sent, that ``fetch_df`` can finish."""
    pyarrow("fetch_df")
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise _missing("pandas", "pandas", "fetch_df") from None


def polars():
    """The polars module, or ImportError naming the `polars` extra."""
    try:
        import polars as pl
    except ImportError:
        raise _missing("polars", "polars", "fetch_polars") from None
    return pl


class ArrowCollector:
    """Follows one Arrow result: header, ArrowData frames, summary.

    The ``ipc`` bytes of the ArrowData frames are kept in order; at the end
    they are decoded as one IPC stream. The rows each frame announces, the
    summary's ``row_count`` and the decoded rows must all agree: a result
    cut short (no summary) or miscounted is an error (INTERNAL), never a
    short table.
    """

    __slots__ = ("columns", "chunks", "announced", "row_count", "rows_affected", "server_time_ms", "done")

    def __init__(self) -> None:
        self.columns: Optional[List[str]] = None
        self.chunks: List[bytes] = []
        self.announced = 0
        self.row_count = 0
        self.rows_affected = 0
        self.server_time_ms = 0.0
        self.done = False

    def feed(self, frame: pb.FetchAllResponse) -> None:
        which = frame.WhichOneof("frame")
        if self.done:
            raise c.broken("a frame came after the summary")
        if which == "header":
            if self.columns is not None:
                raise c.broken("a second header")
            self.columns = [col.name for col in frame.header.columns]
        elif which == "arrow":
            if self.columns is None:
                raise c.broken("it did not start with a header")
            self.chunks.append(frame.arrow.ipc)
            self.announced += frame.arrow.rows
        elif which == "batch":
            raise c.broken("it sent rows (RowBatch) for an Arrow result; a server that predates "
                           "Arrow results ignores result_format: upgrade iadb-server")
        elif which == "summary":
            if self.columns is None:
                raise c.broken("it did not start with a header")
            if frame.summary.row_count != self.announced:
                raise c.broken("its summary counts %d rows but %d arrived"
                               % (frame.summary.row_count, self.announced))
            self.row_count = frame.summary.row_count
            self.rows_affected = frame.summary.rows_affected
            self.server_time_ms = frame.summary.execution_time_ms
            self.done = True

    def check_end(self) -> None:
        """At the end of the stream (status OK): raises unless it was complete."""
        if self.columns is None:
            raise c.broken("it ended without a header")
        if not self.done:
            raise c.broken("it ended after %d rows without its summary, so the result may be incomplete"
                           % self.announced)

    def _data(self) -> Optional[bytes]:
        if not self.chunks:
            if self.columns:
                raise c.broken("it has %d columns but no Arrow data; a server that predates Arrow "
                               "results ignores result_format: upgrade iadb-server" % len(self.columns))
            return None
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    def _check(self, rows: int, names: List[str]) -> None:
        if rows != self.row_count:
            raise c.broken("its Arrow data holds %d rows but its summary counts %d" % (rows, self.row_count))
        if len(names) != len(self.columns or ()):
            raise c.broken("its Arrow schema has %d columns but its header %d" % (len(names), len(self.columns or ())))

    def table(self):
        """The result as a ``pyarrow.Table`` (no columns for a statement
        without a result)."""
        pa = pyarrow()
        data = self._data()
        self.chunks = []
        if data is None:
            return pa.table({})
        try:
            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except (pa.ArrowException, ValueError, OSError) as e:
            raise c.broken("its Arrow data does not decode: %s" % e) from None
        self._check(table.num_rows, table.column_names)
        return table

    def polars(self):
        """The result as a ``polars.DataFrame``, read by polars itself."""
        pl = polars()
        data = self._data()
        self.chunks = []
        if data is None:
            return pl.DataFrame()
        try:
            df = pl.read_ipc_stream(io.BytesIO(data))
        except Exception as e:  # polars raises its own exception classes
            raise c.broken("its Arrow data does not decode: %s" % e) from None
        self._check(df.height, df.columns)
        return df


# --- rows from Arrow (the DB-API's ``arrow=True``) ---------------------------

# The IPC stream's end marker: a continuation word and a zero length (the
# pre-1.0 form is the zero length alone).
_END_MARKERS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")
_INT64_MAX = 2**63 - 1

# Whether numpy imports (found out by the first ArrowRows, not when iadb is
# imported): pyarrow no longer needs it, and without it every column goes
# through to_pylist.
_NUMPY: Optional[bool] = None


def _numbers(pa, col):
    # int64 and float64 without NULLs: numpy's tolist builds the Python
    # ints and floats in C.
    if _NUMPY and col.null_count == 0:
        return col.to_numpy().tolist()
    return col.to_pylist()


def _unsigned(pa, col):
    # The row format carries an unsigned BIGINT past int64 as its digits (a
    # Decimal); so do these rows.
    return [v if v is None or v <= _INT64_MAX else _decimal.Decimal(v) for v in col.to_pylist()]


def _decimals(pa, col):
    return [None if v is None else _decimal.Decimal(v) for v in col.to_pylist()]


def _json_values(pa, col):
    if isinstance(col.type, pa.BaseExtensionType):
        col = col.storage
    return [None if v is None else _json.loads(v) for v in col.to_pylist()]


def _in_python_range(pa, col, low, high) -> bool:
    import pyarrow.compute as pc

    bounds = pc.min_max(col)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    return lo is None or (low <= lo and hi <= high)


# Python's datetime and date reach years 1 to 9999; numpy gives an int for
# a value outside them, so outside them the values go through to_pylist,
# which raises as the row format's decoding does.
_MIN_MICROS = -62135596800 * 1_000_000
_MAX_MICROS = 253402300799 * 1_000_000 + 999_999
_MIN_DAYS, _MAX_DAYS = -719162, 2932896


def _naive_datetimes(pa, col):
    if _NUMPY and _in_python_range(pa, col.view(pa.int64()), _MIN_MICROS, _MAX_MICROS):
        # NULL (NaT) becomes None.
        return col.to_numpy(zero_copy_only=False).tolist()
    return col.to_pylist()


def _utc_datetimes(pa, col):
    # The row format gives aware datetimes in `datetime.timezone.utc`
    # (pyarrow's own conversion would give a ZoneInfo).
    utc = _dt.timezone.utc
    naive = _naive_datetimes(pa, col.cast(pa.timestamp("us")))
    return [None if v is None else v.replace(tzinfo=utc) for v in naive]


def _dates(pa, col):
    if _NUMPY and _in_python_range(pa, col.view(pa.int32()), _MIN_DAYS, _MAX_DAYS):
        return col.to_numpy(zero_copy_only=False).tolist()
    return col.to_pylist()


def _times(pa, col):
    # Python keeps microseconds: a finer fraction is cut, as in the row
    # format's decoding.
    return col.cast(pa.time64("us"), safe=False).to_pylist()


def _as_listed(pa, col):
    return col.to_pylist()


def _converter(pa, field):
    """How one column's values become the Python values ``decode_value``
    gives for the same values in the row format."""
    t = field.type
    meta = field.metadata or {}
    if isinstance(t, pa.BaseExtensionType):
        if t.extension_name == "arrow.json":
            return _json_values
        return _as_listed
    if pa.types.is_int64(t) or pa.types.is_float64(t):
        return _numbers
    if pa.types.is_uint64(t):
        return _unsigned
    if pa.types.is_string(t):
        if meta.get(b"ARROW:extension:name") == b"arrow.json":
            return _json_values
        if meta.get(b"iadb.value_kind") == b"decimal":
            return _decimals
        return _as_listed
    if pa.types.is_timestamp(t):
        return _naive_datetimes if t.tz is None else _utc_datetimes
    if pa.types.is_date32(t):
        return _dates
    if pa.types.is_time64(t):
        return _times
    # Boolean and Binary: bool and bytes, as listed.
    return _as_listed


class ArrowRows:
    """An Arrow result's frames as rows: each record batch, as it arrives,
    becomes a list of tuples holding the Python values the row format's
    decoding (``decode_value``) gives, column by column in pyarrow and
    numpy instead of value by value in Python.

    ``feed`` takes one ``ArrowData`` frame (the schema, one record batch, or
    the end marker) and returns the batch's rows (``[]`` for the others). A
    frame that does not decode, a batch whose rows differ from the frame's
    count, or data after the end marker is an error (INTERNAL).
    """

    __slots__ = ("_pa", "schema", "_convert", "ended")

    def __init__(self) -> None:
        global _NUMPY
        self._pa = pyarrow("arrow=True (rows through Arrow)")
        if _NUMPY is None:
            try:
                import numpy  # noqa: F401

                _NUMPY = True
            except ImportError:  # pragma: no cover - numpy comes with pandas and most pyarrow installs
                _NUMPY = False
        self.schema = None
        self._convert: List[Any] = []
        self.ended = False

    def feed(self, data: pb.ArrowData) -> List[tuple]:
        pa = self._pa
        if self.ended:
            raise c.broken("Arrow data came after its end marker")
        if self.schema is None:
            if data.rows:
                raise c.broken("its Arrow data did not start with a schema")
            try:
                self.schema = pa.ipc.read_schema(pa.py_buffer(data.ipc))
            except (pa.ArrowException, ValueError, OSError) as e:
                raise c.broken("its Arrow schema does not decode: %s" % e) from None
            self._convert = [_converter(pa, field) for field in self.schema]
            return []
        if data.ipc in _END_MARKERS:
            if data.rows:
                raise c.broken("its Arrow end marker announces %d rows" % data.rows)
            self.ended = True
            return []
        try:
            batch = pa.ipc.read_record_batch(pa.py_buffer(data.ipc), self.schema)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise c.broken("its Arrow data does not decode: %s" % e) from None
        if batch.num_rows != data.rows:
            raise c.broken("an Arrow frame announces %d rows but holds %d" % (data.rows, batch.num_rows))
        if not self._convert:
            return [()] * batch.num_rows
        columns = [convert(pa, col) for convert, col in zip(self._convert, batch.columns)]
        return list(zip(*columns))


def rows_format(arrow: bool) -> int:
    """The result format a row stream asks for."""
    return ARROW if arrow else pb.RESULT_FORMAT_UNSPECIFIED


def rows_reader(arrow: bool) -> Optional[ArrowRows]:
    """What turns an ``arrow=True`` stream's frames into rows; ImportError,
    before anything is sent, when pyarrow is missing."""
    return ArrowRows() if arrow else None
