"""The retry helpers: exponential backoff on UNAVAILABLE, nothing else."""

from __future__ import annotations

import asyncio
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
        await iadb.with_retry(lambda: db.fetch_rows("SELECT 1"), max_retries=1, base_delay=0.01)
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


# --- transactions: a commit whose outcome is unknown is never retried --------

from iadb._proto import database_pb2 as pb  # noqa: E402
from iadb._proto import database_pb2_grpc as pb_grpc  # noqa: E402


class FakeTransactions(pb_grpc.DatabaseServicer):
    """Answers Transaction streams as told: `fail_at` maps an attempt
    number (1-based) to the request ("execute" or "commit") that it answers
    with UNAVAILABLE, as a server whose engine connection dropped would."""

    def __init__(self, fail_at):
        self.fail_at = fail_at
        self.begins = 0
        self.commits = 0

    async def Transaction(self, request_iterator, context):
        attempt = 0
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "begin":
                self.begins += 1
                attempt = self.begins
                yield pb.TransactionResponse(begun=pb.TransactionBegun(database="default", engine="fake"))
                continue
            if self.fail_at.get(attempt) == kind:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "engine connection lost")
            if kind == "execute":
                yield pb.TransactionResponse(executed=pb.ExecuteResponse(rows_affected=1))
            elif kind == "commit":
                self.commits += 1
                yield pb.TransactionResponse(ended=pb.TransactionEnded(committed=True))
                return


@pytest.fixture
async def fake_tx_server():
    servers = []

    async def start(fail_at):
        server = grpc.aio.server()
        fake = FakeTransactions(fail_at)
        pb_grpc.add_DatabaseServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return fake, "127.0.0.1:%d" % port

    yield start
    for server in servers:
        await server.stop(None)


async def transfer(db):
    async with db.transaction() as tx:
        await tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    return "done"


async def test_with_retry_never_repeats_a_commit_whose_outcome_is_unknown(fake_tx_server):
    fake, address = await fake_tx_server({1: "commit"})
    async with iadb.Database(address) as db:
        with pytest.raises(iadb.DatabaseError) as info:
            await iadb.with_retry(lambda: transfer(db), base_delay=0.01)
    e = info.value
    assert e.code == grpc.StatusCode.UNAVAILABLE and e.commit_outcome_unknown, repr(e)
    assert not e.retryable and not e.never_sent and not e.retryable_for(False)
    assert "outcome is unknown" in e.message
    assert fake.begins == 1


async def test_with_retry_repeats_a_transaction_that_failed_before_its_commit(fake_tx_server):
    # UNAVAILABLE on a statement: the server rolled the transaction back,
    # so running it again is safe, and the second attempt commits.
    fake, address = await fake_tx_server({1: "execute"})
    async with iadb.Database(address) as db:
        assert await iadb.with_retry(lambda: transfer(db), base_delay=0.01) == "done"
    assert fake.begins == 2 and fake.commits == 1


async def test_sync_with_retry_never_repeats_an_unknown_commit(fake_tx_server):
    fake, address = await fake_tx_server({1: "commit", 2: "commit"})

    def sync_transfer(db):
        with db.transaction() as tx:
            tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")

    def run():
        with iadb.SyncDatabase(address) as db:
            with pytest.raises(iadb.DatabaseError) as info:
                iadb.with_retry_sync(lambda: sync_transfer(db), base_delay=0.01)
            return info.value

    # The fake server runs on this loop; the blocking client in a thread.
    e = await asyncio.get_running_loop().run_in_executor(None, run)
    assert e.commit_outcome_unknown and e.code == grpc.StatusCode.UNAVAILABLE, repr(e)
    assert fake.begins == 1
