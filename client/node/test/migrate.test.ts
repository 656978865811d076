/**
 * `migrate`: every action of the Migrate RPC, on a server of our own
 * (`IADB_SERVER_BIN`; migrations are per database). Skipped without it.
 */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { IadbClient, IadbError, Status, type MigrateResult } from "../src/index";
import { needsServerBin, rejectsWith, startServer, type OwnServer } from "./helpers";

const FILES: Record<string, string> = {
  "V001__people.sql": "CREATE TABLE mig_people (id INTEGER PRIMARY KEY, name TEXT);",
  "U001__people.sql": "DROP TABLE mig_people;",
  "V002__pets.sql": "CREATE TABLE mig_pets (id INTEGER PRIMARY KEY, owner INTEGER);",
  "U002__pets.sql": "DROP TABLE mig_pets;",
  "README.txt": "not a migration: ignored",
};

let server: OwnServer;
let db: IadbClient;
let dir: string;

function app(result: MigrateResult): Record<string, string> {
  return Object.fromEntries(result.migrations.filter((m) => m.migrationType === "app").map((m) => [m.filename, m.state]));
}

before(async () => {
  if (needsServerBin) {
    return;
  }
  server = await startServer();
  db = await IadbClient.connect(server.address);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-migrate-"));
  for (const [name, sql] of Object.entries(FILES)) {
    fs.writeFileSync(path.join(dir, name), sql);
  }
});

after(async () => {
  if (needsServerBin) {
    return;
  }
  db.close();
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("every action of the Migrate RPC", { skip: needsServerBin }, async () => {
  const paths = [dir];
  const status = await db.migrate("status", { paths });
  assert.deepEqual(app(status), { "V001__people.sql": "pending", "V002__pets.sql": "pending" });
  assert.ok(status.migrations.some((m) => m.migrationType === "system" && m.state === "applied"));

  const plan = await db.migrate("plan", { paths });
  const planned = plan.pending.filter((m) => m.migrationType === "app");
  assert.deepEqual(
    planned.map((m) => m.filename),
    ["V001__people.sql", "V002__pets.sql"],
  );
  assert.match(planned[0].sql, /CREATE TABLE mig_people/);
  assert.equal(await db.tableExists("mig_people"), false); // a dry run

  let applied = await db.migrate("apply", { paths, targetVersion: "1" });
  assert.deepEqual(applied.changed, ["V001__people.sql"]);
  assert.equal(await db.tableExists("mig_people"), true);
  assert.equal(await db.tableExists("mig_pets"), false);
  applied = await db.migrate("apply", { paths });
  assert.deepEqual(applied.changed, ["V002__pets.sql"]);
  assert.deepEqual(app(applied), { "V001__people.sql": "applied", "V002__pets.sql": "applied" });
  for (const m of applied.applied.filter((x) => x.migrationType === "app")) {
    assert.ok(m.checksumOk && m.appliedAt !== "", JSON.stringify(m));
  }
  assert.deepEqual((await db.migrate("apply", { paths })).changed, []);

  assert.deepEqual(app(await db.migrate("validate", { paths })), {
    "V001__people.sql": "applied",
    "V002__pets.sql": "applied",
  });

  const rolled = await db.migrate("rollback", { paths, targetVersion: "1" });
  assert.equal(rolled.changed.length, 1, JSON.stringify(rolled.changed));
  assert.match(rolled.changed[0], /^[VU]002__pets\.sql$/);
  assert.equal(await db.tableExists("mig_people"), true);
  assert.equal(await db.tableExists("mig_pets"), false);
  assert.equal(app(await db.migrate("status", { paths }))["V002__pets.sql"], "pending");

  // A changed file: validate refuses it, repair realigns its checksum.
  fs.appendFileSync(path.join(dir, "V001__people.sql"), "\n-- reformatted\n");
  const e = await rejectsWith(db.migrate("validate", { paths }), Status.FAILED_PRECONDITION);
  assert.match(e.details.toLowerCase(), /checksum/);
  const repaired = await db.migrate("repair", { paths });
  assert.ok(repaired.changed.includes("V001__people.sql"), JSON.stringify(repaired.changed));
  await db.migrate("validate", { paths });

  // Baseline marks migrations applied without running them.
  fs.writeFileSync(path.join(dir, "V003__later.sql"), "CREATE TABLE mig_never_run (x INTEGER);");
  fs.writeFileSync(path.join(dir, "V004__later.sql"), "CREATE TABLE mig_run (x INTEGER);");
  const base = await db.migrate("baseline", { paths, targetVersion: "3" });
  assert.ok(base.changed.includes("V003__later.sql"), JSON.stringify(base.changed));
  assert.equal(app(base)["V003__later.sql"], "applied");
  assert.equal(await db.tableExists("mig_never_run"), false);

  // `files` sends migrations without a folder, in each of its shapes.
  const read = (name: string) => fs.readFileSync(path.join(dir, name), "utf8");
  const names = ["V001__people.sql", "V002__pets.sql", "V003__later.sql", "V004__later.sql"];
  const done = await db.migrate("apply", { files: Object.fromEntries(names.map((n) => [n, read(n)])) });
  assert.deepEqual(done.changed, ["V004__later.sql"]);
  const again = await db.migrate("status", {
    files: [
      ["V001__people.sql", read("V001__people.sql")],
      { filename: "V002__pets.sql", content: read("V002__pets.sql") },
      ["V003__later.sql", read("V003__later.sql")],
      ["V004__later.sql", read("V004__later.sql")],
    ],
  });
  assert.deepEqual(app(again), Object.fromEntries(names.map((n) => [n, "applied"])));
  assert.equal(await db.tableExists("mig_run"), true);
});

test("a failing migration, and what is refused before any call", { skip: needsServerBin }, async () => {
  const bad = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-migrate-bad-"));
  try {
    fs.writeFileSync(path.join(bad, "V001__bad.sql"), "CREATE TABLE mig_bad (");
    const fresh = await startServer();
    const client = await IadbClient.connect(fresh.address);
    try {
      let caught: unknown;
      try {
        await client.migrate("apply", { paths: bad });
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof IadbError, String(caught));
      assert.match(caught.message, /V001__bad\.sql/);
      assert.ok((await client.migrate("status")).migrations.length > 0); // the system migrations
      await assert.rejects(client.migrate("explode" as "apply"), /action must be one of/);
      await assert.rejects(client.migrate("apply", { paths: path.join(bad, "nowhere") }), { code: "ENOENT" });
      await assert.rejects(client.migrate("apply", { files: [["V9__x.sql"]] as never }), TypeError);
    } finally {
      client.close();
      await fresh.stop();
    }
  } finally {
    fs.rmSync(bad, { recursive: true, force: true });
  }
});
