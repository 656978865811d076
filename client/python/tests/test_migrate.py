"""migrate(): every action of the Migrate RPC, through the async and the
blocking client, on a server of its own (migrations are per database)."""

from __future__ import annotations

import grpc
import pytest

import iadb


def folder(tmp_path, files):
    path = tmp_path / "migrations"
    path.mkdir(exist_ok=True)
    for name, sql in files.items():
        (path / name).write_text(sql, encoding="utf-8")
    return path


FILES = {
    "V001__people.sql": "CREATE TABLE mig_people (id INTEGER PRIMARY KEY, name TEXT);",
    "U001__people.sql": "DROP TABLE mig_people;",
    "V002__pets.sql": "CREATE TABLE mig_pets (id INTEGER PRIMARY KEY, owner INTEGER);",
    "U002__pets.sql": "DROP TABLE mig_pets;",
    "README.txt": "not a migration: ignored",
}


def app(result):
    return {m.filename: m.state for m in result.migrations if m.migration_type == "app"}


async def test_every_action(fresh_server, tmp_path):
    path = folder(tmp_path, FILES)
    async with iadb.Database(fresh_server.address) as db:
        status = await db.migrate("status", paths=[path])
        assert isinstance(status, iadb.MigrateResult)
        assert app(status) == {"V001__people.sql": "pending", "V002__pets.sql": "pending"}
        assert any(m.migration_type == "system" and m.state == "applied" for m in status.migrations)

        plan = await db.migrate("plan", paths=[path])
        assert [m.filename for m in plan.pending if m.migration_type == "app"] == [
            "V001__people.sql", "V002__pets.sql"]
        assert "CREATE TABLE mig_people" in [m.sql for m in plan.pending if m.filename == "V001__people.sql"][0]
        assert await db.table_exists("mig_people") is False  # a dry run

        applied = await db.migrate("apply", paths=[path], target_version="1")
        assert applied.changed == ["V001__people.sql"]
        assert await db.table_exists("mig_people") and not await db.table_exists("mig_pets")
        applied = await db.migrate("apply", paths=[path])
        assert applied.changed == ["V002__pets.sql"]
        assert app(applied) == {"V001__people.sql": "applied", "V002__pets.sql": "applied"}
        assert all(m.checksum_ok and m.applied_at for m in applied.applied if m.migration_type == "app")
        assert (await db.migrate("apply", paths=[path])).changed == []

        valid = await db.migrate("validate", paths=[path])
        assert app(valid) == {"V001__people.sql": "applied", "V002__pets.sql": "applied"}

        rolled = await db.migrate("rollback", paths=[path], target_version="1")
        assert rolled.changed == ["V002__pets.sql"] or rolled.changed == ["U002__pets.sql"]
        assert await db.table_exists("mig_people") and not await db.table_exists("mig_pets")
        assert app(await db.migrate("status", paths=[path]))["V002__pets.sql"] == "pending"

        # A changed file: validate refuses it, repair realigns its checksum.
        (path / "V001__people.sql").write_text(FILES["V001__people.sql"] + "\n-- reformatted\n")
        with pytest.raises(iadb.DatabaseError) as info:
            await db.migrate("validate", paths=[path])
        assert "checksum" in info.value.message.lower()
        repaired = await db.migrate("repair", paths=[path])
        assert "V001__people.sql" in repaired.changed
        await db.migrate("validate", paths=[path])

        # Baseline marks migrations applied without running them.
        (path / "V003__later.sql").write_text("CREATE TABLE mig_never_run (x INTEGER);")
        (path / "V004__later.sql").write_text("CREATE TABLE mig_run (x INTEGER);")
        base = await db.migrate("baseline", paths=[path], target_version="3")
        assert "V003__later.sql" in base.changed
        assert app(base)["V003__later.sql"] == "applied"
        assert not await db.table_exists("mig_never_run")
        # files= sends migrations without a folder.
        done = await db.migrate("apply", files={name: (path / name).read_text() for name in
                                                ("V001__people.sql", "V002__pets.sql", "V003__later.sql",
                                                 "V004__later.sql")})
        assert done.changed == ["V002__pets.sql", "V004__later.sql"] or "V004__later.sql" in done.changed
        assert await db.table_exists("mig_run")


def test_sync_migrate_and_errors(fresh_server, tmp_path):
    path = folder(tmp_path, {"V001__bad.sql": "CREATE TABLE mig_bad ("})
    with iadb.SyncDatabase(fresh_server.address) as db:
        with pytest.raises(iadb.DatabaseError) as info:
            db.migrate("apply", paths=[path])
        assert info.value.code != grpc.StatusCode.OK and "V001__bad.sql" in info.value.message
        assert db.migrate("status").migrations  # the system migrations
        with pytest.raises(ValueError, match="action must be one of"):
            db.migrate("explode")
        with pytest.raises(FileNotFoundError):
            db.migrate("apply", paths=[tmp_path / "nowhere"])
