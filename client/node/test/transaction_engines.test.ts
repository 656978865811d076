/**
 * `batch` and `transaction` through a live server on PostgreSQL
 * (`IADB_TEST_POSTGRES_URL`) and on MySQL/MariaDB (`IADB_TEST_MYSQL_URL`),
 * each started from `IADB_SERVER_BIN`: commits, rollbacks, a batch's failure
 * and the engine's code, serializable conflicts, isolation levels and
 * read-only transactions, as a caller sees them.
 *
 * Without the server binary or an engine's URL, that engine's tests are
 * skipped with the reason, except in CI (`CI=true`), where they fail.
 * Concurrent transactions are interleaved explicitly (promises, not
 * timers): each step of one waits for the step of the other it must follow.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import { IadbClient, IadbError, Status, type Row } from "../src/index";

const SERVER_BIN = process.env.IADB_SERVER_BIN;
const CI = !["", "false", "0"].includes(process.env.CI ?? "");
const RUN = `${process.pid}_${Date.now()}`;

interface EngineCase {
  /** The engine's name, as the server reports it. */
  name: "postgresql" | "mysql";
  variable: string;
  /** The code of a duplicate key. */
  duplicate: string;
  /** The status and code of a write in a read-only transaction. */
  readOnlyWrite: [Status, string];
}

const ENGINES: EngineCase[] = [
  {
    name: "postgresql",
    variable: "IADB_TEST_POSTGRES_URL",
    duplicate: "23505",
    readOnlyWrite: [Status.PERMISSION_DENIED, "25006"],
  },
  {
    name: "mysql",
    variable: "IADB_TEST_MYSQL_URL",
    duplicate: "23000",
    readOnlyWrite: [Status.PERMISSION_DENIED, "25006"],
  },
];

/** Awaits `p` and asserts it rejects with an IadbError of `code`. */
async function rejectsWith(p: Promise<unknown>, code: Status): Promise<IadbError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IadbError, `expected an IadbError, got ${String(caught)}`);
  assert.equal(caught.codeName, Status[code], caught.message);
  return caught;
}

/** A promise and its resolver: one step another waits for. */
function step(): { done: () => void; reached: Promise<void> } {
  let done!: () => void;
  const reached = new Promise<void>((resolve) => (done = resolve));
  return { done, reached };
}

class Boom extends Error {}

interface OwnServer {
  address: string;
  stop(): Promise<void>;
}

async function startServer(databaseUrl: string): Promise<OwnServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-txe-"));
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "warn" };
  delete env.DATABASE_URL;
  const child: ChildProcess = spawn(SERVER_BIN as string, ["--listen", "127.0.0.1:0", "--database-url", databaseUrl], {
    cwd: dir,
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: child.stdout! });
  const prefix = "iadb-server listening on ";
  const address = await new Promise<string>((resolve, reject) => {
    lines.once("line", (line) => (line.startsWith(prefix) ? resolve(line.slice(prefix.length)) : reject(new Error(line))));
    child.once("exit", (code) => reject(new Error(`server exited (${code})`)));
  });
  return {
    address,
    async stop() {
      lines.close();
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

for (const engine of ENGINES) {
  const url = process.env[engine.variable];
  const why = !SERVER_BIN ? "IADB_SERVER_BIN is not set" : !url ? `${engine.variable} is not set` : undefined;
  if (why !== undefined && CI) {
    test(`transactions on ${engine.name}`, () => {
      assert.fail(`${why} (CI=true: nothing may be skipped)`);
    });
    continue;
  }

  describe(`transactions on ${engine.name}`, { skip: why ?? false, timeout: 120_000 }, () => {
    let server: OwnServer;
    let db: IadbClient;
    const created: string[] = [];

    /** `id INTEGER PRIMARY KEY, v INTEGER`, named for this run (the
     * database is shared); dropped after the tests. */
    async function table(base: string): Promise<string> {
      const name = `node_txe_${base}_${RUN}`;
      created.push(name);
      await db.execute(`CREATE TABLE ${name} (id INTEGER PRIMARY KEY, v INTEGER)`);
      return name;
    }

    const insert = (t: string) => `INSERT INTO ${t} (id, v) VALUES (?, ?)`;
    const pairs = (rows: Row[]) => rows.map((r) => [Number(r.id), Number(r.v)]);

    /** (id, v) of every committed row, by a pooled call. */
    async function rows(t: string): Promise<number[][]> {
      return pairs(await db.fetchAll(`SELECT id, v FROM ${t} ORDER BY id`).toArray());
    }

    before(async () => {
      server = await startServer(url as string);
      db = await IadbClient.connect(server.address);
    });

    after(async () => {
      if (db !== undefined) {
        for (const name of created) {
          await db.execute(`DROP TABLE IF EXISTS ${name}`);
        }
        db.close();
      }
      await server?.stop();
    });

    test("commit makes every write visible, and only then", async () => {
      const t = await table("commit");
      let engineSeen = "";
      await db.transaction(async (tx) => {
        engineSeen = tx.engine;
        assert.equal((await tx.execute(insert(t), [1, 10])).rowsAffected, 1);
        assert.equal((await tx.executeMany(insert(t), [[2, 20], [3, 30]])).rowsAffected, 2);
        assert.equal((await tx.execute(`UPDATE ${t} SET v = v + 1 WHERE id >= ?`, [2])).rowsAffected, 2);
        assert.deepEqual(pairs(await tx.fetchAll(`SELECT id, v FROM ${t} ORDER BY id`).toArray()), [
          [1, 10],
          [2, 21],
          [3, 31],
        ]);
        assert.deepEqual(await rows(t), [], "not before the commit");
      });
      assert.equal(engineSeen, engine.name);
      assert.deepEqual(await rows(t), [
        [1, 10],
        [2, 21],
        [3, 31],
      ]);
    });

    test("rollback, a throw and a failed statement leave nothing", async () => {
      const t = await table("rollback");
      await db.execute(insert(t), [1, 1]);
      await db.transaction(async (tx) => {
        await tx.execute(insert(t), [2, 2]);
        await tx.execute(`DELETE FROM ${t} WHERE id = 1`);
        await tx.rollback();
        assert.equal(tx.committed, false);
      });
      const boom = new Boom("boom");
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.execute(insert(t), [3, 3]);
          assert.equal(Number((await tx.fetchOne(`SELECT COUNT(*) AS c FROM ${t}`))?.c), 2);
          throw boom;
        }),
        (e) => e === boom,
      );
      const e = await rejectsWith(
        db.transaction(async (tx) => {
          await tx.execute(insert(t), [4, 4]);
          await tx.execute(insert(t), [1, 1]); // a duplicate key
        }),
        Status.ALREADY_EXISTS,
      );
      assert.equal(e.sqlstate, engine.duplicate, e.message);
      assert.match(e.details, /rolled back/);
      assert.deepEqual(await rows(t), [[1, 1]]);
    });

    test("a batch failing at statement 2 leaves nothing and carries the engine's code", async () => {
      const t = await table("batch");
      const results = await db.batch([
        [insert(t), [1, 10]],
        [insert(t), [2, 20]],
        `UPDATE ${t} SET v = v + 1`,
        `SELECT id, v FROM ${t} ORDER BY id`,
      ]);
      assert.deepEqual(
        results.slice(0, 3).map((r) => Number(r.rowsAffected)),
        [1, 1, 2],
      );
      assert.deepEqual(pairs(results[3].rows), [
        [1, 11],
        [2, 21],
      ]);
      const e = await rejectsWith(
        db.batch([3, 4, 1, 5, 6].map((id) => [insert(t), [id, id]] as [string, number[]])), // index 2: id 1 again
        Status.ALREADY_EXISTS,
      );
      assert.equal(e.statementIndex, 2, e.message);
      assert.match(e.details, /^statement 2: /);
      assert.equal(e.sqlstate, engine.duplicate, e.message);
      assert.deepEqual(await rows(t), [
        [1, 11],
        [2, 21],
      ]);
      // A read-only batch reads; a write in one is refused and changes nothing.
      const ro = await db.batch([`SELECT COUNT(*) AS c FROM ${t}`], { readOnly: true });
      assert.equal(Number(ro[0].rows[0].c), 2);
      const [code, sqlstate] = engine.readOnlyWrite;
      const refused = await rejectsWith(db.batch([[insert(t), [7, 7]]], { readOnly: true }), code);
      assert.equal(refused.statementIndex, 0, refused.message);
      assert.equal(refused.sqlstate, sqlstate, refused.message);
      assert.deepEqual(await rows(t), [
        [1, 11],
        [2, 21],
      ]);
    });

    test("two serializable transactions that read then write: exactly one is ABORTED with 40001", async () => {
      // a and b both read the whole table, then a writes row 1 and b row 2
      // at the same time (on MySQL the reads took shared locks, so each
      // write waits for the other's lock until the deadlock is detected and
      // one of them is chosen), then a commits, then b.
      const t = await table("serial");
      await db.execute(`INSERT INTO ${t} (id, v) VALUES (1, 0), (2, 0)`);
      const read = { a: step(), b: step() };
      const ended = { a: step(), b: step() };
      const worker = async (name: "a" | "b", other: "a" | "b", row: number): Promise<string | IadbError> => {
        try {
          await db.transaction(
            async (tx) => {
              assert.equal(Number((await tx.fetchOne(`SELECT SUM(v) AS t FROM ${t}`))?.t), 0);
              read[name].done();
              await read[other].reached;
              assert.equal((await tx.execute(`UPDATE ${t} SET v = v + 1 WHERE id = ?`, [row])).rowsAffected, 1);
              if (name === "b") {
                await ended.a.reached; // a commits first
              }
            },
            { isolation: "serializable" },
          );
          return "committed";
        } catch (e) {
          if (e instanceof IadbError) {
            return e;
          }
          throw e;
        } finally {
          read[name].done(); // (when it failed before: the other goes on, and fails)
          ended[name].done();
        }
      };
      const [a, b] = await Promise.all([worker("a", "b", 1), worker("b", "a", 2)]);
      const outcomes = { a, b };
      const shown = JSON.stringify({ a: String(a), b: String(b) });
      const aborted = (["a", "b"] as const).filter((n) => outcomes[n] instanceof IadbError);
      const committed = (["a", "b"] as const).filter((n) => outcomes[n] === "committed");
      assert.deepEqual([aborted.length, committed.length], [1, 1], shown);
      const e = outcomes[aborted[0]] as IadbError;
      assert.equal(e.codeName, "ABORTED", e.message);
      // PostgreSQL's serialization failure; MySQL's deadlock (1213) has
      // SQLSTATE 40001 too.
      assert.equal(e.sqlstate, "40001", e.message);
      assert.equal(e.commitOutcomeUnknown, false, e.message);
      const survivorRow = committed[0] === "a" ? 1 : 2;
      assert.deepEqual(
        await rows(t),
        [1, 2].map((id) => [id, id === survivorRow ? 1 : 0]),
        `only the survivor's write: ${shown}`,
      );
      if (engine.name === "postgresql") {
        assert.deepEqual(committed, ["a"], `PostgreSQL: both writes succeed, the first to commit wins: ${shown}`);
      }
    });

    for (const [isolation, seesTheCommit] of [
      ["repeatable_read", false],
      ["read_committed", true],
    ] as const) {
      test(`${isolation}: a concurrent commit is ${seesTheCommit ? "seen" : "not seen"}`, async () => {
        const t = await table(isolation);
        const count = `SELECT COUNT(*) AS c FROM ${t}`;
        await db.execute(insert(t), [1, 0]);
        await db.transaction(
          async (tx) => {
            assert.equal(Number((await tx.fetchOne(count))?.c), 1);
            await db.execute(insert(t), [2, 0]); // committed by a pooled call
            assert.equal(Number((await db.fetchOne(count))?.c), 2);
            assert.equal(Number((await tx.fetchOne(count))?.c), seesTheCommit ? 2 : 1);
          },
          { isolation },
        );
      });
    }

    test("a read-only transaction that writes fails with the engine's status and changes nothing", async () => {
      const t = await table("read_only");
      await db.execute(insert(t), [1, 1]);
      let open: boolean | undefined;
      const [code, sqlstate] = engine.readOnlyWrite;
      const e = await rejectsWith(
        db.transaction(
          async (tx) => {
            assert.deepEqual(pairs(await tx.fetchAll(`SELECT id, v FROM ${t}`).toArray()), [[1, 1]]);
            try {
              await tx.execute(`UPDATE ${t} SET v = 2`);
            } finally {
              open = tx.isOpen;
            }
          },
          { readOnly: true },
        ),
        code,
      );
      assert.equal(e.sqlstate, sqlstate, e.message);
      assert.match(e.details, /rolled back/);
      assert.equal(open, false, "the error ended the transaction");
      assert.deepEqual(await rows(t), [[1, 1]]);
      // The pool's connections are writable again.
      await db.execute(`UPDATE ${t} SET v = 3`);
      assert.deepEqual(await rows(t), [[1, 3]]);
    });
  });
}
