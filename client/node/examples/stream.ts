/**
 * Streams a large result from an iadb server and checks it.
 *
 *   npm run example                 # against 127.0.0.1:50051
 *   IADB_ADDR=127.0.0.1:6000 npm run example
 *   node dist/examples/stream.js 1000000   # another row count
 *
 * The package ships this file (node_modules/@iadb/client/examples/): copy
 * it next to a tsconfig.json and compile it, or run it with a TypeScript
 * runner, after `npm install @iadb/client`.
 *
 * Checks the standard health service (the server and its "default"
 * database), streams N generated rows (default 200000) from the server's
 * default database (SQLite), verifies their count, their sum and every
 * label, shows that a bad statement fails with INVALID_ARGUMENT, and prints
 * one line of JSON on stdout. Exits non-zero on any mismatch.
 */

// The package by its name: in this repository Node resolves it to the
// package itself (its "exports"), and tsc to src/ (tsconfig "paths");
// installed, to node_modules/@iadb/client.
import { IadbClient, IadbError, Status, statusName } from "@iadb/client";

const MIB = 1024 * 1024;

function fail(message: string): never {
  console.error(`stream example: FAILED: ${message}`);
  process.exit(1);
}

async function main(): Promise<void> {
  const address = process.env.IADB_ADDR || "127.0.0.1:50051";
  const n = Number(process.argv[2] ?? "200000");
  if (!Number.isSafeInteger(n) || n < 1 || n > 100_000_000) {
    fail(`row count must be a whole number from 1 to 100000000, not ${process.argv[2]}`);
  }

  const client = await IadbClient.connect(address, { connectTimeoutMs: 10_000 });
  try {
    for (const service of ["", "default"]) {
      const status = await client.standardHealth(service);
      if (status !== "SERVING") {
        fail(`grpc.health.v1 Check(${JSON.stringify(service)}) is ${status}, not SERVING`);
      }
    }
    console.error(`stream example: ${address} is SERVING; streaming ${n} rows`);

    const sql =
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) " +
      "SELECT i, 'row ' || i AS label FROM n";
    let peakHeap = process.memoryUsage().heapUsed;
    const started = process.hrtime.bigint();
    let rows = 0;
    let sum = 0n;
    const stream = client.fetchAll(sql, [n]);
    for await (const row of stream) {
      const i = row.i;
      if (typeof i !== "number" || !Number.isSafeInteger(i)) {
        fail(`row ${rows + 1}: i is ${String(i)} (${typeof i}), not an integer number`);
      }
      if (row.label !== `row ${i}`) {
        fail(`row ${rows + 1}: label ${JSON.stringify(row.label)} does not match i = ${i}`);
      }
      rows++;
      sum += BigInt(i);
      if (rows % 10_000 === 0) {
        peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
      }
    }
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
    // maxRSS is the process's peak resident set, in KiB.
    const peakRssMib = (process.resourceUsage().maxRSS * 1024) / MIB;

    const expectedSum = (BigInt(n) * BigInt(n + 1)) / 2n;
    if (rows !== n) {
      fail(`${rows} rows arrived, expected ${n}`);
    }
    if (sum !== expectedSum) {
      fail(`sum of i is ${sum}, expected ${expectedSum}`);
    }
    const columns = stream.columns?.map((c) => c.name).join(",");
    if (columns !== "i,label") {
      fail(`columns are ${columns}, expected i,label`);
    }
    if (stream.summary === undefined || Number(stream.summary.rowCount) !== n) {
      fail(`summary row count is ${stream.summary?.rowCount}, expected ${n}`);
    }

    // An error: a statement that does not parse.
    let errorCode: string | undefined;
    try {
      await client.fetchOne("SELEC 1");
      fail("SELEC 1 succeeded");
    } catch (e) {
      if (!(e instanceof IadbError)) {
        throw e;
      }
      if (e.code !== Status.INVALID_ARGUMENT) {
        fail(`SELEC 1 failed with ${e.codeName}, expected INVALID_ARGUMENT: ${e.details}`);
      }
      errorCode = statusName(e.code);
      console.error(`stream example: bad SQL is ${e.message}`);
    }

    console.log(
      JSON.stringify({
        rows,
        sum: Number(sum),
        elapsed_ms: Math.round(elapsedMs),
        rows_per_s: Math.round(rows / (elapsedMs / 1000)),
        peak_heap_used_mib: Math.round((peakHeap / MIB) * 10) / 10,
        peak_rss_mib: Math.round(peakRssMib * 10) / 10,
        error_code: errorCode,
      }),
    );
  } finally {
    client.close();
  }
}

main().catch((e: unknown) => {
  fail(e instanceof Error ? e.message : String(e));
});
