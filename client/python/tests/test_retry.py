"""The retry helpers: exponential backoff on UNAVAILABLE, nothing else."""

from __future__ import annotations

import time

import grpc
import pytest

import iadb


def unavailable():
    return iadb.DatabaseError(grpc.StatusCode.UNAVAILABLE, "engine down")


async def test_with_retry_recovers_after_unavailable():
    calls = []

    async def flaky():
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise unavailable()
        return "ok"

    assert await iadb.with_retry(flaky, base_delay=0.05, max_delay=1.0) == "ok"
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 50 ms, then 100 ms


async def test_with_retry_gives_up_and_does_not_retry_other_errors():
    calls = []

    async def down():
        calls.append(1)
        raise unavailable()

    with pytest.raises(iadb.DatabaseError) as info:
        await iadb.with_retry(down, max_retries=2, base_delay=0.01)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and len(calls) == 3

    calls.clear()

    async def bad():
        calls.append(1)
        raise iadb.DatabaseError(grpc.StatusCode.INVALID_ARGUMENT, "syntax")

    with pytest.raises(iadb.DatabaseError):
        await iadb.with_retry(bad, base_delay=0.01)
    assert len(calls) == 1


def test_with_retry_sync():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise unavailable()
        return 5

    assert iadb.with_retry_sync(flaky, base_delay=0.01) == 5 and len(calls) == 2


async def test_execute_with_retry_against_a_stopped_server(fresh_server):
    db = iadb.Database(fresh_server.address)
    await db.connect()
    assert (await db.execute_with_retry("SELECT 1 AS one")).data == [{"one": 1}]
    fresh_server.stop()

    attempts = []
    original = db._run_query

    async def counting(request, start):
        attempts.append(time.perf_counter())
        return await original(request, start)

    # Refused connections: the request never left, so even a possible write
    # is retried.
    db._run_query = counting
    start = time.perf_counter()
    r = await db.execute_with_retry("SELECT 1", max_retries=3, base_delay=0.05, max_delay=1.0)
    elapsed = time.perf_counter() - start
    assert not r.success
    assert r.error_code == grpc.StatusCode.UNAVAILABLE
    assert r.error_message
    assert len(attempts) == 4  # the first try and 3 retries
    # Backoff 50 + 100 + 200 ms at least; bounded well below the 10 s we allow.
    assert 0.34 <= elapsed < 10.0, elapsed

    # The typed API raises UNAVAILABLE, also through with_retry.
    with pytest.raises(iadb.DatabaseError) as info:
        await iadb.with_retry(lambda: db.fetch_all("SELECT 1"), max_retries=1, base_delay=0.01)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.retryable
    await db.disconnect()


def test_sync_execute_with_retry_against_a_stopped_server(fresh_server):
    with iadb.SyncDatabase(fresh_server.address) as db:
        assert db.execute_query("SELECT 1").success
        fresh_server.stop()
        start = time.perf_counter()
        r = db.execute_with_retry("SELECT 1", max_retries=2, base_delay=0.05)
        assert not r.success and r.error_code == grpc.StatusCode.UNAVAILABLE
        assert 0.14 <= time.perf_counter() - start < 10.0
