/**
 * The client against a live iadb server: `IADB_ADDR` (default
 * 127.0.0.1:50051), whose default database is SQLite (as `cargo run -p
 * iadb-server` serves). Run with `npm test`.
 *
 * Tables are named per run and dropped at the end.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { IadbClient, IadbError, Status, decodeValue, encodeValue, typed } from "../src/index";

const ADDRESS = process.env.IADB_ADDR || "127.0.0.1:50051";
const RUN = `${process.pid}_${Date.now()}`;
const created: string[] = [];

let db: IadbClient;

function table(base: string): string {
  const name = `node_${base}_${RUN}`;
  created.push(name);
  return name;
}

/** Awaits `p` and asserts it rejects with an IadbError of `code`. */
async function rejectsWith(p: Promise<unknown>, code: Status, message?: RegExp): Promise<IadbError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IadbError, `expected an IadbError, got ${String(caught)}`);
  assert.equal(caught.codeName, Status[code]);
  assert.equal(caught.code, code);
  if (message) {
    assert.match(caught.details, message);
  }
  return caught;
}

before(async () => {
  db = await IadbClient.connect(ADDRESS);
});

after(async () => {
  for (const name of created) {
    await db.execute(`DROP TABLE IF EXISTS ${name}`);
  }
  db.close();
});

describe("values", () => {
  test("int, float, text, bytes and null round trip through SELECT ?", async () => {
    const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    const row = await db.fetchOne("SELECT ? AS i, ? AS neg, ? AS f, ? AS t, ? AS b, ? AS n, ? AS u", [
      42,
      -7,
      1.5,
      "héllo, wörld ✓",
      bytes,
      null,
      undefined,
    ]);
    assert.deepEqual(row, { i: 42, neg: -7, f: 1.5, t: "héllo, wörld ✓", b: bytes, n: null, u: null });
    assert.ok(Buffer.isBuffer(row?.b));
  });

  test("int64 beyond 2^53 comes back as bigint, exactly", async () => {
    const max = 2n ** 63n - 1n;
    const min = -(2n ** 63n);
    const row = await db.fetchOne("SELECT ? AS max, ? AS min, ? AS big, ? AS safe", [
      max,
      min,
      2n ** 53n + 1n,
      2 ** 53 - 1,
    ]);
    assert.deepEqual(row, { max, min, big: 2n ** 53n + 1n, safe: 2 ** 53 - 1 });
  });

  test('int64: "bigint" returns every int as bigint', async () => {
    const big = await IadbClient.connect(ADDRESS, { int64: "bigint" });
    try {
      const row = await big.fetchOne("SELECT ? AS one, 2 + 3 AS five", [1]);
      assert.deepEqual(row, { one: 1n, five: 5n });
    } finally {
      big.close();
    }
  });

  test("doubles: integral values sent with typed.double stay doubles, infinities survive", async () => {
    const row = await db.fetchOne("SELECT ? AS d, typeof(?) AS ty, ? AS inf, ? AS ninf", [
      typed.double(3),
      typed.double(3),
      Infinity,
      -Infinity,
    ]);
    assert.deepEqual(row, { d: 3, ty: "real", inf: Infinity, ninf: -Infinity });
  });

  test("NaN is refused by SQLite with INVALID_ARGUMENT", async () => {
    await rejectsWith(db.fetchOne("SELECT ? AS x", [NaN]), Status.INVALID_ARGUMENT);
  });

  test("bool round trips through a BOOLEAN column", async () => {
    const t = table("bools");
    await db.execute(`CREATE TABLE ${t} (id INTEGER PRIMARY KEY, flag BOOLEAN)`);
    await db.executeMany(`INSERT INTO ${t} (id, flag) VALUES (?, ?)`, [
      [1, true],
      [2, false],
      [3, null],
    ]);
    const rows = await db.fetchAll(`SELECT id, flag FROM ${t} ORDER BY id`).toArray();
    assert.deepEqual(rows, [
      { id: 1, flag: true },
      { id: 2, flag: false },
      { id: 3, flag: null },
    ]);
  });

  test("a bool passed to SELECT ? comes back as 1/0 on SQLite", async () => {
    assert.deepEqual(await db.fetchOne("SELECT ? AS t, ? AS f", [true, false]), { t: 1, f: 0 });
  });

  test("date, decimal, timestamp columns come back as their text", async () => {
    const t = table("typed");
    await db.execute(`CREATE TABLE ${t} (d DATE, amount TEXT, ts TIMESTAMP, dt DATETIME)`);
    await db.execute(`INSERT INTO ${t} VALUES (?, ?, ?, ?)`, [
      typed.date("2024-02-29"),
      typed.decimal("12345678901234567890.123456789"),
      new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
      typed.datetime("2024-01-02T03:04:05"),
    ]);
    const row = await db.fetchOne(`SELECT d, amount, ts, dt FROM ${t}`);
    assert.equal(row?.d, "2024-02-29");
    assert.equal(row?.amount, "12345678901234567890.123456789");
    assert.equal(typeof row?.ts, "string");
    assert.equal(new Date(row?.ts as string).getTime(), Date.UTC(2024, 0, 2, 3, 4, 5, 678));
    assert.match(row?.dt as string, /^2024-01-02[T ]03:04:05$/);
  });

  test("json parameters are sent as text (SQLite has no JSON type)", async () => {
    const row = await db.fetchOne("SELECT json_extract(?, '$.a[1]') AS x", [typed.json({ a: [1, "two"] })]);
    assert.deepEqual(row, { x: "two" });
  });

  test("unsupported parameters fail before any call", async () => {
    await assert.rejects(db.execute("SELECT ?", [{ a: 1 } as never]), TypeError);
    await assert.rejects(db.execute("SELECT ?", [2n ** 64n]), RangeError);
  });
});

describe("value mapping (no server)", () => {
  test("decodeValue maps every kind", () => {
    assert.equal(decodeValue({}), null);
    assert.equal(decodeValue({ kind: "null", null: "NULL_VALUE_UNSPECIFIED" }), null);
    assert.equal(decodeValue({ kind: "int", int: "9007199254740991" }), 9007199254740991);
    assert.equal(decodeValue({ kind: "int", int: "9007199254740992" }), 9007199254740992n);
    assert.equal(decodeValue({ kind: "int", int: "5" }, "bigint"), 5n);
    assert.equal(decodeValue({ kind: "decimal", decimal: "1.10" }), "1.10");
    assert.equal(decodeValue({ kind: "time", time: "12:34:56.5" }), "12:34:56.5");
    assert.deepEqual(decodeValue({ kind: "json", json: '{"a":[1,null]}' }), { a: [1, null] });
    assert.throws(() => decodeValue({ kind: "json", json: "{" }), IadbError);
  });

  test("encodeValue picks the kind from the JS type", () => {
    assert.deepEqual(encodeValue(3), { int: "3" });
    assert.deepEqual(encodeValue(3.5), { double: 3.5 });
    assert.deepEqual(encodeValue(2 ** 60), { double: 2 ** 60 });
    assert.deepEqual(encodeValue(-(2n ** 63n)), { int: "-9223372036854775808" });
    assert.deepEqual(encodeValue(new Date(0)), { timestamp_tz: "1970-01-01T00:00:00.000Z" });
    assert.deepEqual(encodeValue(new Uint8Array([1, 2])), { bytes: Buffer.from([1, 2]) });
    assert.throws(() => encodeValue([1] as never, 2), /parameter 2: an array is not a SQL value/);
    assert.throws(() => encodeValue(new Date(NaN)), RangeError);
  });
});

describe("execute", () => {
  test("row counts and last insert id", async () => {
    const t = table("people");
    const created = await db.execute(`CREATE TABLE ${t} (id INTEGER PRIMARY KEY, name TEXT UNIQUE, score REAL)`);
    assert.equal(created.rowsAffected, 0);
    const first = await db.execute(`INSERT INTO ${t} (name, score) VALUES (?, ?)`, ["Ada", 9.5]);
    assert.equal(first.rowsAffected, 1);
    assert.equal(first.lastInsertId, 1);
    assert.ok(first.executionTimeMs >= 0);
    const many = await db.executeMany(`INSERT INTO ${t} (name, score) VALUES (?, ?)`, [
      ["Grace", 8],
      ["Linus", 7],
      ["Barbara", 6.5],
    ]);
    assert.equal(many.rowsAffected, 3);
    const updated = await db.execute(`UPDATE ${t} SET score = score + 1 WHERE score < ?`, [8]);
    assert.equal(updated.rowsAffected, 2);
    const deleted = await db.execute(`DELETE FROM ${t} WHERE name = ?`, ["nobody"]);
    assert.equal(deleted.rowsAffected, 0);
    const rows = await db.fetchAll(`SELECT name, score FROM ${t} ORDER BY id`).toArray();
    assert.deepEqual(rows, [
      { name: "Ada", score: 9.5 },
      { name: "Grace", score: 8 },
      { name: "Linus", score: 8 },
      { name: "Barbara", score: 7.5 },
    ]);
  });

  test("executeMany is all or nothing", async () => {
    const t = table("atomic");
    await db.execute(`CREATE TABLE ${t} (id INTEGER PRIMARY KEY)`);
    await rejectsWith(
      db.executeMany(`INSERT INTO ${t} (id) VALUES (?)`, [[1], [2], [1]]),
      Status.ALREADY_EXISTS,
    );
    assert.deepEqual(await db.fetchOne(`SELECT COUNT(*) AS n FROM ${t}`), { n: 0 });
  });
});

describe("fetchOne and fetchAll", () => {
  test("fetchOne returns null for no row and the first row otherwise", async () => {
    assert.equal(await db.fetchOne("SELECT 1 AS one WHERE 1 = 0"), null);
    assert.deepEqual(await db.fetchOne("SELECT 1 AS one UNION ALL SELECT 2 ORDER BY 1 DESC"), { one: 2 });
  });

  test("fetchAll gives columns, rows and a summary", async () => {
    const stream = db.fetchAll(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT i, i * i AS sq FROM n",
      [2500],
    );
    let count = 0;
    let sum = 0;
    for await (const row of stream) {
      count++;
      sum += row.i as number;
      assert.equal(row.sq, (row.i as number) ** 2);
    }
    assert.equal(count, 2500);
    assert.equal(sum, (2500 * 2501) / 2);
    assert.deepEqual(
      stream.columns?.map((c) => c.name),
      ["i", "sq"],
    );
    assert.equal(stream.summary?.rowCount, 2500);
    assert.throws(() => stream[Symbol.asyncIterator](), /iterated once/);
  });

  test("maxStalenessMs: bounded reads run (on the primary, without replicas); a bad bound fails first", async () => {
    assert.deepEqual(await db.fetchOne("SELECT 7 AS n", [], { maxStalenessMs: 500 }), { n: 7 });
    const rows = await db.fetchAll("SELECT 8 AS n", [], { maxStalenessMs: 0, timeoutMs: 5000 }).toArray();
    assert.deepEqual(rows, [{ n: 8 }]);
    await assert.rejects(db.fetchOne("SELECT 1", [], { maxStalenessMs: -1 }), RangeError);
    await assert.rejects(db.fetchOne("SELECT 1", [], { maxStalenessMs: 1.5 }), RangeError);
    const n = await db.transaction(async (tx) => (await tx.fetchOne("SELECT 9 AS n"))?.n, {
      readOnly: true,
      maxStalenessMs: 500,
    });
    assert.equal(n, 9);
    await assert.rejects(db.transaction(async () => 0, { readOnly: true, maxStalenessMs: -1 }), RangeError);
  });

  test("an empty result has columns and a zero summary", async () => {
    const stream = db.fetchAll("SELECT 1 AS one WHERE 1 = 0");
    assert.deepEqual(await stream.toArray(), []);
    assert.deepEqual(
      stream.columns?.map((c) => c.name),
      ["one"],
    );
    assert.equal(stream.summary?.rowCount, 0);
  });

  test("leaving a stream early cancels it and the client stays usable", async () => {
    const stream = db.fetchAll(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000) SELECT i FROM n",
    );
    let seen = 0;
    for await (const row of stream) {
      seen++;
      if (seen === 3) {
        assert.deepEqual(row, { i: 3 });
        break;
      }
    }
    assert.equal(seen, 3);
    assert.equal(stream.summary, undefined);
    assert.deepEqual(await db.fetchOne("SELECT 7 AS seven"), { seven: 7 });
  });

  test("a bad statement in fetchAll rejects the iteration", async () => {
    await rejectsWith(db.fetchAll("SELECT * FROM no_such_table_here").toArray(), Status.INVALID_ARGUMENT);
  });
});

describe("tableExists", () => {
  test("true for a created table, false for a missing one", async () => {
    const t = table("exists");
    assert.equal(await db.tableExists(t), false);
    await db.execute(`CREATE TABLE ${t} (x INTEGER)`);
    assert.equal(await db.tableExists(t), true);
    assert.equal(await db.tableExists(`no_such_table_${RUN}`), false);
  });
});

describe("health", () => {
  test("the iadb Health RPC reports the default SQLite database healthy", async () => {
    const all = await db.health();
    const dflt = all.find((d) => d.name === "default");
    assert.ok(dflt, `no "default" database in ${JSON.stringify(all)}`);
    assert.equal(dflt.engine, "sqlite");
    assert.equal(dflt.healthy, true);
    assert.equal(dflt.message, "");
    assert.ok(dflt.poolMax >= 1);
    assert.deepEqual(
      (await db.health("default")).map((d) => d.name),
      ["default"],
    );
  });

  test("the standard health service is SERVING for the server and its database", async () => {
    assert.equal(await db.standardHealth(""), "SERVING");
    assert.equal(await db.standardHealth("default"), "SERVING");
    await rejectsWith(db.standardHealth(`no_such_service_${RUN}`), Status.NOT_FOUND);
  });
});

describe("errors", () => {
  test("a syntax error is INVALID_ARGUMENT with the engine's message", async () => {
    const e = await rejectsWith(db.execute("SELEC 1"), Status.INVALID_ARGUMENT, /syntax error/);
    assert.match(e.message, /^INVALID_ARGUMENT: /);
  });

  test("a wrong parameter count is INVALID_ARGUMENT", async () => {
    await rejectsWith(db.fetchOne("SELECT ? AS a, ? AS b", [1]), Status.INVALID_ARGUMENT);
  });

  test("an unknown database is INVALID_ARGUMENT", async () => {
    const other = await IadbClient.connect(ADDRESS, { database: `no_such_db_${RUN}` });
    try {
      await rejectsWith(other.fetchOne("SELECT 1"), Status.INVALID_ARGUMENT);
    } finally {
      other.close();
    }
  });

  test("a unique violation is ALREADY_EXISTS and carries the SQLite code", async () => {
    const t = table("uniq");
    await db.execute(`CREATE TABLE ${t} (name TEXT UNIQUE)`);
    await db.execute(`INSERT INTO ${t} VALUES (?)`, ["x"]);
    const e = await rejectsWith(db.execute(`INSERT INTO ${t} VALUES (?)`, ["x"]), Status.ALREADY_EXISTS);
    assert.ok(e.sqlstate, "the iadb-sqlstate metadata is present");
  });

  test("timeoutMs stops a long query with DEADLINE_EXCEEDED", async () => {
    const endless =
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) SELECT count(*) AS c FROM n";
    const started = Date.now();
    await rejectsWith(db.fetchOne(endless, [], { timeoutMs: 200 }), Status.DEADLINE_EXCEEDED);
    await rejectsWith(db.fetchAll(endless, [], { timeoutMs: 200 }).toArray(), Status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - started < 10_000, "both calls ended well before the query could finish");
  });

  test("a missing proto folder is a clear error", async () => {
    await assert.rejects(IadbClient.connect(ADDRESS, { protoDir: "/nonexistent" }), /does not exist: pass protoDir/);
  });

  test("connecting to a closed port rejects with UNAVAILABLE", async () => {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.on("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
      });
    });
    await rejectsWith(IadbClient.connect(`127.0.0.1:${port}`, { connectTimeoutMs: 500 }), Status.UNAVAILABLE);
  });
});
