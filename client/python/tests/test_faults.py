"""The client against a fake server that misbehaves on purpose
(`iadb-fake-server`): a result stream cut short is an error, never a short
success; a passed deadline is DEADLINE_EXCEEDED; a write answered
UNAVAILABLE is not sent again (issue 10, cases 2, 7 and 8, client side).

The fake server's commands are in tests/src/fake_server.rs: `truncate N`
ends a stream after N rows without its summary, `hang` never answers,
`unavailable TAG` counts the call and answers UNAVAILABLE, `count METHOD
TAG` (FetchOne) reads a count.
"""

from __future__ import annotations

import time

import grpc
import pytest

import iadb

from conftest import skip_or_fail


async def _count(db, key):
    return (await db.fetch_row("count " + key))["n"]


def _count_sync(db, key):
    return db.fetch_row("count " + key)["n"]


# --- case 2: a stream without its summary ------------------------------------


async def test_stream_without_summary_is_an_error(fake_address):
    async with iadb.Database(fake_address) as db:
        assert len(await db.fetch_rows("rows 250")) == 250  # control

        with pytest.raises(iadb.DatabaseError) as info:
            await db.fetch_rows("truncate 250")
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert "without its summary" in info.value.message
        assert not info.value.retryable

        # iterate(): the rows that arrived, then the error (not the end).
        seen = 0
        with pytest.raises(iadb.DatabaseError) as info:
            async with db.iterate("truncate 250") as rows:
                async for _ in rows:
                    seen += 1
        assert seen == 250 and info.value.code == grpc.StatusCode.INTERNAL

        r = await db.execute_query("truncate 250")
        assert r.success is False
        assert r.error_code == grpc.StatusCode.INTERNAL
        assert r.data == [] and "without its summary" in r.error_message

        r = await db.execute_with_retry("truncate 250")
        assert r.success is False and r.error_code == grpc.StatusCode.INTERNAL

        for sql in ("miscount 3", "batch-first"):
            r = await db.execute_query(sql)
            assert r.success is False and r.error_code == grpc.StatusCode.INTERNAL, (sql, r)


def test_sync_stream_without_summary_is_an_error(fake_address):
    with iadb.SyncDatabase(fake_address) as db:
        assert len(db.fetch_rows("rows 250")) == 250

        with pytest.raises(iadb.DatabaseError) as info:
            db.fetch_rows("truncate 250")
        assert info.value.code == grpc.StatusCode.INTERNAL

        seen = 0
        with pytest.raises(iadb.DatabaseError):
            with db.iterate("truncate 250") as rows:
                for _ in rows:
                    seen += 1
        assert seen == 250

        r = db.execute_query("truncate 250")
        assert r.success is False and r.error_code == grpc.StatusCode.INTERNAL and r.data == []
        for sql in ("miscount 3", "batch-first"):
            r = db.execute_query(sql)
            assert r.success is False and r.error_code == grpc.StatusCode.INTERNAL, (sql, r)


async def test_arrow_stream_without_summary_is_an_error(fake_address):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        skip_or_fail("Arrow", "pyarrow is not installed")
    async with iadb.Database(fake_address) as db:
        t = await db.fetch_arrow("rows 250")  # control: the same frames, complete
        assert t.num_rows == 250 and t.column("i").to_pylist() == list(range(1, 251))
        for sql, what in (("truncate 250", "without its summary"), ("miscount 3", "counts 4 rows but 3"),
                          ("batch-first", "did not start with a header")):
            with pytest.raises(iadb.DatabaseError) as info:
                await db.fetch_arrow(sql)
            assert info.value.code == grpc.StatusCode.INTERNAL and what in info.value.message, (sql, info.value)
    with iadb.SyncDatabase(fake_address) as sdb:
        assert sdb.fetch_arrow("rows 250").num_rows == 250
        with pytest.raises(iadb.DatabaseError) as info:
            sdb.fetch_df("truncate 250")
        assert info.value.code == grpc.StatusCode.INTERNAL and "without its summary" in info.value.message


# --- case 7: the deadline ----------------------------------------------------
# The fake server never answers `hang`: only the client's deadline ends the
# call, so the code is the same every time (no race between two timers).


async def test_passed_deadline_is_deadline_exceeded(fake_address):
    async with iadb.Database(fake_address, timeout=0.2) as db:
        for i in range(10):
            start = time.perf_counter()
            with pytest.raises(iadb.DatabaseError) as info:
                await db.execute("hang")
            took = time.perf_counter() - start
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, (i, info.value)
            assert 0.15 <= took < 5.0, took
        for call in (lambda: db.fetch_row("hang"), lambda: db.fetch_rows("hang"),
                     lambda: db.fetch_rows("header-then-hang")):
            with pytest.raises(iadb.DatabaseError) as info:
                await call()
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        r = await db.execute_query("header-then-hang")
        assert r.success is False and r.error_code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_sync_passed_deadline_is_deadline_exceeded(fake_address):
    with iadb.SyncDatabase(fake_address, timeout=0.2) as db:
        for i in range(10):
            with pytest.raises(iadb.DatabaseError) as info:
                db.execute("hang")
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, (i, info.value)
        with pytest.raises(iadb.DatabaseError) as info:
            db.fetch_rows("header-then-hang")
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# --- case 8: retries are honest about writes ---------------------------------


async def test_unavailable_write_is_not_sent_again(fake_address):
    async with iadb.Database(fake_address) as db:
        # execute_with_retry may run a write: the server's UNAVAILABLE came
        # after the request arrived, so it is not repeated.
        r = await db.execute_with_retry("unavailable py-w1", base_delay=0.01)
        assert r.success is False and r.error_code == grpc.StatusCode.UNAVAILABLE
        assert await _count(db, "FetchAll py-w1") == 1

        # with_retry(write=True): the same.
        with pytest.raises(iadb.DatabaseError) as info:
            await iadb.with_retry(lambda: db.execute("unavailable py-w2"), write=True, base_delay=0.01)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and not info.value.never_sent
        assert await _count(db, "Execute py-w2") == 1

        # Reads are retried: the first attempt and 2 retries.
        with pytest.raises(iadb.DatabaseError):
            await iadb.with_retry(lambda: db.fetch_row("unavailable py-r1"), max_retries=2, base_delay=0.01)
        assert await _count(db, "FetchOne py-r1") == 3
        r = await db.execute_with_retry("unavailable py-r2", idempotent=True, max_retries=2, base_delay=0.01)
        assert r.success is False and r.error_code == grpc.StatusCode.UNAVAILABLE
        assert await _count(db, "FetchAll py-r2") == 3


def test_sync_unavailable_write_is_not_sent_again(fake_address):
    with iadb.SyncDatabase(fake_address) as db:
        r = db.execute_with_retry("unavailable py-sw1", base_delay=0.01)
        assert r.success is False and r.error_code == grpc.StatusCode.UNAVAILABLE
        assert _count_sync(db, "FetchAll py-sw1") == 1
        with pytest.raises(iadb.DatabaseError):
            iadb.with_retry_sync(lambda: db.fetch_row("unavailable py-sr1"), max_retries=2, base_delay=0.01)
        assert _count_sync(db, "FetchOne py-sr1") == 3


def test_never_sent_is_only_a_connection_that_could_not_be_made():
    refused = iadb.DatabaseError(
        grpc.StatusCode.UNAVAILABLE,
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused")
    assert refused.never_sent and refused.retryable_for(write=True)
    engine_down = iadb.DatabaseError(grpc.StatusCode.UNAVAILABLE, "connection to the engine lost")
    assert engine_down.retryable and not engine_down.never_sent
    assert not engine_down.retryable_for(write=True)
    assert not iadb.DatabaseError(grpc.StatusCode.INTERNAL, "failed to connect to all addresses").never_sent
