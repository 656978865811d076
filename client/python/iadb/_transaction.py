"""Interactive transactions: one Transaction stream, on one server connection
of the database, for the life of an ``async with`` / ``with`` block."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import grpc
import grpc.aio

from . import _arrow
from . import _common as c
from ._errors import DatabaseError, commit_error, from_rpc_error
from ._proto import database_pb2 as pb
from ._result import ExecuteResult, QueryResult

Params = Optional[Sequence[Any]]

_COMMIT = pb.TransactionRequest(commit=pb.CommitTransaction())
_ROLLBACK = pb.TransactionRequest(rollback=pb.RollbackTransaction())


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _kind(resp: pb.TransactionResponse) -> Optional[str]:
    return resp.WhichOneof("response")


def _expect(resp: pb.TransactionResponse, kind: str) -> None:
    got = _kind(resp)
    if got != kind:
        raise c.protocol_error("expected `%s`, got `%s`" % (kind, got))


class _TxState:
    """What both transaction classes track: whether the transaction is
    open, how it ended, and the unfinished fetch (if any)."""

    def __init__(self, begin: pb.TransactionRequest, timeout: Optional[float]) -> None:
        self._begin = begin
        self._timeout = timeout
        self._call = None
        self._error: Optional[DatabaseError] = None
        self._entered = False
        self._ended = False
        self._stream = None
        #: True once committed, False once rolled back (by request, by an
        #: error or by the server), None while open.
        self.committed: Optional[bool] = None
        #: The database's configured name and its engine, once begun.
        self.database: Optional[str] = None
        self.engine: Optional[str] = None

    @property
    def is_open(self) -> bool:
        return self._entered and not self._ended and self._error is None

    def _check_open(self) -> None:
        if self._error is not None:
            # The transaction was rolled back by this error: every later
            # request fails with it.
            raise self._error
        if self._ended:
            raise RuntimeError("the transaction has ended (%s)"
                               % ("committed" if self.committed else "rolled back"))
        if not self._entered:
            raise RuntimeError("use the transaction in `async with db.transaction() as tx:` "
                               "(or `with sdb.transaction() as tx:`)")

    def _began(self, resp: pb.TransactionResponse) -> None:
        _expect(resp, "begun")
        self.database = resp.begun.database
        self.engine = resp.begun.engine

    def _record(self, error: DatabaseError) -> DatabaseError:
        """The transaction ended with `error` (the server rolled it back, or
        the stream broke)."""
        if self._error is None:
            self._error = error
        self.committed = False if not error.commit_outcome_unknown else None
        self._ended = True
        return error


# --- asyncio -----------------------------------------------------------------


class TxRowStream:
    """The rows of one fetch inside a transaction (``async for``).

    A transaction answers one request at a time, so its rows must be read
    (or the stream closed, which reads and discards the rest) before the
    transaction's next request; a next request reads and discards them
    itself, after which this stream raises ``RuntimeError``. Rows arrive in
    batches and are turned into dicts one at a time.
    """

    def __init__(self, tx: "Transaction", request: pb.TransactionRequest) -> None:
        self._tx = tx
        self._request = request
        self._reader = c.FrameReader()
        self._started = False
        self._finished = False
        self._discarded = False

    @property
    def columns(self) -> Optional[List[str]]:
        return self._reader.columns

    @property
    def row_count(self) -> int:
        return self._reader.row_count

    def __aiter__(self) -> "TxRowStream":
        return self

    async def _start(self) -> None:
        tx = self._tx
        async with tx._lock:
            await tx._settle()
            tx._check_open()
            await tx._write(self._request)
            self._started = True
            tx._stream = self

    async def _read(self) -> None:
        """Feeds the next frame of the fetch."""
        tx = self._tx
        resp = await tx._read()
        try:
            _expect(resp, "fetched")
            self._reader.feed(resp.fetched)
        except DatabaseError as e:
            raise tx._fail(e) from None
        if self._reader.done:
            self._finished = True
            tx._stream = None

    async def __anext__(self) -> Dict[str, Any]:
        if self._discarded:
            raise RuntimeError("these rows were discarded: the transaction's next request was "
                               "sent before they were read")
        if not self._started:
            await self._start()
        while True:
            row = self._reader.next_row()
            if row is not None:
                return row
            if self._finished:
                raise StopAsyncIteration
            await self._read()

    async def start(self) -> List[str]:
        """Sends the fetch and waits for the header; returns the column names."""
        if not self._started:
            await self._start()
        while self._reader.columns is None and not self._finished:
            await self._read()
        return list(self._reader.columns or [])

    async def _drain(self) -> None:
        while self._started and not self._finished:
            self._reader._batch = None
            await self._read()

    async def aclose(self) -> None:
        """Reads and discards the rows not yet read (the transaction stays
        open)."""
        if self._started and not self._finished and self._tx._error is None:
            await self._drain()
        self._finished = True

    async def __aenter__(self) -> "TxRowStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class Transaction(_TxState):
    """One interactive transaction (``async with db.transaction() as tx:``).

    Leaving the block normally commits; leaving it with an exception rolls
    back and re-raises. Requests are answered one at a time, in order (calls
    from several tasks wait for each other). Any error from the server ends
    the transaction: the server rolls it back, and every later request
    raises that error. Raising methods: ``execute``, ``fetch_all``,
    ``fetch_one``, ``iterate``, ``commit``, ``rollback``; result methods
    (a ``QueryResult``, ``success=False`` on an error): ``execute_query``,
    ``execute_many``.
    """

    def __init__(self, db, begin: pb.TransactionRequest, timeout: Optional[float]) -> None:
        super().__init__(begin, timeout)
        self._db = db
        self._lock = asyncio.Lock()

    # --- the stream ----------------------------------------------------------

    def _fail(self, error: DatabaseError) -> DatabaseError:
        self._record(error)
        if self._call is not None and not self._call.done():
            self._call.cancel()
        return error

    async def _write(self, request: pb.TransactionRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.RpcError as e:
            raise self._fail(from_rpc_error(e)) from None
        except asyncio.InvalidStateError:
            # The call ended (its status is read next).
            await self._read()
            raise self._fail(c.protocol_error("the server ended the transaction")) from None

    async def _read(self) -> pb.TransactionResponse:
        try:
            resp = await self._call.read()
        except grpc.RpcError as e:
            raise self._fail(from_rpc_error(e)) from None
        if resp is grpc.aio.EOF:
            raise self._fail(c.protocol_error("it ended before the answer to a request"))
        return resp

    async def _exchange(self, request: pb.TransactionRequest, kind: str) -> pb.TransactionResponse:
        await self._write(request)
        resp = await self._read()
        try:
            _expect(resp, kind)
        except DatabaseError as e:
            raise self._fail(e) from None
        return resp

    async def _settle(self) -> None:
        """Reads and discards the rest of an unfinished fetch."""
        stream = self._stream
        if stream is not None:
            stream._discarded = True
            await stream._drain()
            self._stream = None

    async def _close_call(self) -> None:
        """After `ended`: reads the end of the stream."""
        try:
            while await self._call.read() is not grpc.aio.EOF:
                pass
        except grpc.RpcError:
            pass

    async def __aenter__(self) -> "Transaction":
        if self._call is not None:
            raise RuntimeError("a transaction is entered once; call db.transaction() again")
        self._call = self._db._stub_or_raise().Transaction(
            timeout=self._timeout, metadata=self._db._metadata)
        self._entered = True
        try:
            await self._write(self._begin)
            self._began(await self._read())
        except DatabaseError as e:
            raise self._fail(e) from None
        except BaseException:
            self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction's begin was interrupted"))
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if self._error is not None:
                # Rolled back by an error the block did not raise (a
                # result-style method's failure, or a caught exception):
                # nothing was committed.
                raise self._error
            if not self._ended:
                await self.commit()
            return False
        if self.is_open:
            if issubclass(exc_type, Exception):
                try:
                    await self.rollback()
                except (DatabaseError, RuntimeError):
                    pass
            else:
                # Cancelled or interrupted: no waiting; the server rolls back
                # when the stream breaks.
                self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction was interrupted"))
        if self._call is not None and not self._call.done():
            self._call.cancel()
        return False

    # --- requests ----------------------------------------------------------

    async def execute(self, sql: str, params: Params = None) -> ExecuteResult:
        """Runs a statement without rows; rows affected and last insert id."""
        request = pb.TransactionRequest(execute=c.statement(sql, params))
        async with self._lock:
            await self._settle()
            self._check_open()
            resp = await self._exchange(request, "executed")
        return c.execute_result(resp.executed)

    def iterate(self, sql: str, params: Params = None, *, arrow: bool = False) -> TxRowStream:
        """Streams the rows of a query (``async for row in tx.iterate(...)``);
        parameters are checked at once, the fetch is sent at the first row
        asked for. ``arrow``: see ``Database.iterate``."""
        self._check_open()
        reader = _arrow.rows_reader(arrow)
        stream = TxRowStream(self, pb.TransactionRequest(
            fetch=c.statement(sql, params, _arrow.rows_format(arrow))))
        stream._reader.arrow = reader
        return stream

    async def fetch_all(self, sql: str, params: Params = None) -> List[Dict[str, Any]]:
        """Every row, as dicts keyed by column name."""
        async with self.iterate(sql, params) as stream:
            return [row async for row in stream]

    async def fetch_one(self, sql: str, params: Params = None) -> Optional[Dict[str, Any]]:
        """The first row, or None. The rest of the result is read and
        discarded (add ``LIMIT 1`` to a large query)."""
        async with self.iterate(sql, params) as stream:
            async for row in stream:
                return row
        return None

    async def _fetch_arrow(self, sql: str, params: Params) -> "_arrow.ArrowCollector":
        """One fetch with RESULT_FORMAT_ARROW, read to its summary."""
        request = pb.TransactionRequest(fetch=c.statement(sql, params, _arrow.ARROW))
        collector = _arrow.ArrowCollector()
        async with self._lock:
            await self._settle()
            self._check_open()
            try:
                await self._write(request)
                while not collector.done:
                    resp = await self._read()
                    try:
                        _expect(resp, "fetched")
                        collector.feed(resp.fetched)
                    except DatabaseError as e:
                        raise self._fail(e) from None
            except DatabaseError:
                raise
            except BaseException:
                # Interrupted with frames still coming: the stream can no
                # longer be followed; the server rolls back when it breaks.
                self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction's fetch was interrupted"))
                raise
        return collector

    async def fetch_arrow(self, sql: str, params: Params = None) -> Any:
        """Every row of a query as a ``pyarrow.Table`` (see
        ``Database.fetch_arrow``); raises ``DatabaseError``."""
        _arrow.pyarrow("fetch_arrow")
        collector = await self._fetch_arrow(sql, params)
        try:
            return collector.table()
        except DatabaseError as e:
            raise self._fail(e) from None

    async def fetch_df(self, sql: str, params: Params = None, **to_pandas: Any) -> Any:
        """``fetch_arrow(...).to_pandas(**to_pandas)``."""
        _arrow.require_pandas()
        return (await self.fetch_arrow(sql, params)).to_pandas(**to_pandas)

    async def fetch_polars(self, sql: str, params: Params = None) -> Any:
        """Every row of a query as a ``polars.DataFrame``."""
        _arrow.polars()
        collector = await self._fetch_arrow(sql, params)
        try:
            return collector.polars()
        except DatabaseError as e:
            raise self._fail(e) from None

    async def execute_query(self, sql: str, params: Params = None) -> QueryResult:
        """Any statement: rows for a query, rows affected otherwise. A
        server error is ``success=False`` (and the transaction has ended)."""
        request = pb.TransactionRequest(fetch=c.statement(sql, params))
        start = time.perf_counter()
        stream = TxRowStream(self, request)
        try:
            async with stream:
                data = [row async for row in stream]
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return stream._reader.result(data, _ms(start))

    async def execute_many(self, sql: str, params_list: Sequence[Params]) -> QueryResult:
        """One statement per parameter set; ``row_count`` and
        ``rows_affected`` are the total. A server error is ``success=False``
        (and the transaction has ended)."""
        request = pb.TransactionRequest(execute_many=c.execute_many_statement(sql, params_list))
        start = time.perf_counter()
        try:
            async with self._lock:
                await self._settle()
                self._check_open()
                resp = await self._exchange(request, "executed_many")
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        n = resp.executed_many.rows_affected
        return QueryResult(success=True, row_count=n, rows_affected=n, execution_time_ms=_ms(start))

    async def commit(self) -> None:
        """Commits and ends the transaction. An error whose answer never
        came has ``commit_outcome_unknown`` set: the commit may have been
        applied, and it is never retryable."""
        async with self._lock:
            await self._settle()
            self._check_open()
            try:
                resp = await self._exchange(_COMMIT, "ended")
            except DatabaseError as e:
                self._error = None
                raise self._record(commit_error(e)) from None
            if not resp.ended.committed:
                raise self._record(commit_error(c.protocol_error("the commit was answered `rolled back`")))
            self._ended = True
            self.committed = True
            await self._close_call()

    async def rollback(self) -> None:
        """Rolls back and ends the transaction (nothing to do when an error
        already rolled it back)."""
        async with self._lock:
            if self._error is not None and not self._error.commit_outcome_unknown:
                return
            if self._stream is not None:
                # The rows of a fetch are still coming and are not wanted:
                # the call is cancelled, and the server rolls back a
                # transaction whose stream breaks.
                self._call.cancel()
                self._ended = True
                self.committed = False
                return
            self._check_open()
            await self._exchange(_ROLLBACK, "ended")
            self._ended = True
            self.committed = False
            await self._close_call()


# --- blocking ----------------------------------------------------------------

_END = object()


class SyncTxRowStream:
    """``TxRowStream`` for ``SyncTransaction`` (a plain iterator)."""

    def __init__(self, tx: "SyncTransaction", request: pb.TransactionRequest) -> None:
        self._tx = tx
        self._request = request
        self._reader = c.FrameReader()
        self._started = False
        self._finished = False
        self._discarded = False

    columns = TxRowStream.columns
    row_count = TxRowStream.row_count

    def __iter__(self) -> "SyncTxRowStream":
        return self

    def _start(self) -> None:
        tx = self._tx
        with tx._lock:
            tx._settle()
            tx._check_open()
            tx._write(self._request)
            self._started = True
            tx._stream = self

    def _read(self) -> None:
        tx = self._tx
        resp = tx._read()
        try:
            _expect(resp, "fetched")
            self._reader.feed(resp.fetched)
        except DatabaseError as e:
            raise tx._fail(e) from None
        if self._reader.done:
            self._finished = True
            tx._stream = None

    def _begin_reading(self) -> None:
        if self._discarded:
            raise RuntimeError("these rows were discarded: the transaction's next request was "
                               "sent before they were read")
        if not self._started:
            self._start()

    def __next__(self) -> Dict[str, Any]:
        self._begin_reading()
        while True:
            row = self._reader.next_row()
            if row is not None:
                return row
            if self._finished:
                raise StopIteration
            self._read()

    def next_rows(self) -> List[Any]:
        """See ``SyncRowStream.next_rows``."""
        self._begin_reading()
        while True:
            rows = self._reader.rest_of_batch()
            if rows:
                return rows
            if self._finished:
                return []
            self._read()

    def start(self) -> List[str]:
        if not self._started:
            self._start()
        while self._reader.columns is None and not self._finished:
            self._read()
        return list(self._reader.columns or [])

    def _drain(self) -> None:
        while self._started and not self._finished:
            self._reader._batch = None
            self._read()

    def close(self) -> None:
        if self._started and not self._finished and self._tx._error is None:
            self._drain()
        self._finished = True

    def __enter__(self) -> "SyncTxRowStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SyncTransaction(_TxState):
    """``Transaction`` for ``SyncDatabase`` (``with sdb.transaction() as tx:``)."""

    def __init__(self, db, begin: pb.TransactionRequest, timeout: Optional[float]) -> None:
        super().__init__(begin, timeout)
        self._db = db
        self._lock = threading.RLock()
        self._requests: "queue.Queue[Any]" = queue.Queue()

    def _outgoing(self):
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _fail(self, error: DatabaseError) -> DatabaseError:
        self._record(error)
        self._requests.put(_END)
        if self._call is not None:
            self._call.cancel()
        return error

    def _write(self, request: pb.TransactionRequest) -> None:
        self._requests.put(request)

    def _read(self) -> pb.TransactionResponse:
        try:
            return next(self._call)
        except StopIteration:
            raise self._fail(c.protocol_error("it ended before the answer to a request")) from None
        except grpc.RpcError as e:
            raise self._fail(from_rpc_error(e)) from None

    def _exchange(self, request: pb.TransactionRequest, kind: str) -> pb.TransactionResponse:
        self._write(request)
        resp = self._read()
        try:
            _expect(resp, kind)
        except DatabaseError as e:
            raise self._fail(e) from None
        return resp

    def _settle(self) -> None:
        stream = self._stream
        if stream is not None:
            stream._discarded = True
            stream._drain()
            self._stream = None

    def _close_call(self) -> None:
        self._requests.put(_END)
        try:
            for _ in self._call:
                pass
        except grpc.RpcError:
            pass

    def __enter__(self) -> "SyncTransaction":
        if self._call is not None:
            raise RuntimeError("a transaction is entered once; call db.transaction() again")
        stub = self._db._stub_or_raise()
        self._call = stub.Transaction(self._outgoing(), timeout=self._timeout, metadata=self._db._metadata)
        self._entered = True
        try:
            self._write(self._begin)
            self._began(self._read())
        except DatabaseError as e:
            raise self._fail(e) from None
        except BaseException:
            self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction's begin was interrupted"))
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if self._error is not None:
                raise self._error
            if not self._ended:
                self.commit()
            return False
        if self.is_open:
            if issubclass(exc_type, Exception):
                try:
                    self.rollback()
                except (DatabaseError, RuntimeError):
                    pass
            else:
                self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction was interrupted"))
        self._requests.put(_END)
        if self._call is not None:
            self._call.cancel()
        return False

    def execute(self, sql: str, params: Params = None) -> ExecuteResult:
        request = pb.TransactionRequest(execute=c.statement(sql, params))
        with self._lock:
            self._settle()
            self._check_open()
            resp = self._exchange(request, "executed")
        return c.execute_result(resp.executed)

    def iterate(self, sql: str, params: Params = None, *, arrow: bool = False) -> SyncTxRowStream:
        """See ``Transaction.iterate``."""
        self._check_open()
        reader = _arrow.rows_reader(arrow)
        stream = SyncTxRowStream(self, pb.TransactionRequest(
            fetch=c.statement(sql, params, _arrow.rows_format(arrow))))
        stream._reader.arrow = reader
        return stream

    def fetch_all(self, sql: str, params: Params = None) -> List[Dict[str, Any]]:
        with self.iterate(sql, params) as stream:
            return list(stream)

    def fetch_one(self, sql: str, params: Params = None) -> Optional[Dict[str, Any]]:
        with self.iterate(sql, params) as stream:
            for row in stream:
                return row
        return None

    def _fetch_arrow(self, sql: str, params: Params) -> "_arrow.ArrowCollector":
        request = pb.TransactionRequest(fetch=c.statement(sql, params, _arrow.ARROW))
        collector = _arrow.ArrowCollector()
        with self._lock:
            self._settle()
            self._check_open()
            try:
                self._write(request)
                while not collector.done:
                    resp = self._read()
                    try:
                        _expect(resp, "fetched")
                        collector.feed(resp.fetched)
                    except DatabaseError as e:
                        raise self._fail(e) from None
            except DatabaseError:
                raise
            except BaseException:
                self._fail(DatabaseError(grpc.StatusCode.CANCELLED, "the transaction's fetch was interrupted"))
                raise
        return collector

    def fetch_arrow(self, sql: str, params: Params = None) -> Any:
        """See ``Transaction.fetch_arrow``: a ``pyarrow.Table``."""
        _arrow.pyarrow("fetch_arrow")
        collector = self._fetch_arrow(sql, params)
        try:
            return collector.table()
        except DatabaseError as e:
            raise self._fail(e) from None

    def fetch_df(self, sql: str, params: Params = None, **to_pandas: Any) -> Any:
        """``fetch_arrow(...).to_pandas(**to_pandas)``."""
        _arrow.require_pandas()
        return self.fetch_arrow(sql, params).to_pandas(**to_pandas)

    def fetch_polars(self, sql: str, params: Params = None) -> Any:
        """Every row of a query as a ``polars.DataFrame``."""
        _arrow.polars()
        collector = self._fetch_arrow(sql, params)
        try:
            return collector.polars()
        except DatabaseError as e:
            raise self._fail(e) from None

    def execute_query(self, sql: str, params: Params = None) -> QueryResult:
        request = pb.TransactionRequest(fetch=c.statement(sql, params))
        start = time.perf_counter()
        stream = SyncTxRowStream(self, request)
        try:
            with stream:
                data = list(stream)
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        return stream._reader.result(data, _ms(start))

    def execute_many(self, sql: str, params_list: Sequence[Params]) -> QueryResult:
        request = pb.TransactionRequest(execute_many=c.execute_many_statement(sql, params_list))
        start = time.perf_counter()
        try:
            with self._lock:
                self._settle()
                self._check_open()
                resp = self._exchange(request, "executed_many")
        except DatabaseError as e:
            return c.failed_result(e, _ms(start))
        n = resp.executed_many.rows_affected
        return QueryResult(success=True, row_count=n, rows_affected=n, execution_time_ms=_ms(start))

    def commit(self) -> None:
        with self._lock:
            self._settle()
            self._check_open()
            try:
                resp = self._exchange(_COMMIT, "ended")
            except DatabaseError as e:
                self._error = None
                raise self._record(commit_error(e)) from None
            if not resp.ended.committed:
                raise self._record(commit_error(c.protocol_error("the commit was answered `rolled back`")))
            self._ended = True
            self.committed = True
            self._close_call()

    def rollback(self) -> None:
        with self._lock:
            if self._error is not None and not self._error.commit_outcome_unknown:
                return
            if self._stream is not None:
                self._requests.put(_END)
                self._call.cancel()
                self._ended = True
                self.committed = False
                return
            self._check_open()
            self._exchange(_ROLLBACK, "ended")
            self._ended = True
            self.committed = False
            self._close_call()
