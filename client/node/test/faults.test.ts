/**
 * The client against a fake server that misbehaves on purpose
 * (`iadb-fake-server`, address in `IADB_FAKE_ADDR`; see
 * tests/src/fake_server.rs for its commands): a result stream cut short is
 * an error, never a short success; a passed deadline is DEADLINE_EXCEEDED;
 * a write answered UNAVAILABLE is sent once (issue 10, cases 2, 7 and 8).
 * Skipped when IADB_FAKE_ADDR is not set (the Rust harness sets it).
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { IadbClient, IadbError, Status } from "../src/index";

const FAKE = process.env.IADB_FAKE_ADDR;
const skip = FAKE ? false : "IADB_FAKE_ADDR is not set (run through `cargo test --test node_client`)";

let db: IadbClient;

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

async function count(key: string): Promise<number> {
  const row = await db.fetchOne(`count ${key}`);
  return Number(row?.n);
}

describe("against a misbehaving server", { skip }, () => {
  before(async () => {
    db = await IadbClient.connect(FAKE as string);
  });

  after(() => {
    db.close();
  });

  test("a stream without its summary is INTERNAL, after the rows that arrived", async () => {
    assert.equal((await db.fetchAll("rows 250").toArray()).length, 250);
    await rejectsWith(db.fetchAll("truncate 250").toArray(), Status.INTERNAL, /without its summary/);
    let seen = 0;
    await rejectsWith(
      (async () => {
        for await (const _ of db.fetchAll("truncate 250")) {
          seen++;
        }
      })(),
      Status.INTERNAL,
    );
    assert.equal(seen, 250);
    await rejectsWith(db.fetchAll("miscount 3").toArray(), Status.INTERNAL);
    await rejectsWith(db.fetchAll("batch-first").toArray(), Status.INTERNAL);
  });

  test("an Arrow stream cut short or miscounted is INTERNAL, never a short table", async () => {
    const t = await db.fetchArrow("rows 250"); // control: the same frames, complete
    assert.equal(t.numRows, 250);
    assert.equal(t.getChild("i")!.get(249), 250n);
    await rejectsWith(db.fetchArrow("truncate 250"), Status.INTERNAL, /without its summary/);
    await rejectsWith(db.fetchArrow("miscount 3"), Status.INTERNAL, /counts 4 rows but 3/);
    await rejectsWith(db.fetchArrow("batch-first"), Status.INTERNAL, /before the header/);
  });

  test("a passed deadline is DEADLINE_EXCEEDED every time", async () => {
    // The fake never answers `hang`: only the client's deadline ends it.
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      await rejectsWith(db.execute("hang", [], { timeoutMs: 100 }), Status.DEADLINE_EXCEEDED);
      assert.ok(Date.now() - started < 10_000);
    }
    await rejectsWith(db.fetchOne("hang", [], { timeoutMs: 100 }), Status.DEADLINE_EXCEEDED);
    await rejectsWith(db.fetchAll("header-then-hang", [], { timeoutMs: 100 }).toArray(), Status.DEADLINE_EXCEEDED);
  });

  test("a write answered UNAVAILABLE is sent once", async () => {
    await rejectsWith(db.execute("unavailable node-w1"), Status.UNAVAILABLE);
    assert.equal(await count("Execute node-w1"), 1);
    await rejectsWith(db.executeMany("unavailable node-w2", [[], []]), Status.UNAVAILABLE);
    assert.equal(await count("ExecuteMany node-w2"), 1);
  });
});
