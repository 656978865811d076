"""iadb: Python client for the iadb gRPC database gateway.

    import iadb

    async with iadb.Database("127.0.0.1:50051") as db:
        result = await db.execute_query("SELECT 1 AS one")
        async for row in db.iterate("SELECT * FROM big_table"):
            ...

    with iadb.SyncDatabase("127.0.0.1:50051") as db:
        result = db.fetch_all("SELECT * FROM people WHERE score > ?", [5])   # QueryResult
        with db.transaction() as tx:         # committed at the end of the block
            tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", [5, 1])
            tx.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", [5, 2])
"""

try:
    from ._proto import database_pb2 as _pb  # noqa: F401
except ImportError as _e:  # pragma: no cover - only in a checkout without a build
    raise ImportError(
        "iadb: the gRPC stubs (iadb/_proto) are generated at install time; "
        "install the package with `pip install ./client/python` "
        "(or `pip install -e ./client/python` for development)"
    ) from _e

from ._client import Database, RowStream, with_retry
from ._common import IsolationLevel
from ._errors import DatabaseError
from ._result import (DatabaseHealth, ExecuteResult, HealthStatus, QueryResult, StatementResult,
                      create_error_result, create_query_result)
from ._common import MigrateResult, MigrationStatus
from ._original import (AsyncDatabaseManager, ConnectionConfig, DatabaseInterface, DatabaseManager,
                        DatabaseType, MigrationRunner)
from ._sync import SyncDatabase, SyncRowStream, with_retry_sync
from ._transaction import SyncTransaction, SyncTxRowStream, Transaction, TxRowStream
from ._values import Json

__version__ = "0.1.0"

__all__ = [
    "Database",
    "SyncDatabase",
    "RowStream",
    "SyncRowStream",
    "QueryResult",
    "ExecuteResult",
    "HealthStatus",
    "DatabaseHealth",
    "StatementResult",
    "IsolationLevel",
    "Transaction",
    "SyncTransaction",
    "TxRowStream",
    "SyncTxRowStream",
    "DatabaseError",
    "Json",
    "with_retry",
    "with_retry_sync",
    "create_query_result",
    "create_error_result",
    "DatabaseInterface",
    "DatabaseType",
    "ConnectionConfig",
    "DatabaseManager",
    "AsyncDatabaseManager",
    "MigrationRunner",
    "MigrateResult",
    "MigrationStatus",
    "__version__",
]
