"""The asyncio client."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc
import grpc.aio

from . import _arrow
from . import _common as c
from ._errors import DatabaseError, from_rpc_error
from ._proto import database_pb2 as pb
from ._proto import database_pb2_grpc as pb_grpc
from ._result import ExecuteResult, HealthStatus, QueryResult, StatementResult
from ._transaction import Transaction

T = TypeVar("T")

Params = Optional[Sequence[Any]]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int = c.DEFAULT_RETRIES,
    base_delay: float = c.DEFAULT_BASE_DELAY,
    max_delay: float = c.DEFAULT_MAX_DELAY,
    write: bool = False,
) -> T:
    """Awaits ``call()``, retrying on ``DatabaseError`` UNAVAILABLE.

    For a read (the default) every UNAVAILABLE is retried. With
    ``write=True`` only an UNAVAILABLE whose request never reached the
    server is (``DatabaseError.never_sent``): a write that reached the
    engine before the connection dropped may have been applied.

    Waits ``base_delay * 2**n`` (capped at ``max_delay``) before retry ``n``;
    after ``max_retries`` retries the last error is raised. Any other error
    is raised at once.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except DatabaseError as e:
            if not e.retryable_for(write) or attempt >= max_retries:
                raise
        await asyncio.sleep(c.backoff_delay(attempt, base_delay, max_delay))
        attempt += 1


class RowStream:
    """An async iterator over the rows of one FetchAll stream.

    Rows arrive in batches and are turned into dicts one at a time, so memory
    stays flat however large the result. Leaving an ``async with`` block or
    calling ``aclose()`` cancels the call, which stops the query on the
    server. ``columns`` is set once the first frame has arrived. After the
    last row, ``row_count`` holds the server's count.
    """

    def __init__(self, db: "Database", request: pb.FetchAllRequest, timeout: Optional[float]) -> None:
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

    def __aiter__(self) -> "RowStream":
        return self

    def _fail(self, error: DatabaseError) -> DatabaseError:
        """Ends the stream with `error` (raised again by later reads)."""
        self._finished = True
        self._error = error
        if self._call is not None and not self._call.done():
            self._call.cancel()
        return error

    async def _read(self) -> bool:
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
            frame = await self._call.read()
        except grpc.RpcError as e:
            raise self._fail(from_rpc_error(e)) from None
        try:
            if frame is grpc.aio.EOF:
                self._finished = True
                self._reader.check_end()
                return False
            self._reader.feed(frame)
        except DatabaseError as e:
            raise self._fail(e) from None
        return True

    async def __anext__(self) -> Dict[str, Any]:
        reader = self._reader
        while True:
            row = reader.next_row()
            if row is not None:
                return row
            if self._error is not None:
                raise self._error
            if self._finished or not await self._read():
                raise StopAsyncIteration

    async def start(self) -> List[str]:
        """Starts the call and waits for the header; returns the column names."""
        while self._reader.columns is None and not self._finished and await self._read():
            pass
        return list(self._reader.columns or [])

    async def aclose(self) -> None:
        """Cancels the call if it is still running."""
        self._finished = True
        if self._call is not None and not self._call.done():
            self._call.cancel()

    async def __aenter__(self) -> "RowStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class Database(c.ClientSettings):
    """An asyncio client for one database of an iadb server.

    ``target`` is ``host:port``; ``database`` names one of the server's
    databases (empty: its default). ``timeout`` (seconds) is the deadline of
    every call, None for none. ``credentials`` (``grpc.ssl_channel_credentials``)
    switches to TLS; ``token`` is the bearer token of a server with a tokens
    file (sent as ``authorization: Bearer ...``); ``metadata`` (pairs of
    strings) is sent with every call. ``read_only=True`` runs every call in a
    read-only transaction of its own on the server, enforced by the engine: a
    write or DDL fails with PERMISSION_DENIED and changes nothing.
    ``max_staleness_ms=N`` lets the reads (``fetch_rows``, ``fetch_row``,
    ``fetch_one``, ``iterate``) run on a replica of the database whose
    replay lag is within N milliseconds (bounded staleness; the primary when
    none is); they may then miss the last N ms of writes, the caller's own
    included; so may a ``transaction(read_only=True)``. Writes,
    ``execute_query``/``fetch_all`` (which run any statement), batches and
    other transactions always run on the primary.

    The original API's methods return a ``QueryResult`` and never raise for
    an error from the server: ``execute_query``, ``fetch_all``,
    ``fetch_one``, ``execute_many``, ``execute_with_retry``;
    ``health_check`` and ``create_table`` return a bool. The typed ones
    raise ``DatabaseError``: ``connect``, ``execute``, ``fetch_rows``,
    ``fetch_row``, ``table_exists``, ``health``, ``migrate``, ``batch`` and
    iteration over ``iterate``. Every method raises
    ``TypeError`` (``OverflowError`` for an int outside int64) for a bad
    parameter before anything is sent, and ``RuntimeError`` when called
    before ``connect``.
    """

    _channel: Optional[grpc.aio.Channel] = None

    # --- lifecycle ---------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._stub is not None

    async def connect(self) -> bool:
        """Opens the channel and waits (``connect_timeout``) until it is
        ready; returns True.

        Raises ``DatabaseError`` UNAVAILABLE when the server cannot be
        reached: at once when the connection is refused (nothing listens
        there), after ``connect_timeout`` when there is no answer at all.
        """
        if self._channel is not None:
            return True
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=self._options)
        try:
            await asyncio.wait_for(self._wait_ready(channel), self.connect_timeout)
        except asyncio.TimeoutError:
            await channel.close()
            raise c.unreachable(self.target, "no answer within %.1f s" % self.connect_timeout) from None
        except DatabaseError:
            await channel.close()
            raise
        self._channel = channel
        self._stub = pb_grpc.DatabaseStub(channel)
        return True

    async def _wait_ready(self, channel: grpc.aio.Channel) -> None:
        """Waits for READY; the first TRANSIENT_FAILURE (a refused or failed
        connection) raises UNAVAILABLE at once instead of retrying."""
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise c.unreachable(self.target, "the connection failed (refused, no route, or a failed TLS handshake)")
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    async def disconnect(self) -> None:
        """Closes the channel; running calls are cancelled."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> "Database":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.disconnect()

    def _stub_or_raise(self) -> pb_grpc.DatabaseStub:
        if self._stub is None:
            raise RuntimeError("iadb.Database is not connected: call `await db.connect()` first")
        return self._stub

    async def _unary(self, method: str, request):
        stub = self._stub_or_raise()
        try:
            return await getattr(stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    # --- typed API (raises DatabaseError) ----------------------------------

    async def execute(self, sql: str, params: Params = None) -> ExecuteResult:
        """Runs a statement without rows; rows affected and last insert id."""
        request = c.execute_request(self.database, sql, params, self.read_only)
        return c.execute_result(await self._unary("Execute", request))

    async def fetch_rows(self, sql: str, params: Params = None) -> List[Dict[str, Any]]:
        """Every row, as dicts keyed by column name; raises ``DatabaseError``."""
        rows = []
        async with self.iterate(sql, params) as stream:
            async for row in stream:
                rows.append(row)
        return rows

    async def fetch_row(self, sql: str, params: Params = None) -> Optional[Dict[str, Any]]:
        """The first row, or None when there is none; raises ``DatabaseError``."""
        request = c.fetch_one_request(self.database, sql, params, self.read_only, self.max_staleness_ms)
        return c.fetch_one_row(await self._unary("FetchOne", request))

    async def table_exists(self, table_name: str) -> bool:
        """Whether the table exists (``schema.table`` where the engine has schemas)."""
        request = c.table_exists_request(self.database, table_name)
        return (await self._unary("TableExists", request)).exists

    async def health(self) -> HealthStatus:
        """The Health RPC for this client's database (every database when it is '');
        raises ``DatabaseError``."""
        start = time.perf_counter()
        resp = await self._unary("Health", pb.HealthRequest(database=self.database))
        return c.health_status(resp, _ms(start))

    async def health_check(self) -> bool:
        """True when the server answers and its database is healthy; never raises
        for a server error or an unreachable server (False)."""
        if self._stub is None:
            return False
        try:
            return (await self.health()).healthy
        except DatabaseError:
            return False

    async def migrate(self, action: Union[str, int] = "apply", *, target_version: Optional[str] = None,
                      files: Any = None, paths: Any = None, allow_missing: bool = False,
                      allow_out_of_order: bool = False) -> "c.MigrateResult":
        """The Migrate RPC: ``action`` is "status", "plan", "apply", "rollback",
        "validate", "repair" or "baseline". ``paths`` (folders of
        ``V{version}__{name}.sql`` / ``U...`` files) and ``files``
        (``{filename: sql}`` or ``(filename, sql)`` pairs) are app migrations
        sent with the request. Raises ``DatabaseError``."""
        request = c.migrate_request(self.database, action, target_version, files, paths,
                                    allow_missing, allow_out_of_order)
        return c.migrate_result(await self._unary("Migrate", request))

    def iterate(self, sql: str, params: Params = None, *, arrow: bool = False) -> RowStream:
        """Streams the rows of a query (``async for row in db.iterate(...)``).

        Parameters are checked at once; the call starts with the first row
        asked for. Use ``async with db.iterate(...) as rows:`` to cancel the
        query when leaving early.

        ``arrow=True`` asks for the rows as Arrow record batches, which
        pyarrow turns into the same Python values column by column (much
        faster for many rows; needs pyarrow). Then a value that does not fit
        its column's Arrow type is an error (FAILED_PRECONDITION) where
        rows would carry it: see docs/arrow.md.
        """
        reader = _arrow.rows_reader(arrow)
        request = c.fetch_all_request(self.database, sql, params, self.read_only, self.max_staleness_ms,
                                      _arrow.rows_format(arrow))
        self._stub_or_raise()
        stream = RowStream(self, request, self.timeout)
        stream._reader.arrow = reader
        return stream

    # --- Arrow results (optional: pyarrow, pandas, polars) -----------------

    async def _fetch_arrow(self, sql: str, params: Params) -> "_arrow.ArrowCollector":
        """Runs a query with RESULT_FORMAT_ARROW and collects its IPC stream."""
        request = c.fetch_all_request(self.database, sql, params, self.read_only, self.max_staleness_ms,
                                      _arrow.ARROW)
        stub = self._stub_or_raise()
        collector = _arrow.ArrowCollector()
        call = stub.FetchAll(request, timeout=self.timeout, metadata=self._metadata)
        try:
            async for frame in call:
                collector.feed(frame)
            collector.check_end()
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            if not call.done():
                call.cancel()
        return collector

    async def fetch_arrow(self, sql: str, params: Params = None) -> Any:
        """Every row of a query as a ``pyarrow.Table``, sent by the server as
        Arrow (no Python object per value). Raises ``DatabaseError``; a
        result cut short is INTERNAL, never a short table. Needs pyarrow
        (``pip install "iadb[arrow]"``): without it ``ImportError``, before
        anything is sent."""
        _arrow.pyarrow("fetch_arrow")
        return (await self._fetch_arrow(sql, params)).table()

    async def fetch_df(self, sql: str, params: Params = None, **to_pandas: Any) -> Any:
        """``fetch_arrow(...).to_pandas(**to_pandas)``: a pandas DataFrame
        (``pip install "iadb[pandas]"``)."""
        _arrow.require_pandas()
        return (await self.fetch_arrow(sql, params)).to_pandas(**to_pandas)

    async def fetch_polars(self, sql: str, params: Params = None) -> Any:
        """Every row of a query as a ``polars.DataFrame``, read from the Arrow
        stream by polars itself (``pip install "iadb[polars]"``; no pyarrow
        needed)."""
        _arrow.polars()
        return (await self._fetch_arrow(sql, params)).polars()

    async def batch(self, statements: Sequence[Any], *, read_only: bool = False) -> List[StatementResult]:
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
        return c.statement_results(await self._unary("Batch", request))

    def transaction(
        self,
        isolation: Union[None, str, c.IsolationLevel] = None,
        *,
        read_only: bool = False,
        immediate: bool = False,
        timeout: Optional[float] = c.CLIENT_TIMEOUT,
    ) -> Transaction:
        """An interactive transaction: ``async with db.transaction() as tx:``.

        Leaving the block commits; an exception rolls back and is re-raised.
        ``isolation``: None (the engine's default), an ``IsolationLevel`` or
        its name ("read_committed", "repeatable_read", "serializable",
        "snapshot"). ``read_only``: a write fails. ``immediate``: SQLite's
        BEGIN IMMEDIATE (the write lock at once). ``timeout`` (seconds): the
        deadline of the whole transaction (default: the client's).
        """
        begin = c.begin_request(self.database, isolation, read_only, immediate, self.max_staleness_ms)
        self._stub_or_raise()
        return Transaction(self, begin, self.timeout if timeout is c.CLIENT_TIMEOUT else timeout)

    # --- seed-style API (QueryResult, never raises for server errors) ------

    async def execute_query(self, sql: str, params: Params = None) -> QueryResult:
        """Runs any statement: rows for a query, rows affected otherwise.

        A result stream cut short (it ended without its summary) is a failed
        result (``success=False``, INTERNAL), never a short list of rows.
        """
        request = c.fetch_all_request(self.database, sql, params, self.read_only)
        self._stub_or_raise()
        start = time.perf_counter()
        try:
            return await self._run_query(request, start)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))

    async def fetch_all(self, sql: str, params: Params = None) -> QueryResult:
        """Every row of a query as a ``QueryResult`` (the original API):
        ``success``, ``data`` (dicts), ``row_count``; a server error is
        ``success=False`` with ``error_message``, never raised."""
        return await self.execute_query(sql, params)

    async def fetch_one(self, sql: str, params: Params = None) -> QueryResult:
        """The first row of a query as a ``QueryResult`` whose ``data`` holds
        it (``[]`` when there is none; ``get_first_row()`` gives it or None)."""
        request = c.fetch_one_request(self.database, sql, params, self.read_only, self.max_staleness_ms)
        self._stub_or_raise()
        start = time.perf_counter()
        try:
            resp = await self._unary("FetchOne", request)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return c.fetch_one_result(resp, _ms(start))

    async def create_table(self, table_name: str, schema: Any) -> bool:
        """``CREATE TABLE IF NOT EXISTS table_name (schema)``: ``schema`` is the
        column definitions as SQL text, or a ``{column: definition}`` dict.
        True when it succeeded."""
        return (await self.execute_query(c.create_table_sql(table_name, schema))).success

    async def _run_query(self, request: pb.FetchAllRequest, start: float) -> QueryResult:
        if c.is_plain_write(request.sql):
            # A write without RETURNING: the Execute RPC, which reports the
            # last insert id (FetchAll's summary has none).
            resp = await self._unary("Execute", pb.ExecuteRequest(
                database=request.database, sql=request.sql, params=request.params,
                options=request.options if request.HasField("options") else None))
            return c.write_result(resp, _ms(start))
        stream = RowStream(self, request, self.timeout)
        data = []
        async with stream:
            async for row in stream:
                data.append(row)
        return stream._reader.result(data, _ms(start))

    async def execute_many(self, sql: str, params_list: Sequence[Params]) -> QueryResult:
        """One statement per parameter set, in one transaction (all or nothing).

        ``row_count`` and ``rows_affected`` are the total rows affected.
        """
        request = c.execute_many_request(self.database, sql, params_list, self.read_only)
        start = time.perf_counter()
        try:
            resp = await self._unary("ExecuteMany", request)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return QueryResult(success=True, row_count=resp.rows_affected,
                           rows_affected=resp.rows_affected, execution_time_ms=_ms(start))

    async def execute_with_retry(
        self,
        sql: str,
        params: Params = None,
        *,
        max_retries: int = c.DEFAULT_RETRIES,
        base_delay: float = c.DEFAULT_BASE_DELAY,
        max_delay: float = c.DEFAULT_MAX_DELAY,
        idempotent: bool = False,
    ) -> QueryResult:
        """``execute_query``, retried with exponential backoff while it is safe.

        The statement may be a write, so by default it is repeated only when
        its request never reached the server (no connection could be made):
        an UNAVAILABLE that arrives after the request was sent may come from
        a write that was committed, and is returned as it is. Pass
        ``idempotent=True`` when running the statement twice is harmless (a
        read, an upsert) to retry every UNAVAILABLE.

        Waits ``base_delay * 2**n`` (capped at ``max_delay``) before retry
        ``n``; other errors are returned at once. Returns the last result.
        """
        request = c.fetch_all_request(self.database, sql, params, self.read_only)  # TypeError before any call
        self._stub_or_raise()
        start = time.perf_counter()
        attempt = 0
        while True:
            try:
                return await self._run_query(request, start)
            except DatabaseError as e:
                if not e.retryable_for(write=not idempotent) or attempt >= max_retries:
                    return c.failed_result(e, _ms(start))
            await asyncio.sleep(c.backoff_delay(attempt, base_delay, max_delay))
            attempt += 1
