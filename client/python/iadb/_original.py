"""The original Python database layer's API (IA Modules' ``DatabaseInterface``,
``DatabaseManager``, ``MigrationRunner``, ...), over an iadb server.

The names, signatures and result shapes are the original's; what changes is
where the database is: the SQL runs on an iadb server (``server=``, or
``$IADB_SERVER``, default ``127.0.0.1:50051``), and the database URL says
which engine the application expects.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from . import _common as c
from ._client import Database
from ._errors import DatabaseError
from ._result import QueryResult, create_error_result
from ._sync import SyncDatabase

log = logging.getLogger("iadb")

DEFAULT_SERVER_ENV = "IADB_SERVER"


class DatabaseType(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    DUCKDB = "duckdb"
    CLOUDFLARE_D1 = "cloudflare_d1"


# URL scheme (before any "+driver") -> type.
_SCHEMES = {
    "sqlite": DatabaseType.SQLITE,
    "postgresql": DatabaseType.POSTGRESQL,
    "postgres": DatabaseType.POSTGRESQL,
    "mysql": DatabaseType.MYSQL,
    "mariadb": DatabaseType.MYSQL,
    "duckdb": DatabaseType.DUCKDB,
    "cloudflare_d1": DatabaseType.CLOUDFLARE_D1,
    "d1": DatabaseType.CLOUDFLARE_D1,
}


@dataclass
class ConnectionConfig:
    database_type: DatabaseType
    database_url: str
    host: Optional[str] = None
    port: Optional[int] = None
    username: Optional[str] = None
    password: Optional[str] = None
    database_name: Optional[str] = None

    @classmethod
    def from_url(cls, database_url: str) -> "ConnectionConfig":
        """Create configuration from database URL: ``sqlite:///path``,
        ``postgresql://user:pass@host:5432/db``, ``mysql://...``,
        ``duckdb:///path``, ``cloudflare_d1://database_id?account_id=...&api_token=...``.
        An unknown scheme is a ``ValueError``."""
        if not isinstance(database_url, str) or "://" not in database_url:
            raise ValueError("database_url must look like 'sqlite:///./app.db' or "
                             "'postgresql://user:pass@host:5432/db', not %r" % (database_url,))
        scheme = database_url.split("://", 1)[0].lower().split("+", 1)[0]
        try:
            db_type = _SCHEMES[scheme]
        except KeyError:
            raise ValueError("unknown database URL scheme %r (expected one of %s)"
                             % (scheme, ", ".join(sorted(_SCHEMES)))) from None
        # (urlsplit knows no scheme with "_" in it: parse under a plain one.)
        parts = urlsplit("db://" + database_url.split("://", 1)[1])
        if db_type in (DatabaseType.SQLITE, DatabaseType.DUCKDB):
            # sqlite:///./app.db -> ./app.db ; sqlite:///:memory: -> :memory:
            path = database_url.split("://", 1)[1].split("?", 1)[0]
            if path.startswith("/") and not path.startswith("//"):
                path = path[1:] if path[1:2] in (".", ":") else path
            return cls(database_type=db_type, database_url=database_url, database_name=path or None)
        if db_type == DatabaseType.CLOUDFLARE_D1:
            query = parse_qs(parts.query)
            return cls(database_type=db_type, database_url=database_url,
                       database_name=parts.hostname or parts.netloc or None,
                       username=(query.get("account_id") or [None])[0],
                       password=(query.get("api_token") or [None])[0])
        return cls(
            database_type=db_type,
            database_url=database_url,
            host=parts.hostname,
            port=parts.port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database_name=parts.path.lstrip("/") or None,
        )


def _server_address(server: Optional[str]) -> str:
    return server or os.environ.get(DEFAULT_SERVER_ENV) or c.DEFAULT_TARGET


class DatabaseInterface(ABC):
    """The original abstract interface. ``iadb.Database`` (asyncio) and
    ``AsyncDatabaseManager`` implement it; subclass it for a database of
    your own, as before."""

    def __init__(self, connection_string: str, db_type: DatabaseType):
        self.connection_string = connection_string
        self.db_type = db_type
        self.is_connected = False

    @abstractmethod
    async def connect(self) -> bool:
        """Connect to the database"""

    @abstractmethod
    async def execute_query(self, query: str, parameters: Optional[Tuple] = None) -> QueryResult:
        """Execute a SQL query"""

    @abstractmethod
    async def fetch_all(self, query: str, parameters: Optional[Tuple] = None) -> QueryResult:
        """Fetch all results from a query"""

    @abstractmethod
    async def table_exists(self, table_name: str) -> bool:
        """Check if table exists"""

    async def health_check(self) -> bool:
        """Check database health"""
        try:
            result = await self.execute_query("SELECT 1 as health_check")
            return result.success
        except Exception:
            return False


DatabaseInterface.register(Database)


class _Ready:
    """A value already computed that may also be awaited: the original's
    ``DatabaseManager.initialize`` and ``MigrationRunner.run_pending_migrations``
    are ``async`` while the rest of ``DatabaseManager`` is not, so both
    ``await db.initialize()`` and ``db.initialize()`` work."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self):
        if False:  # pragma: no cover - makes this a generator
            yield
        return self.value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, _Ready) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.value)


def _migration_paths(paths: Any) -> List[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


class _ManagerBase:
    def __init__(self, database_url: str, server: Optional[str] = None, *, database: str = "",
                 **client_options: Any) -> None:
        self.database_url = database_url
        self.config = ConnectionConfig.from_url(database_url)
        self.server = _server_address(server)
        self.last_error: Optional[DatabaseError] = None
        self._client = self._client_class(self.server, database, **client_options)

    @property
    def client(self):
        """The iadb client underneath (its typed, raising API and row streams)."""
        return self._client

    @property
    def is_connected(self) -> bool:
        return self._client.is_connected

    def __repr__(self) -> str:
        return "%s(%r, server=%r)" % (type(self).__name__, self.database_url, self.server)


class DatabaseManager(_ManagerBase):
    """The original blocking ``DatabaseManager``: ``with DatabaseManager(url) as db:``.

    ``database_url`` says which engine the application expects
    (``ConnectionConfig.from_url``); the SQL runs on the iadb server at
    ``server`` (default ``$IADB_SERVER`` or ``127.0.0.1:50051``), in its
    database ``database`` (default: the server's default). Other keyword
    arguments go to ``iadb.SyncDatabase`` (``token``, ``credentials``,
    ``timeout``, ...).
    """

    _client_class = SyncDatabase

    def connect(self) -> bool:
        """True when connected; False (with ``last_error`` set and logged)
        when the server cannot be reached."""
        try:
            self._client.connect()
        except DatabaseError as e:
            self.last_error = e
            log.error("iadb: %s", e)
            return False
        return True

    def disconnect(self) -> None:
        self._client.disconnect()

    def close(self) -> None:
        self.disconnect()

    def __enter__(self) -> "DatabaseManager":
        self._client.connect()  # raises DatabaseError UNAVAILABLE with the reason
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def initialize(self, apply_schema: bool = True, app_migration_paths: Optional[List[str]] = None) -> _Ready:
        """Connects and, with ``apply_schema``, applies pending migrations on
        the server (its own, plus the app migrations in
        ``app_migration_paths``, sent with the request). True when all went
        well. May be awaited, as in the original."""
        if not self.connect():
            return _Ready(False)
        if apply_schema:
            return _Ready(self._run_migrations(app_migration_paths))
        return _Ready(True)

    def _run_migrations(self, app_migration_paths: Any) -> bool:
        try:
            self._client.migrate("apply", paths=_migration_paths(app_migration_paths))
        except DatabaseError as e:
            self.last_error = e
            log.error("iadb: migrations failed: %s", e)
            return False
        return True

    def migrate(self, action: str = "apply", **kwargs: Any) -> c.MigrateResult:
        return self._client.migrate(action, **kwargs)

    def execute(self, query: str, params: Optional[Sequence[Any]] = None) -> QueryResult:
        """Runs a statement (committed at once); returns its ``QueryResult``
        (the original returned its cursor)."""
        if not self.is_connected:
            raise RuntimeError("Database not connected")
        return self._client.execute_query(query, params)

    def execute_query(self, query: str, params: Optional[Sequence[Any]] = None) -> QueryResult:
        return self._client.execute_query(query, params)

    def fetch_all(self, query: str, params: Optional[Sequence[Any]] = None) -> QueryResult:
        return self._client.fetch_all(query, params)

    def fetch_one(self, query: str, params: Optional[Sequence[Any]] = None) -> QueryResult:
        return self._client.fetch_one(query, params)

    def execute_many(self, query: str, params_list: Sequence[Sequence[Any]]) -> QueryResult:
        return self._client.execute_many(query, params_list)

    def table_exists(self, table_name: str) -> bool:
        return self._client.table_exists(table_name)

    def create_table(self, table_name: str, schema: Any) -> bool:
        return self._client.create_table(table_name, schema)

    def health_check(self) -> bool:
        return self._client.health_check()

    def execute_with_retry(self, query: str, params: Optional[Sequence[Any]] = None, retries: int = 3,
                           **kwargs: Any) -> QueryResult:
        """``execute_query`` retried (``retries`` attempts in all) with
        exponential backoff while the server cannot be reached."""
        return self._client.execute_with_retry(query, params, max_retries=max(0, retries - 1), **kwargs)


class AsyncDatabaseManager(_ManagerBase, DatabaseInterface):
    """The asyncio ``DatabaseManager``: ``async with AsyncDatabaseManager(url) as db:``.
    Same arguments as ``DatabaseManager`` (client options go to ``iadb.Database``)."""

    _client_class = Database

    def __init__(self, database_url: str, server: Optional[str] = None, *, database: str = "",
                 **client_options: Any) -> None:
        _ManagerBase.__init__(self, database_url, server, database=database, **client_options)
        self.connection_string = database_url
        self.db_type = self.config.database_type

    @property  # type: ignore[override]
    def is_connected(self) -> bool:
        return self._client.is_connected

    @is_connected.setter
    def is_connected(self, value: bool) -> None:  # DatabaseInterface.__init__ sets it
        pass

    async def connect(self) -> bool:
        try:
            await self._client.connect()
        except DatabaseError as e:
            self.last_error = e
            log.error("iadb: %s", e)
            return False
        return True

    async def disconnect(self) -> None:
        await self._client.disconnect()

    async def close(self) -> None:
        await self.disconnect()

    async def __aenter__(self) -> "AsyncDatabaseManager":
        await self._client.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.disconnect()

    async def initialize(self, apply_schema: bool = True, app_migration_paths: Optional[List[str]] = None) -> bool:
        if not await self.connect():
            return False
        if apply_schema:
            try:
                await self._client.migrate("apply", paths=_migration_paths(app_migration_paths))
            except DatabaseError as e:
                self.last_error = e
                log.error("iadb: migrations failed: %s", e)
                return False
        return True

    async def migrate(self, action: str = "apply", **kwargs: Any) -> c.MigrateResult:
        return await self._client.migrate(action, **kwargs)

    async def execute(self, query: str, params: Optional[Sequence[Any]] = None) -> QueryResult:
        return await self._client.execute_query(query, params)

    async def execute_query(self, query: str, parameters: Optional[Sequence[Any]] = None) -> QueryResult:
        return await self._client.execute_query(query, parameters)

    async def fetch_all(self, query: str, parameters: Optional[Sequence[Any]] = None) -> QueryResult:
        return await self._client.fetch_all(query, parameters)

    async def fetch_one(self, query: str, parameters: Optional[Sequence[Any]] = None) -> QueryResult:
        return await self._client.fetch_one(query, parameters)

    async def execute_many(self, query: str, params_list: Sequence[Sequence[Any]]) -> QueryResult:
        return await self._client.execute_many(query, params_list)

    async def table_exists(self, table_name: str) -> bool:
        return await self._client.table_exists(table_name)

    async def create_table(self, table_name: str, schema: Any) -> bool:
        return await self._client.create_table(table_name, schema)

    async def health_check(self) -> bool:
        return await self._client.health_check()

    async def execute_with_retry(self, query: str, params: Optional[Sequence[Any]] = None, retries: int = 3,
                                 **kwargs: Any) -> QueryResult:
        return await self._client.execute_with_retry(query, params, max_retries=max(0, retries - 1), **kwargs)


class MigrationRunner:
    """The original ``MigrationRunner``: ``MigrationRunner(db, path, "app")``.

    The server keeps the tracking table and runs the SQL. ``"app"``: the
    ``V{version}__{description}.sql`` (and ``U...`` undo) files of
    ``migration_path`` are sent with the Migrate RPC. ``"system"``: the
    server's own migrations (its configured folder) are applied; a path
    given with it is not sent (the server tracks request files as app
    migrations). ``database``: a ``DatabaseManager``,
    ``AsyncDatabaseManager``, ``iadb.Database`` or ``iadb.SyncDatabase``.
    ``run_pending_migrations()`` returns True or False and may be awaited
    (it must be, for an asyncio database).
    """

    def __init__(self, database: Any, migration_path: Optional[Union[str, Path]] = None,
                 migration_type: str = "app") -> None:
        if migration_type not in ("app", "system"):
            raise ValueError("migration_type must be 'app' or 'system', not %r" % (migration_type,))
        self.database = database
        self.migration_path = Path(migration_path) if migration_path is not None else None
        self.migration_type = migration_type
        self._migrations_table = "ia_migrations"
        self.last_error: Optional[DatabaseError] = None
        self.last_result: Optional[c.MigrateResult] = None

    def _client(self):
        db = self.database
        return db.client if isinstance(db, _ManagerBase) else db

    def _paths(self) -> List[str]:
        if self.migration_type == "app" and self.migration_path is not None:
            return [os.fspath(self.migration_path)]
        if self.migration_path is not None:
            log.warning("iadb: system migrations are the server's own; %s is not sent", self.migration_path)
        return []

    def _call(self, action: str):
        client = self._client()
        result = client.migrate(action, paths=self._paths())
        if asyncio.iscoroutine(result):
            return self._await(result)
        self.last_result = result
        return _Ready(result)

    async def _await(self, coro):
        self.last_result = await coro
        return self.last_result

    def run_pending_migrations(self):
        """Applies the pending migrations; True when all applied."""
        try:
            result = self._call("apply")
        except DatabaseError as e:
            return self._failed(e)
        if isinstance(result, _Ready):
            return _Ready(True)

        async def wait() -> bool:
            try:
                await result
            except DatabaseError as e:
                return self._failed(e).value
            return True

        return wait()

    def _failed(self, e: DatabaseError) -> _Ready:
        self.last_error = e
        log.error("iadb: %s migrations failed: %s", self.migration_type, e)
        return _Ready(False)

    def get_pending_migrations(self):
        """The pending migrations' filenames (a dry run; nothing changes)."""
        result = self._call("plan")

        def names(r: c.MigrateResult) -> List[str]:
            return [m.filename for m in r.pending if self.migration_type == m.migration_type
                    or self.migration_type == "app" and m.migration_type != "system"]

        if isinstance(result, _Ready):
            return _Ready(names(result.value))

        async def wait() -> List[str]:
            return names(await result)

        return wait()
