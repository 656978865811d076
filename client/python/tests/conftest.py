"""Fixtures: a real iadb server process (SQLite in a temp folder, or the
PostgreSQL and MySQL/MariaDB databases named by `$IADB_TEST_POSTGRES_URL` and
`$IADB_TEST_MYSQL_URL`) and clients.

The server binary is `$IADB_SERVER_BIN`, or else `iadb-test-server` (or
`iadb-server`) under `$CARGO_TARGET_DIR/debug` or the repository's
`target/debug`. Build it with
`cargo build -p iadb-tests --no-default-features --bin iadb-test-server`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import iadb

REPO = Path(__file__).resolve().parents[3]


def server_binary() -> Path:
    explicit = os.environ.get("IADB_SERVER_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            pytest.fail("IADB_SERVER_BIN=%s does not exist" % explicit, pytrace=False)
        return path
    targets = []
    if os.environ.get("CARGO_TARGET_DIR"):
        targets.append(Path(os.environ["CARGO_TARGET_DIR"]))
    targets.append(REPO / "target")
    suffix = ".exe" if sys.platform == "win32" else ""
    for target in targets:
        for name in ("iadb-test-server", "iadb-server"):
            path = target / "debug" / (name + suffix)
            if path.is_file():
                return path
    pytest.fail(
        "no iadb server binary: set IADB_SERVER_BIN, or build one with "
        "`cargo build -p iadb-tests --no-default-features --bin iadb-test-server` "
        "(looked in %s)" % ", ".join(str(t / "debug") for t in targets),
        pytrace=False,
    )


class Server:
    """One `iadb-server --listen 127.0.0.1:0` process on `database_url`, by
    default a SQLite file in a temp folder of its own."""

    def __init__(self, extra_args=(), database_url=None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="iadb-py-")
        folder = self.dir.name
        if database_url is None:
            database_url = "sqlite:///%s/py.db" % folder
        self.log_path = os.path.join(folder, "server.log")
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env["RUST_LOG"] = "warn"
        args = [
            str(server_binary()),
            "--listen", "127.0.0.1:0",
            "--database-url", database_url,
            *extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=log
            )
        line = self.proc.stdout.readline().decode().strip()
        prefix = "iadb-server listening on "
        if not line.startswith(prefix):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("server did not start: %r\n%s" % (line, self.log()))
        self.address = line[len(prefix):]

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def close(self) -> None:
        self.stop()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def server():
    """The shared server: `default` plus a second database named `other`."""
    folder = tempfile.mkdtemp(prefix="iadb-py-other-")
    s = Server(["--database", "other=sqlite:///%s/other.db" % folder])
    yield s
    s.close()


@pytest.fixture
def fresh_server():
    """A server of its own, for tests that stop it."""
    s = Server()
    yield s
    s.close()


@pytest.fixture
async def db(server):
    async with iadb.Database(server.address) as d:
        yield d


@pytest.fixture
def sdb(server):
    with iadb.SyncDatabase(server.address) as d:
        yield d


@pytest.fixture
def table():
    """A table name no other test uses."""
    return "t_" + uuid.uuid4().hex[:12]


def in_ci() -> bool:
    """`CI` is set to anything but "", "false" or "0" (the Rust harness'
    rule)."""
    return os.environ.get("CI", "") not in ("", "false", "0")


def skip_or_fail(what: str, why: str) -> None:
    """Skips with `why`, or fails in CI, where nothing may be skipped."""
    if in_ci():
        pytest.fail("%s: %s (CI=true: nothing may be skipped)" % (what, why), pytrace=False)
    pytest.skip("%s: %s" % (what, why))


#: The servers engines are tested through, by the variable naming their URL.
ENGINE_URLS = {
    "postgresql": "IADB_TEST_POSTGRES_URL",
    "mysql": "IADB_TEST_MYSQL_URL",
}


@pytest.fixture(scope="module", params=sorted(ENGINE_URLS))
def engine_server(request):
    """A server whose default database is PostgreSQL
    (`$IADB_TEST_POSTGRES_URL`) or MySQL/MariaDB (`$IADB_TEST_MYSQL_URL`),
    one per engine and test module. Those databases are shared: tests use
    tables of their own and drop them. `server.engine` names the engine.
    Without the URL the test is skipped, or fails in CI."""
    variable = ENGINE_URLS[request.param]
    url = os.environ.get(variable)
    if not url:
        skip_or_fail("%s server" % request.param, "%s is not set" % variable)
    s = Server(database_url=url)
    s.engine = request.param
    yield s
    s.close()


@pytest.fixture(scope="module")
def pg_server():
    """A server whose default database is `$IADB_TEST_POSTGRES_URL` (one
    per test module); skipped without it, failed in CI."""
    url = os.environ.get("IADB_TEST_POSTGRES_URL")
    if not url:
        skip_or_fail("postgresql server", "IADB_TEST_POSTGRES_URL is not set")
    s = Server(database_url=url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def fake_address():
    """`IADB_FAKE_ADDR`: the fake server that misbehaves on purpose
    (`iadb-fake-server`, started by tests/tests/python_client.rs)."""
    address = os.environ.get("IADB_FAKE_ADDR")
    if not address:
        pytest.skip("IADB_FAKE_ADDR is not set (run through `cargo test --test python_client`)")
    return address
