"""SQLAlchemy 2 drivers over iadb, under SQLAlchemy's own dialects:

    sqlite+iadb://HOST:PORT/DATABASE
    postgresql+iadb://HOST:PORT/DATABASE
    mysql+iadb://HOST:PORT/DATABASE       (also mariadb+iadb://)

HOST:PORT is the iadb server; DATABASE is one of its databases (empty: its
default). Query options go to ``iadb.dbapi.connect`` (``?token=...``,
``?autocommit=true``). The drivers are registered as entry points
(``sqlalchemy.dialects``), so ``create_engine`` finds them once the
package is installed.
"""

from __future__ import annotations

import types
from typing import Any, Dict, List, Tuple

from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from . import dbapi as _dbapi

# The SQLite built into the server (rusqlite's bundled copy) is recent; the
# SQLite dialect asks the DB-API module for its version.
SERVER_SQLITE_VERSION = (3, 45, 0)


def _module(**extra: Any) -> types.ModuleType:
    """``iadb.dbapi`` with the attributes a dialect asks of its driver module."""
    mod = types.ModuleType("iadb.dbapi")
    mod.__dict__.update({k: v for k, v in vars(_dbapi).items() if not k.startswith("__")})
    mod.__dict__.update(extra)
    return mod


class _IadbDriver:
    driver = "iadb"
    default_paramstyle = "qmark"
    supports_statement_cache = True
    supports_server_side_cursors = False
    supports_native_decimal = True

    def create_connect_args(self, url) -> Tuple[List[Any], Dict[str, Any]]:
        host = url.host or "127.0.0.1"
        port = url.port or 50051
        kwargs: Dict[str, Any] = {"server": "%s:%s" % (host, port), "database": url.database or ""}
        for key, value in url.query.items():
            if key == "autocommit":
                kwargs["autocommit"] = str(value).lower() in ("1", "true", "yes", "on")
            elif key in ("timeout", "connect_timeout"):
                kwargs[key] = float(value)
            else:
                kwargs[key] = value
        return [], kwargs

    def do_ping(self, dbapi_connection) -> bool:
        cur = dbapi_connection.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()
        return True

    def is_disconnect(self, e, connection, cursor) -> bool:
        return isinstance(e, _dbapi.OperationalError) and getattr(e, "code", None) is not None and \
            e.code.name == "UNAVAILABLE"

    def set_isolation_level(self, dbapi_connection, level):
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
        else:
            dbapi_connection.autocommit = False
            super().set_isolation_level(dbapi_connection, level)

    def get_isolation_level_values(self, dbapi_connection):
        return list(super().get_isolation_level_values(dbapi_connection)) + ["AUTOCOMMIT"]


class SQLiteDialect_iadb(_IadbDriver, SQLiteDialect):
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls):
        return _module(sqlite_version_info=SERVER_SQLITE_VERSION)

    def set_isolation_level(self, dbapi_connection, level):
        # SQLite's levels are PRAGMA read_uncommitted; the server's
        # transactions are serializable. Only AUTOCOMMIT switches anything.
        dbapi_connection.autocommit = level == "AUTOCOMMIT"

    def get_isolation_level(self, dbapi_connection):
        return "AUTOCOMMIT" if dbapi_connection.autocommit else "SERIALIZABLE"

    def _get_server_version_info(self, connection):
        v = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(x) for x in v.split(".")[:3])


class _PGString(sqltypes.String):
    render_bind_cast = True


class PGDialect_iadb(_IadbDriver, PGDialect):
    supports_statement_cache = True
    # Text parameters carry a cast (``?::VARCHAR``): the server binds text
    # only to text-like types, and the catalog's "char" columns need it.
    bind_typing = BindTyping.RENDER_CASTS
    colspecs = {**PGDialect.colspecs, sqltypes.String: _PGString}

    @classmethod
    def import_dbapi(cls):
        return _module()

    def _get_server_version_info(self, connection):
        v = connection.exec_driver_sql("SHOW server_version_num").scalar()
        n = int(v)
        return (n // 10000, (n // 100) % 100 if n < 100000 else 0, n % 100)


class MySQLDialect_iadb(_IadbDriver, MySQLDialect):
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls):
        return _module()

    def _detect_charset(self, connection):
        return "utf8mb4"

    # The server reports MySQL's SQLSTATE, the dialect asks for its error
    # number: the ones it tests for.
    _CODES = {"42S02": 1146, "42S22": 1054, "23000": 1062, "42000": 1064}

    def _extract_error_code(self, exception):
        return self._CODES.get(getattr(exception, "sqlstate", None) or "")


dialect = SQLiteDialect_iadb
