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

import io
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

