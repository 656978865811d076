/**
 * Arrow results (`fetchArrow`, an apache-arrow `Table`) against a live
 * server: `IADB_ADDR` (SQLite default database, as client.test.ts), and a
 * server of its own on PostgreSQL (`IADB_SERVER_BIN` and
 * `IADB_TEST_POSTGRES_URL`; skipped without them, failed when `CI` is set).
 *
 * What a caller sees: each engine's column types (docs/arrow.md), values
 * equal to the row path's, a result of many record batches, an empty result
 * that keeps its columns, an error after some rows that rejects (never a
 * short table), and Arrow fetches inside a transaction.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as readline from "node:readline";
import { Table } from "apache-arrow";
import { IadbClient, IadbError, Status } from "../src/index";
import { SERVER_BIN, rejectsWith } from "./helpers";

const ADDRESS = process.env.IADB_ADDR || "127.0.0.1:50051";
const RUN = `${process.pid}_${Date.now()}`;
const CI = !["", "false", "0"].includes(process.env.CI ?? "");

/** 50,000 rows: the server sends them in many record batches. */
const MANY =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 50000) " +
  "SELECT x, 'row ' || x AS label, x * 0.5 AS half, CASE WHEN x % 7 = 0 THEN NULL ELSE x % 3 END AS maybe FROM c";

const types = (t: Table) => t.schema.fields.map((f) => String(f.type));

/** The rows of a table as plain objects (Arrow's own values). */
const plain = (t: Table) => t.toArray().map((r) => ({ ...r.toJSON() }));

describe("fetchArrow on SQLite", () => {
  let db: IadbClient;
  const created: string[] = [];
  const table = (base: string) => {
    const name = `node_arrow_${base}_${RUN}`;
    created.push(name);
    return name;
  };

  before(async () => {
    db = await IadbClient.connect(ADDRESS);
  });

  after(async () => {
    for (const name of created) {
      await db.execute(`DROP TABLE IF EXISTS ${name}`);
    }
    db.close();
  });

  test("types and values", async () => {
    const t = table("types");
    await db.execute(`CREATE TABLE ${t} (i INTEGER, f REAL, s TEXT, b BOOLEAN, y BLOB, d DATE)`);
    await db.executeMany(`INSERT INTO ${t} VALUES (?, ?, ?, ?, ?, ?)`, [
      [1, 1.5, "Ada", true, Buffer.from([0, 1, 255]), "2024-02-29"],
      [-(2n ** 63n), -0.25, "", false, Buffer.alloc(0), "1970-01-01"],
      [null, null, null, null, null, null],
    ]);
    const result = await db.fetchArrow(`SELECT i, f, s, b, y, d FROM ${t} ORDER BY rowid`);
    assert.ok(result instanceof Table);
    assert.deepEqual(
      result.schema.fields.map((f) => f.name),
      ["i", "f", "s", "b", "y", "d"],
    );
    assert.deepEqual(types(result), ["Int64", "Float64", "Utf8", "Bool", "Binary", "Date32<DAY>"]);
    assert.equal(result.numRows, 3);
    assert.deepEqual(result.getChild("i")!.toArray().length, 3);
    assert.deepEqual([...result.getChild("i")!], [1n, -(2n ** 63n), null]);
    assert.deepEqual([...result.getChild("f")!], [1.5, -0.25, null]);
    assert.deepEqual([...result.getChild("s")!], ["Ada", "", null]);
    assert.deepEqual([...result.getChild("b")!], [true, false, null]);
    const y = [...result.getChild("y")!];
    assert.deepEqual(Buffer.from(y[0] as Uint8Array), Buffer.from([0, 1, 255]));
    assert.equal((y[1] as Uint8Array).length, 0);
    assert.equal(y[2], null);
    const d = [...result.getChild("d")!].map((v) => (v === null ? null : new Date(v as number | Date).toISOString().slice(0, 10)));
    assert.deepEqual(d, ["2024-02-29", "1970-01-01", null]);
  });

  test("many record batches hold the row path's values", async () => {
    const t = await db.fetchArrow(MANY);
    assert.equal(t.numRows, 50_000);
    assert.ok(t.batches.length > 1, `expected several record batches, got ${t.batches.length}`);
    const rows = await db.fetchAll(MANY).toArray();
    const got = plain(t).map((r) => ({ ...r, x: Number(r.x), maybe: r.maybe === null ? null : Number(r.maybe) }));
    assert.deepEqual(got, rows);
  });

  test("an empty result keeps its columns", async () => {
    const t = table("empty");
    await db.execute(`CREATE TABLE ${t} (i INTEGER, s TEXT, f REAL)`);
    const result = await db.fetchArrow(`SELECT i, s, f FROM ${t}`);
    assert.equal(result.numRows, 0);
    assert.deepEqual(
      result.schema.fields.map((f) => f.name),
      ["i", "s", "f"],
    );
    assert.deepEqual(types(result), ["Int64", "Utf8", "Float64"]);
  });

  test("parameters; errors reject", async () => {
    const r = await db.fetchArrow("SELECT ? AS a, ? AS b", [7, "x"]);
    assert.deepEqual(plain(r), [{ a: 7n, b: "x" }]);
    await rejectsWith(db.fetchArrow("SELEC 1"), Status.INVALID_ARGUMENT);
    await assert.rejects(db.fetchArrow("SELECT ?", [{} as never]), TypeError);
  });

  test("an error after some rows rejects, never a short table", async () => {
    const t = table("midway");
    await db.execute(`CREATE TABLE ${t} (x INTEGER)`);
    await db.executeMany(
      `INSERT INTO ${t} (x) VALUES (?)`,
      Array.from({ length: 5000 }, (_, i) => [i + 1]),
    );
    const e = await rejectsWith(
      db.fetchArrow(`SELECT CASE WHEN x = 4000 THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM ${t}`),
      Status.INVALID_ARGUMENT,
    );
    assert.match(e.details.toLowerCase(), /overflow/);
    assert.deepEqual(plain(await db.fetchArrow("SELECT 1 AS one")), [{ one: 1n }]);
  });

  test("in a transaction, between other requests", async () => {
    const t = table("tx");
    await db.execute(`CREATE TABLE ${t} (id INTEGER PRIMARY KEY, v TEXT)`);
    const n = await db.transaction(async (tx) => {
      await tx.execute(`INSERT INTO ${t} (id, v) VALUES (1, 'one'), (2, 'two')`);
      const r = await tx.fetchArrow(`SELECT id, v FROM ${t} ORDER BY id`);
      assert.deepEqual(plain(r), [
        { id: 1n, v: "one" },
        { id: 2n, v: "two" },
      ]);
      assert.deepEqual(await tx.fetchOne(`SELECT count(*) AS n FROM ${t}`), { n: 2 });
      const big = await tx.fetchArrow(MANY);
      assert.equal(big.numRows, 50_000);
      assert.equal((await db.fetchArrow(`SELECT id FROM ${t}`)).numRows, 0);
      return big.numRows;
    });
    assert.equal(n, 50_000);
    assert.equal((await db.fetchArrow(`SELECT id FROM ${t}`)).numRows, 2);
  });

  test("an error in a transaction's Arrow fetch ends the transaction", async () => {
    const t = table("txerr");
    await db.execute(`CREATE TABLE ${t} (x INTEGER)`);
    await db.executeMany(
      `INSERT INTO ${t} (x) VALUES (?)`,
      Array.from({ length: 3000 }, (_, i) => [i + 1]),
    );
    const e = await rejectsWith(
      db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${t} (x) VALUES (0)`);
        await tx.fetchArrow(`SELECT CASE WHEN x = 2500 THEN abs(-9223372036854775807 - 1) ELSE x END AS v FROM ${t}`);
      }),
      Status.INVALID_ARGUMENT,
    );
    assert.ok(e instanceof IadbError);
    assert.deepEqual(await db.fetchOne(`SELECT count(*) AS n FROM ${t}`), { n: 3000 });
  });
});

const PG_URL = process.env.IADB_TEST_POSTGRES_URL;
const pgSkip = !SERVER_BIN ? "IADB_SERVER_BIN is not set" : !PG_URL ? "IADB_TEST_POSTGRES_URL is not set" : undefined;

if (pgSkip !== undefined && CI) {
  test("fetchArrow on PostgreSQL", () => {
    assert.fail(`${pgSkip} (CI=true: nothing may be skipped)`);
  });
} else {
  describe("fetchArrow on PostgreSQL", { skip: pgSkip ?? false, timeout: 120_000 }, () => {
    let child: ChildProcess;
    let db: IadbClient;
    const name = `node_arrow_pg_${RUN}`;

    before(async () => {
      const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "warn" };
      delete env.DATABASE_URL;
      child = spawn(SERVER_BIN as string, ["--listen", "127.0.0.1:0", "--database-url", PG_URL as string], {
        env,
        stdio: ["ignore", "pipe", "inherit"],
      });
      const lines = readline.createInterface({ input: child.stdout! });
      const prefix = "iadb-server listening on ";
      const address = await new Promise<string>((resolve, reject) => {
        lines.once("line", (line) => (line.startsWith(prefix) ? resolve(line.slice(prefix.length)) : reject(new Error(line))));
        child.once("exit", (code) => reject(new Error(`server exited (${code})`)));
      });
      lines.close();
      db = await IadbClient.connect(address);
    });

    after(async () => {
      await db.execute(`DROP TABLE IF EXISTS ${name}`);
      db.close();
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    });

    test("types and values", async () => {
      await db.execute(
        `CREATE TABLE ${name} (k SERIAL, i BIGINT, f DOUBLE PRECISION, s TEXT, b BOOLEAN, y BYTEA, d DATE, ` +
          `ts TIMESTAMP, tz TIMESTAMPTZ, n NUMERIC)`,
      );
      await db.executeMany(`INSERT INTO ${name} (i, f, s, b, y, d, ts, tz, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
        [1, 1.5, "Ada", true, Buffer.from([0, 255]), "2024-02-29", "2024-01-02T03:04:05.678901", "2024-01-02T03:04:05Z", "12345678901234567890.123"],
        [null, null, null, null, null, null, null, null, null],
      ]);
      const t = await db.fetchArrow(`SELECT i, f, s, b, y, d, ts, tz, n FROM ${name} ORDER BY k`);
      assert.deepEqual(types(t), [
        "Int64",
        "Float64",
        "Utf8",
        "Bool",
        "Binary",
        "Date32<DAY>",
        "Timestamp<MICROSECOND>",
        "Timestamp<MICROSECOND, UTC>",
        "Utf8",
      ]);
      const first = t.get(0)!.toJSON();
      assert.equal(first.i, 1n);
      assert.equal(first.s, "Ada");
      assert.equal(first.n, "12345678901234567890.123");
      assert.equal(new Date(Number(first.tz)).toISOString(), "2024-01-02T03:04:05.000Z");
      assert.equal(new Date(Number(first.ts)).toISOString(), "2024-01-02T03:04:05.678Z");
      assert.deepEqual(Object.values(t.get(1)!.toJSON()), [null, null, null, null, null, null, null, null, null]);
    });

    test("many batches; an error after some rows rejects", async () => {
      const sql = "SELECT x, md5(x::text) AS h FROM generate_series(1, 30000) AS x";
      const t = await db.fetchArrow(sql);
      assert.equal(t.numRows, 30000);
      assert.ok(t.batches.length > 1);
      const rows = await db.fetchAll(sql).toArray();
      assert.deepEqual(
        plain(t).map((r) => ({ x: Number(r.x), h: r.h })),
        rows,
      );
      const e = await rejectsWith(
        db.fetchArrow("SELECT CASE WHEN x = 20000 THEN 1 / (x - x) ELSE x END AS v FROM generate_series(1, 30000) AS x"),
        Status.INVALID_ARGUMENT,
      );
      assert.equal(e.sqlstate, "22012");
    });
  });
}
