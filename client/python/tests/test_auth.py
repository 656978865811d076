"""The ``token`` option against a server with a tokens file (issue 12):
no token is UNAUTHENTICATED, a read token reads and its writes are
PERMISSION_DENIED with nothing changed, a write token writes."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest

import iadb

from conftest import Server

READ = "iadb_py_read_token_1a2b"
WRITE = "iadb_py_write_token_3c4d"


def _entry(name: str, token: str, scope: str) -> str:
    return '[[token]]\nname = "%s"\nsha256 = "%s"\nscope = "%s"\ndatabases = ["*"]\n' % (
        name, hashlib.sha256(token.encode()).hexdigest(), scope)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    path = os.path.join(str(folder), "tokens.toml")
    with open(path, "w") as f:
        f.write(_entry("py-reader", READ, "read") + _entry("py-writer", WRITE, "write"))
    s = Server(["--tokens-file", path])
    yield s
    s.close()


async def test_async_token_option(token_server, table):
    async with iadb.Database(token_server.address) as anonymous:
        with pytest.raises(iadb.DatabaseError) as err:
            await anonymous.fetch_rows("SELECT 1 AS one")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with iadb.Database(token_server.address, token=WRITE) as writer:
        await writer.execute("CREATE TABLE %s (id INTEGER)" % table)
        await writer.execute("INSERT INTO %s (id) VALUES (?)" % table, [1])
    async with iadb.Database(token_server.address, token=READ) as reader:
        with pytest.raises(iadb.DatabaseError) as err:
            await reader.execute("INSERT INTO %s (id) VALUES (?)" % table, [2])
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "py-reader" in err.value.message
        rows = await reader.fetch_rows("SELECT id FROM %s" % table)
        assert [r["id"] for r in rows] == [1]


def test_sync_token_option(token_server, table):
    with iadb.SyncDatabase(token_server.address, token="iadb_not_a_token") as wrong:
        result = wrong.execute_query("SELECT 1 AS one")
        assert not result.success
        assert "unknown token" in result.error_message
    with iadb.SyncDatabase(token_server.address, token=WRITE) as writer:
        writer.execute("CREATE TABLE %s (id INTEGER)" % table)
        assert writer.table_exists(table)
    with iadb.SyncDatabase(token_server.address, token=READ) as reader:
        with pytest.raises(iadb.DatabaseError) as err:
            reader.execute("DROP TABLE %s" % table)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert reader.table_exists(table)


def test_token_must_be_a_string():
    with pytest.raises(TypeError):
        iadb.SyncDatabase("127.0.0.1:1", token="")
    with pytest.raises(TypeError):
        iadb.Database("127.0.0.1:1", token=42)
