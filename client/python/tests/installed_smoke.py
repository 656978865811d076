"""A first session with the installed package, as a user has it.

Run by ``tests/tests/python_package.rs`` with the python of a clean venv into
which only the built wheel (and the dependencies pip chose for it) was
installed: ``python installed_smoke.py HOST:PORT``. Not a pytest module (its
name does not start with ``test_``). Prints one line starting with ``ok``.
"""

from __future__ import annotations

import os
import sys

import grpc
from google import protobuf

import iadb
import iadb.dbapi


def main(address: str) -> None:
    # The package comes from the venv, not from a checkout on sys.path.
    here = os.path.realpath(iadb.__file__)
    assert here.startswith(os.path.realpath(sys.prefix)), "iadb imported from %s, not the venv %s" % (
        here, sys.prefix)

    # The original API: a QueryResult from fetch_all.
    with iadb.DatabaseManager("sqlite:///./app.db", address) as db:
        created = db.execute_query("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        assert created.success, created.error_message
        inserted = db.execute_many("INSERT INTO people (name, score) VALUES (?, ?)",
                                   [("Ada", 9.5), ("Grace", 8.0)])
        assert inserted.success and inserted.row_count == 2, inserted
        result = db.fetch_all("SELECT name, score FROM people WHERE score > ? ORDER BY id", (5,))
        assert isinstance(result, iadb.QueryResult), type(result)
        assert result.success and result.row_count == 2 and len(result) == 2, result
        assert result.get_first_row() == {"name": "Ada", "score": 9.5}, result.get_first_row()
        assert result.get_column_values("name") == ["Ada", "Grace"]
        assert db.table_exists("people") is True

    # DB-API 2.0: a cursor, qmark parameters, a transaction.
    conn = iadb.dbapi.connect(address)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO people (name, score) VALUES (?, ?)", ("Linus", 7.0))
        assert cur.rowcount == 1 and cur.lastrowid == 3, (cur.rowcount, cur.lastrowid)
        conn.commit()
        cur.execute("SELECT id, name FROM people WHERE score < ? ORDER BY id", (9,))
        assert [d[0] for d in cur.description] == ["id", "name"], cur.description
        assert cur.fetchall() == [(2, "Grace"), (3, "Linus")]
        cur.close()
    finally:
        conn.close()

    print("ok iadb from %s; grpcio %s, protobuf %s, python %s" % (
        os.path.dirname(here), grpc.__version__, protobuf.__version__, sys.version.split()[0]))


if __name__ == "__main__":
    main(sys.argv[1])
