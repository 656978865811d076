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

import datetime as _dt
import types
import uuid as _uuid
from typing import Any, Dict, List, Tuple

from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql as _pg
from sqlalchemy.dialects.postgresql import base as _pg_base
from sqlalchemy.dialects.postgresql import json as _pg_json
from sqlalchemy.dialects.postgresql import types as _pg_types
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.dialects.sqlite import base as _sqlite
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from . import dbapi as _dbapi
from ._values import Json as _Json

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
        # The dialects' own way (COMMIT, then SET SESSION ... ISOLATION
        # LEVEL) is refused by the server, which keeps sessions clean: the
        # level goes with each Transaction the connection begins instead.
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
            return
        dbapi_connection.autocommit = False
        if dbapi_connection.in_transaction:
            dbapi_connection.commit()  # as the dialects' COMMIT did
        if level == "READ UNCOMMITTED" and self.name == "postgresql":
            level = "READ COMMITTED"  # what PostgreSQL runs for it
        dbapi_connection.isolation = level

    def get_isolation_level_values(self, dbapi_connection):
        return list(super().get_isolation_level_values(dbapi_connection)) + ["AUTOCOMMIT"]


def _typed_or_text(parse, typed):
    """A result processor for SQLite's DATE / DATETIME / TIME: the server
    already sends a value typed from a column declared with that name
    (``datetime.date`` ...), and text from other columns, which the
    dialect's own processor ``parse`` reads."""

    def process(value):
        if value is None:
            return None
        if isinstance(value, str):
            return parse(value)
        return typed(value)

    return process


class _SQLiteDate(_sqlite.DATE):
    def result_processor(self, dialect, coltype):
        parse = super().result_processor(dialect, coltype)
        return _typed_or_text(parse, lambda v: v.date() if isinstance(v, _dt.datetime) else v)


class _SQLiteDateTime(_sqlite.DATETIME):
    def result_processor(self, dialect, coltype):
        parse = super().result_processor(dialect, coltype)
        return _typed_or_text(
            parse,
            lambda v: v if isinstance(v, _dt.datetime) or not isinstance(v, _dt.date)
            else _dt.datetime(v.year, v.month, v.day),
        )


class _SQLiteTime(_sqlite.TIME):
    def result_processor(self, dialect, coltype):
        return _typed_or_text(super().result_processor(dialect, coltype), lambda v: v)


class SQLiteDialect_iadb(_IadbDriver, SQLiteDialect):
    supports_statement_cache = True
    # SQLite has no decimal type: NUMERIC columns come back as float, which
    # the dialect turns into Decimal (as with the sqlite3 driver).
    supports_native_decimal = False
    colspecs = {
        **SQLiteDialect.colspecs,
        sqltypes.Date: _SQLiteDate,
        sqltypes.DateTime: _SQLiteDateTime,
        sqltypes.Time: _SQLiteTime,
    }

    @classmethod
    def import_dbapi(cls):
        return _module(sqlite_version_info=SERVER_SQLITE_VERSION)

    def set_isolation_level(self, dbapi_connection, level):
        # SQLite's levels are PRAGMA read_uncommitted; the server's
        # transactions are serializable. Only AUTOCOMMIT switches anything.
        dbapi_connection.autocommit = level == "AUTOCOMMIT"

    def get_isolation_level(self, dbapi_connection):
        return "AUTOCOMMIT" if dbapi_connection.autocommit else "SERIALIZABLE"

    def _get_table_pragma(self, connection, pragma, table_name, schema=None):
        # The dialect runs `PRAGMA main.foreign_key_list("t")` (and
        # table_xinfo, index_list, ...). A PRAGMA statement answers from its
        # connection's cached schema, which on one of the server's pooled
        # connections may predate a table another connection just created:
        # the foreign keys came back empty. The table-valued form is a
        # SELECT, which checks the schema before it runs.
        quote = self.identifier_preparer.quote_identifier
        for name in [schema] if schema is not None else ["main", "temp"]:
            rows = connection.exec_driver_sql(
                "SELECT * FROM %s.pragma_%s(?)" % (quote(name), pragma), (table_name,)).fetchall()
            if rows:
                return rows
        return []

    def _get_server_version_info(self, connection):
        v = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(x) for x in v.split(".")[:3])


class _PGString(sqltypes.String):
    render_bind_cast = True


# Parameters that carry a cast (``?::INTEGER``, ``?::DATE`` ...), as with
# SQLAlchemy's psycopg driver: the server binds each value with the wire
# type it arrived as (an int as bigint), so PostgreSQL needs the cast where
# the statement alone leaves the type open (``? IS NULL``) or a function
# wants another width (``generate_subscripts(indkey, ?::INTEGER)``).
class _PGInteger(sqltypes.Integer):
    render_bind_cast = True


class _PGSmallInteger(sqltypes.SmallInteger):
    render_bind_cast = True


class _PGBigInteger(sqltypes.BigInteger):
    render_bind_cast = True


class _PGDate(sqltypes.Date):
    render_bind_cast = True


class _PGDateTime(sqltypes.DateTime):
    render_bind_cast = True


class _PGTime(sqltypes.Time):
    render_bind_cast = True


class _PGInterval(_pg.INTERVAL):
    render_bind_cast = True


class _PGUuid(_pg_types.PGUuid):
    def result_processor(self, dialect, coltype):
        # The server sends a uuid column as text.
        if self.as_uuid:
            def process(value):
                return value if value is None or isinstance(value, _uuid.UUID) else _uuid.UUID(value)
        else:
            def process(value):
                return value if value is None else str(value)
        return process


def _json_param(dialect):
    """Wraps a JSON value as ``iadb.Json`` (sent with the wire's json kind),
    serialised with the engine's ``json_serializer`` when one was given."""
    serializer = dialect._json_serializer

    def wrap(value):
        if serializer is None:
            return _Json(value)
        param = object.__new__(_Json)
        param.obj, param.text = value, serializer(value)
        return param

    return wrap


class _PGJSON(_pg.JSON):
    def bind_processor(self, dialect):
        return self._make_bind_processor(None, _json_param(dialect))

    def result_processor(self, dialect, coltype):
        # The server sends a json column parsed (dict, list, str, ...).
        return None


class _PGJSONB(_pg.JSONB):
    def bind_processor(self, dialect):
        return self._make_bind_processor(None, _json_param(dialect))

    def result_processor(self, dialect, coltype):
        return None


class _PGJSONIntIndexType(sqltypes.JSON.JSONIntIndexType):
    __visit_name__ = "json_int_index"
    render_bind_cast = True


class _PGJSONStrIndexType(sqltypes.JSON.JSONStrIndexType):
    __visit_name__ = "json_str_index"
    render_bind_cast = True


class _PGJSONPathType(_pg_json.JSONPathType):
    render_bind_cast = True


class _PGRegClass(_pg.REGCLASS):
    render_bind_cast = True


class _PGCompiler_iadb(_pg_base.PGCompiler):
    def render_bind_cast(self, type_, dbapi_type, sqltext):
        # The server binds text to text-like parameters only: a regclass
        # parameter is sent as text and cast by PostgreSQL.
        if isinstance(dbapi_type, _pg.REGCLASS):
            return "%s::TEXT" % sqltext
        if isinstance(dbapi_type, _pg_json.JSONPathType):
            return "%s::TEXT::TEXT[]" % sqltext  # the path is sent as '{a, 1}'
        return super().render_bind_cast(type_, dbapi_type, sqltext)


class PGDialect_iadb(_IadbDriver, PGDialect):
    supports_statement_cache = True
    # Parameters carry a cast (``?::VARCHAR``, ``?::INTEGER`` ...): see above.
    bind_typing = BindTyping.RENDER_CASTS
    statement_compiler = _PGCompiler_iadb
    colspecs = {
        **PGDialect.colspecs,
        sqltypes.String: _PGString,
        sqltypes.Integer: _PGInteger,
        sqltypes.SmallInteger: _PGSmallInteger,
        sqltypes.BigInteger: _PGBigInteger,
        sqltypes.Date: _PGDate,
        sqltypes.DateTime: _PGDateTime,
        sqltypes.Time: _PGTime,
        sqltypes.Interval: _PGInterval,
        _pg.INTERVAL: _PGInterval,
        sqltypes.Uuid: _PGUuid,
        _pg.REGCLASS: _PGRegClass,
        sqltypes.JSON: _PGJSON,
        _pg.JSON: _PGJSON,
        _pg.JSONB: _PGJSONB,
        sqltypes.JSON.JSONIntIndexType: _PGJSONIntIndexType,
        sqltypes.JSON.JSONStrIndexType: _PGJSONStrIndexType,
        sqltypes.JSON.JSONPathType: _PGJSONPathType,
    }

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
