"""Batch and Transaction against a real server (SQLite, WAL): what a caller
sees of commits, rollbacks, failures and the connection a transaction holds."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import iadb

from conftest import Server


class Boom(Exception):
    pass


async def make_table(db, table):
    await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT UNIQUE)" % table)


async def values(db, table):
    return [r["v"] for r in await db.fetch_rows("SELECT v FROM %s ORDER BY id" % table)]


# --- batch ---------------------------------------------------------------------


async def test_batch_returns_one_result_per_statement(db, table):
    await make_table(db, table)
    results = await db.batch([
        ("INSERT INTO %s (v) VALUES (?)" % table, ["a"]),
        ("INSERT INTO %s (v) VALUES (?), (?)" % table, ["b", "c"]),
        "UPDATE %s SET v = v || '!' WHERE v <> 'a'" % table,
        ("SELECT id, v FROM %s WHERE v LIKE ? ORDER BY id" % table, ["%!"]),
    ])
    assert [r.rows_affected for r in results[:3]] == [1, 2, 2]
    assert results[0].last_insert_id == 1 and results[1].last_insert_id == 3
    assert results[3].columns == ["id", "v"]
    assert results[3].rows == [{"id": 2, "v": "b!"}, {"id": 3, "v": "c!"}]
    assert results[0].rows == [] and results[0].columns == []
    assert await values(db, table) == ["a", "b!", "c!"]


async def test_a_failing_third_statement_of_five_leaves_nothing(db, table):
    await make_table(db, table)
    await db.execute("INSERT INTO %s (v) VALUES ('taken')" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        await db.batch([
            ("INSERT INTO %s (v) VALUES (?)" % table, ["one"]),
            ("UPDATE %s SET v = 'changed' WHERE v = ?" % table, ["taken"]),
            ("INSERT INTO %s (v) VALUES (?)" % table, ["changed"]),  # unique violation
            ("INSERT INTO %s (v) VALUES (?)" % table, ["four"]),
            "DELETE FROM %s" % table,
        ])
    e = info.value
    assert e.statement_index == 2, e
    assert e.message.startswith("statement 2: "), e
    assert e.code == grpc.StatusCode.ALREADY_EXISTS and e.sqlstate, repr(e)
    assert await values(db, table) == ["taken"]


def test_sync_batch_and_its_bad_parameter(sdb, table):
    sdb.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    results = sdb.batch(["INSERT INTO %s (v) VALUES ('x')" % table,
                         ("SELECT count(*) AS n FROM %s" % table,)])
    assert results[1].rows == [{"n": 1}]
    # A bad parameter names its statement, before anything is sent.
    with pytest.raises(TypeError, match="statement 1: "):
        sdb.batch(["SELECT 1", ("SELECT ?", [object()])])
    with pytest.raises(iadb.DatabaseError) as info:
        sdb.batch(["INSERT INTO %s (v) VALUES ('y')" % table, "SELEC 1"])
    assert info.value.statement_index == 1 and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [r["v"] for r in sdb.fetch_rows("SELECT v FROM %s" % table)] == ["x"]


async def test_read_only_batch_refuses_a_write(db, table):
    await make_table(db, table)
    results = await db.batch(["SELECT count(*) AS n FROM %s" % table], read_only=True)
    assert results[0].rows == [{"n": 0}]
    with pytest.raises(iadb.DatabaseError) as info:
        await db.batch(["INSERT INTO %s (v) VALUES ('no')" % table], read_only=True)
    assert info.value.statement_index == 0
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert await values(db, table) == []


async def test_read_only_client_reads_and_the_engine_refuses_its_writes(db, server, table):
    await make_table(db, table)
    await db.execute("INSERT INTO %s (v) VALUES ('kept')" % table)
    async with iadb.Database(server.address, read_only=True) as ro:
        assert [r["v"] for r in await ro.fetch_rows("SELECT v FROM %s" % table)] == ["kept"]
        for sql in ["INSERT INTO %s (v) VALUES ('no')" % table, "DELETE FROM %s" % table,
                    "DROP TABLE %s" % table]:
            with pytest.raises(iadb.DatabaseError) as info:
                await ro.execute(sql)
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED, sql
        result = await ro.execute_query("INSERT INTO %s (v) VALUES ('no') RETURNING id" % table)
        assert not result.success
    with iadb.SyncDatabase(server.address, read_only=True) as sro:
        with pytest.raises(iadb.DatabaseError) as info:
            sro.execute("UPDATE %s SET v = 'changed'" % table)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert await values(db, table) == ["kept"]


async def test_begin_inside_a_batch_is_refused(db):
    with pytest.raises(iadb.DatabaseError) as info:
        await db.batch(["SELECT 1", "BEGIN"])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.statement_index == 1


# --- transaction: commit, rollback, exceptions -------------------------------


async def test_commit_makes_every_write_visible(db, server, table):
    await make_table(db, table)
    async with iadb.Database(server.address) as other:
        async with db.transaction() as tx:
            assert tx.is_open and tx.engine == "sqlite" and tx.database == "default"
            r = await tx.execute("INSERT INTO %s (v) VALUES (?)" % table, ["a"])
            assert r.rows_affected == 1 and r.last_insert_id == 1
            many = await tx.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [["b"], ["c"]])
            assert many.success and many.rows_affected == 2
            q = await tx.execute_query("UPDATE %s SET v = upper(v) WHERE v <> 'a'" % table)
            assert q.success and q.rows_affected == 2
            assert await values(other, table) == []  # not yet
        assert tx.committed is True and not tx.is_open
        assert await values(other, table) == ["a", "B", "C"]


async def test_rollback_and_an_exception_leave_nothing(db, table):
    await make_table(db, table)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO %s (v) VALUES ('rolled')" % table)
        await tx.rollback()
        assert tx.committed is False
        with pytest.raises(RuntimeError, match="ended"):
            await tx.execute("SELECT 1")
    assert await values(db, table) == []

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('raised')" % table)
            assert await tx.fetch_one("SELECT count(*) AS n FROM %s" % table) == {"n": 1}
            raise Boom()
    assert tx.committed is False
    assert await values(db, table) == []


async def test_fetch_sees_its_own_writes_and_another_connection_does_not(db, server, table):
    await make_table(db, table)
    await db.execute("INSERT INTO %s (v) VALUES ('before')" % table)
    async with iadb.Database(server.address) as other:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('mine')" % table)
            rows = await tx.fetch_all("SELECT v FROM %s ORDER BY id" % table)
            assert [r["v"] for r in rows] == ["before", "mine"]
            assert await tx.fetch_one("SELECT v FROM %s WHERE v = ?" % table, ["mine"]) == {"v": "mine"}
            assert await tx.fetch_one("SELECT v FROM %s WHERE v = ?" % table, ["nobody"]) is None
            q = await tx.execute_query("SELECT count(*) AS n FROM %s" % table)
            assert q.success and q.data == [{"n": 2}] and q.columns == ["n"]
            assert await values(other, table) == ["before"]
            await tx.rollback()
        assert await values(other, table) == ["before"]


async def test_a_failed_statement_rolls_back_and_ends_the_transaction(db, table):
    await make_table(db, table)
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('x')" % table)
            await tx.execute("INSERT INTO %s (v) VALUES ('x')" % table)
    e = info.value
    assert e.code == grpc.StatusCode.ALREADY_EXISTS and "rolled back" in e.message, repr(e)
    assert tx.committed is False
    # Every later request raises the error that ended it.
    with pytest.raises(iadb.DatabaseError) as again:
        await tx.execute("SELECT 1")
    assert again.value is e
    assert await values(db, table) == []


async def test_a_result_style_failure_is_raised_when_the_block_ends(db, table):
    await make_table(db, table)
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('kept?')" % table)
            r = await tx.execute_query("SELEC 1")
            assert not r.success and r.error_code == grpc.StatusCode.INVALID_ARGUMENT
            many = await tx.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [["z"]])
            assert not many.success and many.error_code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert await values(db, table) == []


async def test_begin_as_sql_inside_is_refused_and_rolls_back(db, table):
    await make_table(db, table)
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('gone')" % table)
            await tx.execute("BEGIN")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "BEGIN" in info.value.message.upper()
    assert await values(db, table) == []
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute("COMMIT")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_read_only_transaction_that_writes_fails_and_changes_nothing(db, table):
    await make_table(db, table)
    await db.execute("INSERT INTO %s (v) VALUES ('old')" % table)
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction(read_only=True) as tx:
            assert await tx.fetch_all("SELECT v FROM %s" % table) == [{"v": "old"}]
            await tx.execute("UPDATE %s SET v = 'new'" % table)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED and "rolled back" in info.value.message
    assert await values(db, table) == ["old"]
    # The connection is writable again for the next caller.
    await db.execute("UPDATE %s SET v = 'new'" % table)
    assert await values(db, table) == ["new"]


async def test_isolation_levels_and_immediate(db, table):
    await make_table(db, table)
    for level in ("serializable", iadb.IsolationLevel.SERIALIZABLE, "SERIALIZABLE", None):
        async with db.transaction(isolation=level) as tx:
            await tx.execute("INSERT INTO %s (v) VALUES (?)" % table, [str(level)])
    async with db.transaction(immediate=True) as tx:
        await tx.execute("INSERT INTO %s (v) VALUES ('immediate')" % table)
    assert len(await values(db, table)) == 5
    # SQLite has no read committed: the server says which levels it has.
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction(isolation="read_committed"):
            pass
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "serializable" in info.value.message.lower()
    # An unknown name is refused before anything is sent.
    with pytest.raises(ValueError, match="read_committed"):
        db.transaction(isolation="chaos")
    with pytest.raises(TypeError):
        db.transaction(read_only="yes")


async def test_rows_stream_inside_a_transaction(db):
    n = 5000
    sql = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
           "SELECT i FROM s")
    async with db.transaction() as tx:
        total = 0
        async with tx.iterate(sql, [n]) as rows:
            async for row in rows:
                total += row["i"]
        assert total == n * (n + 1) // 2 and rows.row_count == n
        # Left after 3 rows: the transaction's next request reads and
        # discards the rest, and the stream says so.
        partial = tx.iterate(sql, [n])
        first = [await partial.__anext__() for _ in range(3)]
        assert [r["i"] for r in first] == [1, 2, 3]
        assert await tx.fetch_one("SELECT 42 AS x") == {"x": 42}
        with pytest.raises(RuntimeError, match="discarded"):
            await partial.__anext__()


async def test_calls_from_several_tasks_are_answered_in_turn(db, table):
    await make_table(db, table)
    async with db.transaction() as tx:
        await asyncio.gather(*[
            tx.execute("INSERT INTO %s (v) VALUES (?)" % table, ["v%d" % i]) for i in range(10)
        ])
    assert sorted(await values(db, table)) == sorted("v%d" % i for i in range(10))


# --- sync ----------------------------------------------------------------------


def test_sync_transaction_commit_rollback_and_exception(sdb, server, table):
    sdb.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)" % table)
    select = "SELECT v FROM %s ORDER BY id" % table
    with iadb.SyncDatabase(server.address) as other:
        with sdb.transaction(isolation="serializable") as tx:
            tx.execute("INSERT INTO %s (v) VALUES (?)" % table, ["a"])
            assert tx.execute_many("INSERT INTO %s (v) VALUES (?)" % table, [["b"]]).rows_affected == 1
            assert [r["v"] for r in tx.fetch_all(select)] == ["a", "b"]
            assert [r["v"] for r in tx.iterate(select)] == ["a", "b"]
            assert other.fetch_rows(select) == []
        assert tx.committed is True
        assert [r["v"] for r in other.fetch_rows(select)] == ["a", "b"]

        with pytest.raises(Boom):
            with sdb.transaction() as tx:
                tx.execute("DELETE FROM %s" % table)
                assert tx.fetch_one("SELECT count(*) AS n FROM %s" % table) == {"n": 0}
                raise Boom()
        with sdb.transaction() as tx:
            tx.execute("DELETE FROM %s" % table)
            tx.rollback()
        with pytest.raises(iadb.DatabaseError) as info:
            with sdb.transaction() as tx:
                tx.execute("DELETE FROM %s" % table)
                tx.execute("ROLLBACK")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert [r["v"] for r in other.fetch_rows(select)] == ["a", "b"]


# --- the connection a transaction holds ---------------------------------------


@pytest.fixture
def small_pool_server():
    """A server whose pool has 2 connections and whose callers wait at most
    2 s for one: a transaction that kept its connection would starve the
    next ones within a few iterations."""
    s = Server(["--pool-max", "2", "--pool-timeout-secs", "2"])
    yield s
    s.close()


async def pool_when_idle(db):
    """The server's figures of the first database's pool once every
    connection is idle, or after 10 s. A connection goes back to the pool
    just after its call (or its transaction's last answer, or its error)
    was answered: the driver returns it in a task of its own, which a busy
    machine may run a little later."""
    for _ in range(200):
        pool = (await db.health()).databases[0]
        if pool.pool_size == pool.pool_idle:
            break
        await asyncio.sleep(0.05)
    return pool


async def test_twenty_transactions_of_every_ending_free_their_connection(small_pool_server, table):
    async with iadb.Database(small_pool_server.address, timeout=30) as db:
        await make_table(db, table)
        for i in range(20):
            how = i % 4
            try:
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO %s (v) VALUES (?)" % table, ["v%d" % i])
                    if how == 1:
                        await tx.rollback()
                    elif how == 2:
                        raise Boom()
                    elif how == 3:
                        await tx.execute("INSERT INTO %s (v) VALUES (?)" % table, ["v%d" % i])
            except (Boom, iadb.DatabaseError) as e:
                assert how in (2, 3), e
        assert await values(db, table) == ["v%d" % i for i in range(0, 20, 4)]
        # Every connection is back in the pool (the server's own figures).
        pool = await pool_when_idle(db)
        assert pool.pool_max == 2 and pool.pool_idle == pool.pool_size, pool


async def test_a_transaction_holds_one_connection_until_it_ends(small_pool_server):
    async with iadb.Database(small_pool_server.address, timeout=30) as db:
        await db.fetch_rows("SELECT 1")
        before = await pool_when_idle(db)
        assert before.pool_size == before.pool_idle, before
        async with db.transaction() as tx:
            await tx.execute("SELECT 1")
            during = (await db.health()).databases[0]
            assert during.pool_size - during.pool_idle == 1, (before, during)
        after = await pool_when_idle(db)
        assert after.pool_size == after.pool_idle, after


# --- idle timeout ---------------------------------------------------------------


@pytest.fixture
def idle_server():
    s = Server(["--transaction-idle-timeout-secs", "1"])
    yield s
    s.close()


async def test_an_idle_transaction_is_aborted_and_rolled_back(idle_server, table):
    async with iadb.Database(idle_server.address) as db:
        await make_table(db, table)
        with pytest.raises(iadb.DatabaseError) as info:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO %s (v) VALUES ('idle')" % table)
                await asyncio.sleep(3)  # three times the idle timeout
                await tx.execute("INSERT INTO %s (v) VALUES ('late')" % table)
        e = info.value
        assert e.code == grpc.StatusCode.ABORTED, repr(e)
        assert "idle" in e.message and "rolled back" in e.message
        assert tx.committed is False
        assert await values(db, table) == []
        # A transaction that does not idle is unaffected.
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO %s (v) VALUES ('quick')" % table)
        assert await values(db, table) == ["quick"]


def test_sync_idle_transaction_is_aborted(idle_server, table):
    with iadb.SyncDatabase(idle_server.address) as db:
        db.execute("CREATE TABLE %s (v TEXT)" % table)
        with pytest.raises(iadb.DatabaseError) as info:
            with db.transaction() as tx:
                tx.execute("INSERT INTO %s (v) VALUES ('idle')" % table)
                time.sleep(3)
        # The block ended normally: its commit finds the transaction gone.
        assert info.value.code == grpc.StatusCode.ABORTED, repr(info.value)
        assert not info.value.commit_outcome_unknown
        assert db.fetch_rows("SELECT v FROM %s" % table) == []


# --- the protocol, below the client ----------------------------------------------


def test_a_commit_followed_at_once_by_a_half_close_is_committed_and_says_so(fresh_server, table):
    # A half-close right after the commit is a normal gRPC client's way to
    # say "nothing more": the commit must run to its end and be answered.
    # (It once cut the commit off, reported CANCELLED for transactions that
    # were applied, and left pooled connections inside a transaction.)
    server = fresh_server
    import queue

    from iadb._proto import database_pb2 as pb
    from iadb._proto import database_pb2_grpc as pb_grpc

    rounds = 50
    with iadb.SyncDatabase(server.address) as db:
        db.execute("CREATE TABLE %s (v INTEGER)" % table)
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DatabaseStub(channel)
        answers = []
        for i in range(rounds):
            requests = queue.Queue()
            call = stub.Transaction(iter(requests.get, None))
            requests.put(pb.TransactionRequest(begin=pb.BeginTransaction()))
            next(call)
            requests.put(pb.TransactionRequest(execute=pb.Statement(
                sql="INSERT INTO %s (v) VALUES (%d)" % (table, i))))
            next(call)
            requests.put(pb.TransactionRequest(commit=pb.CommitTransaction()))
            requests.put(None)  # nothing more to send: half-close
            try:
                answers.append([r.WhichOneof("response") for r in call])
            except grpc.RpcError as e:
                answers.append("%s: %s" % (e.code().name, e.details()))
        channel.close()
        committed = db.fetch_row("SELECT count(*) AS n FROM %s" % table)["n"]
    told_committed = sum(1 for a in answers if a == ["ended"])
    # What the server answered is what happened, and every commit is kept.
    assert (told_committed, committed) == (rounds, rounds), [a for a in answers if a != ["ended"]][:3]
