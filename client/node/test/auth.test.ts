/**
 * The `token` option against a server with a tokens file (issue 12), a
 * server of its own started from `IADB_SERVER_BIN` (skipped without it):
 * no token is UNAUTHENTICATED; a read token reads, and its writes are
 * PERMISSION_DENIED with nothing changed; a write token writes, in a
 * transaction and a stream too.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { IadbClient, IadbError, Status } from "../src/index";

const SERVER_BIN = process.env.IADB_SERVER_BIN;
/** Certificates made by tests/tests/node_client.rs (rcgen): good-ca.pem, ... */
const TLS_DIR = process.env.IADB_TEST_TLS_DIR;
const READ = "iadb_node_read_token_5e6f";
const WRITE = "iadb_node_write_token_7a8b";

function entry(name: string, token: string, scope: string): string {
  const sha = crypto.createHash("sha256").update(token).digest("hex");
  return `[[token]]\nname = "${name}"\nsha256 = "${sha}"\nscope = "${scope}"\ndatabases = ["*"]\n`;
}

async function rejectsWith(p: Promise<unknown>, code: Status): Promise<IadbError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IadbError, `expected an IadbError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.details);
  return caught;
}

async function startServer(extra: string[] = []): Promise<{ address: string; stop(): void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-auth-"));
  const tokens = path.join(dir, "tokens.toml");
  fs.writeFileSync(tokens, entry("node-reader", READ, "read") + entry("node-writer", WRITE, "write"));
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "warn" };
  delete env.DATABASE_URL;
  const child: ChildProcess = spawn(
    SERVER_BIN as string,
    ["--listen", "127.0.0.1:0", "--database-url", `sqlite:///${dir}/auth.db`, "--tokens-file", tokens, ...extra],
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

describe("tokens (a server of its own)", { skip: SERVER_BIN ? false : "IADB_SERVER_BIN is not set" }, () => {
  test("no token, a read token and a write token", async () => {
    const server = await startServer();
    const anonymous = await IadbClient.connect(server.address);
    const reader = await IadbClient.connect(server.address, { token: READ });
    const writer = await IadbClient.connect(server.address, { token: WRITE });
    try {
      await rejectsWith(anonymous.fetchOne("SELECT 1 AS one"), Status.UNAUTHENTICATED);
      await writer.execute("CREATE TABLE a (id INTEGER)");
      await writer.transaction((tx) => tx.execute("INSERT INTO a (id) VALUES (?)", [1]));
      const denied = await rejectsWith(reader.execute("INSERT INTO a (id) VALUES (?)", [2]), Status.PERMISSION_DENIED);
      assert.match(denied.details, /node-reader/);
      await rejectsWith(
        reader.transaction((tx) => tx.execute("DELETE FROM a")),
        Status.PERMISSION_DENIED,
      );
      const rows = [];
      for await (const row of reader.fetchAll("SELECT id FROM a")) {
        rows.push(row);
      }
      assert.deepEqual(rows, [{ id: 1 }]);
    } finally {
      anonymous.close();
      reader.close();
      writer.close();
      server.stop();
    }
  });

  test("an empty token is refused before connecting", async () => {
    await assert.rejects(IadbClient.connect("127.0.0.1:1", { token: " " }), TypeError);
  });
});

describe(
  "TLS and mTLS (a server of its own)",
  { skip: SERVER_BIN && TLS_DIR ? false : "IADB_SERVER_BIN or IADB_TEST_TLS_DIR is not set" },
  () => {
    test("a client with the CA and a client certificate is served; one without is not", async () => {
      const file = (name: string) => fs.readFileSync(path.join(TLS_DIR as string, name));
      const server = await startServer([
        "--tls-cert",
        path.join(TLS_DIR as string, "good-server.pem"),
        "--tls-key",
        path.join(TLS_DIR as string, "good-server-key.pem"),
        "--tls-client-ca",
        path.join(TLS_DIR as string, "good-ca.pem"),
      ]);
      try {
        const credentials = grpc.credentials.createSsl(
          file("good-ca.pem"),
          file("good-client-key.pem"),
          file("good-client.pem"),
        );
        const client = await IadbClient.connect(server.address, { credentials, token: READ });
        try {
          assert.deepEqual(await client.fetchOne("SELECT 1 AS one"), { one: 1 });
        } finally {
          client.close();
        }
        // The CA but no client certificate: the handshake fails.
        let refused = false;
        try {
          const bare = await IadbClient.connect(server.address, {
            credentials: grpc.credentials.createSsl(file("good-ca.pem")),
            token: READ,
            connectTimeoutMs: 2000,
          });
          try {
            await bare.fetchOne("SELECT 1 AS one");
          } finally {
            bare.close();
          }
        } catch (e) {
          refused = e instanceof IadbError;
        }
        assert.ok(refused, "served without a client certificate");
      } finally {
        server.stop();
      }
    });
  },
);
