"""What the async and the sync client share: requests, responses, options."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from ._errors import DatabaseError
from ._proto import database_pb2 as pb
from ._result import DatabaseHealth, ExecuteResult, HealthStatus, QueryResult, StatementResult
from ._values import decode_row, decode_value, encode_params

DEFAULT_TARGET = "127.0.0.1:50051"
# The server's default --max-request-bytes; results are sent in batches of at
# most 1 MiB, but a single FetchOne row (a large blob) can be bigger than
# gRPC's 4 MiB default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Retry defaults, the same as the Rust client's: 3 retries from 100 ms,
# doubling, capped at 2 s.
DEFAULT_RETRIES = 3
DEFAULT_BASE_DELAY = 0.1
DEFAULT_MAX_DELAY = 2.0


class ClientSettings:
    """The constructor both clients share: where to connect and how; no
    channel until ``connect``."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        database: str = "",
        *,
        timeout: Optional[float] = None,
        connect_timeout: float = 10.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
        metadata: Optional[Sequence[Tuple[str, str]]] = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Optional[Sequence[Tuple[str, Any]]] = None,
        token: Optional[str] = None,
        read_only: bool = False,
        max_staleness_ms: Optional[int] = None,
    ) -> None:
        self.target = normalise_target(target)
        # Every call runs in a read-only transaction of its own on the
        # server, enforced by the engine (QueryOptions.read_only).
        self.read_only = bool(read_only)
        # Reads (fetches) may run on a replica this far behind
        # (QueryOptions.consistency = BOUNDED_STALENESS); None: the primary.
        self.max_staleness_ms = check_staleness(max_staleness_ms)
        if not isinstance(database, str):
            raise TypeError("database must be str")
        self.database = database
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._credentials = credentials
        metadata = list(metadata or ())
        if token is not None:
            # The bearer token of a server with a tokens file; kept in the
            # call metadata only, never in a message or repr.
            if not isinstance(token, str) or not token.strip():
                raise TypeError("token must be a non-empty str")
            metadata.append(("authorization", "Bearer " + token.strip()))
        self._metadata = tuple(metadata) if metadata else None
        # `channel_options` is the argument here; the function is _channel_options.
        self._options = _channel_options(max_message_bytes, channel_options)
        self._channel = None
        self._stub: Optional[Any] = None


def normalise_target(target: str) -> str:
    """Accepts `host:port` and the Rust client's `http://host:port`."""
    if not isinstance(target, str) or not target:
        raise TypeError("target must be a non-empty str like '127.0.0.1:50051'")
    for prefix in ("http://", "grpc://"):
        if target.startswith(prefix):
            return target[len(prefix):].rstrip("/")
    return target


def channel_options(max_message_bytes: int, extra: Optional[Sequence[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    opts = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    opts.extend(extra or ())
    return opts



_channel_options = channel_options

def backoff_delay(attempt: int, base_delay: float, max_delay: float) -> float:
    """Delay before retry number `attempt` (0-based): base * 2**attempt, capped."""
    return min(max_delay, base_delay * (2**attempt))


def check_sql(sql: Any) -> str:
    if not isinstance(sql, str):
        raise TypeError("sql must be str, not %s" % type(sql).__name__)
    return sql


def check_staleness(max_staleness_ms: Any) -> Optional[int]:
    """None, or a bound in milliseconds that fits the proto's uint32."""
    if max_staleness_ms is None:
        return None
    if isinstance(max_staleness_ms, bool) or not isinstance(max_staleness_ms, int):
        raise TypeError("max_staleness_ms must be an int (milliseconds) or None")
    if not 0 <= max_staleness_ms <= 0xFFFFFFFF:
        raise ValueError("max_staleness_ms must be between 0 and 4294967295")
    return max_staleness_ms


def query_options(read_only: bool, max_staleness_ms: Optional[int] = None,
                  result_format: int = pb.RESULT_FORMAT_UNSPECIFIED) -> Optional[pb.QueryOptions]:
    if max_staleness_ms is not None:
        return pb.QueryOptions(
            read_only=bool(read_only),
            consistency=pb.READ_CONSISTENCY_BOUNDED_STALENESS,
            max_staleness_ms=check_staleness(max_staleness_ms),
            result_format=result_format,
        )
    if read_only or result_format:
        return pb.QueryOptions(read_only=bool(read_only), result_format=result_format)
    return None


def execute_request(database: str, sql: str, params, read_only: bool = False) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(database=database, sql=check_sql(sql), params=encode_params(params),
                             options=query_options(read_only))


def fetch_all_request(database: str, sql: str, params, read_only: bool = False,
                      max_staleness_ms: Optional[int] = None,
                      result_format: int = pb.RESULT_FORMAT_UNSPECIFIED) -> pb.FetchAllRequest:
    return pb.FetchAllRequest(database=database, sql=check_sql(sql), params=encode_params(params),
                              options=query_options(read_only, max_staleness_ms, result_format))


def fetch_one_request(database: str, sql: str, params, read_only: bool = False,
                      max_staleness_ms: Optional[int] = None) -> pb.FetchOneRequest:
    return pb.FetchOneRequest(database=database, sql=check_sql(sql), params=encode_params(params),
                              options=query_options(read_only, max_staleness_ms))


def execute_many_request(database: str, sql: str, params_list, read_only: bool = False) -> pb.ExecuteManyRequest:
    check_sql(sql)
    if params_list is None or isinstance(params_list, (str, bytes, dict)):
        raise TypeError("params_list must be a list of parameter lists")
    try:
        sets = list(params_list)
    except TypeError:
        raise TypeError("params_list must be a list of parameter lists, not %s"
                        % type(params_list).__name__) from None
    rows = []
    for i, params in enumerate(sets):
        try:
            rows.append(pb.Row(values=encode_params(params)))
        except (TypeError, ValueError, OverflowError) as e:
            raise type(e)("parameter set %d: %s" % (i, e)) from None
    return pb.ExecuteManyRequest(database=database, sql=sql, param_sets=rows,
                                 options=query_options(read_only))


def table_exists_request(database: str, table: str) -> pb.TableExistsRequest:
    if not isinstance(table, str):
        raise TypeError("table name must be str, not %s" % type(table).__name__)
    return pb.TableExistsRequest(database=database, table=table)


def execute_result(resp: pb.ExecuteResponse) -> ExecuteResult:
    return ExecuteResult(
        rows_affected=resp.rows_affected,
        last_insert_id=resp.last_insert_id if resp.HasField("last_insert_id") else None,
        execution_time_ms=resp.execution_time_ms,
    )


def fetch_one_row(resp: pb.FetchOneResponse) -> Optional[Dict[str, Any]]:
    if not resp.HasField("row"):
        return None
    return decode_row([c.name for c in resp.columns], resp.row)


def health_status(resp: pb.HealthResponse, latency_ms: float) -> HealthStatus:
    dbs = [
        DatabaseHealth(
            name=d.name, engine=d.engine, healthy=d.healthy, message=d.message,
            pool_size=d.pool_size, pool_idle=d.pool_idle, pool_max=d.pool_max,
            latency_ms=d.latency_ms,
        )
        for d in resp.databases
    ]
    return HealthStatus(healthy=bool(dbs) and all(d.healthy for d in dbs), databases=dbs,
                        latency_ms=latency_ms)


def unreachable(target: str, why: str) -> DatabaseError:
    """UNAVAILABLE for a server that cannot be reached (``never_sent``)."""
    return DatabaseError(
        grpc.StatusCode.UNAVAILABLE,
        "cannot reach iadb server at %s: %s; is iadb-server running there?" % (target, why),
    )


def fetch_one_result(resp: pb.FetchOneResponse, elapsed_ms: float) -> QueryResult:
    row = fetch_one_row(resp)
    data = [row] if row is not None else []
    return QueryResult(success=True, data=data, row_count=len(data), execution_time_ms=elapsed_ms,
                       columns=[col.name for col in resp.columns])


def write_result(resp: pb.ExecuteResponse, elapsed_ms: float) -> QueryResult:
    """The QueryResult of a write run with Execute: rows affected and the
    last insert id."""
    n = resp.rows_affected
    return QueryResult(success=True, row_count=n, rows_affected=n, execution_time_ms=elapsed_ms,
                       last_insert_id=resp.last_insert_id if resp.HasField("last_insert_id") else None)


_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_WRITE_WORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})


def is_plain_write(sql: str) -> bool:
    """An INSERT, UPDATE, DELETE or REPLACE without RETURNING: a statement
    that returns no rows, run with the Execute RPC (which reports the last
    insert id). Anything else runs with FetchAll."""
    rest = sql[_LEADING_NOISE.match(sql).end():]
    m = _FIRST_WORD.match(rest)
    return bool(m) and m.group(0).upper() in _WRITE_WORDS and not _RETURNING.search(rest)


def create_table_sql(table_name: str, schema: Any) -> str:
    if not isinstance(table_name, str) or not table_name:
        raise TypeError("table_name must be a non-empty str")
    if isinstance(schema, dict):
        body = ", ".join("%s %s" % (name, definition) for name, definition in schema.items())
    elif isinstance(schema, str):
        body = schema.strip()
        if body.startswith("(") and body.endswith(")"):
            body = body[1:-1]
    else:
        raise TypeError("schema must be the column definitions as str, or a {column: definition} dict")
    return "CREATE TABLE IF NOT EXISTS %s (%s)" % (table_name, body)


# --- migrations -------------------------------------------------------------

MIGRATE_ACTIONS = {
    "status": pb.MIGRATE_ACTION_STATUS,
    "plan": pb.MIGRATE_ACTION_PLAN,
    "apply": pb.MIGRATE_ACTION_APPLY,
    "rollback": pb.MIGRATE_ACTION_ROLLBACK,
    "validate": pb.MIGRATE_ACTION_VALIDATE,
    "repair": pb.MIGRATE_ACTION_REPAIR,
    "baseline": pb.MIGRATE_ACTION_BASELINE,
}

_MIGRATION_FILE = re.compile(r"^[VU][0-9][^_]*__.+\.sql$")


@dataclass
class MigrationStatus:
    """One migration as the server reports it."""

    version: str
    description: str
    migration_type: str
    filename: str
    state: str
    applied_at: str
    checksum: str
    checksum_ok: bool
    sql: str = ""


@dataclass
class MigrateResult:
    """What ``migrate`` returns: every known migration, the versions this
    call changed, and the server's time."""

    migrations: List[MigrationStatus] = field(default_factory=list)
    changed: List[str] = field(default_factory=list)
    execution_time_ms: float = 0.0

    @property
    def pending(self) -> List[MigrationStatus]:
        return [m for m in self.migrations if m.state == "pending"]

    @property
    def applied(self) -> List[MigrationStatus]:
        return [m for m in self.migrations if m.state == "applied"]


def migration_files(paths: Any) -> List[pb.MigrationFile]:
    """The ``V...__name.sql`` / ``U...__name.sql`` files of a folder or folders."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for folder in paths:
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError("migration folder %r does not exist" % folder)
        for name in sorted(os.listdir(folder)):
            if _MIGRATION_FILE.match(name):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    out.append(pb.MigrationFile(filename=name, content=f.read()))
    return out


def migrate_request(database: str, action: Any, target_version: Optional[str], files: Any, paths: Any,
                    allow_missing: bool, allow_out_of_order: bool) -> pb.MigrateRequest:
    if isinstance(action, str):
        try:
            wire = MIGRATE_ACTIONS[action.strip().lower()]
        except KeyError:
            raise ValueError("action must be one of %s, not %r"
                             % (", ".join(sorted(MIGRATE_ACTIONS)), action)) from None
    elif isinstance(action, int) and action in MIGRATE_ACTIONS.values():
        wire = action
    else:
        raise ValueError("action must be one of %s, not %r" % (", ".join(sorted(MIGRATE_ACTIONS)), action))
    sent = migration_files(paths)
    if isinstance(files, dict):
        files = list(files.items())
    for item in files or ():
        if isinstance(item, pb.MigrationFile):
            sent.append(item)
        else:
            name, content = item
            sent.append(pb.MigrationFile(filename=name, content=content))
    return pb.MigrateRequest(database=database, action=wire, target_version=target_version or "",
                             files=sent, allow_missing=check_flag("allow_missing", allow_missing),
                             allow_out_of_order=check_flag("allow_out_of_order", allow_out_of_order))


def migrate_result(resp: pb.MigrateResponse) -> MigrateResult:
    return MigrateResult(
        migrations=[MigrationStatus(version=m.version, description=m.description,
                                    migration_type=m.migration_type, filename=m.filename, state=m.state,
                                    applied_at=m.applied_at, checksum=m.checksum,
                                    checksum_ok=m.checksum_ok, sql=m.sql) for m in resp.migrations],
        changed=list(resp.changed),
        execution_time_ms=resp.execution_time_ms,
    )


def failed_result(e: DatabaseError, elapsed_ms: float) -> QueryResult:
    return QueryResult(success=False, error_message=e.message, execution_time_ms=elapsed_ms,
                       error_code=e.code, sqlstate=e.sqlstate)


def broken(what: str) -> DatabaseError:
    """The error of a FetchAll stream that breaks the protocol: INTERNAL (a
    server fault; not UNAVAILABLE, which would invite repeating a write)."""
    return DatabaseError(grpc.StatusCode.INTERNAL, "result stream broken: " + what)


class FrameReader:
    """Follows one FetchAll stream: header, batches, summary.

    Rows are decoded one at a time, when asked for, so that a consumer never
    holds more than the current batch (at most 1024 rows or 1 MiB).

    With ``arrow`` set (an ``_arrow.ArrowRows``), the result was asked for
    as Arrow: each record batch becomes the batch's rows as it arrives.
    """

    __slots__ = ("columns", "row_count", "rows_affected", "server_time_ms", "_batch", "_next", "done",
                 "_received", "types", "as_tuples", "arrow")

    def __init__(self) -> None:
        self.columns: Optional[List[str]] = None
        # The engine's declared type of each column ("" where unknown).
        self.types: Optional[List[str]] = None
        # Rows as tuples in column order (DB-API) instead of dicts.
        self.as_tuples = False
        self.arrow = None
        self.row_count = 0
        self.rows_affected = 0
        self.server_time_ms = 0.0
        self._batch = None
        self._next = 0
        self.done = False
        self._received = 0

    def feed(self, frame: pb.FetchAllResponse) -> None:
        which = frame.WhichOneof("frame")
        if self.done:
            raise broken("a frame came after the summary")
        if which == "header":
            if self.columns is not None:
                raise broken("a second header")
            self.columns = [c.name for c in frame.header.columns]
            self.types = [c.declared_type for c in frame.header.columns]
        elif which == "batch":
            if self.columns is None:
                raise broken("it did not start with a header")
            if self.arrow is not None:
                raise broken("it sent rows (RowBatch) for an Arrow result; a server that predates "
                             "Arrow results ignores result_format: upgrade iadb-server")
            self._batch = frame.batch.rows
            self._next = 0
            self._received += len(frame.batch.rows)
        elif which == "arrow":
            if self.columns is None:
                raise broken("it did not start with a header")
            if self.arrow is None:
                raise broken("it sent Arrow data for a result asked for as rows")
            rows = self.arrow.feed(frame.arrow)
            if rows:
                self._batch = rows
                self._next = 0
                self._received += len(rows)
        elif which == "summary":
            if self.columns is None:
                raise broken("it did not start with a header")
            if self.arrow is not None and self.columns and not self.arrow.ended:
                raise broken("its Arrow data ended without the end marker")
            if frame.summary.row_count != self._received:
                raise broken("its summary counts %d rows but %d arrived"
                             % (frame.summary.row_count, self._received))
            self.row_count = frame.summary.row_count
            self.rows_affected = frame.summary.rows_affected
            self.server_time_ms = frame.summary.execution_time_ms
            self.done = True

    def check_end(self) -> None:
        """At the end of the stream (status OK): raises unless it was complete.

        A stream that ends without its summary is an error, never a short
        result: the server stopped sending (a crash, a bug) and rows may be
        missing.
        """
        if self.columns is None:
            raise broken("it ended without a header")
        if not self.done:
            raise broken("it ended after %d rows without its summary, so the result may be incomplete"
                         % self._received)

    def next_row(self) -> Optional[Dict[str, Any]]:
        """The next buffered row, or None when the current batch is used up."""
        batch = self._batch
        if batch is None:
            return None
        i = self._next
        if i >= len(batch):
            self._batch = None
            return None
        self._next = i + 1
        row = batch[i]
        if self.arrow is not None:
            return row if self.as_tuples else dict(zip(self.columns, row))
        if self.as_tuples:
            return tuple(decode_value(v) for v in row.values)
        return {name: decode_value(v) for name, v in zip(self.columns, row.values)}

    def rest_of_batch(self) -> List[Any]:
        """The current batch's rows not yet taken (``[]`` when it is used
        up): what ``next_row`` would give one at a time."""
        batch = self._batch
        if batch is None:
            return []
        i = self._next
        self._batch = None
        if i >= len(batch):
            return []
        if self.arrow is not None:
            rows = batch[i:] if i else batch
            return rows if self.as_tuples else [dict(zip(self.columns, row)) for row in rows]
        if self.as_tuples:
            return [tuple(decode_value(v) for v in row.values) for row in batch[i:]]
        names = self.columns
        return [{name: decode_value(v) for name, v in zip(names, row.values)} for row in batch[i:]]

    def result(self, data: List[Dict[str, Any]], elapsed_ms: float) -> QueryResult:
        if self.columns:
            return QueryResult(success=True, data=data, row_count=len(data),
                               execution_time_ms=elapsed_ms, columns=list(self.columns),
                               rows_affected=self.rows_affected)
        return QueryResult(success=True, row_count=self.rows_affected,
                           execution_time_ms=elapsed_ms, rows_affected=self.rows_affected)


# --- batches and transactions ---------------------------------------------


# `timeout` not given: the client's own.
CLIENT_TIMEOUT: Any = object()


class IsolationLevel(str, enum.Enum):
    """Transaction isolation levels; each engine accepts the ones it has
    (another is INVALID_ARGUMENT naming those it accepts). ``None`` where a
    level is asked for means the engine's default."""

    READ_COMMITTED = "read_committed"
    REPEATABLE_READ = "repeatable_read"
    SERIALIZABLE = "serializable"
    SNAPSHOT = "snapshot"


_ISOLATION_WIRE = {
    IsolationLevel.READ_COMMITTED: pb.ISOLATION_LEVEL_READ_COMMITTED,
    IsolationLevel.REPEATABLE_READ: pb.ISOLATION_LEVEL_REPEATABLE_READ,
    IsolationLevel.SERIALIZABLE: pb.ISOLATION_LEVEL_SERIALIZABLE,
    IsolationLevel.SNAPSHOT: pb.ISOLATION_LEVEL_SNAPSHOT,
}


def isolation_level(value: Union[None, str, IsolationLevel]) -> int:
    """The wire level of ``None`` (the engine's default), an
    ``IsolationLevel`` or its name ("read_committed", "REPEATABLE READ")."""
    if value is None:
        return pb.ISOLATION_LEVEL_UNSPECIFIED
    if not isinstance(value, str):
        raise TypeError("isolation must be an iadb.IsolationLevel, a str or None, not %s"
                        % type(value).__name__)
    try:
        level = IsolationLevel(value.strip().lower().replace(" ", "_").replace("-", "_"))
    except ValueError:
        raise ValueError("isolation must be one of %s (or None for the engine's default), not %r"
                         % (", ".join(repr(l.value) for l in IsolationLevel), value)) from None
    return _ISOLATION_WIRE[level]


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("%s must be a bool, not %s" % (name, type(value).__name__))
    return value


def begin_request(database: str, isolation, read_only: bool, immediate: bool,
                  max_staleness_ms: Optional[int] = None) -> pb.TransactionRequest:
    """The begin of a transaction; a read-only one carries the client's
    staleness bound (it may run on a replica)."""
    read_only = check_flag("read_only", read_only)
    begin = pb.BeginTransaction(
        database=database,
        isolation=isolation_level(isolation),
        read_only=read_only,
        immediate=check_flag("immediate", immediate),
    )
    if read_only and max_staleness_ms is not None:
        begin.consistency = pb.READ_CONSISTENCY_BOUNDED_STALENESS
        begin.max_staleness_ms = check_staleness(max_staleness_ms)
    return pb.TransactionRequest(begin=begin)


def statement(sql: str, params, result_format: int = pb.RESULT_FORMAT_UNSPECIFIED) -> pb.Statement:
    return pb.Statement(sql=check_sql(sql), params=encode_params(params), result_format=result_format)


def execute_many_statement(sql: str, params_list) -> pb.ExecuteManyStatement:
    request = execute_many_request("", sql, params_list)
    return pb.ExecuteManyStatement(sql=request.sql, param_sets=request.param_sets)


def batch_request(database: str, statements, read_only: bool) -> pb.BatchRequest:
    """``statements``: SQL strings and ``(sql, params)`` pairs."""
    if statements is None or isinstance(statements, (str, bytes, dict)):
        raise TypeError("statements must be a list of SQL strings or (sql, params) pairs")
    try:
        items = list(statements)
    except TypeError:
        raise TypeError("statements must be a list of SQL strings or (sql, params) pairs, not %s"
                        % type(statements).__name__) from None
    out = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, str):
                out.append(statement(item, None))
            elif isinstance(item, (tuple, list)) and len(item) in (1, 2):
                out.append(statement(item[0], item[1] if len(item) == 2 else None))
            else:
                raise TypeError("a statement is a SQL string or a (sql, params) pair, not %s"
                                % type(item).__name__)
        except (TypeError, ValueError, OverflowError) as e:
            raise type(e)("statement %d: %s" % (i, e)) from None
    return pb.BatchRequest(database=database, statements=out,
                           read_only=check_flag("read_only", read_only))


def statement_results(resp: pb.BatchResponse) -> List[StatementResult]:
    results = []
    for r in resp.results:
        names = [col.name for col in r.columns]
        results.append(StatementResult(
            rows_affected=r.rows_affected,
            last_insert_id=r.last_insert_id if r.HasField("last_insert_id") else None,
            columns=names,
            rows=[decode_row(names, row) for row in r.rows],
        ))
    return results


def protocol_error(what: str) -> DatabaseError:
    """A Transaction stream that breaks the protocol (a server fault)."""
    return DatabaseError(grpc.StatusCode.INTERNAL, "transaction stream broken: " + what)
