"""Batch and Transaction through a live server on PostgreSQL and on
MySQL/MariaDB (`$IADB_TEST_POSTGRES_URL`, `$IADB_TEST_MYSQL_URL`; skipped
without them, failed in CI): commits, rollbacks, a batch's failure and the
engine's code, serializable conflicts, isolation levels and read-only
transactions, as a caller sees them.

Concurrent transactions are interleaved explicitly (events, not timers): each
step of one waits for the step of the other it must follow."""

from __future__ import annotations

import asyncio
import threading
import uuid

import grpc
import pytest

import iadb

#: The engine's code for a duplicate key.
DUPLICATE = {"postgresql": "23505", "mysql": "23000"}
#: The status and code of a write in a read-only transaction.
READ_ONLY_WRITE = {
    "postgresql": (grpc.StatusCode.PERMISSION_DENIED, "25006"),
    "mysql": (grpc.StatusCode.PERMISSION_DENIED, "25006"),
}


class Boom(Exception):
    pass


@pytest.fixture
async def db(engine_server):
    async with iadb.Database(engine_server.address) as d:
        yield d


@pytest.fixture
def sdb(engine_server):
    with iadb.SyncDatabase(engine_server.address) as d:
        yield d


@pytest.fixture
def table(engine_server):
    """`id INTEGER PRIMARY KEY, v INTEGER`, a name no other test (or run)
    uses in the shared database; dropped afterwards."""
    name = "t_pytx_" + uuid.uuid4().hex[:12]
    with iadb.SyncDatabase(engine_server.address) as d:
        d.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)" % name)
        yield name
        d.execute("DROP TABLE IF EXISTS %s" % name)


def insert(table):
    return "INSERT INTO %s (id, v) VALUES (?, ?)" % table


async def rows(db, table):
    """(id, v) of every committed row, by a pooled call."""
    got = await db.fetch_rows("SELECT id, v FROM %s ORDER BY id" % table)
    return [(int(r["id"]), int(r["v"])) for r in got]


# --- commit, rollback, exception ------------------------------------------------


async def test_commit_makes_writes_visible_only_then(db, engine_server, table):
    async with db.transaction() as tx:
        assert tx.engine == engine_server.engine and tx.database == "default"
        assert (await tx.execute(insert(table), [1, 10])).rows_affected == 1
        many = await tx.execute_many(insert(table), [[2, 20], [3, 30]])
        assert many.success and many.rows_affected == 2, many
        updated = await tx.execute("UPDATE %s SET v = v + 1 WHERE id >= ?" % table, [2])
        assert updated.rows_affected == 2
        inside = await tx.fetch_all("SELECT id, v FROM %s ORDER BY id" % table)
        assert [(int(r["id"]), int(r["v"])) for r in inside] == [(1, 10), (2, 21), (3, 31)]
        assert await rows(db, table) == []  # not before the commit
    assert tx.committed is True
    assert await rows(db, table) == [(1, 10), (2, 21), (3, 31)]


async def test_rollback_an_exception_and_a_failed_statement_leave_nothing(db, engine_server, table):
    await db.execute(insert(table), [1, 1])

    async with db.transaction() as tx:
        await tx.execute(insert(table), [2, 2])
        await tx.execute("DELETE FROM %s WHERE id = 1" % table)
        await tx.rollback()
    assert tx.committed is False

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.execute(insert(table), [3, 3])
            assert int((await tx.fetch_one("SELECT COUNT(*) AS c FROM %s" % table))["c"]) == 2
            raise Boom()
    assert tx.committed is False

    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction() as tx:
            await tx.execute(insert(table), [4, 4])
            await tx.execute(insert(table), [1, 1])  # duplicate key
    e = info.value
    assert e.code == grpc.StatusCode.ALREADY_EXISTS, repr(e)
    assert e.sqlstate == DUPLICATE[engine_server.engine], repr(e)
    assert "rolled back" in e.message, repr(e)
    assert tx.committed is False

    assert await rows(db, table) == [(1, 1)]


def test_sync_commit_and_rollback(sdb, table):
    select = "SELECT id, v FROM %s ORDER BY id" % table
    with sdb.transaction() as tx:
        tx.execute(insert(table), [1, 1])
        assert [r["id"] for r in tx.fetch_all(select)] == [1]
        assert sdb.fetch_rows(select) == []
    assert tx.committed is True
    with pytest.raises(Boom):
        with sdb.transaction() as tx:
            tx.execute(insert(table), [2, 2])
            raise Boom()
    with sdb.transaction() as tx:
        tx.execute("DELETE FROM %s" % table)
        tx.rollback()
    assert [(int(r["id"]), int(r["v"])) for r in sdb.fetch_rows(select)] == [(1, 1)]


# --- batch ------------------------------------------------------------------------


async def test_batch_failing_at_statement_2_leaves_nothing_and_carries_the_engine_code(
        db, engine_server, table):
    results = await db.batch([
        (insert(table), [1, 10]),
        (insert(table), [2, 20]),
        "UPDATE %s SET v = v + 1" % table,
        "SELECT id, v FROM %s ORDER BY id" % table,
    ])
    assert [r.rows_affected for r in results[:3]] == [1, 1, 2]
    assert [(int(r["id"]), int(r["v"])) for r in results[3].rows] == [(1, 11), (2, 21)]

    with pytest.raises(iadb.DatabaseError) as info:
        await db.batch([(insert(table), [i, i]) for i in (3, 4, 1, 5, 6)])  # index 2: id 1 again
    e = info.value
    assert e.statement_index == 2 and e.message.startswith("statement 2: "), repr(e)
    assert e.code == grpc.StatusCode.ALREADY_EXISTS, repr(e)
    assert e.sqlstate == DUPLICATE[engine_server.engine], repr(e)
    assert await rows(db, table) == [(1, 11), (2, 21)]

    # A read-only batch reads; a write in one is refused and changes nothing.
    ro = await db.batch(["SELECT COUNT(*) AS c FROM %s" % table], read_only=True)
    assert int(ro[0].rows[0]["c"]) == 2
    with pytest.raises(iadb.DatabaseError) as info:
        await db.batch([(insert(table), [7, 7])], read_only=True)
    code, sqlstate = READ_ONLY_WRITE[engine_server.engine]
    assert info.value.statement_index == 0, repr(info.value)
    assert (info.value.code, info.value.sqlstate) == (code, sqlstate), repr(info.value)
    assert await rows(db, table) == [(1, 11), (2, 21)]


# --- two serializable transactions that conflict ------------------------------------


def check_conflict(engine, outcomes, table_rows):
    """Exactly one of a and b committed and the other was ABORTED with
    40001 (PostgreSQL's serialization failure; MySQL's deadlock 1213 has
    SQLSTATE 40001 too); only the survivor's write is there."""
    aborted = [n for n, o in outcomes.items() if isinstance(o, iadb.DatabaseError)]
    committed = [n for n, o in outcomes.items() if o == "committed"]
    assert (len(aborted), len(committed)) == (1, 1), outcomes
    e = outcomes[aborted[0]]
    assert e.code == grpc.StatusCode.ABORTED and e.sqlstate == "40001", repr(e)
    assert not e.commit_outcome_unknown, repr(e)
    survivor_row = {"a": 1, "b": 2}[committed[0]]
    assert table_rows == [(i, 1 if i == survivor_row else 0) for i in (1, 2)], (outcomes, table_rows)
    if engine == "postgresql":
        # Both writes succeed; the first to commit wins.
        assert committed == ["a"], outcomes


async def test_serializable_read_then_write_conflict_aborts_exactly_one(db, engine_server, table):
    # a and b both read the whole table, then a writes row 1 and b row 2 at
    # the same time (on MySQL the reads took shared locks, so each write
    # waits for the other's lock until the deadlock is detected and one of
    # them is chosen), then a commits, then b.
    await db.execute("INSERT INTO %s (id, v) VALUES (1, 0), (2, 0)" % table)
    total = "SELECT SUM(v) AS t FROM %s" % table
    read = {"a": asyncio.Event(), "b": asyncio.Event()}
    done = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def worker(name, other, row):
        try:
            async with db.transaction(isolation="serializable") as tx:
                assert int((await tx.fetch_one(total))["t"]) == 0
                read[name].set()
                await read[other].wait()
                assert (await tx.execute("UPDATE %s SET v = v + 1 WHERE id = ?" % table, [row])).rows_affected == 1
                if name == "b":
                    await done["a"].wait()  # a commits first
            return "committed"
        except iadb.DatabaseError as e:
            return e
        finally:
            read[name].set()  # (when it failed before: the other goes on, and fails)
            done[name].set()

    a, b = await asyncio.wait_for(asyncio.gather(worker("a", "b", 1), worker("b", "a", 2)), 60)
    check_conflict(engine_server.engine, {"a": a, "b": b}, await rows(db, table))


def test_sync_serializable_conflict_in_two_threads(sdb, engine_server, table):
    sdb.execute("INSERT INTO %s (id, v) VALUES (1, 0), (2, 0)" % table)
    total = "SELECT SUM(v) AS t FROM %s" % table
    read = {"a": threading.Event(), "b": threading.Event()}
    done = {"a": threading.Event(), "b": threading.Event()}
    outcomes = {}

    def worker(name, other, row):
        try:
            with sdb.transaction(isolation=iadb.IsolationLevel.SERIALIZABLE) as tx:
                assert int(tx.fetch_one(total)["t"]) == 0
                read[name].set()
                assert read[other].wait(30), "the other transaction never read"
                tx.execute("UPDATE %s SET v = v + 1 WHERE id = ?" % table, [row])
                if name == "b":
                    assert done["a"].wait(30), "a never ended"
            outcomes[name] = "committed"
        except iadb.DatabaseError as e:
            outcomes[name] = e
        except BaseException as e:  # an assertion: reported below
            outcomes[name] = repr(e)
        finally:
            read[name].set()
            done[name].set()

    threads = [threading.Thread(target=worker, args=args) for args in (("a", "b", 1), ("b", "a", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), outcomes
    got = [(int(r["id"]), int(r["v"])) for r in sdb.fetch_rows("SELECT id, v FROM %s ORDER BY id" % table)]
    check_conflict(engine_server.engine, outcomes, got)


# --- isolation levels -----------------------------------------------------------------


@pytest.mark.parametrize("isolation, sees_the_commit", [
    ("repeatable_read", False),
    ("read_committed", True),
])
async def test_a_concurrent_commit_is_seen_under_read_committed_only(db, table, isolation, sees_the_commit):
    count = "SELECT COUNT(*) AS c FROM %s" % table
    await db.execute(insert(table), [1, 0])
    async with db.transaction(isolation=isolation) as tx:
        assert int((await tx.fetch_one(count))["c"]) == 1
        await db.execute(insert(table), [2, 0])  # committed by a pooled call
        assert int((await db.fetch_row(count))["c"]) == 2
        again = int((await tx.fetch_one(count))["c"])
        assert again == (2 if sees_the_commit else 1), isolation
    assert tx.committed is True


# --- read-only ----------------------------------------------------------------------------


async def test_read_only_transaction_that_writes_fails_and_changes_nothing(db, engine_server, table):
    await db.execute(insert(table), [1, 1])
    with pytest.raises(iadb.DatabaseError) as info:
        async with db.transaction(read_only=True) as tx:
            assert await tx.fetch_all("SELECT id FROM %s" % table) == [{"id": 1}]
            await tx.execute("UPDATE %s SET v = 2" % table)
    e = info.value
    code, sqlstate = READ_ONLY_WRITE[engine_server.engine]
    assert (e.code, e.sqlstate) == (code, sqlstate), repr(e)
    assert "rolled back" in e.message, repr(e)
    assert tx.committed is False and not tx.is_open
    assert await rows(db, table) == [(1, 1)]
    # The pool's connections are writable again.
    await db.execute("UPDATE %s SET v = 3" % table)
    assert await rows(db, table) == [(1, 3)]
