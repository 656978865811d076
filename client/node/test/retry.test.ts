/**
 * Retries, with the Rust client's rules: a read is retried on UNAVAILABLE;
 * a write only when its request never left the client; a commit whose
 * outcome is unknown never, and its error says so.
 *
 * Against the fake server (`IADB_FAKE_ADDR`), which counts the calls it
 * receives and answers `unavailable TAG` with UNAVAILABLE after the
 * request arrived; and against a server of our own (`IADB_SERVER_BIN`)
 * that is killed and started again. Each part is skipped without its
 * variable (the Rust harness sets both).
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { IadbClient, IadbError, NO_RETRY, Status, mayRetry, retry } from "../src/index";
import { needsServerBin, rejectsWith, startServer, type OwnServer } from "./helpers";

const FAKE = process.env.IADB_FAKE_ADDR;
const RUN = `${process.pid}_${Date.now()}`;

describe("retry rules against the fake server", { skip: FAKE ? false : "IADB_FAKE_ADDR is not set" }, () => {
  let counter: IadbClient;
  let db: IadbClient;
  const retries: IadbError[] = [];

  before(async () => {
    counter = await IadbClient.connect(FAKE as string, { retry: NO_RETRY });
    db = await IadbClient.connect(FAKE as string, {
      retry: { maxRetries: 2, initialDelayMs: 1, maxDelayMs: 5, onRetry: (e) => void retries.push(e) },
    });
  });

  after(() => {
    db.close();
    counter.close();
  });

  async function count(method: string, tag: string): Promise<number> {
    const row = await counter.fetchOne(`count ${method} ${tag}`);
    return Number(row?.n);
  }

  test("a read answered UNAVAILABLE is sent 1 + maxRetries times", async () => {
    retries.length = 0;
    const tag = (t: string) => `node-read-${t}-${RUN}`;
    const e = await rejectsWith(db.fetchOne(`unavailable ${tag("one")}`), Status.UNAVAILABLE);
    assert.equal(e.unsent, false);
    assert.equal(await count("FetchOne", tag("one")), 3);
    await rejectsWith(db.fetchAll(`unavailable ${tag("all")}`).toArray(), Status.UNAVAILABLE);
    assert.equal(await count("FetchAll", tag("all")), 3);
    await rejectsWith(db.tableExists(`unavailable ${tag("exists")}`), Status.UNAVAILABLE);
    assert.equal(await count("TableExists", tag("exists")), 3);
    await rejectsWith(db.health(`unavailable ${tag("health")}`), Status.UNAVAILABLE);
    assert.equal(await count("Health", tag("health")), 3);
    assert.equal(retries.length, 8);
    // Without retries: once.
    await rejectsWith(db.withRetry(NO_RETRY).fetchOne(`unavailable ${tag("once")}`), Status.UNAVAILABLE);
    assert.equal(await count("FetchOne", tag("once")), 1);
  });

  test("a write answered UNAVAILABLE after it was sent is sent once", async () => {
    retries.length = 0;
    const tag = (t: string) => `node-write-${t}-${RUN}`;
    const e = await rejectsWith(db.execute(`unavailable ${tag("exec")}`), Status.UNAVAILABLE);
    assert.equal(e.unsent, false);
    assert.equal(e.retryable, true); // for a read; this was a write
    assert.equal(mayRetry(e, "write"), false);
    assert.equal(await count("Execute", tag("exec")), 1);
    await rejectsWith(db.executeMany(`unavailable ${tag("many")}`, [[], []]), Status.UNAVAILABLE);
    assert.equal(await count("ExecuteMany", tag("many")), 1);
    await rejectsWith(db.migrate("apply", { targetVersion: `unavailable ${tag("migrate")}` }), Status.UNAVAILABLE);
    assert.equal(await count("Migrate", tag("migrate")), 1);
    // The helper: a write by default, a read with idempotent: true.
    let calls = 0;
    await rejectsWith(
      retry(
        () => {
          calls++;
          return db.execute(`unavailable ${tag("helper")}`);
        },
        { maxRetries: 3, initialDelayMs: 1 },
      ),
      Status.UNAVAILABLE,
    );
    assert.equal(calls, 1);
    assert.equal(await count("Execute", tag("helper")), 1);
    assert.equal(retries.length, 0);
    calls = 0;
    await rejectsWith(
      retry(
        () => {
          calls++;
          return db.withRetry(NO_RETRY).fetchOne(`unavailable ${tag("helper-read")}`);
        },
        { maxRetries: 3, initialDelayMs: 1, idempotent: true },
      ),
      Status.UNAVAILABLE,
    );
    assert.equal(calls, 4);
    assert.equal(await count("FetchOne", tag("helper-read")), 4);
  });

  test("a commit whose answer was lost is never retried, and its error says so", async () => {
    retries.length = 0;
    const tag = `node-commit-${RUN}`;
    // The fake reads its command from the begin's database name.
    const tx = await IadbClient.connect(FAKE as string, {
      database: `unavailable ${tag}`,
      retry: { maxRetries: 3, initialDelayMs: 1, onRetry: (e) => void retries.push(e) },
    });
    try {
      let ran = 0;
      const e = await rejectsWith(
        tx.transaction(async (t) => {
          ran++;
          await t.execute("UPDATE accounts SET balance = balance - 10");
        }),
        Status.UNAVAILABLE,
        /outcome is unknown.*not retried/,
      );
      assert.equal(e.commitOutcomeUnknown, true);
      assert.equal(e.retryable, false);
      assert.equal(e.unsent, false);
      assert.equal(mayRetry(e, "read"), false);
      assert.equal(ran, 1);
      assert.equal(await count("Transaction", tag), 1);
      assert.equal(await count("Commit", tag), 1);
      // Not even by the helper, not even as "idempotent".
      await rejectsWith(
        retry(() => tx.transaction((t) => t.execute("UPDATE accounts SET balance = balance - 10")), {
          idempotent: true,
          maxRetries: 3,
          initialDelayMs: 1,
        }),
        Status.UNAVAILABLE,
        /outcome is unknown/,
      );
      assert.equal(await count("Commit", tag), 2);
      assert.equal(retries.length, 0);
    } finally {
      tx.close();
    }
  });
});

describe("retry rules when the server is gone", { skip: needsServerBin }, () => {
  let server: OwnServer;

  before(async () => {
    server = await startServer();
  });

  after(async () => {
    await server.stop();
  });

  test("a write that could not be sent is sent once the server is back, and only then", async () => {
    const retried: IadbError[] = [];
    const db = await IadbClient.connect(server.address, {
      retry: {
        maxRetries: 3,
        initialDelayMs: 1,
        onRetry: async (e) => {
          retried.push(e);
          if (retried.length === 1) {
            // Back before the retry is made: no race with its timer.
            await server.restart();
            await db.waitForReady(20_000);
          }
        },
      },
    });
    try {
      await db.execute("CREATE TABLE back (id INTEGER PRIMARY KEY, v TEXT)");
      await server.kill();
      // A read without retries: the channel sees the connection is gone.
      await assert.rejects(db.withRetry(NO_RETRY).tableExists("back", { timeoutMs: 5000 }), IadbError);
      const res = await db.execute("INSERT INTO back (v) VALUES (?)", ["once"]);
      assert.equal(res.rowsAffected, 1);
      assert.equal(retried.length, 1);
      assert.equal(retried[0].code, Status.UNAVAILABLE);
      assert.equal(retried[0].unsent, true, retried[0].message);
      assert.match(retried[0].message, /not sent/);
      const rows = await db.fetchAll("SELECT v FROM back").toArray();
      assert.deepEqual(rows, [{ v: "once" }]);
    } finally {
      db.close();
    }
  });

  test("while it is gone: reads, writes not sent and opening a transaction are retried, then fail", async () => {
    let retried = 0;
    const db = await IadbClient.connect(server.address, {
      retry: { maxRetries: 2, initialDelayMs: 1, maxDelayMs: 5, onRetry: () => void retried++ },
    });
    try {
      await server.kill();
      await assert.rejects(db.withRetry(NO_RETRY).tableExists("back", { timeoutMs: 5000 }), IadbError);

      retried = 0;
      const e = await rejectsWith(db.execute("INSERT INTO back (v) VALUES ('never')"), Status.UNAVAILABLE, /not sent/);
      assert.equal(e.unsent, true);
      assert.equal(e.retryable, true);
      assert.equal(retried, 2);

      retried = 0;
      await rejectsWith(db.fetchOne("SELECT 1"), Status.UNAVAILABLE);
      assert.equal(retried, 2);

      retried = 0;
      let ran = false;
      await rejectsWith(
        db.transaction(async () => {
          ran = true;
        }),
        Status.UNAVAILABLE,
      );
      assert.equal(ran, false);
      assert.equal(retried, 2);
    } finally {
      db.close();
    }
  });
});
