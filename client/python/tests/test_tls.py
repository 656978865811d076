"""TLS and mTLS with ``credentials=grpc.ssl_channel_credentials(...)``
(issue 12): a server started with ``--tls-cert``/``--tls-key`` (and
``--tls-client-ca``) serves a client that trusts its CA (and presents a
client certificate), not one that does not. The certificates are made by
tests/tests/python_client.rs (rcgen) in ``$IADB_TEST_TLS_DIR``."""

from __future__ import annotations

import os

import grpc
import pytest

import iadb

from conftest import Server, skip_or_fail


def _tls_dir() -> str:
    folder = os.environ.get("IADB_TEST_TLS_DIR")
    if not folder:
        skip_or_fail("python TLS", "IADB_TEST_TLS_DIR is not set (run through `cargo test --test python_client`)")
    return folder


def _read(folder: str, name: str) -> bytes:
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def mtls_server():
    folder = _tls_dir()
    s = Server([
        "--tls-cert", os.path.join(folder, "good-server.pem"),
        "--tls-key", os.path.join(folder, "good-server-key.pem"),
        "--tls-client-ca", os.path.join(folder, "good-ca.pem"),
    ])
    yield s
    s.close()


def _credentials(folder: str, client: bool) -> grpc.ChannelCredentials:
    if client:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(folder, "good-ca.pem"),
            private_key=_read(folder, "good-client-key.pem"),
            certificate_chain=_read(folder, "good-client.pem"),
        )
    return grpc.ssl_channel_credentials(root_certificates=_read(folder, "good-ca.pem"))


async def test_async_mtls(mtls_server):
    folder = _tls_dir()
    async with iadb.Database(mtls_server.address, credentials=_credentials(folder, True)) as db:
        assert await db.fetch_rows("SELECT 1 AS one") == [{"one": 1}]


def test_sync_mtls_and_refusals(mtls_server):
    folder = _tls_dir()
    with iadb.SyncDatabase(mtls_server.address, credentials=_credentials(folder, True)) as db:
        assert db.fetch_row("SELECT 2 AS two") == {"two": 2}
    # Without a client certificate, or in clear text: not served.
    for credentials in (_credentials(folder, False), None):
        db = iadb.SyncDatabase(mtls_server.address, credentials=credentials, connect_timeout=2.0, timeout=5.0)
        with pytest.raises(iadb.DatabaseError):
            db.connect()
            db.fetch_row("SELECT 1 AS one")
        db.disconnect()
