"""Bounded-staleness reads (``max_staleness_ms``): what the requests carry,
and that a server without replicas answers them on its primary. Routing to
a real standby is tested on a real cluster by tests/tests/replicas.rs."""

from __future__ import annotations

import pytest

import iadb
from iadb import _common as c
from iadb._proto import database_pb2 as pb


def test_reads_carry_the_bound_and_writes_do_not():
    one = c.fetch_one_request("", "SELECT 1", None, False, 250)
    assert one.options.consistency == pb.READ_CONSISTENCY_BOUNDED_STALENESS
    assert one.options.max_staleness_ms == 250
    assert not one.options.read_only
    every = c.fetch_all_request("", "SELECT 1", None, True, 0)
    assert every.options.consistency == pb.READ_CONSISTENCY_BOUNDED_STALENESS
    assert every.options.max_staleness_ms == 0
    assert every.options.read_only
    # Without a bound: strong (the proto's default), as before.
    assert not c.fetch_one_request("", "SELECT 1", None).HasField("options")
    assert not c.execute_request("", "SELECT 1", None).HasField("options")


def test_a_read_only_begin_carries_the_bound():
    ro = c.begin_request("", None, True, False, 300).begin
    assert ro.consistency == pb.READ_CONSISTENCY_BOUNDED_STALENESS
    assert ro.max_staleness_ms == 300
    rw = c.begin_request("", None, False, False, 300).begin
    assert rw.consistency == pb.READ_CONSISTENCY_UNSPECIFIED


def test_a_bad_bound_is_refused_before_anything_is_sent():
    with pytest.raises(TypeError):
        iadb.SyncDatabase("127.0.0.1:1", max_staleness_ms="500")
    with pytest.raises(TypeError):
        iadb.Database("127.0.0.1:1", max_staleness_ms=0.5)
    with pytest.raises(ValueError):
        iadb.SyncDatabase("127.0.0.1:1", max_staleness_ms=-1)


def test_bounded_reads_without_replicas_run_on_the_primary(server, table):
    with iadb.SyncDatabase(server.address) as writer:
        writer.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY)" % table)
        writer.execute("INSERT INTO %s (id) VALUES (7)" % table)
    with iadb.SyncDatabase(server.address, max_staleness_ms=500) as db:
        assert db.fetch_row("SELECT id FROM %s" % table) == {"id": 7}
        assert db.fetch_rows("SELECT id FROM %s" % table) == [{"id": 7}]
        # Its writes run as ever.
        db.execute("INSERT INTO %s (id) VALUES (8)" % table)
        assert db.fetch_one("SELECT count(*) AS n FROM %s" % table).data == [{"n": 2}]


async def test_async_bounded_reads(server, table):
    async with iadb.Database(server.address, max_staleness_ms=1000) as db:
        await db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY)" % table)
        await db.execute("INSERT INTO %s (id) VALUES (1)" % table)
        assert await db.fetch_row("SELECT id FROM %s" % table) == {"id": 1}
