"""The synchronous client, for scripts: the same API without ``await``."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _arrow
from . import _common as c
from ._errors import DatabaseError, from_rpc_error
from ._proto import database_pb2 as pb
from ._proto import database_pb2_grpc as pb_grpc
from ._result import ExecuteResult, HealthStatus, QueryResult, StatementResult
from ._transaction import SyncTransaction

T = TypeVar("T")

Params = Optional[Sequence[Any]]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def with_retry_sync(
    call: Callable[[], T],
    *,
    max_retries: int = c.DEFAULT_RETRIES,
    base_delay: float = c.DEFAULT_BASE_DELAY,
    max_delay: float = c.DEFAULT_MAX_DELAY,
    write: bool = False,
) -> T:
    """``with_retry`` for plain functions: retries ``call()`` on UNAVAILABLE
    (with ``write=True`` only when the request never reached the server)."""
    attempt = 0
    while True:
        try:
            return call()
        except DatabaseError as e:
            if not e.retryable_for(write) or attempt >= max_retries:
                raise
        time.sleep(c.backoff_delay(attempt, base_delay, max_delay))
        attempt += 1


class SyncRowStream:
    """An iterator over the rows of one FetchAll stream (see ``RowStream``)."""

    def __init__(self, db: "SyncDatabase", request: pb.FetchAllRequest, timeout: Optional[float]) -> None:
        self._db = db
        self._request = request
        self._timeout = timeout
        self._call = None
        self._reader = c.FrameReader()
        self._finished = False
        self._error: Optional[DatabaseError] = None

    @property
    def columns(self) -> Optional[List[str]]:
        return self._reader.columns

    @property
    def row_count(self) -> int:
        return self._reader.row_count

    def __iter__(self) -> "SyncRowStream":
        return self

    def _fail(self, error: DatabaseError) -> DatabaseError:
        """Ends the stream with `error` (raised again by later reads)."""
        self._finished = True
        self._error = error
        if self._call is not None:
            self._call.cancel()
        return error

    def _read(self) -> bool:
        """Feeds the next frame; False at the (complete) end of the stream.

        Raises ``DatabaseError`` for an error status, and INTERNAL for a
        stream that breaks the protocol or ends without its summary.
        """
        if self._error is not None:
            raise self._error
        if self._call is None:
            self._call = self._db._stub_or_raise().FetchAll(
                self._request, timeout=self._timeout, metadata=self._db._metadata)
        try:
            frame = next(self._call)
        except StopIteration:
            self._finished = True
            try:
                self._reader.check_end()
            except DatabaseError as e:
                raise self._fail(e) from None
            return False
        except grpc.RpcError as e:
            raise self._fail(from_rpc_error(e)) from None
        try:
            self._reader.feed(frame)
        except DatabaseError as e:
            raise self._fail(e) from None
        return True

    def __next__(self) -> Dict[str, Any]:
        while True:
            row = self._reader.next_row()
            if row is not None:
                return row
            if self._error is not None:
                raise self._error
            if self._finished or not self._read():
                raise StopIteration

    def next_rows(self) -> List[Any]:
        """The next rows, as ``next()`` would give them one at a time: the
        rest of the current batch, reading frames as needed; ``[]`` at the
        end. Raises as ``next()`` does."""
        while True:
            rows = self._reader.rest_of_batch()
            if rows:
                return rows
            if self._error is not None:
                raise self._error
            if self._finished or not self._read():
                return []

    def start(self) -> List[str]:
        """Starts the call and waits for the header; returns the column names."""
        while self._reader.columns is None and not self._finished and self._read():
            pass
        return list(self._reader.columns or [])

    def close(self) -> None:
        """Cancels the call if it is still running."""
        self._finished = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> "SyncRowStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SyncDatabase(c.ClientSettings):
    """The blocking twin of ``iadb.Database``: same constructor, same methods
    (without ``await``), ``with SyncDatabase(...) as db:``, and ``iterate``
    returning a plain iterator. Which methods return ``QueryResult`` and which
    raise ``DatabaseError`` is the same as for ``Database``.
    """

    _channel: Optional[grpc.Channel] = None

    @property
    def is_connected(self) -> bool:
        return self._stub is not None

    def connect(self) -> bool:
        """Opens the channel and waits (``connect_timeout``) until it is
        ready; returns True. A refused connection raises ``DatabaseError``
        UNAVAILABLE at once; no answer at all, after ``connect_timeout``."""
        if self._channel is not None:
            return True
        if self._credentials is not None:
            channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        else:
            channel = grpc.insecure_channel(self.target, options=self._options)
        settled = threading.Event()
        states = []

        def watch(state):
            if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.SHUTDOWN):
                states.append(state)
                settled.set()

        channel.subscribe(watch, try_to_connect=True)
        try:
            if not settled.wait(self.connect_timeout):
                raise c.unreachable(self.target, "no answer within %.1f s" % self.connect_timeout)
            if states[0] != grpc.ChannelConnectivity.READY:
                raise c.unreachable(self.target, "the connection failed (refused, no route, or a failed TLS handshake)")
        except DatabaseError:
            channel.unsubscribe(watch)
            channel.close()
            raise
        channel.unsubscribe(watch)
        self._channel = channel
        self._stub = pb_grpc.DatabaseStub(channel)
        return True

    def disconnect(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> "SyncDatabase":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def _stub_or_raise(self) -> pb_grpc.DatabaseStub:
        if self._stub is None:
            raise RuntimeError("iadb.SyncDatabase is not connected: call `db.connect()` first")
        return self._stub

    def _unary(self, method: str, request):
        stub = self._stub_or_raise()
        try:
            return getattr(stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    # --- typed API (raises DatabaseError) ----------------------------------

    def execute(self, sql: str, params: Params = None) -> ExecuteResult:
        return c.execute_result(self._unary("Execute", c.execute_request(self.database, sql, params, self.read_only)))

    def fetch_rows(self, sql: str, params: Params = None) -> List[Dict[str, Any]]:
        """Every row, as dicts; raises ``DatabaseError``."""
        with self.iterate(sql, params) as rows:
            return list(rows)

    def fetch_row(self, sql: str, params: Params = None) -> Optional[Dict[str, Any]]:
        """The first row or None; raises ``DatabaseError``."""
        return c.fetch_one_row(self._unary("FetchOne", c.fetch_one_request(self.database, sql, params, self.read_only, self.max_staleness_ms)))

    def table_exists(self, table_name: str) -> bool:
        return self._unary("TableExists", c.table_exists_request(self.database, table_name)).exists

    def health(self) -> HealthStatus:
        """The Health RPC; raises ``DatabaseError``."""
        start = time.perf_counter()
        resp = self._unary("Health", pb.HealthRequest(database=self.database))
        return c.health_status(resp, _ms(start))

    def health_check(self) -> bool:
        """True when the server answers and its database is healthy; False
        otherwise (never raises for a server error)."""
        if self._stub is None:
            return False
        try:
            return self.health().healthy
        except DatabaseError:
            return False

    def migrate(self, action: Union[str, int] = "apply", *, target_version: Optional[str] = None,
                files: Any = None, paths: Any = None, allow_missing: bool = False,
                allow_out_of_order: bool = False) -> "c.MigrateResult":
        """See ``Database.migrate``."""
        request = c.migrate_request(self.database, action, target_version, files, paths,
                                    allow_missing, allow_out_of_order)
        return c.migrate_result(self._unary("Migrate", request))

    def fetch_all(self, sql: str, params: Params = None) -> QueryResult:
        """Every row as a ``QueryResult`` (the original API); never raises
        for a server error (``success=False``)."""
        return self.execute_query(sql, params)

    def fetch_one(self, sql: str, params: Params = None) -> QueryResult:
        """The first row as a ``QueryResult`` (``data`` holds it, or ``[]``)."""
        request = c.fetch_one_request(self.database, sql, params, self.read_only, self.max_staleness_ms)
        self._stub_or_raise()
        start = time.perf_counter()
        try:
            resp = self._unary("FetchOne", request)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return c.fetch_one_result(resp, _ms(start))

    def create_table(self, table_name: str, schema: Any) -> bool:
        """``CREATE TABLE IF NOT EXISTS table_name (schema)``; True when it succeeded."""
        return self.execute_query(c.create_table_sql(table_name, schema)).success

    def iterate(self, sql: str, params: Params = None, *, arrow: bool = False) -> SyncRowStream:
        """See ``Database.iterate``."""
        reader = _arrow.rows_reader(arrow)
        request = c.fetch_all_request(self.database, sql, params, self.read_only, self.max_staleness_ms,
                                      _arrow.rows_format(arrow))
        self._stub_or_raise()
        stream = SyncRowStream(self, request, self.timeout)
        stream._reader.arrow = reader
        return stream

    # --- Arrow results (optional: pyarrow, pandas, polars) -----------------

    def _fetch_arrow(self, sql: str, params: Params) -> "_arrow.ArrowCollector":
        request = c.fetch_all_request(self.database, sql, params, self.read_only, self.max_staleness_ms,
                                      _arrow.ARROW)
        stub = self._stub_or_raise()
        collector = _arrow.ArrowCollector()
        call = stub.FetchAll(request, timeout=self.timeout, metadata=self._metadata)
        try:
            for frame in call:
                collector.feed(frame)
            collector.check_end()
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()
        return collector

    def fetch_arrow(self, sql: str, params: Params = None) -> Any:
        """See ``Database.fetch_arrow``: a ``pyarrow.Table``."""
        _arrow.pyarrow("fetch_arrow")
        return self._fetch_arrow(sql, params).table()

    def fetch_df(self, sql: str, params: Params = None, **to_pandas: Any) -> Any:
        """See ``Database.fetch_df``: a pandas DataFrame."""
        _arrow.require_pandas()
        return self.fetch_arrow(sql, params).to_pandas(**to_pandas)

    def fetch_polars(self, sql: str, params: Params = None) -> Any:
        """See ``Database.fetch_polars``: a polars DataFrame."""
        _arrow.polars()
        return self._fetch_arrow(sql, params).polars()

    def batch(self, statements: Sequence[Any], *, read_only: bool = False) -> List[StatementResult]:
        """Runs statements in one transaction and one round trip: all of
        them are applied or none is.

        ``statements`` holds SQL strings and ``(sql, params)`` pairs. Returns
        one ``StatementResult`` per statement, in order (with ``columns`` and
        ``rows`` for a statement that returns rows). A failure raises
        ``DatabaseError`` whose ``statement_index`` names the failing
        statement (0-based); nothing was changed. ``read_only=True`` runs
        them in a read-only transaction (a write fails).
        """
        request = c.batch_request(self.database, statements, read_only)
        return c.statement_results(self._unary("Batch", request))

    def transaction(
        self,
        isolation: Union[None, str, c.IsolationLevel] = None,
        *,
        read_only: bool = False,
        immediate: bool = False,
        timeout: Optional[float] = c.CLIENT_TIMEOUT,
    ) -> SyncTransaction:
        """An interactive transaction: ``with db.transaction() as tx:``.

        Leaving the block commits; an exception rolls back and is re-raised.
        ``isolation``: None (the engine's default), an ``IsolationLevel`` or
        its name ("read_committed", "repeatable_read", "serializable",
        "snapshot"). ``read_only``: a write fails. ``immediate``: SQLite's
        BEGIN IMMEDIATE (the write lock at once). ``timeout`` (seconds): the
        deadline of the whole transaction (default: the client's).
        """
        begin = c.begin_request(self.database, isolation, read_only, immediate, self.max_staleness_ms)
        self._stub_or_raise()
        return SyncTransaction(self, begin, self.timeout if timeout is c.CLIENT_TIMEOUT else timeout)

    # --- seed-style API ----------------------------------------------------

    def execute_query(self, sql: str, params: Params = None) -> QueryResult:
        request = c.fetch_all_request(self.database, sql, params, self.read_only)
        self._stub_or_raise()
        start = time.perf_counter()
        try:
            return self._run_query(request, start)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))

    def _run_query(self, request: pb.FetchAllRequest, start: float) -> QueryResult:
        if c.is_plain_write(request.sql):
            resp = self._unary("Execute", pb.ExecuteRequest(
                database=request.database, sql=request.sql, params=request.params,
                options=request.options if request.HasField("options") else None))
            return c.write_result(resp, _ms(start))
        stream = SyncRowStream(self, request, self.timeout)
        with stream:
            data = list(stream)
        return stream._reader.result(data, _ms(start))

    def execute_many(self, sql: str, params_list: Sequence[Params]) -> QueryResult:
        request = c.execute_many_request(self.database, sql, params_list, self.read_only)
        start = time.perf_counter()
        try:
            resp = self._unary("ExecuteMany", request)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return QueryResult(success=True, row_count=resp.rows_affected,
                           rows_affected=resp.rows_affected, execution_time_ms=_ms(start))

    def execute_with_retry(
        self,
        sql: str,
        params: Params = None,
        *,
        max_retries: int = c.DEFAULT_RETRIES,
        base_delay: float = c.DEFAULT_BASE_DELAY,
        max_delay: float = c.DEFAULT_MAX_DELAY,
        idempotent: bool = False,
    ) -> QueryResult:
        """See ``Database.execute_with_retry``: by default repeated only when
        the request never reached the server; ``idempotent=True`` retries
        every UNAVAILABLE."""
        request = c.fetch_all_request(self.database, sql, params, self.read_only)
        self._stub_or_raise()
        start = time.perf_counter()
        attempt = 0
        while True:
            try:
                return self._run_query(request, start)
            except DatabaseError as e:
                if not e.retryable_for(write=not idempotent) or attempt >= max_retries:
                    return c.failed_result(e, _ms(start))
            time.sleep(c.backoff_delay(attempt, base_delay, max_delay))
            attempt += 1
