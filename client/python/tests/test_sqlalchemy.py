"""SQLAlchemy 2 through iadb: `sqlite+iadb://`, `postgresql+iadb://`,
`mysql+iadb://` found by create_engine (entry points), Core and ORM use,
reflection, and pandas.read_sql on an engine."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from conftest import skip_or_fail

try:
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
except ImportError:  # pragma: no cover
    sa = None


@pytest.fixture(autouse=True)
def _need_sqlalchemy():
    if sa is None:
        skip_or_fail("SQLAlchemy", "sqlalchemy is not installed (pip install sqlalchemy)")


def engine_for(scheme, server):
    return sa.create_engine("%s+iadb://%s/" % (scheme, server.address))


def exercise(engine, table):
    meta = sa.MetaData()
    t = sa.Table(table, meta,
                 sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("name", sa.String(40), nullable=False),
                 sa.Column("amount", sa.Numeric(10, 2)),
                 sa.Column("born", sa.Date))
    meta.create_all(engine)
    try:
        with engine.begin() as conn:
            r = conn.execute(t.insert(), [
                {"id": 1, "name": "Ada", "amount": Decimal("1.50"), "born": dt.date(1815, 12, 10)},
                {"id": 2, "name": "Grace", "amount": None, "born": None},
            ])
            assert r.rowcount == 2
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.name, t.c.amount).where(t.c.id > sa.bindparam("low"))
                                .order_by(t.c.id), {"low": 0}).all()
            assert [tuple(r) for r in rows] == [(1, "Ada", Decimal("1.50")), (2, "Grace", None)]
            assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 2
            conn.execute(t.update().where(t.c.id == 1).values(name="Ada L."))
            conn.rollback()
            assert conn.execute(sa.select(t.c.name).where(t.c.id == 1)).scalar() == "Ada"
        insp = sa.inspect(engine)
        assert table in insp.get_table_names()
        if engine.dialect.name != "postgresql":
            # PostgreSQL's column reflection reads catalog columns of type
            # "char", which the server cannot map to a value (yet).
            assert [c["name"] for c in insp.get_columns(table)] == ["id", "name", "amount", "born"]

        class Base(DeclarativeBase):
            pass

        class Person(Base):
            __tablename__ = table
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(sa.String(40))

        with Session(engine) as session:
            session.add(Person(id=3, name="Linus"))
            session.commit()
            assert [p.name for p in session.scalars(sa.select(Person).order_by(Person.id))] == [
                "Ada", "Grace", "Linus"]
        try:
            import pandas as pd
        except ImportError:
            skip_or_fail("pandas.read_sql", "pandas is not installed")
        df = pd.read_sql(sa.select(t.c.id, t.c.name).order_by(t.c.id), engine)
        assert list(df["name"]) == ["Ada", "Grace", "Linus"]
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_sqlite_through_iadb(server, table):
    exercise(engine_for("sqlite", server), table)


def test_postgres_and_mysql_through_iadb(engine_server, table):
    exercise(engine_for(engine_server.engine, engine_server), table)


def test_url_options_and_errors(server):
    engine = sa.create_engine("sqlite+iadb://%s/?autocommit=true" % server.address)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 41 + 1").scalar() == 42
        with pytest.raises(sa.exc.ProgrammingError):
            conn.exec_driver_sql("SELECT * FROM no_such_table_sa")
    engine.dispose()


def test_isolation_level_through_iadb(engine_server):
    """`isolation_level` goes with each transaction (the dialects' own
    COMMIT + SET SESSION is refused by the server)."""
    engine = sa.create_engine("%s+iadb://%s/" % (engine_server.engine, engine_server.address),
                              isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn:
            if engine_server.engine == "postgresql":
                assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
            assert conn.exec_driver_sql("SELECT 41 + 1").scalar() == 42
        with engine.connect().execution_options(isolation_level="SERIALIZABLE") as conn:
            if engine_server.engine == "postgresql":
                assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "serializable"
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
