"""Result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import grpc


@dataclass
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
