"""DB-API 2.0 (PEP 249) over an iadb server.

    import iadb.dbapi

    conn = iadb.dbapi.connect("127.0.0.1:50051")            # database="" = the server's default
    cur = conn.cursor()
    cur.execute("INSERT INTO people (name) VALUES (?)", ("Ada",))
    cur.lastrowid, cur.rowcount
    conn.commit()
    cur.execute("SELECT id, name FROM people WHERE id > ?", (0,))
    for row in cur:                                        # tuples, streamed
        ...

Statements run in a transaction (the Transaction RPC) that the first
statement begins and ``commit()`` / ``rollback()`` end, as PEP 249 asks;
``connect(..., autocommit=True)`` (or ``conn.autocommit = True``) runs each
statement on its own instead, and is what a D1 database needs (it has no
interactive transactions). An error from the server inside a transaction
ends it: the server rolls it back (its message says so), and the next
statement begins a new one.

Rows are read from the server as the cursor is read, one batch at a time:
a result larger than memory can be iterated. When another cursor of the
same connection runs a statement inside the transaction before the first
one's rows are all read, those remaining rows are read into memory first
(one transaction answers one request at a time).
"""

from __future__ import annotations

import collections
import datetime as _dt
import re
import threading
import weakref
import time as _time
from typing import Any, Deque, Iterator, List, Optional, Sequence, Tuple

import grpc

from . import _arrow
from . import _common as c
from ._errors import DatabaseError as _IadbError
from ._sync import SyncDatabase
from ._values import Json

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "Connection", "Cursor",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "Json",
]


# --- exceptions -------------------------------------------------------------


class Warning(Exception):  # noqa: A001 - the name PEP 249 gives it
    pass


class Error(Exception):
    """The base of every DB-API error. ``code`` (``grpc.StatusCode``),
    ``sqlstate`` and ``message`` are the server's, when it answered."""

    def __init__(self, message: str = "", code: Optional[grpc.StatusCode] = None,
                 sqlstate: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        extra = " (sqlstate %s)" % self.sqlstate if self.sqlstate else ""
        return "%s: %s%s" % (self.code.name, self.message, extra)


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


_S = grpc.StatusCode
#: gRPC status code -> DB-API exception (the server's codes are described
#: in the project README: INVALID_ARGUMENT for bad SQL or a bad parameter,
#: ALREADY_EXISTS for a unique violation, FAILED_PRECONDITION for other
#: constraints, ...).
ERROR_FOR_CODE = {
    _S.INVALID_ARGUMENT: ProgrammingError,
    _S.NOT_FOUND: ProgrammingError,
    _S.ALREADY_EXISTS: IntegrityError,
    _S.FAILED_PRECONDITION: IntegrityError,
    _S.OUT_OF_RANGE: DataError,
    _S.PERMISSION_DENIED: OperationalError,
    _S.UNAUTHENTICATED: OperationalError,
    _S.UNAVAILABLE: OperationalError,
    _S.DEADLINE_EXCEEDED: OperationalError,
    _S.ABORTED: OperationalError,
    _S.CANCELLED: OperationalError,
    _S.RESOURCE_EXHAUSTED: OperationalError,
    _S.UNIMPLEMENTED: NotSupportedError,
    _S.INTERNAL: InternalError,
    _S.DATA_LOSS: InternalError,
    _S.UNKNOWN: DatabaseError,
}


_DDL = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(CREATE|DROP|ALTER|TRUNCATE|RENAME)\b", re.I | re.S)


def _is_ddl(sql: str) -> bool:
    return bool(_DDL.match(sql))


def _error_from(e: _IadbError) -> Error:
    cls = ERROR_FOR_CODE.get(e.code, DatabaseError)
    if cls is IntegrityError and e.code == _S.FAILED_PRECONDITION and e.message.startswith(
            ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "transaction control")):
        cls = ProgrammingError
    err = cls(e.message, e.code, e.sqlstate)
    err.__cause__ = e
    return err


class _Translate:
    """Raises the DB-API exception for an iadb error (or a bad parameter)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, Error):
            return False
        if isinstance(exc, _IadbError):
            raise _error_from(exc) from None
        if isinstance(exc, OverflowError):
            raise DataError(str(exc)) from None
        if isinstance(exc, (TypeError, ValueError)):
            raise ProgrammingError(str(exc)) from None
        if isinstance(exc, RuntimeError):
            raise InterfaceError(str(exc)) from None
        return False


_translate = _Translate()


# --- types and constructors ---------------------------------------------------


class DBAPITypeObject:
    """Compares equal to a ``description`` type code (the engine's declared
    type name, e.g. ``"VARCHAR(20)"``, ``"int8"``) of its kind."""

    def __init__(self, name: str, *words: str) -> None:
        self.name = name
        self.words = frozenset(words)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DBAPITypeObject):
            return other is self
        if not isinstance(other, str):
            return NotImplemented
        base = other.upper().split("(", 1)[0].strip()
        if base.endswith("[]"):
            return False
        return base in self.words or any(base.startswith(w + " ") for w in self.words)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return "<DBAPITypeObject %s>" % self.name


STRING = DBAPITypeObject("STRING", "TEXT", "VARCHAR", "CHAR", "CHARACTER", "NCHAR", "NVARCHAR", "CLOB",
                         "STRING", "BPCHAR", "NAME", "CITEXT", "TINYTEXT", "MEDIUMTEXT", "LONGTEXT",
                         "ENUM", "SET", "UUID", "JSON", "JSONB", "CHARACTER VARYING", "VARYING CHARACTER")
BINARY = DBAPITypeObject("BINARY", "BLOB", "BYTEA", "BINARY", "VARBINARY", "TINYBLOB", "MEDIUMBLOB",
                         "LONGBLOB", "BIT")
NUMBER = DBAPITypeObject("NUMBER", "INTEGER", "INT", "INT2", "INT4", "INT8", "SMALLINT", "BIGINT",
                         "TINYINT", "MEDIUMINT", "REAL", "FLOAT", "FLOAT4", "FLOAT8", "DOUBLE",
                         "DOUBLE PRECISION", "NUMERIC", "DECIMAL", "BOOLEAN", "BOOL", "SERIAL",
                         "BIGSERIAL", "NUMBER", "HUGEINT", "UBIGINT", "UINTEGER")
DATETIME = DBAPITypeObject("DATETIME", "DATE", "TIME", "DATETIME", "TIMESTAMP", "TIMESTAMPTZ", "TIMETZ",
                           "INTERVAL", "YEAR", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITHOUT TIME ZONE")
ROWID = DBAPITypeObject("ROWID", "ROWID", "OID")

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:
    return Timestamp(*_time.localtime(ticks)[:6])


# --- connection ---------------------------------------------------------------


def connect(server: Optional[str] = None, database: str = "", *, autocommit: bool = False,
            isolation: Any = None, arrow: bool = False, **options: Any) -> "Connection":
    """Connects to the iadb server at ``server`` (``host:port``, or
    ``iadb://host:port/database``; default ``$IADB_SERVER`` or
    ``127.0.0.1:50051``), database ``database`` (the server's default when
    empty). ``autocommit``: each statement on its own instead of in a
    transaction. ``isolation``: the transactions' level (see
    ``iadb.IsolationLevel``). ``arrow``: queries' rows travel as Arrow
    record batches, which pyarrow turns into the same tuples column by
    column, several times faster for many rows (needs pyarrow); a value
    that does not fit its column's Arrow type is then an error where the
    row format would carry it (docs/arrow.md). Other keyword arguments go to
    ``iadb.SyncDatabase`` (``token``, ``credentials``, ``timeout``,
    ``connect_timeout``, ...). Raises ``OperationalError`` when the server
    cannot be reached."""
    import os

    server = server or os.environ.get("IADB_SERVER") or c.DEFAULT_TARGET
    if server.startswith("iadb://"):
        rest = server[len("iadb://"):]
        server, _, name = rest.partition("/")
        database = database or name
    return Connection(server, database, autocommit=autocommit, isolation=isolation, arrow=arrow, **options)


def _close_quietly(db: SyncDatabase) -> None:
    try:
        db.disconnect()
    except Exception:
        pass


class Connection:
    """A DB-API connection: one channel to the server and, outside
    autocommit, the transaction its statements run in."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, server: str, database: str = "", *, autocommit: bool = False,
                 isolation: Any = None, arrow: bool = False, **options: Any) -> None:
        c.isolation_level(isolation)  # a bad name fails here
        if arrow:
            _arrow.pyarrow("iadb.dbapi.connect(arrow=True)")  # a missing pyarrow fails here
        self._arrow = bool(arrow)
        self._isolation = isolation
        self._autocommit = bool(autocommit)
        self._lock = threading.RLock()
        self._db = SyncDatabase(server, database, **options)
        with _translate:
            self._db.connect()
        self._tx = None
        self._active: Optional["Cursor"] = None
        self._closed = False
        # A connection dropped without close(): its channel is closed when
        # it is collected, or at exit (an open gRPC channel can otherwise
        # hold the interpreter's exit).
        self._finalizer = weakref.finalize(self, _close_quietly, self._db)

    @property
    def database(self) -> SyncDatabase:
        """The ``iadb.SyncDatabase`` underneath."""
        return self._db

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check()
        value = bool(value)
        if value and not self._autocommit:
            self.commit()
        self._autocommit = value

    @property
    def isolation(self) -> Any:
        """The isolation level of the transactions this connection begins
        (an ``iadb.IsolationLevel``, its name, or None: the engine's
        default). It cannot change inside a transaction."""
        return self._isolation

    @isolation.setter
    def isolation(self, value: Any) -> None:
        self._check()
        c.isolation_level(value)  # a bad name fails here
        if self._tx is not None:
            raise ProgrammingError("the isolation level cannot change inside a transaction: "
                                   "commit or roll back first")
        self._isolation = value

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def _transaction(self):
        """The open transaction, begun if needed; None in autocommit mode."""
        if self._autocommit:
            return None
        if self._tx is None:
            tx = self._db.transaction(self._isolation)
            with _translate:
                tx.__enter__()
            self._tx = tx
        return self._tx

    def _claim(self, cursor: Optional["Cursor"]) -> None:
        """Before a request in the transaction: another cursor's unread rows
        are read into memory first."""
        active = self._active
        if active is not None and active is not cursor:
            active._buffer_rest()
        self._active = cursor

    def _tx_failed(self) -> None:
        """The server ended the transaction (an error rolls it back)."""
        tx, self._tx, self._active = self._tx, None, None
        if tx is not None:
            try:
                tx.__exit__(_IadbError, None, None)
            except Exception:
                pass

    def cursor(self) -> "Cursor":
        self._check()
        return Cursor(self)

    def commit(self) -> None:
        self._check()
        with self._lock:
            tx = self._tx
            if tx is None:
                return
            self._claim(None)
            self._tx = None
            with _translate:
                try:
                    tx.commit()
                except _IadbError:
                    self._tx = tx
                    self._tx_failed()
                    raise

    def rollback(self) -> None:
        self._check()
        with self._lock:
            tx, self._tx = self._tx, None
            if tx is None:
                return
            self._claim(None)
            with _translate:
                try:
                    tx.rollback()
                finally:
                    try:
                        tx.__exit__(None, None, None)
                    except Exception:
                        pass

    def close(self) -> None:
        """Rolls back an open transaction and closes the channel. A second
        close raises ``InterfaceError``."""
        self._check()
        try:
            if self._tx is not None:
                try:
                    self.rollback()
                except Error:
                    pass
        finally:
            self._closed = True
            self._db.disconnect()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Commits at the end of the block, rolls back on an exception (the
        connection stays open, as sqlite3's does)."""
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            try:
                self.rollback()
            except Error:
                pass


# --- cursor -------------------------------------------------------------------


class Cursor:
    """A DB-API cursor. Rows are tuples in column order."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: Optional[List[Tuple[Any, ...]]] = None
        self.rowcount = -1
        self.lastrowid: Optional[int] = None
        self._stream = None
        # The rows left, once they are read into memory (empty at the end).
        self._buffer: Optional[Deque[tuple]] = None
        self._in_tx = False
        self._closed = False

    # --- running statements ----------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check()

    def _reset(self) -> None:
        stream, self._stream = self._stream, None
        self._buffer = None
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        if stream is not None:
            try:
                stream.close()
            except _IadbError:
                pass
        if self.connection._active is self:
            self.connection._active = None

    def execute(self, operation: str, parameters: Optional[Sequence[Any]] = None) -> "Cursor":
        """Runs one statement with ``?`` parameters (a sequence)."""
        self._check()
        if isinstance(parameters, dict):
            raise ProgrammingError("paramstyle is qmark: parameters are a sequence, not a dict")
        conn = self.connection
        with conn._lock:
            self._reset()
            with _translate:
                c.fetch_all_request("", operation, parameters)  # bad parameters fail before anything runs
                tx = conn._transaction()
                if tx is not None and _is_ddl(operation) and tx.engine == "mysql":
                    # MySQL commits the open transaction before any DDL (an
                    # implicit commit) and runs the DDL on its own: so does
                    # this driver, instead of leaving a transaction on the
                    # server that MySQL has already ended.
                    conn.commit()
                    tx = None
                try:
                    if tx is not None:
                        conn._claim(self)
                    if c.is_plain_write(operation):
                        result = (tx or conn._db).execute(operation, parameters)
                        self.rowcount = result.rows_affected
                        self.lastrowid = result.last_insert_id
                        return self
                    stream = tx.iterate(operation, parameters, arrow=conn._arrow) if tx is not None else \
                        conn._db.iterate(operation, parameters, arrow=conn._arrow)
                    stream._reader.as_tuples = True
                    columns = stream.start()
                except _IadbError:
                    if tx is not None:
                        conn._tx_failed()
                    raise
            reader = stream._reader
            if not columns:
                # A statement without rows (DDL, ...): read it to its end.
                with _translate:
                    try:
                        for _ in stream:
                            pass
                    except _IadbError:
                        if tx is not None:
                            conn._tx_failed()
                        raise
                self.rowcount = reader.rows_affected
                if conn._active is self:
                    conn._active = None
                return self
            self.description = [
                (name, (reader.types[i] or None) if reader.types else None, None, None, None, None, None)
                for i, name in enumerate(columns)
            ]
            self._stream = stream
            self._in_tx = tx is not None
            return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any]]) -> "Cursor":
        """Runs a statement once per parameter set. A write runs as one
        ExecuteMany (in one transaction on the server); ``rowcount`` is the
        total of rows affected."""
        self._check()
        conn = self.connection
        if isinstance(seq_of_parameters, (str, bytes, dict)) or seq_of_parameters is None:
            raise ProgrammingError("executemany takes a sequence of parameter sequences")
        seq_of_parameters = [list(p) if not isinstance(p, dict) else p for p in seq_of_parameters]
        if not c.is_plain_write(operation):
            total = 0
            for params in seq_of_parameters:
                self.execute(operation, params)
                total += max(self.rowcount, 0)
            self.rowcount = total
            return self
        with conn._lock:
            self._reset()
            with _translate:
                request = c.execute_many_request(conn._db.database, operation, seq_of_parameters)
                tx = conn._transaction()
                if tx is None:
                    self.rowcount = conn._db._unary("ExecuteMany", request).rows_affected
                    return self
                conn._claim(self)
                result = tx.execute_many(operation, seq_of_parameters)
                if not result.success:
                    conn._tx_failed()
                    result.raise_for_error()
                self.rowcount = result.rows_affected
        return self

    # --- reading rows ------------------------------------------------------

    def _buffer_rest(self) -> None:
        """Reads the rest of this cursor's rows into memory (another request
        is about to use the transaction)."""
        stream = self._stream
        if stream is None or self._buffer is not None:
            return
        rows: List[tuple] = []
        with _translate:
            try:
                for row in stream:
                    rows.append(row)
            except _IadbError:
                self.connection._tx_failed()
                raise
        self._buffer = collections.deque(rows)
        self._finish(stream)

    def _finish(self, stream) -> None:
        self.rowcount = stream.row_count
        if self.connection._active is self:
            self.connection._active = None

    def _next(self) -> Optional[tuple]:
        if self._buffer is not None:
            return self._buffer.popleft() if self._buffer else None
        stream = self._stream
        if stream is None:
            raise ProgrammingError("no result set: execute a statement that returns rows first")
        with _translate:
            try:
                return next(stream)
            except StopIteration:
                self._buffer = collections.deque()
                self._finish(stream)
                return None
            except _IadbError:
                if getattr(self, "_in_tx", False):
                    self.connection._tx_failed()
                raise

    def _next_rows(self) -> List[tuple]:
        """The next rows (a batch's rest, or the buffer); ``[]`` at the end.
        What ``_next`` does, a batch at a time."""
        if self._buffer is not None:
            rows, self._buffer = list(self._buffer), collections.deque()
            return rows
        stream = self._stream
        if stream is None:
            raise ProgrammingError("no result set: execute a statement that returns rows first")
        with _translate:
            try:
                rows = stream.next_rows()
            except _IadbError:
                if getattr(self, "_in_tx", False):
                    self.connection._tx_failed()
                raise
        if not rows:
            self._buffer = collections.deque()
            self._finish(stream)
        return rows

    def _check_rows(self) -> None:
        self._check()
        if self._stream is None and self._buffer is None:
            raise ProgrammingError("no result set: execute a statement that returns rows first")

    def fetchone(self) -> Optional[tuple]:
        self._check_rows()
        return self._next()

    def fetchmany(self, size: Optional[int] = None) -> List[tuple]:
        self._check_rows()
        n = self.arraysize if size is None else size
        rows = []
        while len(rows) < n:
            row = self._next()
            if row is None:
                break
            rows.append(row)
        return rows

    def fetchall(self) -> List[tuple]:
        self._check_rows()
        rows: List[tuple] = []
        while True:
            chunk = self._next_rows()
            if not chunk:
                return rows
            rows.extend(chunk)

    def __iter__(self) -> Iterator[tuple]:
        return self

    def __next__(self) -> tuple:
        self._check_rows()
        row = self._next()
        if row is None:
            raise StopIteration
        return row

    # --- the rest ----------------------------------------------------------

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Optional[int] = None) -> None:
        pass

    def close(self) -> None:
        """Stops reading the current result (a query still running is
        cancelled, or in a transaction its rows are read and discarded)."""
        if self._closed:
            return
        # rowcount, lastrowid and description stay readable (SQLAlchemy
        # reads rowcount after closing the cursor).
        stream, self._stream = self._stream, None
        self._buffer = None
        self._closed = True
        if self.connection._active is self:
            self.connection._active = None
        if stream is not None:
            with _translate:
                try:
                    stream.close()
                except _IadbError:
                    pass

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
