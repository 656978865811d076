"""Result types."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional

import grpc


@dataclass(eq=False)
class QueryResult:
    """The seed-shaped result of ``execute_query`` / ``execute_many``.

    On failure ``success`` is False and ``error_message`` holds the server's
    message; ``error_code`` (a ``grpc.StatusCode``) and ``sqlstate`` say
    more. For a statement that returns rows, ``data`` holds them (one dict per
    row, keyed by column name) and ``row_count`` is their number; for one that
    returns none, ``row_count`` is the number of rows affected.
    ``execution_time_ms`` is the time the call took, measured by the client.
    """

    success: bool
    data: List[Dict[str, Any]] = field(default_factory=list)
    row_count: int = 0
    error_message: Optional[str] = None
    execution_time_ms: float = 0.0
    columns: List[str] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_id: Optional[int] = None
    error_code: Optional[grpc.StatusCode] = None
    sqlstate: Optional[str] = None

    def get_first_row(self) -> Optional[Dict[str, Any]]:
        """The first row, or None."""
        return self.data[0] if self.data else None

    def get_column_values(self, column_name: str) -> List[Any]:
        """Every row's value of ``column_name`` (rows without it are skipped)."""
        return [row[column_name] for row in self.data if column_name in row]

    # A QueryResult also behaves as the list of its rows: ``len(result)``,
    # ``for row in result``, ``result[0]``, and ``result == [{...}, ...]``
    # compares ``data``. Its truth value is that of the list (a failed or
    # empty result is falsy); test ``success`` to tell the two apart.

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.data)

    def __getitem__(self, index):
        return self.data[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryResult):
            return all(getattr(self, f.name) == getattr(other, f.name)
                       for f in fields(self) if f.name != "execution_time_ms")
        if isinstance(other, list):
            return self.data == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def raise_for_error(self) -> "QueryResult":
        """Returns the result, or raises its error as ``iadb.DatabaseError``."""
        if not self.success:
            from ._errors import DatabaseError

            raise DatabaseError(self.error_code or grpc.StatusCode.UNKNOWN, self.error_message or "",
                                self.sqlstate)
        return self


def create_query_result(
    success: bool = True,
    data: Optional[List[Dict[str, Any]]] = None,
    row_count: Optional[int] = None,
    error_message: Optional[str] = None,
    execution_time_ms: Optional[float] = None,
    **extra: Any,
) -> QueryResult:
    """A ``QueryResult`` as the original helper made it: ``row_count``
    defaults to the number of rows in ``data``."""
    data = list(data or [])
    return QueryResult(success=success, data=data,
                       row_count=len(data) if row_count is None else row_count,
                       error_message=error_message,
                       execution_time_ms=execution_time_ms if execution_time_ms is not None else 0.0,
                       **extra)


def create_error_result(error_message: str, execution_time_ms: Optional[float] = None,
                        **extra: Any) -> QueryResult:
    """A failed ``QueryResult`` carrying ``error_message``."""
    return create_query_result(success=False, data=[], row_count=0, error_message=error_message,
                               execution_time_ms=execution_time_ms, **extra)


@dataclass
class ExecuteResult:
    """What ``execute`` returns."""

    rows_affected: int
    last_insert_id: Optional[int]
    execution_time_ms: float


@dataclass
class StatementResult:
    """What one statement of ``batch`` did: rows affected, the last insert
    id where the engine has one, and for a statement that returns rows its
    column names and rows (dicts keyed by column name)."""

    rows_affected: int
    last_insert_id: Optional[int] = None
    columns: List[str] = field(default_factory=list)
    rows: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class DatabaseHealth:
    """Health of one database, from the ``Health`` RPC."""

    name: str
    engine: str
    healthy: bool
    message: str
    pool_size: int
    pool_idle: int
    pool_max: int
    latency_ms: float


@dataclass
class HealthStatus:
    """What ``health_check`` returns: ``healthy`` is true when every database is."""

    healthy: bool
    databases: List[DatabaseHealth]
    latency_ms: float

    def __bool__(self) -> bool:
        return self.healthy
