/**
 * `batch` and `transaction` against a live iadb server (`IADB_ADDR`, whose
 * default database is SQLite). The tests that need a server with other
 * limits (a pool of 2, a 1 s transaction idle timeout) start their own from
 * `IADB_SERVER_BIN` and are skipped without it.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { DEFAULT_PROTO_DIR, IadbClient, IadbError, Status, type Transaction } from "../src/index";

const ADDRESS = process.env.IADB_ADDR || "127.0.0.1:50051";
const SERVER_BIN = process.env.IADB_SERVER_BIN;
const RUN = `${process.pid}_${Date.now()}`;
const created: string[] = [];

let db: IadbClient;
let other: IadbClient;

function table(base: string): string {
  const name = `node_tx_${base}_${RUN}`;
  created.push(name);
  return name;
}

class Boom extends Error {}

/** Awaits `p` and asserts it rejects with an IadbError of `code`. */
async function rejectsWith(p: Promise<unknown>, code: Status, message?: RegExp): Promise<IadbError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IadbError, `expected an IadbError, got ${String(caught)}`);
  assert.equal(caught.codeName, Status[code], caught.message);
  if (message) {
    assert.match(caught.details, message);
  }
  return caught;
}

async function makeTable(client: IadbClient, name: string): Promise<void> {
  await client.execute(`CREATE TABLE ${name} (id INTEGER PRIMARY KEY, v TEXT UNIQUE)`);
}

async function values(client: IadbClient, name: string): Promise<unknown[]> {
  const rows = await client.fetchAll(`SELECT v FROM ${name} ORDER BY id`).toArray();
  return rows.map((r) => r.v);
}

before(async () => {
  db = await IadbClient.connect(ADDRESS);
  other = await IadbClient.connect(ADDRESS);
});

after(async () => {
  for (const name of created) {
    await db.execute(`DROP TABLE IF EXISTS ${name}`);
  }
  db.close();
  other.close();
});

describe("batch", () => {
  test("one result per statement, rows for a query", async () => {
    const t = table("batch_ok");
    await makeTable(db, t);
    const results = await db.batch([
      [`INSERT INTO ${t} (v) VALUES (?)`, ["a"]],
      { sql: `INSERT INTO ${t} (v) VALUES (?), (?)`, params: ["b", "c"] },
      `UPDATE ${t} SET v = v || '!' WHERE v <> 'a'`,
      [`SELECT id, v FROM ${t} WHERE v LIKE ? ORDER BY id`, ["%!"]],
    ]);
    assert.deepEqual(
      results.slice(0, 3).map((r) => r.rowsAffected),
      [1, 2, 2],
    );
    assert.equal(results[0].lastInsertId, 1);
    assert.deepEqual(
      results[3].columns.map((c) => c.name),
      ["id", "v"],
    );
    assert.deepEqual(results[3].rows, [
      { id: 2, v: "b!" },
      { id: 3, v: "c!" },
    ]);
    assert.deepEqual(results[0].rows, []);
    assert.deepEqual(await values(other, t), ["a", "b!", "c!"]);
  });

  test("a failing 3rd statement of 5 leaves nothing and names index 2", async () => {
    const t = table("batch_fail");
    await makeTable(db, t);
    await db.execute(`INSERT INTO ${t} (v) VALUES ('taken')`);
    const e = await rejectsWith(
      db.batch([
        [`INSERT INTO ${t} (v) VALUES (?)`, ["one"]],
        [`UPDATE ${t} SET v = 'changed' WHERE v = ?`, ["taken"]],
        [`INSERT INTO ${t} (v) VALUES (?)`, ["changed"]],
        [`INSERT INTO ${t} (v) VALUES (?)`, ["four"]],
        `DELETE FROM ${t}`,
      ]),
      Status.ALREADY_EXISTS,
      /^statement 2: /,
    );
    assert.equal(e.statementIndex, 2);
    assert.ok(e.sqlstate, "the engine's code travels");
    assert.deepEqual(await values(other, t), ["taken"]);
  });

  test("read-only: a write fails and changes nothing; a bad parameter names its statement", async () => {
    const t = table("batch_ro");
    await makeTable(db, t);
    const e = await rejectsWith(db.batch([`INSERT INTO ${t} (v) VALUES ('no')`], { readOnly: true }), Status.PERMISSION_DENIED);
    assert.equal(e.statementIndex, 0);
    assert.deepEqual(await values(other, t), []);
    await assert.rejects(db.batch(["SELECT 1", ["SELECT ?", [{} as never]]]), /^TypeError: statement 1: /);
  });
});

describe("read-only calls", () => {
  test("readOnly: reads work; a write or DDL is PERMISSION_DENIED and changes nothing", async () => {
    const t = table("call_ro");
    await makeTable(db, t);
    await db.execute(`INSERT INTO ${t} (v) VALUES ('kept')`);
    const ro = { readOnly: true };
    const rows = await db.fetchAll(`SELECT v FROM ${t}`, [], ro).toArray();
    assert.deepEqual(rows.map((r) => r.v), ["kept"]);
    await rejectsWith(db.execute(`INSERT INTO ${t} (v) VALUES ('no')`, [], ro), Status.PERMISSION_DENIED);
    await rejectsWith(db.execute(`DELETE FROM ${t}`, [], { readOnly: true, timeoutMs: 5000 }), Status.PERMISSION_DENIED);
    await rejectsWith(db.execute(`DROP TABLE ${t}`, [], ro), Status.PERMISSION_DENIED);
    assert.deepEqual(await values(other, t), ["kept"]);
  });
});

describe("transaction", () => {
  test("commit makes every write visible, and only then", async () => {
    const t = table("commit");
    await makeTable(db, t);
    let seen: Transaction | undefined;
    const value = await db.transaction(async (tx) => {
      seen = tx;
      assert.equal(tx.engine, "sqlite");
      assert.equal(tx.database, "default");
      const r = await tx.execute(`INSERT INTO ${t} (v) VALUES (?)`, ["a"]);
      assert.equal(r.rowsAffected, 1);
      assert.equal(r.lastInsertId, 1);
      const many = await tx.executeMany(`INSERT INTO ${t} (v) VALUES (?)`, [["b"], ["c"]]);
      assert.equal(many.rowsAffected, 2);
      assert.deepEqual(await values(other, t), []);
      return "result";
    });
    assert.equal(value, "result");
    assert.equal(seen?.committed, true);
    assert.deepEqual(await values(other, t), ["a", "b", "c"]);
  });

  test("rollback, and a throw inside the callback, leave nothing", async () => {
    const t = table("rollback");
    await makeTable(db, t);
    await db.transaction(async (tx) => {
      await tx.execute(`INSERT INTO ${t} (v) VALUES ('rolled')`);
      await tx.rollback();
      assert.equal(tx.committed, false);
      await assert.rejects(tx.execute("SELECT 1"), /ended/);
    });
    const boom = new Boom("boom");
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${t} (v) VALUES ('thrown')`);
        assert.deepEqual(await tx.fetchOne(`SELECT count(*) AS n FROM ${t}`), { n: 1 });
        throw boom;
      }),
      (e) => e === boom,
    );
    assert.deepEqual(await values(other, t), []);
  });

  test("a fetch sees the transaction's own writes, another connection does not", async () => {
    const t = table("visibility");
    await makeTable(db, t);
    await db.execute(`INSERT INTO ${t} (v) VALUES ('before')`);
    await db.transaction(async (tx) => {
      await tx.execute(`INSERT INTO ${t} (v) VALUES ('mine')`);
      const stream = tx.fetchAll(`SELECT v FROM ${t} ORDER BY id`);
      assert.deepEqual(await stream.toArray(), [{ v: "before" }, { v: "mine" }]);
      assert.deepEqual(
        stream.columns?.map((c) => c.name),
        ["v"],
      );
      assert.equal(stream.summary?.rowCount, 2);
      assert.equal(await tx.fetchOne(`SELECT v FROM ${t} WHERE v = ?`, ["nobody"]), null);
      assert.deepEqual(await values(other, t), ["before"]);
      await tx.rollback();
    });
    assert.deepEqual(await values(other, t), ["before"]);
  });

  test("a failed statement rolls back; caught inside, the transaction still rejects with it", async () => {
    const t = table("failed");
    await makeTable(db, t);
    const e = await rejectsWith(
      db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${t} (v) VALUES ('x')`);
        await tx.execute(`INSERT INTO ${t} (v) VALUES ('x')`);
      }),
      Status.ALREADY_EXISTS,
      /rolled back/,
    );
    assert.ok(e.sqlstate);
    let inner: unknown;
    const outer = await rejectsWith(
      db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${t} (v) VALUES ('y')`);
        try {
          await tx.execute("SELEC 1");
        } catch (err) {
          inner = err;
        }
        // Every later request rejects with the same error.
        await assert.rejects(tx.execute("SELECT 1"), (err) => err === inner);
      }),
      Status.INVALID_ARGUMENT,
    );
    assert.equal(outer, inner);
    assert.deepEqual(await values(other, t), []);
  });

  test("BEGIN or COMMIT sent as SQL inside is refused and rolls back", async () => {
    const t = table("begin_sql");
    await makeTable(db, t);
    await rejectsWith(
      db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO ${t} (v) VALUES ('gone')`);
        await tx.execute("BEGIN");
      }),
      Status.FAILED_PRECONDITION,
      /BEGIN/i,
    );
    await rejectsWith(
      db.transaction((tx) => tx.execute("COMMIT")),
      Status.FAILED_PRECONDITION,
    );
    assert.deepEqual(await values(other, t), []);
  });

  test("a read-only transaction that writes fails and changes nothing", async () => {
    const t = table("read_only");
    await makeTable(db, t);
    await db.execute(`INSERT INTO ${t} (v) VALUES ('old')`);
    const e = await rejectsWith(
      db.transaction(
        async (tx) => {
          assert.deepEqual(await tx.fetchAll(`SELECT v FROM ${t}`).toArray(), [{ v: "old" }]);
          await tx.execute(`UPDATE ${t} SET v = 'new'`);
        },
        { readOnly: true },
      ),
      Status.PERMISSION_DENIED,
    );
    assert.match(e.details, /rolled back/);
    assert.deepEqual(await values(other, t), ["old"]);
  });

  test("isolation and immediate; an unknown level is refused before any call", async () => {
    const t = table("isolation");
    await makeTable(db, t);
    await db.transaction((tx) => tx.execute(`INSERT INTO ${t} (v) VALUES ('s')`), { isolation: "serializable" });
    await db.transaction((tx) => tx.execute(`INSERT INTO ${t} (v) VALUES ('i')`), { immediate: true });
    assert.deepEqual(await values(other, t), ["s", "i"]);
    await rejectsWith(
      db.transaction(async () => {}, { isolation: "read_committed" }),
      Status.INVALID_ARGUMENT,
      /serializable/i,
    );
    await assert.rejects(db.transaction(async () => {}, { isolation: "chaos" as never }), RangeError);
  });

  test("requests made together are answered in turn; a stream left early lets the next request run", async () => {
    const t = table("turns");
    await makeTable(db, t);
    const n = 5000;
    const sql = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) SELECT i FROM s";
    await db.transaction(async (tx) => {
      await Promise.all(Array.from({ length: 10 }, (_, i) => tx.execute(`INSERT INTO ${t} (v) VALUES (?)`, [`v${i}`])));
      let sum = 0;
      for await (const row of tx.fetchAll(sql, [n])) {
        sum += row.i as number;
      }
      assert.equal(sum, (n * (n + 1)) / 2);
      let seen = 0;
      for await (const row of tx.fetchAll(sql, [n])) {
        seen = row.i as number;
        if (seen === 3) {
          break;
        }
      }
      assert.equal(seen, 3);
      assert.deepEqual(await tx.fetchOne("SELECT 42 AS x"), { x: 42 });
    });
    assert.equal((await values(other, t)).length, 10);
  });

  test("20 sequential transactions, ended every way, give their connection back", async () => {
    const t = table("pool");
    await makeTable(db, t);
    for (let i = 0; i < 20; i++) {
      const how = i % 4;
      try {
        await db.transaction(async (tx) => {
          await tx.execute(`INSERT INTO ${t} (v) VALUES (?)`, [`v${i}`]);
          if (how === 1) {
            await tx.rollback();
          } else if (how === 2) {
            throw new Boom();
          } else if (how === 3) {
            await tx.execute(`INSERT INTO ${t} (v) VALUES (?)`, [`v${i}`]);
          }
        });
      } catch (e) {
        assert.ok(how === 2 || how === 3, String(e));
      }
    }
    assert.deepEqual(
      await values(other, t),
      [0, 4, 8, 12, 16].map((i) => `v${i}`),
    );
    // The server's own pool figures: every open connection is idle again.
    let pool = (await db.health("default"))[0];
    for (let i = 0; i < 50 && pool.poolIdle !== pool.poolSize; i++) {
      await new Promise((r) => setTimeout(r, 50));
      pool = (await db.health("default"))[0];
    }
    assert.equal(pool.poolIdle, pool.poolSize, JSON.stringify(pool));
  });
});

// ---------------------------------------------------------------------------
// Servers of our own

interface OwnServer {
  address: string;
  stop(): void;
}

async function startServer(args: string[]): Promise<OwnServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-tx-"));
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "warn" };
  delete env.DATABASE_URL;
  const child: ChildProcess = spawn(
    SERVER_BIN as string,
    ["--listen", "127.0.0.1:0", "--database-url", `sqlite:///${dir}/tx.db`, ...args],
    { env, stdio: ["ignore", "pipe", "inherit"] },
  );
  const lines = readline.createInterface({ input: child.stdout! });
  const prefix = "iadb-server listening on ";
  const address = await new Promise<string>((resolve, reject) => {
    lines.once("line", (line) => (line.startsWith(prefix) ? resolve(line.slice(prefix.length)) : reject(new Error(line))));
    child.once("exit", (code) => reject(new Error(`server exited (${code})`)));
  });
  return {
    address,
    stop() {
      lines.close();
      child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("limits (a server of its own)", { skip: SERVER_BIN ? false : "IADB_SERVER_BIN is not set" }, () => {
  test("an idle transaction is ABORTED and rolled back", async () => {
    const server = await startServer(["--transaction-idle-timeout-secs", "1"]);
    const client = await IadbClient.connect(server.address);
    try {
      const t = "idle";
      await makeTable(client, t);
      const e = await rejectsWith(
        client.transaction(async (tx) => {
          await tx.execute(`INSERT INTO ${t} (v) VALUES ('idle')`);
          await new Promise((r) => setTimeout(r, 3000)); // three times the timeout
          await tx.execute(`INSERT INTO ${t} (v) VALUES ('late')`);
        }),
        Status.ABORTED,
        /idle.*rolled back|rolled back.*idle/,
      );
      assert.equal(e.commitOutcomeUnknown, false);
      assert.deepEqual(await values(client, t), []);
      await client.transaction((tx) => tx.execute(`INSERT INTO ${t} (v) VALUES ('quick')`));
      assert.deepEqual(await values(client, t), ["quick"]);
    } finally {
      client.close();
      server.stop();
    }
  });

  test("a pool of 2 serves 20 sequential transactions; one holds one connection while open", async () => {
    const server = await startServer(["--pool-max", "2", "--pool-timeout-secs", "2"]);
    const client = await IadbClient.connect(server.address);
    try {
      await makeTable(client, "p");
      for (let i = 0; i < 20; i++) {
        await client.transaction((tx) => tx.execute("INSERT INTO p (v) VALUES (?)", [`v${i}`]));
      }
      assert.equal((await values(client, "p")).length, 20);
      // The server returns a connection just after it answered `ended`.
      const idle = async () => {
        let pool = (await client.health("default"))[0];
        for (let i = 0; i < 50 && pool.poolIdle !== pool.poolSize; i++) {
          await new Promise((r) => setTimeout(r, 50));
          pool = (await client.health("default"))[0];
        }
        return pool;
      };
      const pool = await idle();
      assert.equal(pool.poolMax, 2);
      assert.equal(pool.poolIdle, pool.poolSize, JSON.stringify(pool));
      await client.transaction(async (tx) => {
        await tx.execute("SELECT 1");
        const during = (await client.health("default"))[0];
        assert.equal(during.poolSize - during.poolIdle, 1, JSON.stringify(during));
      });
      const after = await idle();
      assert.equal(after.poolIdle, after.poolSize, JSON.stringify(after));
    } finally {
      client.close();
      server.stop();
    }
  });
});

// ---------------------------------------------------------------------------
// A commit whose answer never comes

describe("a commit answered UNAVAILABLE", () => {
  let fake: grpc.Server;
  let address = "";
  let begins = 0;

  before(async () => {
    const definition = protoLoader.loadSync("iadb/v1/database.proto", {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [DEFAULT_PROTO_DIR],
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      iadb: { v1: { Database: grpc.ServiceClientConstructor } };
    };
    fake = new grpc.Server();
    fake.addService(pkg.iadb.v1.Database.service, {
      Transaction(call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) {
        call.on("data", (req: Record<string, unknown>) => {
          if (req.request === "begin") {
            begins++;
            call.write({ begun: { database: "default", engine: "fake" } });
          } else if (req.request === "execute") {
            call.write({ executed: { rows_affected: 1 } });
          } else if (req.request === "commit") {
            call.emit("error", { code: grpc.status.UNAVAILABLE, details: "engine connection lost" });
          }
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      fake.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  after(() => {
    fake.forceShutdown();
  });

  test("is an outcome-unknown error that is not retryable", async () => {
    const client = await IadbClient.connect(address);
    try {
      const e = await rejectsWith(
        client.transaction((tx) => tx.execute("UPDATE accounts SET balance = balance - 10")),
        Status.UNAVAILABLE,
        /outcome is unknown/,
      );
      assert.equal(e.commitOutcomeUnknown, true);
      assert.equal(e.retryable, false);
      assert.equal(begins, 1);
    } finally {
      client.close();
    }
  });
});
