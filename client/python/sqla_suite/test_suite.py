"""SQLAlchemy's dialect suite, whole: ``sqlalchemy.testing.suite`` (results,
selects, inserts, updates and deletes, types, rowcount, the dialect, DDL,
reflection, CTEs, sequences, unicode DDL, CREATE TABLE AS). What does not
apply is skipped by ``requirements.py`` and by the list in ``conftest.py``,
each with its reason (README.md, "SQLAlchemy's dialect suite")."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
