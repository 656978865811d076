/**
 * The package as a user gets it: `npm pack`, installed into an empty
 * folder outside the repository, then the example it ships, compiled there
 * with tsc against the installed types and run against a live server
 * (`IADB_ADDR`), and the package loaded with both `require` and `import`.
 *
 * Packed with `--ignore-scripts`: the build (`prepack` runs it for a real
 * `npm pack`) has just run, and running it again would rewrite dist/ under
 * the other test files. Installed with `npm ci --prefer-offline` from a
 * lockfile made of this package's own: the dependencies are the versions
 * the suite ran with, taken from npm's cache (which `npm ci --prefix
 * client/node` filled), so nothing is fetched; a tarball missing from the
 * cache would be fetched from the registry.
 */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ADDRESS = process.env.IADB_ADDR || "127.0.0.1:50051";
/** client/node (this file is dist/test/package.test.js). */
const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
const REPO_PROTO = path.resolve(PACKAGE_ROOT, "..", "..", "proto", "iadb", "v1", "database.proto");
const TSC = path.join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc");
const MINUTE = 60_000;

let tmp: string;
let app: string;

function run(program: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  try {
    return execFileSync(program, args, {
      cwd,
      env: { ...process.env, ...env },
      encoding: "utf8",
      timeout: 4 * MINUTE,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    assert.fail(`${program} ${args.join(" ")} failed: ${err.message}\n--- stdout\n${err.stdout}\n--- stderr\n${err.stderr}`);
  }
}

interface Packed {
  filename: string;
  integrity: string;
  files: { path: string }[];
}

let packed: Packed;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "iadb-node-package-"));
  app = path.join(tmp, "app");
  fs.mkdirSync(app);
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test("npm pack holds the built code, its types, both entry points, the proto and the example", { timeout: 4 * MINUTE }, () => {
  const out = run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", tmp], PACKAGE_ROOT);
  packed = (JSON.parse(out) as Packed[])[0];
  const files = packed.files.map((f) => f.path).sort();
  for (const wanted of [
    "package.json",
    "README.md",
    "dist/src/index.js",
    "dist/src/index.d.ts",
    "dist/esm/index.mjs",
    "dist/esm/index.d.mts",
    "proto/iadb/v1/database.proto",
    "examples/stream.ts",
  ]) {
    assert.ok(files.includes(wanted), `${wanted} is in the tarball: ${files.join(", ")}`);
  }
  assert.ok(!files.some((f) => f.startsWith("dist/test/") || f.startsWith("src/")), files.join(", "));
});

test("installed into an empty folder: require, import, types and the example against a live server", { timeout: 8 * MINUTE }, () => {
  assert.ok(packed, "the tarball was made");
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as {
    name: string;
    version: string;
    license: string;
    dependencies: Record<string, string>;
    engines: Record<string, string>;
  };
  const lock = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dev?: boolean }>;
  };
  const spec = `file:../${packed.filename}`;
  const packages: Record<string, unknown> = {
    "": { name: "iadb-package-test", dependencies: { [pkg.name]: spec } },
    [`node_modules/${pkg.name}`]: {
      version: pkg.version,
      resolved: spec,
      integrity: packed.integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      engines: pkg.engines,
    },
  };
  for (const [where, entry] of Object.entries(lock.packages)) {
    if (where !== "" && entry.dev !== true) {
      packages[where] = entry;
    }
  }
  fs.writeFileSync(
    path.join(app, "package.json"),
    JSON.stringify({ name: "iadb-package-test", private: true, dependencies: { [pkg.name]: spec } }, null, 2),
  );
  fs.writeFileSync(
    path.join(app, "package-lock.json"),
    JSON.stringify({ name: "iadb-package-test", lockfileVersion: 3, requires: true, packages }, null, 2),
  );
  run("npm", ["ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], app);

  const installed = path.join(app, "node_modules", ...pkg.name.split("/"));
  // The package's proto is the repository's, byte for byte.
  assert.ok(
    fs.readFileSync(path.join(installed, "proto", "iadb", "v1", "database.proto")).equals(fs.readFileSync(REPO_PROTO)),
    "the packed proto equals proto/iadb/v1/database.proto",
  );

  // require and import: the same module (one IadbError class), the same names.
  const cjs = run(
    "node",
    ["-e", `const m = require(${JSON.stringify(pkg.name)}); console.log(JSON.stringify({ keys: Object.keys(m).sort(), proto: m.DEFAULT_PROTO_DIR }))`],
    app,
  );
  const required = JSON.parse(cjs) as { keys: string[]; proto: string };
  assert.ok(required.keys.includes("IadbClient") && required.keys.includes("retry"), cjs);
  assert.equal(required.proto, path.join(installed, "proto"));
  const esm = run(
    "node",
    [
      "--input-type=module",
      "-e",
      `import * as m from ${JSON.stringify(pkg.name)};
       import { createRequire } from "node:module";
       const r = createRequire(import.meta.url)(${JSON.stringify(pkg.name)});
       console.log(JSON.stringify({ keys: Object.keys(m).sort(), same: m.IadbClient === r.IadbClient && m.IadbError === r.IadbError }));`,
    ],
    app,
  );
  const imported = JSON.parse(esm) as { keys: string[]; same: boolean };
  assert.deepEqual(imported.keys, required.keys.filter((k) => k !== "__esModule"));
  assert.equal(imported.same, true);

  // Types: the shipped example (CommonJS) and an ES module, compiled with
  // tsc as an application would; `@ts-expect-error` fails if types are `any`.
  fs.copyFileSync(path.join(installed, "examples", "stream.ts"), path.join(app, "stream.ts"));
  fs.writeFileSync(
    path.join(app, "check.mts"),
    `import { IadbClient, IadbError, retry, type MigrateResult } from ${JSON.stringify(pkg.name)};
// @ts-expect-error IadbClient is a class, not a number: the types resolved
const wrong: number = IadbClient;
void wrong;
const db = await IadbClient.connect(process.env.IADB_ADDR ?? "");
try {
  const row = await retry(() => db.fetchOne("SELECT 40 + 2 AS n"), { idempotent: true });
  const status: MigrateResult = await db.migrate("status");
  console.log(JSON.stringify({ n: row?.n, migrations: status.migrations.length, error: IadbError.name }));
} finally {
  db.close();
}
`,
  );
  fs.writeFileSync(
    path.join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        module: "node16",
        moduleResolution: "node16",
        target: "ES2022",
        strict: true,
        types: ["node"],
        outDir: "out",
      },
      files: ["stream.ts", "check.mts"],
    }),
  );
  run("node", [TSC, "-p", "."], app);

  const example = run("node", ["out/stream.js", "5000"], app, { IADB_ADDR: ADDRESS });
  const line = example.trim().split("\n").reverse().find((l) => l.startsWith("{"));
  assert.ok(line, `a JSON line on the example's stdout: ${example}`);
  const summary = JSON.parse(line) as { rows: number; sum: number; error_code: string };
  assert.equal(summary.rows, 5000);
  assert.equal(summary.sum, (5000 * 5001) / 2);
  assert.equal(summary.error_code, "INVALID_ARGUMENT");

  const checked = JSON.parse(run("node", ["out/check.mjs"], app, { IADB_ADDR: ADDRESS })) as {
    n: number;
    migrations: number;
    error: string;
  };
  assert.equal(checked.n, 42);
  assert.ok(checked.migrations > 0);
  assert.equal(checked.error, "IadbError");
});
