/** What several test files share: servers of their own, error checks. */

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import { IadbError, type Status } from "../src/index";

export const SERVER_BIN = process.env.IADB_SERVER_BIN;
export const needsServerBin = SERVER_BIN ? false : "IADB_SERVER_BIN is not set";

/** Awaits `p` and asserts it rejects with an IadbError of `code`. */
export async function rejectsWith(p: Promise<unknown>, code: Status, message?: RegExp): Promise<IadbError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IadbError, `expected an IadbError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message) {
    assert.match(caught.message, message);
  }
  return caught;
}

/** A server of our own, on a SQLite file in a folder of its own. */
export interface OwnServer {
  address: string;
  /** Kills it (SIGKILL) and waits until it is gone; the folder stays. */
  kill(): Promise<void>;
  /** Starts it again on the same address and database file. */
  restart(): Promise<void>;
  /** Kills it and removes its folder. */
  stop(): Promise<void>;
}

async function spawnServer(listen: string, dbFile: string, args: string[]): Promise<{ child: ChildProcess; address: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "warn" };
  delete env.DATABASE_URL;
  const child = spawn(SERVER_BIN as string, ["--listen", listen, "--database-url", `sqlite:///${dbFile}`, ...args], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: child.stdout! });
  const prefix = "iadb-server listening on ";
  try {
    const address = await new Promise<string>((resolve, reject) => {
      lines.once("line", (line) => (line.startsWith(prefix) ? resolve(line.slice(prefix.length)) : reject(new Error(line))));
      child.once("exit", (code) => reject(new Error(`server exited (${code})`)));
    });
    return { child, address };
  } finally {
    lines.close();
  }
}

export async function startServer(args: string[] = []): Promise<OwnServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-own-"));
  const dbFile = path.join(dir, "own.db");
  let { child, address } = await spawnServer("127.0.0.1:0", dbFile, args);
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
    }
  };
  return {
    address,
    kill,
    async restart() {
      await kill();
      ({ child } = await spawnServer(address, dbFile, args));
    },
    async stop() {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
