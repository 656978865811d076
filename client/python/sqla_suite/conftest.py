"""SQLAlchemy's third-party dialect suite (``sqlalchemy.testing.suite``) for
the iadb drivers, set up as SQLAlchemy's README.dialects.rst says: this
conftest loads SQLAlchemy's pytest plugin, ``setup.cfg`` names the
requirement class (``requirements.py``), ``test_suite.py`` imports the
suite's modules. Run from this folder against a running iadb server:

    cd client/python/sqla_suite
    python -m pytest --dburi sqlite+iadb://127.0.0.1:50051/
    python -m pytest --dburi postgresql+iadb://127.0.0.1:50051/pg

``tests/tests/python_sqla_suite.rs`` starts the server (a SQLite default
database and a PostgreSQL one named ``pg``) and runs both.
"""

import pytest
from sqlalchemy.dialects import registry

# The installed package registers these as entry points; registering them
# here too keeps the suite runnable from a source checkout on sys.path.
registry.register("sqlite.iadb", "iadb.sqlalchemy", "SQLiteDialect_iadb")
registry.register("postgresql.iadb", "iadb.sqlalchemy", "PGDialect_iadb")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403

_SAME_AS_PYSQLITE = (
    "fails the same way with SQLAlchemy's own SQLite driver (pysqlite) under this requirement set "
    "(SQLite lists foreign keys and unique constraints in another order; test_metadata reflects "
    "test_schema, an ATTACHed database; a computed column reflects as not persisted)")
_PG_CHAR = ('the server cannot return PostgreSQL\'s internal "char" type (pg_attribute.attgenerated, '
            'pg_constraint.contype ...), which column and constraint reflection read')
_PG_INT2VECTOR = "the server cannot return PostgreSQL's int2vector (pg_index.indkey), which index reflection reads"
_PG_JSON_SPACE = (
    "a value bound to a json (not jsonb) parameter is stored with a leading space (' null'): "
    "the server's encoding of json parameters")

#: Tests skipped on a backend: (backend, class, test or "*", reason). The
#: class is the suite's (without the backend suffix SQLAlchemy adds).
EXCLUDED = [
    ("sqlite", "TrueDivTest", "test_floordiv_numeric",
     "`//` on Numeric compiles to FLOOR(), a math function the server's bundled SQLite lacks"),
    ("sqlite", "ComponentReflectionTest", "test_get_foreign_keys", _SAME_AS_PYSQLITE),
    ("sqlite", "ComponentReflectionTest", "test_get_multi_foreign_keys", _SAME_AS_PYSQLITE),
    ("sqlite", "ComponentReflectionTest", "test_get_multi_unique_constraints", _SAME_AS_PYSQLITE),
    ("sqlite", "ComponentReflectionTest", "test_metadata", _SAME_AS_PYSQLITE),
    ("sqlite", "ComputedReflectionTest", "test_get_column_returns_computed", _SAME_AS_PYSQLITE),
    # PostgreSQL: reflection reads catalog types the server cannot map yet.
    ("postgresql", "BizarroCharacterTest", "*", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_autoincrement_col", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_comments_unicode", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_get_columns", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_get_multi_columns", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_get_unique_constraints", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_metadata", _PG_CHAR),
    ("postgresql", "ComponentReflectionTestExtra", "test_nullable_reflection", _PG_CHAR),
    ("postgresql", "ComponentReflectionTestExtra", "test_numeric_reflection", _PG_CHAR),
    ("postgresql", "ComponentReflectionTestExtra", "test_string_length_reflection", _PG_CHAR),
    ("postgresql", "QuotedNameArgumentTest", "test_get_columns", _PG_CHAR),
    ("postgresql", "TableViaSelectTest", "*", _PG_CHAR),
    ("postgresql", "ComponentReflectionTest", "test_get_indexes", _PG_INT2VECTOR),
    ("postgresql", "ComponentReflectionTest", "test_get_indexes_quoted_name", _PG_INT2VECTOR),
    ("postgresql", "ComponentReflectionTest", "test_get_multi_indexes", _PG_INT2VECTOR),
    ("postgresql", "ComponentReflectionTest", "test_get_noncol_index", _PG_INT2VECTOR),
    ("postgresql", "HasIndexTest", "*", _PG_INT2VECTOR),
    ("postgresql", "LongNameBlowoutTest", "test_long_convention_name", _PG_INT2VECTOR),
    ("postgresql", "QuotedNameArgumentTest", "test_get_indexes", _PG_INT2VECTOR),
    # PostgreSQL: round trips through tables the suite creates again with
    # other types (the server's statement cache; see README.md).
    ("postgresql", "ComponentReflectionTestExtra", "test_server_defaults", _PG_CHAR),
    ("postgresql", "IdentityReflectionTest", "*", _PG_CHAR),
    ("postgresql", "TableDDLTest", "test_create_index_if_not_exists", _PG_INT2VECTOR),
    ("postgresql", "TableDDLTest", "test_drop_index_if_exists", _PG_INT2VECTOR),
    ("postgresql", "FutureTableDDLTest", "test_create_index_if_not_exists", _PG_INT2VECTOR),
    ("postgresql", "FutureTableDDLTest", "test_drop_index_if_exists", _PG_INT2VECTOR),
    ("postgresql", "JSONTest", "test_round_trip_json_null_as_json_null", _PG_JSON_SPACE),
    ("postgresql", "JSONTest", "test_round_trip_none_as_json_null", _PG_JSON_SPACE),
    ("postgresql", "JSONTest", "test_eval_none_flag_orm", _PG_JSON_SPACE),
    ("postgresql", "JSONTest", "test_round_trip_custom_json",
     "the server sends json columns parsed: an engine's json_deserializer is not called"),
]


_sqla_collection_modifyitems = pytest_collection_modifyitems  # noqa: F405 (SQLAlchemy's hook)


def pytest_collection_modifyitems(session, config, items):
    """SQLAlchemy's hook (it makes the per-backend classes), then marks the
    EXCLUDED tests of the backend under test as skipped."""
    from sqlalchemy.testing import config as sa_config

    _sqla_collection_modifyitems(session, config, items)

    backend = sa_config.db.dialect.name
    rules = {(cls, test): why for (b, cls, test, why) in EXCLUDED if b == backend}
    for item in items:
        if item.cls is None:
            continue
        cls = item.cls.__name__.split("_", 1)[0]
        test = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
        why = rules.get((cls, test)) or rules.get((cls, "*"))
        if why:
            item.add_marker(pytest.mark.skip(reason="iadb: " + why))
